//! Adaptive response from the command line (issue 16): `kind: Response` files for `vacsine
//! push`, `vacsine agent ingest` (events → decisions in effect at this site, also while cut
//! off), and the operator's `vacsine decisions [add|delete]` and `vacsine events`.

use crate::cli::{BouncerAction, DecisionsAction, DecisionsCli, OperatorConn, SimpleFormat};
use crate::exit::Exit;
use crate::orch::{client, err};
use crate::output::print_json;
use std::io::Read as _;
use std::path::Path;
use vacsine_contract::proto;
use vacsine_core::doc::{parse_as, LoadError};

/// The largest input `vacsine agent ingest` reads.
const MAX_INPUT: u64 = 64 << 20;

/// `Some(document)` when `path` is a `kind: Response` file (validated strictly, errors
/// located at file:line:column); `None` for any other kind.
pub fn load_response(path: &Path) -> Result<Option<proto::PushDocument>, LoadError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        kind: Option<String>,
    }
    let source = vacsine_enforce::inputs::read_source(path)?;
    let is_response = parse_as::<Probe>(&source)
        .ok()
        .and_then(|p| p.kind)
        .is_some_and(|k| k == "Response");
    if !is_response {
        return Ok(None);
    }
    let rule = vacsine_response::load(&source)?;
    let doc: vacsine_response::Response = parse_as(&source)?;
    let document = serde_json::to_value(&doc)
        .map_err(|e| LoadError::at(&source, 1, 1, format!("cannot be encoded: {e}"), None))?;
    Ok(Some(proto::PushDocument {
        kind: "Response".into(),
        name: rule.name,
        document,
    }))
}

fn parse_from(from: Option<&str>) -> miette::Result<Option<vacsine_events::Format>> {
    from.map(|f| {
        f.parse::<vacsine_events::Format>().map_err(|e| {
            miette::miette!(
                help = "--from eve|falco|stix|crowdsec|opencanary|cowrie|nmap",
                "--from: {e}"
            )
        })
    })
    .transpose()
}

/// `vacsine agent ingest --follow [--from FORMAT] FILE`: until interrupted.
pub async fn agent_follow(
    file: &Path,
    from: Option<&str>,
    format: SimpleFormat,
    data: &Path,
) -> miette::Result<Exit> {
    if file.as_os_str() == "-" {
        return Err(miette::miette!(
            help = "give the log file's path; standard input is read once, without --follow",
            "--follow: standard input cannot be followed"
        ));
    }
    let fmt = parse_from(from)?;
    let path = std::path::absolute(file)
        .map_err(|e| miette::miette!("{}: cannot be resolved: {e}", file.display()))?;
    // Fails early, before any wait, when this machine holds no bundle.
    vacsine_agent::autonomous::held(data).map_err(|e| miette::miette!("{e:#}"))?;
    let mut f = vacsine_agent::tail::Follower::new(data, &path, fmt);
    let place = path.display().to_string();
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut wait = vacsine_agent::tail::POLL;
    loop {
        match f.step().await {
            Ok(reports) => {
                wait = vacsine_agent::tail::POLL;
                for fed in reports {
                    match format {
                        SimpleFormat::Json => {
                            println!("{}", serde_json::to_string(&fed).unwrap_or_default())
                        }
                        SimpleFormat::Human => print_fed(&fed, &place),
                    }
                }
            }
            // Not saved: the same lines are fed again next round (the store dedupes them).
            // (Backing off to 5 s while it fails.)
            Err(e) => {
                eprintln!("{place}: {e:#} (retrying in {} ms)", wait.as_millis());
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
        }
        tokio::select! {
            _ = &mut stop => return Ok(Exit::Ok),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// `agent ingest --follow`'s human line for what one round fed; the refused events on
/// stderr, located in the file.
fn print_fed(fed: &vacsine_agent::tail::Fed, place: &str) {
    let rep = &fed.report;
    println!(
        "site {}: {} event(s) read from {place} ({} new, {} record(s) not events), {} refused, {} ban(s) in effect",
        rep.site,
        rep.events,
        rep.new_events,
        rep.skipped,
        rep.errors.len(),
        rep.applied.len()
    );
    let at = if fed.rotated {
        format!("{place} (rotated away), from byte {}", fed.offset)
    } else {
        format!("{place}, from byte {}", fed.offset)
    };
    for e in &rep.errors {
        eprintln!("{at}: {e}");
    }
}

/// `vacsine agent ingest [--from FORMAT] FILE|-`.
pub async fn agent_ingest(
    file: &Path,
    from: Option<&str>,
    format: SimpleFormat,
    data: &Path,
) -> miette::Result<Exit> {
    let (bytes, place) = read_input(file)?;
    let fmt = match parse_from(from)? {
        Some(f) => f,
        None => vacsine_events::Format::detect(&bytes).ok_or_else(|| {
            miette::miette!(
                help = "name it with --from eve|falco|stix|crowdsec|opencanary|cowrie|nmap",
                "{place}: the format of these events cannot be told from their first bytes"
            )
        })?,
    };
    let rep = vacsine_agent::respond::ingest(data, fmt, &bytes)
        .await
        .map_err(|e| miette::miette!("{e:#}"))?;
    match format {
        SimpleFormat::Json => print_json(&rep),
        SimpleFormat::Human => print_ingested(&rep, &place),
    }
    Ok(Exit::failures_if(!rep.errors.is_empty()))
}

/// The events `agent ingest` reads (a file, or standard input for `-`; at most
/// [`MAX_INPUT`] bytes) and how to name where they came from.
fn read_input(file: &Path) -> miette::Result<(Vec<u8>, String)> {
    let (mut r, place): (Box<dyn std::io::Read>, String) = if file.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), "standard input".into())
    } else {
        (
            Box::new(std::fs::File::open(file).map_err(|e| {
                miette::miette!(
                    help = "give a file of events, or `-` for standard input",
                    "{}: cannot be read: {e}",
                    file.display()
                )
            })?),
            file.display().to_string(),
        )
    };
    let mut bytes = Vec::new();
    r.by_ref()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| miette::miette!("{place}: cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT {
        return Err(miette::miette!(
            help = "split the input, or feed it on standard input in parts",
            "{place}: larger than {} MiB: refused, nothing read",
            MAX_INPUT >> 20
        ));
    }
    Ok((bytes, place))
}

/// `agent ingest`'s human report: the counts, the outcomes by reason, the decisions in
/// effect, the nft changes; the refused events on stderr.
fn print_ingested(rep: &vacsine_agent::respond::IngestReport, place: &str) {
    println!(
        "site {}: {} event(s) read from {place} ({} new, {} record(s) not events), {} refused",
        rep.site,
        rep.events,
        rep.new_events,
        rep.skipped,
        rep.errors.len()
    );
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for o in &rep.outcomes {
        *reasons
            .entry(vacsine_response::store::reason(&o.verdict))
            .or_default() += 1;
    }
    for (k, n) in &reasons {
        println!("  {n} outcome(s) {k}");
    }
    for d in &rep.applied {
        println!(
            "  {} in effect at {} (decision {}, until {})",
            d.action,
            d.applied_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            d.id,
            d.expires_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| "deleted".into())
        );
    }
    println!(
        "  nft: {} element(s) added, {} deleted, in {} ms",
        rep.added, rep.deleted, rep.took_ms
    );
    for e in &rep.errors {
        eprintln!("{place}: {e}");
    }
}

/// `vacsine bouncer add NAME [--site S] | list | delete NAME`.
pub async fn bouncer(
    action: BouncerAction,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let c = client(conn)?;
    let line = |b: &proto::BouncerView| {
        format!(
            "{}: bans of {}, last pull {}, holds {}",
            b.name,
            b.site
                .as_deref()
                .map_or_else(|| "every site".to_string(), |s| format!("site {s}")),
            b.last_pull_at.as_deref().unwrap_or("never"),
            b.holds
        )
    };
    match action {
        BouncerAction::Add { name, site } => {
            let v: proto::BouncerCreated = c
                .post(proto::OP_BOUNCERS, &proto::AddBouncer { name, site })
                .await
                .map_err(err)?;
            match format {
                SimpleFormat::Json => print_json(&v),
                SimpleFormat::Human => {
                    println!(
                        "bouncer {} added; its API key (shown once, keep it):",
                        v.bouncer.name
                    );
                    println!("{}", v.key);
                    println!("in the bouncer's configuration: api_key: <the key>, api_url: http://<the orchestrator's --bouncer-listen address>/");
                }
            }
        }
        BouncerAction::List => {
            let l: proto::BouncerList = c.get_query(proto::OP_BOUNCERS, &[]).await.map_err(err)?;
            match format {
                SimpleFormat::Json => print_json(&l.bouncers),
                SimpleFormat::Human => {
                    if l.bouncers.is_empty() {
                        println!("no bouncer");
                    }
                    for b in &l.bouncers {
                        println!("{}", line(b));
                    }
                }
            }
        }
        BouncerAction::Delete { name } => {
            let v: proto::BouncerView = c
                .delete(&format!("{}/{name}", proto::OP_BOUNCERS))
                .await
                .map_err(err)?;
            match format {
                SimpleFormat::Json => print_json(&v),
                SimpleFormat::Human => {
                    println!("bouncer {} deleted: its key is refused from now on", v.name)
                }
            }
        }
    }
    Ok(Exit::Ok)
}

/// `vacsine decisions [--site S] [--active]`, `add`, `delete ID`.
pub async fn decisions(a: DecisionsCli) -> miette::Result<Exit> {
    let (site, active, format) = (a.site, a.active, a.format);
    let c = client(&a.conn)?;
    match a.action {
        Some(DecisionsAction::Add {
            ip,
            duration,
            scope,
            reason,
        }) => decision_add(&c, ip, duration, &scope, reason, format).await,
        Some(DecisionsAction::Delete { id }) => decision_delete(&c, &id, format).await,
        None => decisions_list(&c, site, active, format).await,
    }
}

/// `vacsine decisions add IP`: a ban at the sites of `scope` (`all`, or names).
async fn decision_add(
    c: &vacsine_contract::client::OperatorClient,
    ip: String,
    duration: String,
    scope: &str,
    reason: Option<String>,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let sites: Vec<String> = if scope.trim() == "all" {
        vec![]
    } else {
        scope
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let v: proto::DecisionView = c
        .post(
            proto::OP_DECISIONS,
            &proto::AddDecision {
                ip,
                duration,
                sites,
                reason,
            },
        )
        .await
        .map_err(err)?;
    match format {
        SimpleFormat::Json => print_json(&v),
        SimpleFormat::Human => println!(
            "decision {}: {} until {} at {}",
            v.id,
            v.action,
            v.expires_at.as_deref().unwrap_or("deleted"),
            scope_text(&v.scope)
        ),
    }
    Ok(Exit::Ok)
}

/// `vacsine decisions delete ID`.
async fn decision_delete(
    c: &vacsine_contract::client::OperatorClient,
    id: &str,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let v: proto::DecisionView = c
        .delete(&format!("{}/{id}", proto::OP_DECISIONS))
        .await
        .map_err(err)?;
    match format {
        SimpleFormat::Json => print_json(&v),
        SimpleFormat::Human => println!(
            "decision {} ({}) deleted: lifted at {} at their next poll",
            v.id,
            v.action,
            scope_text(&v.scope)
        ),
    }
    Ok(Exit::Ok)
}

/// `vacsine decisions [--site S] [--active]`: the decisions, one line each.
async fn decisions_list(
    c: &vacsine_contract::client::OperatorClient,
    site: Option<String>,
    active: bool,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let mut q = Vec::new();
    if let Some(s) = site {
        q.push(("site", s));
    }
    if active {
        q.push(("active", "true".to_string()));
    }
    let l: proto::DecisionList = c.get_query(proto::OP_DECISIONS, &q).await.map_err(err)?;
    match format {
        SimpleFormat::Json => print_json(&l.decisions),
        SimpleFormat::Human => {
            if l.decisions.is_empty() {
                println!("no decision");
            }
            let now = chrono::Utc::now();
            for v in &l.decisions {
                println!("{}", decision_line(v, now));
            }
        }
    }
    Ok(Exit::Ok)
}

/// One decision for people: id, state, action, scope, time left, origin, where in effect.
fn decision_line(v: &proto::DecisionView, now: chrono::DateTime<chrono::Utc>) -> String {
    let left = v
        .expires_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc) - now)
        .filter(|d| d.num_seconds() > 0)
        .map(|d| format!("{}h{:02}m left", d.num_hours(), d.num_minutes() % 60))
        .unwrap_or_default();
    let applied: Vec<String> = v
        .applied
        .keys()
        .map(|s| format!("{s} ({} ms)", v.mitigated_ms.get(s).copied().unwrap_or(0)))
        .collect();
    format!(
        "{} {:<8} {} at {}: {} | origin {}@{} | in effect at: {}",
        v.id.get(..12).unwrap_or(&v.id),
        v.state,
        v.action,
        scope_text(&v.scope),
        left,
        v.decision.origin.response,
        v.origin_site.as_deref().unwrap_or("orchestrator"),
        if let Some(why) = &v.refused {
            format!("none: refused, not signed when made ({why})")
        } else if applied.is_empty() {
            "no site yet".to_string()
        } else {
            applied.join(", ")
        }
    )
}

fn scope_text(scope: &[String]) -> String {
    if scope.is_empty() {
        "every site".into()
    } else {
        scope.join(", ")
    }
}

/// `vacsine events [--site S] [--limit N]`.
pub async fn events(
    site: Option<String>,
    limit: usize,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let c = client(conn)?;
    let mut q = vec![("limit", limit.to_string())];
    if let Some(s) = site {
        q.push(("site", s));
    }
    let l: proto::EventList = c.get_query(proto::OP_EVENTS, &q).await.map_err(err)?;
    match format {
        SimpleFormat::Json => print_json(&l.events),
        SimpleFormat::Human => {
            if l.events.is_empty() {
                println!("no event");
            }
            for e in &l.events {
                let obs: Vec<String> = e.event.observables.iter().map(|o| o.to_string()).collect();
                println!(
                    "{} {} {} {} {}: {} [{}]",
                    e.received_at,
                    e.site,
                    e.event.kind.as_str(),
                    e.event.source,
                    e.event.severity.as_str(),
                    e.event.summary,
                    obs.join(", ")
                );
            }
        }
    }
    Ok(Exit::Ok)
}
