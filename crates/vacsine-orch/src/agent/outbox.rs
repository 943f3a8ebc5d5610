//! The agent's outbox (SQLite, in `agent.db`): records, autonomous runs and run ends waiting
//! to be uploaded, in the order they were made, and the uploader that sends them.

use super::{Backoff, Shared};
use crate::client::CallError;
use crate::now_ms;
use crate::proto;
use anyhow::anyhow;
use rusqlite::{params, Connection};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records and run ends waiting to be uploaded, in the order they were made.
pub struct Outbox {
    conn: Mutex<Connection>,
}

struct Item {
    seq: i64,
    run_id: String,
    kind: String,
    key: String,
    body: String,
}

impl Outbox {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            crate::files::write_private(path, b"")?;
        }
        let conn = Connection::open(path)?;
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
        Ok(Outbox {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| anyhow!("outbox lock poisoned"))
    }

    /// Queue an item once per key (a key already queued or sent is left alone).
    pub(crate) fn put(&self, key: &str, run_id: &str, kind: &str, body: &str) -> anyhow::Result<bool> {
        Ok(self.lock()?.execute(
            "INSERT OR IGNORE INTO outbox (key, run_id, kind, body) VALUES (?1, ?2, ?3, ?4)",
            params![key, run_id, kind, body],
        )? == 1)
    }

    pub(crate) fn pending(&self, limit: usize) -> anyhow::Result<Vec<Item>> {
        let c = self.lock()?;
        let mut st = c.prepare(
            "SELECT seq, run_id, kind, key, body FROM outbox WHERE sent_ms IS NULL ORDER BY seq LIMIT ?1",
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

    pub(crate) fn mark_sent(&self, seqs: &[i64]) -> anyhow::Result<()> {
        let mut c = self.lock()?;
        let tx = c.transaction()?;
        for s in seqs {
            tx.execute(
                "UPDATE outbox SET sent_ms = ?2 WHERE seq = ?1",
                params![s, now_ms()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Items not uploaded yet.
    pub fn pending_count(&self) -> anyhow::Result<i64> {
        Ok(self.lock()?.query_row(
            "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL",
            [],
            |r| r.get(0),
        )?)
    }
}

/// Upload the outbox in order: consecutive records of one run in one request, then run ends.
pub(super) async fn uploader(sh: Arc<Shared>) {
    let mut backoff = Backoff::default();
    loop {
        let items = match sh.outbox.pending(200) {
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
                _ = tokio::time::sleep(Duration::from_secs(2)) => {},
            }
            continue;
        };
        let batch: Vec<&Item> = if first.kind == "record" {
            items
                .iter()
                .take_while(|i| i.kind == "record" && i.run_id == first.run_id)
                .collect()
        } else {
            vec![first]
        };
        let r: Result<(), CallError> = if first.kind == "record" {
            let req = proto::RecordsRequest {
                run_id: first.run_id.clone(),
                records: batch
                    .iter()
                    .map(|i| proto::KeyedRecord {
                        key: i.key.clone(),
                        record: serde_json::from_str(&i.body).unwrap_or_default(),
                    })
                    .collect(),
            };
            sh.link
                .call::<_, proto::RecordsResponse>(proto::RECORDS, &sh.agent_id, &req)
                .await
                .map(|_| ())
        } else if first.kind == "autonomous" {
            // An autonomous run made here: the orchestrator learns of it before its records.
            match serde_json::from_str::<proto::AutonomousRun>(&first.body) {
                Ok(req) => sh
                    .link
                    .call::<_, proto::AutonomousAccepted>(proto::AUTONOMOUS, &sh.agent_id, &req)
                    .await
                    .map(|a| {
                        if a.created {
                            eprintln!(
                                "autonomous run {} ({}) reported to the orchestrator",
                                req.run_id, req.workflow
                            );
                        }
                    }),
                Err(e) => Err(CallError::Bad(e.to_string())),
            }
        } else {
            match serde_json::from_str::<proto::FinishRequest>(&first.body) {
                Ok(req) => sh
                    .link
                    .call::<_, proto::FinishResponse>(proto::FINISH, &sh.agent_id, &req)
                    .await
                    .map(|r| {
                        if !r.accepted {
                            eprintln!(
                                "run {}: the orchestrator no longer counts this agent as its runner (lease expired); its end was not taken",
                                req.run_id
                            );
                        }
                    }),
                Err(e) => Err(CallError::Bad(e.to_string())),
            }
        };
        let seqs: Vec<i64> = batch.iter().map(|i| i.seq).collect();
        match r {
            Ok(()) => {
                backoff.ok("uploading");
                if let Err(e) = sh.outbox.mark_sent(&seqs) {
                    eprintln!("warning: outbox: {e}");
                }
            }
            Err(e) if e.is_revoked() => {
                let _ = sh.fatal.send(Some(e.to_string()));
                return;
            }
            Err(CallError::Refused {
                status,
                code,
                message,
                ..
            }) if status < 500 && code != "stale" => {
                // Permanent: this agent may not upload them (the run is no longer its own).
                eprintln!(
                    "warning: {} item(s) of run {} refused by the orchestrator ({code}): {message}; dropped",
                    seqs.len(),
                    first.run_id
                );
                let _ = sh.outbox.mark_sent(&seqs);
            }
            Err(CallError::Bad(m)) => {
                eprintln!(
                    "warning: outbox item {} unreadable ({m}); dropped",
                    first.key
                );
                let _ = sh.outbox.mark_sent(&seqs);
            }
            Err(e) => backoff.fail("uploading", &e).await,
        }
    }
}

