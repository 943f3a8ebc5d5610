//! The orchestrator's side of runs spanning sites (see [`crate::xsite`]): the run is driven
//! by an engine in this process, journaled in `spanning.db` in the data folder, with every
//! site a node. Each step is queued as a signed one-step job for its site, and the engine
//! waits for the site's confirmation before it advances. The run's own records (one per
//! attempt, naming the site as the node) are stored as the records of the run, as a site's
//! records are; the one-step jobs are runs of their sites too, so `vacsine runs --site`
//! shows what each site ran.
//!
//! A crash or a restart of the orchestrator leaves the run `running` in the journal; at the
//! next start it is resumed. A step whose job was under way is adopted, not sent again: its
//! site's confirmation is awaited, so no step runs twice because the orchestrator died.

use super::{ApiError, ApiResult, Srv};
use crate::now_ms;
use crate::store::{status, RunRow};
use crate::xsite::{self, AtSite, SiteNode, StepDispatcher};
use async_trait::async_trait;
use axum::http::StatusCode;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use vacsine_contract::proto::{Job, RunReport, StepJob, StepWork, WorkflowJob};
use vacsine_core::record::StepStatus;
use vacsine_core::workflow::Workflow;
use vacsine_engine::executor::{ExecCtx, StepResult};
use vacsine_engine::{
    CancelToken, Catalog, Engine, EngineError, Journal, NodeMap, ProgressEvent, RunRequest,
    RunStatus,
};

/// The `agent_id` of runs this orchestrator drives itself (no lease: they are resumed when
/// the orchestrator starts again).
pub(super) const DRIVER: &str = "orchestrator";

/// After a step's deadline, how long its confirmation may still take to arrive (the agent
/// enforces the deadline; its upload may wait for the link).
const CONFIRM_GRACE: Duration = Duration::from_secs(60);

/// State of the runs spanning sites this process drives.
pub(super) struct Spanning {
    journal: Journal,
    /// One-step jobs this process queued (a job of an earlier process found in the store
    /// is adopted).
    queued: Mutex<HashSet<String>>,
    /// Runs this process is driving now.
    driving: Mutex<HashSet<String>>,
}

impl Spanning {
    pub(super) fn open(data: &std::path::Path) -> anyhow::Result<Self> {
        let p = data.join("spanning.db");
        Ok(Spanning {
            journal: Journal::open(&p)
                .map_err(|e| anyhow::anyhow!("opening {}: {e}", p.display()))?,
            queued: Mutex::default(),
            driving: Mutex::default(),
        })
    }
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad(m)
}

/// The documents of a job spanning sites.
fn documents(job: &WorkflowJob) -> (Workflow, Catalog) {
    let mut cat = Catalog::new();
    for c in &job.catalog {
        cat.insert(c.clone());
    }
    (job.workflow.clone(), cat)
}

impl Srv {
    /// Check a job spanning sites, then start driving it: the run's id.
    pub(super) async fn start_spanning(
        self: &Arc<Self>,
        home: &str,
        job: &WorkflowJob,
        workflow_title: String,
    ) -> ApiResult<String> {
        let (w, cat) = documents(job);
        let problems = vacsine_engine::validate_workflow(&w, &cat);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            return Err(bad(format!(
                "workflow `{}` is invalid:\n{}",
                w.metadata.name.value,
                list.join("\n")
            )));
        }
        let docs = std::iter::once(&w).chain(cat.names().filter_map(|n| cat.get(n)));
        let mut named = BTreeSet::new();
        for d in docs {
            if !d.spec.secrets.is_empty() {
                return Err(bad(format!(
                    "workflow `{}` declares secrets, and its steps run at several sites: secrets are read where the engine runs, and this orchestrator does not send them to sites; run it at one site (no `runsOn`), where the agent reads them",
                    d.metadata.name.value
                )));
            }
            named.extend(xsite::named_sites(d));
        }
        let live: BTreeSet<String> = self
            .store
            .sites()
            .await?
            .into_iter()
            .filter(|s| s.revoked_ms.is_none())
            .map(|s| s.name)
            .collect();
        if let Some(unknown) = named.iter().find(|n| !live.contains(*n)) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "`runsOn: {unknown}` names no site here (sites: {}); `vacsine site create {unknown}` makes it",
                    live.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let row = RunRow {
            id: id.clone(),
            site: home.to_string(),
            workflow: workflow_title,
            request: serde_json::to_string(&Job::Workflow(Box::new(job.clone())))
                .map_err(|e| bad(e.to_string()))?,
            status: status::RUNNING.into(),
            agent_id: Some(DRIVER.into()),
            lease_expires_ms: None,
            offers: 0,
            created_ms: now,
            started_ms: Some(now),
            finished_ms: None,
            message: None,
            records: 0,
            site_outcome: None,
        };
        self.store.create_run(&row).await?;
        self.events.send_modify(|n| *n += 1);
        let srv = self.clone();
        let (job, home, run) = (job.clone(), home.to_string(), id.clone());
        tokio::spawn(async move { srv.drive(run, home, job, false).await });
        Ok(id)
    }

    /// Resume the runs spanning sites that nobody drives: at start, those a stop or a crash
    /// left running; then, every few seconds, those of a replica that died (replicas share
    /// the data folder, so its journal; the journal's lease says whether its driver lives).
    pub(super) async fn resume_spanning(self: &Arc<Self>, quiet: bool) -> anyhow::Result<usize> {
        let mut n = 0;
        for r in self.store.running_held_by(DRIVER).await? {
            let driven_here = self
                .spanning
                .driving
                .lock()
                .map(|d| d.contains(&r.id))
                .unwrap_or(true);
            if driven_here {
                continue;
            }
            let known = self.spanning.journal.run(&r.id).ok().flatten().is_some();
            if !known && quiet {
                continue;
            }
            if !known {
                tracing::warn!(
                    "run {} spans sites but {} holds no journal of it (driven by a replica with another data folder?): left as it is",
                    r.id,
                    "spanning.db"
                );
                continue;
            }
            let read = serde_json::from_str::<Job>(&r.request)
                .map_err(|e| e.to_string())
                .and_then(|j| match j {
                    Job::Workflow(w) => Ok(*w),
                    other => Err(format!("it is a {} job, not a workflow", other.kind())),
                });
            let job = match read {
                Ok(j) => j,
                Err(e) => {
                    let m = format!("cannot resume: the stored job is not readable: {e}");
                    let _ = self
                        .store
                        .finish_run(&r.id, DRIVER, status::FAILED, Some(&m), now_ms())
                        .await;
                    continue;
                }
            };
            let srv = self.clone();
            tokio::spawn(async move { srv.drive(r.id, r.site, job, true).await });
            n += 1;
        }
        Ok(n)
    }

    /// Drive run `run` (home site `home`) to its end and record that end.
    async fn drive(self: Arc<Self>, run: String, home: String, job: WorkflowJob, resume: bool) {
        let fresh = self
            .spanning
            .driving
            .lock()
            .map(|mut d| d.insert(run.clone()))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let ended = self.drive_engine(&run, &home, &job, resume).await;
        if let Ok(mut d) = self.spanning.driving.lock() {
            d.remove(&run);
        }
        let (st, msg) = match ended {
            Ok(report) => {
                let st = match report.status {
                    RunStatus::Succeeded => status::SUCCEEDED,
                    RunStatus::Cancelled => status::CANCELLED,
                    _ => status::FAILED,
                };
                (st, report.message)
            }
            // Another live process drives it (a replica sharing the data folder).
            Err(EngineError::LeaseHeld { .. }) => return,
            Err(e) => (status::FAILED, Some(e.to_string())),
        };
        tracing::info!("run {run} (spanning sites): {st}");
        if let Err(e) = self
            .store
            .finish_run(&run, DRIVER, st, msg.as_deref(), now_ms())
            .await
        {
            tracing::error!("run {run}: recording its end: {e}");
        }
        self.events.send_modify(|n| *n += 1);
    }

    async fn drive_engine(
        self: &Arc<Self>,
        run: &str,
        home: &str,
        job: &WorkflowJob,
        resume: bool,
    ) -> Result<vacsine_engine::RunReport, EngineError> {
        let (w, cat) = documents(job);
        let mut engine = Engine::new(self.spanning.journal.clone(), cat);
        let dispatcher = Arc::new(SiteDispatch {
            srv: self.clone(),
            parent: run.to_string(),
            title: w.metadata.name.value.clone(),
            images: job.images.clone(),
        });
        for x in AtSite::all(dispatcher, home) {
            engine.register(x);
        }
        let mut nodes = NodeMap::new();
        for s in self.store.sites().await.unwrap_or_default() {
            if s.revoked_ms.is_none() {
                nodes.insert(s.name.clone(), Arc::new(SiteNode::new(&s.name)));
            }
        }
        // Records go to the store in the order the engine finished them.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let progress: vacsine_engine::ProgressFn = Arc::new(move |e| match e {
            ProgressEvent::StepFinished { .. } | ProgressEvent::RunFinished { .. } => {
                let _ = tx.send(());
            }
            _ => {}
        });
        let fwd = {
            let (srv, run) = (self.clone(), run.to_string());
            tokio::spawn(async move {
                let mut sent = HashSet::new();
                while rx.recv().await.is_some() {
                    srv.forward(&run, &mut sent).await;
                }
                srv.forward(&run, &mut sent).await;
            })
        };
        let r = if resume {
            tracing::debug!("run {run} (spanning sites): resuming");
            engine
                .resume_cancellable(run, nodes, Some(progress), None, CancelToken::new())
                .await
        } else {
            engine
                .run(RunRequest {
                    workflow: w,
                    inputs: job.inputs.clone(),
                    nodes,
                    default_node: Some(home.to_string()),
                    target_name: format!("sites/{home}"),
                    labels: Default::default(),
                    progress: Some(progress),
                    observer: None,
                    cancel: CancelToken::new(),
                    run_id: Some(run.to_string()),
                })
                .await
        };
        // The progress callback (and its sender) went with the engine's run: the
        // forwarder ends once it has stored every record.
        let _ = fwd.await;
        r
    }

    /// Store the finished records of `run` not stored yet.
    async fn forward(&self, run: &str, sent: &mut HashSet<String>) {
        let recs = match self.spanning.journal.records(run) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("run {run}: reading its journal: {e}");
                return;
            }
        };
        let batch: Vec<(String, String)> = recs
            .iter()
            .filter(|r| r.finished_at.is_some())
            .map(|r| (vacsine_contract::proto::record_key(r), r))
            .filter(|(k, _)| !sent.contains(k))
            // Fitted to the store's record limit (cut and marked, never refused).
            .map(|(k, r)| (k, vacsine_contract::fit::stored_record(r)))
            .collect();
        if batch.is_empty() {
            return;
        }
        match self.store.add_records(run, DRIVER, &batch, now_ms()).await {
            Ok(_) => {
                sent.extend(batch.into_iter().map(|(k, _)| k));
                self.events.send_modify(|n| *n += 1);
            }
            Err(e) => tracing::error!("run {run}: storing its records: {e}"),
        }
    }
}

/// Queues each step of one run as a signed job for its site and waits for the site's
/// confirmation.
struct SiteDispatch {
    srv: Arc<Srv>,
    parent: String,
    title: String,
    /// The action images the run's job lists (resolved and signed at submission).
    images: Vec<vacsine_contract::proto::ImageRef>,
}

/// The id of the job that runs `step`'s attempt `attempt` (or its undo) at `site`: the same
/// after a restart, so a job already queued is found again.
fn child_id(parent: &str, step: &str, attempt: u32, site: &str, undo: bool) -> String {
    let key = format!(
        "{step}\n{attempt}\n{site}\n{}",
        if undo { "undo" } else { "run" }
    );
    let pin = vacsine_wire::sha256_pin(key.as_bytes());
    format!("{parent}.{}", &pin.trim_start_matches("sha256:")[..12])
}

impl SiteDispatch {
    /// The image a `container` step names, as the run's signed job lists it: the only image
    /// its site may run for it (none listed: the site refuses the step).
    fn images_for(&self, executor: &str, args: &Value) -> Vec<vacsine_contract::proto::ImageRef> {
        if executor != "container" {
            return vec![];
        }
        let name = args.get("image").and_then(Value::as_str);
        self.images
            .iter()
            .filter(|i| Some(i.name.as_str()) == name)
            .cloned()
            .collect()
    }

    fn mine(&self, id: &str) -> bool {
        self.srv
            .spanning
            .queued
            .lock()
            .map(|q| q.contains(id))
            .unwrap_or(false)
    }

    /// An attempt an earlier process of this orchestrator had queued when it stopped: the
    /// engine marked it interrupted and runs the step again; its job is adopted instead.
    fn adoptable(&self, ctx: &ExecCtx, site: &str) -> Option<String> {
        if ctx.attempt < 2 {
            return None;
        }
        let prev = child_id(&self.parent, &ctx.step_id, ctx.attempt - 1, site, false);
        if self.mine(&prev) {
            return None;
        }
        let recs = self.srv.spanning.journal.records(&self.parent).ok()?;
        recs.iter()
            .any(|r| {
                r.step_id == ctx.step_id
                    && r.attempt == ctx.attempt - 1
                    && r.node.as_deref() == Some(site)
                    && r.status == StepStatus::Interrupted
            })
            .then_some(prev)
    }

    async fn queue(
        &self,
        id: &str,
        site: &str,
        ctx: &ExecCtx,
        executor: &str,
        args: Value,
        undo: Option<Value>,
    ) -> Result<(), String> {
        let is_undo = undo.is_some();
        let job = Job::Step(StepWork {
            images: self.images_for(executor, &args),
            step: StepJob {
                parent_run: self.parent.clone(),
                step_id: ctx.step_id.clone(),
                attempt: ctx.attempt,
                executor: executor.to_string(),
                args,
                timeout_ms: (ctx.timeout.as_millis() as u64).clamp(1, xsite::MAX_STEP_MS),
                undo,
            },
        });
        let row = RunRow {
            id: id.to_string(),
            site: site.to_string(),
            workflow: format!(
                "{}/{}#{}{}",
                self.title,
                ctx.step_id,
                ctx.attempt,
                if is_undo { " (undo)" } else { "" }
            ),
            request: serde_json::to_string(&job).map_err(|e| e.to_string())?,
            status: status::QUEUED.into(),
            agent_id: None,
            lease_expires_ms: None,
            offers: 0,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            message: None,
            records: 0,
            site_outcome: None,
        };
        if let Ok(mut q) = self.srv.spanning.queued.lock() {
            q.insert(id.to_string());
        }
        match self.srv.sign_and_create_run(&row, &job).await {
            Ok(()) => {}
            // Queued already (by an earlier process): wait for it.
            Err(e) if e.status == StatusCode::CONFLICT => {}
            Err(e) => return Err(format!("queuing the step for site `{site}`: {}", e.message)),
        }
        self.srv.queue.send_modify(|n| *n += 1);
        self.srv.events.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Wait for job `id`'s end: the step's result as its site reported it.
    async fn confirmation(&self, id: &str, site: &str, timeout: Duration) -> StepResult {
        let mut events = self.srv.events.subscribe();
        let taken_by = Instant::now() + timeout;
        let give_up = taken_by + CONFIRM_GRACE;
        let mut cancel_tried = false;
        loop {
            let row = match self.srv.store.run(id).await {
                Ok(Some(r)) => Some(r),
                Ok(None) => {
                    return StepResult::failed(format!(
                        "the job of this step at site `{site}` ({id}) is gone from the store"
                    ))
                }
                Err(e) => {
                    tracing::warn!("waiting for {id}: {e}");
                    None
                }
            };
            if let Some(r) = row.filter(|r| status::is_final(&r.status)) {
                return self.outcome(&r, site).await;
            }
            let now = Instant::now();
            if now >= taken_by && !cancel_tried {
                cancel_tried = true;
                let why = format!("no agent of site `{site}` took the step before its deadline");
                if let Ok(true) = self.srv.store.cancel_queued(id, &why, now_ms()).await {
                    self.srv.events.send_modify(|n| *n += 1);
                    return StepResult::timed_out(timeout).msg(
                        vacsine_core::record::Level::Error,
                        format!("{why} (is an agent of `{site}` online? `vacsine status`)"),
                    );
                }
            }
            if now >= give_up {
                return StepResult::failed(format!(
                    "site `{site}` did not confirm the step ({id}) within {}s of its deadline: its effect there is unknown; `vacsine logs {id}` shows what the site reported",
                    CONFIRM_GRACE.as_secs()
                ));
            }
            tokio::select! {
                _ = events.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn outcome(&self, r: &RunRow, site: &str) -> StepResult {
        // Kept typed by kind (`RunReport`): a step job's report is its outcome.
        let reported = match self.srv.store.report(&r.id).await {
            Ok(Some(t)) => match serde_json::from_str::<RunReport>(&t) {
                Ok(RunReport::Step(o)) => Some(*o),
                _ => None,
            },
            _ => None,
        };
        match reported {
            Some(o) => xsite::result_of(o),
            None => {
                let mut res = StepResult::failed(format!(
                    "site `{site}`: the step's job ended {} without an outcome: {}",
                    r.status,
                    r.message.as_deref().unwrap_or("no message")
                ));
                if r.status == status::CANCELLED {
                    res.status = StepStatus::Cancelled;
                }
                res
            }
        }
    }
}

#[async_trait]
impl StepDispatcher for SiteDispatch {
    async fn dispatch(
        &self,
        site: &str,
        ctx: &ExecCtx,
        executor: &str,
        args: Value,
        undo: Option<Value>,
    ) -> StepResult {
        let adopted = (undo.is_none())
            .then(|| self.adoptable(ctx, site))
            .flatten();
        let id = match adopted.clone() {
            Some(prev) => {
                tracing::info!(
                    "run {}: step `{}` at site `{site}` was under way when the orchestrator stopped: awaiting its job {prev}",
                    self.parent,
                    ctx.step_id
                );
                prev
            }
            None => {
                let id = child_id(
                    &self.parent,
                    &ctx.step_id,
                    ctx.attempt,
                    site,
                    undo.is_some(),
                );
                if let Err(e) = self.queue(&id, site, ctx, executor, args, undo).await {
                    return StepResult::failed(e);
                }
                id
            }
        };
        let mut r = self.confirmation(&id, site, ctx.timeout).await;
        if let Some(prev) = adopted {
            // Recorded as what happened: the earlier attempt's job was awaited, not sent
            // again; its start and duration are the site's (when the site reported them).
            r.push(
                vacsine_core::record::Level::Info,
                format!(
                    "awaited job {prev}, dispatched as attempt {} before the orchestrator restarted: not sent again; {}",
                    ctx.attempt - 1,
                    if r.ran.is_some() {
                        "start and duration are the site's"
                    } else {
                        "the site reported no times (an older agent): start and duration are this wait's"
                    }
                ),
            );
        }
        r
    }
}
