//! One step of a run spanning sites, as it crosses the wire: the outcome the agent reports
//! for the step it ran, and the engine's view of it at the orchestrator.

use crate::proto::StepOutcome;
use vacsine_core::record::{bound_stream, StepStatus};
use vacsine_engine::executor::StepResult;

/// Longest a dispatched step may run at its site (the engine's default step timeout).
pub const MAX_STEP_MS: u64 = 3_600_000;

/// The outcome an agent reports for a step it ran (streams bounded like records).
pub fn outcome_of(r: &StepResult) -> StepOutcome {
    StepOutcome {
        status: r.status,
        exit_code: r.exit_code,
        stdout: bound_stream(&r.stdout),
        stderr: bound_stream(&r.stderr),
        changed: r.changed,
        messages: r.messages.clone(),
        outputs: r.outputs.clone(),
        undo: r.undo.clone().filter(|_| r.changed),
        error: r.error.clone(),
        ran: r.ran.clone(),
    }
}

/// The engine's view of an outcome a site reported.
pub fn result_of(o: StepOutcome) -> StepResult {
    let mut r = StepResult::ok(o.changed);
    r.status = o.status;
    r.exit_code = o.exit_code;
    r.stdout = o.stdout.into_bytes();
    r.stderr = o.stderr.into_bytes();
    r.messages = o.messages;
    r.outputs = o.outputs;
    r.undo = o.undo;
    r.error = o.error;
    r.ran = o.ran;
    if r.status != StepStatus::Succeeded && r.error.is_none() {
        r.error = Some(format!("the step ended {}", r.status.as_str()));
    }
    r
}
