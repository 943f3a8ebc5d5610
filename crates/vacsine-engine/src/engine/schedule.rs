//! Scheduling: a workflow level's steps as a DAG with bounded concurrency, what an earlier
//! process left for each step (resume), the nodes a step runs on, and fan-out over them.

use super::context::{BoxFut, NodeResult, RunCtx, Scope, StepView};
use super::{now, Engine, DEFAULT_CONCURRENCY};
use crate::executor::{message, WORKFLOW_EXECUTOR};
use crate::template;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;
use vacsine_core::dag::{Scheduler, State};
use vacsine_core::node::NodeOps;
use vacsine_core::record::{Level, StepRecord, StepStatus};
use vacsine_core::workflow::{RunsOn, Step};

impl Engine {
    /// Schedule `steps` as a DAG; true when no step failed (continue-on-error aside).
    /// Scheduling stops when the run is stopping (interrupted step on resume, cancellation):
    /// running steps are waited for, steps not started stay unrecorded (a resume runs them).
    pub(super) fn execute_steps<'a>(
        &'a self,
        run: &'a RunCtx,
        scope: &'a Scope,
        steps: &'a [Step],
        concurrency: Option<usize>,
    ) -> BoxFut<'a, bool> {
        Box::pin(async move {
            let limit = concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1);
            // Every running instance of a step (one per node of a fan-out) holds a permit.
            let permits = tokio::sync::Semaphore::new(limit);
            let permits = &permits;
            let mut sched = Scheduler::new(steps);
            let index: HashMap<&str, usize> = steps
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.as_str(), i))
                .collect();
            let mut ok = true;
            // Steps finished by an earlier process (resume).
            if !run.prior.is_empty() {
                for (i, s) in steps.iter().enumerate() {
                    let full = format!("{}{}", scope.prefix, s.id.value);
                    let Some(recs) = run.prior.get(&full) else {
                        continue;
                    };
                    match self.prior_state(run, s, &full, recs) {
                        PriorState::Done(status) => {
                            scope.set_step(&s.id, StepView::from_records(recs));
                            let good = status.is_ok() || s.continue_on_error;
                            ok &= good;
                            sched.finish(i, good);
                        }
                        PriorState::Rerun => {}
                        PriorState::Stop => {
                            ok = false;
                            sched.finish(i, false);
                        }
                    }
                }
            }
            let mut running = FuturesUnordered::new();
            let mut expired_done = false;
            loop {
                let stopping = run.stopping() || run.cancel.is_cancelled();
                let expired = scope.deadline.is_some_and(|d| Instant::now() >= d);
                if expired && !stopping && !expired_done {
                    expired_done = true;
                    for i in sched.pending() {
                        self.record_status(
                            run,
                            scope,
                            &steps[i],
                            None,
                            StepStatus::Cancelled,
                            "cancelled: the timeout of the sub-workflow expired before the step started",
                        );
                        sched.finish(i, false);
                        ok = false;
                    }
                    sched.take_skips();
                }
                let stopping = stopping || expired;
                if !stopping {
                    let skips = sched.take_skips();
                    if !skips.is_empty() {
                        for i in skips {
                            let s = &steps[i];
                            let failed: Vec<&str> = s
                                .needs
                                .iter()
                                .filter(|n| {
                                    index
                                        .get(n.as_str())
                                        .is_some_and(|&j| sched.state(j) == State::Blocked)
                                })
                                .map(|n| n.as_str())
                                .collect();
                            let why = format!(
                                "skipped: needs {} which did not succeed",
                                failed.join(", ")
                            );
                            self.record_skip(run, scope, s, None, &why);
                            sched.finish(i, false);
                        }
                        continue;
                    }
                    while running.len() < limit {
                        let Some(i) = sched.next_ready() else { break };
                        let s = &steps[i];
                        running.push(async move {
                            (i, self.run_step(run, scope, s, Some(permits)).await)
                        });
                    }
                }
                let Some((i, outcome)) = running.next().await else {
                    break;
                };
                let good = outcome.status.is_ok() || steps[i].continue_on_error;
                ok &= good;
                sched.finish(i, good);
            }
            ok
        })
    }

    /// What an earlier process left for this step.
    fn prior_state(
        &self,
        run: &RunCtx,
        s: &Step,
        full_id: &str,
        recs: &[(i64, StepRecord)],
    ) -> PriorState {
        let mut last: BTreeMap<Option<String>, &(i64, StepRecord)> = BTreeMap::new();
        for r in recs {
            last.insert(r.1.node.clone(), r);
        }
        let stale: Vec<&(i64, StepRecord)> = last
            .values()
            .copied()
            // Caught running by a crash, or stopped by a signal (a cancelled run).
            .filter(|(_, r)| matches!(r.status, StepStatus::Running | StepStatus::Cancelled))
            .collect();
        if stale.is_empty() && retry_left(s, recs).is_some() {
            return PriorState::Rerun;
        }
        if stale.is_empty() {
            let status = last
                .values()
                .map(|(_, r)| r.status)
                .find(|st| !st.is_ok())
                .unwrap_or_else(|| {
                    if last.values().all(|(_, r)| r.status == StepStatus::Skipped) {
                        StepStatus::Skipped
                    } else {
                        StepStatus::Succeeded
                    }
                });
            return PriorState::Done(status);
        }
        let idempotent = s.idempotent.unwrap_or_else(|| {
            s.uses.value == WORKFLOW_EXECUTOR
                || self
                    .registry
                    .get(&s.uses)
                    .map(|e| e.idempotent())
                    .unwrap_or(false)
        });
        for (seq, r) in stale {
            let mut r = r.clone();
            let on = r
                .node
                .as_deref()
                .map(|n| format!(" on node `{n}`"))
                .unwrap_or_default();
            if r.status == StepStatus::Cancelled {
                // Stopped by a signal: the record stays `cancelled`.
                if !idempotent {
                    run.set_stop(format!(
                        "step `{full_id}` ({}) was stopped by a signal while running{on}; it is not idempotent, so it is not re-run automatically: check the node's state, then re-run the workflow, or mark the step `idempotent: true` if it is safe to repeat",
                        r.executor
                    ));
                }
                continue;
            }
            let why = if idempotent {
                format!(
                    "the run was interrupted (process crash or kill) while step `{full_id}` was running{on}; the step is idempotent, so it is run again"
                )
            } else {
                format!(
                    "the run was interrupted (process crash or kill) while step `{full_id}` ({}) was running{on}; the step is not idempotent, so it is not re-run automatically: check the node's state, then re-run the workflow, or mark the step `idempotent: true` if it is safe to repeat",
                    r.executor
                )
            };
            r.status = StepStatus::Interrupted;
            r.finished_at = Some(now());
            r.error = Some(why.clone());
            r.messages.push(message(Level::Error, why.clone()));
            if let Err(e) = self.journal.update_record(*seq, &r) {
                tracing::error!(error = %e, "journal update failed");
            }
            if !idempotent {
                if let Ok(mut stop) = run.stop.lock() {
                    stop.get_or_insert(why);
                }
            }
        }
        if idempotent {
            PriorState::Rerun
        } else {
            PriorState::Stop
        }
    }

    pub(super) fn record_skip(
        &self,
        run: &RunCtx,
        scope: &Scope,
        s: &Step,
        node: Option<&str>,
        why: &str,
    ) {
        self.record_status(run, scope, s, node, StepStatus::Skipped, why);
    }

    /// Journal a step that ends without running (skipped, cancelled).
    pub(super) fn record_status(
        &self,
        run: &RunCtx,
        scope: &Scope,
        s: &Step,
        node: Option<&str>,
        status: StepStatus,
        why: &str,
    ) {
        let t = now();
        let rec = StepRecord {
            run_id: run.run_id.clone(),
            step_id: format!("{}{}", scope.prefix, s.id.value),
            attempt: 1,
            node: node.map(str::to_string),
            executor: s.uses.value.clone(),
            started_at: t.clone(),
            finished_at: Some(t),
            duration_ms: Some(0),
            status,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            changed: false,
            messages: vec![message(
                if status == StepStatus::Skipped {
                    Level::Info
                } else {
                    Level::Warn
                },
                why,
            )],
            error: None,
            outputs: Map::new(),
            engine_run_id: None,
        };
        if let Err(e) = self.journal.start_record(&rec) {
            tracing::error!(error = %e, "journal write failed");
        }
        if node.is_none() {
            scope.set_step(&s.id, StepView::empty(status));
        }
    }

    /// Resolve the nodes a step runs on.
    pub(super) fn step_nodes(
        &self,
        run: &RunCtx,
        scope: &Scope,
        s: &Step,
    ) -> Result<Vec<Option<Arc<dyn NodeOps>>>, String> {
        let available = || run.nodes.keys().cloned().collect::<Vec<_>>().join(", ");
        let needs = s.uses.value == WORKFLOW_EXECUTOR
            || self
                .registry
                .get(&s.uses)
                .map(|e| e.needs_node())
                .unwrap_or(true);
        match &s.runs_on {
            None => match &scope.default_node {
                Some(n) => Ok(vec![Some(run.nodes.get(n).cloned().ok_or_else(|| {
                    format!("default node `{n}` is not among the nodes given ({})", available())
                })?)]),
                None if needs && s.uses.value != WORKFLOW_EXECUTOR => Err(format!(
                    "step `{}` ({}) needs a node: set `runsOn` or pass a default node (nodes given: {})",
                    s.id.value,
                    s.uses.value,
                    available()
                )),
                None => Ok(vec![None]),
            },
            Some(RunsOn::Node(tpl)) => {
                let ctx = scope.context(run, None);
                let name = match template::render_str(tpl, &ctx)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                run.nodes
                    .get(&name)
                    .cloned()
                    .map(|n| vec![Some(n)])
                    .ok_or_else(|| format!("runsOn: node `{name}` is not among the nodes given ({})", available()))
            }
            Some(RunsOn::Select(sel)) => {
                let v: Vec<Option<Arc<dyn NodeOps>>> = run
                    .nodes
                    .values()
                    .filter(|n| {
                        let r = n.node();
                        sel.matches(&r.name, &r.roles, &r.labels)
                    })
                    .map(|n| Some(n.clone()))
                    .collect();
                if v.is_empty() {
                    Err(format!("runsOn: the selector matched none of the nodes given ({})", available()))
                } else {
                    Ok(v)
                }
            }
        }
    }

    /// Run one step on each of its nodes (concurrently, each instance holding one of
    /// `permits` when given), with retries.
    pub(super) async fn run_step(
        &self,
        run: &RunCtx,
        scope: &Scope,
        s: &Step,
        permits: Option<&tokio::sync::Semaphore>,
    ) -> StepOutcome {
        let full_id = format!("{}{}", scope.prefix, s.id.value);
        let attempt_base = run
            .prior
            .get(&full_id)
            .map(|r| r.iter().map(|(_, r)| r.attempt).max().unwrap_or(0))
            .unwrap_or(0);
        let nodes = match self.step_nodes(run, scope, s) {
            Ok(n) => n,
            Err(e) => {
                let r = self
                    .finish_failed(run, &full_id, s, None, attempt_base + 1, e)
                    .await;
                scope.set_step(&s.id, StepView::empty(r));
                return StepOutcome { status: r };
            }
        };
        let full_id = full_id.as_str();
        // Resumed between two attempts: nodes that had succeeded keep their result, the
        // others go on with their next attempt.
        let prior = run.prior.get(full_id);
        let keep = prior.and_then(|r| retry_left(s, r));
        let results: Vec<NodeResult> = futures_util::future::join_all(nodes.iter().map(|n| {
            let name = n.as_ref().map(|n| n.node().name.clone());
            let kept = keep
                .as_ref()
                .and_then(|k| k.get(&name))
                .filter(|r| r.status.is_ok())
                .map(|r| NodeResult {
                    node: name.clone(),
                    status: r.status,
                    outputs: r.outputs.clone(),
                    changed: r.changed,
                });
            // Attempts are numbered per node.
            let base = prior
                .map(|r| {
                    r.iter()
                        .filter(|(_, x)| x.node == name)
                        .map(|(_, x)| x.attempt)
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            async move {
                if let Some(k) = kept {
                    return k;
                }
                // Closed never: the semaphore lives as long as the scheduling loop.
                let _permit = match permits {
                    Some(p) => p.acquire().await.ok(),
                    None => None,
                };
                self.run_on_node(run, scope, s, full_id, n.as_ref(), base)
                    .await
            }
        }))
        .await;
        let view = StepView::from_nodes(&results);
        let status = view.status;
        scope.set_step(&s.id, view);
        StepOutcome { status }
    }
}

/// On resume, for a step whose process died between two attempts (no attempt caught
/// running; every node's last attempt succeeded, was skipped, or failed with retry attempts
/// left; at least one failed): the last record per node. The step then goes on retrying.
fn retry_left(
    s: &Step,
    recs: &[(i64, StepRecord)],
) -> Option<BTreeMap<Option<String>, StepRecord>> {
    let attempts = s.retry.as_ref().map_or(1, |r| r.attempts.max(1));
    let mut last: BTreeMap<Option<String>, StepRecord> = BTreeMap::new();
    for (_, r) in recs {
        last.insert(r.node.clone(), r.clone());
    }
    let failed = |r: &StepRecord| matches!(r.status, StepStatus::Failed | StepStatus::TimedOut);
    let resumable = last.values().any(failed)
        && last
            .values()
            .all(|r| r.status.is_ok() || (failed(r) && r.attempt < attempts));
    resumable.then_some(last)
}

/// Result of one step over all its nodes.
pub(super) struct StepOutcome {
    pub status: StepStatus,
}

enum PriorState {
    Done(StepStatus),
    Rerun,
    Stop,
}
