//! Remediation workflows: typed inputs, steps forming a DAG, rollback steps.
//!
//! The syntax is close to GitHub Actions: `uses` names an executor, `with` holds its
//! (templated, Jinja syntax) arguments, `needs` orders steps, `if` guards them.
//! Canonical keys are camelCase; the GitHub spellings (`continue-on-error`, `runs-on`) are
//! accepted as aliases.
//!
//! A workflow's `metadata.name` is how catalogs, sub-workflow steps and the journal refer to
//! it: 1 to 63 characters, lowercase ASCII letters, digits, `.`, `_` and `-`, starting with a
//! letter or a digit (`^[a-z0-9][a-z0-9._-]{0,62}$`, see [`check_workflow_name`]).

use crate::doc::{Loc, Metadata};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workflow {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: WorkflowSpec,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkflowSpec {
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "located_inputs"
    )]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Secrets, read at run time from the environment or a file, masked in every record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretSpec>,
    /// Steps run at most this many at a time (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    pub steps: Vec<Step>,
    /// Compensation steps, run in reverse order when the workflow fails or is rolled back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback: Vec<Step>,
    /// Local events that start this workflow at a site by themselves, from the registry
    /// bundle its agent holds, with or without the orchestrator (`vacsine agent event`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<Trigger>,
}

/// Event types a trigger may name.
pub const EVENT_TYPES: &[&str] = &[
    "indicator",
    "incident",
    "vulnerability",
    "requirement_changed",
];

/// A local event that starts the workflow (`spec.on`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// `indicator`, `incident`, `vulnerability` or `requirement_changed`.
    pub event: Loc<String>,
    /// Condition over `event` (Jinja expression without braces), e.g.
    /// `event.payload.type == 'ip'`.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub condition: Option<Loc<String>>,
    /// Values of the workflow's inputs, templated over `event`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// At most one run per key within a window: the same indicator seen again does not
    /// start the workflow again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe: Option<Dedupe>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dedupe {
    /// Templated over `event`, e.g. `{{ event.payload.value }}`.
    pub key: String,
    /// Duration such as `10m`.
    pub window: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    /// An IPv4 or IPv6 address.
    Ip,
    /// An IPv4 or IPv6 network in CIDR notation.
    Cidr,
    /// A TCP/UDP port, 1–65535.
    Port,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
            InputType::Object => "object",
            InputType::Ip => "ip",
            InputType::Cidr => "cidr",
            InputType::Port => "port",
        }
    }

    /// Check a value against the type. Strings are accepted for scalar types when they parse
    /// (values from the command line arrive as strings); returns the normalised value.
    pub fn coerce(self, v: &serde_json::Value) -> Result<serde_json::Value, String> {
        use serde_json::Value;
        let bad = || format!("expected {}, got {}", self.as_str(), short(v));
        match self {
            InputType::String => match v {
                Value::String(_) => Ok(v.clone()),
                Value::Number(n) => Ok(Value::String(n.to_string())),
                Value::Bool(b) => Ok(Value::String(b.to_string())),
                _ => Err(bad()),
            },
            InputType::Integer => match v {
                Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
                Value::String(s) => s.trim().parse::<i64>().map(Value::from).map_err(|_| bad()),
                _ => Err(bad()),
            },
            InputType::Number => match v {
                Value::Number(_) => Ok(v.clone()),
                Value::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(bad),
                _ => Err(bad()),
            },
            InputType::Boolean => match v {
                Value::Bool(_) => Ok(v.clone()),
                Value::String(s) if s == "true" => Ok(Value::Bool(true)),
                Value::String(s) if s == "false" => Ok(Value::Bool(false)),
                _ => Err(bad()),
            },
            InputType::Array => v.is_array().then(|| v.clone()).ok_or_else(bad),
            InputType::Object => v.is_object().then(|| v.clone()).ok_or_else(bad),
            InputType::Ip => match v {
                Value::String(s) => s
                    .trim()
                    .parse::<std::net::IpAddr>()
                    .map(|ip| Value::String(ip.to_string()))
                    .map_err(|_| format!("expected an IP address, got {}", short(v))),
                _ => Err(bad()),
            },
            InputType::Cidr => match v {
                Value::String(s) => parse_cidr(s.trim()).map(Value::String).ok_or_else(|| {
                    format!(
                        "expected a CIDR network such as 10.0.0.0/8, got {}",
                        short(v)
                    )
                }),
                _ => Err(bad()),
            },
            InputType::Port => {
                let n = match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                match n {
                    Some(p @ 1..=65535) => Ok(Value::from(p)),
                    _ => Err(format!("expected a port 1-65535, got {}", short(v))),
                }
            }
        }
    }
}

fn parse_cidr(s: &str) -> Option<String> {
    let (ip, len) = s.split_once('/')?;
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then(|| format!("{ip}/{len}"))
}

fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(57).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InputSpec {
    /// The input's name where it is declared (line 0 when built in code), for diagnostics.
    #[serde(skip)]
    pub name: Loc<String>,
    #[serde(rename = "type")]
    pub ty: InputType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Required unless a default is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Loc<serde_json::Value>>,
    /// Allowed values.
    #[serde(default, rename = "enum", skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<serde_json::Value>,
    /// Earlier names of this input, still accepted (with a warning naming this one) so that
    /// policies written against an earlier version of a catalog workflow keep working: a
    /// renamed input keeps its old name here for at least one minor version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deprecated_names: Vec<String>,
}

impl InputSpec {
    /// Required unless `required: false` or a default is given.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }

    /// Check a value against the type and the allowed values; returns the normalised value.
    pub fn check(&self, v: &Value) -> Result<Value, String> {
        let v = self.ty.coerce(v)?;
        if !self.allowed.is_empty()
            && !self
                .allowed
                .iter()
                .any(|a| self.ty.coerce(a).is_ok_and(|a| a == v))
        {
            let allowed: Vec<String> = self.allowed.iter().map(Value::to_string).collect();
            return Err(format!(
                "{v} is not one of the allowed values: {}",
                allowed.join(", ")
            ));
        }
        Ok(v)
    }
}

impl InputType {
    /// A value written on the command line (`-i NAME=VALUE`): a string, unless the declared
    /// type is a list or a map (then JSON). Scalar types are parsed later by [`coerce`]
    /// (`port`, `boolean`…), so a string input may start with `[` or `{`.
    ///
    /// [`coerce`]: InputType::coerce
    pub fn from_command_line(self, raw: &str) -> Result<Value, String> {
        match self {
            InputType::Array | InputType::Object => serde_json::from_str(raw).map_err(|e| {
                let example = if self == InputType::Array {
                    r#"'["a", "b"]'"#
                } else {
                    r#"'{"k": "v"}'"#
                };
                format!(
                    "expected a JSON {} such as {example}, got {}: {e}",
                    self.as_str(),
                    short(&Value::String(raw.to_string()))
                )
            }),
            _ => Ok(Value::String(raw.to_string())),
        }
    }
}

/// A problem with one input value: the input's name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub name: String,
    pub message: String,
}

/// The declared input `given` names: itself, or the input that lists it among its
/// `deprecatedNames` (then `true`: the caller warns, naming the new name).
pub fn canonical_input<'a>(
    decl: &'a BTreeMap<String, InputSpec>,
    given: &str,
) -> Option<(&'a str, bool)> {
    if let Some((k, _)) = decl.get_key_value(given) {
        return Some((k.as_str(), false));
    }
    decl.iter()
        .find(|(_, s)| s.deprecated_names.iter().any(|d| d == given))
        .map(|(k, _)| (k.as_str(), true))
}

/// `given` with every deprecated input name replaced by the input's name (a name given twice,
/// old and new, is an error naming both).
pub fn canonical_inputs(
    decl: &BTreeMap<String, InputSpec>,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, InputError> {
    let mut out = Map::new();
    for (k, v) in given {
        let name = match canonical_input(decl, k) {
            Some((n, true)) => {
                if given.contains_key(n) {
                    return Err(InputError {
                        name: k.clone(),
                        message: format!(
                            "given twice: `{k}` is the deprecated name of `{n}`, which is given too"
                        ),
                    });
                }
                n.to_string()
            }
            _ => k.clone(),
        };
        out.insert(name, v.clone());
    }
    Ok(out)
}

/// Check and coerce input values against the declared inputs: every given name must be
/// declared (except `event`, the triggering event), required inputs must be given, values must
/// have the declared type and be among the allowed ones. Defaults fill the rest.
pub fn coerce_inputs(
    decl: &BTreeMap<String, InputSpec>,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, InputError> {
    let err = |name: &str, message: String| InputError {
        name: name.to_string(),
        message,
    };
    // Deprecated names are accepted as the input they were renamed to.
    let given = &canonical_inputs(decl, given)?;
    for k in given.keys() {
        if !decl.contains_key(k) && k != "event" {
            let known: Vec<&str> = decl.keys().map(String::as_str).collect();
            return Err(err(
                k,
                format!(
                    "not declared by the workflow (declared inputs: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    let mut out = Map::new();
    for (name, spec) in decl {
        let raw = given.get(name).or(spec.default.as_ref().map(|d| &d.value));
        let v = match raw {
            Some(v) => spec.check(v).map_err(|m| err(name, m))?,
            None if spec.required.unwrap_or(true) => {
                return Err(err(
                    name,
                    format!("required (type {}) and not given", spec.ty.as_str()),
                ))
            }
            None => Value::Null,
        };
        out.insert(name.clone(), v);
    }
    Ok(out)
}

/// Inputs by name, each remembering where its name is written.
fn located_inputs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, InputSpec>, D::Error> {
    let m = BTreeMap::<Loc<String>, InputSpec>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, mut spec)| {
            spec.name = k.clone();
            (k.value, spec)
        })
        .collect())
}

/// Longest workflow name.
pub const MAX_WORKFLOW_NAME: usize = 63;

/// Check a workflow name against `^[a-z0-9][a-z0-9._-]{0,62}$`.
pub fn check_workflow_name(name: &str) -> Result<(), String> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if first_ok && rest_ok && name.len() <= MAX_WORKFLOW_NAME {
        Ok(())
    } else {
        Err(format!(
            "invalid workflow name {}: use 1 to {MAX_WORKFLOW_NAME} lowercase letters, digits, `.`, `_` and `-`, starting with a letter or a digit",
            short(&Value::String(name.to_string()))
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretSpec {
    /// Environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// File holding the secret (trailing newline removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retry {
    /// Total attempts, including the first (≥ 1).
    pub attempts: u32,
    /// Delay before the second attempt; doubles each time.
    #[serde(default = "default_backoff")]
    pub backoff: String,
}

fn default_backoff() -> String {
    "200ms".into()
}

/// Where a step runs: one node by name (templated), or fanned out over selected nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum RunsOn {
    Node(String),
    Select(crate::policy::NodeSelector),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    pub id: Loc<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Executor: command, script, file, firewall, nftset, sysctl, docker.exec, container,
    /// ansible, http, wait-until, quarantine, workflow.
    pub uses: Loc<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub with: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<Loc<String>>,
    /// Expression (Jinja syntax, without braces) deciding whether the step runs.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub condition: Option<Loc<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Duration such as `30s`, `500ms`, `2m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Loc<String>>,
    #[serde(default, alias = "continue-on-error", skip_serializing_if = "is_false")]
    pub continue_on_error: bool,
    #[serde(default, alias = "runs-on", skip_serializing_if = "Option::is_none")]
    pub runs_on: Option<RunsOn>,
    /// Declares the step safe to re-run after a crash (overrides the executor's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// Named outputs: templates evaluated after the step over `result`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Parse a duration such as `250ms`, `30s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration `{s}`: expected a number followed by ms, s, m or h")
    })?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" | "" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        _ => {
            return Err(format!(
                "invalid duration `{s}`: unit must be ms, s, m or h"
            ))
        }
    };
    Ok(Duration::from_millis(ms))
}

impl Workflow {
    /// A new workflow document built in code (the planner's output).
    pub fn new(name: &str, description: Option<String>, spec: WorkflowSpec) -> Self {
        Workflow {
            api_version: crate::API_VERSION.into(),
            kind: "Workflow".into(),
            metadata: Metadata {
                name: Loc::new(name.to_string()),
                description,
                ..Default::default()
            },
            spec,
        }
    }
}
