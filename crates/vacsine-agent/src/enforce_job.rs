//! An enforce job at this site (`vacsine enforce --site`): the documents are checked again
//! here, the pipeline runs through the [`EnforceRunner`](vacsine_contract::enforce::EnforceRunner) the
//! agent was started with, each step record goes to the outbox as soon as its step ends (the
//! same idempotency keys as workflow runs), and the report travels with the run's end.

use crate::{forward, Shared};
use std::collections::BTreeSet;
use std::sync::Arc;
use vacsine_contract::bundle::VerifiedWork;
use vacsine_contract::proto::EnforceWork;
use vacsine_core::status::RunStatus;
use vacsine_engine::{CancelToken, ProgressEvent};

/// Run the verified work's enforce `job`: the run's final status, its message and the
/// report.
pub(super) async fn run(
    sh: &Arc<Shared>,
    w: &VerifiedWork,
    job: &EnforceWork,
    cancel: CancelToken,
) -> (RunStatus, Option<String>, Option<vacsine_enforce::Report>) {
    let Some(runner) = sh.enforcer.clone() else {
        return (
            RunStatus::Failed,
            Some(format!(
                "this agent (vacsine {}) cannot run enforce jobs: run the `vacsine agent` of a build that has the enforce pipeline",
                vacsine_contract::VERSION
            )),
            None,
        );
    };
    let docs = match vacsine_contract::enforce::decode(job) {
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
fn report_runs(report: &vacsine_enforce::Report) -> BTreeSet<String> {
    report
        .steps
        .iter()
        .map(|s| s.record.run_id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::report_runs;
    use vacsine_core::record::StepRecord;
    use vacsine_enforce::report::PhaseStep;

    #[test]
    fn report_runs_are_the_distinct_runs_of_its_steps() {
        let mut r: vacsine_enforce::Report = serde_json::from_value(serde_json::json!({
            "verdict": "verified", "summary": "", "policy": "p", "target": "t",
            "started_at": "2026-01-01T00:00:00Z", "duration_ms": 1, "requirements": [],
            "plan": null, "steps": [], "phases": [],
            "sandbox": {"id": null, "faithful": null, "differences": [], "kept": false}
        }))
        .unwrap();
        assert!(report_runs(&r).is_empty());
        for (phase, run, step) in [
            ("apply to sandbox", "a", "x"),
            ("apply to sandbox", "a", "y"),
            ("rollback", "b", "z"),
        ] {
            r.steps.push(PhaseStep {
                phase: phase.into(),
                record: StepRecord::started(
                    run,
                    step,
                    1,
                    None,
                    "command",
                    "2026-01-01T00:00:00Z".into(),
                ),
            });
        }
        assert_eq!(report_runs(&r).into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }
}
