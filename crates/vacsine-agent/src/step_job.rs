//! One step of a run the orchestrator drives across sites (`runsOn` naming sites): the
//! signed job names the executor and carries the step's arguments, already rendered by the
//! orchestrator's engine. They go to the executor as data (no template engine, no shell
//! here); the attempt's record goes to the outbox like any other, and its outcome (status,
//! streams, outputs, the prior state for an undo) travels with the run's end, which is the
//! confirmation the orchestrator waits for before it advances.

use crate::Shared;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vacsine_contract::bundle::VerifiedWork;
use vacsine_contract::proto::{StepJob, StepOutcome};
use vacsine_contract::step as xsite;
use vacsine_core::node::NodeOps;
use vacsine_core::record::{rfc3339, Level, Message, Ran, StepRecord, StepStatus};
use vacsine_core::status::RunStatus;
use vacsine_engine::executor::{self, ExecCtx, StepResult};
use vacsine_engine::{CancelToken, LocalNode};

/// Run the verified work's step `job`: the run's status, its message and the step's outcome.
pub(super) async fn run(
    sh: &Arc<Shared>,
    w: &VerifiedWork,
    job: &StepJob,
    cancel: CancelToken,
) -> (RunStatus, Option<String>, StepOutcome) {
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let result = execute(sh, w, job, cancel).await;
    let elapsed = clock.elapsed();
    let mut outcome = xsite::outcome_of(&result);
    // The orchestrator records the step with the times it ran here, not its own wait.
    outcome.ran = Some(Ran {
        started_at: rfc3339(started),
        duration_ms: elapsed.as_millis() as u64,
    });
    // The attempt's record, as this site saw it (the orchestrator journals its own copy in
    // the run spanning sites).
    let mut rec = StepRecord::started(
        w.run_id(),
        &job.step_id,
        job.attempt,
        Some(&sh.site),
        &job.executor,
        rfc3339(started),
    );
    rec.finished_at = Some(rfc3339(
        started + chrono::Duration::from_std(elapsed).unwrap_or_default(),
    ));
    rec.duration_ms = Some(elapsed.as_millis() as u64);
    rec.status = result.status;
    rec.exit_code = result.exit_code;
    rec.stdout = outcome.stdout.clone();
    rec.stderr = outcome.stderr.clone();
    rec.changed = result.changed;
    rec.messages = outcome.messages.clone();
    rec.outputs = outcome.outputs.clone();
    if let Some(e) = &outcome.error {
        rec.messages.push(Message {
            at: rfc3339(chrono::Utc::now()),
            level: Level::Error,
            text: e.clone(),
        });
        rec.error = Some(e.clone());
    }
    let key = crate::record_key(&rec);
    match serde_json::to_string(&rec) {
        Ok(body) => {
            if let Err(e) = sh.outbox.put(&key, w.run_id(), "record", &body) {
                eprintln!("warning: outbox: {e}");
            }
        }
        // Never queued as an empty body: said, with its key (the outcome goes with the end).
        Err(e) => eprintln!("error: record {key}: cannot be encoded ({e}): not queued"),
    }
    sh.kick.notify_one();
    let status = if result.status == StepStatus::Succeeded {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    let message = outcome.error.clone().or_else(|| {
        Some(format!(
            "step `{}`: {}",
            job.step_id,
            result.status.as_str()
        ))
    });
    (status, message, outcome)
}

async fn execute(
    sh: &Arc<Shared>,
    w: &VerifiedWork,
    job: &StepJob,
    cancel: CancelToken,
) -> StepResult {
    let run_id = w.run_id();
    let x: Arc<dyn executor::Executor> = if job.executor == "container" {
        // Only the image the signed job lists, fetched and verified if needed, by the ID
        // loaded.
        match crate::images::prepare(sh, w, &cancel).await {
            Ok(allowed) => Arc::new(executor::ContainerExecutor::allowing(allowed)),
            Err(e) => return StepResult::failed(format!("{e:#}")),
        }
    } else {
        let Some(x) = executor::builtin()
            .into_iter()
            .find(|e| e.name() == job.executor)
        else {
            return StepResult::failed(format!(
                "this agent (vacsine {}) has no executor `{}`",
                vacsine_contract::VERSION,
                job.executor
            ));
        };
        x
    };
    let timeout = Duration::from_millis(job.timeout_ms.clamp(1, xsite::MAX_STEP_MS));
    let node: Option<Arc<dyn NodeOps>> = x
        .needs_node()
        .then(|| Arc::new(LocalNode::new(sh.site.clone())) as Arc<dyn NodeOps>);
    let ctx = ExecCtx {
        run_id: run_id.to_string(),
        step_id: job.step_id.clone(),
        attempt: job.attempt,
        node,
        timeout,
        secret_env: Vec::new(),
        observer: None,
        undo_log: None,
    };
    let work = async {
        match &job.undo {
            Some(undo) => x.undo(&ctx, undo.clone()).await,
            None => {
                if let Err(e) = x.check_args(&job.args) {
                    return StepResult::failed(e);
                }
                x.run(&ctx, job.args.clone()).await
            }
        }
    };
    // The executor enforces the deadline itself; this bound catches one that cannot.
    tokio::select! {
        r = tokio::time::timeout(timeout + Duration::from_secs(5), work) => {
            r.unwrap_or_else(|_| StepResult::timed_out(timeout))
        }
        _ = cancel.reached(1) => {
            let mut r = StepResult::failed("cancelled: the agent stopped or lost the step's lease");
            r.status = StepStatus::Cancelled;
            r
        }
    }
}
