//! Vacsine's own check results: a requirement that passed at a node and now fails is a
//! `requirement_changed` (drift) event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, Severity};

/// A check's outcome (the XCCDF outcomes of `vacsine check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Error,
    Unknown,
    NotApplicable,
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
                format!(
                    "vacsine: {} passed and now fails on {}",
                    r.requirement, r.node
                ),
            );
            e.node = Some(r.node.clone());
            e.field("requirement", r.requirement.as_str());
            e.field("previous", "pass");
            e.field("outcome", "fail");
            e.seal()
        })
        .collect()
}
