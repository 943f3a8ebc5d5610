//! Adaptive response at a site (issue 16): events read with `vacsine_events` become
//! decisions over the `kind: Response` documents of the registry bundle this agent holds
//! (verified with the key pinned at enrolment), are applied at once as elements of the
//! `nftset` sets (one `nft -f -` transaction, by diff, argv only), recorded with their reason
//! in the site's response store (`responses.db`), and queued in the outbox for upload (each
//! once, by its idempotency key). Nothing here needs the orchestrator: it works while the
//! site is cut off.
//!
//! The same reconcile serves the decision sets the orchestrator sends on the long poll
//! ([`apply_set`]) and the agent's start ([`reapply`]): the desired state is every active
//! decision in the store, the applied state is what nft lists, and only the difference is
//! written; an element present and right is never touched, so nothing is flushed.

use crate::Outbox;
use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;
use vacsine_contract::decisions::DecisionSet;
use vacsine_contract::proto::SiteDecision;
use vacsine_core::node::NodeOps;
use vacsine_engine::LocalNode;
use vacsine_events::{Event, Format};
use vacsine_response::reconcile::TABLE;
use vacsine_response::{
    reconcile, render_nft, AllowList, AppliedElement, Context as DecideContext, Decider, Decision,
    EventOrigin, IpNet, Outcome, Store, Verdict,
};

/// The outbox's `run_id` of response items (they belong to no run).
const OUTBOX_RUN: &str = "responses";

/// The site's response store.
pub fn store_path(data: &Path) -> std::path::PathBuf {
    data.join("responses.db")
}

/// What one intake did.
#[derive(Debug, serde::Serialize)]
pub struct IngestReport {
    pub site: String,
    /// Events read (good records).
    pub events: usize,
    /// Events not seen before.
    pub new_events: usize,
    /// Well-formed records that are not events.
    pub skipped: usize,
    /// Located refusals (`line N[, column C]: …`), one per bad record.
    pub errors: Vec<String>,
    /// Every outcome, with its reason.
    pub outcomes: Vec<Outcome>,
    /// Decisions made by this intake and in effect, with when.
    pub applied: Vec<AppliedDecision>,
    /// Elements added and deleted in the nft sets.
    pub added: usize,
    pub deleted: usize,
    /// Milliseconds from reading the input to the bans in effect.
    pub took_ms: u128,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AppliedDecision {
    pub id: String,
    pub action: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub event_at: Option<DateTime<Utc>>,
    pub decided_at: DateTime<Utc>,
    pub applied_at: DateTime<Utc>,
}

/// Read `bytes` in `format`, decide, apply, record and queue.
pub async fn ingest(data: &Path, format: Format, bytes: &[u8]) -> anyhow::Result<IngestReport> {
    let t0 = Instant::now();
    let held = crate::autonomous::held(data)?;
    let parsed = vacsine_events::parse(format, bytes).at_site(&held.site);
    ingest_held(data, held, parsed, t0).await
}

/// Events made at this site by the agent itself (a schedule's `requirement_changed` drift, a
/// scan's new open port), through the same path as [`ingest`]: decided on, applied, recorded
/// and queued for upload, also while the site is cut off.
pub async fn ingest_events(data: &Path, events: Vec<Event>) -> anyhow::Result<IngestReport> {
    let t0 = Instant::now();
    let held = crate::autonomous::held(data)?;
    let parsed = vacsine_events::Parsed {
        events,
        errors: Vec::new(),
        skipped: 0,
    }
    .at_site(&held.site);
    ingest_held(data, held, parsed, t0).await
}

async fn ingest_held(
    data: &Path,
    held: crate::autonomous::Held,
    parsed: vacsine_events::Parsed,
    t0: Instant,
) -> anyhow::Result<IngestReport> {
    let site = held.site.clone();
    let errors: Vec<String> = parsed.errors.iter().map(|e| e.to_string()).collect();
    let allow = allow_list(data);
    let mut store = Store::open(&store_path(data))
        .with_context(|| format!("opening {}", store_path(data).display()))?;
    let mut windows = store.load_windows()?;
    let now = Utc::now();
    let labels = site_labels(data);
    let cx = DecideContext {
        now,
        site: &site,
        site_labels: &labels,
        decider: Decider::Site,
        allow: &allow,
        origin: EventOrigin::External,
    };
    let mut batch: Vec<(Event, Vec<Outcome>)> = Vec::with_capacity(parsed.events.len());
    for e in parsed.events {
        let o = vacsine_response::decide(&held.responses, &e, &cx, &mut windows);
        batch.push((e, o));
    }
    let new_events = store.ingest(&batch, now)?;
    store.save_windows(&windows)?;
    // Queued for upload before anything is applied: every event (one transaction).
    let outbox = Outbox::open(&data.join("agent.db"))?;
    let mut items = Vec::with_capacity(batch.len());
    for (e, _) in &batch {
        items.push((
            format!("event:{}", e.id),
            OUTBOX_RUN,
            "event",
            serde_json::to_string(e)?,
        ));
    }
    outbox.put_many(&items)?;
    // A failed apply still queues the decisions (not in effect here: no applied time; the
    // next apply, at the agent's start or the next decision set, puts them in effect).
    let applied = apply(&mut store).await;
    // An autonomous quarantine acts at once too.
    quarantine_held(data, &store).await;
    let mut made = Vec::new();
    for (_, outcomes) in &batch {
        for o in outcomes {
            if let Verdict::Decided { decision } = &o.verdict {
                made.push(decision.id.clone());
            }
        }
    }
    made.sort();
    made.dedup();
    let mut report_applied = Vec::new();
    for id in &made {
        // In effect (by this apply, or by the running agent's, which may have reconciled
        // in between).
        if let Some(d) = queue_decision(&store, &outbox, id, &site)? {
            report_applied.push(d);
        }
    }
    let applied = applied.context("the decisions are recorded and queued, not in effect here")?;
    Ok(IngestReport {
        site,
        events: batch.len(),
        new_events,
        skipped: parsed.skipped,
        errors,
        outcomes: batch.into_iter().flat_map(|(_, o)| o).collect(),
        applied: report_applied,
        added: applied.added,
        deleted: applied.deleted,
        took_ms: t0.elapsed().as_millis(),
    })
}

/// Where the site's labels are kept (from the last verified decision set).
fn labels_path(data: &Path) -> std::path::PathBuf {
    data.join("site-labels.json")
}

/// Keep the site's labels, from a verified decision set (written only when they changed).
pub fn save_labels(
    data: &Path,
    labels: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    if &site_labels(data) == labels && (labels.is_empty() || labels_path(data).exists()) {
        return Ok(());
    }
    let p = labels_path(data);
    vacsine_private::write_private(&p, serde_json::to_string(labels)?.as_bytes())
        .with_context(|| format!("writing {}", p.display()))
}

/// The site's labels as last received, signed, from the orchestrator (none before).
pub fn site_labels(data: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read(labels_path(data))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Queue decision `id` as this site holds it (times included) for upload, once per site.
fn queue_decision(
    store: &Store,
    outbox: &Outbox,
    id: &str,
    site: &str,
) -> anyhow::Result<Option<AppliedDecision>> {
    let Some(sd) = store.decision(id)? else {
        return Ok(None);
    };
    let up = SiteDecision {
        decision: sd.decision.clone(),
        event_ms: sd.event_at.map(|t| t.timestamp_millis()),
        decided_ms: sd.decided_at.timestamp_millis(),
        applied_ms: sd.applied_at.map(|t| t.timestamp_millis()),
    };
    let key = format!(
        "decision:{id}@{site}{}",
        if up.applied_ms.is_some() {
            ""
        } else {
            ":pending"
        }
    );
    outbox.put(&key, OUTBOX_RUN, "decision", &serde_json::to_string(&up)?)?;
    Ok(sd.applied_at.map(|applied_at| AppliedDecision {
        id: id.to_string(),
        action: sd.decision.action.to_string(),
        expires_at: sd.decision.expires_at,
        event_at: sd.event_at,
        decided_at: sd.decided_at,
        applied_at,
    }))
}

/// What an apply changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// Decisions in effect since this apply.
    pub ids: Vec<String>,
    pub added: usize,
    pub deleted: usize,
}

/// Make the nft sets hold exactly the store's active bans, by diff, in one transaction; mark
/// the decisions now in effect as applied.
pub async fn apply(store: &mut Store) -> anyhow::Result<Applied> {
    let node = LocalNode::new("local");
    let mut last = None;
    for _ in 0..3 {
        let now = Utc::now();
        store.expire(now)?;
        // Only bans are elements of the sets (a quarantine is run by `quarantine_held`).
        let active: Vec<Decision> = store
            .active(now)?
            .into_iter()
            .filter(IsBan::action_is_ban)
            .collect();
        if active.is_empty() && store.counts()?.2 == 0 {
            // Never a decision here: nothing to enforce, and nft need not even be present.
            return Ok(Applied::default());
        }
        let ruleset = node
            .nft_ruleset()
            .await
            .map_err(|e| anyhow!("reading the nft ruleset: {e}"))?;
        let present = ruleset
            .lines()
            .any(|l| l.trim_end() == format!("table inet {TABLE} {{"));
        let listed: Vec<AppliedElement> =
            vacsine_engine::executor::decisions_listed(&ruleset, TABLE)
                .into_iter()
                .filter_map(|(n, left)| {
                    n.parse::<IpNet>()
                        .ok()
                        .map(|net| AppliedElement { net, left })
                })
                .collect();
        let diff = reconcile(&active, &listed, now);
        let mut out = Applied {
            added: diff.add.len(),
            deleted: diff.delete.len(),
            ..Default::default()
        };
        if !diff.is_empty() || (!present && !active.is_empty()) {
            let mut script =
                vacsine_engine::executor::decisions_skeleton(TABLE).map_err(|e| anyhow!(e))?;
            script.push_str(&render_nft(&diff));
            if let Err(e) = node.nft_apply(&script).await {
                // An element that expired between the listing and the change: listed again.
                last = Some(anyhow!("applying decisions with nft: {e}"));
                continue;
            }
        }
        let at = Utc::now();
        for d in &active {
            if d.action_is_ban() && store.mark_applied(&d.id, at)? {
                out.ids.push(d.id.clone());
            }
        }
        return Ok(out);
    }
    Err(last.unwrap_or_else(|| anyhow!("applying decisions with nft failed")))
}

trait IsBan {
    fn action_is_ban(&self) -> bool;
}

impl IsBan for Decision {
    fn action_is_ban(&self) -> bool {
        matches!(self.action, vacsine_response::Action::Ban { .. })
    }
}

/// At the agent's start: the active decisions applied again (by diff; nothing flushed); one
/// in effect here for the first time (its apply had failed) is acknowledged with when.
pub async fn reapply(data: &Path, site: &str) -> anyhow::Result<Applied> {
    let mut store = Store::open(&store_path(data))?;
    quarantine_held(data, &store).await;
    release_lifted(data, &store).await;
    let applied = apply(&mut store).await?;
    let outbox = Outbox::open(&data.join("agent.db"))?;
    for id in &applied.ids {
        queue_decision(&store, &outbox, id, site)?;
    }
    Ok(applied)
}

/// A verified decision set from the orchestrator: its decisions kept (a decision held
/// already, e.g. made here, is left alone), those deleted by hand marked so, the sets
/// reconciled by diff, and each decision newly in effect here acknowledged through the
/// outbox with when.
pub async fn apply_set(data: &Path, site: &str, set: &DecisionSet) -> anyhow::Result<Applied> {
    let mut store = Store::open(&store_path(data))?;
    let now = Utc::now();
    // No decision touches this site's own or the orchestrator's addresses, nor loopback,
    // unspecified, multicast or too broad a network, wherever it was made: such a one is
    // refused here, said, and not kept.
    let allow = allow_list(data);
    for d in &set.active {
        if let vacsine_response::Action::Ban { net } = &d.action {
            if let Some(why) = allow
                .refuses(net)
                .or_else(|| vacsine_response::decide::unbannable(net))
            {
                if store.decision(&d.id)?.is_none() {
                    eprintln!(
                        "decisions: {} ({}) from the orchestrator refused here: {why}",
                        d.id, d.action
                    );
                }
                continue;
            }
        }
        store.insert_decision(d, None)?;
    }
    for id in &set.deleted {
        store.mark_deleted(id, now)?;
    }
    quarantine_held(data, &store).await;
    release_lifted(data, &store).await;
    let applied = apply(&mut store).await?;
    let outbox = Outbox::open(&data.join("agent.db"))?;
    for id in &applied.ids {
        queue_decision(&store, &outbox, id, site)?;
    }
    Ok(applied)
}

/// Every active quarantine decision this site holds and has not run yet, run once through the
/// `quarantine` executor on its node: a Docker container of this machine named as the node
/// (the agent's node driver for quarantine). Each run is journaled in the agent's
/// `journal.db`; a decision whose run succeeded is marked applied (its applied time uploaded
/// like a ban's) and never run again, also across restarts; one that failed is said and tried
/// again at the next decision set or start.
pub async fn quarantine_held(data: &Path, store: &Store) {
    let now = Utc::now();
    let Ok(active) = store.active(now) else {
        return;
    };
    for d in active {
        let vacsine_response::Action::Quarantine { node } = &d.action else {
            continue;
        };
        if store
            .decision(&d.id)
            .ok()
            .flatten()
            .is_some_and(|s| s.applied_at.is_some())
        {
            continue;
        }
        match quarantine_node(data, node).await {
            Ok((run_id, msg)) => {
                let at = Utc::now();
                if let Err(e) = store.record_quarantine_run(&d.id, &run_id) {
                    eprintln!(
                        "decisions: {} ran (run {run_id}) but its run cannot be recorded for the release: {e}",
                        d.id
                    );
                }
                if let Err(e) = store.mark_applied(&d.id, at) {
                    eprintln!("decisions: {} ran but cannot be recorded: {e}", d.id);
                    continue;
                }
                eprintln!("decisions: {} ({}) run here: {msg}", d.id, d.action);
                if let (Ok(outbox), Ok(Some(id))) = (
                    Outbox::open(&data.join("agent.db")),
                    crate::load_identity(&data.join("agent.json")),
                ) {
                    let _ = queue_decision(store, &outbox, &d.id, &id.site);
                }
            }
            Err(e) => eprintln!("error: decision {} ({}): {e:#}", d.id, d.action),
        }
    }
}

/// Quarantines carried out here whose decision is lifted (deleted by hand at the
/// orchestrator, or expired): each node released once by rolling back the run that cut it off
/// (the `quarantine` executor's undo reconnects it to the networks it was taken off), journaled
/// like the quarantine; one that fails is said and tried again at the next decision set or
/// start.
pub async fn release_lifted(data: &Path, store: &Store) {
    let Ok(lifted) = store.lifted_quarantines(Utc::now()) else {
        return;
    };
    for (d, run_id) in lifted {
        let vacsine_response::Action::Quarantine { node } = &d.action else {
            continue;
        };
        match release_node(data, node, &run_id).await {
            Ok(()) => {
                let _ = store.mark_released(&d.id, Utc::now());
                eprintln!(
                    "decisions: {} lifted: node {node} released (run {run_id} rolled back)",
                    d.id
                );
            }
            Err(e) => eprintln!("error: releasing node {node} of decision {}: {e:#}", d.id),
        }
    }
}

/// The node of container `node` as the engine drives it.
async fn docker_node(node: &str) -> anyhow::Result<vacsine_docker::DockerNode> {
    // The name comes from an event: only a container name reaches Docker's API.
    let valid = node.len() <= 128
        && node
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        bail!(
            "node {:?} is not a container name (letters, digits, `_`, `.`, `-`)",
            node.chars().take(80).collect::<String>()
        );
    }
    let docker = vacsine_docker::connect()
        .await
        .map_err(|e| anyhow!("quarantine needs Docker at this site: {e}"))?;
    let resolved = vacsine_core::target::ResolvedNode {
        name: node.to_string(),
        roles: vec![],
        labels: Default::default(),
        handle: node.to_string(),
    };
    let dn = vacsine_docker::DockerNode::new(docker, resolved);
    dn.inspect()
        .await
        .map_err(|e| anyhow!("node {node:?} is not a container of this site's Docker ({e})"))?;
    Ok(dn)
}

/// Roll back quarantine run `run_id` of `node`.
async fn release_node(data: &Path, node: &str, run_id: &str) -> anyhow::Result<()> {
    use std::sync::Arc;
    use vacsine_engine::{Catalog, Engine, Journal, NodeMap};
    let dn = docker_node(node).await?;
    let journal = Journal::open(&data.join("journal.db")).context("opening the agent's journal")?;
    let engine = Engine::new(journal, Catalog::new());
    let mut nodes = NodeMap::new();
    nodes.insert(node.to_string(), Arc::new(dn));
    let report = engine.rollback(run_id, nodes).await?;
    if report.status != vacsine_engine::RunStatus::RolledBack {
        bail!(
            "the rollback of run {run_id} {}: {}",
            report.status,
            report.message.unwrap_or_default()
        );
    }
    Ok(())
}

/// Run the `quarantine` executor on `node` (a Docker container here), journaled as a run of a
/// one-step workflow; its run id and what it did.
async fn quarantine_node(data: &Path, node: &str) -> anyhow::Result<(String, String)> {
    use std::sync::Arc;
    use vacsine_engine::{CancelToken, Catalog, Engine, Journal, NodeMap, RunRequest};
    let dn = docker_node(node)
        .await
        .map_err(|e| anyhow!("{e:#}: not quarantined"))?;
    let workflow: vacsine_core::workflow::Workflow = serde_json::from_value(serde_json::json!({
        "apiVersion": vacsine_core::API_VERSION,
        "kind": "Workflow",
        "metadata": {"name": "decision-quarantine"},
        "spec": {"steps": [{"id": "quarantine", "uses": "quarantine"}]}
    }))?;
    let journal = Journal::open(&data.join("journal.db")).context("opening the agent's journal")?;
    let engine = Engine::new(journal.clone(), Catalog::new());
    let mut nodes = NodeMap::new();
    nodes.insert(node.to_string(), Arc::new(dn));
    let report = engine
        .run(RunRequest {
            workflow,
            inputs: Default::default(),
            nodes,
            default_node: Some(node.to_string()),
            target_name: "decisions".into(),
            labels: Default::default(),
            progress: None,
            observer: None,
            cancel: CancelToken::new(),
            run_id: None,
        })
        .await?;
    let ok = report.status == vacsine_engine::RunStatus::Succeeded;
    let msg = report.message.clone().unwrap_or_default();
    if !ok {
        return Err(anyhow!(
            "the quarantine run {} {}: {msg}",
            report.run_id,
            report.status
        ));
    }
    let said = format!(
        "run {} succeeded{}",
        report.run_id,
        if msg.is_empty() {
            String::new()
        } else {
            format!(": {msg}")
        }
    );
    Ok((report.run_id, said))
}

/// Addresses no decision may touch: this machine's own (read from `/proc`, in the network
/// namespace the agent runs in) and the orchestrator's (the addresses in its URLs).
fn allow_list(data: &Path) -> AllowList {
    let mut a = AllowList {
        site_addresses: local_addresses(),
        ..Default::default()
    };
    if let Ok(Some(id)) = crate::load_identity(&data.join("agent.json")) {
        for url in id.orchestrator.split(',') {
            if let Some(ip) = url_ip(url.trim()) {
                a.orchestrator_addresses.push(ip);
            }
        }
    }
    a
}

/// The literal IP address of a URL's host, if it is one.
fn url_ip(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next()?;
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h).parse().ok()
}

/// This namespace's local addresses: IPv4 from `/proc/net/fib_trie` (host LOCAL entries),
/// IPv6 from `/proc/net/if_inet6`.
fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/proc/net/fib_trie") {
        out.extend(fib_locals(&t));
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/if_inet6") {
        for l in t.lines() {
            let Some(hex) = l.split_whitespace().next() else {
                continue;
            };
            if let Ok(v) = u128::from_str_radix(hex, 16) {
                out.push(IpAddr::V6(v.into()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn fib_locals(t: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<IpAddr> = None;
    for l in t.lines() {
        let s = l.trim();
        if let Some(a) = s.strip_prefix("|-- ") {
            last = a.trim().parse().ok();
        } else if s.contains("host LOCAL") {
            if let Some(a) = last {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_quarantine_of_a_name_that_is_not_a_container_name_is_refused_before_docker() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../containers/x", "a b", "", "-x", "x;rm -rf /", "web\n"] {
            let e = quarantine_node(d.path(), bad).await.unwrap_err();
            assert!(
                format!("{e:#}").contains("is not a container name"),
                "{bad:?}: {e:#}"
            );
        }
        assert!(!d.path().join("journal.db").exists(), "something ran");
    }

    #[test]
    fn local_addresses_are_read_from_the_fib_trie_and_urls_give_their_ip() {
        let t = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.1.1.0\n        /30 link UNICAST\n     |-- 10.1.1.2\n        /32 host LOCAL\n";
        assert_eq!(fib_locals(t), vec!["10.1.1.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            url_ip("https://10.20.1.1:4443"),
            Some("10.20.1.1".parse().unwrap())
        );
        assert_eq!(
            url_ip("https://[2001:db8::1]:443/x"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(url_ip("https://orch.example:443"), None);
    }
}
