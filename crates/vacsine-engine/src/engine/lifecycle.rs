//! A run's lifecycle: start (validate, journal, lease), resume, roll back, drive to the end.

use super::context::{load_secrets, mask_map, RunCtx, Scope, StepView};
use super::{
    is_compensation, now, CancelToken, Engine, NodeMap, ProgressEvent, ProgressFn, RunReport,
    RunRequest,
};
use crate::inputs::coerce_inputs;
use crate::journal::{LeaseHolder, NewRun, StoredRun, HEARTBEAT_EVERY};
use crate::{validate, EngineError, RunStatus};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use vacsine_core::node::Site;
use vacsine_core::record::{Masker, StepRecord, StepStatus};
use vacsine_core::workflow::Workflow;

impl Engine {
    /// Run a workflow to the end.
    pub async fn run(&self, req: RunRequest) -> Result<RunReport, EngineError> {
        let w = &req.workflow;
        let problems = validate::validate_with(w, &self.catalog, &self.registry);
        if !problems.is_empty() {
            return Err(EngineError::InvalidWorkflow {
                workflow: w.metadata.name.value.clone(),
                problems,
            });
        }
        let inputs = coerce_inputs(&w.spec.inputs, &req.inputs)
            .map_err(|(name, message)| EngineError::Input { name, message })?;
        let event = if w.spec.inputs.contains_key("event") {
            inputs.get("event").cloned().unwrap_or(Value::Null)
        } else {
            req.inputs.get("event").cloned().unwrap_or(Value::Null)
        };
        let secrets = load_secrets(w)?;
        let default_node = self.default_node(w, &req.nodes, req.default_node.as_deref())?;

        let run_id = req
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut real_inputs = inputs.clone();
        if !event.is_null() {
            real_inputs.insert("event".into(), event.clone());
        }
        let masker = Masker::new(&secrets.values);
        let shown_inputs = mask_map(&real_inputs, &masker);
        let workflow_json = serde_json::to_string(w).map_err(|e| EngineError::Corrupt {
            run_id: run_id.clone(),
            message: e.to_string(),
        })?;
        let holder = LeaseHolder::current();
        self.journal.create_run(
            NewRun {
                id: &run_id,
                workflow: &w.metadata.name,
                workflow_json: &workflow_json,
                inputs: &shown_inputs,
                real_inputs: &real_inputs,
                target: &req.target_name,
                labels: &req.labels,
                default_node: default_node.as_deref(),
                started_at: &now(),
            },
            &holder,
        )?;
        let target = json!({"name": req.target_name, "labels": req.labels});
        let mut run = RunCtx::new(
            run_id,
            req.nodes,
            &target,
            secrets.values.clone(),
            BTreeMap::new(),
            req.cancel,
        );
        run.progress = req.progress;
        run.observer = req.observer;
        let scope = Scope::root(inputs, event, secrets, default_node);
        run.emit(ProgressEvent::RunStarted {
            run_id: run.run_id.clone(),
            workflow: w.metadata.name.value.clone(),
        });
        self.drive_leased(&run, &scope, w, &holder).await
    }

    /// Continue a run whose process died. Finished steps are not re-run (their outputs are
    /// restored); a step caught `running` is re-run only if idempotent, otherwise it is
    /// recorded `interrupted` and the run stops. A step whose process died between two
    /// attempts (last attempt failed, retry attempts left) goes on retrying at once, with the
    /// next attempt number, on the nodes where it failed. Journaled attempts count against
    /// `retry.attempts` (an idempotent step caught running always gets one more attempt).
    pub async fn resume(&self, run_id: &str, nodes: NodeMap) -> Result<RunReport, EngineError> {
        self.resume_with(run_id, nodes, None, None).await
    }

    /// [`Engine::resume`] with a progress callback and a site observer (for `wait-until`).
    pub async fn resume_with(
        &self,
        run_id: &str,
        nodes: NodeMap,
        progress: Option<ProgressFn>,
        observer: Option<Arc<dyn Site>>,
    ) -> Result<RunReport, EngineError> {
        self.resume_cancellable(run_id, nodes, progress, observer, CancelToken::default())
            .await
    }

    /// [`Engine::resume_with`] that stops on `cancel` (signals). A run left `running` by a
    /// crash or `cancelled` by a signal can be resumed; a run still driven by a live process
    /// is refused ([`EngineError::LeaseHeld`]), so two processes never drive one run.
    pub async fn resume_cancellable(
        &self,
        run_id: &str,
        nodes: NodeMap,
        progress: Option<ProgressFn>,
        observer: Option<Arc<dyn Site>>,
        cancel: CancelToken,
    ) -> Result<RunReport, EngineError> {
        let stored = self
            .journal
            .load_run(run_id)?
            .ok_or_else(|| EngineError::RunNotFound(run_id.into()))?;
        if !matches!(
            stored.summary.status,
            RunStatus::Running | RunStatus::Cancelled
        ) {
            return Err(EngineError::InvalidState {
                run_id: run_id.into(),
                status: stored.summary.status,
                action: "resumed (only a run left `running` by a crash or `cancelled` by a signal can be)",
            });
        }
        let holder = self.take_lease(run_id)?;
        let reopened = self.reopen(&stored, nodes, cancel);
        let (mut run, scope, w) = match reopened {
            Ok(r) => r,
            Err(e) => {
                let _ = self.journal.release_lease(run_id, &holder);
                return Err(e);
            }
        };
        if stored.summary.status == RunStatus::Cancelled {
            self.journal
                .set_run_status(run_id, RunStatus::Running, None, None)?;
        }
        run.progress = progress;
        run.observer = observer;
        self.drive_leased(&run, &scope, &w, &holder).await
    }

    /// Take the run's lease for this process, or say who holds it.
    fn take_lease(&self, run_id: &str) -> Result<LeaseHolder, EngineError> {
        let holder = LeaseHolder::current();
        match self.journal.acquire_lease(run_id, &holder)? {
            Ok(()) => Ok(holder),
            Err(busy) => Err(EngineError::LeaseHeld {
                run_id: run_id.into(),
                busy,
            }),
        }
    }

    /// [`Engine::drive`] while renewing the run's lease; a lost lease (another process took
    /// the run over) stops scheduling.
    async fn drive_leased(
        &self,
        run: &RunCtx,
        scope: &Scope,
        w: &Workflow,
        holder: &LeaseHolder,
    ) -> Result<RunReport, EngineError> {
        let beat = async {
            loop {
                tokio::time::sleep(HEARTBEAT_EVERY).await;
                match self.journal.heartbeat(&run.run_id, holder) {
                    Ok(true) => {}
                    Ok(false) => {
                        run.lease_lost
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        run.set_stop(format!(
                            "run `{}` was taken over by another process (lease lost): this process stopped scheduling",
                            run.run_id
                        ));
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "lease heartbeat failed"),
                }
            }
            std::future::pending::<()>().await
        };
        let result = tokio::select! {
            r = self.drive(run, scope, w) => r,
            _ = beat => unreachable!("the heartbeat loop never ends"),
        };
        if let Err(e) = self.journal.release_lease(&run.run_id, holder) {
            tracing::warn!(error = %e, "cannot release the run's lease");
        }
        result
    }

    /// Undo a finished run: restore what its changed steps captured (reverse completion
    /// order), then run its `rollback` steps (reverse declaration order) unless they already
    /// ran when the run failed.
    pub async fn rollback(&self, run_id: &str, nodes: NodeMap) -> Result<RunReport, EngineError> {
        let stored = self
            .journal
            .load_run(run_id)?
            .ok_or_else(|| EngineError::RunNotFound(run_id.into()))?;
        match stored.summary.status {
            RunStatus::Succeeded
            | RunStatus::Failed
            | RunStatus::Interrupted
            | RunStatus::Cancelled => {}
            RunStatus::RolledBack => return self.report(run_id, RunStatus::RolledBack, None),
            s @ (RunStatus::Running | RunStatus::Queued) => {
                return Err(EngineError::InvalidState {
                    run_id: run_id.into(),
                    status: s,
                    action: "rolled back while it runs (resume it first)",
                })
            }
        }
        let holder = self.take_lease(run_id)?;
        let (run, scope, w) = match self.reopen(&stored, nodes, CancelToken::default()) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.journal.release_lease(run_id, &holder);
                return Err(e);
            }
        };
        // Template values of the finished steps, for the rollback steps.
        for (id, recs) in &run.prior {
            if !id.contains('/') && !id.contains(':') {
                scope.set_step(id, StepView::from_records(recs));
            }
        }
        let errors = self.compensate(&run, &scope, &w, !stored.compensated).await;
        let _ = self.journal.release_lease(run_id, &holder);
        let errors = errors?;
        let (status, msg) = if errors.is_empty() {
            (RunStatus::RolledBack, None)
        } else {
            (
                RunStatus::Failed,
                Some(format!("rollback incomplete: {}", errors.join("; "))),
            )
        };
        self.journal
            .set_run_status(run_id, status, Some(&now()), msg.as_deref())?;
        run.emit(ProgressEvent::RunFinished {
            run_id: run_id.into(),
            status,
            elapsed: run.started.elapsed(),
        });
        self.report(run_id, status, msg)
    }

    pub(super) fn default_node(
        &self,
        w: &Workflow,
        nodes: &NodeMap,
        given: Option<&str>,
    ) -> Result<Option<String>, EngineError> {
        let available: Vec<String> = nodes.keys().cloned().collect();
        let default = match given {
            Some(n) if nodes.contains_key(n) => Some(n.to_string()),
            Some(n) => {
                return Err(EngineError::UnknownNode {
                    name: n.into(),
                    available,
                })
            }
            None if nodes.len() == 1 => nodes.keys().next().cloned(),
            None => None,
        };
        if default.is_none() {
            for s in w.spec.steps.iter().chain(&w.spec.rollback) {
                let needs = self
                    .registry
                    .get(&s.uses)
                    .map(|e| e.needs_node())
                    .unwrap_or(false);
                if needs && s.runs_on.is_none() {
                    return Err(EngineError::NoNode {
                        step: s.id.value.clone(),
                        executor: s.uses.value.clone(),
                        reason: if nodes.is_empty() {
                            "no node was given".into()
                        } else {
                            "several nodes were given and no default node".into()
                        },
                        available,
                    });
                }
            }
        }
        Ok(default)
    }

    /// Rebuild a run's context from the journal.
    pub(super) fn reopen(
        &self,
        stored: &StoredRun,
        nodes: NodeMap,
        cancel: CancelToken,
    ) -> Result<(RunCtx, Scope, Workflow), EngineError> {
        let run_id = stored.summary.id.clone();
        let w: Workflow =
            serde_json::from_str(&stored.workflow_json).map_err(|e| EngineError::Corrupt {
                run_id: run_id.clone(),
                message: e.to_string(),
            })?;
        // Secrets are read again from their sources; inputs and outputs come back unsealed.
        let secrets = load_secrets(&w)?;
        let mut inputs = stored.inputs.clone();
        let event = if w.spec.inputs.contains_key("event") {
            inputs.get("event").cloned().unwrap_or(Value::Null)
        } else {
            inputs.remove("event").unwrap_or(Value::Null)
        };
        let default_node = match &stored.default_node {
            Some(n) if !nodes.contains_key(n) => {
                return Err(EngineError::UnknownNode {
                    name: n.clone(),
                    available: nodes.keys().cloned().collect(),
                })
            }
            other => other.clone(),
        };
        let mut prior: BTreeMap<String, Vec<(i64, StepRecord)>> = BTreeMap::new();
        for (seq, r) in self.journal.records_unsealed(&run_id)? {
            prior.entry(r.step_id.clone()).or_default().push((seq, r));
        }
        let target = json!({"name": stored.summary.target, "labels": stored.labels});
        let run = RunCtx::new(
            run_id,
            nodes,
            &target,
            secrets.values.clone(),
            prior,
            cancel,
        );
        let scope = Scope::root(inputs, event, secrets, default_node);
        Ok((run, scope, w))
    }

    /// Run the steps, compensate on failure, finish the run in the journal.
    pub(super) async fn drive(
        &self,
        run: &RunCtx,
        scope: &Scope,
        w: &Workflow,
    ) -> Result<RunReport, EngineError> {
        let ok = self
            .execute_steps(run, scope, &w.spec.steps, w.spec.concurrency)
            .await;
        let (status, message) = if run.cancel.is_cancelled() {
            let mut why =
                "cancelled by a signal: resume with `vacsine run --resume <run-id>`".to_string();
            if let Some(stop) = run.stop_reason() {
                why = format!("{why}; {stop}");
            }
            (RunStatus::Cancelled, Some(why))
        } else if let Some(why) = run.stop_reason() {
            (RunStatus::Interrupted, Some(why))
        } else if ok {
            (RunStatus::Succeeded, None)
        } else {
            let failed = self.failed_steps(&run.run_id)?;
            let mut msg = format!("step(s) failed: {}", failed.join(", "));
            let errors = self.compensate(run, scope, w, true).await?;
            if !errors.is_empty() {
                msg.push_str(&format!("; compensation incomplete: {}", errors.join("; ")));
            }
            (RunStatus::Failed, Some(msg))
        };
        if run.lease_lost.load(std::sync::atomic::Ordering::SeqCst) {
            // The process that took the run over finishes it.
            return self.report(&run.run_id, RunStatus::Interrupted, message);
        }
        self.journal
            .set_run_status(&run.run_id, status, Some(&now()), message.as_deref())?;
        run.emit(ProgressEvent::RunFinished {
            run_id: run.run_id.clone(),
            status,
            elapsed: run.started.elapsed(),
        });
        self.report(&run.run_id, status, message)
    }

    pub(super) fn failed_steps(&self, run_id: &str) -> Result<Vec<String>, EngineError> {
        let mut last: BTreeMap<(String, Option<String>), StepStatus> = BTreeMap::new();
        for r in self.journal.records(run_id)? {
            last.insert((r.step_id.clone(), r.node.clone()), r.status);
        }
        let mut v: Vec<String> = last
            .into_iter()
            .filter(|(_, s)| matches!(s, StepStatus::Failed | StepStatus::TimedOut))
            .map(|((id, node), s)| match node {
                Some(n) => format!("{id} on {n} ({s})"),
                None => format!("{id} ({s})"),
            })
            .collect();
        v.dedup();
        Ok(v)
    }

    pub(super) fn report(
        &self,
        run_id: &str,
        status: RunStatus,
        message: Option<String>,
    ) -> Result<RunReport, EngineError> {
        let records = self.journal.records(run_id)?;
        let changed = records.iter().any(|r| {
            r.changed && r.status == StepStatus::Succeeded && !is_compensation(&r.step_id)
        });
        let mut outputs = Map::new();
        for r in &records {
            if !r.outputs.is_empty() && r.status == StepStatus::Succeeded {
                outputs.insert(r.step_id.clone(), Value::Object(r.outputs.clone()));
            }
        }
        Ok(RunReport {
            run_id: run_id.into(),
            status,
            records,
            changed,
            outputs,
            message,
        })
    }
}
