//! `vacsine orchestrator`, `agent`, `site`, `status`, and `run --site`: the CLI side of
//! `vacsine-orch`.

use crate::cli::{OperatorConn, SimpleFormat, SiteAction};
use crate::exit::Exit;
use crate::output::{
    print_diagnostics, print_json, print_record, report_error, Messages, RecordPrinter,
};
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use vacsine_contract::client::OperatorClient;
use vacsine_contract::proto;
use vacsine_core::doc::LoadError;
use vacsine_enforce::inputs;

pub(crate) fn err(e: impl std::fmt::Display) -> miette::Report {
    miette::miette!("{e:#}")
}

/// `vacsine orchestrator`'s arguments.
pub struct OrchestratorArgs {
    pub listen: SocketAddr,
    pub listen_plain: Option<SocketAddr>,
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub data: PathBuf,
    pub lease_ttl_ms: u64,
    /// PostgreSQL URL (replicas sharing the work); `None`: SQLite in `data`.
    pub database: Option<String>,
    /// Largest action image archive accepted.
    pub max_image_bytes: u64,
    /// Connections one client address may hold (`None`: the default, `Some(0)`: no cap).
    pub max_connections_per_client: Option<usize>,
    /// Retention of ended runs, applied periodically.
    pub retention: vacsine_engine::retention::Schedule,
    /// Where `/metrics` is served (plain HTTP); `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Loki push, when configured.
    pub loki: Option<vacsine_orch::loki::LokiConfig>,
    /// TAXII 2.1 collections polled for indicators.
    pub taxii: Vec<vacsine_orch::taxii::Feed>,
    /// CrowdSec's bouncer API listener.
    pub bouncer_listen: Option<SocketAddr>,
}

pub async fn orchestrator(a: OrchestratorArgs) -> miette::Result<Exit> {
    let database = a.database.filter(|d| !d.trim().is_empty());
    if let Some(d) = &database {
        if !(d.starts_with("postgres://") || d.starts_with("postgresql://")) {
            return Err(miette::miette!(
                help = "--database postgres://USER:PASSWORD@HOST:5432/DATABASE (or VACSINE_DATABASE_URL); without it the store is SQLite in --data",
                "--database {}: only PostgreSQL URLs are supported",
                vacsine_orch::store::mask_url(d)
            ));
        }
    }
    if let Some(l) = &a.loki {
        if !(l.url.starts_with("http://") || l.url.starts_with("https://")) || l.url.len() < 9 {
            return Err(miette::miette!(
                help =
                    "--loki-url http://HOST:3100 (Loki's base URL, or its /loki/api/v1/push URL)",
                "--loki-url {}: not an http:// or https:// URL",
                l.url
            ));
        }
        if l.buffer == 0 || l.batch == 0 {
            return Err(miette::miette!(
                help = "--loki-buffer and --loki-batch take a number of lines, at least 1",
                "--loki-buffer {} / --loki-batch {}: must be at least 1",
                l.buffer,
                l.batch
            ));
        }
    }
    vacsine_orch::server::serve(vacsine_orch::server::Config {
        listen: a.listen,
        listen_plain: a.listen_plain,
        tls_files: a.tls_files,
        data: a.data,
        lease_ttl_ms: a.lease_ttl_ms.max(100) as i64,
        database,
        max_image_bytes: a.max_image_bytes,
        max_connections_per_client: a.max_connections_per_client,
        retention: a.retention,
        metrics_listen: a.metrics_listen,
        loki: a.loki,
        taxii: a.taxii,
        bouncer_listen: a.bouncer_listen,
    })
    .await
    .map_err(|e| miette::miette!("{e:#}"))?;
    Ok(Exit::Ok)
}

pub async fn agent(
    orchestrator: Option<String>,
    intake_key: Option<String>,
    name: Option<String>,
    pin: Option<String>,
    data: PathBuf,
    retention: vacsine_engine::retention::Schedule,
    decoys: Option<PathBuf>,
) -> miette::Result<Exit> {
    let enrolled = data.join("agent.json").exists();
    let need = |v: Option<String>, flag: &str| -> miette::Result<String> {
        match v {
            Some(v) => Ok(v),
            None if enrolled => Ok(String::new()),
            None => Err(miette::miette!(
                help = "the first start enrols the agent: vacsine agent --orchestrator https://HOST:8443 --intake-key KEY --name NAME --pin sha256:…",
                "{flag} is needed to enrol this agent ({} has no identity yet)",
                data.display()
            )),
        }
    };
    let cfg = vacsine_agent::AgentConfig {
        orchestrator: need(orchestrator, "--orchestrator")?,
        name: need(name, "--name")?,
        pin: need(pin, "--pin")?,
        intake_key,
        data,
        enforcer: Some(std::sync::Arc::new(crate::siteenforce::SiteEnforcer)),
        retention,
        decoys,
    };
    vacsine_agent::run(cfg)
        .await
        .map_err(|e| miette::miette!("agent stopped: {e:#}"))?;
    Ok(Exit::Ok)
}

/// `vacsine agent run NAME[@V]`: a workflow of the held registry bundle, run here.
pub async fn agent_run(
    workflow: &str,
    inputs: &[String],
    format: SimpleFormat,
    data: &std::path::Path,
) -> miette::Result<Exit> {
    let (name, version) = name_version(workflow)?;
    let map = string_inputs(inputs)?;
    let b = vacsine_agent::autonomous::bundled(data, name, version)
        .map_err(|e| miette::miette!("{e:#}"))?;
    if format == SimpleFormat::Human {
        eprintln!(
            "autonomous run of {} from the registry bundle {} (verified)",
            b.versions
                .first()
                .map(|v| format!("{}@{}", v.name, v.version))
                .unwrap_or_default(),
            b.bundle
        );
    }
    let (cancel, _signalled) = crate::runcmd::cancel_on_signals();
    let progress = print_finished_steps(data.join("journal.db"), format);
    let report = vacsine_agent::autonomous::run(data, b, map, Some(progress), cancel)
        .await
        .map_err(|e| miette::miette!("{e:#}"))?;
    if format == SimpleFormat::Human {
        println!(
            "run {} {}{} (queued for upload: the agent reports it when it reaches the orchestrator)",
            report.run_id,
            report.status,
            report
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
    Ok(Exit::of_run(report.status))
}

/// `NAME` or `NAME@VERSION` of `agent run`.
fn name_version(workflow: &str) -> miette::Result<(&str, Option<i64>)> {
    Ok(match workflow.split_once('@') {
        Some((n, v)) => match v.parse::<i64>() {
            Ok(v) if v > 0 => (n, Some(v)),
            _ => {
                return Err(miette::miette!(
                    help = "give NAME or NAME@VERSION, VERSION a number such as 2",
                    "`{workflow}`: the version after `@` is not a positive number"
                ))
            }
        },
        None => (workflow, None),
    })
}

/// `--input NAME=VALUE` of `agent run`, as strings (the bundled workflow types them).
fn string_inputs(inputs: &[String]) -> miette::Result<serde_json::Map<String, Value>> {
    let mut map = serde_json::Map::new();
    for i in inputs {
        let Some((k, v)) = i.split_once('=') else {
            return Err(miette::miette!(
                help = "write --input NAME=VALUE",
                "--input `{i}` has no `=`"
            ));
        };
        map.insert(
            k.trim().to_string(),
            serde_json::Value::String(v.to_string()),
        );
    }
    Ok(map)
}

/// A progress callback that prints each step record once, as its step ends (read back from
/// the run's journal at `journal_path`).
fn print_finished_steps(
    journal_path: std::path::PathBuf,
    format: SimpleFormat,
) -> vacsine_engine::ProgressFn {
    let printer = RecordPrinter::new(format == SimpleFormat::Json, Messages::Hidden).once();
    let printer = std::sync::Mutex::new(printer);
    std::sync::Arc::new(move |e| {
        if let vacsine_engine::ProgressEvent::StepFinished { run_id, .. } = e {
            let Ok(j) = vacsine_engine::Journal::open(&journal_path) else {
                return;
            };
            let Ok(mut printer) = printer.lock() else {
                return;
            };
            let mut out = std::io::stdout().lock();
            for r in j.records(run_id).unwrap_or_default() {
                if r.finished_at.is_some() {
                    printer.print(&mut out, &r);
                }
            }
        }
    })
}

/// Where `vacsine agent event` reads its payload.
pub enum PayloadFrom {
    /// `--payload JSON`.
    Arg(String),
    /// `--payload-file FILE`, or `-` for standard input.
    File(std::path::PathBuf),
}

impl PayloadFrom {
    /// From the two options (clap makes exactly one present).
    pub fn new(arg: Option<String>, file: Option<std::path::PathBuf>) -> Self {
        match (arg, file) {
            (_, Some(f)) => PayloadFrom::File(f),
            (Some(a), None) => PayloadFrom::Arg(a),
            (None, None) => PayloadFrom::Arg(String::new()),
        }
    }

    /// The payload text (at most [`MAX_PAYLOAD`] bytes) and how to name where it came from.
    fn read(self) -> miette::Result<(String, String)> {
        use std::io::Read as _;
        let (mut r, place): (Box<dyn std::io::Read>, String) = match self {
            PayloadFrom::Arg(a) => return Ok((a, "--payload".into())),
            PayloadFrom::File(p) if p.as_os_str() == "-" => {
                (Box::new(std::io::stdin().lock()), "standard input".into())
            }
            PayloadFrom::File(p) => (
                Box::new(std::fs::File::open(&p).map_err(|e| {
                    miette::miette!("--payload-file {}: cannot be read: {e}", p.display())
                })?),
                p.display().to_string(),
            ),
        };
        let mut buf = Vec::new();
        r.by_ref()
            .take(MAX_PAYLOAD + 1)
            .read_to_end(&mut buf)
            .map_err(|e| miette::miette!("{place}: cannot be read: {e}"))?;
        if buf.len() as u64 > MAX_PAYLOAD {
            return Err(miette::miette!(
                "{place}: the payload is larger than {} MiB: refused",
                MAX_PAYLOAD >> 20
            ));
        }
        let text = String::from_utf8(buf).map_err(|e| {
            miette::miette!(
                "{place}: not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            )
        })?;
        Ok((text, place))
    }
}

/// The largest event payload `vacsine agent event` reads.
const MAX_PAYLOAD: u64 = 16 << 20;

/// `vacsine agent event --type T --payload JSON|--payload-file FILE|-`: the held bundle's
/// triggers, run here, each matching workflow on its own.
pub async fn agent_event(
    event_type: &str,
    payload: PayloadFrom,
    source: &str,
    id: Option<String>,
    format: SimpleFormat,
    data: &std::path::Path,
) -> miette::Result<Exit> {
    use vacsine_core::workflow::EVENT_TYPES;
    if !EVENT_TYPES.contains(&event_type) {
        return Err(miette::miette!(
            help = format!("one of: {}", EVENT_TYPES.join(", ")),
            "--type `{event_type}` is not an event type"
        ));
    }
    let (text, place) = payload.read()?;
    let payload = event_payload(&text, &place)?;
    let event = serde_json::json!({
        "id": id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        "type": event_type,
        "source": source,
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "payload": payload,
    });
    let (cancel, _signalled) = crate::runcmd::cancel_on_signals();
    let fired = vacsine_agent::autonomous::on_event(data, &event, None, cancel)
        .await
        .map_err(|e| miette::miette!("{e:#}"))?;
    let mut ok = true;
    for t in &fired {
        let (line, fine) = trigger_line(t);
        ok &= fine;
        match format {
            SimpleFormat::Json => println!("{line}"),
            SimpleFormat::Human => println!("{}", trigger_text(&t.workflow, &line)),
        }
    }
    if fired.is_empty() && format == SimpleFormat::Human {
        println!("no trigger of the registry bundle held matches this event: nothing ran");
    }
    Ok(Exit::failures_if(!ok))
}

/// The payload of `agent event`, read from `place`: a JSON object.
fn event_payload(text: &str, place: &str) -> miette::Result<Value> {
    let payload: Value = serde_json::from_str(text).map_err(|e| {
        miette::miette!(
            help = "give a JSON object, e.g. --payload '{\"type\": \"ip\", \"value\": \"203.0.113.9\"}'",
            "{place}: the payload is not JSON: {e}"
        )
    })?;
    if !payload.is_object() {
        return Err(miette::miette!(
            help = "give a JSON object, e.g. --payload '{\"type\": \"ip\", \"value\": \"203.0.113.9\"}'",
            "{place}: the payload must be a JSON object"
        ));
    }
    Ok(payload)
}

/// What one fired trigger did, as `agent event` reports it (workflow, run id, status,
/// message), and whether that is no failure (a run that succeeded, or a deduplicated event).
fn trigger_line(t: &vacsine_agent::autonomous::Triggered) -> (Value, bool) {
    use vacsine_agent::autonomous::TriggerOutcome;
    match &t.outcome {
        TriggerOutcome::Ran(r) => (
            serde_json::json!({"workflow": t.workflow, "run_id": r.run_id,
                "status": r.status.as_str(), "message": r.message}),
            r.status == vacsine_engine::RunStatus::Succeeded,
        ),
        TriggerOutcome::Deduplicated => (
            serde_json::json!({"workflow": t.workflow, "run_id": null,
            "status": "deduplicated", "message": "fired for the same key within its window: not run again"}),
            true,
        ),
        TriggerOutcome::Refused(why) => (
            serde_json::json!({"workflow": t.workflow, "run_id": null,
                "status": "refused", "message": format!("nothing ran: {why}")}),
            false,
        ),
    }
}

/// A [`trigger_line`] for people: `WORKFLOW: STATUS (run ID): MESSAGE`.
fn trigger_text(workflow: &str, line: &Value) -> String {
    format!(
        "{}: {}{}{}",
        workflow,
        line["status"].as_str().unwrap_or(""),
        line["run_id"]
            .as_str()
            .map(|r| format!(" (run {r})"))
            .unwrap_or_default(),
        line["message"]
            .as_str()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    )
}

/// `vacsine agent status`: the outbox of the agent whose data folder is `data`.
pub fn agent_status(format: SimpleFormat, data: &std::path::Path) -> miette::Result<Exit> {
    let db = data.join("agent.db");
    if !db.exists() {
        return Err(miette::miette!(
            "no agent data in {} (no agent.db): give the agent's --data folder",
            data.display()
        ));
    }
    let st = vacsine_agent::Outbox::open(&db)
        .and_then(|o| o.status())
        .map_err(|e| miette::miette!("reading {}: {e:#}", db.display()))?;
    match format {
        SimpleFormat::Json => println!("{}", serde_json::to_string_pretty(&st).map_err(err)?),
        SimpleFormat::Human => {
            println!("outbox: {} item(s) waiting to be uploaded", st.pending);
            println!(
                "        {} acknowledged item(s) kept (deleted with their run's end, or after a day)",
                st.sent_kept
            );
            if st.refused.is_empty() {
                println!("        no item refused");
            } else {
                println!(
                    "        {} item(s) refused by the orchestrator or unreadable, kept:",
                    st.refused.len()
                );
                for r in &st.refused {
                    println!(
                        "  {}  {} {} (run {}): {}",
                        r.at, r.kind, r.key, r.run_id, r.reason
                    );
                }
            }
        }
    }
    Ok(Exit::failures_if(!st.refused.is_empty()))
}

/// `vacsine agent preflight`: one line per check; exit 0 when all pass, 2 otherwise.
pub async fn preflight(
    orchestrator: Option<String>,
    pin: Option<String>,
    intake_key: bool,
    data: &std::path::Path,
) -> Exit {
    let checks = vacsine_agent::preflight::run(orchestrator, pin, intake_key, data).await;
    for c in &checks {
        println!(
            "{}  {:<13} {}",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    Exit::failures_if(!checks.iter().all(|c| c.pass))
}

pub(crate) fn client(conn: &OperatorConn) -> miette::Result<OperatorClient> {
    let cfg = match (&conn.url, &conn.pin, &conn.token) {
        (Some(url), Some(pin), Some(token)) => proto::OperatorConfig {
            url: url.clone(),
            pin: pin.clone(),
            token: token.clone(),
        },
        _ => {
            let mut c = vacsine_orch::server::operator_config(&conn.data).map_err(err)?;
            if let Some(u) = &conn.url {
                c.url = u.clone();
            }
            if let Some(p) = &conn.pin {
                c.pin = p.clone();
            }
            if let Some(t) = &conn.token {
                c.token = t.clone();
            }
            c
        }
    };
    if let Some(k) = &conn.idempotency_key {
        let ok = (8..=128).contains(&k.len())
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(miette::miette!(
                help = "give 8 to 128 letters, digits, `-` or `_`, one per submission (or leave it out: each invocation makes its own)",
                "--idempotency-key `{k}` is not a valid key"
            ));
        }
    }
    Ok(OperatorClient::new(&cfg)
        .map_err(err)?
        .with_retry(conn.retry_for, conn.idempotency_key.clone()))
}

/// The orchestrator did not take a submission in the time `--retry-for` gave it: exit code
/// [`Exit::Unreachable`].
#[derive(Debug)]
pub struct GaveUp(pub String);

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GaveUp {}

impl miette::Diagnostic for GaveUp {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(
            "start the orchestrator (or check the address, the network and any proxy in front), then submit again with --idempotency-key and the key above: if the last try was made and only its answer lost, that gets its answer instead of making it twice. --retry-for DURATION waits longer (0: one try)",
        ))
    }
}

/// A submission's error: [`GaveUp`] when it was retried until its time ran out.
pub(crate) fn call_err(e: vacsine_contract::client::CallError) -> miette::Report {
    match e {
        e @ vacsine_contract::client::CallError::GaveUp { .. } => {
            miette::Report::new(GaveUp(format!("submission not confirmed: {e}")))
        }
        e => err(e),
    }
}

/// `vacsine site create|list|label|revoke`: one call to the orchestrator per action.
pub async fn site(
    action: SiteAction,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let c = client(conn)?;
    match action {
        SiteAction::Create { name, labels } => site_create(&c, name, &labels, format).await?,
        SiteAction::List => site_list(&c, format).await?,
        SiteAction::Label { name, changes } => site_label(&c, &name, &changes, format).await?,
        SiteAction::Revoke { name, agent } => site_revoke(&c, &name, agent).await?,
    }
    Ok(Exit::Ok)
}

/// `site create NAME [--label K=V]...`: the new site and its intake key (shown once).
async fn site_create(
    c: &OperatorClient,
    name: String,
    labels: &[String],
    format: SimpleFormat,
) -> miette::Result<()> {
    let mut set = std::collections::BTreeMap::new();
    for l in labels {
        match parse_label(l)? {
            (k, Some(v)) => {
                set.insert(k, v);
            }
            (k, None) => {
                return Err(miette::miette!(
                    help = "give labels as `--label KEY=VALUE`",
                    "`--label {k}-`: a new site has no label to remove"
                ))
            }
        }
    }
    let r: proto::SiteCreated = c
        .post(proto::OP_SITES, &proto::CreateSite { name, labels: set })
        .await
        .map_err(call_err)?;
    if format == SimpleFormat::Json {
        print_json(&r);
    } else {
        println!("site {} created; its intake key (shown once):", r.name);
        println!("{}", r.intake_key);
    }
    Ok(())
}

/// `site list`: one line per site (created, revoked).
async fn site_list(c: &OperatorClient, format: SimpleFormat) -> miette::Result<()> {
    let v: Vec<proto::SiteView> = c.get(proto::OP_SITES).await.map_err(err)?;
    if format == SimpleFormat::Json {
        print_json(&v);
    } else {
        println!("{:<24} {:<26} REVOKED", "SITE", "CREATED");
        for s in v {
            println!(
                "{:<24} {:<26} {}",
                s.name,
                s.created,
                s.revoked.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}

/// `site label NAME KEY=VALUE|KEY-...`: the site's labels once changed.
async fn site_label(
    c: &OperatorClient,
    name: &str,
    changes: &[String],
    format: SimpleFormat,
) -> miette::Result<()> {
    let mut body = proto::SiteLabels::default();
    for l in changes {
        match parse_label(l)? {
            (k, Some(v)) => {
                body.set.insert(k, v);
            }
            (k, None) => body.remove.push(k),
        }
    }
    let r: proto::SiteLabels = c
        .post(&format!("{}/{name}/labels", proto::OP_SITES), &body)
        .await
        .map_err(call_err)?;
    if format == SimpleFormat::Json {
        print_json(&r.set);
    } else {
        println!("site {name}: labels {}", labels_text(&r.set));
    }
    Ok(())
}

/// `site revoke NAME [--agent ID]`: one agent, or the whole site (its key and every agent).
async fn site_revoke(c: &OperatorClient, name: &str, agent: Option<String>) -> miette::Result<()> {
    let _: Value = c
        .post(
            &format!("{}/{name}/revoke", proto::OP_SITES),
            &match &agent {
                Some(a) => proto::RevokeRequest::Agent(a.clone()),
                None => proto::RevokeRequest::WholeSite,
            },
        )
        .await
        .map_err(call_err)?;
    match agent {
        Some(a) => println!("agent {a} of site {name} revoked"),
        None => println!("site {name} revoked (its intake key and every agent)"),
    }
    Ok(())
}

/// `KEY=VALUE` (set) or `KEY-` (remove), checked as the orchestrator checks them.
fn parse_label(l: &str) -> miette::Result<(String, Option<String>)> {
    let (k, v) = match l.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => match l.strip_suffix('-') {
            Some(k) => (k.to_string(), None),
            None => {
                return Err(miette::miette!(
                    help = "give `KEY=VALUE` to set a label, `KEY-` to remove one",
                    "label `{l}`: no `=`"
                ))
            }
        },
    };
    vacsine_contract::decisions::check_label(&k, v.as_deref().unwrap_or(""))
        .map_err(|e| miette::miette!("{e}"))?;
    Ok((k, v))
}

fn labels_text(l: &std::collections::BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "none".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn status(conn: &OperatorConn, format: SimpleFormat) -> miette::Result<Exit> {
    let c = client(conn)?;
    let v: proto::StatusView = c.get(proto::OP_STATUS).await.map_err(err)?;
    if format == SimpleFormat::Json {
        print_json(&v);
        return Ok(Exit::Ok);
    }
    print_sites(&v.sites);
    print_agents(&v.agents);
    print_runs(&v.runs);
    Ok(Exit::Ok)
}

/// `status`'s sites, one line each.
fn print_sites(sites: &[proto::SiteView]) {
    println!("SITES");
    for s in sites {
        println!(
            "  {:<20} created {}{}{}{}{}",
            s.name,
            s.created,
            s.cut_off_since
                .as_deref()
                .map(|t| format!(", CUT OFF since {t} (no agent online)"))
                .unwrap_or_default(),
            if s.labels.is_empty() {
                String::new()
            } else {
                format!(", labels {}", labels_text(&s.labels))
            },
            s.revoked
                .as_deref()
                .map(|r| format!(", revoked {r}"))
                .unwrap_or_default(),
            if s.refused_outbox_items > 0 {
                format!(
                    ", {} outbox item(s) refused and kept at its agents",
                    s.refused_outbox_items
                )
            } else {
                String::new()
            }
        );
    }
}

/// `status`'s agents, then the outbox items they keep as refused (how many, the oldest few).
fn print_agents(agents: &[proto::AgentView]) {
    println!("AGENTS");
    println!(
        "  {:<16} {:<16} {:<8} {:<26} {:<8} {:<26} ID",
        "SITE", "NAME", "STATE", "LAST SEEN", "VERSION", "LAST AUTONOMOUS RUN"
    );
    for a in agents {
        println!(
            "  {:<16} {:<16} {:<8} {:<26} {:<8} {:<26} {}",
            a.site,
            a.name,
            a.state,
            a.last_seen,
            a.version,
            a.last_autonomous.as_deref().unwrap_or("-"),
            a.id
        );
    }
    // Items agents keep as refused (never dropped): how many, and the oldest few.
    let refused: Vec<_> = agents
        .iter()
        .filter_map(|a| a.outbox.as_ref().filter(|o| o.refused > 0).map(|o| (a, o)))
        .collect();
    if !refused.is_empty() {
        println!(
            "REFUSED OUTBOX ITEMS (kept at the agent; `vacsine agent status` there lists them all)"
        );
        for (a, o) in refused {
            println!("  {}/{}: {} item(s), oldest:", a.site, a.name, o.refused);
            for i in &o.oldest {
                println!(
                    "    {}  {} {} (run {}): {}",
                    i.at, i.kind, i.key, i.run_id, i.reason
                );
            }
        }
    }
}

/// `status`'s runs, one line each.
fn print_runs(runs: &[proto::RunView]) {
    println!("RUNS");
    println!(
        "  {:<38} {:<16} {:<20} {:<10} {:>7}  MESSAGE",
        "RUN", "SITE", "WORKFLOW", "STATUS", "RECORDS"
    );
    for r in runs {
        println!(
            "  {:<38} {:<16} {:<20} {:<10} {:>7}  {}",
            r.id,
            r.site,
            r.workflow,
            r.status,
            r.records,
            r.message_line()
        );
    }
}

/// `vacsine runs --site S | --all-sites [--status X]`: the orchestrator's runs.
pub async fn runs(
    conn: &OperatorConn,
    site: Option<String>,
    status: Option<String>,
    before: Option<String>,
    limit: usize,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let c = client(conn)?;
    let mut q = vec![("limit", limit.to_string())];
    if let Some(s) = site {
        q.push(("site", s));
    }
    if let Some(s) = status {
        q.push(("status", s));
    }
    if let Some(b) = before {
        q.push(("before", b));
    }
    let v: proto::RunList = c.get_query(proto::OP_RUNS, &q).await.map_err(err)?;
    if format == SimpleFormat::Json {
        print_json(&v.runs);
        // The runs stay a plain array on stdout; the next page's cursor goes to stderr.
        if let Some(n) = &v.next {
            eprintln!("more runs: add --before {n}");
        }
        return Ok(Exit::Ok);
    }
    if v.runs.is_empty() {
        println!("no runs");
        return Ok(Exit::Ok);
    }
    println!(
        "{:<38} {:<16} {:<20} {:<10} {:>7}  {:<26} MESSAGE",
        "RUN", "SITE", "WORKFLOW", "STATUS", "RECORDS", "CREATED"
    );
    for r in &v.runs {
        println!(
            "{:<38} {:<16} {:<20} {:<10} {:>7}  {:<26} {}",
            r.id,
            r.site,
            r.workflow,
            r.status,
            r.records,
            r.created,
            r.message_line()
        );
    }
    if let Some(n) = &v.next {
        println!("more runs: add --before {n}");
    }
    Ok(Exit::Ok)
}

/// `vacsine logs ID` for a run at a site: its records as the orchestrator holds them.
pub async fn logs(conn: &OperatorConn, id: &str, format: SimpleFormat) -> miette::Result<Exit> {
    let c = client(conn)?;
    let v: proto::RunRecords = c
        .get_query(
            &format!("{}/{id}", proto::OP_RUNS),
            &[("wait_ms", "0".into())],
        )
        .await
        .map_err(err)?;
    let mut out = std::io::stdout().lock();
    if format == SimpleFormat::Json {
        for r in &v.records {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&r.record).unwrap_or_default()
            );
        }
        return Ok(Exit::Ok);
    }
    let _ = writeln!(
        out,
        "run {} of {} at site {}: {} ({} records){}",
        v.run.id,
        v.run.workflow,
        v.run.site,
        v.run.status,
        v.run.records,
        Some(v.run.message_line())
            .filter(|m| !m.is_empty())
            .map(|m| format!(" — {m}"))
            .unwrap_or_default()
    );
    for r in &v.records {
        print_record(&mut out, &r.record, Messages::Hidden);
    }
    Ok(Exit::Ok)
}

/// `vacsine run WF --site S`: validate here, submit, follow the records as they arrive.
pub async fn run_at_site(
    workflow: Option<PathBuf>,
    site: &str,
    raw_inputs: Vec<String>,
    catalog: Vec<PathBuf>,
    detach: bool,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let Some(wf_path) = workflow else {
        return Err(miette::miette!(
            help = "vacsine run WORKFLOW --site SITE",
            "give a workflow file"
        ));
    };
    if let Some((name, version)) = crate::registrycmd::pushed_ref(&wf_path) {
        return crate::registrycmd::run_pushed(
            name, version, site, raw_inputs, detach, conn, format,
        )
        .await;
    }
    let job = match workflow_job(&wf_path, &raw_inputs, catalog) {
        Ok(job) => job,
        Err(errors) => return Ok(print_diagnostics(errors)),
    };
    let c = client(conn)?;
    let created: proto::RunCreated = c
        .post(
            proto::OP_RUNS,
            &proto::SubmitRun {
                site: site.to_string(),
                job,
            },
        )
        .await
        .map_err(call_err)?;
    follow_run(&c, created, site, detach, format).await
}

/// The job of `run WF --site S`, checked here before anything is queued: the catalog (the
/// folders given, else `./catalog`), the workflow validated against it, the inputs typed by
/// their declarations. The job carries the catalog's other workflows.
fn workflow_job(
    wf_path: &std::path::Path,
    raw_inputs: &[String],
    catalog: Vec<PathBuf>,
) -> Result<proto::Job, Vec<LoadError>> {
    let mut cat_dirs = catalog;
    if cat_dirs.is_empty() && std::path::Path::new("catalog").is_dir() {
        cat_dirs.push(PathBuf::from("catalog"));
    }
    let (mut cat, problems) = inputs::catalog_for(None, &cat_dirs);
    if !problems.is_empty() {
        return Err(problems);
    }
    let wf = inputs::load_workflow(wf_path).map_err(|e| vec![e])?;
    cat.workflows
        .entry(wf.doc.metadata.name.value.clone())
        .or_insert_with(|| wf.clone());
    let ecat = vacsine_enforce::engine_catalog(&cat);
    let errs: Vec<LoadError> = vacsine_engine::validate_workflow(&wf.doc, &ecat)
        .into_iter()
        .map(|p| p.into_error(&wf.source))
        .collect();
    if !errs.is_empty() {
        return Err(errs);
    }
    // Inputs are typed and checked here, before anything is queued at the site.
    let inputs_map = crate::runcmd::inputs_from_command_line(&wf, raw_inputs)?;
    let catalog: Vec<vacsine_core::workflow::Workflow> = cat
        .workflows
        .iter()
        .filter(|(name, _)| **name != wf.doc.metadata.name.value)
        .map(|(_, w)| w.doc.clone())
        .collect();
    Ok(proto::Job::workflow(wf.doc.clone(), catalog, inputs_map))
}

/// After a run was queued: print its id (`detach`), or follow its records to its end.
pub(crate) async fn follow_run(
    c: &OperatorClient,
    created: proto::RunCreated,
    site: &str,
    detach: bool,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    if detach {
        if format == SimpleFormat::Json {
            println!("{}", serde_json::json!({ "run_id": created.run_id }));
        } else {
            println!("run {} queued at site {site}", created.run_id);
        }
        return Ok(Exit::Ok);
    }
    if format == SimpleFormat::Human {
        eprintln!("run {} queued at site {site}", created.run_id);
    }
    let mut printer = RecordPrinter::new(format == SimpleFormat::Json, Messages::Hidden);
    let run = crate::follow::follow_run(c, &created.run_id, |records| {
        crate::follow::write_records(&mut std::io::stdout().lock(), records, &mut printer)
    })
    .await;
    let run = match run {
        Ok(run) => run,
        Err(e) => return Ok(report_error(err(e))),
    };
    if format == SimpleFormat::Human {
        println!(
            "run {} {}{}",
            run.id,
            run.status,
            Some(run.message_line())
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
    Ok(Exit::failures_if(
        run.status != vacsine_core::status::RunStatus::Succeeded.as_str(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fired_trigger_is_one_line_for_people() {
        let ran = serde_json::json!({"workflow": "w", "run_id": "r1", "status": "succeeded", "message": null});
        assert_eq!(trigger_text("w", &ran), "w: succeeded (run r1)");
        let refused = serde_json::json!({"workflow": "w", "run_id": null, "status": "refused", "message": "nothing ran: x"});
        assert_eq!(trigger_text("w", &refused), "w: refused: nothing ran: x");
    }

    #[test]
    fn an_event_payload_is_a_json_object() {
        assert!(event_payload(r#"{"type": "ip"}"#, "--payload").is_ok());
        let e = event_payload("[1]", "--payload").unwrap_err();
        assert!(e.to_string().contains("must be a JSON object"), "{e}");
        let e = event_payload("{", "f.json").unwrap_err();
        assert!(
            e.to_string().starts_with("f.json: the payload is not JSON"),
            "{e}"
        );
    }
}
