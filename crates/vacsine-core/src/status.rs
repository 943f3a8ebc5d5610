//! The one status of a run, shared by the engine (its journal), the orchestrator (its work
//! queue and API), the agents and the CLI. Stored and sent as the snake_case names
//! ([`RunStatus::as_str`]); nothing else spells them.

use serde::{Deserialize, Serialize};

/// Status of a whole run, wherever it is run or kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// In the orchestrator's queue, not yet leased by an agent.
    Queued,
    /// Started and not finished: journaled as started (a process that died leaves it here:
    /// resumable), or leased to an agent that is executing it.
    Running,
    Succeeded,
    Failed,
    /// Stopped on resume because a non-idempotent step was caught mid-flight.
    Interrupted,
    /// Undone by the engine's rollback.
    RolledBack,
    /// Stopped by a signal (SIGINT/SIGTERM), or cancelled before an agent took it.
    Cancelled,
}

impl RunStatus {
    /// Every status, in the order of a run's life.
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Interrupted,
        RunStatus::RolledBack,
        RunStatus::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::RolledBack => "rolled_back",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        RunStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether the run has ended (nothing more will happen to it unless resumed by hand).
    pub const fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }

    /// Whether a status name (as stored) is final; an unknown name is not.
    pub fn is_final_str(s: &str) -> bool {
        RunStatus::parse(s).is_some_and(RunStatus::is_final)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::RunStatus;

    #[test]
    fn names_round_trip_and_match_serde() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(RunStatus::parse("done"), None);
        assert!(!RunStatus::is_final_str("queued") && !RunStatus::is_final_str("running"));
        assert!(RunStatus::is_final_str("succeeded") && RunStatus::is_final_str("cancelled"));
        assert!(!RunStatus::is_final_str("nonsense"));
    }
}
