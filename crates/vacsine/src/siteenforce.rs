//! `vacsine enforce --site S`: job 1 run by a site's agent. Both sides live here, beside
//! `vacsine enforce`, so the two share their loading, driver choice and report printing:
//!
//! * the operator's side ([`enforce_at_site`]) loads and validates policy, target and catalog
//!   as local `enforce` does (same located errors), submits their documents, follows the
//!   run's step records, then prints the report the agent sent, with the same exit codes;
//! * the agent's side ([`SiteEnforcer`]) runs the pipeline on the documents it received,
//!   through the driver [`crate::drivers`] chooses for the target.

use crate::cli::{EnforceInputs, Format, OperatorConn};
use crate::enforcecmd::show_enforce_report;
use crate::exit::Exit;
use crate::orch::{call_err, client};
use crate::output::{print_diagnostics, Messages, RecordPrinter};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vacsine_contract::client::CallError;
use vacsine_contract::enforce::{EnforceDocs, EnforceOutcome, EnforceRunner, StepEvents};
use vacsine_contract::proto;
use vacsine_core::doc::{LoadError, SourceFile};
use vacsine_core::policy::Check;
use vacsine_enforce::inputs::{load_inputs, Catalog, Inputs, Loaded};

fn err(e: impl std::fmt::Display) -> miette::Report {
    miette::miette!("{e:#}")
}

/// Where and how `vacsine enforce --site` runs.
pub struct AtSite {
    pub site: String,
    pub detach: bool,
    pub force: bool,
    pub require_persistent: bool,
}

/// Checks a loaded policy can travel to a site: a `scap` check reads a data stream from this
/// machine's disk, which the site does not have.
fn travel_problems(inputs: &Inputs) -> Vec<LoadError> {
    let p = &inputs.policy;
    p.doc
        .spec
        .requirements
        .iter()
        .filter(|r| {
            std::iter::once(&r.check)
                .chain(r.applies_when.as_ref())
                .any(|c| matches!(c, Check::Scap(_)))
        })
        .map(|r| {
            LoadError::at(
                &p.source,
                r.id.line,
                r.id.column,
                format!(
                    "requirement `{}` uses a `scap` check, whose data stream is a file on this machine: `--site` cannot send it",
                    r.id.value
                ),
                Some("enforce this policy without --site on a machine that has the data stream, or express the requirement with the native probes (file, sysctl, port…)".into()),
            )
        })
        .collect()
}

/// The job `vacsine enforce --site` submits: the documents, typed.
fn job_of(inputs: &Inputs, at: &AtSite) -> miette::Result<proto::Job> {
    let job = proto::Job::Enforce(Box::new(proto::EnforceWork {
        enforce: proto::EnforceJob {
            policy: inputs.policy.doc.clone(),
            target: inputs.target.doc.clone(),
            options: proto::EnforceJobOptions {
                force: at.force,
                require_persistent: at.require_persistent,
            },
        },
        catalog: inputs
            .catalog
            .workflows
            .values()
            .map(|w| w.doc.clone())
            .collect(),
        versions: vec![],
    }));
    // What the site will decode: a document that does not survive the trip is our bug, said
    // here rather than by the agent after queuing.
    let back: proto::Job = serde_json::from_value(to_json(&job)?).map_err(|e| {
        miette::miette!("internal: the documents do not survive their encoding: {e}")
    })?;
    vacsine_contract::enforce::check_job(&back).map_err(|e| {
        miette::miette!("internal: the documents do not survive their encoding: {e}")
    })?;
    Ok(job)
}

fn to_json<T: serde::Serialize>(v: &T) -> miette::Result<serde_json::Value> {
    serde_json::to_value(v).map_err(err)
}

/// `vacsine enforce --site S --policy P --target T`.
pub async fn enforce_at_site(
    io: &EnforceInputs,
    at: &AtSite,
    report_path: Option<&Path>,
    format: Format,
    conn: &OperatorConn,
) -> miette::Result<Exit> {
    let policy_path = io.policy.clone().unwrap_or_default();
    let inputs = match load_inputs(&policy_path, &io.target, &io.catalog) {
        Ok(i) => i,
        Err(errors) => return Ok(print_diagnostics(errors)),
    };
    let problems = travel_problems(&inputs);
    if !problems.is_empty() {
        return Ok(print_diagnostics(problems));
    }
    // The driver is chosen at the site, by the same rule as here: refuse now what it would.
    crate::drivers::for_target(&inputs.target.doc).map_err(err)?;
    let job = job_of(&inputs, at)?;
    let c = client(conn)?;
    let created: proto::RunCreated = c
        .post(
            proto::OP_RUNS,
            &proto::SubmitRun {
                site: at.site.clone(),
                job,
            },
        )
        .await
        .map_err(call_err)?;
    let id = created.run_id;
    let human = format == Format::Human;
    if at.detach {
        if human {
            println!("enforce run {id} queued at site {}", at.site);
        } else {
            println!("{}", serde_json::json!({ "run_id": id }));
        }
        return Ok(Exit::Ok);
    }
    eprintln!("enforce run {id} queued at site {}", at.site);
    let run = follow(&c, &id).await?;
    let report: proto::RunReportView = match c.get(&format!("{}/{id}/report", proto::OP_RUNS)).await
    {
        Ok(r) => r,
        Err(CallError::Refused { status: 404, .. }) => {
            // The pipeline did not get to a report (a driver error at the site, a lost lease).
            eprintln!(
                "Error: enforce run {id} at site {} {}{}",
                at.site,
                run.status,
                run.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            return Ok(Exit::Error);
        }
        Err(e) => return Err(err(e)),
    };
    show_enforce_report(&report.report, &policy_path, report_path, format)
}

/// Print the run's step records on stderr as they arrive; the run once it ended.
async fn follow(
    c: &vacsine_contract::client::OperatorClient,
    id: &str,
) -> miette::Result<proto::RunView> {
    let mut printer = RecordPrinter::new(false, Messages::Hidden);
    crate::follow::follow_run(c, id, |records| {
        crate::follow::write_records(&mut std::io::stderr().lock(), records, &mut printer)
    })
    .await
    .map_err(err)
}

/// The agent's enforce pipeline: `vacsine enforce`'s code and driver choice, on documents
/// received from the orchestrator.
pub struct SiteEnforcer;

fn loaded<T>(doc: T, what: &str, name: &str) -> Loaded<T> {
    Loaded {
        doc,
        // No file: a problem is reported by name (the operator's CLI located it already).
        source: SourceFile::new(format!("{what} `{name}` (sent by the orchestrator)"), ""),
        path: PathBuf::from(name),
    }
}

fn inputs_of(docs: EnforceDocs) -> Inputs {
    let pname = docs.policy.metadata.name.value.clone();
    let tname = docs.target.metadata.name.value.clone();
    let mut catalog = Catalog::default();
    for w in docs.catalog {
        let name = w.metadata.name.value.clone();
        catalog
            .workflows
            .insert(name.clone(), loaded(w, "workflow", &name));
    }
    Inputs {
        policy: loaded(docs.policy, "policy", &pname),
        target: loaded(docs.target, "target", &tname),
        catalog,
    }
}

#[async_trait]
impl EnforceRunner for SiteEnforcer {
    async fn enforce(
        &self,
        docs: EnforceDocs,
        journal: PathBuf,
        steps: StepEvents,
        cancel: vacsine_engine::CancelToken,
    ) -> anyhow::Result<EnforceOutcome> {
        let options = docs.options;
        let inputs = inputs_of(docs);
        let driver = crate::drivers::for_target(&inputs.target.doc)?;
        let policy = inputs.policy.doc.metadata.name.value.clone();
        // The pipeline's future is not `Send` (its probes borrow across awaits): it runs on a
        // blocking thread of this runtime, driven there by `block_on`.
        let rt = tokio::runtime::Handle::current();
        let result = tokio::task::spawn_blocking(move || {
            rt.block_on(async move {
                let slot = Arc::new(Mutex::new(None::<String>));
                let opts = vacsine_enforce::EnforceOptions {
                    force: options.force,
                    require_persistent: options.require_persistent,
                    journal: Some(journal),
                    progress: Some(Arc::new(move |m: &str| eprintln!("enforce {policy}: {m}"))),
                    sandbox_slot: Some(slot.clone()),
                    steps: Some(steps),
                    ..Default::default()
                };
                let run = vacsine_enforce::enforce(driver.as_ref(), &inputs, &opts);
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        r = &mut run => break r.map_err(anyhow::Error::from),
                        () = tokio::time::sleep(Duration::from_millis(200)) => {
                            if cancel.is_cancelled() {
                                let id = slot.lock().ok().and_then(|s| s.clone());
                                if let Some(id) = id {
                                    crate::enforcecmd::sweep_sandbox(driver.as_ref(), &id).await;
                                }
                                anyhow::bail!("cancelled (the sandbox was removed; the target was left as it was at that moment)");
                            }
                        }
                    }
                }
            })
        })
        .await
        .map_err(|e| anyhow::anyhow!("the enforce pipeline stopped abruptly: {e}"))?;
        let rep = result?;
        Ok(EnforceOutcome {
            verdict: rep.verdict.as_str().to_string(),
            succeeded: Exit::of_report(&rep).is_ok(),
            report: rep,
        })
    }

    async fn assess(
        &self,
        a: vacsine_contract::schedule::Assess,
    ) -> anyhow::Result<vacsine_contract::schedule::Assessed> {
        crate::assess::assess(a).await
    }
}
