//! Job 1 at a site (`vacsine enforce --site`): the documents an enforce job carries, decoded
//! and validated in one place (the orchestrator refuses a bad job before queuing it, the
//! agent checks again before it runs anything), and the seam through which the agent runs
//! the pipeline ([`EnforceRunner`]; the `vacsine` binary implements it with the same code and
//! driver choice as `vacsine enforce`).

use crate::proto::{EnforceJob, EnforceJobOptions, Job};
use async_trait::async_trait;
use serde_json::Value;
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

/// Decode and validate the documents of `job` (the policy against the catalog and the
/// target, as `vacsine enforce` does with files). The error names the document at fault.
pub fn decode(job: &EnforceJob, catalog: &[Value]) -> Result<EnforceDocs, String> {
    let policy: Policy = serde_json::from_value(job.policy.clone())
        .map_err(|e| format!("the policy sent is not a valid Policy: {e}"))?;
    let target: Target = serde_json::from_value(job.target.clone())
        .map_err(|e| format!("the target sent is not a valid Target: {e}"))?;
    let mut workflows = Vec::with_capacity(catalog.len());
    for (i, c) in catalog.iter().enumerate() {
        let w: Workflow = serde_json::from_value(c.clone())
            .map_err(|e| format!("catalog workflow #{i} sent is not a valid Workflow: {e}"))?;
        workflows.push(w);
    }
    let index: CatalogIndex<'_> = workflows
        .iter()
        .map(|w| (w.metadata.name.value.clone(), w))
        .collect();
    if index.len() != workflows.len() {
        return Err("the catalog sent names a workflow twice".into());
    }
    for w in &workflows {
        problems(
            &format!("catalog workflow `{}`", w.metadata.name.value),
            validate::validate_workflow_structure(w, &index),
        )?;
    }
    problems(
        &format!("target `{}`", target.metadata.name.value),
        validate::validate_target(&target),
    )?;
    problems(
        &format!("policy `{}`", policy.metadata.name.value),
        // Warnings (a deprecated input name) were shown where the job was submitted.
        validate::Problem::split(validate::validate_policy(&policy, &index, Some(&target))).0,
    )?;
    Ok(EnforceDocs {
        policy,
        target,
        catalog: workflows,
        options: job.options,
    })
}

/// What the operator's views call a job: its workflow's name, or `enforce/POLICY` for job 1.
pub fn job_title(job: &Job) -> String {
    let name = |v: &Value| {
        v.pointer("/metadata/name")
            .and_then(|v| {
                v.as_str()
                    .or_else(|| v.pointer("/value").and_then(|x| x.as_str()))
            })
            .map(str::to_string)
    };
    match &job.enforce {
        Some(e) => format!("enforce/{}", name(&e.policy).as_deref().unwrap_or("?")),
        None => name(&job.workflow).unwrap_or_else(|| "?".into()),
    }
}

/// Refuse, before anything is queued, a job the agent could not run.
pub fn check_job(job: &Job) -> Result<(), String> {
    if job.step.is_some() {
        return Err("`job.step` is made by the orchestrator for runs spanning sites: submit a workflow whose steps name their sites with `runsOn`".into());
    }
    match &job.enforce {
        Some(e) => {
            if !job.workflow.is_null() {
                return Err("a job is either a workflow or an enforce, not both".into());
            }
            if !job.inputs.is_empty() {
                return Err("an enforce job takes no inputs".into());
            }
            decode(e, &job.catalog).map(|_| ())
        }
        None if job.workflow.is_null() => {
            Err("the job has no workflow (nor an enforce): give `job.workflow`".into())
        }
        None => check_workflow_job(job),
    }
}

/// `value` as a `T`, or the error naming where in it (`job.workflow.spec.steps[0].uses: …`).
fn typed<T: serde::de::DeserializeOwned>(value: &Value, at: &str, what: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let place = if path == "." || path.is_empty() {
            at.to_string()
        } else {
            format!("{at}.{path}")
        };
        format!("`{place}`: not a valid {what}: {}", e.inner())
    })
}

/// A workflow job: `job.workflow` a Workflow and each of `job.catalog` one, the workflow
/// valid with that catalog by the one validator `vacsine validate` uses (structure, then
/// executors, arguments and templates). Every problem is listed, each at its step.
fn check_workflow_job(job: &Job) -> Result<(), String> {
    let w: Workflow = typed(&job.workflow, "job.workflow", "Workflow")?;
    let mut catalog = vacsine_engine::Catalog::new();
    for (i, c) in job.catalog.iter().enumerate() {
        catalog.insert(typed(c, &format!("job.catalog[{i}]"), "Workflow")?);
    }
    let problems = vacsine_engine::validate_workflow(&w, &catalog);
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
    pub report: Value,
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
    use serde_json::json;

    fn job(policy: Value, catalog: Vec<Value>) -> Job {
        Job {
            workflow: Value::Null,
            catalog,
            inputs: Default::default(),
            enforce: Some(EnforceJob {
                policy,
                target: json!({"apiVersion": "vacsine.io/v1", "kind": "Target",
                    "metadata": {"name": "t"},
                    "spec": {"driver": "docker", "nodes": [{"name": "n", "container": "c", "roles": ["server"]}]}}),
                options: Default::default(),
            }),
            versions: vec![],
            step: None,
            images: vec![],
        }
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
        let j = job(policy("fix"), vec![chmod()]);
        check_job(&j).unwrap();
        assert_eq!(job_title(&j), "enforce/p");
        let d = decode(j.enforce.as_ref().unwrap(), &j.catalog).unwrap();
        assert_eq!(d.policy.spec.requirements.len(), 1);
        assert_eq!(d.catalog.len(), 1);
    }

    #[test]
    fn a_bad_enforce_job_is_refused_with_the_document_at_fault() {
        for (j, want) in [
            (job(policy("missing"), vec![chmod()]), "policy `p`"),
            (
                job(json!({"kind": "Policy"}), vec![chmod()]),
                "not a valid Policy",
            ),
            (
                job(policy("fix"), vec![json!({"kind": 1})]),
                "catalog workflow #0",
            ),
            (job(policy("fix"), vec![chmod(), chmod()]), "twice"),
            (
                Job {
                    workflow: json!({"metadata": {"name": "w"}}),
                    ..job(policy("fix"), vec![chmod()])
                },
                "not both",
            ),
            (
                Job {
                    enforce: None,
                    ..job(policy("fix"), vec![])
                },
                "no workflow",
            ),
        ] {
            let e = check_job(&j).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }
}
