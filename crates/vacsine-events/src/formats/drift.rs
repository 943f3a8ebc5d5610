//! Vacsine's own check results: a requirement that passed at a node and now fails is a
//! `requirement_changed` (drift) event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::event::{Event, EventKind, Severity};
use crate::input::{json_values, ErrorKind, ParseError, Parsed};

/// A check's outcome (the XCCDF outcomes of `vacsine check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Error,
    Unknown,
    #[serde(alias = "notapplicable")]
    NotApplicable,
    #[serde(alias = "notchecked")]
    NotChecked,
    Informational,
}

/// One check result: a requirement at a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub requirement: String,
    pub node: String,
    pub outcome: Outcome,
    /// The requirement's severity (drift events carry it; default medium).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The requirement's title, when known (the summary names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Check results as `vacsine check --format json` prints them (`{"results": [...]}`), as
/// `vacsine check --scap … --format json` prints them (one line per node: `{"node": …,
/// "report": {"rules": [{"id", "title", "severity", "outcome"}…]}}`, the rule id as the
/// requirement), or a bare JSON array of results. Unknown fields are ignored; a result that
/// does not fit is reported (`line N: results[i]: …`) and the others are kept.
pub fn read_check_results(bytes: &[u8]) -> (Vec<CheckResult>, Vec<ParseError>) {
    let mut out = Parsed::default();
    let mut results = Vec::new();
    json_values(bytes, &mut out, |line, v, out| {
        if let Some(Value::Array(rules)) = v.pointer("/report/rules") {
            let node = match v.get("node") {
                Some(Value::String(n)) => n.clone(),
                _ => {
                    return out.errors.push(ParseError::new(
                        line,
                        ErrorKind::Missing,
                        "a SCAP report line without `node` (expected `vacsine check --scap --format json` output)",
                    ))
                }
            };
            for (i, rule) in rules.iter().enumerate() {
                match scap_rule(rule, &node) {
                    Ok(r) => results.push(r),
                    Err(e) => out.errors.push(ParseError::new(
                        line,
                        ErrorKind::Invalid,
                        format!("report.rules[{i}]: {e} (expected id, outcome)"),
                    )),
                }
            }
            return;
        }
        let (items, what) =
            match v {
                Value::Object(mut o) => match o.remove("results") {
                    Some(Value::Array(a)) => (a, "results"),
                    _ => return out.errors.push(ParseError::new(
                        line,
                        ErrorKind::Invalid,
                        "expected `vacsine check --format json` output (an object with `results`)",
                    )),
                },
                Value::Array(a) => (a, ""),
                _ => {
                    return out.errors.push(ParseError::new(
                        line,
                        ErrorKind::Invalid,
                        "expected check results (an object with `results`, or an array)",
                    ))
                }
            };
        for (i, item) in items.into_iter().enumerate() {
            match serde_json::from_value::<CheckResult>(item) {
                Ok(r) => results.push(r),
                Err(e) => out.errors.push(ParseError::new(
                    line,
                    ErrorKind::Invalid,
                    format!("{what}[{i}]: {e} (expected requirement, node, outcome)"),
                )),
            }
        }
    });
    (results, out.errors)
}

fn scap_rule(rule: &Value, node: &str) -> Result<CheckResult, serde_json::Error> {
    #[derive(Deserialize)]
    struct Rule {
        id: String,
        outcome: Outcome,
        #[serde(default)]
        severity: Option<String>,
        #[serde(default)]
        title: Option<String>,
    }
    let r = Rule::deserialize(rule)?;
    Ok(CheckResult {
        requirement: r.id,
        node: node.to_string(),
        outcome: r.outcome,
        severity: r.severity.as_deref().and_then(Severity::parse),
        title: r.title,
    })
}

/// `requirement_changed` events for each (requirement, node) that was `pass` in `previous`
/// and is `fail` in `current`, at time `at` (when `current` was observed), in the order of
/// `current`. Other transitions (to `error`, to `not_applicable`, fail → pass, new pairs) are
/// not drift.
pub fn drift(previous: &[CheckResult], current: &[CheckResult], at: DateTime<Utc>) -> Vec<Event> {
    let passed: std::collections::HashSet<(&str, &str)> = previous
        .iter()
        .filter(|r| r.outcome == Outcome::Pass)
        .map(|r| (r.requirement.as_str(), r.node.as_str()))
        .collect();
    let mut seen = std::collections::HashSet::new();
    current
        .iter()
        .filter(|r| r.outcome == Outcome::Fail)
        .filter(|r| passed.contains(&(r.requirement.as_str(), r.node.as_str())))
        .filter(|r| seen.insert((r.requirement.as_str(), r.node.as_str())))
        .map(|r| {
            let mut e = Event::new(
                EventKind::RequirementChanged,
                "vacsine",
                at,
                r.severity.unwrap_or(Severity::Medium),
                match &r.title {
                    Some(t) => format!(
                        "vacsine: {} ({t}) passed and now fails on {}",
                        r.requirement, r.node
                    ),
                    None => format!(
                        "vacsine: {} passed and now fails on {}",
                        r.requirement, r.node
                    ),
                },
            );
            e.node = Some(r.node.clone());
            e.field("requirement", r.requirement.as_str());
            e.field("previous", "pass");
            e.field("outcome", "fail");
            e.seal()
        })
        .collect()
}
