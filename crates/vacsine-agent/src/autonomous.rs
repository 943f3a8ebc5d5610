//! Autonomous runs (`vacsine agent run NAME`): a workflow of the registry bundle this agent
//! holds, run on this machine without the orchestrator, e.g. while the site is cut off. The
//! bundle is verified again with the key pinned at enrolment before anything runs; the
//! workflow's catalog is the bundle's other workflows; `container` steps may run only the
//! images the bundle lists that this machine has loaded already (an archive cannot be fetched
//! without the link). The run is journaled in the agent's `journal.db`; its start, its records
//! and its end go to the outbox in one go when it ends, and the agent uploads them when the
//! orchestrator is reachable: the run then appears among the site's runs, marked autonomous.

use crate::{load_identity, record_key, Outbox};
use anyhow::{anyhow, bail, Context};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use vacsine_contract::proto::{self, VersionRef};
use vacsine_core::workflow::Workflow;
use vacsine_engine::{
    CancelToken, Catalog, Engine, Journal, LocalNode, NodeMap, ProgressFn, RunReport, RunRequest,
};

/// A workflow found in the held bundle, with what it may use.
pub struct Bundled {
    pub workflow: Workflow,
    pub catalog: Catalog,
    pub versions: Vec<VersionRef>,
    /// Registry version of the bundle (`sha256:…`).
    pub bundle: String,
    /// Images the bundle lists: reference → digest.
    pub images: BTreeMap<String, String>,
}

/// The registry bundle held in `data`, verified with the key pinned at enrolment.
pub struct Held {
    /// The agent's site.
    pub site: String,
    /// Registry version of the bundle (`sha256:…`).
    pub bundle: String,
    pub workflows: Vec<(VersionRef, Workflow)>,
    /// Images the bundle lists: reference → digest.
    pub images: BTreeMap<String, String>,
    /// The bundle's `kind: Response` documents, validated (issue 16).
    pub responses: Vec<vacsine_response::Rule>,
}

/// Read and verify the registry bundle held in `data`.
pub fn held(data: &Path) -> anyhow::Result<Held> {
    let idp = data.join("agent.json");
    let id = load_identity(&idp)?.ok_or_else(|| {
        anyhow!(
            "{} is missing: this folder holds no enrolled agent (start `vacsine agent` with an intake key first)",
            idp.display()
        )
    })?;
    let key = id.bundle_key.as_deref().ok_or_else(|| {
        anyhow!(
            "{} holds no bundle key: start `vacsine agent` once while the orchestrator is reachable",
            idp.display()
        )
    })?;
    let store = crate::bundles::BundleStore::open(&data.join("agent.db"))?;
    let (bundle, b) = store.held_registry(key, &id.site)?.ok_or_else(|| {
        anyhow!(
            "this agent holds no registry bundle yet: it syncs one when it reaches the orchestrator (`vacsine push` the workflows first)"
        )
    })?;
    let mut workflows = Vec::new();
    let mut images = BTreeMap::new();
    let mut responses = Vec::new();
    for d in &b.documents {
        match d.kind.as_str() {
            "Workflow" => {
                let w: Workflow = serde_json::from_value(d.document.clone())
                    .with_context(|| format!("workflow {}@{} of the bundle", d.name, d.version))?;
                let r = VersionRef {
                    kind: d.kind.clone(),
                    name: d.name.clone(),
                    version: d.version,
                    sha256: d.sha256.clone(),
                };
                workflows.push((r, w));
            }
            "Image" => {
                if let Some(digest) = d.document.get("digest").and_then(Value::as_str) {
                    images.insert(d.name.clone(), digest.to_string());
                }
            }
            "Response" => {
                match vacsine_contract::decisions::response_rule(&d.name, d.version, &d.document) {
                    Ok(r) => responses.push(r),
                    // Checked at push: only a document this build reads differently fails here.
                    Err(e) => eprintln!(
                        "warning: registry Response {}@{}: {e}; not used",
                        d.name, d.version
                    ),
                }
            }
            _ => {}
        }
    }
    Ok(Held {
        site: id.site.clone(),
        bundle,
        workflows,
        images,
        responses,
    })
}

impl Held {
    /// Workflow `name` (at `version`, or the one held), with the others as its catalog.
    pub fn pick(&self, name: &str, version: Option<i64>) -> anyhow::Result<Bundled> {
        let Some((r, w)) = self.workflows.iter().find(|(r, _)| r.name == name) else {
            let names: Vec<String> = self
                .workflows
                .iter()
                .map(|(r, _)| format!("{}@{}", r.name, r.version))
                .collect();
            bail!(
                "no workflow `{name}` in the registry bundle held ({}); it holds: {}",
                self.bundle,
                if names.is_empty() {
                    "no workflow".to_string()
                } else {
                    names.join(", ")
                }
            );
        };
        if let Some(v) = version.filter(|v| *v != r.version) {
            bail!(
                "the bundle held ({}) has `{name}` at version {}, not {v}: an agent holds the latest version of each workflow",
                self.bundle,
                r.version
            );
        }
        let mut catalog = Catalog::new();
        let mut versions = vec![r.clone()];
        for (o, ow) in &self.workflows {
            catalog.insert(ow.clone());
            if o.name != name {
                versions.push(o.clone());
            }
        }
        Ok(Bundled {
            workflow: w.clone(),
            catalog,
            versions,
            bundle: self.bundle.clone(),
            images: self.images.clone(),
        })
    }
}

/// Find workflow `name` (at `version`, or the one held) in the registry bundle held in
/// `data`, verified with the pinned key.
pub fn bundled(data: &Path, name: &str, version: Option<i64>) -> anyhow::Result<Bundled> {
    held(data)?.pick(name, version)
}

/// What a local event did to one workflow whose trigger matched it.
pub struct Triggered {
    pub workflow: String,
    pub outcome: TriggerOutcome,
}

/// The outcome of one matching workflow: each is decided on its own, so one refused does
/// not keep the others from running.
pub enum TriggerOutcome {
    /// The workflow ran here; its report.
    Ran(RunReport),
    /// The same dedupe key fired within its window: nothing ran.
    Deduplicated,
    /// Nothing of it ran, and why (an input the trigger gave is refused by its declared
    /// type, a trigger that cannot be evaluated, a run that could not start).
    Refused(String),
}

/// A local event (`vacsine agent event`): every workflow of the held bundle whose trigger
/// matches it runs here (its first matching trigger; at most once per dedupe key and window).
/// Each matching workflow is run or refused on its own, and each outcome returned; only a
/// bundle that cannot be read (none held, or altered) is an error.
pub async fn on_event(
    data: &Path,
    event: &Value,
    progress: Option<ProgressFn>,
    cancel: CancelToken,
) -> anyhow::Result<Vec<Triggered>> {
    let h = held(data)?;
    let mut event = event.clone();
    if let Some(o) = event.as_object_mut() {
        o.entry("site")
            .or_insert_with(|| Value::String(h.site.clone()));
    }
    let event = &event;
    let dedupe = Dedupe::open(&data.join("agent.db"))?;
    let mut out = Vec::new();
    for (r, w) in &h.workflows {
        let mut fired = None;
        let mut refused = None;
        for t in &w.spec.on {
            match vacsine_engine::triggers::fire(t, event) {
                Ok(Some(f)) => {
                    fired = Some(f);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    refused = Some(format!("trigger on `{}`: {e}", t.event.value));
                    break;
                }
            }
        }
        let outcome = match (fired, refused) {
            (_, Some(why)) => TriggerOutcome::Refused(why),
            (None, None) => continue,
            (Some(f), None) => {
                let first = match &f.dedupe {
                    Some((key, window)) => {
                        dedupe.first_in_window(&r.name, key, window.as_millis() as i64)
                    }
                    None => Ok(true),
                };
                match first {
                    Ok(false) => TriggerOutcome::Deduplicated,
                    Err(e) => TriggerOutcome::Refused(format!("dedupe window: {e:#}")),
                    Ok(true) => {
                        let mut inputs = f.inputs;
                        inputs.insert("event".into(), event.clone());
                        let run = match h.pick(&r.name, None) {
                            Ok(b) => run(data, b, inputs, progress.clone(), cancel.clone()).await,
                            Err(e) => Err(e),
                        };
                        match run {
                            Ok(report) => TriggerOutcome::Ran(report),
                            Err(e) => TriggerOutcome::Refused(format!("{e:#}")),
                        }
                    }
                }
            }
        };
        out.push(Triggered {
            workflow: r.name.clone(),
            outcome,
        });
    }
    Ok(out)
}

/// Dedupe windows of triggers (`agent.db`, table `trigger_dedupe`).
struct Dedupe {
    conn: rusqlite::Connection,
}

impl Dedupe {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = vacsine_private::sqlite::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS trigger_dedupe (
               workflow TEXT NOT NULL,
               key TEXT NOT NULL,
               until_ms INTEGER NOT NULL,
               PRIMARY KEY (workflow, key)
             );",
        )?;
        Ok(Dedupe { conn })
    }

    /// True (and the window starts) unless `key` fired for `workflow` within its window.
    fn first_in_window(&self, workflow: &str, key: &str, window_ms: i64) -> anyhow::Result<bool> {
        let now = vacsine_contract::now_ms();
        let n = self.conn.execute(
            "INSERT INTO trigger_dedupe (workflow, key, until_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (workflow, key) DO UPDATE SET until_ms = excluded.until_ms
               WHERE trigger_dedupe.until_ms <= ?4",
            rusqlite::params![workflow, key, now + window_ms, now],
        )?;
        Ok(n == 1)
    }
}

/// Run `b` on this machine, journaled in `data`, and queue it for upload: the report.
pub async fn run(
    data: &Path,
    b: Bundled,
    inputs: Map<String, Value>,
    progress: Option<ProgressFn>,
    cancel: CancelToken,
) -> anyhow::Result<RunReport> {
    let journal = Journal::open(&data.join("journal.db")).context("opening the agent's journal")?;
    let outbox = Outbox::open(&data.join("agent.db"))?;
    // Images the bundle lists and this machine has loaded: the only ones `container` may run.
    let cache = crate::images::ImageCache::open(&data.join("agent.db"), data.join("images"))?;
    let mut allowed = BTreeMap::new();
    for (name, digest) in &b.images {
        if let Some(id) = cache.get(digest)? {
            if crate::images::image_id(&id).await.as_deref() == Some(id.as_str()) {
                allowed.insert(name.clone(), id);
            }
        }
    }
    let mut engine = Engine::new(journal.clone(), b.catalog);
    engine.register(Arc::new(
        vacsine_engine::executor::ContainerExecutor::allowing(allowed),
    ));
    let mut nodes = NodeMap::new();
    nodes.insert("local".into(), Arc::new(LocalNode::new("local")));
    let started_ms = vacsine_contract::now_ms();
    let title = b.workflow.metadata.name.value.clone();
    let report = engine
        .run(RunRequest {
            workflow: b.workflow,
            inputs,
            nodes,
            default_node: None,
            target_name: "local".into(),
            labels: Default::default(),
            progress,
            observer: None,
            cancel,
            run_id: None,
        })
        .await?;
    // Start, records, end: uploaded in this order by the agent.
    let run_id = report.run_id.clone();
    let start = proto::AutonomousRun {
        run_id: run_id.clone(),
        workflow: title,
        versions: b.versions,
        bundle: b.bundle,
        started_ms,
    };
    outbox.put(
        &format!("autonomous/{run_id}"),
        &run_id,
        "autonomous",
        &serde_json::to_string(&start)?,
    )?;
    for r in journal.records(&run_id)? {
        if r.finished_at.is_some() {
            outbox.put(
                &record_key(&r),
                &run_id,
                "record",
                &serde_json::to_string(&r)?,
            )?;
        }
    }
    let status = crate::reported(report.status);
    let fin = proto::FinishRequest {
        run_id: run_id.clone(),
        status,
        message: report.message.clone(),
        report: None,
    };
    outbox.put(
        &format!("finish/{run_id}"),
        &run_id,
        "finish",
        &serde_json::to_string(&fin)?,
    )?;
    Ok(report)
}
