//! Console users and sessions in the SQLite store (issue 17). A child of `sqlite`.

use super::super::{Result, SessionRow, UserRow, UserStore};
use super::SqliteStore;
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS console_users (
  name TEXT PRIMARY KEY,
  role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  token_hash TEXT NOT NULL UNIQUE,
  created_ms INTEGER NOT NULL,
  revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS console_sessions (
  id_hash TEXT PRIMARY KEY,
  user_name TEXT NOT NULL REFERENCES console_users(name),
  csrf TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions(user_name);
";

const USER_COLS: &str = "name, role, token_hash, created_ms, revoked_ms";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        name: r.get(0)?,
        role: r.get(1)?,
        token_hash: r.get(2)?,
        created_ms: r.get(3)?,
        revoked_ms: r.get(4)?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn put_user(&self, u: &UserRow) -> Result<bool> {
        let u = u.clone();
        self.with(move |c| {
            // A revoked user's name may be given again (new role, new token); a live one not.
            Ok(c.execute(
                "INSERT INTO console_users (name, role, token_hash, created_ms, revoked_ms)
                 VALUES (?1, ?2, ?3, ?4, NULL)
                 ON CONFLICT (name) DO UPDATE SET role = excluded.role,
                   token_hash = excluded.token_hash, created_ms = excluded.created_ms,
                   revoked_ms = NULL
                 WHERE console_users.revoked_ms IS NOT NULL",
                params![u.name, u.role, u.token_hash, u.created_ms],
            )? == 1)
        })
        .await
    }

    async fn users(&self) -> Result<Vec<UserRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {USER_COLS} FROM console_users ORDER BY name"
            ))?;
            let rows = st
                .query_map([], user_row)?
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn user_by_token(&self, token_hash: &str) -> Result<Option<UserRow>> {
        let h = token_hash.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {USER_COLS} FROM console_users WHERE token_hash = ?1 AND revoked_ms IS NULL"
                ),
                params![h],
                user_row,
            )
            .optional()?)
        })
        .await
    }

    async fn revoke_user(&self, name: &str, now: i64) -> Result<Option<usize>> {
        let name = name.to_string();
        self.with(move |c| {
            let n = c.execute(
                "UPDATE console_users SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL",
                params![name, now],
            )?;
            if n == 0 {
                return Ok(None);
            }
            let ended = c.execute(
                "DELETE FROM console_sessions WHERE user_name = ?1",
                params![name],
            )?;
            Ok(Some(ended))
        })
        .await
    }

    async fn put_session(&self, s: &SessionRow, now: i64) -> Result<()> {
        let s = s.clone();
        self.with(move |c| {
            c.execute(
                "DELETE FROM console_sessions WHERE expires_ms <= ?1",
                params![now],
            )?;
            c.execute(
                "INSERT INTO console_sessions (id_hash, user_name, csrf, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![s.id_hash, s.user, s.csrf, s.created_ms, s.expires_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &str, now: i64) -> Result<Option<(SessionRow, UserRow)>> {
        let h = id_hash.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT s.id_hash, s.user_name, s.csrf, s.created_ms, s.expires_ms,
                        u.name, u.role, u.token_hash, u.created_ms, u.revoked_ms
                 FROM console_sessions s JOIN console_users u ON u.name = s.user_name
                 WHERE s.id_hash = ?1 AND s.expires_ms > ?2 AND u.revoked_ms IS NULL",
                params![h, now],
                |r| {
                    Ok((
                        SessionRow {
                            id_hash: r.get(0)?,
                            user: r.get(1)?,
                            csrf: r.get(2)?,
                            created_ms: r.get(3)?,
                            expires_ms: r.get(4)?,
                        },
                        UserRow {
                            name: r.get(5)?,
                            role: r.get(6)?,
                            token_hash: r.get(7)?,
                            created_ms: r.get(8)?,
                            revoked_ms: r.get(9)?,
                        },
                    ))
                },
            )
            .optional()?)
        })
        .await
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let h = id_hash.to_string();
        self.with(move |c| {
            Ok(c.execute(
                "DELETE FROM console_sessions WHERE id_hash = ?1",
                params![h],
            )? == 1)
        })
        .await
    }
}
