//! Compensation of a failed (or rolled back) level: automatic undo of its changed steps in
//! reverse completion order, then its `rollback` steps in reverse declaration order.

use super::attempt::finish_record;
use super::context::{RunCtx, Scope, ScopeInit, StepTable};
use super::{is_compensation, now, Engine, ProgressEvent};
use crate::executor::{message, ExecCtx, StepResult};
use crate::EngineError;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vacsine_core::record::{rfc3339, Level, StepRecord, StepStatus};
use vacsine_core::workflow::Workflow;

impl Engine {
    /// Undo changed steps of `scope`'s level and below (reverse completion order), then run
    /// the `rollback` steps of `w` (reverse declaration order) when `with_steps`. Records are
    /// prefixed with the level's prefix (`undo:<id>`, `rollback:<id>`; `<step>/undo:<id>` in
    /// a sub-workflow). Changes made by compensation steps are never undone. Returns the
    /// errors met.
    pub(super) async fn compensate(
        &self,
        run: &RunCtx,
        scope: &Scope,
        w: &Workflow,
        with_steps: bool,
    ) -> Result<Vec<String>, EngineError> {
        let mut errors = Vec::new();
        let prefix = scope.prefix.as_str();
        let mut entries = self.journal.pending_undo(&run.run_id)?;
        entries.retain(|e| e.step_id.starts_with(prefix) && !is_compensation(&e.step_id));
        entries.reverse();
        let originals: BTreeMap<i64, StepRecord> =
            self.journal.records_seq(&run.run_id)?.into_iter().collect();
        for e in entries {
            let id = format!("{prefix}undo:{}", &e.step_id[prefix.len()..]);
            let started = chrono::Utc::now();
            let clock = Instant::now();
            let mut rec = StepRecord::started(
                &run.run_id,
                &id,
                1,
                e.node.as_deref(),
                &e.executor,
                rfc3339(started),
            );
            let seq = self.journal.start_record(&rec)?;
            run.emit(ProgressEvent::StepStarted {
                run_id: run.run_id.clone(),
                step_id: id.clone(),
                node: e.node.clone(),
                attempt: 1,
            });
            let node = e.node.as_ref().and_then(|n| run.nodes.get(n).cloned());
            let result = match (self.registry.get(&e.executor), &e.node, &node) {
                (None, _, _) => StepResult::failed(format!("unknown executor `{}`", e.executor)),
                (Some(_), Some(n), None) => StepResult::failed(format!(
                    "node `{n}` is not among the nodes given: cannot undo there"
                )),
                (Some(x), _, _) => {
                    let ctx = ExecCtx {
                        run_id: run.run_id.clone(),
                        step_id: id.clone(),
                        attempt: 1,
                        node,
                        timeout: Duration::from_secs(300),
                        secret_env: Vec::new(),
                        observer: run.observer.clone(),
                        undo_log: None,
                    };
                    x.undo(&ctx, e.data.clone()).await
                }
            };
            let elapsed = clock.elapsed();
            finish_record(&mut rec, &result, &run.masker(), started, elapsed);
            if let Some(err) = &rec.error {
                errors.push(format!("{id}: {err}"));
            }
            self.journal.finish_record(seq, &rec, None, None)?;
            run.emit(ProgressEvent::StepFinished {
                run_id: run.run_id.clone(),
                step_id: id.clone(),
                node: e.node.clone(),
                attempt: 1,
                status: rec.status,
                elapsed,
            });
            if rec.status == StepStatus::Succeeded {
                let t = now();
                self.journal.mark_undone(e.seq, &t)?;
                if let Some(orig) = originals.get(&e.record_seq) {
                    let mut o = orig.clone();
                    o.status = StepStatus::RolledBack;
                    o.messages
                        .push(message(Level::Warn, format!("undone by `{id}` at {t}")));
                    self.journal.update_record(e.record_seq, &o)?;
                }
            }
        }
        if with_steps && !w.spec.rollback.is_empty() {
            let rb_scope = Scope::new(ScopeInit {
                prefix: format!("{prefix}rollback:"),
                inputs: scope.inputs.clone(),
                event: scope.event.clone(),
                secrets: scope.loaded_secrets(),
                default_node: scope.default_node.clone(),
                steps: StepTable::copy_from(&scope.steps),
                depth: scope.depth,
                // Compensation always runs to its end.
                deadline: None,
            });
            for s in w.spec.rollback.iter().rev() {
                let out = self.run_step(run, &rb_scope, s, None).await;
                if !out.status.is_ok() && !s.continue_on_error {
                    errors.push(format!("rollback:{} {}", s.id.value, out.status));
                }
            }
        }
        if with_steps && scope.depth == 0 {
            self.journal.set_compensated(&run.run_id)?;
        }
        Ok(errors)
    }
}
