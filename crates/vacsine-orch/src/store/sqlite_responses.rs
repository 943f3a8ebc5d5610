//! Events and decisions in the SQLite store (issue 16). A child of `sqlite`.

use super::super::{BouncerRow, BouncerStore, DecisionRow, EventRow, ResponseStore, Result};
use super::SqliteStore;
use async_trait::async_trait;
use rusqlite::params;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS response_events (
  id TEXT PRIMARY KEY,
  site TEXT NOT NULL,
  received_ms INTEGER NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS response_events_recent ON response_events(received_ms DESC);
CREATE TABLE IF NOT EXISTS decisions (
  id TEXT PRIMARY KEY,
  body TEXT NOT NULL,
  scope TEXT NOT NULL,
  origin_site TEXT,
  event_ms INTEGER,
  decided_ms INTEGER NOT NULL,
  expires_ms INTEGER,
  deleted_ms INTEGER
);
CREATE TABLE IF NOT EXISTS decision_sites (
  decision_id TEXT NOT NULL,
  site TEXT NOT NULL,
  applied_ms INTEGER NOT NULL,
  PRIMARY KEY (decision_id, site)
);
CREATE TABLE IF NOT EXISTS feed_positions (
  feed TEXT PRIMARY KEY,
  position TEXT NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bouncers (
  name TEXT PRIMARY KEY,
  key_hash TEXT NOT NULL UNIQUE,
  site TEXT,
  created_ms INTEGER NOT NULL,
  last_pull_ms INTEGER,
  known TEXT NOT NULL
);
";

#[async_trait]
impl ResponseStore for SqliteStore {
    async fn put_events(&self, site: &str, events: &[(String, String)], now: i64) -> Result<usize> {
        let site = site.to_string();
        let events = events.to_vec();
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "INSERT OR IGNORE INTO response_events (id, site, received_ms, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut n = 0;
            for (id, body) in &events {
                n += st.execute(params![id, site, now, body])?;
            }
            Ok(n)
        })
        .await
    }

    async fn put_decision(&self, d: &DecisionRow) -> Result<bool> {
        let d = d.clone();
        self.with(move |c| {
            Ok(c.execute(
                "INSERT OR IGNORE INTO decisions (id, body, scope, origin_site, event_ms, decided_ms, expires_ms, signed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![d.id, d.body, d.scope, d.origin_site, d.event_ms, d.decided_ms, d.expires_ms, d.signed],
            )? == 1)
        })
        .await
    }

    async fn decision_applied(&self, id: &str, site: &str, at_ms: i64) -> Result<bool> {
        let (id, site) = (id.to_string(), site.to_string());
        self.with(move |c| {
            Ok(c.execute(
                "INSERT OR IGNORE INTO decision_sites (decision_id, site, applied_ms) VALUES (?1, ?2, ?3)",
                params![id, site, at_ms],
            )? == 1)
        })
        .await
    }

    async fn delete_decision(&self, id: &str, now: i64, deletion: &str) -> Result<bool> {
        let (id, deletion) = (id.to_string(), deletion.to_string());
        self.with(move |c| {
            Ok(c.execute(
                "UPDATE decisions SET deleted_ms = ?2, deletion = ?3 WHERE id = ?1 AND deleted_ms IS NULL",
                params![id, now, deletion],
            )? == 1)
        })
        .await
    }

    async fn decisions(&self) -> Result<Vec<DecisionRow>> {
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, body, scope, origin_site, event_ms, decided_ms, expires_ms, deleted_ms, signed, deletion
                 FROM decisions ORDER BY decided_ms, id",
            )?;
            let mut out: Vec<DecisionRow> = st
                .query_map([], |r| {
                    Ok(DecisionRow {
                        id: r.get(0)?,
                        body: r.get(1)?,
                        scope: r.get(2)?,
                        origin_site: r.get(3)?,
                        event_ms: r.get(4)?,
                        decided_ms: r.get(5)?,
                        expires_ms: r.get(6)?,
                        deleted_ms: r.get(7)?,
                        applied: Vec::new(),
                        signed: r.get(8)?,
                        deletion: r.get(9)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut st = c.prepare_cached(
                "SELECT decision_id, site, applied_ms FROM decision_sites ORDER BY decision_id, site",
            )?;
            let applied: Vec<(String, String, i64)> = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            super::super::attach_applied(&mut out, applied);
            Ok(out)
        })
        .await
    }

    async fn events(&self, site: Option<&str>, limit: usize) -> Result<Vec<EventRow>> {
        let site = site.map(str::to_string);
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, site, received_ms, body FROM response_events
                 WHERE (?1 IS NULL OR site = ?1) ORDER BY received_ms DESC, id LIMIT ?2",
            )?;
            let rows = st
                .query_map(params![site, limit as i64], |r| {
                    Ok(EventRow {
                        id: r.get(0)?,
                        site: r.get(1)?,
                        received_ms: r.get(2)?,
                        body: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn feed_position(&self, feed: &str) -> Result<Option<String>> {
        let feed = feed.to_string();
        self.with(move |c| {
            use rusqlite::OptionalExtension;
            Ok(c.query_row(
                "SELECT position FROM feed_positions WHERE feed = ?1",
                params![feed],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn set_feed_position(&self, feed: &str, position: &str, now: i64) -> Result<()> {
        let (feed, position) = (feed.to_string(), position.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO feed_positions (feed, position, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (feed) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms",
                params![feed, position, now],
            )?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl BouncerStore for SqliteStore {
    async fn put_bouncer(&self, b: &BouncerRow) -> Result<bool> {
        let b = b.clone();
        self.with(move |c| {
            Ok(c.execute(
                "INSERT OR IGNORE INTO bouncers (name, key_hash, site, created_ms, last_pull_ms, known)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![b.name, b.key_hash, b.site, b.created_ms, b.last_pull_ms, b.known],
            )? == 1)
        })
        .await
    }

    async fn bouncers(&self) -> Result<Vec<BouncerRow>> {
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT name, key_hash, site, created_ms, last_pull_ms, known FROM bouncers ORDER BY name",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok(BouncerRow {
                        name: r.get(0)?,
                        key_hash: r.get(1)?,
                        site: r.get(2)?,
                        created_ms: r.get(3)?,
                        last_pull_ms: r.get(4)?,
                        known: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_bouncer(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.with(move |c| {
            Ok(c.execute("DELETE FROM bouncers WHERE name = ?1", params![name])? == 1)
        })
        .await
    }

    async fn bouncer_pulled(&self, name: &str, known: &str, now: i64) -> Result<()> {
        let (name, known) = (name.to_string(), known.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE bouncers SET known = ?2, last_pull_ms = ?3 WHERE name = ?1",
                params![name, known, now],
            )?;
            Ok(())
        })
        .await
    }
}
