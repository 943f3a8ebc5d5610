//! Approvals in the SQLite store (issue 16). A child of `sqlite`.

use super::super::{ApprovalRow, ApprovalStore, Result};
use super::SqliteStore;
use async_trait::async_trait;
use rusqlite::params;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS approvals (
  id TEXT PRIMARY KEY,
  response TEXT NOT NULL,
  body TEXT NOT NULL,
  scope TEXT NOT NULL,
  site TEXT NOT NULL,
  event_ms INTEGER,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('awaiting', 'approved', 'denied')),
  settled_ms INTEGER
);
CREATE TABLE IF NOT EXISTS site_labels (
  site TEXT PRIMARY KEY,
  labels TEXT NOT NULL
);
";

#[async_trait]
impl ApprovalStore for SqliteStore {
    async fn site_labels(&self) -> Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut st = c.prepare_cached("SELECT site, labels FROM site_labels ORDER BY site")?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn set_site_labels(&self, site: &str, labels: &str) -> Result<()> {
        let (site, labels) = (site.to_string(), labels.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO site_labels (site, labels) VALUES (?1, ?2)
                 ON CONFLICT (site) DO UPDATE SET labels = excluded.labels",
                params![site, labels],
            )?;
            Ok(())
        })
        .await
    }

    async fn put_approval(&self, a: &ApprovalRow) -> Result<bool> {
        let a = a.clone();
        self.with(move |c| {
            Ok(c.execute(
                "INSERT OR IGNORE INTO approvals (id, response, body, scope, site, event_ms, created_ms, expires_ms, state, signed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'awaiting', ?9)",
                params![a.id, a.response, a.body, a.scope, a.site, a.event_ms, a.created_ms, a.expires_ms, a.signed],
            )? == 1)
        })
        .await
    }

    async fn approvals(&self) -> Result<Vec<ApprovalRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, response, body, scope, site, event_ms, created_ms, expires_ms, state, settled_ms, signed
                 FROM approvals ORDER BY created_ms, id",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok(ApprovalRow {
                        id: r.get(0)?,
                        response: r.get(1)?,
                        body: r.get(2)?,
                        scope: r.get(3)?,
                        site: r.get(4)?,
                        event_ms: r.get(5)?,
                        created_ms: r.get(6)?,
                        expires_ms: r.get(7)?,
                        state: r.get(8)?,
                        settled_ms: r.get(9)?,
                        signed: r.get(10)?,
                    })
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn settle_approval(&self, id: &str, state: &str, now: i64) -> Result<bool> {
        let (id, state) = (id.to_string(), state.to_string());
        self.with(move |c| {
            Ok(c.execute(
                "UPDATE approvals SET state = ?2, settled_ms = ?3
                 WHERE id = ?1 AND state = 'awaiting' AND expires_ms > ?3",
                params![id, state, now],
            )? == 1)
        })
        .await
    }
}
