//! Assessment history in the PostgreSQL store (issue 17; migration 12). A child of `pg`.

use super::super::posture::{AssessmentRow, HistoryRow, PostureStore};
use super::super::Result;
use super::PgStore;
use async_trait::async_trait;

pub(super) const MIGRATION: &str = r#"
-- Assessment history (issue 17): each assessment once by key, results as changes only.
CREATE TABLE assessments (
  key TEXT PRIMARY KEY,
  site TEXT NOT NULL,
  schedule TEXT NOT NULL,
  kind TEXT NOT NULL,
  at_ms BIGINT NOT NULL,
  total BIGINT NOT NULL,
  passing BIGINT NOT NULL,
  failing BIGINT NOT NULL,
  error TEXT
);
CREATE INDEX assessments_site_at ON assessments(site, at_ms);
CREATE TABLE assessment_history (
  site TEXT NOT NULL,
  schedule TEXT NOT NULL,
  kind TEXT NOT NULL,
  node TEXT NOT NULL,
  item TEXT NOT NULL,
  since_ms BIGINT NOT NULL,
  outcome TEXT NOT NULL,
  evidence TEXT NOT NULL,
  title TEXT,
  refs TEXT NOT NULL,
  PRIMARY KEY (site, schedule, kind, node, item, since_ms)
);
"#;

fn assessment(r: &tokio_postgres::Row) -> AssessmentRow {
    AssessmentRow {
        key: r.get(0),
        site: r.get(1),
        schedule: r.get(2),
        kind: r.get(3),
        at_ms: r.get(4),
        total: r.get(5),
        passing: r.get(6),
        failing: r.get(7),
        error: r.get(8),
    }
}

#[async_trait]
impl PostureStore for PgStore {
    async fn put_assessment(&self, a: &AssessmentRow, changes: &[HistoryRow]) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let new = tx
            .execute(
                "INSERT INTO assessments (key, site, schedule, kind, at_ms, total, passing, failing, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (key) DO NOTHING",
                &[
                    &a.key, &a.site, &a.schedule, &a.kind, &a.at_ms, &a.total, &a.passing,
                    &a.failing, &a.error,
                ],
            )
            .await?
            == 1;
        if new {
            let st = tx
                .prepare_cached(
                    "INSERT INTO assessment_history
                       (site, schedule, kind, node, item, since_ms, outcome, evidence, title, refs)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (site, schedule, kind, node, item, since_ms) DO UPDATE
                       SET outcome = excluded.outcome, evidence = excluded.evidence,
                           title = excluded.title, refs = excluded.refs",
                )
                .await?;
            for h in changes {
                tx.execute(
                    &st,
                    &[
                        &h.site,
                        &h.schedule,
                        &h.kind,
                        &h.node,
                        &h.item,
                        &h.since_ms,
                        &h.outcome,
                        &h.evidence,
                        &h.title,
                        &h.refs,
                    ],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(new)
    }

    async fn assessments(&self, site: Option<&str>, since_ms: i64) -> Result<Vec<AssessmentRow>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT key, site, schedule, kind, at_ms, total, passing, failing, error
                 FROM assessments WHERE ($1::TEXT IS NULL OR site = $1) AND at_ms >= $2
                 ORDER BY at_ms, key",
                &[&site, &since_ms],
            )
            .await?;
        Ok(rows.iter().map(assessment).collect())
    }

    async fn history(&self, site: Option<&str>) -> Result<Vec<HistoryRow>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT site, schedule, kind, node, item, since_ms, outcome, evidence, title, refs
                 FROM assessment_history WHERE ($1::TEXT IS NULL OR site = $1)
                 ORDER BY site, schedule, kind, node, item, since_ms",
                &[&site],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| HistoryRow {
                site: r.get(0),
                schedule: r.get(1),
                kind: r.get(2),
                node: r.get(3),
                item: r.get(4),
                since_ms: r.get(5),
                outcome: r.get(6),
                evidence: r.get(7),
                title: r.get(8),
                refs: r.get(9),
            })
            .collect())
    }
}
