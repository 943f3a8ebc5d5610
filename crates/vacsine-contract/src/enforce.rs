//! Job 1 at a site (`vacsine enforce --site`): the documents an enforce job carries, decoded
//! and validated in one place (the orchestrator refuses a bad job before queuing it, the
//! agent checks again before it runs anything), and the seam through which the agent runs
//! the pipeline ([`EnforceRunner`]; the `vacsine` binary implements it with the same code and
//! driver choice as `vacsine enforce`).

use crate::proto::{EnforceJobOptions, EnforceWork, Job, WorkflowJob};
use async_trait::async_trait;
use std::path::PathBuf;
use vacsine_core::policy::Policy;
use vacsine_core::target::Target;
use vacsine_core::validate::{self, CatalogIndex, Problem};
use vacsine_core::workflow::Workflow;

/// An enforce job's documents, decoded and validated together.
#[derive(Debug, Clone)]
pub struct EnforceDocs {
    pub policy: Policy,
    pub target: Target,
    /// The catalog workflows the policy's fixes may use.
    pub catalog: Vec<Workflow>,
    pub options: EnforceJobOptions,
}

fn problems(what: &str, ps: Vec<Problem>) -> Result<(), String> {
    match ps.first() {
        None => Ok(()),
        Some(p) => Err(format!(
            "{what}: {}{}",
            p.message,
            p.help
                .as_deref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default()
        )),
    }
}

/// Validate the documents of `job` (the policy against the catalog and the target, as
/// `vacsine enforce` does with files). The error names the document at fault.
pub fn decode(job: &EnforceWork) -> Result<EnforceDocs, String> {
    let (policy, target, workflows) = (&job.enforce.policy, &job.enforce.target, &job.catalog);
    let index: CatalogIndex<'_> = workflows
        .iter()
        .map(|w| (w.metadata.name.value.clone(), w))
        .collect();
    if index.len() != workflows.len() {
        return Err("the catalog sent names a workflow twice".into());
    }
    for w in workflows {
        problems(
            &format!("catalog workflow `{}`", w.metadata.name.value),
            validate::validate_workflow_structure(w, &index),
        )?;
    }
    problems(
        &format!("target `{}`", target.metadata.name.value),
        validate::validate_target(target),
    )?;
    problems(
        &format!("policy `{}`", policy.metadata.name.value),
        // Warnings (a deprecated input name) were shown where the job was submitted.
        validate::Problem::split(validate::validate_policy(policy, &index, Some(target))).0,
    )?;
    Ok(EnforceDocs {
        policy: policy.clone(),
        target: target.clone(),
        catalog: workflows.clone(),
        options: job.enforce.options,
    })
}

/// What the operator's views call a job: its workflow's name, `enforce/POLICY` for job 1,
/// the step's id for one step of a run spanning sites.
pub fn job_title(job: &Job) -> String {
    match job {
        Job::Enforce(e) => format!("enforce/{}", e.enforce.policy.metadata.name.value),
        Job::Workflow(w) => w.workflow.metadata.name.value.clone(),
        Job::Step(s) => format!("step/{}", s.step.step_id),
    }
}

/// Refuse, before anything is queued, a job the agent could not run (its documents were
/// typed when it was decoded; here they are validated together).
pub fn check_job(job: &Job) -> Result<(), String> {
    match job {
        Job::Step(_) => Err("`job.step` is made by the orchestrator for runs spanning sites: submit a workflow whose steps name their sites with `runsOn`".into()),
        Job::Enforce(e) => decode(e).map(|_| ()),
        Job::Workflow(w) => check_workflow_job(w),
    }
}

/// A workflow job: the workflow valid with its catalog by the one validator `vacsine
/// validate` uses (structure, then executors, arguments and templates). Every problem is
/// listed, each at its step.
fn check_workflow_job(job: &WorkflowJob) -> Result<(), String> {
    let mut catalog = vacsine_engine::Catalog::new();
    for c in &job.catalog {
        catalog.insert(c.clone());
    }
    let w = &job.workflow;
    let problems = vacsine_engine::validate_workflow(w, &catalog);
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    Err(format!(
        "`job.workflow`: workflow `{}` is not valid ({} problem(s)); nothing was queued:\n{}",
        w.metadata.name.value,
        problems.len(),
        list.join("\n")
    ))
}

/// How a run of the pipeline at the site ended.
#[derive(Debug, Clone)]
pub struct EnforceOutcome {
    /// The report, as `vacsine enforce --format json` prints it.
    pub report: vacsine_enforce::Report,
    /// `verified`, `compliant`, `rolled_back`…
    pub verdict: String,
    /// The verdict counts as success (verified or compliant, nothing failing at the end).
    pub succeeded: bool,
}

/// Called with each engine event of the pipeline's runs (forwarding of step records).
pub type StepEvents = vacsine_engine::ProgressFn;

/// Runs the enforce pipeline on this machine's sites (the agent's seam; implemented where
/// drivers are chosen).
#[async_trait]
pub trait EnforceRunner: Send + Sync {
    /// Run the whole pipeline for `docs`, journaling its runs in `journal` and calling
    /// `steps` as their steps finish. `cancel` is triggered when the run must stop (lease
    /// lost, second signal): the runner stops and removes its sandbox.
    async fn enforce(
        &self,
        docs: EnforceDocs,
        journal: PathBuf,
        steps: StepEvents,
        cancel: vacsine_engine::CancelToken,
    ) -> anyhow::Result<EnforceOutcome>;

    /// A scheduled assessment (issue 17) on this site's target: a policy checked, a SCAP
    /// profile evaluated or the nodes scanned, with the same drivers as `vacsine check`.
    async fn assess(
        &self,
        a: crate::schedule::Assess,
    ) -> anyhow::Result<crate::schedule::Assessed> {
        let _ = a;
        anyhow::bail!(
            "this agent (vacsine {}) cannot run scheduled assessments",
            crate::VERSION
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A job as it arrives (an operator's submission, a signed payload): decoded, then
    /// checked.
    fn job(policy: Value, catalog: Vec<Value>) -> Value {
        json!({
            "catalog": catalog,
            "enforce": {
                "policy": policy,
                "target": {"apiVersion": "vacsine.io/v1", "kind": "Target",
                    "metadata": {"name": "t"},
                    "spec": {"driver": "docker", "nodes": [{"name": "n", "container": "c", "roles": ["server"]}]}},
            }
        })
    }

    fn decoded_and_checked(v: Value) -> Result<Job, String> {
        let j: Job = serde_path_to_error::deserialize(v)
            .map_err(|e| format!("at `{}`: {}", e.path(), e.inner()))?;
        check_job(&j)?;
        Ok(j)
    }

    fn policy(uses: &str) -> Value {
        json!({"apiVersion": "vacsine.io/v1", "kind": "Policy", "metadata": {"name": "p"},
            "spec": {"requirements": [{"id": "r", "title": "t", "severity": "low",
                "nodes": {"roles": ["server"]},
                "check": {"file": {"path": "/etc/x", "maxMode": "0640"}},
                "fixes": [{"uses": uses, "with": {"path": "/etc/x", "mode": "0640"}}]}]}})
    }

    fn chmod() -> Value {
        json!({"apiVersion": "vacsine.io/v1", "kind": "Workflow", "metadata": {"name": "fix"},
            "spec": {"inputs": {"path": {"type": "string"}, "mode": {"type": "string"}},
                "steps": [{"id": "chmod", "uses": "file",
                    "with": {"path": "{{ inputs.path }}", "mode": "{{ inputs.mode }}"}}]}})
    }

    #[test]
    fn a_sound_enforce_job_passes_and_is_named_after_its_policy() {
        let j = decoded_and_checked(job(policy("fix"), vec![chmod()])).unwrap();
        assert_eq!(job_title(&j), "enforce/p");
        let Job::Enforce(e) = &j else {
            panic!("not an enforce job: {j:?}")
        };
        let d = decode(e).unwrap();
        assert_eq!(d.policy.spec.requirements.len(), 1);
        assert_eq!(d.catalog.len(), 1);
        // The wire shape is the one operators always sent: encoded back, it reads the same.
        let back = serde_json::to_value(&j).unwrap();
        assert_eq!(back["enforce"]["policy"]["metadata"]["name"], "p");
        assert!(back.get("workflow").is_none(), "{back}");
        assert!(matches!(
            serde_json::from_value::<Job>(back).unwrap(),
            Job::Enforce(_)
        ));
    }

    #[test]
    fn a_bad_enforce_job_is_refused_with_the_document_at_fault() {
        let with = |mut j: Value, k: &str, v: Value| {
            j[k] = v;
            j
        };
        for (j, want) in [
            (job(policy("missing"), vec![chmod()]), "policy `p`"),
            (
                job(json!({"kind": "Policy"}), vec![chmod()]),
                "at `enforce.policy",
            ),
            (
                job(policy("fix"), vec![json!({"kind": 1})]),
                "at `catalog[0]",
            ),
            (job(policy("fix"), vec![chmod(), chmod()]), "twice"),
            (
                with(job(policy("fix"), vec![chmod()]), "workflow", chmod()),
                "not several",
            ),
            (
                with(job(policy("fix"), vec![]), "inputs", json!({"a": 1})),
                "takes no inputs",
            ),
            (json!({"catalog": [chmod()]}), "no workflow"),
            (
                json!({"step": {"parent_run": "p", "step_id": "s", "attempt": 1,
                    "executor": "command", "timeout_ms": 1}}),
                "made by the orchestrator",
            ),
        ] {
            let e = decoded_and_checked(j).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }

    #[test]
    fn a_job_tolerates_fields_it_does_not_know() {
        let mut j = job(policy("fix"), vec![chmod()]);
        j["from_a_newer_orchestrator"] = json!({"x": 1});
        assert!(matches!(decoded_and_checked(j).unwrap(), Job::Enforce(_)));
    }
}
