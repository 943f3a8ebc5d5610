//! The embedded store: one SQLite file (WAL, synchronous FULL, 0600), one connection.
//!
//! Group commit: the connection lives on its own thread, which takes the operations waiting
//! for it together, runs each in its own savepoint (one that fails is undone alone) inside
//! one transaction, commits once, and only then answers each of them. A commit is a disk
//! flush, so many agents asking at once share one flush, and no answer is given before what
//! it confirms is on disk (durability as with a commit per operation). The async callers
//! never block on the disk.

use super::{
    policy, AgentRow, Cursor, Expired, IdempotentRow, MetricCounts, RegistryRow, Result, RunPage,
    RunQuery, RunRow, SignedRow, SiteOutcome, SiteRow, Store, StoreError, Stored, ENDED_SQL,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use vacsine_engine::retention::{Candidate, Removed};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sites (
  name TEXT PRIMARY KEY,
  intake_hash TEXT NOT NULL UNIQUE,
  created_ms INTEGER NOT NULL,
  revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS agents (
  id TEXT PRIMARY KEY,
  site TEXT NOT NULL REFERENCES sites(name),
  name TEXT NOT NULL,
  public_key TEXT NOT NULL,
  version TEXT NOT NULL,
  enrolled_ms INTEGER NOT NULL,
  last_seen_ms INTEGER NOT NULL,
  revoked_ms INTEGER
);
CREATE INDEX IF NOT EXISTS agents_site ON agents(site, name);
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY,
  site TEXT NOT NULL,
  workflow TEXT NOT NULL,
  request TEXT NOT NULL,
  status TEXT NOT NULL,
  agent_id TEXT,
  lease_expires_ms INTEGER,
  offers INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL,
  started_ms INTEGER,
  finished_ms INTEGER,
  message TEXT
);
CREATE INDEX IF NOT EXISTS runs_queue ON runs(site, status, created_ms);
CREATE TABLE IF NOT EXISTS records (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id TEXT NOT NULL,
  key TEXT NOT NULL UNIQUE,
  record TEXT NOT NULL,
  received_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_run ON records(run_id, seq);
CREATE TABLE IF NOT EXISTS signed_jobs (
  run_id TEXT PRIMARY KEY,
  payload TEXT NOT NULL,
  signature TEXT NOT NULL,
  key_id TEXT NOT NULL,
  signed_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS registry (
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  version INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  document TEXT NOT NULL,
  pushed_ms INTEGER NOT NULL,
  PRIMARY KEY (kind, name, version)
);
";

#[path = "sqlite_approvals.rs"]
mod approvals;
/// Added after the first schema (stores made before it get it at their next start): the
/// reports of enforce runs.
#[path = "sqlite_posture.rs"]
mod posture;
#[path = "sqlite_responses.rs"]
mod responses;
#[path = "sqlite_users.rs"]
mod users;

const REPORTS: &str = "
CREATE TABLE IF NOT EXISTS run_reports (
  run_id TEXT PRIMARY KEY REFERENCES runs(id),
  report TEXT NOT NULL,
  received_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS site_outcomes (
  run_id TEXT PRIMARY KEY REFERENCES runs(id),
  status TEXT NOT NULL,
  message TEXT,
  reported_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
  key TEXT PRIMARY KEY,
  request TEXT NOT NULL,
  status INTEGER,
  response TEXT,
  created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys(created_ms);
CREATE TABLE IF NOT EXISTS agent_outboxes (
  agent_id TEXT PRIMARY KEY,
  report TEXT NOT NULL,
  reported_ms INTEGER NOT NULL
);
";

/// Added for 100,000 runs and more (stores made before get them at their next start): the
/// run list newest first, by site and by status (also the lease sweeper's `running`), each
/// read in index order with no sort.
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS runs_recent ON runs(created_ms);
CREATE INDEX IF NOT EXISTS runs_site_recent ON runs(site, created_ms);
CREATE INDEX IF NOT EXISTS runs_status_recent ON runs(status, created_ms);
";

/// Runs removed by one transaction of [`SqliteStore::remove_runs`]: the connection serves
/// the agents between two.
const REMOVE_CHUNK: usize = 500;

/// What becomes of an operation once its batch committed (`None`) or did not (the error).
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;
/// An operation for the connection's thread.
type Job = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;

/// Operations taken into one transaction at most.
const MAX_BATCH: usize = 256;

pub struct SqliteStore {
    /// The file (none in memory): space is given back through a connection of its own.
    path: Option<PathBuf>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The thread ends when no sender is left; the connection is closed once it has.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The connection's thread: each batch of waiting operations in one transaction.
fn serve_jobs(mut conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        // One operation alone needs no outer transaction: its savepoint is its transaction.
        // Without the outer transaction (cannot begin), each operation's savepoint is its
        // own transaction: still correct, one commit each.
        let began = batch.len() > 1 && run_cached(&conn, "BEGIN IMMEDIATE").is_ok();
        let replies: Vec<Reply> = batch.into_iter().map(|job| job(&mut conn)).collect();
        let failed = if began {
            match run_cached(&conn, "COMMIT") {
                Ok(()) => None,
                Err(e) => {
                    let _ = run_cached(&conn, "ROLLBACK");
                    Some(e.to_string())
                }
            }
        } else {
            None
        };
        for r in replies {
            r(failed.as_deref());
        }
    }
}

/// Run one statement that takes no parameters and returns no rows (a transaction's begin, end
/// or savepoint), prepared once per connection: the store's every operation runs several.
fn run_cached(c: &Connection, sql: &str) -> rusqlite::Result<()> {
    c.prepare_cached(sql)?.execute([]).map(drop)
}

/// Undo what the savepoint `job` holds and end it.
fn undo_job(c: &Connection) -> rusqlite::Result<()> {
    run_cached(c, "ROLLBACK TO job")?;
    run_cached(c, "RELEASE job")
}

/// Run `f` in a savepoint: kept when it succeeds, undone when it fails (an operation returns
/// its error and leaves nothing behind: it needs no savepoint of its own).
fn in_savepoint<T>(c: &mut Connection, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
    run_cached(c, "SAVEPOINT job")?;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *c)))
        .unwrap_or_else(|_| Err(StoreError::Other("a store operation panicked".into())));
    let end = match r {
        Ok(_) => run_cached(c, "RELEASE job"),
        Err(_) => undo_job(c),
    };
    if let Err(e) = end {
        let _ = undo_job(c);
        return Err(e.into());
    }
    r
}

fn agent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        id: r.get("id")?,
        site: r.get("site")?,
        name: r.get("name")?,
        public_key: r.get("public_key")?,
        version: r.get("version")?,
        enrolled_ms: r.get("enrolled_ms")?,
        last_seen_ms: r.get("last_seen_ms")?,
        revoked_ms: r.get("revoked_ms")?,
    })
}

const RUN_COLS: &str = "id, site, workflow, request, status, agent_id, lease_expires_ms, offers, created_ms, started_ms, finished_ms, message, (SELECT COUNT(*) FROM records WHERE run_id = runs.id) AS nrec, (SELECT status FROM site_outcomes WHERE run_id = runs.id) AS site_status, (SELECT message FROM site_outcomes WHERE run_id = runs.id) AS site_message, (SELECT reported_ms FROM site_outcomes WHERE run_id = runs.id) AS site_reported_ms";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get("id")?,
        site: r.get("site")?,
        workflow: r.get("workflow")?,
        request: r.get("request")?,
        status: r.get("status")?,
        agent_id: r.get("agent_id")?,
        lease_expires_ms: r.get("lease_expires_ms")?,
        offers: r.get("offers")?,
        created_ms: r.get("created_ms")?,
        started_ms: r.get("started_ms")?,
        finished_ms: r.get("finished_ms")?,
        message: r.get("message")?,
        records: r.get("nrec")?,
        site_outcome: match r.get::<_, Option<String>>("site_status")? {
            Some(status) => Some(SiteOutcome {
                status,
                message: r.get("site_message")?,
                reported_ms: r.get("site_reported_ms")?,
            }),
            None => None,
        },
    })
}

const REG_COLS: &str = "kind, name, version, sha256, document, pushed_ms, signature";

fn registry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RegistryRow> {
    Ok(RegistryRow {
        kind: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        sha256: r.get(3)?,
        document: r.get(4)?,
        pushed_ms: r.get(5)?,
        signature: r.get(6)?,
    })
}

impl SqliteStore {
    /// Open (or create) the store file, private to its owner.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = vacsine_private::sqlite::open(path)
            .map_err(|e| StoreError::Other(format!("cannot open {e}")))?;
        Self::init(conn, Some(path.to_path_buf()))
    }

    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?, None)
    }

    fn init(conn: Connection, path: Option<PathBuf>) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Every operation runs a handful of statements, a few dozen in all: each prepared once.
        conn.set_prepared_statement_cache_capacity(64);
        // A new file gives freed pages back to the file system as runs are removed (an
        // older one is converted by its first removal: see `remove_runs`).
        conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(REPORTS)?;
        conn.execute_batch(INDEXES)?;
        conn.execute_batch(responses::SCHEMA)?;
        conn.execute_batch(approvals::SCHEMA)?;
        conn.execute_batch(users::SCHEMA)?;
        conn.execute_batch(posture::SCHEMA)?;
        // Added after the first schema: each registry document's signature, made at push.
        let has_signature: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('registry') WHERE name = 'signature'",
            [],
            |r| r.get(0),
        )?;
        if !has_signature {
            conn.execute_batch("ALTER TABLE registry ADD COLUMN signature TEXT")?;
        }
        // Added after: decisions, their deletions and approvals as signed when made.
        for (table, column) in [
            ("decisions", "signed"),
            ("decisions", "deletion"),
            ("approvals", "signed"),
        ] {
            let has: bool = conn.query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                rusqlite::params![table, column],
                |r| r.get(0),
            )?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} TEXT"))?;
            }
        }
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("vacsine-sqlite".into())
            .spawn(move || serve_jobs(conn, rx))
            .map_err(|e| StoreError::Other(format!("cannot start the store's thread: {e}")))?;
        Ok(SqliteStore {
            path,
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Run `f` on the connection's thread; its result once the transaction holding it is
    /// committed.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let gone = || StoreError::Other("the store's thread stopped".into());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |c: &mut Connection| {
            let r = in_savepoint(c, f);
            Box::new(move |failed: Option<&str>| {
                let r = match (r, failed) {
                    (Ok(_), Some(e)) => Err(StoreError::Other(format!("commit failed: {e}"))),
                    (r, _) => r,
                };
                let _ = tx.send(r);
            })
        });
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_site(&self, name: &str, intake_hash: &str, now: i64) -> Result<()> {
        let name = name.to_string();
        let intake_hash = intake_hash.to_string();
        self.with(move |c| {
            let exists: bool = c.query_row(
                "SELECT COUNT(*) > 0 FROM sites WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )?;
            if exists {
                return Err(policy::site_exists(&name));
            }
            c.execute(
                "INSERT INTO sites (name, intake_hash, created_ms) VALUES (?1, ?2, ?3)",
                params![name, intake_hash, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn sites(&self) -> Result<Vec<SiteRow>> {
        self.with(move |c| {
            let mut st =
                c.prepare("SELECT name, created_ms, revoked_ms FROM sites ORDER BY name")?;
            let rows = st.query_map([], |r| {
                Ok(SiteRow {
                    name: r.get(0)?,
                    created_ms: r.get(1)?,
                    revoked_ms: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn revoke_site(&self, name: &str, now: i64) -> Result<()> {
        let name = name.to_string();
        self.with(move |c| {
            let tx = c.savepoint()?;
            let n = tx.execute(
                "UPDATE sites SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE name = ?1",
                params![name, now],
            )?;
            if n == 0 {
                return Err(policy::no_site(&name));
            }
            tx.execute(
                "UPDATE agents SET revoked_ms = COALESCE(revoked_ms, ?2) WHERE site = ?1",
                params![name, now],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn revoke_agent(&self, site: &str, name: &str, now: i64) -> Result<()> {
        let site = site.to_string();
        let name = name.to_string();
        self.with(move |c| {
            let n = c.execute(
                "UPDATE agents SET revoked_ms = COALESCE(revoked_ms, ?3) WHERE site = ?1 AND name = ?2",
                params![site, name, now],
            )?;
            if n == 0 {
                return Err(policy::no_agent(&site, &name));
            }
            Ok(())
        })
        .await
    }

    async fn site_by_intake(&self, intake_hash: &str) -> Result<Option<SiteRow>> {
        let intake_hash = intake_hash.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT name, created_ms, revoked_ms FROM sites WHERE intake_hash = ?1 AND revoked_ms IS NULL",
                [&intake_hash],
                |r| {
                    Ok(SiteRow {
                        name: r.get(0)?,
                        created_ms: r.get(1)?,
                        revoked_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn enroll_agent(&self, a: &AgentRow) -> Result<()> {
        let a = a.clone();
        self.with(move |c| {
            let taken: bool = c.query_row(
                "SELECT COUNT(*) > 0 FROM agents WHERE site = ?1 AND name = ?2 AND revoked_ms IS NULL",
                params![a.site, a.name],
                |r| r.get(0),
            )?;
            if taken {
                return Err(policy::agent_name_taken(&a.site, &a.name));
            }
            c.execute(
                "INSERT INTO agents (id, site, name, public_key, version, enrolled_ms, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![a.id, a.site, a.name, a.public_key, a.version, a.enrolled_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn agent(&self, id: &str) -> Result<Option<AgentRow>> {
        let id = id.to_string();
        self.with(move |c| {
            Ok(c.prepare_cached("SELECT * FROM agents WHERE id = ?1")?
                .query_row([&id], agent_row)
                .optional()?)
        })
        .await
    }

    async fn agents(&self) -> Result<Vec<AgentRow>> {
        self.with(move |c| {
            let mut st = c.prepare("SELECT * FROM agents ORDER BY site, name, enrolled_ms")?;
            let rows = st.query_map([], agent_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn touch_agent(&self, id: &str, now: i64) -> Result<()> {
        let id = id.to_string();
        self.with(move |c| {
            c.prepare_cached(
                "UPDATE agents SET last_seen_ms = MAX(last_seen_ms, ?2) WHERE id = ?1",
            )?
            .execute(params![id, now])?;
            Ok(())
        })
        .await
    }

    async fn put_signed_job(&self, run: &str, j: &SignedRow, now: i64) -> Result<()> {
        let run = run.to_string();
        let j = j.clone();
        self.with(move |c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO signed_jobs (run_id, payload, signature, key_id, signed_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run, j.payload, j.signature, j.key_id, now],
            )?;
            if n == 0 {
                return Err(policy::job_already_signed(&run));
            }
            Ok(())
        })
        .await
    }

    /// One transaction, one commit (a commit is a disk flush here).
    async fn create_signed_run(&self, r: &RunRow, j: &SignedRow, now: i64) -> Result<()> {
        let r = r.clone();
        let j = j.clone();
        self.with(move |c| {
            let tx = c.savepoint()?;
            let n = tx.execute(
                "INSERT OR IGNORE INTO signed_jobs (run_id, payload, signature, key_id, signed_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r.id, j.payload, j.signature, j.key_id, now],
            )?;
            if n == 0 {
                return Err(policy::job_already_signed(&r.id));
            }
            tx.execute(
                "INSERT INTO runs (id, site, workflow, request, status, created_ms, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    r.id,
                    r.site,
                    r.workflow,
                    r.request,
                    r.status,
                    r.created_ms,
                    r.message
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn signed_job(&self, run: &str) -> Result<Option<SignedRow>> {
        let run = run.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT payload, signature, key_id FROM signed_jobs WHERE run_id = ?1",
                [&run],
                |r| {
                    Ok(SignedRow {
                        payload: r.get(0)?,
                        signature: r.get(1)?,
                        key_id: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn push_document(
        &self,
        kind: &str,
        name: &str,
        sha256: &str,
        document: &str,
        signature: &str,
        now: i64,
    ) -> Result<(RegistryRow, bool)> {
        let kind = kind.to_string();
        let name = name.to_string();
        let sha256 = sha256.to_string();
        let document = document.to_string();
        let signature = signature.to_string();
        self.with(move |c| {
            let tx = c.savepoint()?;
            let latest = tx
                .query_row(
                    &format!("SELECT {REG_COLS} FROM registry WHERE kind = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1"),
                    params![kind, name],
                    registry_row,
                )
                .optional()?;
            if let Some(l) = latest.as_ref().filter(|l| l.sha256 == sha256) {
                let mut l = l.clone();
                if l.signature.is_none() {
                    tx.execute(
                        "UPDATE registry SET signature = ?4 WHERE kind = ?1 AND name = ?2 AND version = ?3",
                        params![l.kind, l.name, l.version, signature],
                    )?;
                    tx.commit()?;
                    l.signature = Some(signature);
                }
                return Ok((l, false));
            }
            let row = RegistryRow {
                kind,
                name,
                version: latest.map_or(1, |l| l.version + 1),
                sha256,
                document,
                pushed_ms: now,
                signature: Some(signature),
            };
            tx.execute(
                "INSERT INTO registry (kind, name, version, sha256, document, pushed_ms, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![row.kind, row.name, row.version, row.sha256, row.document, row.pushed_ms, row.signature],
            )?;
            tx.commit()?;
            Ok((row, true))
        })
        .await
    }

    async fn registry(&self) -> Result<Vec<RegistryRow>> {
        self.with(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {REG_COLS} FROM registry ORDER BY kind, name, version"
            ))?;
            let rows = st.query_map([], registry_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn registry_document(
        &self,
        kind: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<RegistryRow>> {
        let kind = kind.to_string();
        let name = name.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {REG_COLS} FROM registry WHERE kind = ?1 AND name = ?2 AND (?3 IS NULL OR version = ?3) ORDER BY version DESC LIMIT 1"
                ),
                params![kind, name, version],
                registry_row,
            )
            .optional()?)
        })
        .await
    }

    async fn create_run(&self, r: &RunRow) -> Result<()> {
        let r = r.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO runs (id, site, workflow, request, status, created_ms, message,
                   agent_id, started_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    r.id,
                    r.site,
                    r.workflow,
                    r.request,
                    r.status,
                    r.created_ms,
                    r.message,
                    r.agent_id,
                    r.started_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn run(&self, id: &str) -> Result<Option<RunRow>> {
        let id = id.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
                [&id],
                run_row,
            )
            .optional()?)
        })
        .await
    }

    async fn metric_counts(&self, online_since: i64) -> Result<MetricCounts> {
        self.with(move |c| {
            let mut st = c.prepare_cached("SELECT status, COUNT(*) FROM runs GROUP BY status")?;
            let runs = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let (agents_online, agents) = c.query_row(
                "SELECT COALESCE(SUM(CASE WHEN last_seen_ms >= ?1 THEN 1 ELSE 0 END), 0), COUNT(*)
                 FROM agents WHERE revoked_ms IS NULL",
                [online_since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(MetricCounts {
                runs,
                agents_online,
                agents,
            })
        })
        .await
    }

    async fn runs(&self, limit: usize) -> Result<Vec<RunRow>> {
        self.with(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLS} FROM runs ORDER BY created_ms DESC, rowid DESC LIMIT ?1"
            ))?;
            let rows = st.query_map([limit as i64], run_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn runs_page(&self, q: &RunQuery) -> Result<RunPage> {
        let q = q.clone();
        self.with(move |c| {
            use rusqlite::types::Value as V;
            let mut cond = Vec::new();
            let mut args: Vec<V> = Vec::new();
            for (col, v) in [
                ("site", &q.site),
                ("status", &q.status),
                ("workflow", &q.workflow),
            ] {
                if let Some(v) = v {
                    args.push(V::Text(v.clone()));
                    cond.push(format!("{col} = ?{}", args.len()));
                }
            }
            if let Some(b) = q.before {
                args.push(V::Integer(b.created_ms));
                args.push(V::Integer(b.seq));
                cond.push(format!(
                    "(created_ms, rowid) < (?{}, ?{})",
                    args.len() - 1,
                    args.len()
                ));
            }
            let limit = q.limit.max(1);
            args.push(V::Integer(limit as i64 + 1));
            let filter = if cond.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", cond.join(" AND "))
            };
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLS}, rowid AS seq FROM runs {filter}
                 ORDER BY created_ms DESC, rowid DESC LIMIT ?{}",
                args.len()
            ))?;
            let mut rows = st
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((r.get::<_, i64>("seq")?, run_row(r)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            let next = match rows.last() {
                Some((seq, r)) if more => Some(Cursor {
                    created_ms: r.created_ms,
                    seq: *seq,
                }),
                _ => None,
            };
            Ok(RunPage {
                runs: rows.into_iter().map(|(_, r)| r).collect(),
                next,
            })
        })
        .await
    }

    async fn last_autonomous(&self, within: usize) -> Result<Vec<(String, i64)>> {
        self.with(move |c| {
            let mut st = c.prepare(
                "SELECT agent_id, MAX(created_ms) FROM
                   (SELECT agent_id, created_ms, workflow FROM runs
                    ORDER BY created_ms DESC, rowid DESC LIMIT ?1)
                 WHERE agent_id IS NOT NULL AND substr(workflow, -13) = ' (autonomous)'
                 GROUP BY agent_id",
            )?;
            let rows = st.query_map([within as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn ended_runs(&self) -> Result<Vec<Candidate>> {
        self.with(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT id, site, COALESCE(finished_ms, created_ms),
                   length(CAST(request AS BLOB))
                   + COALESCE((SELECT SUM(length(CAST(record AS BLOB))) FROM records WHERE run_id = runs.id), 0)
                   + COALESCE((SELECT length(CAST(report AS BLOB)) FROM run_reports WHERE run_id = runs.id), 0)
                 FROM runs WHERE status IN {ENDED_SQL}"
            ))?;
            let rows = st.query_map([], |r| {
                Ok(Candidate {
                    id: r.get(0)?,
                    group: r.get(1)?,
                    ended_ms: r.get(2)?,
                    bytes: r.get::<_, i64>(3)?.max(0) as u64,
                    held: false,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn remove_runs(&self, ids: &[String]) -> Result<Removed> {
        let mut out = Removed::default();
        for chunk in ids.chunks(REMOVE_CHUNK) {
            let chunk = chunk.to_vec();
            let (runs, records) = self
                .with(move |c| {
                    let tx = c.savepoint()?;
                    let (mut runs, mut records) = (0u64, 0u64);
                    for id in &chunk {
                        let ended: bool = tx
                            .query_row(
                                &format!("SELECT status IN {ENDED_SQL} FROM runs WHERE id = ?1"),
                                [id],
                                |r| r.get(0),
                            )
                            .optional()?
                            .unwrap_or(false);
                        if !ended {
                            continue;
                        }
                        records +=
                            tx.execute("DELETE FROM records WHERE run_id = ?1", [id])? as u64;
                        for t in ["run_reports", "site_outcomes", "signed_jobs"] {
                            tx.execute(&format!("DELETE FROM {t} WHERE run_id = ?1"), [id])?;
                        }
                        runs += tx.execute("DELETE FROM runs WHERE id = ?1", [id])? as u64;
                    }
                    tx.commit()?;
                    Ok((runs, records))
                })
                .await?;
            out.runs += runs;
            out.records += records;
        }
        if out.runs > 0 {
            if let Some(p) = self.path.clone() {
                out.reclaimed_bytes =
                    tokio::task::spawn_blocking(move || vacsine_engine::reclaim_space(&p))
                        .await
                        .map_err(|e| StoreError::Other(e.to_string()))?
                        .map_err(|e| StoreError::Other(format!("giving space back: {e}")))?;
            }
        }
        Ok(out)
    }

    async fn running_held_by(&self, agent: &str) -> Result<Vec<RunRow>> {
        let agent = agent.to_string();
        self.with(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {RUN_COLS} FROM runs WHERE status = 'running' AND agent_id = ?1 ORDER BY created_ms"
            ))?;
            let rows = st.query_map([agent], run_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn lease_next(
        &self,
        site: &str,
        agent: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<Option<RunRow>> {
        let site = site.to_string();
        let agent = agent.to_string();
        // The hot path of every orchestrated step: statements prepared once, and no
        // savepoint of its own (the operation's is enough).
        self.with(move |c| {
            let id: Option<String> = c
                .prepare_cached(
                    "SELECT id FROM runs WHERE site = ?1 AND status = 'queued'
                     ORDER BY created_ms, rowid LIMIT 1",
                )?
                .query_row([&site], |r| r.get(0))
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            c.prepare_cached(
                "UPDATE runs SET status = 'running', agent_id = ?2, lease_expires_ms = ?3,
                   offers = offers + 1, started_ms = COALESCE(started_ms, ?4)
                 WHERE id = ?1",
            )?
            .execute(params![id, agent, now + ttl_ms, now])?;
            let row = c
                .prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"))?
                .query_row([&id], run_row)?;
            Ok(Some(row))
        })
        .await
    }

    async fn renew(
        &self,
        agent: &str,
        runs: &[String],
        now: i64,
        ttl_ms: i64,
    ) -> Result<Vec<String>> {
        let agent = agent.to_string();
        let runs = runs.to_vec();
        self.with(move |c| {
            let mut held = Vec::new();
            for r in runs {
                let n = c
                    .prepare_cached(
                        "UPDATE runs SET lease_expires_ms = ?3
                         WHERE id = ?1 AND agent_id = ?2 AND status = 'running'",
                    )?
                    .execute(params![r, agent, now + ttl_ms])?;
                if n > 0 {
                    held.push(r.clone());
                }
            }
            Ok(held)
        })
        .await
    }

    async fn expire_leases(&self, now: i64) -> Result<Vec<Expired>> {
        self.with(move |c| {
            let tx = c.savepoint()?;
            let expired: Vec<(String, String, i64, i64, i64)> = {
                let mut st = tx.prepare(
                    "SELECT id, agent_id, lease_expires_ms, offers,
                       (SELECT COUNT(*) FROM records WHERE run_id = runs.id)
                     FROM runs WHERE status = 'running' AND lease_expires_ms < ?1",
                )?;
                let rows = st.query_map([now], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()?
            };
            let mut out = Vec::new();
            for (id, agent, at, offers, nrec) in expired {
                let (st, msg) = policy::lapsed(&policy::LapsedLease {
                    agent: &agent,
                    expired_at_ms: at,
                    offers,
                    records: nrec,
                });
                let st = st.as_str();
                tx.execute(
                    "UPDATE runs SET status = ?2, message = ?3, lease_expires_ms = NULL,
                       agent_id = CASE WHEN ?2 = 'queued' THEN NULL ELSE agent_id END,
                       finished_ms = CASE WHEN ?2 = 'failed' THEN ?4 ELSE NULL END
                     WHERE id = ?1",
                    params![id, st, msg, now],
                )?;
                out.push(Expired {
                    run_id: id,
                    agent_id: agent,
                    now_status: st.to_string(),
                });
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn extend_leases(&self, now: i64, ttl_ms: i64) -> Result<usize> {
        self.with(move |c| {
            Ok(c.execute(
                "UPDATE runs SET lease_expires_ms = MAX(lease_expires_ms, ?1)
                 WHERE status = 'running' AND lease_expires_ms IS NOT NULL",
                [now + ttl_ms],
            )?)
        })
        .await
    }

    async fn cancel_queued(&self, run: &str, message: &str, now: i64) -> Result<bool> {
        let run = run.to_string();
        let message = message.to_string();
        self.with(move |c| {
            Ok(c.execute(
                "UPDATE runs SET status = 'cancelled', message = ?2, finished_ms = ?3
                 WHERE id = ?1 AND status = 'queued'",
                params![run, message, now],
            )? == 1)
        })
        .await
    }

    async fn add_records(
        &self,
        run: &str,
        agent: &str,
        records: &[(String, String)],
        now: i64,
    ) -> Result<Stored> {
        let run = run.to_string();
        let agent = agent.to_string();
        let records = records.to_vec();
        self.with(move |c| {
            let owner: Option<Option<String>> = c
                .prepare_cached("SELECT agent_id FROM runs WHERE id = ?1")?
                .query_row([&run], |r| r.get(0))
                .optional()?;
            policy::may_record(&run, owner.as_ref().map(Option::as_deref), &agent)?;
            let mut out = Stored::default();
            let mut insert = c.prepare_cached(
                "INSERT OR IGNORE INTO records (run_id, key, record, received_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (key, rec) in records {
                let n = insert.execute(params![run, format!("{run}/{key}"), rec, now])?;
                if n == 1 {
                    out.stored += 1;
                } else {
                    out.duplicates += 1;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn records(&self, run: &str, after: i64) -> Result<Vec<(i64, String)>> {
        let run = run.to_string();
        self.with(move |c| {
            let mut st = c.prepare(
                "SELECT seq, record FROM records WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let rows = st.query_map(params![run, after], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn finish_run(
        &self,
        run: &str,
        agent: &str,
        status: &str,
        message: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let status = policy::final_status(status)?.as_str();
        let run = run.to_string();
        let agent = agent.to_string();
        let status = status.to_string();
        let message = message.map(str::to_string);
        self.with(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE runs SET status = ?3, message = ?4, finished_ms = ?5, lease_expires_ms = NULL
                     WHERE id = ?1 AND agent_id = ?2 AND status = 'running'",
                )?
                .execute(params![run, agent, status, message, now])?;
            if n == 0 {
                // Ended already without this agent (its lease lost): its own end is kept
                // beside the run's, once.
                c.execute(
                    "INSERT INTO site_outcomes (run_id, status, message, reported_ms)
                     SELECT id, ?3, ?4, ?5 FROM runs
                     WHERE id = ?1 AND agent_id = ?2 AND status NOT IN ('queued', 'running')
                     ON CONFLICT (run_id) DO NOTHING",
                    params![run, agent, status, message, now],
                )?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn set_report(&self, run: &str, agent: &str, report: &str, now: i64) -> Result<bool> {
        let run = run.to_string();
        let agent = agent.to_string();
        let report = report.to_string();
        self.with(move |c| {
            let tx = c.savepoint()?;
            let held: bool = tx.query_row(
                "SELECT COUNT(*) > 0 FROM runs WHERE id = ?1 AND agent_id = ?2 AND status = 'running'",
                params![run, agent],
                |r| r.get(0),
            )?;
            if held {
                tx.execute(
                    "INSERT INTO run_reports (run_id, report, received_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (run_id) DO UPDATE SET report = excluded.report, received_ms = excluded.received_ms",
                    params![run, report, now],
                )?;
            }
            tx.commit()?;
            Ok(held)
        })
        .await
    }

    async fn claim_idempotency_key(
        &self,
        key: &str,
        request: &str,
        now: i64,
        forget_before: i64,
    ) -> Result<Option<IdempotentRow>> {
        let (key, request) = (key.to_string(), request.to_string());
        self.with(move |c| {
            c.execute(
                "DELETE FROM idempotency_keys WHERE created_ms < ?1",
                [forget_before],
            )?;
            let held = c
                .query_row(
                    "SELECT request, status, response, created_ms FROM idempotency_keys WHERE key = ?1",
                    [&key],
                    |r| {
                        let status: Option<u16> = r.get(1)?;
                        let response: Option<String> = r.get(2)?;
                        Ok(IdempotentRow {
                            request: r.get(0)?,
                            answer: status.zip(response),
                            created_ms: r.get(3)?,
                        })
                    },
                )
                .optional()?;
            if held.is_none() {
                c.execute(
                    "INSERT INTO idempotency_keys (key, request, created_ms) VALUES (?1, ?2, ?3)",
                    params![key, request, now],
                )?;
            }
            Ok(held)
        })
        .await
    }

    async fn answer_idempotency_key(&self, key: &str, status: u16, body: &str) -> Result<()> {
        let (key, body) = (key.to_string(), body.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE idempotency_keys SET status = ?2, response = ?3 WHERE key = ?1",
                params![key, status, body],
            )?;
            Ok(())
        })
        .await
    }

    async fn release_idempotency_key(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.with(move |c| {
            c.execute(
                "DELETE FROM idempotency_keys WHERE key = ?1 AND status IS NULL",
                [&key],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_agent_outbox(&self, agent: &str, report: &str, now: i64) -> Result<()> {
        let (agent, report) = (agent.to_string(), report.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO agent_outboxes (agent_id, report, reported_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (agent_id) DO UPDATE SET report = excluded.report, reported_ms = excluded.reported_ms",
                params![agent, report, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn agent_outboxes(&self) -> Result<Vec<(String, String)>> {
        self.with(move |c| {
            let mut st = c.prepare("SELECT agent_id, report FROM agent_outboxes")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn report(&self, run: &str) -> Result<Option<String>> {
        let run = run.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT report FROM run_reports WHERE run_id = ?1",
                [&run],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests open the database behind the store to alter it
mod tests {
    use super::*;

    /// Operations taken into one batch: one that fails after writing is undone alone, the
    /// others are kept, each caller gets its own result, and all of it is on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_operation_in_a_batch_is_undone_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let s = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
        let mut tasks = Vec::new();
        for i in 0..64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.with(move |c| {
                    c.execute(
                        "INSERT INTO sites (name, intake_hash, created_ms) VALUES (?1, ?1, 1)",
                        [format!("s{i}")],
                    )?;
                    if i % 2 == 1 {
                        return Err(StoreError::Conflict(format!("s{i} refused")));
                    }
                    Ok(i)
                })
                .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(n) => assert_eq!((n, i % 2), (i, 0)),
                Err(StoreError::Conflict(m)) => {
                    assert_eq!((m, i % 2), (format!("s{i} refused"), 1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        drop(s);
        // Read back from the file by a new connection.
        let s = SqliteStore::open(&path).unwrap();
        let names: Vec<String> = s
            .sites()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        let mut want: Vec<String> = (0..64).step_by(2).map(|i| format!("s{i}")).collect();
        want.sort();
        assert_eq!(names, want);
    }

    /// Removing runs gives the space back: the file (and its log) shrink, for a store made
    /// with incremental vacuum and for one made before it (converted by a full vacuum).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn removing_runs_shrinks_the_file() {
        let size = |p: &Path| {
            let wal = p.with_extension("db-wal");
            std::fs::metadata(p).unwrap().len()
                + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
        };
        for made_before in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("o.db");
            if made_before {
                // A store file from before incremental vacuum: no auto_vacuum.
                let c = Connection::open(&path).unwrap();
                c.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
                c.execute_batch(SCHEMA).unwrap();
            }
            let s = SqliteStore::open(&path).unwrap();
            let body = "z".repeat(2000);
            for i in 0..500 {
                let id = format!("r{i}");
                let b = body.clone();
                s.with(move |c| {
                    c.execute(
                        "INSERT INTO runs (id, site, workflow, request, status, created_ms, finished_ms)
                         VALUES (?1, 'edge', 'w', ?2, 'succeeded', 1, 2)",
                        params![id, b],
                    )?;
                    for k in 0..4 {
                        c.execute(
                            "INSERT INTO records (run_id, key, record, received_ms) VALUES (?1, ?2, ?3, 1)",
                            params![id, format!("{id}/{k}"), b],
                        )?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
            }
            let full = size(&path);
            assert!(full > 4_000_000, "{full}");
            let ids: Vec<String> = (0..500).map(|i| format!("r{i}")).collect();
            let r = s.remove_runs(&ids).await.unwrap();
            assert_eq!((r.runs, r.records), (500, 2000));
            let after = size(&path);
            assert!(
                after < full / 4 && r.reclaimed_bytes >= full - after - 4096,
                "made before: {made_before}: {full} → {after}, reclaimed {}",
                r.reclaimed_bytes
            );
            // Still a working store.
            assert!(s.runs(10).await.unwrap().is_empty());
        }
    }
}
