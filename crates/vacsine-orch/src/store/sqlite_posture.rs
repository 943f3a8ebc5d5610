//! Assessment history in the SQLite store (issue 17). A child of `sqlite`.

use super::super::posture::{AssessmentRow, HistoryRow, PostureStore};
use super::super::Result;
use super::SqliteStore;
use async_trait::async_trait;
use rusqlite::params;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS assessments (
  key TEXT PRIMARY KEY,
  site TEXT NOT NULL,
  schedule TEXT NOT NULL,
  kind TEXT NOT NULL,
  at_ms INTEGER NOT NULL,
  total INTEGER NOT NULL,
  passing INTEGER NOT NULL,
  failing INTEGER NOT NULL,
  error TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS assessments_site_at ON assessments(site, at_ms);
CREATE TABLE IF NOT EXISTS assessment_history (
  site TEXT NOT NULL,
  schedule TEXT NOT NULL,
  kind TEXT NOT NULL,
  node TEXT NOT NULL,
  item TEXT NOT NULL,
  since_ms INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  evidence TEXT NOT NULL,
  title TEXT,
  refs TEXT NOT NULL,
  PRIMARY KEY (site, schedule, kind, node, item, since_ms)
) WITHOUT ROWID;
";

fn assessment(r: &rusqlite::Row) -> rusqlite::Result<AssessmentRow> {
    Ok(AssessmentRow {
        key: r.get(0)?,
        site: r.get(1)?,
        schedule: r.get(2)?,
        kind: r.get(3)?,
        at_ms: r.get(4)?,
        total: r.get(5)?,
        passing: r.get(6)?,
        failing: r.get(7)?,
        error: r.get(8)?,
    })
}

#[async_trait]
impl PostureStore for SqliteStore {
    async fn put_assessment(&self, a: &AssessmentRow, changes: &[HistoryRow]) -> Result<bool> {
        let (a, changes) = (a.clone(), changes.to_vec());
        self.with(move |c| {
            let new = c.execute(
                "INSERT OR IGNORE INTO assessments (key, site, schedule, kind, at_ms, total, passing, failing, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![a.key, a.site, a.schedule, a.kind, a.at_ms, a.total, a.passing, a.failing, a.error],
            )? == 1;
            if new {
                let mut st = c.prepare_cached(
                    "INSERT OR REPLACE INTO assessment_history
                       (site, schedule, kind, node, item, since_ms, outcome, evidence, title, refs)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                for h in &changes {
                    st.execute(params![
                        h.site, h.schedule, h.kind, h.node, h.item, h.since_ms, h.outcome,
                        h.evidence, h.title, h.refs
                    ])?;
                }
            }
            Ok(new)
        })
        .await
    }

    async fn assessments(&self, site: Option<&str>, since_ms: i64) -> Result<Vec<AssessmentRow>> {
        let site = site.map(str::to_string);
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT key, site, schedule, kind, at_ms, total, passing, failing, error
                 FROM assessments WHERE (?1 IS NULL OR site = ?1) AND at_ms >= ?2
                 ORDER BY at_ms, key",
            )?;
            let rows = st
                .query_map(params![site, since_ms], assessment)?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn history(&self, site: Option<&str>) -> Result<Vec<HistoryRow>> {
        let site = site.map(str::to_string);
        self.with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT site, schedule, kind, node, item, since_ms, outcome, evidence, title, refs
                 FROM assessment_history WHERE (?1 IS NULL OR site = ?1)
                 ORDER BY site, schedule, kind, node, item, since_ms",
            )?;
            let rows = st
                .query_map(params![site], |r| {
                    Ok(HistoryRow {
                        site: r.get(0)?,
                        schedule: r.get(1)?,
                        kind: r.get(2)?,
                        node: r.get(3)?,
                        item: r.get(4)?,
                        since_ms: r.get(5)?,
                        outcome: r.get(6)?,
                        evidence: r.get(7)?,
                        title: r.get(8)?,
                        refs: r.get(9)?,
                    })
                })?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}
