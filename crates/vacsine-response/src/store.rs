//! The agent-side store: one SQLite file (WAL, mode 0600) holding the events received, the
//! outcomes of every decision (decided, deduplicated, throttled, allow-listed, awaiting
//! approval, refused, ignored), the decisions with their state and times, and the dedupe and
//! throttle windows. Store and forward: every row carries an upload key (idempotency key) and
//! waits with `uploaded_at` unset until the orchestrator has it; [`Store::retain`] bounds the
//! file by deleting uploaded rows older than a cutoff.
//!
//! This is the only module of the crate that does I/O.

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use vacsine_events::Event;

use crate::decide::{Outcome, Verdict, Windows};
use crate::decision::{content_id, Decision};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store file: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: a row does not decode: {0}")]
    Json(#[from] serde_json::Error),
}

/// A decision's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionState {
    Active,
    Expired,
    Deleted,
}

impl DecisionState {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionState::Active => "active",
            DecisionState::Expired => "expired",
            DecisionState::Deleted => "deleted",
        }
    }
    fn parse(s: &str) -> Option<DecisionState> {
        match s {
            "active" => Some(DecisionState::Active),
            "expired" => Some(DecisionState::Expired),
            "deleted" => Some(DecisionState::Deleted),
            _ => None,
        }
    }
}

/// A decision as stored, with its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDecision {
    pub decision: Decision,
    pub state: DecisionState,
    pub event_at: Option<DateTime<Utc>>,
    pub decided_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    pub verified_at: Option<DateTime<Utc>>,
}

/// What a row to upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    Event,
    Outcome,
    Decision,
}

/// A row waiting for upload: its idempotency key and its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub kind: UploadKind,
    pub key: String,
    pub body: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events(
  id TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  source TEXT NOT NULL,
  event_at INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  body TEXT NOT NULL,
  upload_key TEXT NOT NULL,
  uploaded_at INTEGER
);
CREATE INDEX IF NOT EXISTS events_pending ON events(received_at) WHERE uploaded_at IS NULL;
CREATE TABLE IF NOT EXISTS outcomes(
  key TEXT NOT NULL UNIQUE,
  event_id TEXT NOT NULL,
  response TEXT,
  reason TEXT NOT NULL,
  at INTEGER NOT NULL,
  body TEXT NOT NULL,
  uploaded_at INTEGER
);
CREATE INDEX IF NOT EXISTS outcomes_event ON outcomes(event_id);
CREATE TABLE IF NOT EXISTS decisions(
  id TEXT PRIMARY KEY,
  body TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('active','expired','deleted')),
  expires_at INTEGER,
  event_at INTEGER,
  decided_at INTEGER NOT NULL,
  applied_at INTEGER,
  verified_at INTEGER,
  updated_at INTEGER NOT NULL,
  rev INTEGER NOT NULL DEFAULT 1,
  uploaded_at INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS windows(
  kind TEXT NOT NULL,
  key TEXT NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY(kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantines(
  decision_id TEXT PRIMARY KEY,
  run_id TEXT NOT NULL,
  released_at INTEGER
) WITHOUT ROWID;
";

/// The store.
pub struct Store {
    conn: Connection,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.and_then(|m| Utc.timestamp_millis_opt(m).single())
}

impl Store {
    /// Opens (creating it if needed) the store at `path`, readable by its owner only.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = vacsine_private::sqlite::open(path)
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // 32 MiB of page cache: batches of inserts with random keys stay in memory.
        conn.pragma_update(None, "cache_size", -32_768)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// Inserts events in one transaction; an event already stored (same id) is left alone.
    /// Returns how many were new.
    pub fn insert_events(
        &mut self,
        events: &[Event],
        received_at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        for e in events {
            n += insert_event(&tx, e, received_at)?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Records the outcomes of one event in one transaction: every outcome (idempotent by
    /// its content), and each decision made as an active decision (idempotent by its id).
    pub fn record(
        &mut self,
        event: &Event,
        outcomes: &[Outcome],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        record_outcomes(&tx, event, outcomes, at)?;
        tx.commit()?;
        Ok(())
    }

    /// The hot path at a site: a batch of events with their outcomes, all in one transaction
    /// (events, outcomes and decisions, each idempotent). Returns how many events were new.
    pub fn ingest(
        &mut self,
        batch: &[(Event, Vec<Outcome>)],
        received_at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        for (e, outcomes) in batch {
            n += insert_event(&tx, e, received_at)?;
            record_outcomes(&tx, e, outcomes, received_at)?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Inserts a decision (active); a decision already stored (same id) is left alone.
    /// Returns whether it was new.
    pub fn insert_decision(
        &mut self,
        d: &Decision,
        event_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        Ok(insert_decision(&self.conn, d, event_at)? > 0)
    }

    fn touch(&self, sql: &str, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self.conn.execute(sql, params![id, ms(at)])? > 0)
    }

    /// The decision is in effect at this site since `at`.
    pub fn mark_applied(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.touch(
            "UPDATE decisions SET applied_at = ?2, updated_at = ?2, rev = rev + 1, uploaded_at = NULL
             WHERE id = ?1 AND applied_at IS NULL",
            id,
            at,
        )
    }

    /// The decision was observed in effect (the address's next packet dropped) at `at`.
    pub fn mark_verified(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.touch(
            "UPDATE decisions SET verified_at = ?2, updated_at = ?2, rev = rev + 1, uploaded_at = NULL
             WHERE id = ?1 AND verified_at IS NULL",
            id,
            at,
        )
    }

    /// Deleted by hand (or by the orchestrator).
    pub fn mark_deleted(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.touch(
            "UPDATE decisions SET state = 'deleted', updated_at = ?2, rev = rev + 1, uploaded_at = NULL
             WHERE id = ?1 AND state = 'active'",
            id,
            at,
        )
    }

    /// The quarantine decision `id` was carried out here by run `run_id` (journaled): what is
    /// rolled back to release the node once the decision is lifted.
    pub fn record_quarantine_run(&self, id: &str, run_id: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO quarantines (decision_id, run_id) VALUES (?1, ?2)
             ON CONFLICT (decision_id) DO UPDATE SET run_id = excluded.run_id, released_at = NULL",
            params![id, run_id],
        )?;
        Ok(())
    }

    /// Quarantines carried out here whose decision is lifted at `now` (deleted, or past its
    /// expiry) and whose node is not released yet: (decision, the run to roll back).
    pub fn lifted_quarantines(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Decision, String)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT d.body, q.run_id FROM quarantines q JOIN decisions d ON d.id = q.decision_id
             WHERE q.released_at IS NULL
             AND (d.state <> 'active' OR (d.expires_at IS NOT NULL AND d.expires_at <= ?1))
             ORDER BY d.decided_at, d.id",
        )?;
        let rows = st.query_map(params![ms(now)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (body, run) = row?;
            out.push((serde_json::from_str(&body)?, run));
        }
        Ok(out)
    }

    /// The node of quarantine decision `id` was released at `at`.
    pub fn mark_released(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "UPDATE quarantines SET released_at = ?2 WHERE decision_id = ?1 AND released_at IS NULL",
            params![id, ms(at)],
        )? > 0)
    }

    /// Marks active decisions past their expiry as expired; returns how many.
    pub fn expire(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE decisions SET state = 'expired', updated_at = ?1, rev = rev + 1, uploaded_at = NULL
             WHERE state = 'active' AND expires_at IS NOT NULL AND expires_at <= ?1",
            params![ms(now)],
        )?)
    }

    /// The decisions active at `now` (not expired, not deleted), oldest first: what the site
    /// must enforce (for [`crate::reconcile::reconcile`]).
    pub fn active(&self, now: DateTime<Utc>) -> Result<Vec<Decision>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT body FROM decisions WHERE state = 'active'
             AND (expires_at IS NULL OR expires_at > ?1) ORDER BY decided_at, id",
        )?;
        let rows = st.query_map(params![ms(now)], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        Ok(out)
    }

    /// One decision with its state and times.
    pub fn decision(&self, id: &str) -> Result<Option<StoredDecision>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT body, state, event_at, decided_at, applied_at, verified_at
                 FROM decisions WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((body, state, event_at, decided_at, applied_at, verified_at)) = row else {
            return Ok(None);
        };
        Ok(Some(StoredDecision {
            decision: serde_json::from_str(&body)?,
            state: DecisionState::parse(&state).unwrap_or(DecisionState::Deleted),
            event_at: time(event_at),
            decided_at: time(Some(decided_at)).unwrap_or_default(),
            applied_at: time(applied_at),
            verified_at: time(verified_at),
        }))
    }

    /// Rows waiting for upload, at most `limit`, events first, then outcomes, then
    /// decisions. A decision's key names its revision, so a change after an upload is sent
    /// again under a new key.
    pub fn pending(&self, limit: usize) -> Result<Vec<Upload>, StoreError> {
        let mut out = Vec::new();
        let lim = limit as i64;
        {
            let mut st = self.conn.prepare_cached(
                "SELECT upload_key, body FROM events WHERE uploaded_at IS NULL
                 ORDER BY received_at, id LIMIT ?1",
            )?;
            for r in st.query_map(params![lim], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (key, body) = r?;
                out.push(Upload {
                    kind: UploadKind::Event,
                    key,
                    body,
                });
            }
        }
        if out.len() < limit {
            let mut st = self.conn.prepare_cached(
                "SELECT key, body FROM outcomes WHERE uploaded_at IS NULL ORDER BY at, key LIMIT ?1",
            )?;
            for r in st.query_map(params![(limit - out.len()) as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?))
            })? {
                let (key, body) = r?;
                out.push(Upload {
                    kind: UploadKind::Outcome,
                    key: format!("outcome:{key}"),
                    body,
                });
            }
        }
        if out.len() < limit {
            let mut st = self.conn.prepare_cached(
                "SELECT id, rev, body, state, event_at, decided_at, applied_at, verified_at
                 FROM decisions WHERE uploaded_at IS NULL ORDER BY updated_at, id LIMIT ?1",
            )?;
            let rows = st.query_map(params![(limit - out.len()) as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                ))
            })?;
            for r in rows {
                let (id, rev, body, state, ev, dec, app, ver) = r?;
                let decision: serde_json::Value = serde_json::from_str(&body)?;
                let body = serde_json::json!({
                    "decision": decision,
                    "state": state,
                    "event_at": time(ev),
                    "decided_at": time(Some(dec)),
                    "applied_at": time(app),
                    "verified_at": time(ver),
                })
                .to_string();
                out.push(Upload {
                    kind: UploadKind::Decision,
                    key: format!("decision:{id}:{rev}"),
                    body,
                });
            }
        }
        Ok(out)
    }

    /// Marks rows as uploaded (the orchestrator acknowledged these keys). Unknown keys and
    /// keys of an older revision of a decision are ignored.
    pub fn mark_uploaded(
        &mut self,
        keys: &[String],
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut n = 0;
        for k in keys {
            if let Some(id) = k.strip_prefix("event:") {
                n += tx.execute(
                    "UPDATE events SET uploaded_at = ?2 WHERE id = ?1 AND uploaded_at IS NULL",
                    params![id, ms(at)],
                )?;
            } else if let Some(key) = k.strip_prefix("outcome:") {
                n += tx.execute(
                    "UPDATE outcomes SET uploaded_at = ?2 WHERE key = ?1 AND uploaded_at IS NULL",
                    params![key, ms(at)],
                )?;
            } else if let Some((id, rev)) =
                k.strip_prefix("decision:").and_then(|r| r.rsplit_once(':'))
            {
                n += tx.execute(
                    "UPDATE decisions SET uploaded_at = ?3 WHERE id = ?1 AND rev = ?2 AND uploaded_at IS NULL",
                    params![id, rev.parse::<i64>().unwrap_or(-1), ms(at)],
                )?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Deletes uploaded rows older than `cutoff`: events and outcomes received before it,
    /// decisions no longer active last changed before it. Rows not yet uploaded and active
    /// decisions are always kept. Returns how many rows went.
    pub fn retain(&mut self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        let c = ms(cutoff);
        let tx = self.conn.transaction()?;
        let mut n = tx.execute(
            "DELETE FROM events WHERE uploaded_at IS NOT NULL AND received_at < ?1",
            params![c],
        )?;
        n += tx.execute(
            "DELETE FROM outcomes WHERE uploaded_at IS NOT NULL AND at < ?1",
            params![c],
        )?;
        n += tx.execute(
            "DELETE FROM decisions WHERE uploaded_at IS NOT NULL AND state <> 'active' AND updated_at < ?1",
            params![c],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Replaces the stored dedupe and throttle windows.
    pub fn save_windows(&mut self, w: &Windows) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM windows", [])?;
        {
            let mut st =
                tx.prepare_cached("INSERT INTO windows(kind, key, body) VALUES (?1, ?2, ?3)")?;
            for (k, until) in &w.dedupe {
                st.execute(params!["dedupe", k, serde_json::to_string(until)?])?;
            }
            for (k, times) in &w.throttle {
                st.execute(params!["throttle", k, serde_json::to_string(times)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The stored windows (empty if none).
    pub fn load_windows(&self) -> Result<Windows, StoreError> {
        let mut w = Windows::default();
        let mut st = self.conn.prepare("SELECT kind, key, body FROM windows")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for r in rows {
            let (kind, key, body) = r?;
            match kind.as_str() {
                "dedupe" => {
                    w.dedupe.insert(key, serde_json::from_str(&body)?);
                }
                _ => {
                    w.throttle.insert(key, serde_json::from_str(&body)?);
                }
            }
        }
        Ok(w)
    }

    /// Rows per table: (events, outcomes, decisions).
    pub fn counts(&self) -> Result<(u64, u64, u64), StoreError> {
        let c = |t: &str| -> Result<u64, StoreError> {
            Ok(self
                .conn
                .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| {
                    r.get::<_, i64>(0)
                })? as u64)
        };
        Ok((c("events")?, c("outcomes")?, c("decisions")?))
    }

    /// Outcomes recorded for an event: (response, reason).
    pub fn outcomes_of(&self, event_id: &str) -> Result<Vec<(Option<String>, String)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT response, reason FROM outcomes WHERE event_id = ?1 ORDER BY response, key",
        )?;
        let rows = st.query_map(params![event_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn insert_event(
    conn: &Connection,
    e: &Event,
    received_at: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut st = conn.prepare_cached(
        "INSERT OR IGNORE INTO events(id, kind, source, event_at, received_at, body, upload_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    Ok(st.execute(params![
        e.id,
        e.kind.as_str(),
        e.source,
        ms(e.time),
        ms(received_at),
        serde_json::to_string(e)?,
        format!("event:{}", e.id),
    ])?)
}

fn record_outcomes(
    conn: &Connection,
    event: &Event,
    outcomes: &[Outcome],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut st = conn.prepare_cached(
        "INSERT OR IGNORE INTO outcomes(key, event_id, response, reason, at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for o in outcomes {
        let key = content_id(
            o.response.as_deref().unwrap_or(""),
            &o.event_id,
            &format!("outcome:{}", serde_json::to_string(&o.target)?),
        );
        st.execute(params![
            key,
            o.event_id,
            o.response,
            reason(&o.verdict),
            ms(at),
            serde_json::to_string(o)?
        ])?;
        if let Verdict::Decided { decision } = &o.verdict {
            insert_decision(conn, decision, Some(event.time))?;
        }
    }
    Ok(())
}

fn insert_decision(
    conn: &Connection,
    d: &Decision,
    event_at: Option<DateTime<Utc>>,
) -> Result<usize, StoreError> {
    let mut st = conn.prepare_cached(
        "INSERT OR IGNORE INTO decisions(id, body, state, expires_at, event_at, decided_at, updated_at)
         VALUES (?1, ?2, 'active', ?3, ?4, ?5, ?5)",
    )?;
    Ok(st.execute(params![
        d.id,
        serde_json::to_string(d)?,
        d.expires_at.map(ms),
        event_at.map(ms),
        ms(d.created_at),
    ])?)
}

/// The reason of a verdict, as stored and reported.
pub fn reason(v: &Verdict) -> &'static str {
    match v {
        Verdict::Decided { .. } => "matched",
        Verdict::Run { .. } => "matched",
        Verdict::Deduplicated { .. } => "deduplicated",
        Verdict::Throttled { .. } => "throttled",
        Verdict::AllowListed { .. } => "allow_listed",
        Verdict::AwaitingApproval { .. } => "awaiting_approval",
        Verdict::Refused { .. } => "refused",
        Verdict::SelfOrigin { .. } => "self_origin",
    }
}
