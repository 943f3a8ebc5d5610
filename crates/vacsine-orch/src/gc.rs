//! Retention applied: one pass over the orchestrator's store, or over an agent's data folder,
//! with [`crate::retention::plan`] deciding which ended runs go. Run periodically by the
//! orchestrator and the agent ([`Schedule`]) and on demand by `vacsine gc`.
//!
//! An agent's folder holds, besides its journal (`journal.db`), `agent.db`: the outbox (items
//! acknowledged by the orchestrator are removed after a day, or with their run's end; items
//! not yet uploaded and items refused for good are never removed), verified bundles (older
//! ones than the policy's age go, but never the latest of a workflow and its versions) and
//! trigger dedupe windows (removed once they expired).
//!
//! Nothing not yet uploaded is removed: a journal run whose items wait in the outbox (or
//! were refused and are kept) is *held*, whatever the limits; the report says when held runs
//! alone keep a limit exceeded.

use crate::retention::{self, Candidate, Plan, Policy, Reason};
use crate::store::Store;
use anyhow::Context;
use rusqlite::OptionalExtension;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// When retention runs by itself, and with what policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub policy: Policy,
    /// Between two passes; zero: never by itself (only `vacsine gc`).
    pub every: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            policy: Policy::default(),
            every: Duration::from_secs(retention::DEFAULT_EVERY_SECS),
        }
    }
}

/// The first pass after a start waits this long (the process settles first).
pub const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);

/// What one pass did (or, dry, would do) to the runs of one store.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunsPart {
    /// Ended runs found.
    pub ended: u64,
    /// Removed (or to remove), by reason.
    pub removed: u64,
    pub by_age: u64,
    pub by_count: u64,
    pub by_size: u64,
    /// Bytes of the runs removed (jobs and records).
    pub removed_bytes: u64,
    /// Records removed with them (0 in a dry run).
    pub removed_records: u64,
    /// Ended runs and their bytes kept.
    pub kept: u64,
    pub kept_bytes: u64,
    /// Runs never removed: not yet uploaded, refused and kept, or ended minutes ago.
    pub held: u64,
    /// A limit is still exceeded because of held runs or the newest per group.
    pub over_limit_held: bool,
    /// Bytes the file(s) shrank by (0 in a dry run, and on PostgreSQL).
    pub reclaimed_bytes: u64,
}

impl RunsPart {
    fn from_plan(ended: usize, p: &Plan) -> Self {
        RunsPart {
            ended: ended as u64,
            removed: p.remove.len() as u64,
            by_age: p.count(Reason::Age) as u64,
            by_count: p.count(Reason::Count) as u64,
            by_size: p.count(Reason::Size) as u64,
            removed_bytes: p.remove_bytes,
            kept: p.kept_runs,
            kept_bytes: p.kept_bytes,
            held: p.held,
            over_limit_held: p.over_limit_held,
            ..Default::default()
        }
    }
}

/// A pass over the orchestrator's store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    pub store: String,
    pub dry_run: bool,
    pub policy: Policy,
    pub runs: RunsPart,
}

/// Apply `policy` to the orchestrator's store at `now_ms` (with `dry_run`, only say what
/// would go).
pub async fn store_pass(
    store: &dyn Store,
    what: &str,
    policy: &Policy,
    now_ms: i64,
    dry_run: bool,
) -> anyhow::Result<StoreReport> {
    let cands = store.ended_runs().await?;
    let plan = retention::plan(policy, &cands, now_ms);
    let mut runs = RunsPart::from_plan(cands.len(), &plan);
    if !dry_run && !plan.remove.is_empty() {
        let r = store.remove_runs(&plan.ids()).await?;
        runs.removed = r.runs;
        runs.removed_records = r.records;
        runs.reclaimed_bytes = r.reclaimed_bytes;
    }
    Ok(StoreReport {
        store: what.to_string(),
        dry_run,
        policy: *policy,
        runs,
    })
}

/// What one pass did to an agent's `agent.db` besides its journal.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AgentDbPart {
    /// Acknowledged outbox items removed (older than a day).
    pub outbox_acknowledged_removed: u64,
    /// Items waiting to be uploaded: never removed.
    pub outbox_pending: u64,
    /// Items refused for good by the orchestrator: kept (`vacsine agent status`).
    pub outbox_refused: u64,
    /// Verified bundles removed (older than the age limit, never a workflow's latest).
    pub bundles_removed: u64,
    /// Expired trigger dedupe windows removed.
    pub trigger_windows_removed: u64,
    /// Bytes `agent.db` shrank by.
    pub reclaimed_bytes: u64,
}

/// A pass over an agent's data folder.
#[derive(Debug, Clone, Serialize)]
pub struct AgentReport {
    pub data: PathBuf,
    pub dry_run: bool,
    pub policy: Policy,
    /// The journal's runs (`journal.db`); grouped by workflow for the newest kept.
    pub journal: RunsPart,
    pub agent_db: AgentDbPart,
}

/// Whether `dir` is an agent's data folder (`agent.db`, its identity or its journal).
pub fn is_agent_data(dir: &Path) -> bool {
    ["agent.db", "agent.json", "journal.db"]
        .iter()
        .any(|f| dir.join(f).exists())
}

/// The journal runs with items in the outbox not acknowledged (waiting, or refused and
/// kept): an item names its run (the orchestrator's id) and, for a record, the engine run
/// first in its key.
fn unacknowledged_runs(agent_db: &Path) -> anyhow::Result<HashSet<String>> {
    let mut held = HashSet::new();
    if !agent_db.exists() {
        return Ok(held);
    }
    let c = open(agent_db)?;
    if !has_table(&c, "outbox")? {
        return Ok(held);
    }
    let mut st = c.prepare("SELECT run_id, key FROM outbox WHERE sent_ms IS NULL")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (run, key) = row?;
        held.insert(run);
        if let Some(first) = key.split('/').next() {
            held.insert(first.to_string());
        }
        // `autonomous/RUN`, `finish/RUN`: the run is the second part.
        if let Some(second) = key.split('/').nth(1) {
            held.insert(second.to_string());
        }
    }
    Ok(held)
}

fn open(p: &Path) -> anyhow::Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open(p).with_context(|| format!("opening {}", p.display()))?;
    c.busy_timeout(Duration::from_secs(10))?;
    Ok(c)
}

fn has_table(c: &rusqlite::Connection, t: &str) -> anyhow::Result<bool> {
    Ok(c.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [t],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

/// Apply `policy` to the agent's data folder `data` at `now_ms`.
pub fn agent_pass(
    data: &Path,
    policy: &Policy,
    now_ms: i64,
    dry_run: bool,
) -> anyhow::Result<AgentReport> {
    let agent_db = data.join("agent.db");
    let journal_path = data.join("journal.db");
    // Read before the journal: an item queued meanwhile belongs to a run that ended
    // minutes ago, which the plan holds anyway.
    let held = unacknowledged_runs(&agent_db)?;
    let mut journal = RunsPart::default();
    if journal_path.exists() {
        let j = vacsine_engine::Journal::open(&journal_path)
            .with_context(|| format!("opening {}", journal_path.display()))?;
        let cands: Vec<Candidate> = j
            .ended_runs()?
            .into_iter()
            .map(|r| Candidate {
                held: held.contains(&r.id),
                ended_ms: chrono::DateTime::parse_from_rfc3339(&r.finished_at)
                    .map(|t| t.timestamp_millis())
                    // An end that cannot be read counts as now: kept by age.
                    .unwrap_or(now_ms),
                id: r.id,
                group: r.workflow,
                bytes: r.bytes,
            })
            .collect();
        let plan = retention::plan(policy, &cands, now_ms);
        journal = RunsPart::from_plan(cands.len(), &plan);
        if !dry_run && !plan.remove.is_empty() {
            let (runs, records) = j.remove_runs(&plan.ids())?;
            journal.removed = runs;
            journal.removed_records = records;
            drop(j);
            journal.reclaimed_bytes = vacsine_engine::reclaim_space(&journal_path)?;
        }
    }
    let agent_db_part = if agent_db.exists() {
        agent_db_pass(&agent_db, policy, now_ms, dry_run)?
    } else {
        AgentDbPart::default()
    };
    Ok(AgentReport {
        data: data.to_path_buf(),
        dry_run,
        policy: *policy,
        journal,
        agent_db: agent_db_part,
    })
}

fn agent_db_pass(
    p: &Path,
    policy: &Policy,
    now_ms: i64,
    dry_run: bool,
) -> anyhow::Result<AgentDbPart> {
    let mut out = AgentDbPart::default();
    let mut c = open(p)?;
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // `COUNT(*)` of what a `DELETE` would remove, or the `DELETE` itself.
    let apply = |tx: &rusqlite::Transaction<'_>, table: &str, cond: &str, args: &[i64]| {
        let sql = if dry_run {
            format!("SELECT COUNT(*) FROM {table} WHERE {cond}")
        } else {
            format!("DELETE FROM {table} WHERE {cond}")
        };
        let args = rusqlite::params_from_iter(args.iter());
        if dry_run {
            tx.query_row(&sql, args, |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
        } else {
            tx.execute(&sql, args).map(|n| n as u64)
        }
    };
    if has_table(&tx, "outbox")? {
        out.outbox_acknowledged_removed = apply(
            &tx,
            "outbox",
            "sent_ms IS NOT NULL AND sent_ms < ?1",
            &[now_ms - crate::agent::KEEP_SENT_MS],
        )?;
        let count = |sql: &str| {
            tx.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
        };
        out.outbox_pending =
            count("SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL AND refused IS NULL")?;
        out.outbox_refused =
            count("SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL AND refused IS NOT NULL")?;
    }
    if has_table(&tx, "bundles")? && policy.max_age_ms > 0 {
        out.bundles_removed = apply(
            &tx,
            "bundles",
            "verified_ms < ?1 AND rowid NOT IN
               (SELECT (SELECT b2.rowid FROM bundles b2
                        WHERE b2.workflow = b.workflow AND b2.versions = b.versions
                        ORDER BY b2.verified_ms DESC, b2.rowid DESC LIMIT 1)
                FROM bundles b GROUP BY b.workflow, b.versions)",
            &[now_ms - policy.max_age_ms],
        )?;
    }
    if has_table(&tx, "trigger_dedupe")? {
        out.trigger_windows_removed = apply(&tx, "trigger_dedupe", "until_ms < ?1", &[now_ms])?;
    }
    tx.commit()?;
    drop(c);
    let removed =
        out.outbox_acknowledged_removed + out.bundles_removed + out.trigger_windows_removed;
    if !dry_run && removed > 0 {
        out.reclaimed_bytes = vacsine_engine::reclaim_space(p)?;
    }
    Ok(out)
}

/// `n` bytes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// One line of a pass over runs, for logs and `vacsine gc`.
pub fn runs_line(what: &str, r: &RunsPart, dry_run: bool) -> String {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut s = format!(
        "{what}: {verb} {} of {} ended run(s) ({} by age, {} by count, {} by size; {}",
        r.removed,
        r.ended,
        r.by_age,
        r.by_count,
        r.by_size,
        human_bytes(r.removed_bytes)
    );
    if !dry_run {
        s.push_str(&format!(
            ", {} record(s); file(s) {} smaller",
            r.removed_records,
            human_bytes(r.reclaimed_bytes)
        ));
    }
    s.push_str(&format!(
        "); kept {} ({}), {} held",
        r.kept,
        human_bytes(r.kept_bytes),
        r.held
    ));
    if r.over_limit_held {
        s.push_str(
            "; still over a limit: the rest is not uploaded yet, or among the newest kept (nothing not uploaded is ever removed)",
        );
    }
    s
}

/// The orchestrator's periodic pass: every `sched.every`, logged with its counts.
pub async fn store_task(store: std::sync::Arc<dyn Store>, sched: Schedule) {
    if sched.every.is_zero() {
        return;
    }
    tokio::time::sleep(FIRST_PASS_AFTER.min(sched.every)).await;
    loop {
        match store_pass(&*store, "store", &sched.policy, crate::now_ms(), false).await {
            Ok(r) if r.runs.removed > 0 || r.runs.over_limit_held => {
                tracing::info!("retention: {}", runs_line("runs", &r.runs, false))
            }
            Ok(r) => tracing::debug!("retention: {}", runs_line("runs", &r.runs, false)),
            Err(e) => tracing::warn!("retention: {e:#} (tried again in {:?})", sched.every),
        }
        tokio::time::sleep(sched.every).await;
    }
}

/// The agent's periodic pass over its data folder: every `sched.every`, logged with its
/// counts (the work is blocking: on a thread of its own).
pub async fn agent_task(data: PathBuf, sched: Schedule) {
    if sched.every.is_zero() {
        return;
    }
    tokio::time::sleep(FIRST_PASS_AFTER.min(sched.every)).await;
    loop {
        let d = data.clone();
        let policy = sched.policy;
        let r =
            tokio::task::spawn_blocking(move || agent_pass(&d, &policy, crate::now_ms(), false))
                .await;
        match r {
            Ok(Ok(r)) => {
                let removed = r.journal.removed
                    + r.agent_db.outbox_acknowledged_removed
                    + r.agent_db.bundles_removed
                    + r.agent_db.trigger_windows_removed;
                if removed > 0 || r.journal.over_limit_held {
                    eprintln!(
                        "retention: {}; agent.db: {} acknowledged outbox item(s), {} bundle(s), {} trigger window(s) removed, {} item(s) waiting to upload kept",
                        runs_line("journal", &r.journal, false),
                        r.agent_db.outbox_acknowledged_removed,
                        r.agent_db.bundles_removed,
                        r.agent_db.trigger_windows_removed,
                        r.agent_db.outbox_pending
                    );
                }
            }
            Ok(Err(e)) => eprintln!(
                "warning: retention: {e:#} (tried again in {:?})",
                sched.every
            ),
            Err(e) => eprintln!("warning: retention: {e}"),
        }
        tokio::time::sleep(sched.every).await;
    }
}
