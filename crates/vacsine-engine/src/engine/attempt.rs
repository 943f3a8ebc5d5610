//! One step on one node: its condition, its attempts (retry with backoff, timeout), each
//! attempt journaled before it starts and after it ends, cancellation by signal.

use super::context::{mask_map, NodeResult, RunCtx, Scope};
use super::{Engine, ProgressEvent, CANCEL_GRACE, DEFAULT_STEP_TIMEOUT};
use crate::executor::{message, ExecCtx, Executor, StepResult, UndoLog, WORKFLOW_EXECUTOR};
use crate::template;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vacsine_core::node::NodeOps;
use vacsine_core::record::{bound_stream, rfc3339, Level, Masker, Message, StepRecord, StepStatus};
use vacsine_core::workflow::{parse_duration, Step};

/// How a step is attempted, from its declaration.
struct AttemptPlan {
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
    /// None for a sub-workflow step.
    executor: Option<Arc<dyn Executor>>,
}

impl Engine {
    /// Journal and report a step that failed before its executor could start.
    pub(super) async fn finish_failed(
        &self,
        run: &RunCtx,
        full_id: &str,
        s: &Step,
        node: Option<&str>,
        attempt: u32,
        error: String,
    ) -> StepStatus {
        let error = run.masker().mask(&error).into_owned();
        let rec = StepRecord::instant(
            &run.run_id,
            full_id,
            attempt,
            node,
            &s.uses.value,
            StepStatus::Failed,
            message(Level::Error, error),
        );
        if let Err(e) = self.journal.start_record(&rec) {
            tracing::error!(error = %e, "journal write failed");
        }
        run.emit(ProgressEvent::StepFinished {
            run_id: run.run_id.clone(),
            step_id: full_id.into(),
            node: node.map(str::to_string),
            attempt,
            status: StepStatus::Failed,
            elapsed: Duration::ZERO,
        });
        StepStatus::Failed
    }

    fn attempt_plan(&self, s: &Step) -> Result<AttemptPlan, String> {
        let timeout = match s.timeout.as_ref().map(|t| parse_duration(t)) {
            None => DEFAULT_STEP_TIMEOUT,
            Some(t) => t?,
        };
        let (attempts, backoff) = match &s.retry {
            None => (1, Duration::ZERO),
            Some(r) => (r.attempts.max(1), parse_duration(&r.backoff)?),
        };
        let executor = if s.uses.value == WORKFLOW_EXECUTOR {
            None
        } else {
            Some(
                self.registry
                    .get(&s.uses)
                    .cloned()
                    .ok_or_else(|| format!("unknown executor `{}`", s.uses.value))?,
            )
        };
        Ok(AttemptPlan {
            timeout,
            attempts,
            backoff,
            executor,
        })
    }

    /// Attempts of one step on one node.
    pub(super) async fn run_on_node(
        &self,
        run: &RunCtx,
        scope: &Scope,
        s: &Step,
        full_id: &str,
        node: Option<&Arc<dyn NodeOps>>,
        attempt_base: u32,
    ) -> NodeResult {
        let node_name = node.map(|n| n.node().name.clone());
        let nn = node_name.as_deref();
        let fail = |e: String| async move {
            let st = self
                .finish_failed(run, full_id, s, nn, attempt_base + 1, e)
                .await;
            NodeResult::new(nn.map(str::to_string), st)
        };
        if let Some(cond) = &s.condition {
            let ctx = scope.context(run, node);
            match template::eval_condition(cond, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    let why = format!("skipped: `if: {}` is false", cond.value);
                    self.record_skip(run, scope, s, nn, &why);
                    return NodeResult::new(node_name, StepStatus::Skipped);
                }
                Err(e) => return fail(format!("in `if: {}`: {e}", cond.value)).await,
            }
        }
        let plan = match self.attempt_plan(s) {
            Ok(p) => p,
            Err(e) => return fail(e).await,
        };
        // On resume, attempts already journaled count (a step caught running gets one more).
        let attempts = plan.attempts.saturating_sub(attempt_base).max(1);
        let mut last = NodeResult::new(node_name.clone(), StepStatus::Failed);
        for i in 1..=attempts {
            let attempt = attempt_base + i;
            if run.cancel.is_cancelled() {
                // Not started: no record, a resume runs it.
                last.status = StepStatus::Cancelled;
                break;
            }
            // Inside a sub-workflow with a timeout, no attempt outlives its deadline.
            let left = scope
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                if i == 1 {
                    let why = "cancelled: the timeout of the sub-workflow expired before the step started";
                    self.record_status(run, scope, s, nn, StepStatus::Cancelled, why);
                    return NodeResult::new(node_name, StepStatus::Cancelled);
                }
                break;
            }
            let timeout = left.map_or(plan.timeout, |l| l.min(plan.timeout));
            let args = match render_args(s, &plan, &scope.context(run, node)) {
                Ok(a) => a,
                Err(e) => {
                    let st = self.finish_failed(run, full_id, s, nn, attempt, e).await;
                    return NodeResult::new(node_name, st);
                }
            };
            last = self
                .attempt(run, scope, s, full_id, node, &plan, attempt, timeout, args)
                .await;
            if last.status == StepStatus::Succeeded || i == attempts || run.cancel.is_cancelled() {
                break;
            }
            let mut delay = plan.backoff.saturating_mul(1u32 << (attempt - 1).min(16));
            if let Some(d) = scope.deadline {
                delay = delay.min(d.saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = run.cancel.reached(1) => {}
            }
        }
        last
    }

    /// One attempt: journal it, run it, evaluate its outputs, journal its end.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        run: &RunCtx,
        scope: &Scope,
        s: &Step,
        full_id: &str,
        node: Option<&Arc<dyn NodeOps>>,
        plan: &AttemptPlan,
        attempt: u32,
        timeout: Duration,
        args: Value,
    ) -> NodeResult {
        let node_name = node.map(|n| n.node().name.clone());
        let started = chrono::Utc::now();
        let clock = Instant::now();
        let mut rec = StepRecord::started(
            &run.run_id,
            full_id,
            attempt,
            node_name.as_deref(),
            &s.uses.value,
            rfc3339(started),
        );
        let seq = match self.journal.start_record(&rec) {
            Ok(seq) => seq,
            Err(e) => {
                // Never act without a journal entry.
                tracing::error!(error = %e, "journal write failed");
                return NodeResult::new(node_name, StepStatus::Failed);
            }
        };
        run.emit(ProgressEvent::StepStarted {
            run_id: run.run_id.clone(),
            step_id: full_id.into(),
            node: node_name.clone(),
            attempt,
        });
        let undo_log = UndoLog {
            journal: self.journal.clone(),
            run_id: run.run_id.clone(),
            record_seq: seq,
            step_id: full_id.into(),
            node: node_name.clone(),
            executor: s.uses.value.clone(),
            saved: Default::default(),
        };
        let ectx = ExecCtx {
            run_id: run.run_id.clone(),
            step_id: full_id.into(),
            attempt,
            node: node.cloned(),
            timeout,
            secret_env: scope.secret_env.clone(),
            observer: run.observer.clone(),
            undo_log: Some(undo_log.clone()),
        };
        let mut result = match &plan.executor {
            Some(e) => cancellable(run, e.run(&ectx, args), timeout).await,
            None => {
                // `timeout` bounds the whole sub-run (and so does an enclosing one). Its own
                // steps see the cancellation.
                let bound = (s.timeout.is_some() || scope.deadline.is_some()).then_some(timeout);
                let mut r = self
                    .run_subworkflow(run, scope, full_id, node, args, bound)
                    .await;
                if run.cancel.is_cancelled() && r.status != StepStatus::Succeeded {
                    r.status = StepStatus::Cancelled;
                }
                r
            }
        };
        if result.status == StepStatus::Succeeded && !s.outputs.is_empty() {
            evaluate_outputs(run, scope, s, node, &mut result);
        }
        let elapsed = clock.elapsed();
        let masker = run.masker();
        finish_record(&mut rec, &result, &masker, started, elapsed);
        rec.outputs = mask_map(&result.outputs, &masker);
        // Undo data: journaled by the executor before its change, or returned with the
        // result; dropped when nothing changed after all.
        let undo = if undo_log.saved() {
            if !rec.changed {
                if let Err(e) = self.journal.drop_undo(seq) {
                    tracing::error!(error = %e, "journal write failed");
                }
            }
            None
        } else {
            result.undo.as_ref().filter(|_| rec.changed)
        };
        if let Err(e) = self
            .journal
            .finish_record(seq, &rec, undo, Some(&result.outputs))
        {
            tracing::error!(error = %e, "journal write failed");
        }
        run.emit(ProgressEvent::StepFinished {
            run_id: run.run_id.clone(),
            step_id: full_id.into(),
            node: node_name.clone(),
            attempt,
            status: rec.status,
            elapsed,
        });
        NodeResult {
            node: node_name,
            status: rec.status,
            outputs: result.outputs,
            changed: rec.changed,
        }
    }
}

/// Fill an attempt's record from its result, every text masked and streams bounded.
pub(super) fn finish_record(
    rec: &mut StepRecord,
    result: &StepResult,
    masker: &Masker,
    started: chrono::DateTime<chrono::Utc>,
    elapsed: Duration,
) {
    let bounded = |b: &[u8]| bound_stream(masker.mask(&String::from_utf8_lossy(b)).as_bytes());
    // A step that ran elsewhere is recorded with the times it ran there.
    let site = result.ran.as_ref().and_then(|r| {
        chrono::DateTime::parse_from_rfc3339(&r.started_at)
            .ok()
            .map(|at| {
                (
                    r.started_at.clone(),
                    at.with_timezone(&chrono::Utc),
                    r.duration_ms,
                )
            })
    });
    let (started, elapsed) = match site {
        Some((text, at, ms)) => {
            rec.started_at = text;
            (at, Duration::from_millis(ms))
        }
        None => (started, elapsed),
    };
    rec.finished_at = Some(rfc3339(
        started + chrono::Duration::from_std(elapsed).unwrap_or_default(),
    ));
    rec.duration_ms = Some(elapsed.as_millis() as u64);
    rec.status = result.status;
    rec.exit_code = result.exit_code;
    rec.stdout = bounded(&result.stdout);
    rec.stderr = bounded(&result.stderr);
    rec.changed = result.changed;
    rec.messages = result
        .messages
        .iter()
        .map(|m| Message {
            text: masker.mask(&m.text).into_owned(),
            ..m.clone()
        })
        .collect();
    if let Some(e) = &result.error {
        let e = masker.mask(e).into_owned();
        rec.messages.push(message(Level::Error, e.clone()));
        rec.error = Some(e);
    }
}

/// Render a step's `with` (arguments the executor takes literally stay as written).
fn render_args(s: &Step, plan: &AttemptPlan, ctx: &minijinja::Value) -> Result<Value, String> {
    let literal: &[&str] = plan
        .executor
        .as_ref()
        .map(|e| e.literal_args())
        .unwrap_or(&[]);
    let mut args = Map::new();
    for (k, v) in &s.with {
        if literal.contains(&k.as_str()) {
            args.insert(k.clone(), v.clone());
            continue;
        }
        let v = template::render_value(v, ctx).map_err(|e| format!("in `with.{k}`: {e}"))?;
        args.insert(k.clone(), v);
    }
    Ok(Value::Object(args))
}

/// Declared outputs, evaluated over the result (`result.*`).
fn evaluate_outputs(
    run: &RunCtx,
    scope: &Scope,
    s: &Step,
    node: Option<&Arc<dyn NodeOps>>,
    result: &mut StepResult,
) {
    let view = json!({
        "status": result.status.as_str(),
        "exit_code": result.exit_code,
        "stdout": String::from_utf8_lossy(&result.stdout),
        "stderr": String::from_utf8_lossy(&result.stderr),
        "changed": result.changed,
        "outputs": result.outputs,
    });
    let ctx = scope.context_with(run, node, Some(&view));
    for (k, tpl) in &s.outputs {
        match template::render_str(tpl, &ctx) {
            Ok(v) => {
                result.outputs.insert(k.clone(), v);
            }
            Err(e) => {
                result.status = StepStatus::Failed;
                result.error = Some(format!("output `{k}`: {e}"));
                break;
            }
        }
    }
}

/// Run an executor's attempt within its timeout, stopping it when the run is cancelled:
/// the processes of running steps get SIGTERM, then SIGKILL after [`CANCEL_GRACE`] (at once
/// on a second cancel). An attempt that ends is `cancelled`; one that does not end even
/// then is `interrupted` (its effect is unknown).
async fn cancellable(
    run: &RunCtx,
    work: impl std::future::Future<Output = StepResult>,
    timeout: Duration,
) -> StepResult {
    // The executor enforces the deadline itself (killing processes); this outer bound
    // catches executors that cannot.
    let bounded = async {
        match tokio::time::timeout(timeout + Duration::from_secs(5), work).await {
            Ok(r) => r,
            Err(_) => StepResult::timed_out(timeout),
        }
    };
    tokio::pin!(bounded);
    tokio::select! {
        r = &mut bounded => return r,
        _ = run.cancel.reached(1) => {}
    }
    crate::procgroup::signal_all(nix::sys::signal::Signal::SIGTERM);
    let ended = tokio::select! {
        r = &mut bounded => Some(r),
        _ = tokio::time::sleep(CANCEL_GRACE) => None,
        _ = run.cancel.reached(2) => None,
    };
    let ended = match ended {
        Some(r) => Some(r),
        None => {
            crate::procgroup::signal_all(nix::sys::signal::Signal::SIGKILL);
            tokio::select! {
                r = &mut bounded => Some(r),
                _ = tokio::time::sleep(Duration::from_secs(2)) => None,
            }
        }
    };
    match ended {
        Some(mut r) => {
            if r.status != StepStatus::Succeeded {
                r.status = StepStatus::Cancelled;
                r.push(
                    Level::Warn,
                    "cancelled by a signal: the step's processes were stopped",
                );
                r.error
                    .get_or_insert_with(|| "cancelled by a signal".into());
            }
            r
        }
        None => {
            let mut r = StepResult::failed(
                "cancelled by a signal, and the step did not stop when asked: its effect on the node is unknown; check the node before resuming",
            );
            r.status = StepStatus::Interrupted;
            r
        }
    }
}
