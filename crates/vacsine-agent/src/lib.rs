//! The site agent: enrols once (identity kept 0600 in its data folder), then opens every
//! connection itself: long-polls for work, runs it with the engine on this machine, renews
//! its lease while it runs, and uploads each step record from a local outbox (SQLite) as it
//! is journaled. While the orchestrator is unreachable the run goes on and records wait in
//! the outbox; they are uploaded when it returns, each with an idempotency key, so nothing is
//! lost and nothing doubled.
//!
//! Invariant: the agent executes only a job it verified ([`vacsine_contract::bundle::verified_work`]
//! is the only way to a job's kind).
#![forbid(unsafe_code)]

use anyhow::{anyhow, Context};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use vacsine_contract::bundle::VerifiedWork;
use vacsine_contract::client::{AgentLink, CallError};
use vacsine_contract::proto::{self, Job, Work, WorkflowJob};
use vacsine_core::status::RunStatus;
use vacsine_engine::{CancelToken, Catalog, Engine, Journal, LocalNode, NodeMap, RunRequest};
use vacsine_wire::{KeyPair, PublicKey};

pub mod autonomous;
mod bundles;
pub mod decoy;
mod enforce_job;
pub mod gc;
mod images;
mod outbox;
pub mod preflight;
pub mod respond;
mod schedules;
mod step_job;
mod sync;
pub mod tail;

pub use bundles::{BundleStore, Kept};
use outbox::uploader;
pub use outbox::{Outbox, OutboxStatus, Refused, KEEP_SENT_MS};

pub struct AgentConfig {
    /// One URL, or several replicas separated by commas (tried in order when one is down).
    pub orchestrator: String,
    pub intake_key: Option<String>,
    pub name: String,
    pub pin: String,
    pub data: PathBuf,
    /// Runs enforce jobs (`vacsine enforce --site`); without it they fail with a clear
    /// message.
    pub enforcer: Option<Arc<dyn vacsine_contract::enforce::EnforceRunner>>,
    /// Retention of the journal and `agent.db`, applied periodically (`crate::gc`).
    pub retention: vacsine_engine::retention::Schedule,
    /// Decoy services to run at this site (`--decoys FILE`, see [`decoy`]).
    pub decoys: Option<PathBuf>,
}

/// The agent's identity, `agent.json` in its data folder (0600).
#[derive(Serialize, Deserialize)]
struct Identity {
    agent_id: String,
    name: String,
    site: String,
    orchestrator: String,
    pin: String,
    secret_key: String,
    server_key: String,
    /// The orchestrator's bundle verifying key (ed25519, base64), pinned at enrolment: every
    /// job must be signed with it. Missing in identities made before jobs were signed.
    #[serde(default)]
    bundle_key: Option<String>,
}

fn load_identity(path: &Path) -> anyhow::Result<Option<Identity>> {
    if !path.exists() {
        return Ok(None);
    }
    let t = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_slice(&t).with_context(|| {
        format!(
            "{} is not a valid agent identity (remove it and enrol again)",
            path.display()
        )
    })?))
}

async fn enroll(cfg: &AgentConfig, path: &Path) -> anyhow::Result<Identity> {
    let intake = cfg.intake_key.as_deref().ok_or_else(|| {
        anyhow!(
            "this agent is not enrolled yet ({} is missing): give --intake-key (from `vacsine site create SITE`)",
            path.display()
        )
    })?;
    let pin = vacsine_contract::tls::parse_pin(&cfg.pin)?;
    let hello = AgentLink::hello(&cfg.orchestrator, &pin)
        .await
        .with_context(|| format!("cannot reach the orchestrator at {}", cfg.orchestrator))?;
    same_protocol(&hello, &cfg.orchestrator)?;
    let keys = KeyPair::generate();
    let server = PublicKey::from_b64(&hello.server_key)?;
    let link = AgentLink::new(&cfg.orchestrator, &pin, keys.clone(), server.clone())?;
    let req = proto::EnrollRequest {
        intake_key: intake.to_string(),
        name: cfg.name.clone(),
        version: vacsine_contract::VERSION.to_string(),
    };
    let env = link.seal(proto::ENROLL, &cfg.name, &req)?;
    let wrapped = proto::EnrollEnvelope {
        public_key: keys.public().to_b64(),
        envelope: env.clone(),
    };
    let r: proto::EnrollResponse = link
        .send(proto::ENROLL, &cfg.name, &env, &wrapped)
        .await
        .context("enrolment refused")?;
    let id = Identity {
        agent_id: r.agent_id,
        name: cfg.name.clone(),
        site: r.site,
        orchestrator: cfg.orchestrator.clone(),
        pin,
        secret_key: keys.secret_b64(),
        server_key: server.to_b64(),
        bundle_key: Some(hello.bundle_key.clone()),
    };
    vacsine_private::write_private(path, &serde_json::to_vec_pretty(&id)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// An orchestrator of another contract version cannot be served by this agent: said before
/// anything is enrolled, naming both versions.
fn same_protocol(hello: &proto::Hello, url: &str) -> anyhow::Result<()> {
    if hello.protocol == proto::PROTOCOL {
        return Ok(());
    }
    let upgrade = if hello.protocol < proto::PROTOCOL {
        "upgrade the orchestrator"
    } else {
        "upgrade the agent"
    };
    anyhow::bail!(
        "the orchestrator at {url} (vacsine {}) speaks protocol {}; this agent (vacsine {}) speaks protocol {}: {upgrade}",
        hello.version,
        hello.protocol,
        vacsine_contract::VERSION,
        proto::PROTOCOL
    )
}

/// The bundle key pinned in the identity; an identity made before jobs were signed gets the
/// key from `hello` (authenticated by the pinned certificate) once, and keeps it.
async fn pin_bundle_key(id: &mut Identity, path: &Path) -> anyhow::Result<String> {
    if let Some(k) = &id.bundle_key {
        return Ok(k.clone());
    }
    let hello = AgentLink::hello(&id.orchestrator, &id.pin)
        .await
        .with_context(|| {
            format!(
                "{} holds no bundle key (enrolled before jobs were signed) and the orchestrator at {} cannot be reached to pin it",
                path.display(),
                id.orchestrator
            )
        })?;
    vacsine_contract::bundle::check_key(&hello.bundle_key)?;
    eprintln!(
        "pinned the orchestrator's bundle key (key id {}) in {}",
        vacsine_contract::bundle::key_id(&hello.bundle_key),
        path.display()
    );
    id.bundle_key = Some(hello.bundle_key.clone());
    vacsine_private::write_private(path, &serde_json::to_vec_pretty(&*id)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(hello.bundle_key)
}

type Active = Arc<Mutex<HashMap<String, CancelToken>>>;

struct Shared {
    link: AgentLink,
    agent_id: String,
    outbox: Outbox,
    journal: Journal,
    kick: Notify,
    active: Active,
    renew_every_ms: AtomicI64,
    fatal: watch::Sender<Option<String>>,
    enforcer: Option<Arc<dyn vacsine_contract::enforce::EnforceRunner>>,
    journal_path: PathBuf,
    /// The agent's data folder (its response store lives there).
    data: PathBuf,
    site: String,
    /// The pinned bundle key and the verified bundles (`agent.db`).
    bundle_key: String,
    bundles: crate::bundles::BundleStore,
    /// Action images loaded here (`agent.db`) and where archives are fetched to.
    images: images::ImageCache,
    /// Signed decisions verified before (each once per process).
    verifier: vacsine_contract::decisions::Verifier,
}

/// Run the agent until it is revoked or the process ends.
pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    vacsine_private::private_dir(&cfg.data)
        .with_context(|| format!("creating {}", cfg.data.display()))?;
    let idp = cfg.data.join("agent.json");
    let mut id = match load_identity(&idp)? {
        Some(id) => id,
        None => enroll(&cfg, &idp).await?,
    };
    let bundle_key = pin_bundle_key(&mut id, &idp).await?;
    let decoys = match &cfg.decoys {
        Some(p) => Some((p.clone(), decoy::load(p)?)),
        None => None,
    };
    let keys = KeyPair::from_secret_b64(&id.secret_key)?;
    let server = PublicKey::from_b64(&id.server_key)?;
    // Replicas given at this start replace those known at enrolment (same keys and pin).
    let orchestrators = if cfg.orchestrator.trim().is_empty() {
        id.orchestrator.clone()
    } else {
        cfg.orchestrator.clone()
    };
    let link = AgentLink::new(&orchestrators, &id.pin, keys, server)?;
    let (fatal, mut fatal_rx) = watch::channel(None);
    let sh = Arc::new(Shared {
        link,
        agent_id: id.agent_id.clone(),
        outbox: Outbox::open(&cfg.data.join("agent.db"))?,
        journal: Journal::open(&cfg.data.join("journal.db"))?,
        kick: Notify::new(),
        active: Arc::default(),
        renew_every_ms: AtomicI64::new(5_000),
        fatal,
        enforcer: cfg.enforcer.clone(),
        journal_path: cfg.data.join("journal.db"),
        data: cfg.data.clone(),
        site: id.site.clone(),
        bundle_key,
        bundles: crate::bundles::BundleStore::open(&cfg.data.join("agent.db"))?,
        images: images::ImageCache::open(&cfg.data.join("agent.db"), cfg.data.join("images"))?,
        verifier: Default::default(),
    });
    println!(
        "vacsine agent {} ({}) of site {} → {}",
        id.name, id.agent_id, id.site, orchestrators
    );
    // Decisions active at this site applied again (by diff: what is in effect stays).
    if respond::store_path(&cfg.data).exists() {
        match respond::reapply(&cfg.data, &id.site).await {
            Ok(a) => eprintln!(
                "decisions: active ones re-applied ({} element(s) added, {} deleted)",
                a.added, a.deleted
            ),
            Err(e) => eprintln!("warning: re-applying the site's decisions: {e:#}"),
        }
    }
    // The version of the decision set held (`""`: none yet; the first poll brings it).
    let mut decisions_have = String::new();
    let up = tokio::spawn(uploader(sh.clone()));
    let sync = tokio::spawn(sync::syncer(sh.clone()));
    // Scheduled assessments (issue 17): from the bundle held, also while cut off.
    let sched = tokio::spawn(schedules::scheduler(sh.clone()));
    let rn = tokio::spawn(renewer(sh.clone()));
    let gc = tokio::spawn(crate::gc::agent_task(cfg.data.clone(), cfg.retention));
    if let Some((p, specs)) = decoys {
        decoy::start(sh.clone(), p, specs);
    }
    let mut stop = stop_on_signals();
    let mut backoff = Backoff::default();
    let r = loop {
        if *stop.borrow() > 0 {
            break Ok(());
        }
        let mut req = proto::PollRequest::new(vacsine_contract::proto::MAX_WAIT_MS);
        // The orchestrator shows what this outbox keeps as refused.
        req.outbox = match sh.outbox.report() {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("warning: outbox: {e}");
                None
            }
        };
        req.decisions = Some(decisions_have.clone());
        let poll = sh.link.op(&sh.agent_id, &req);
        let r = tokio::select! {
            r = poll => r,
            _ = fatal_rx.changed() => break Err(anyhow!("{}", fatal_rx.borrow().clone().unwrap_or_default())),
            // Draining: no new work (a lease given to the abandoned poll expires and is
            // re-offered).
            _ = stop.changed() => break Ok(()),
        };
        match r {
            Ok(p) => {
                backoff.ok("polling");
                if let Some(sd) = p.decisions {
                    decisions_have = on_decisions(&sh, &sd).await;
                }
                if let Some(w) = p.work {
                    let run_id = w.run_id.clone();
                    let job = execute(&sh, w);
                    tokio::pin!(job);
                    loop {
                        tokio::select! {
                            () = &mut job => break,
                            r = stop.changed() => {
                                if r.is_err() || *stop.borrow() >= 2 {
                                    eprintln!("second signal: cancelling run {run_id}");
                                    if let Some(c) = sh.active.lock().ok().and_then(|a| a.get(&run_id).cloned()) {
                                        c.cancel();
                                    }
                                } else {
                                    eprintln!("signal received: draining (run {run_id} finishes, then its records are uploaded; signal again to cancel it)");
                                }
                            }
                        }
                    }
                }
            }
            Err(e) if e.is_revoked() => break Err(anyhow!("{e}")),
            // Another contract version: no work can be taken until one side is upgraded.
            Err(CallError::Refused { code, message, .. }) if code == "protocol" => {
                break Err(anyhow!("{message}"))
            }
            Err(e) => backoff.fail("polling", &e).await,
        }
    };
    if r.is_ok() {
        // Drain: upload what the outbox holds, for a bounded time.
        let deadline = tokio::time::Instant::now() + DRAIN_UPLOAD;
        while sh.outbox.pending_count().unwrap_or(0) > 0 && tokio::time::Instant::now() < deadline {
            sh.kick.notify_one();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = sh.outbox.pending_count().unwrap_or(0);
        if left > 0 {
            eprintln!("stopping with {left} item(s) still in the outbox: they are uploaded at the next start");
        } else {
            eprintln!("stopped: no work running, outbox empty");
        }
    }
    up.abort();
    rn.abort();
    gc.abort();
    sync.abort();
    sched.abort();
    r
}

/// A decision set from the orchestrator: verified with the pinned key before anything in it
/// is read, then applied by diff. The version returned is the one to name at the next poll
/// (a set refused is not asked for again until it changes).
async fn on_decisions(sh: &Shared, sd: &proto::SignedDecisions) -> String {
    let set =
        match vacsine_contract::decisions::verify_set(&sh.bundle_key, &sh.site, sd, &sh.verifier) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: decision set {}: {e:#}", sd.version);
                return sd.version.clone();
            }
        };
    // Each document of the set counts only when signed when it was made: a decision the
    // orchestrator's store holds unsigned (written by hand) is refused here, by id.
    for why in &set.refused {
        eprintln!(
            "error: decision set {}: refused, not applied: {why}",
            set.version
        );
    }
    // The site's labels, as the orchestrator signed them: what `agent ingest` matches a
    // Response's `scope.labels` against.
    if let Err(e) = respond::save_labels(&sh.data, &set.labels) {
        eprintln!("error: keeping the site's labels: {e:#}");
    }
    if set.active.is_empty() && set.deleted.is_empty() && !respond::store_path(&sh.data).exists() {
        return set.version;
    }
    match respond::apply_set(&sh.data, &sh.site, &set).await {
        Ok(a) => {
            if !a.ids.is_empty() || a.added > 0 || a.deleted > 0 {
                eprintln!(
                    "decisions: set {} applied ({} active; {} newly in effect here; {} element(s) added, {} deleted)",
                    set.version,
                    set.active.len(),
                    a.ids.len(),
                    a.added,
                    a.deleted
                );
            }
            sh.kick.notify_one();
            set.version
        }
        Err(e) => {
            // Asked again at the next poll (the version held is unchanged).
            eprintln!("error: applying decision set {}: {e:#}", set.version);
            tokio::time::sleep(Duration::from_secs(1)).await;
            String::new()
        }
    }
}

/// How long a stopping agent keeps uploading its outbox.
const DRAIN_UPLOAD: Duration = Duration::from_secs(10);

/// SIGTERM/SIGINT: 1 = drain (finish the running work, upload, stop), 2 = cancel it now.
fn stop_on_signals() -> watch::Receiver<u8> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(0u8);
    match signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?))) {
        Ok((mut int, mut term)) => {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        Some(()) = int.recv() => {},
                        Some(()) = term.recv() => {},
                        else => break,
                    }
                    tx.send_modify(|l| *l = (*l + 1).min(2));
                }
            });
        }
        Err(e) => eprintln!("warning: cannot watch for signals ({e}): SIGTERM will not drain"),
    }
    rx
}

/// Retry delays of an unreachable orchestrator, and one line per change of state.
#[derive(Default)]
struct Backoff {
    delay_ms: u64,
}

impl Backoff {
    fn ok(&mut self, what: &str) {
        if self.delay_ms > 0 {
            eprintln!("orchestrator reachable again ({what})");
        }
        self.delay_ms = 0;
    }
    async fn fail(&mut self, what: &str, e: &CallError) {
        if self.delay_ms == 0 {
            eprintln!("{what}: {e}; retrying (work goes on, records wait in the outbox)");
        }
        self.delay_ms = (self.delay_ms * 2).clamp(200, 3_000);
        tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
    }
}

pub(crate) use vacsine_contract::proto::record_key;

/// Queue the finished records of engine run `engine_run` for orchestrator run `run`. Each
/// record names `run` (the id the operator was given) as its run, and `engine_run` as the
/// engine run that made it when the two differ; its idempotency key stays the engine's.
fn forward(sh: &Shared, run: &str, engine_run: &str) {
    let recs = match sh.journal.records(engine_run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warning: reading the journal of run {engine_run}: {e}");
            return;
        }
    };
    for r in recs.into_iter().filter(|r| r.finished_at.is_some()) {
        let key = record_key(&r);
        let r = as_run(r, run);
        let body = match serde_json::to_string(&r) {
            Ok(b) => b,
            Err(e) => {
                // Kept in the journal: `vacsine agent` shows it; never queued as nothing.
                eprintln!("warning: record {key} of run {run} cannot be encoded ({e}): not queued, kept in the journal");
                continue;
            }
        };
        if let Err(e) = sh.outbox.put(&key, run, "record", &body) {
            eprintln!("warning: outbox: {e}");
        }
    }
    sh.kick.notify_one();
}

/// `r` as a record of orchestrator run `run` (see [`forward`]).
fn as_run(mut r: vacsine_core::record::StepRecord, run: &str) -> vacsine_core::record::StepRecord {
    if r.run_id != run {
        r.engine_run_id = Some(std::mem::replace(&mut r.run_id, run.to_string()));
    }
    r
}

async fn execute(sh: &Arc<Shared>, w: Work) {
    sh.renew_every_ms
        .store((w.lease_ttl_ms / 3).max(100), Ordering::Relaxed);
    let cancel = CancelToken::new();
    if let Ok(mut a) = sh.active.lock() {
        a.insert(w.run_id.clone(), cancel.clone());
    }
    eprintln!("run {}: started", w.run_id);
    // The job is verified once, here, before anything looks at what it asks for: its kind
    // and documents are decoded from the signed bytes only, and every kind below receives a
    // `VerifiedWork`, which nothing but verification can make.
    let (status, message, report) =
        match vacsine_contract::bundle::verified_work(&sh.bundle_key, &sh.site, &sh.bundles, &w) {
            Err(e) => {
                eprintln!("run {}: refused: {e:#}", w.run_id);
                (RunStatus::Failed, Some(format!("{e:#}")), None)
            }
            Ok(v) => match v.job() {
                Job::Enforce(job) => {
                    let (st, m, r) = enforce_job::run(sh, &v, job, cancel).await;
                    (st, m, r.map(|r| proto::RunReport::Enforce(Box::new(r))))
                }
                Job::Step(job) => {
                    let (st, m, o) = step_job::run(sh, &v, &job.step, cancel).await;
                    (st, m, Some(proto::RunReport::Step(Box::new(o))))
                }
                Job::Workflow(job) => {
                    let (st, m) = run_workflow_job(sh, &v, job, cancel).await;
                    (st, m, None)
                }
            },
        };
    eprintln!("run {}: {status}", w.run_id);
    let fin = proto::FinishRequest {
        run_id: w.run_id.clone(),
        status,
        message,
        report,
    };
    let key = format!("finish/{}", w.run_id);
    match serde_json::to_string(&fin) {
        Ok(body) => {
            if let Err(e) = sh.outbox.put(&key, &w.run_id, "finish", &body) {
                eprintln!("warning: outbox: {key}: {e}");
            }
        }
        // Never queued as an empty body: said, with its key (the records are journaled).
        Err(e) => eprintln!("error: {key}: the run's end cannot be encoded ({e}): not queued"),
    }
    sh.kick.notify_one();
    if let Ok(mut a) = sh.active.lock() {
        a.remove(&w.run_id);
    }
}

async fn run_workflow_job(
    sh: &Arc<Shared>,
    w: &VerifiedWork,
    job: &WorkflowJob,
    cancel: CancelToken,
) -> (RunStatus, Option<String>) {
    match run_job(sh, w, job, cancel).await {
        Ok(report) => {
            forward(sh, w.run_id(), &report.run_id);
            (reported(report.status), report.message)
        }
        Err(e) => (RunStatus::Failed, Some(format!("{e:#}"))),
    }
}

async fn run_job(
    sh: &Arc<Shared>,
    w: &VerifiedWork,
    job: &WorkflowJob,
    cancel: CancelToken,
) -> anyhow::Result<vacsine_engine::RunReport> {
    let mut cat = Catalog::new();
    for c in &job.catalog {
        cat.insert(c.clone());
    }
    // The images the signed job lists, fetched and verified if needed: the only ones its
    // `container` steps may run, by the ID loaded.
    let allowed = images::prepare(sh, w, &cancel).await?;
    let mut engine = Engine::new(sh.journal.clone(), cat);
    engine.register(Arc::new(
        vacsine_engine::executor::ContainerExecutor::allowing(allowed),
    ));
    let mut nodes = NodeMap::new();
    nodes.insert("local".into(), Arc::new(LocalNode::new("local")));
    let (s2, run) = (sh.clone(), w.run_id().to_string());
    let progress: vacsine_engine::ProgressFn = Arc::new(move |e| {
        use vacsine_engine::ProgressEvent as P;
        match e {
            P::StepFinished { run_id, .. } | P::RunFinished { run_id, .. } => {
                forward(&s2, &run, run_id)
            }
            _ => {}
        }
    });
    Ok(engine
        .run(RunRequest {
            workflow: job.workflow.clone(),
            inputs: job.inputs.clone(),
            nodes,
            default_node: None,
            target_name: "local".into(),
            labels: Default::default(),
            progress: Some(progress),
            observer: None,
            cancel,
            run_id: None,
        })
        .await?)
}

/// Renew the leases of running work; a lease the orchestrator gave away cancels its run.
async fn renewer(sh: Arc<Shared>) {
    loop {
        let ms = sh.renew_every_ms.load(Ordering::Relaxed).max(100) as u64;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let runs: Vec<String> = sh
            .active
            .lock()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        if runs.is_empty() {
            continue;
        }
        match sh
            .link
            .op(&sh.agent_id, &proto::RenewRequest { runs: runs.clone() })
            .await
        {
            Ok(r) => {
                for lost in runs.iter().filter(|x| !r.held.contains(x)) {
                    eprintln!("run {lost}: lease lost (the orchestrator failed or re-offered it); cancelling");
                    if let Some(c) = sh.active.lock().ok().and_then(|a| a.get(lost).cloned()) {
                        c.cancel();
                    }
                }
            }
            Err(e) if e.is_revoked() => {
                if let Ok(a) = sh.active.lock() {
                    a.values().for_each(CancelToken::cancel);
                }
                let _ = sh.fatal.send(Some(e.to_string()));
                return;
            }
            // Unreachable: the work goes on; the lease is extended when the orchestrator
            // restarts.
            Err(_) => {}
        }
    }
}

/// The end an agent reports for a run its engine ran: the orchestrator knows `succeeded`,
/// `cancelled` and `failed` (an interrupted or rolled-back run did not do what was asked).
pub(crate) fn reported(engine: RunStatus) -> RunStatus {
    match engine {
        RunStatus::Succeeded => RunStatus::Succeeded,
        RunStatus::Cancelled => RunStatus::Cancelled,
        _ => RunStatus::Failed,
    }
}
