//! The agent's outbox (SQLite, in `agent.db`): records, autonomous runs and run ends waiting
//! to be uploaded, in the order they were made, and the uploader that sends them.
//!
//! Nothing is dropped: requests are sized in bytes under the orchestrator's body limit
//! ([`proto::MAX_AGENT_PLAINTEXT`]); a size refusal (413, e.g. from a proxy with a lower
//! limit) lowers the size used and the batch is sent again in smaller parts; a record larger
//! than any request is sent with its longest texts cut and marked (the whole record stays in
//! the journal); an item the orchestrator refuses for good, or that cannot be read here, is
//! kept in the outbox as `refused` with the reason (`vacsine agent status`), logged with its
//! key. Acknowledged items are deleted once their run's end is acknowledged, and after
//! [`KEEP_SENT_MS`] in any case (the orchestrator keeps each record once per key, so an item
//! queued again later is only a duplicate it ignores).

use crate::{Backoff, Shared};
use anyhow::anyhow;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vacsine_contract::client::CallError;
use vacsine_contract::fit::cut_to_fit;
use vacsine_contract::now_ms;
use vacsine_contract::proto;
use vacsine_core::record::StepRecord;

/// How often an idle uploader looks at the outbox again.
const IDLE_LOOK: Duration = Duration::from_millis(200);
/// Most records in one request.
const BATCH_ITEMS: usize = 200;
/// Most events and decisions in one request (small items: each request costs a durable
/// commit on both sides, so a large backlog after a cut goes up in fewer of them; the byte
/// budget still bounds a request).
const RESPONSE_BATCH_ITEMS: usize = 2_000;
/// Smallest request size the uploader goes down to after size refusals.
const MIN_BUDGET: usize = 16 * 1024;
/// Bytes of a records request beyond its records' own JSON: field names, the run id.
const REQUEST_OVERHEAD: usize = 512;
/// Bytes each record adds beyond its JSON and key (field names, separators).
const ITEM_OVERHEAD: usize = 32;
/// Who cut what was cut to fit an upload, and where the whole text is (see [`vacsine_contract::fit`]).
const CUT_BY: &str =
    "the vacsine agent to fit the upload limit; the whole text is in the agent's journal";
/// Acknowledged items of a run whose end never came are deleted after this long.
pub const KEEP_SENT_MS: i64 = 24 * 3600 * 1000;

/// Records and run ends waiting to be uploaded, in the order they were made.
pub struct Outbox {
    conn: Mutex<Connection>,
}

pub(crate) struct Item {
    seq: i64,
    run_id: String,
    kind: String,
    key: String,
    body: String,
}

/// An item the orchestrator refused for good, or that could not be read here: kept.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refused {
    pub key: String,
    pub run_id: String,
    pub kind: String,
    pub at: String,
    pub reason: String,
}

/// What `vacsine agent status` shows of the outbox.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxStatus {
    /// Items waiting to be uploaded.
    pub pending: i64,
    /// Acknowledged items still kept (deleted with their run's end, or after a day).
    pub sent_kept: i64,
    /// Items refused for good, oldest first.
    pub refused: Vec<Refused>,
}

impl Outbox {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = vacsine_private::sqlite::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch(
            "PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS outbox (
               seq INTEGER PRIMARY KEY AUTOINCREMENT,
               key TEXT NOT NULL UNIQUE,
               run_id TEXT NOT NULL,
               kind TEXT NOT NULL,
               body TEXT NOT NULL,
               sent_ms INTEGER
             );
             CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(sent_ms, seq);",
        )?;
        // Added after the first release: the refusal of an item kept with its reason.
        let has_refused: Option<String> = conn
            .query_row(
                "SELECT name FROM pragma_table_info('outbox') WHERE name = 'refused'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if has_refused.is_none() {
            conn.execute_batch(
                "ALTER TABLE outbox ADD COLUMN refused TEXT;
                 ALTER TABLE outbox ADD COLUMN refused_ms INTEGER;",
            )?;
        }
        // What each poll reports (refused items) without reading the whole outbox.
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS outbox_refused ON outbox(seq) WHERE refused IS NOT NULL;",
        )?;
        Ok(Outbox {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| anyhow!("outbox lock poisoned"))
    }

    /// Queue an item once per key (a key already queued, sent or refused is left alone).
    pub(crate) fn put(
        &self,
        key: &str,
        run_id: &str,
        kind: &str,
        body: &str,
    ) -> anyhow::Result<bool> {
        Ok(self.lock()?.execute(
            "INSERT OR IGNORE INTO outbox (key, run_id, kind, body) VALUES (?1, ?2, ?3, ?4)",
            params![key, run_id, kind, body],
        )? == 1)
    }

    /// [`Outbox::put`] of several items in one transaction (one sync to disk); how many were
    /// new.
    pub(crate) fn put_many(&self, items: &[(String, &str, &str, String)]) -> anyhow::Result<usize> {
        let mut c = self.lock()?;
        let tx = c.transaction()?;
        let mut n = 0;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR IGNORE INTO outbox (key, run_id, kind, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (key, run_id, kind, body) in items {
                n += st.execute(params![key, run_id, kind, body])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    pub(crate) fn pending(&self, limit: usize) -> anyhow::Result<Vec<Item>> {
        let c = self.lock()?;
        let mut st = c.prepare(
            "SELECT seq, run_id, kind, key, body FROM outbox
             WHERE sent_ms IS NULL AND refused IS NULL ORDER BY seq LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], |r| {
            Ok(Item {
                seq: r.get(0)?,
                run_id: r.get(1)?,
                kind: r.get(2)?,
                key: r.get(3)?,
                body: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The orchestrator acknowledged these items. A run's end acknowledged: every
    /// acknowledged item of that run is deleted (nothing is queued for it again); others are
    /// deleted after [`KEEP_SENT_MS`].
    pub(crate) fn mark_sent(&self, seqs: &[i64]) -> anyhow::Result<()> {
        let now = now_ms();
        let mut c = self.lock()?;
        let tx = c.transaction()?;
        for s in seqs {
            tx.execute(
                "UPDATE outbox SET sent_ms = ?2 WHERE seq = ?1",
                params![s, now],
            )?;
            // Looked up first: a `DELETE … WHERE run_id IN (subquery)` scans every sent row
            // for each item acknowledged, which made uploading a large outbox quadratic
            // (found by `bench/cut_million.sh`: 37 events/s after 20,000 were queued).
            let finished: Option<String> = tx
                .query_row(
                    "SELECT run_id FROM outbox WHERE seq = ?1 AND kind = 'finish'",
                    [s],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(run) = finished {
                tx.execute(
                    "DELETE FROM outbox WHERE sent_ms IS NOT NULL AND run_id = ?1",
                    [run],
                )?;
            }
        }
        tx.execute(
            "DELETE FROM outbox WHERE sent_ms IS NOT NULL AND sent_ms < ?1",
            [now - KEEP_SENT_MS],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Items refused for good: kept, with the reason, and no longer sent.
    pub(crate) fn mark_refused(&self, seqs: &[i64], reason: &str) -> anyhow::Result<()> {
        let mut c = self.lock()?;
        let tx = c.transaction()?;
        for s in seqs {
            tx.execute(
                "UPDATE outbox SET refused = ?2, refused_ms = ?3 WHERE seq = ?1",
                params![s, reason, now_ms()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Items not uploaded yet.
    pub fn pending_count(&self) -> anyhow::Result<i64> {
        Ok(self.lock()?.query_row(
            "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL AND refused IS NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// What a poll tells the orchestrator of the refused items: how many, the oldest few
    /// (their reasons shortened).
    pub fn report(&self) -> anyhow::Result<proto::OutboxReport> {
        let c = self.lock()?;
        let refused: i64 = c.query_row(
            "SELECT COUNT(*) FROM outbox WHERE refused IS NOT NULL",
            [],
            |r| r.get(0),
        )?;
        let mut st = c.prepare(
            "SELECT key, run_id, kind, refused_ms, refused FROM outbox
             WHERE refused IS NOT NULL ORDER BY seq LIMIT ?1",
        )?;
        let oldest = st
            .query_map([proto::OUTBOX_REPORT_ITEMS as i64], |r| {
                let reason: String = r.get(4)?;
                Ok(proto::RefusedItem {
                    key: r.get(0)?,
                    run_id: r.get(1)?,
                    kind: r.get(2)?,
                    at: vacsine_contract::rfc3339(r.get::<_, Option<i64>>(3)?.unwrap_or(0)),
                    reason: if reason.chars().count() > 300 {
                        reason.chars().take(300).chain("…".chars()).collect()
                    } else {
                        reason
                    },
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(proto::OutboxReport {
            refused: refused as u64,
            oldest,
        })
    }

    /// Pending, kept and refused items.
    pub fn status(&self) -> anyhow::Result<OutboxStatus> {
        let pending = self.pending_count()?;
        let c = self.lock()?;
        let sent_kept = c.query_row(
            "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NOT NULL",
            [],
            |r| r.get(0),
        )?;
        let mut st = c.prepare(
            "SELECT key, run_id, kind, refused_ms, refused FROM outbox
             WHERE refused IS NOT NULL ORDER BY seq",
        )?;
        let refused = st
            .query_map([], |r| {
                Ok(Refused {
                    key: r.get(0)?,
                    run_id: r.get(1)?,
                    kind: r.get(2)?,
                    at: vacsine_contract::rfc3339(r.get::<_, Option<i64>>(3)?.unwrap_or(0)),
                    reason: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(OutboxStatus {
            pending,
            sent_kept,
            refused,
        })
    }
}

/// The records request for the first consecutive records of one run in `items`, at most
/// `cap` of them and `budget` bytes of plaintext.
enum Batch {
    Send {
        req: proto::RecordsRequest,
        seqs: Vec<i64>,
        bytes: usize,
    },
    /// The first item cannot be sent at all: why.
    Unsendable { seq: i64, key: String, why: String },
}

fn records_batch(items: &[Item], cap: usize, budget: usize) -> Batch {
    let first = &items[0];
    let mut req = proto::RecordsRequest {
        run_id: first.run_id.clone(),
        records: Vec::new(),
    };
    let mut seqs = Vec::new();
    let mut bytes = REQUEST_OVERHEAD + first.run_id.len();
    let same_run = items
        .iter()
        .take_while(|i| i.kind == "record" && i.run_id == first.run_id);
    for i in same_run.take(cap.max(1)) {
        let mut record: Value = match serde_json::from_str(&i.body) {
            Ok(v) => v,
            Err(e) if seqs.is_empty() => {
                return Batch::Unsendable {
                    seq: i.seq,
                    key: i.key.clone(),
                    why: format!("unreadable in the outbox: {e}"),
                }
            }
            // Sent alone next, and refused there.
            Err(_) => break,
        };
        let extra = i.key.len() + ITEM_OVERHEAD;
        let mut n = i.body.len() + extra;
        if bytes + n > budget {
            if !seqs.is_empty() {
                break;
            }
            // Alone and still too large: its longest texts are cut, marked.
            let room = budget.saturating_sub(bytes + extra);
            match cut_to_fit(&record, room, CUT_BY) {
                Some((v, cut)) => {
                    eprintln!(
                        "warning: record {} of run {} is larger than an upload may be: {cut} byte(s) of its longest texts cut (marked) to send it; the whole record stays in the agent's journal",
                        i.key, i.run_id
                    );
                    record = v;
                    n = serde_json::to_vec(&record).map_or(room, |b| b.len()) + extra;
                }
                None => {
                    return Batch::Unsendable {
                        seq: i.seq,
                        key: i.key.clone(),
                        why: format!(
                            "larger than an upload may be ({} bytes; at most {room}) even with its texts cut",
                            i.body.len()
                        ),
                    }
                }
            }
        }
        // Sent as a step record, or not at all: one that is not is refused here, by its
        // key, as the orchestrator would refuse it.
        let record: StepRecord = match StepRecord::deserialize(record) {
            Ok(r) => r,
            Err(e) if seqs.is_empty() => {
                return Batch::Unsendable {
                    seq: i.seq,
                    key: i.key.clone(),
                    why: format!("{}: not a step record: {e}", proto::BAD_RECORD),
                }
            }
            // Sent alone next, and refused there.
            Err(_) => break,
        };
        bytes += n;
        seqs.push(i.seq);
        req.records.push(proto::KeyedRecord {
            key: i.key.clone(),
            record,
        });
    }
    Batch::Send { req, seqs, bytes }
}

/// Events and decisions of the site's response path (issue 16), uploaded together.
fn is_response_item(kind: &str) -> bool {
    kind == "event" || kind == "decision"
}

/// The responses request for the first consecutive events and decisions in `items`.
enum Batch2 {
    Send {
        req: proto::ResponseUpload,
        seqs: Vec<i64>,
        bytes: usize,
    },
    Unsendable {
        seq: i64,
        key: String,
        why: String,
    },
}

fn responses_batch(items: &[Item], cap: usize, budget: usize) -> Batch2 {
    let mut req = proto::ResponseUpload {
        events: Vec::new(),
        decisions: Vec::new(),
    };
    let mut seqs = Vec::new();
    let mut bytes = REQUEST_OVERHEAD;
    for i in items
        .iter()
        .take_while(|i| is_response_item(&i.kind))
        .take(cap.max(1))
    {
        let n = i.body.len() + ITEM_OVERHEAD;
        if bytes + n > budget && !seqs.is_empty() {
            break;
        }
        let parsed = if i.kind == "event" {
            serde_json::from_str(&i.body).map(|e| req.events.push(e))
        } else {
            serde_json::from_str(&i.body).map(|d| req.decisions.push(d))
        };
        if let Err(e) = parsed {
            if seqs.is_empty() {
                return Batch2::Unsendable {
                    seq: i.seq,
                    key: i.key.clone(),
                    why: format!("unreadable in the outbox: {e}"),
                };
            }
            break;
        }
        bytes += n;
        seqs.push(i.seq);
    }
    Batch2::Send { req, seqs, bytes }
}

/// A refusal that only says the request was too large (413, from the orchestrator or a
/// proxy in front of it).
fn too_large(e: &CallError) -> bool {
    matches!(e, CallError::Refused { status: 413, .. })
}

/// A refusal the same request will meet again (not a stale clock, not the server's trouble).
fn for_good(e: &CallError) -> Option<String> {
    match e {
        CallError::Refused {
            status,
            code,
            message,
        } if *status < 500 && code != "stale" && *status != 413 => {
            Some(format!("{code} ({status}): {message}"))
        }
        _ => None,
    }
}

/// Upload the outbox in order: consecutive records of one run in one request (sized in
/// bytes), then run ends.
pub(super) async fn uploader(sh: Arc<Shared>) {
    let mut backoff = Backoff::default();
    // Plaintext bytes per request: lowered when a request is refused as too large.
    let mut budget = proto::MAX_AGENT_PLAINTEXT;
    // Records per request: halved when a batch is refused for one of its records, to find it.
    let mut cap = BATCH_ITEMS;
    loop {
        let items = match sh.outbox.pending(RESPONSE_BATCH_ITEMS) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("warning: outbox: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(first) = items.first() else {
            tokio::select! {
                _ = sh.kick.notified() => {},
                // Items queued by another process (`vacsine agent ingest`, `vacsine agent
                // run`) cannot kick this one: the outbox is looked at again soon (a decision
                // made at this site reaches the others within this delay).
                _ = tokio::time::sleep(IDLE_LOOK) => {},
            }
            continue;
        };
        let (seqs, bytes, r): (Vec<i64>, usize, Result<(), CallError>) = if first.kind == "record" {
            match records_batch(&items, cap, budget) {
                Batch::Unsendable { seq, key, why } => {
                    refuse(&sh, &[seq], &key, &first.run_id, &why);
                    continue;
                }
                Batch::Send { req, seqs, bytes } => {
                    let r = sh.link.op(&sh.agent_id, &req).await.map(|_| ());
                    (seqs, bytes, r)
                }
            }
        } else if is_response_item(&first.kind) {
            match responses_batch(&items, cap * (RESPONSE_BATCH_ITEMS / BATCH_ITEMS), budget) {
                Batch2::Unsendable { seq, key, why } => {
                    refuse(&sh, &[seq], &key, &first.run_id, &why);
                    continue;
                }
                Batch2::Send { req, seqs, bytes } => {
                    let r = sh.link.op(&sh.agent_id, &req).await.map(|_| ());
                    (seqs, bytes, r)
                }
            }
        } else {
            let r = match send_one(&sh, first, budget).await {
                Ok(r) => r,
                Err(why) => {
                    refuse(&sh, &[first.seq], &first.key, &first.run_id, &why);
                    continue;
                }
            };
            (vec![first.seq], first.body.len(), r)
        };
        match r {
            Ok(()) => {
                backoff.ok("uploading");
                cap = (cap * 2).min(BATCH_ITEMS);
                if let Err(e) = sh.outbox.mark_sent(&seqs) {
                    eprintln!("warning: outbox: {e}");
                }
            }
            Err(e) if e.is_revoked() => {
                let _ = sh.fatal.send(Some(e.to_string()));
                return;
            }
            Err(e) if too_large(&e) && bytes > MIN_BUDGET => {
                // Sent again smaller: in parts, or cut (a proxy may allow less than the
                // orchestrator does).
                budget = (bytes / 2).clamp(MIN_BUDGET, budget);
                eprintln!(
                    "uploading: a request of {bytes} bytes was refused as too large ({e}); sending at most {budget} bytes per request"
                );
            }
            Err(e) => match for_good(&e) {
                // One of several records may be the one refused: smaller batches find it.
                Some(_) if seqs.len() > 1 && is_record_refusal(&e) => {
                    cap = (seqs.len() / 2).max(1);
                }
                Some(why) => refuse(&sh, &seqs, &first.key, &first.run_id, &why),
                None if too_large(&e) => {
                    let why = format!("too large even at {bytes} bytes: {e}");
                    refuse(&sh, &seqs, &first.key, &first.run_id, &why)
                }
                None => backoff.fail("uploading", &e).await,
            },
        }
    }
}

/// The orchestrator refused a request for one of its records (not for the run as a whole).
fn is_record_refusal(e: &CallError) -> bool {
    matches!(e, CallError::Refused { code, .. } if code == proto::BAD_RECORD)
}

/// Keep items refused for good, say so with the key.
fn refuse(sh: &Shared, seqs: &[i64], key: &str, run_id: &str, why: &str) {
    let more = if seqs.len() > 1 {
        format!(" and {} more", seqs.len() - 1)
    } else {
        String::new()
    };
    eprintln!(
        "error: outbox item {key}{more} of run {run_id} refused: {why}; kept in the outbox as refused (`vacsine agent status` lists it)"
    );
    if let Err(e) = sh.outbox.mark_refused(seqs, why) {
        eprintln!("warning: outbox: {e}");
    }
}

/// Send an item that is not a record (an autonomous run's start, a run's end); `Err`: it
/// cannot be read here.
async fn send_one(
    sh: &Shared,
    item: &Item,
    budget: usize,
) -> Result<Result<(), CallError>, String> {
    if item.kind == "assessment" {
        // A scheduled assessment (issue 17), kept once by its key at the orchestrator.
        let req = serde_json::from_str::<vacsine_contract::schedule::AssessmentUpload>(&item.body)
            .map_err(|e| format!("unreadable in the outbox: {e}"))?;
        Ok(sh.link.op(&sh.agent_id, &req).await.map(|a| {
            if a.created {
                eprintln!(
                    "assessment {} uploaded ({} changed result(s))",
                    req.key, a.changed
                );
            }
        }))
    } else if item.kind == "autonomous" {
        // An autonomous run made here: the orchestrator learns of it before its records.
        let req = serde_json::from_str::<proto::AutonomousRun>(&item.body)
            .map_err(|e| format!("unreadable in the outbox: {e}"))?;
        Ok(sh.link.op(&sh.agent_id, &req).await.map(|a| {
            if a.created {
                eprintln!(
                    "autonomous run {} ({}) reported to the orchestrator",
                    req.run_id, req.workflow
                );
            }
        }))
    } else {
        let mut v: Value = serde_json::from_str(&item.body)
            .map_err(|e| format!("unreadable in the outbox: {e}"))?;
        let room = budget.saturating_sub(REQUEST_OVERHEAD);
        if item.body.len() > room {
            // A large report: its longest texts cut, marked (the agent's journal and the
            // report's own outputs keep them whole).
            let (c, cut) = cut_to_fit(&v, room, CUT_BY).ok_or_else(|| {
                format!(
                    "larger than an upload may be ({} bytes; at most {room}) even with its texts cut",
                    item.body.len()
                )
            })?;
            eprintln!(
                "warning: the end of run {} is larger than an upload may be: {cut} byte(s) of its longest texts cut (marked) to send it",
                item.run_id
            );
            v = c;
        }
        let req = serde_json::from_value::<proto::FinishRequest>(v)
            .map_err(|e| format!("unreadable in the outbox: {e}"))?;
        Ok(sh
            .link
            .op(&sh.agent_id, &req)
            .await
            .map(|r| {
                if !r.accepted {
                    eprintln!(
                        "run {}: the orchestrator no longer counts this agent as its runner (lease expired); its end was not taken",
                        req.run_id
                    );
                }
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: i64, key: &str, body: &str) -> Item {
        Item {
            seq,
            run_id: "r".into(),
            kind: "record".into(),
            key: key.into(),
            body: body.into(),
        }
    }

    fn record(step: &str) -> String {
        let r = StepRecord::started("r", step, 1, Some("local"), "command", "t".into());
        serde_json::to_string(&r).unwrap()
    }

    /// Records go up typed; one that is not a step record, or not JSON, is not sent: it
    /// ends the batch before it, and alone it is refused by its key, saying why.
    #[test]
    fn a_record_is_sent_typed_or_refused_by_its_key() {
        let items = [
            item(1, "a", &record("a")),
            item(2, "bad/not-a-record", r#"{"x": 1}"#),
            item(3, "b", &record("b")),
        ];
        match records_batch(&items, 10, proto::MAX_AGENT_PLAINTEXT) {
            Batch::Send { req, seqs, .. } => {
                assert_eq!(seqs, [1]);
                assert_eq!(req.records.len(), 1);
                assert_eq!(req.records[0].key, "a");
                assert_eq!(req.records[0].record.step_id, "a");
            }
            Batch::Unsendable { why, .. } => panic!("{why}"),
        }
        match records_batch(&items[1..], 10, proto::MAX_AGENT_PLAINTEXT) {
            Batch::Unsendable { seq, key, why } => {
                assert_eq!((seq, key.as_str()), (2, "bad/not-a-record"));
                assert!(
                    why.contains(proto::BAD_RECORD) && why.contains("not a step record"),
                    "{why}"
                );
            }
            Batch::Send { seqs, .. } => panic!("sent {seqs:?}"),
        }
        match records_batch(&[item(4, "bad/unreadable", "not json {")], 10, 1 << 20) {
            Batch::Unsendable { key, why, .. } => {
                assert_eq!(key, "bad/unreadable");
                assert!(why.contains("unreadable in the outbox"), "{why}");
            }
            Batch::Send { seqs, .. } => panic!("sent {seqs:?}"),
        }
    }
}
