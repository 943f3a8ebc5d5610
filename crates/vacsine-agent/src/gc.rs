//! Retention applied to an agent's data folder: one pass, with
//! [`vacsine_engine::retention::plan`] deciding which ended runs go. Run periodically by the
//! agent ([`agent_task`]) and on demand by `vacsine gc --agent-data`.
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

use anyhow::Context;
use rusqlite::OptionalExtension;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vacsine_engine::retention::{
    self, runs_line, Candidate, Policy, RunsPart, Schedule, FIRST_PASS_AFTER,
};

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
    let c = vacsine_private::sqlite::open(p).context("opening a database")?;
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
            &[now_ms - crate::KEEP_SENT_MS],
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
        let r = tokio::task::spawn_blocking(move || {
            agent_pass(&d, &policy, vacsine_contract::now_ms(), false)
        })
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
