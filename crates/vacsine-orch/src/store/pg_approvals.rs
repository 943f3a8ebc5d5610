//! Approvals in the PostgreSQL store (issue 16; migration 10). A child of `pg`.

use super::super::{ApprovalRow, ApprovalStore, Result};
use super::PgStore;
use async_trait::async_trait;

#[async_trait]
impl ApprovalStore for PgStore {
    async fn site_labels(&self) -> Result<Vec<(String, String)>> {
        let c = self.pool.get().await?;
        Ok(
            c.query("SELECT site, labels FROM site_labels ORDER BY site", &[])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        )
    }

    async fn set_site_labels(&self, site: &str, labels: &str) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO site_labels (site, labels) VALUES ($1, $2)
             ON CONFLICT (site) DO UPDATE SET labels = excluded.labels",
            &[&site, &labels],
        )
        .await?;
        // Every replica's long polls look at their site's decision set (its labels) again.
        self.notify(&c, super::News::Queue).await;
        Ok(())
    }

    async fn put_approval(&self, a: &ApprovalRow) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(c.execute(
            "INSERT INTO approvals (id, response, body, scope, site, event_ms, created_ms, expires_ms, state, signed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'awaiting', $9) ON CONFLICT (id) DO NOTHING",
            &[
                &a.id,
                &a.response,
                &a.body,
                &a.scope,
                &a.site,
                &a.event_ms,
                &a.created_ms,
                &a.expires_ms,
                &a.signed,
            ],
        )
        .await?
            == 1)
    }

    async fn approvals(&self) -> Result<Vec<ApprovalRow>> {
        let c = self.pool.get().await?;
        Ok(c
            .query(
                "SELECT id, response, body, scope, site, event_ms, created_ms, expires_ms, state, settled_ms, signed
                 FROM approvals ORDER BY created_ms, id",
                &[],
            )
            .await?
            .iter()
            .map(|r| ApprovalRow {
                id: r.get(0),
                response: r.get(1),
                body: r.get(2),
                scope: r.get(3),
                site: r.get(4),
                event_ms: r.get(5),
                created_ms: r.get(6),
                expires_ms: r.get(7),
                state: r.get(8),
                settled_ms: r.get(9),
                signed: r.get(10),
            })
            .collect())
    }

    async fn settle_approval(&self, id: &str, state: &str, now: i64) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(c.execute(
            "UPDATE approvals SET state = $2, settled_ms = $3
             WHERE id = $1 AND state = 'awaiting' AND expires_ms > $3",
            &[&id, &state, &now],
        )
        .await?
            == 1)
    }
}
