//! A pure matcher: which events satisfy which simple conditions. The hot path of intake.

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, Severity};
use crate::observable::ObservableType;

/// A condition: every field given must hold (absent fields hold for any event).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EventKind>,
    /// The event's severity is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    /// The event has an observable of this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observable: Option<ObservableType>,
    /// The event's producer (`suricata`, `cowrie`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Condition {
    pub fn holds(&self, e: &Event) -> bool {
        self.kind.is_none_or(|k| k == e.kind)
            && self.min_severity.is_none_or(|s| e.severity >= s)
            && self.source.as_deref().is_none_or(|s| s == e.source)
            && self
                .observable
                .is_none_or(|t| e.observables.iter().any(|o| o.kind() == t))
    }
}

/// One event matched by one condition (indices into the inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match {
    pub event: usize,
    pub condition: usize,
}

/// Every (event, condition) pair that holds, in event order then condition order.
pub fn matches(events: &[Event], conditions: &[Condition]) -> Vec<Match> {
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        for (j, c) in conditions.iter().enumerate() {
            if c.holds(e) {
                out.push(Match {
                    event: i,
                    condition: j,
                });
            }
        }
    }
    out
}
