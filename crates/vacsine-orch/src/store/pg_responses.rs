//! Events and decisions in the PostgreSQL store (issue 16; migrations 7 and 8). A child of `pg`.

use super::super::{BouncerRow, BouncerStore, DecisionRow, EventRow, ResponseStore, Result};
use super::{News, PgStore};
use async_trait::async_trait;

#[async_trait]
impl ResponseStore for PgStore {
    async fn put_events(&self, site: &str, events: &[(String, String)], now: i64) -> Result<usize> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let st = tx
            .prepare_cached(
                "INSERT INTO response_events (id, site, received_ms, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO NOTHING",
            )
            .await?;
        let mut n = 0;
        for (id, body) in events {
            n += tx.execute(&st, &[id, &site, &now, body]).await? as usize;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn put_decision(&self, d: &DecisionRow) -> Result<bool> {
        let c = self.pool.get().await?;
        let new = c.execute(
            "INSERT INTO decisions (id, body, scope, origin_site, event_ms, decided_ms, expires_ms, signed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
            &[
                &d.id,
                &d.body,
                &d.scope,
                &d.origin_site,
                &d.event_ms,
                &d.decided_ms,
                &d.expires_ms,
                &d.signed,
            ],
        )
        .await?
            == 1;
        if new {
            // Every replica's long polls look at their site's decision set again.
            self.notify(&c, News::Queue).await;
        }
        Ok(new)
    }

    async fn decision_applied(&self, id: &str, site: &str, at_ms: i64) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(c.execute(
            "INSERT INTO decision_sites (decision_id, site, applied_ms) VALUES ($1, $2, $3)
             ON CONFLICT (decision_id, site) DO NOTHING",
            &[&id, &site, &at_ms],
        )
        .await?
            == 1)
    }

    async fn delete_decision(&self, id: &str, now: i64, deletion: &str) -> Result<bool> {
        let c = self.pool.get().await?;
        let done = c
            .execute(
                "UPDATE decisions SET deleted_ms = $2, deletion = $3 WHERE id = $1 AND deleted_ms IS NULL",
                &[&id, &now, &deletion],
            )
            .await?
            == 1;
        if done {
            self.notify(&c, News::Queue).await;
        }
        Ok(done)
    }

    async fn decisions(&self) -> Result<Vec<DecisionRow>> {
        let c = self.pool.get().await?;
        let mut out: Vec<DecisionRow> = c
            .query(
                "SELECT id, body, scope, origin_site, event_ms, decided_ms, expires_ms, deleted_ms, signed, deletion
                 FROM decisions ORDER BY decided_ms, id",
                &[],
            )
            .await?
            .iter()
            .map(|r| DecisionRow {
                id: r.get(0),
                body: r.get(1),
                scope: r.get(2),
                origin_site: r.get(3),
                event_ms: r.get(4),
                decided_ms: r.get(5),
                expires_ms: r.get(6),
                deleted_ms: r.get(7),
                applied: Vec::new(),
                signed: r.get(8),
                deletion: r.get(9),
            })
            .collect();
        let applied = c
            .query(
                "SELECT decision_id, site, applied_ms FROM decision_sites ORDER BY decision_id, site",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        super::super::attach_applied(&mut out, applied);
        Ok(out)
    }

    async fn events(&self, site: Option<&str>, limit: usize) -> Result<Vec<EventRow>> {
        let c = self.pool.get().await?;
        let limit = limit as i64;
        Ok(c.query(
            "SELECT id, site, received_ms, body FROM response_events
             WHERE ($1::TEXT IS NULL OR site = $1) ORDER BY received_ms DESC, id LIMIT $2",
            &[&site, &limit],
        )
        .await?
        .iter()
        .map(|r| EventRow {
            id: r.get(0),
            site: r.get(1),
            received_ms: r.get(2),
            body: r.get(3),
        })
        .collect())
    }

    async fn feed_position(&self, feed: &str) -> Result<Option<String>> {
        let c = self.pool.get().await?;
        Ok(c.query_opt(
            "SELECT position FROM feed_positions WHERE feed = $1",
            &[&feed],
        )
        .await?
        .map(|r| r.get(0)))
    }

    async fn set_feed_position(&self, feed: &str, position: &str, now: i64) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO feed_positions (feed, position, updated_ms) VALUES ($1, $2, $3)
             ON CONFLICT (feed) DO UPDATE SET position = EXCLUDED.position, updated_ms = EXCLUDED.updated_ms",
            &[&feed, &position, &now],
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl BouncerStore for PgStore {
    async fn put_bouncer(&self, b: &BouncerRow) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(c.execute(
            "INSERT INTO bouncers (name, key_hash, site, created_ms, last_pull_ms, known)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &b.name,
                &b.key_hash,
                &b.site,
                &b.created_ms,
                &b.last_pull_ms,
                &b.known,
            ],
        )
        .await?
            == 1)
    }

    async fn bouncers(&self) -> Result<Vec<BouncerRow>> {
        let c = self.pool.get().await?;
        Ok(c.query(
            "SELECT name, key_hash, site, created_ms, last_pull_ms, known FROM bouncers ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .map(|r| BouncerRow {
            name: r.get(0),
            key_hash: r.get(1),
            site: r.get(2),
            created_ms: r.get(3),
            last_pull_ms: r.get(4),
            known: r.get(5),
        })
        .collect())
    }

    async fn delete_bouncer(&self, name: &str) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(c.execute("DELETE FROM bouncers WHERE name = $1", &[&name])
            .await?
            == 1)
    }

    async fn bouncer_pulled(&self, name: &str, known: &str, now: i64) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            "UPDATE bouncers SET known = $2, last_pull_ms = $3 WHERE name = $1",
            &[&name, &known, &now],
        )
        .await?;
        Ok(())
    }
}
