//! Requirement outcomes, following XCCDF 1.2 result values.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The outcome of checking one requirement on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The node satisfies the requirement.
    Pass,
    /// The node does not satisfy the requirement.
    Fail,
    /// The check could not be performed (probe failed, node unreachable…).
    Error,
    /// The check ran but its result could not be interpreted.
    Unknown,
    /// The requirement does not apply to this node (`appliesWhen` was false).
    NotApplicable,
    /// The requirement was not checked (filtered out, or a previous phase stopped).
    NotChecked,
    /// The check only reports information.
    Informational,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Error => "error",
            Outcome::Unknown => "unknown",
            Outcome::NotApplicable => "not_applicable",
            Outcome::NotChecked => "not_checked",
            Outcome::Informational => "informational",
        }
    }

    /// True for outcomes that need attention (a failure or an inability to decide).
    pub fn is_problem(self) -> bool {
        matches!(self, Outcome::Fail | Outcome::Error | Outcome::Unknown)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
