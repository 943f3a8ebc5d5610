//! Scheduled assessments at this site (issue 17): every `kind: Schedule` of the registry
//! bundle the agent holds (verified with the pinned key) whose scope holds this site is run
//! here when due — a pushed policy checked, a SCAP profile evaluated, the nodes scanned —
//! through the same drivers as `vacsine check` (the [`EnforceRunner`] seam). Nothing here
//! needs the orchestrator: while the site is cut off, schedules keep running from the bundle
//! held and their results wait in the outbox.
//!
//! Each assessment is compared with the previous one of the same schedule (kept in
//! `agent.db`): only what changed is uploaded (an `assessment` outbox item, once by its key
//! `assess/SCHEDULE/KIND/AT_MS`), a requirement that passed and now fails is a
//! `requirement_changed` event and a newly open port a `vulnerability` event, both fed to the
//! site's response path (`respond::ingest_events`) as if read by `vacsine agent ingest`.
//!
//! [`EnforceRunner`]: vacsine_contract::enforce::EnforceRunner

use crate::{respond, Shared};
use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vacsine_contract::bundle::BundleDocument;
use vacsine_contract::proto::VersionRef;
use vacsine_contract::schedule::{
    self, Assess, AssessKind, Assessed, AssessmentUpload, Item, Schedule,
};
use vacsine_events::Event;

/// How often the schedules held are looked at.
const TICK: Duration = Duration::from_secs(1);
/// The outbox's `run_id` of assessments (they belong to no run).
const OUTBOX_RUN: &str = "assessments";

/// What this agent last assessed for each schedule (in `agent.db`).
pub(crate) struct ScheduleState {
    conn: Mutex<Connection>,
}

impl ScheduleState {
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = vacsine_private::sqlite::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schedule_runs (
               schedule TEXT NOT NULL,
               kind TEXT NOT NULL,
               last_ms INTEGER NOT NULL,
               done_ms INTEGER,
               PRIMARY KEY (schedule, kind)
             );
             CREATE TABLE IF NOT EXISTS schedule_items (
               schedule TEXT NOT NULL,
               kind TEXT NOT NULL,
               node TEXT NOT NULL,
               item TEXT NOT NULL,
               outcome TEXT NOT NULL,
               evidence TEXT NOT NULL,
               PRIMARY KEY (schedule, kind, node, item)
             );",
        )?;
        Ok(ScheduleState {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| anyhow!("schedule state lock poisoned"))
    }

    /// When `schedule`'s `kind` was last started here.
    fn last(&self, schedule: &str, kind: AssessKind) -> anyhow::Result<Option<i64>> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT last_ms FROM schedule_runs WHERE schedule = ?1 AND kind = ?2",
                params![schedule, kind.as_str()],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn started(&self, schedule: &str, kind: AssessKind, at: i64) -> anyhow::Result<()> {
        self.lock()?.execute(
            "INSERT INTO schedule_runs (schedule, kind, last_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (schedule, kind) DO UPDATE SET last_ms = excluded.last_ms",
            params![schedule, kind.as_str(), at],
        )?;
        Ok(())
    }

    /// The results of the previous assessment made (`None`: none was).
    fn previous(&self, schedule: &str, kind: AssessKind) -> anyhow::Result<Option<Vec<Item>>> {
        let c = self.lock()?;
        let done: Option<Option<i64>> = c
            .query_row(
                "SELECT done_ms FROM schedule_runs WHERE schedule = ?1 AND kind = ?2",
                params![schedule, kind.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if done.flatten().is_none() {
            return Ok(None);
        }
        let mut st = c.prepare(
            "SELECT node, item, outcome, evidence FROM schedule_items
             WHERE schedule = ?1 AND kind = ?2 ORDER BY node, item",
        )?;
        let items = st
            .query_map(params![schedule, kind.as_str()], |r| {
                Ok(Item {
                    node: r.get(0)?,
                    item: r.get(1)?,
                    outcome: r.get(2)?,
                    evidence: r.get(3)?,
                    title: None,
                    severity: None,
                    references: BTreeMap::new(),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(items))
    }

    /// Keep `items` as the results of the assessment made at `at`.
    fn done(
        &self,
        schedule: &str,
        kind: AssessKind,
        at: i64,
        items: &[Item],
    ) -> anyhow::Result<()> {
        let mut c = self.lock()?;
        let tx = c.transaction()?;
        tx.execute(
            "DELETE FROM schedule_items WHERE schedule = ?1 AND kind = ?2",
            params![schedule, kind.as_str()],
        )?;
        {
            let mut st = tx.prepare(
                "INSERT OR REPLACE INTO schedule_items (schedule, kind, node, item, outcome, evidence)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for i in items {
                st.execute(params![
                    schedule,
                    kind.as_str(),
                    i.node,
                    i.item,
                    i.outcome,
                    i.evidence
                ])?;
            }
        }
        tx.execute(
            "UPDATE schedule_runs SET done_ms = ?3 WHERE schedule = ?1 AND kind = ?2",
            params![schedule, kind.as_str(), at],
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// The results of a check to upload: those whose outcome changed since `previous` (all of
/// them the first time), and those no longer assessed as `gone`.
pub(crate) fn changed(previous: Option<&[Item]>, current: &[Item]) -> Vec<Item> {
    let Some(prev) = previous else {
        return current.to_vec();
    };
    let before: BTreeMap<(&str, &str), &str> = prev
        .iter()
        .map(|i| ((i.node.as_str(), i.item.as_str()), i.outcome.as_str()))
        .collect();
    let now: BTreeSet<(&str, &str)> = current
        .iter()
        .map(|i| (i.node.as_str(), i.item.as_str()))
        .collect();
    let mut out: Vec<Item> = current
        .iter()
        .filter(|i| before.get(&(i.node.as_str(), i.item.as_str())) != Some(&i.outcome.as_str()))
        .cloned()
        .collect();
    for p in prev {
        if !now.contains(&(p.node.as_str(), p.item.as_str())) {
            out.push(Item {
                outcome: "gone".into(),
                evidence: String::new(),
                ..p.clone()
            });
        }
    }
    out
}

/// The schedules of the bundle held, with their version.
fn held_schedules(sh: &Shared) -> Vec<(Schedule, VersionRef, Vec<BundleDocument>)> {
    let b = match sh.bundles.held_registry(&sh.bundle_key, &sh.site) {
        Ok(Some((_, b))) => b,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for d in b.documents.iter().filter(|d| d.kind == "Schedule") {
        match Schedule::from_value(&d.document) {
            Ok(s) => out.push((
                s,
                VersionRef {
                    kind: d.kind.clone(),
                    name: d.name.clone(),
                    version: d.version,
                    sha256: d.sha256.clone(),
                },
                b.documents.clone(),
            )),
            // Checked at push: only a document this build reads differently fails here.
            Err(e) => eprintln!(
                "warning: registry Schedule {}@{}: {e}; not run",
                d.name, d.version
            ),
        }
    }
    out
}

pub(super) async fn scheduler(sh: Arc<Shared>) {
    let state = match ScheduleState::open(&sh.data.join("agent.db")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: schedules: {e:#}; no scheduled assessment runs here");
            return;
        }
    };
    loop {
        let labels = respond::site_labels(&sh.data);
        for (s, v, docs) in held_schedules(&sh) {
            if !s.in_scope(&sh.site, &labels) {
                continue;
            }
            let Ok(every) = s.every() else { continue };
            for kind in s.kinds() {
                let now = vacsine_contract::now_ms();
                let last = match state.last(&s.metadata.name, kind) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("warning: schedules: {e:#}");
                        continue;
                    }
                };
                if !schedule::due(last, every, now) {
                    continue;
                }
                if let Err(e) = state.started(&s.metadata.name, kind, now) {
                    eprintln!("warning: schedules: {e:#}");
                    continue;
                }
                if let Err(e) = run_one(&sh, &state, &s, &v, &docs, kind, now).await {
                    eprintln!(
                        "error: schedule {} ({}): {e:#}",
                        s.metadata.name,
                        kind.as_str()
                    );
                }
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// What to ask the assessor for `kind` of `s`.
fn request(s: &Schedule, docs: &[BundleDocument], kind: AssessKind) -> Result<Assess, String> {
    let target = s.spec.target.clone();
    match kind {
        AssessKind::Check => {
            let name = s
                .spec
                .check
                .as_ref()
                .map(|c| c.policy.as_str())
                .unwrap_or("");
            let p = docs
                .iter()
                .filter(|d| d.kind == "Policy" && d.name == name)
                .max_by_key(|d| d.version)
                .ok_or_else(|| {
                    format!("no policy `{name}` in the registry bundle held (`vacsine push` it)")
                })?;
            let policy = serde_json::from_value(p.document.clone()).map_err(|e| {
                format!("the pushed policy is not a valid Policy for this build: {e}")
            })?;
            Ok(Assess::Check { policy, target })
        }
        AssessKind::Scap => Ok(Assess::Scap {
            spec: s.spec.scap.clone().ok_or("no `scap`")?,
            target,
        }),
        AssessKind::Scan => Ok(Assess::Scan {
            spec: s.spec.scan.clone().ok_or("no `scan`")?,
            target,
        }),
    }
}

async fn run_one(
    sh: &Shared,
    state: &ScheduleState,
    s: &Schedule,
    v: &VersionRef,
    docs: &[BundleDocument],
    kind: AssessKind,
    at: i64,
) -> anyhow::Result<()> {
    let name = &s.metadata.name;
    let at_time: DateTime<Utc> = DateTime::from_timestamp_millis(at).unwrap_or_else(Utc::now);
    let outcome = match (request(s, docs, kind), &sh.enforcer) {
        (Err(e), _) => Err(e),
        (Ok(_), None) => Err(format!(
            "this agent (vacsine {}) has no drivers to assess with",
            vacsine_contract::VERSION
        )),
        (Ok(a), Some(runner)) => runner.assess(a).await.map_err(|e| format!("{e:#}")),
    };
    let key = schedule::assessment_key(name, kind, at);
    let mut upload = AssessmentUpload {
        key: key.clone(),
        schedule: name.clone(),
        version: Some(v.clone()),
        kind: kind.as_str().into(),
        at_ms: at,
        total: 0,
        passing: 0,
        failing: 0,
        error: None,
        items: Vec::new(),
    };
    let Assessed { items, addresses } = match outcome {
        Ok(a) => a,
        Err(e) => {
            // Said, and kept in the history as an assessment that could not be made; the
            // results before it stay the ones compared with.
            eprintln!("schedule {name} ({}): not assessed: {e}", kind.as_str());
            upload.error = Some(e);
            queue(sh, &upload)?;
            return Ok(());
        }
    };
    let previous = state.previous(name, kind)?;
    let (changes, keep, events): (Vec<Item>, Vec<Item>, Vec<Event>) = match kind {
        AssessKind::Scan => {
            let (all, events) =
                schedule::scan_changes(name, previous.as_deref(), items, &addresses, at_time);
            let before: BTreeSet<(String, String)> = previous
                .iter()
                .flatten()
                .map(|i| (i.node.clone(), i.item.clone()))
                .collect();
            let changes = all
                .iter()
                .filter(|i| {
                    i.outcome == "closed" || !before.contains(&(i.node.clone(), i.item.clone()))
                })
                .cloned()
                .collect();
            let keep = all.into_iter().filter(|i| i.outcome == "open").collect();
            (changes, keep, events)
        }
        _ => {
            let events = previous
                .as_deref()
                .map(|p| schedule::drift_events(name, p, &items, at_time))
                .unwrap_or_default();
            (changed(previous.as_deref(), &items), items, events)
        }
    };
    upload.total = keep.len() as i64;
    if kind == AssessKind::Scan {
        upload.failing = upload.total;
    } else {
        upload.passing = keep.iter().filter(|i| i.outcome == "pass").count() as i64;
        upload.failing = keep
            .iter()
            .filter(|i| vacsine_contract::schedule::is_failing(&i.outcome))
            .count() as i64;
    }
    upload.items = changes;
    // Queued before the state moves on: a crash in between sends the same changes again
    // (kept as history rows of the same outcome), never loses one.
    queue(sh, &upload)?;
    state.done(name, kind, at, &keep)?;
    eprintln!(
        "schedule {name} ({}): assessed at site {}: {} result(s), {} passing, {} failing, {} changed; queued as {key}",
        kind.as_str(),
        sh.site,
        upload.total,
        upload.passing,
        upload.failing,
        upload.items.len()
    );
    if !events.is_empty() {
        for e in &events {
            eprintln!(
                "schedule {name}: event {} ({}): {}",
                e.kind.as_str(),
                e.id,
                e.summary
            );
        }
        // The response path's future is not `Send` (its store is one SQLite connection): it
        // runs on a blocking thread of this runtime, driven there by `block_on`.
        let (data, evs, rt) = (
            sh.data.clone(),
            events.clone(),
            tokio::runtime::Handle::current(),
        );
        let ingested = tokio::task::spawn_blocking(move || {
            rt.block_on(respond::ingest_events(&data, evs)).map(|_| ())
        })
        .await
        .unwrap_or_else(|e| Err(anyhow!("the response path stopped abruptly: {e}")));
        if let Err(e) = ingested {
            // Still uploaded: the response path at the orchestrator sees them.
            eprintln!("warning: schedule {name}: the site's response path: {e:#}; events queued for upload only");
            let items: Vec<(String, &str, &str, String)> = events
                .iter()
                .filter_map(|e| {
                    let at_site = e.clone().at_site(&sh.site);
                    Some((
                        format!("event:{}", at_site.id),
                        "responses",
                        "event",
                        serde_json::to_string(&at_site).ok()?,
                    ))
                })
                .collect();
            sh.outbox.put_many(&items)?;
        }
    }
    sh.kick.notify_one();
    Ok(())
}

fn queue(sh: &Shared, upload: &AssessmentUpload) -> anyhow::Result<()> {
    let body = serde_json::to_string(upload).context("encoding an assessment")?;
    sh.outbox
        .put(&upload.key, OUTBOX_RUN, "assessment", &body)?;
    sh.kick.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(node: &str, item: &str, outcome: &str) -> Item {
        Item {
            node: node.into(),
            item: item.into(),
            outcome: outcome.into(),
            evidence: String::new(),
            title: None,
            severity: None,
            references: BTreeMap::new(),
        }
    }

    #[test]
    fn only_changes_are_uploaded_and_the_first_assessment_in_full() {
        let a = vec![item("n", "r1", "pass"), item("n", "r2", "fail")];
        assert_eq!(changed(None, &a), a);
        assert!(changed(Some(&a), &a).is_empty());
        let b = vec![item("n", "r1", "fail")];
        let c = changed(Some(&a), &b);
        assert_eq!(
            c.iter()
                .map(|i| (i.item.as_str(), i.outcome.as_str()))
                .collect::<Vec<_>>(),
            [("r1", "fail"), ("r2", "gone")]
        );
    }

    #[test]
    fn the_state_keeps_the_last_assessment() {
        let dir = tempfile::tempdir().unwrap();
        let s = ScheduleState::open(&dir.path().join("agent.db")).unwrap();
        assert_eq!(s.last("x", AssessKind::Check).unwrap(), None);
        s.started("x", AssessKind::Check, 10).unwrap();
        assert_eq!(s.last("x", AssessKind::Check).unwrap(), Some(10));
        // Started, not done: nothing to compare with yet.
        assert!(s.previous("x", AssessKind::Check).unwrap().is_none());
        s.done("x", AssessKind::Check, 10, &[item("n", "r1", "pass")])
            .unwrap();
        assert_eq!(
            s.previous("x", AssessKind::Check).unwrap().unwrap().len(),
            1
        );
        assert!(s.previous("x", AssessKind::Scan).unwrap().is_none());
    }
}
