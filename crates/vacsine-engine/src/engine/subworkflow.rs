//! Sub-workflows (`uses: workflow`): a catalog workflow run as one step of this run.

use super::context::{load_secrets, BoxFut, RunCtx, Scope, ScopeInit, StepTable};
use super::{Engine, MAX_DEPTH};
use crate::executor::{StepResult, WORKFLOW_EXECUTOR};
use crate::inputs::coerce_inputs;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vacsine_core::node::NodeOps;
use vacsine_core::record::Level;

impl Engine {
    /// The `workflow` executor: run a catalog workflow as part of this run, its records
    /// prefixed with `<step>/`, within `timeout` when given. A failed (or timed out) sub-run is
    /// compensated at once: its automatic undo, then its own `rollback` steps.
    pub(super) fn run_subworkflow<'a>(
        &'a self,
        run: &'a RunCtx,
        scope: &'a Scope,
        full_id: &'a str,
        node: Option<&'a Arc<dyn NodeOps>>,
        args: Value,
        timeout: Option<Duration>,
    ) -> BoxFut<'a, StepResult> {
        Box::pin(async move {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct SubArgs {
                workflow: String,
                #[serde(default)]
                inputs: Map<String, Value>,
            }
            let a: SubArgs = match crate::executor::parse_args(WORKFLOW_EXECUTOR, args) {
                Ok(a) => a,
                Err(e) => return StepResult::failed(e),
            };
            if scope.depth + 1 > MAX_DEPTH {
                return StepResult::failed(format!(
                    "sub-workflows nested deeper than {MAX_DEPTH} levels (recursive workflow?)"
                ));
            }
            let Some(w) = self.catalog.get(&a.workflow) else {
                return StepResult::failed(format!(
                    "workflow `{}` is not in the catalog",
                    a.workflow
                ));
            };
            let inputs = match coerce_inputs(&w.spec.inputs, &a.inputs) {
                Ok(i) => i,
                Err((name, m)) => {
                    return StepResult::failed(format!(
                        "input `{name}` of workflow `{}`: {m}",
                        a.workflow
                    ))
                }
            };
            let secrets = match load_secrets(w) {
                Ok(s) => s,
                Err(e) => return StepResult::failed(e.to_string()),
            };
            run.add_secrets(secrets.values.clone());
            let child = Scope::new(ScopeInit {
                prefix: format!("{full_id}/"),
                inputs,
                event: scope.event.clone(),
                secrets,
                default_node: node
                    .map(|n| n.node().name.clone())
                    .or_else(|| scope.default_node.clone()),
                steps: StepTable::default(),
                depth: scope.depth + 1,
                deadline: timeout.map(|t| Instant::now() + t),
            });
            let ok = self
                .execute_steps(run, &child, &w.spec.steps, w.spec.concurrency)
                .await;
            let timed_out = !ok && child.deadline.is_some_and(|d| Instant::now() >= d);
            let steps = child.steps.snapshot();
            let mut r = match (ok, timeout) {
                (true, _) => StepResult::ok(false),
                (false, Some(t)) if timed_out => StepResult::timed_out(t),
                (false, _) => StepResult::failed(format!("sub-workflow `{}` failed", a.workflow)),
            };
            // A run stopped on resume (interrupted step) is not compensated here: the caller
            // decides, as for the top level.
            let stopping = run.stopping() || run.cancel.is_cancelled();
            if !ok && !stopping {
                match self.compensate(run, &child, w, true).await {
                    Ok(errors) if errors.is_empty() => r.push(
                        Level::Info,
                        format!("sub-workflow `{}` compensated", a.workflow),
                    ),
                    Ok(errors) => r.push(
                        Level::Error,
                        format!(
                            "sub-workflow `{}`: compensation incomplete: {}",
                            a.workflow,
                            errors.join("; ")
                        ),
                    ),
                    Err(e) => r.push(
                        Level::Error,
                        format!("sub-workflow `{}`: compensation failed: {e}", a.workflow),
                    ),
                }
            }
            r.changed = steps.values().any(|v| v.changed);
            for (id, v) in steps {
                if !v.outputs.is_empty() {
                    r.outputs.insert(id, Value::Object(v.outputs));
                }
            }
            r.push(
                Level::Info,
                format!(
                    "sub-workflow `{}` {}",
                    a.workflow,
                    match (ok, timed_out) {
                        (true, _) => "succeeded",
                        (false, true) => "timed out",
                        (false, false) => "failed",
                    }
                ),
            );
            r
        })
    }
}
