//! Console users and sessions in the PostgreSQL store (issue 17; migration 13). A child of
//! `pg`.

use super::super::{Result, SessionRow, UserRow, UserStore};
use super::PgStore;
use async_trait::async_trait;
use tokio_postgres::Row;

const USER_COLS: &str = "name, role, token_hash, created_ms, revoked_ms";

fn user_row(r: &Row, at: usize) -> UserRow {
    UserRow {
        name: r.get(at),
        role: r.get(at + 1),
        token_hash: r.get(at + 2),
        created_ms: r.get(at + 3),
        revoked_ms: r.get(at + 4),
    }
}

#[async_trait]
impl UserStore for PgStore {
    async fn put_user(&self, u: &UserRow) -> Result<bool> {
        let c = self.pool.get().await?;
        // A revoked user's name may be given again (new role, new token); a live one not.
        Ok(c.execute(
            "INSERT INTO console_users (name, role, token_hash, created_ms, revoked_ms)
             VALUES ($1, $2, $3, $4, NULL)
             ON CONFLICT (name) DO UPDATE SET role = excluded.role,
               token_hash = excluded.token_hash, created_ms = excluded.created_ms,
               revoked_ms = NULL
             WHERE console_users.revoked_ms IS NOT NULL",
            &[&u.name, &u.role, &u.token_hash, &u.created_ms],
        )
        .await?
            == 1)
    }

    async fn users(&self) -> Result<Vec<UserRow>> {
        let c = self.pool.get().await?;
        Ok(c.query(
            &format!("SELECT {USER_COLS} FROM console_users ORDER BY name"),
            &[],
        )
        .await?
        .iter()
        .map(|r| user_row(r, 0))
        .collect())
    }

    async fn user_by_token(&self, token_hash: &str) -> Result<Option<UserRow>> {
        let c = self.pool.get().await?;
        Ok(c.query_opt(
            &format!(
                "SELECT {USER_COLS} FROM console_users WHERE token_hash = $1 AND revoked_ms IS NULL"
            ),
            &[&token_hash],
        )
        .await?
        .map(|r| user_row(&r, 0)))
    }

    async fn revoke_user(&self, name: &str, now: i64) -> Result<Option<usize>> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE console_users SET revoked_ms = $2 WHERE name = $1 AND revoked_ms IS NULL",
                &[&name, &now],
            )
            .await?;
        if n == 0 {
            return Ok(None);
        }
        let ended = tx
            .execute(
                "DELETE FROM console_sessions WHERE user_name = $1",
                &[&name],
            )
            .await?;
        tx.commit().await?;
        Ok(Some(ended as usize))
    }

    async fn put_session(&self, s: &SessionRow, now: i64) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            "DELETE FROM console_sessions WHERE expires_ms <= $1",
            &[&now],
        )
        .await?;
        c.execute(
            "INSERT INTO console_sessions (id_hash, user_name, csrf, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
            &[&s.id_hash, &s.user, &s.csrf, &s.created_ms, &s.expires_ms],
        )
        .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: i64) -> Result<Option<(SessionRow, UserRow)>> {
        let c = self.pool.get().await?;
        Ok(c.query_opt(
            "SELECT s.id_hash, s.user_name, s.csrf, s.created_ms, s.expires_ms,
                    u.name, u.role, u.token_hash, u.created_ms, u.revoked_ms
             FROM console_sessions s JOIN console_users u ON u.name = s.user_name
             WHERE s.id_hash = $1 AND s.expires_ms > $2 AND u.revoked_ms IS NULL",
            &[&id_hash, &now],
        )
        .await?
        .map(|r| {
            (
                SessionRow {
                    id_hash: r.get(0),
                    user: r.get(1),
                    csrf: r.get(2),
                    created_ms: r.get(3),
                    expires_ms: r.get(4),
                },
                user_row(&r, 5),
            )
        }))
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let c = self.pool.get().await?;
        Ok(c.execute(
            "DELETE FROM console_sessions WHERE id_hash = $1",
            &[&id_hash],
        )
        .await?
            == 1)
    }
}
