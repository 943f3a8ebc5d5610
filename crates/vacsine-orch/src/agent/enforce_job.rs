//! An enforce job at this site (`vacsine enforce --site`): the documents are checked again
//! here, the pipeline runs through the [`EnforceRunner`](crate::enforce::EnforceRunner) the
//! agent was started with, each step record goes to the outbox as soon as its step ends (the
//! same idempotency keys as workflow runs), and the report travels with the run's end.

use super::{forward, Shared};
use crate::bundle::VerifiedWork;
use crate::proto::EnforceJob;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use vacsine_core::status::RunStatus;
use vacsine_engine::{CancelToken, ProgressEvent};

/// Run the verified work's enforce `job` (with the `catalog` it was signed with): the run's
/// final status, its message and the report.
pub(super) async fn run(
    sh: &Arc<Shared>,
    w: &VerifiedWork,
    job: &EnforceJob,
    catalog: &[Value],
    cancel: CancelToken,
) -> (RunStatus, Option<String>, Option<Value>) {
    let Some(runner) = sh.enforcer.clone() else {
        return (
            RunStatus::Failed,
            Some(format!(
                "this agent (vacsine {}) cannot run enforce jobs: run the `vacsine agent` of a build that has the enforce pipeline",
                crate::VERSION
            )),
            None,
        );
    };
    let docs = match crate::enforce::decode(job, catalog) {
        Ok(d) => d,
        Err(e) => return (RunStatus::Failed, Some(e), None),
    };
    let (s2, run) = (sh.clone(), w.run_id().to_string());
    let steps: vacsine_engine::ProgressFn = Arc::new(move |e| match e {
        ProgressEvent::StepFinished { run_id, .. } | ProgressEvent::RunFinished { run_id, .. } => {
            forward(&s2, &run, run_id)
        }
        _ => {}
    });
    let out = runner
        .enforce(docs, sh.journal_path.clone(), steps, cancel)
        .await;
    match out {
        Ok(o) => {
            // Records the events did not announce (a rollback's) are journaled too: forward
            // every run the report names; keys already queued are left alone.
            for engine_run in report_runs(&o.report) {
                forward(sh, w.run_id(), &engine_run);
            }
            let status = if o.succeeded {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            };
            (status, Some(o.verdict), Some(o.report))
        }
        Err(e) => (RunStatus::Failed, Some(format!("{e:#}")), None),
    }
}

/// The engine runs whose step records the report holds.
fn report_runs(report: &Value) -> BTreeSet<String> {
    report
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("run_id").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::report_runs;

    #[test]
    fn report_runs_are_the_distinct_runs_of_its_steps() {
        let r = serde_json::json!({"steps": [
            {"phase": "apply to sandbox", "run_id": "a", "step_id": "x"},
            {"phase": "apply to sandbox", "run_id": "a", "step_id": "y"},
            {"phase": "rollback", "run_id": "b"},
            {"phase": "odd"}
        ]});
        assert_eq!(report_runs(&r).into_iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(report_runs(&serde_json::json!({})).is_empty());
    }
}
