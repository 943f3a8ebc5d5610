//! The Vacsine workflow engine: one engine for the CLI, the enforce pipeline and the agents.
//!
//! - [`Engine::run`] validates a workflow and its inputs, then schedules its steps as a DAG
//!   (`needs`, bounded concurrency), templating each step's `with` (minijinja, strict
//!   undefined) and handing the rendered values to an [`executor::Executor`] as *data*.
//! - Every step attempt is journaled in SQLite ([`Journal`]) before it starts and after it
//!   ends; [`Engine::resume`] continues a crashed run without silently re-running a
//!   non-idempotent step (a step that died between two attempts goes on retrying).
//! - `concurrency` bounds step instances: each node of a fanned-out step takes a slot.
//! - A `workflow` step's `timeout` bounds its whole sub-run: steps not started by then are
//!   `cancelled`, running ones time out (processes killed), the step is `timed_out`.
//! - Executors that change state capture the prior state first; a failed run is compensated
//!   (automatic undo in reverse completion order, then the workflow's `rollback` steps), and
//!   [`Engine::rollback`] undoes a finished run on request. A failed sub-workflow is
//!   compensated the same way (records `<step>/undo:…`, `<step>/rollback:…`) before its
//!   parent fails; changes made by compensation steps are never undone.
//!
//! Step failures are data (in the [`RunReport`]); [`EngineError`] is only for a bad workflow,
//! bad inputs, missing secrets or nodes, and journal problems.
#![forbid(unsafe_code)]

mod engine;
pub mod executor;
mod inputs;
mod journal;
mod local;
mod procgroup;
pub mod reference;
pub mod retention;
mod seal;
mod template;
pub mod triggers;
mod validate;

pub use engine::{
    CancelToken, Catalog, Engine, NodeMap, ProgressEvent, ProgressFn, RunReport, RunRequest,
    CANCEL_GRACE, DEFAULT_CONCURRENCY, DEFAULT_STEP_TIMEOUT,
};
pub use journal::{
    reclaim_space, EndedRun, Journal, JournalError, LeaseBusy, RunSummary, LEASE_TTL,
};
pub use local::LocalNode;
pub use validate::{firewall_rulesets, validate_workflow, FirewallRuleset, WorkflowProblem};

/// Status of a whole run: the one enum of the core, shared with the orchestrator and the CLI.
pub use vacsine_core::status::RunStatus;

/// Errors that prevent a run from starting (or a journal from being read). Step failures are
/// not errors: they are in the report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("workflow `{workflow}` is invalid:\n{}", validate::format_problems(.problems))]
    InvalidWorkflow {
        workflow: String,
        problems: Vec<WorkflowProblem>,
    },
    #[error("input `{name}`: {message}")]
    Input { name: String, message: String },
    #[error("secret `{name}`: {message}")]
    Secret { name: String, message: String },
    #[error("step `{step}` ({executor}) needs a node, but {reason}; set `runsOn` on the step or pass a default node (nodes given: {})", list(.available))]
    NoNode {
        step: String,
        executor: String,
        reason: String,
        available: Vec<String>,
    },
    #[error("default node `{name}` is not among the nodes given ({})", list(.available))]
    UnknownNode {
        name: String,
        available: Vec<String>,
    },
    #[error("run `{run_id}` is being driven by {} (last heartbeat {}s ago): wait for it to end, or stop that process; a lease whose holder is gone expires after {}s", .busy.holder, .busy.since_heartbeat.as_secs(), journal::LEASE_TTL.as_secs())]
    LeaseHeld { run_id: String, busy: LeaseBusy },
    #[error("run `{0}` not found in the journal")]
    RunNotFound(String),
    #[error("run `{run_id}` is {status}: it cannot be {action}")]
    InvalidState {
        run_id: String,
        status: RunStatus,
        action: &'static str,
    },
    #[error("run `{run_id}`: the journaled workflow cannot be read back: {message}")]
    Corrupt { run_id: String, message: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
