//! `kind: Response`: which events, what decision or workflow, scope, mode, dedupe, throttle and
//! approval. Strictly parsed (unknown fields refused) with located errors, then validated into
//! a [`Rule`], the typed form [`crate::decide`] evaluates. Conditions are typed data (event
//! types, a minimum severity, sources, observable types, field matchers): nothing in a response
//! is evaluated as code or as a template.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use vacsine_core::doc::{parse_as, LoadError, Loc, Metadata, SourceFile};
use vacsine_core::workflow::check_workflow_name;
use vacsine_core::API_VERSION;
use vacsine_events::{Event, EventKind, ObservableType, Severity};

/// Longest source name, field name or field value in a condition.
pub const MAX_MATCH_TEXT: usize = 1024;
/// Most entries in any list of a response (sources, field matchers, sites, values).
pub const MAX_LIST: usize = 256;
/// Longest ban (`for`), window or approval expiry: 365 days.
pub const MAX_SPAN_SECS: i64 = 365 * 24 * 3600;

/// A `kind: Response` document: which events call for which decision (ban, quarantine) or
/// workflow, where, in which mode, how often, and with whose approval.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Response {
    /// `vacsine.io/v1`.
    pub api_version: Loc<String>,
    /// `Response`.
    pub kind: Loc<String>,
    pub metadata: Metadata,
    pub spec: ResponseSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseSpec {
    /// Which events: every field given must hold.
    pub on: On,
    /// What to do with a matching event.
    pub decide: Decide,
    /// Sites this response applies at (default: every site).
    #[serde(default)]
    pub scope: Scope,
    /// `autonomous`: a site decides at once on its own copy (also while cut off);
    /// `orchestrated`: only the orchestrator decides.
    pub mode: Loc<Mode>,
    /// At most one decision per key within a window (`key: address, window: 10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe: Option<WindowSpec>,
    /// At most `max` decisions per key within a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleSpec>,
    /// `required`: a decision waits for a person's approval (not allowed with
    /// `mode: autonomous`). Default: `required` for `quarantine` and `workflow` in
    /// orchestrated mode, `none` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Loc<Approval>>,
    /// How long a decision waits for approval before it lapses (default `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_expires: Option<Loc<String>>,
}

/// Event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Indicator,
    Incident,
    Vulnerability,
    RequirementChanged,
}

impl From<EventType> for EventKind {
    fn from(t: EventType) -> EventKind {
        match t {
            EventType::Indicator => EventKind::Indicator,
            EventType::Incident => EventKind::Incident,
            EventType::Vulnerability => EventKind::Vulnerability,
            EventType::RequirementChanged => EventKind::RequirementChanged,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeverityLevel {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityLevel> for Severity {
    fn from(s: SeverityLevel) -> Severity {
        match s {
            SeverityLevel::Info => Severity::Info,
            SeverityLevel::Low => Severity::Low,
            SeverityLevel::Medium => Severity::Medium,
            SeverityLevel::High => Severity::High,
            SeverityLevel::Critical => Severity::Critical,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ObservableKind {
    Ipv4,
    Ipv6,
    Cidr,
    Domain,
    Url,
    Hash,
    Cve,
    Package,
}

impl From<ObservableKind> for ObservableType {
    fn from(k: ObservableKind) -> ObservableType {
        match k {
            ObservableKind::Ipv4 => ObservableType::Ipv4,
            ObservableKind::Ipv6 => ObservableType::Ipv6,
            ObservableKind::Cidr => ObservableType::Cidr,
            ObservableKind::Domain => ObservableType::Domain,
            ObservableKind::Url => ObservableType::Url,
            ObservableKind::Hash => ObservableType::Hash,
            ObservableKind::Cve => ObservableType::Cve,
            ObservableKind::Package => ObservableType::Package,
        }
    }
}

/// The condition over an event.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct On {
    /// Event types (at least one).
    pub events: Loc<Vec<EventType>>,
    /// The event's severity is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<SeverityLevel>,
    /// The event's producer is one of these (`suricata`, `opencanary`…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Loc<String>>,
    /// The event has an observable of one of these types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observables: Vec<ObservableKind>,
    /// Raw fields of the event: every matcher must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldMatch>,
}

/// A field matcher: exactly one of `equals`, `oneOf`, `prefix`, `contains`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FieldMatch {
    /// The event field's name (`service`, `alert.signature_id`…).
    pub field: Loc<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
}

/// What a matching event produces: exactly one of `ban`, `quarantine`, `workflow`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Decide {
    Ban(BanSpec),
    Quarantine(QuarantineSpec),
    Workflow(WorkflowCall),
}

/// Ban the event's addresses and networks for a duration.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BanSpec {
    /// Observable types to ban, among `ipv4`, `ipv6`, `cidr` (default: all three).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observables: Vec<Loc<ObservableKind>>,
    /// Duration: a number and `s`, `m`, `h` or `d` (`4h`), 1 s to 365 d.
    #[serde(rename = "for")]
    pub duration: Loc<String>,
}

/// Quarantine a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QuarantineSpec {
    /// The node to quarantine (default: the event's `node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Loc<String>>,
}

/// Run a catalog workflow with inputs taken from typed parts of the event.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkflowCall {
    /// The catalog workflow's `metadata.name`.
    pub name: Loc<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputFrom>,
}

/// Where a workflow input comes from: exactly one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum InputFrom {
    /// The value of the event's first observable of this type (validated on intake).
    Observable(ObservableKind),
    /// A part of the event.
    Event(EventPart),
    /// A constant.
    Value(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventPart {
    Id,
    Kind,
    Source,
    Severity,
    Site,
    Node,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scope {
    /// Site names (empty: every site).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<Loc<String>>,
    /// Labels a site must carry (all of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Autonomous,
    Orchestrated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    Required,
    None,
}

/// What a dedupe or throttle window counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyBy {
    /// The decision's target (address, network, node, or the workflow and its inputs).
    Address,
    /// The event's node.
    Node,
    /// The event's producer.
    Source,
    /// The response as a whole.
    Response,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WindowSpec {
    pub key: KeyBy,
    /// Duration (`10m`).
    pub window: Loc<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ThrottleSpec {
    pub key: KeyBy,
    /// Duration (`10m`).
    pub window: Loc<String>,
    /// Decisions allowed per key and window (at least 1).
    pub max: Loc<u32>,
}

// ---------------------------------------------------------------------------------------------
// The validated form.

/// A validated response, as [`crate::decide`] evaluates it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub version: Option<String>,
    pub on: Condition,
    pub action: RuleAction,
    pub sites: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub mode: Mode,
    pub dedupe: Option<(KeyBy, TimeDelta)>,
    pub throttle: Option<(KeyBy, TimeDelta, u32)>,
    /// `Some(expiry)`: decisions wait for approval this long.
    pub approval: Option<TimeDelta>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub kinds: Vec<EventKind>,
    pub min_severity: Option<Severity>,
    pub sources: Vec<String>,
    pub observables: Vec<ObservableType>,
    pub fields: Vec<FieldCond>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldOp {
    Equals(String),
    OneOf(Vec<String>),
    Prefix(String),
    Contains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCond {
    pub field: String,
    pub op: FieldOp,
}

impl Condition {
    pub fn holds(&self, e: &Event) -> bool {
        self.kinds.contains(&e.kind)
            && self.min_severity.is_none_or(|s| e.severity >= s)
            && (self.sources.is_empty() || self.sources.contains(&e.source))
            && (self.observables.is_empty()
                || e.observables
                    .iter()
                    .any(|o| self.observables.contains(&o.kind())))
            && self.fields.iter().all(|f| {
                e.fields.get(&f.field).is_some_and(|v| match &f.op {
                    FieldOp::Equals(x) => v == x,
                    FieldOp::OneOf(xs) => xs.iter().any(|x| x == v),
                    FieldOp::Prefix(x) => v.starts_with(x.as_str()),
                    FieldOp::Contains(x) => v.contains(x.as_str()),
                })
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleAction {
    Ban {
        types: Vec<ObservableType>,
        duration: TimeDelta,
    },
    Quarantine {
        node: Option<String>,
    },
    Workflow {
        name: String,
        inputs: BTreeMap<String, InputFrom>,
    },
}

impl RuleAction {
    /// Quarantine and workflows change a node; bans only drop traffic.
    pub fn is_disruptive(&self) -> bool {
        !matches!(self, RuleAction::Ban { .. })
    }
}

/// Parses a span: a number of 1 to 9 digits and one unit, `s`, `m`, `h` or `d`; 1 s to
/// [`MAX_SPAN_SECS`].
pub fn parse_span(s: &str) -> Result<TimeDelta, String> {
    let expected = "expected a number and a unit s, m, h or d (`30s`, `10m`, `4h`, `7d`)";
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() || num.len() > 9 {
        return Err(format!("invalid duration {}: {expected}", short(s)));
    }
    let n: i64 = num
        .parse()
        .map_err(|_| format!("invalid duration {}: {expected}", short(s)))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration {}: {expected}", short(s))),
    };
    let secs = n.saturating_mul(mult);
    if !(1..=MAX_SPAN_SECS).contains(&secs) {
        return Err(format!("duration {} is out of range: 1s to 365d", short(s)));
    }
    Ok(TimeDelta::seconds(secs))
}

fn short(s: &str) -> String {
    if s.chars().count() <= 40 {
        format!("`{s}`")
    } else {
        let head: String = s.chars().take(40).collect();
        format!("`{head}…` ({} bytes)", s.len())
    }
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "apiVersion")]
    api_version: Option<Loc<String>>,
    kind: Option<Loc<String>>,
}

/// Loads one `kind: Response` document strictly and validates it.
pub fn load(source: &SourceFile) -> Result<Rule, LoadError> {
    let probe: Probe = parse_as(source)?;
    match probe.api_version {
        None => {
            return Err(LoadError::at(
                source,
                1,
                1,
                "missing `apiVersion`",
                Some(format!(
                    "start the document with `apiVersion: {API_VERSION}`"
                )),
            ))
        }
        Some(v) if v.value != API_VERSION => {
            return Err(LoadError::at(
                source,
                v.line,
                v.column,
                format!("unsupported apiVersion {}", short(&v.value)),
                Some(format!("this release reads `{API_VERSION}`")),
            ))
        }
        _ => {}
    }
    match probe.kind {
        Some(k) if k.value == "Response" => {}
        Some(k) => {
            return Err(LoadError::at(
                source,
                k.line,
                k.column,
                format!(
                    "expected a Response document, found kind {}",
                    short(&k.value)
                ),
                Some("pass a file whose `kind` is `Response`".into()),
            ))
        }
        None => {
            return Err(LoadError::at(
                source,
                1,
                1,
                "missing `kind`",
                Some("add `kind: Response`".into()),
            ))
        }
    }
    let doc: Response = parse_as(source)?;
    validate(source, &doc)
}

/// Validates a parsed document into a [`Rule`]; errors point at the offending value.
pub fn validate(source: &SourceFile, doc: &Response) -> Result<Rule, LoadError> {
    let err = |line: u64, col: u64, msg: String, help: Option<&str>| {
        LoadError::at(source, line, col, msg, help.map(str::to_string))
    };
    let name = &doc.metadata.name;
    check_workflow_name(name).map_err(|e| {
        err(
            name.line,
            name.column,
            e.replace("workflow name", "response name"),
            None,
        )
    })?;
    let spec = &doc.spec;
    let span = |v: &Loc<String>| parse_span(v).map_err(|e| err(v.line, v.column, e, None));
    let text = |v: &Loc<String>, what: &str| -> Result<String, LoadError> {
        if v.is_empty() || v.len() > MAX_MATCH_TEXT {
            return Err(err(
                v.line,
                v.column,
                format!("{what} must be 1 to {MAX_MATCH_TEXT} bytes"),
                None,
            ));
        }
        Ok(v.value.clone())
    };

    // on
    let on = &spec.on;
    if on.events.is_empty() {
        return Err(err(
            on.events.line,
            on.events.column,
            "`on.events` is empty".into(),
            Some("name at least one of indicator, incident, vulnerability, requirement_changed"),
        ));
    }
    let too_many = |n: usize, what: &str| {
        (n > MAX_LIST).then(|| {
            err(
                0,
                0,
                format!("{what} has {n} entries, more than the {MAX_LIST} accepted"),
                None,
            )
        })
    };
    if let Some(e) = too_many(on.sources.len(), "`on.sources`")
        .or_else(|| too_many(on.fields.len(), "`on.fields`"))
        .or_else(|| too_many(spec.scope.sites.len(), "`scope.sites`"))
    {
        return Err(e);
    }
    let mut fields = Vec::new();
    for f in &on.fields {
        let field = text(&f.field, "a field name")?;
        let mut ops = Vec::new();
        if let Some(v) = &f.equals {
            ops.push(FieldOp::Equals(v.clone()));
        }
        if let Some(v) = &f.one_of {
            if v.is_empty() || v.len() > MAX_LIST {
                return Err(err(
                    f.field.line,
                    f.field.column,
                    format!("`oneOf` needs 1 to {MAX_LIST} values"),
                    None,
                ));
            }
            ops.push(FieldOp::OneOf(v.clone()));
        }
        if let Some(v) = &f.prefix {
            ops.push(FieldOp::Prefix(v.clone()));
        }
        if let Some(v) = &f.contains {
            ops.push(FieldOp::Contains(v.clone()));
        }
        let long = match ops.first() {
            Some(FieldOp::Equals(v) | FieldOp::Prefix(v) | FieldOp::Contains(v)) => {
                v.len() > MAX_MATCH_TEXT
            }
            Some(FieldOp::OneOf(vs)) => vs.iter().any(|v| v.len() > MAX_MATCH_TEXT),
            None => false,
        };
        if ops.len() != 1 || long {
            return Err(err(
                f.field.line,
                f.field.column,
                if long {
                    format!(
                        "a value of the matcher on `{field}` is longer than {MAX_MATCH_TEXT} bytes"
                    )
                } else {
                    format!("the matcher on `{field}` needs exactly one of `equals`, `oneOf`, `prefix`, `contains`")
                },
                None,
            ));
        }
        fields.push(FieldCond {
            field,
            op: ops.remove(0),
        });
    }
    let mut sources = Vec::new();
    for s in &on.sources {
        sources.push(text(s, "a source")?);
    }
    let condition = Condition {
        kinds: on.events.iter().map(|&k| k.into()).collect(),
        min_severity: on.min_severity.map(Into::into),
        sources,
        observables: on.observables.iter().map(|&k| k.into()).collect(),
        fields,
    };

    // decide
    let action = match &spec.decide {
        Decide::Ban(b) => {
            let mut types = Vec::new();
            for o in &b.observables {
                if !matches!(
                    o.value,
                    ObservableKind::Ipv4 | ObservableKind::Ipv6 | ObservableKind::Cidr
                ) {
                    return Err(err(
                        o.line,
                        o.column,
                        format!(
                            "a ban takes addresses and networks, not `{}`",
                            ObservableType::from(o.value).as_str()
                        ),
                        Some("use ipv4, ipv6 or cidr"),
                    ));
                }
                types.push(o.value.into());
            }
            if types.is_empty() {
                types = vec![
                    ObservableType::Ipv4,
                    ObservableType::Ipv6,
                    ObservableType::Cidr,
                ];
            }
            RuleAction::Ban {
                types,
                duration: span(&b.duration)?,
            }
        }
        Decide::Quarantine(q) => RuleAction::Quarantine {
            node: match &q.node {
                Some(n) => Some(text(n, "a node name")?),
                None => None,
            },
        },
        Decide::Workflow(w) => {
            check_workflow_name(&w.name).map_err(|e| err(w.name.line, w.name.column, e, None))?;
            if let Some(e) = too_many(w.inputs.len(), "`decide.workflow.inputs`") {
                return Err(e);
            }
            for (k, v) in &w.inputs {
                let bad = k.is_empty()
                    || k.len() > 64
                    || !k
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bad || matches!(v, InputFrom::Value(s) if s.len() > MAX_MATCH_TEXT) {
                    return Err(err(
                        w.name.line,
                        w.name.column,
                        format!(
                            "workflow input {}: names are 1 to 64 letters, digits, `_`, `-`; values at most {MAX_MATCH_TEXT} bytes",
                            short(k)
                        ),
                        None,
                    ));
                }
            }
            RuleAction::Workflow {
                name: w.name.value.clone(),
                inputs: w.inputs.clone(),
            }
        }
    };

    // windows
    let dedupe = match &spec.dedupe {
        Some(d) => Some((d.key, span(&d.window)?)),
        None => None,
    };
    let throttle = match &spec.throttle {
        Some(t) => {
            if t.max.value == 0 {
                return Err(err(
                    t.max.line,
                    t.max.column,
                    "`throttle.max` must be at least 1".into(),
                    None,
                ));
            }
            Some((t.key, span(&t.window)?, t.max.value))
        }
        None => None,
    };

    // mode and approval
    let mode = spec.mode.value;
    let approval_mode = match &spec.approval {
        Some(a) => a.value,
        None if mode == Mode::Orchestrated && action.is_disruptive() => Approval::Required,
        None => Approval::None,
    };
    if let Some(a) = &spec.approval {
        if a.value == Approval::Required && mode == Mode::Autonomous {
            return Err(err(
                a.line,
                a.column,
                "`approval: required` cannot be used with `mode: autonomous`".into(),
                Some("an autonomous response acts at once at the site, with no one to approve; use `mode: orchestrated` to wait for approval, or `approval: none`"),
            ));
        }
    }
    let approval = match approval_mode {
        Approval::Required => Some(match &spec.approval_expires {
            Some(e) => span(e)?,
            None => TimeDelta::hours(1),
        }),
        Approval::None => {
            if let Some(e) = &spec.approval_expires {
                return Err(err(
                    e.line,
                    e.column,
                    "`approvalExpires` is only meaningful with `approval: required`".into(),
                    None,
                ));
            }
            None
        }
    };
    let mut sites = Vec::new();
    for s in &spec.scope.sites {
        sites.push(text(s, "a site name")?);
    }
    Ok(Rule {
        name: name.value.clone(),
        version: doc.metadata.version.clone(),
        on: condition,
        action,
        sites,
        labels: spec.scope.labels.clone(),
        mode,
        dedupe,
        throttle,
        approval,
    })
}

/// The JSON Schema of `kind: Response` (editor completion).
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(Response)
}
