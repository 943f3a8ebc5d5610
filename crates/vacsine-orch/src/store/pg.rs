//! The PostgreSQL store: several orchestrator replicas share one database, and so the work.
//!
//! * Tables live in their own schema (`vacsine` unless told otherwise), made and migrated at
//!   start under a transaction-scoped advisory lock, so replicas starting together do not
//!   race; each migration is applied once (`vacsine_migrations`).
//! * A lease is claimed with `FOR UPDATE SKIP LOCKED`: two replicas asked for work at the same
//!   moment never hand one run to two agents, and never wait on each other's claims. The lease
//!   sweeper takes expired leases the same way, so sweeps on several replicas never handle a
//!   run twice.
//! * `NOTIFY vacsine_<schema>` follows each change that can end a wait: work queued or
//!   re-offered and agents revoked (`queue`), runs changing status or getting records (`run`);
//!   [`Store::listen`] turns them into wake-ups of the long polls of this replica. The NOTIFY
//!   is its own statement, sent once the change committed: a transaction that notifies holds
//!   a database-wide lock through its commit's disk flush, which would serialize every commit
//!   (no group commit). A replica that dies between the two leaves the others to find the
//!   change at their next look (a long poll lasts at most 25 s).
//! * Records of one run are inserted while its row is locked, so their sequence numbers
//!   follow commit order and a reader resuming "after seq N" misses none.
//!
//! Secrets at rest are as in SQLite: the store holds intake key hashes, never the keys.
//! Connections are plain TCP or a Unix socket (no TLS to the database: run it on the same
//! host or network); a URL asking for `sslmode=require` is refused by the driver.

use super::{
    policy, status, AgentRow, Change, Cursor, Expired, IdempotentRow, MetricCounts, RegistryRow,
    Result, RunPage, RunQuery, RunRow, SignedRow, SiteOutcome, SiteRow, Store, StoreError, Stored,
    ENDED_SQL,
};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use vacsine_engine::retention::{Candidate, Removed};

/// Schema migrations, applied in order, each once. Never edit one that shipped: add another.
/// How many migrations this build knows.
#[cfg(test)]
pub(super) const MIGRATION_COUNT: usize = MIGRATIONS.len();

#[path = "pg_approvals.rs"]
mod approvals;
#[path = "pg_posture.rs"]
mod posture;
#[path = "pg_responses.rs"]
mod responses;
#[path = "pg_users.rs"]
mod users;

const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE sites (
  name TEXT PRIMARY KEY,
  intake_hash TEXT NOT NULL UNIQUE,
  created_ms BIGINT NOT NULL,
  revoked_ms BIGINT
);
CREATE TABLE agents (
  id TEXT PRIMARY KEY,
  site TEXT NOT NULL REFERENCES sites(name),
  name TEXT NOT NULL,
  public_key TEXT NOT NULL,
  version TEXT NOT NULL,
  enrolled_ms BIGINT NOT NULL,
  last_seen_ms BIGINT NOT NULL,
  revoked_ms BIGINT
);
CREATE INDEX agents_site ON agents(site, name, enrolled_ms);
-- One live agent per name at a site, also when two replicas enrol at the same moment.
CREATE UNIQUE INDEX agents_live_name ON agents(site, name) WHERE revoked_ms IS NULL;
CREATE TABLE runs (
  id TEXT PRIMARY KEY,
  seq BIGSERIAL NOT NULL,
  site TEXT NOT NULL,
  workflow TEXT NOT NULL,
  request TEXT NOT NULL,
  status TEXT NOT NULL,
  agent_id TEXT,
  lease_expires_ms BIGINT,
  offers BIGINT NOT NULL DEFAULT 0,
  created_ms BIGINT NOT NULL,
  started_ms BIGINT,
  finished_ms BIGINT,
  message TEXT
);
CREATE INDEX runs_queue ON runs(site, created_ms, seq) WHERE status = 'queued';
CREATE INDEX runs_leased ON runs(lease_expires_ms) WHERE status = 'running';
CREATE INDEX runs_recent ON runs(created_ms DESC, seq DESC);
CREATE TABLE records (
  seq BIGSERIAL PRIMARY KEY,
  run_id TEXT NOT NULL,
  key TEXT NOT NULL UNIQUE,
  record TEXT NOT NULL,
  received_ms BIGINT NOT NULL
);
CREATE INDEX records_run ON records(run_id, seq);
"#,
    ),
    (
        2,
        r#"
-- Nonces of sealed requests, so that a request replayed to another replica is refused.
CREATE TABLE nonces (
  nonce TEXT PRIMARY KEY,
  keep_until_ms BIGINT NOT NULL
);
CREATE INDEX nonces_keep ON nonces(keep_until_ms);
"#,
    ),
    (
        3,
        r#"
-- The reports of enforce runs (`vacsine enforce --site`), as their agents sent them.
CREATE TABLE run_reports (
  run_id TEXT PRIMARY KEY REFERENCES runs(id),
  report TEXT NOT NULL,
  received_ms BIGINT NOT NULL
);
"#,
    ),
    (
        4,
        r#"
-- Jobs as the orchestrator signed them at submission (agents verify before running).
CREATE TABLE signed_jobs (
  run_id TEXT PRIMARY KEY,
  payload TEXT NOT NULL,
  signature TEXT NOT NULL,
  key_id TEXT NOT NULL,
  signed_ms BIGINT NOT NULL
);
-- The registry: versions of pushed policies and workflows.
CREATE TABLE registry (
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  version BIGINT NOT NULL,
  sha256 TEXT NOT NULL,
  document TEXT NOT NULL,
  pushed_ms BIGINT NOT NULL,
  PRIMARY KEY (kind, name, version)
);
"#,
    ),
    (
        5,
        r#"
-- Each registry document's signature, made when it was pushed (agents verify it).
ALTER TABLE registry ADD COLUMN signature TEXT;
"#,
    ),
    (
        6,
        r#"
-- The end an agent reported for a run already ended without it (its lease lost).
CREATE TABLE site_outcomes (
  run_id TEXT PRIMARY KEY REFERENCES runs(id),
  status TEXT NOT NULL,
  message TEXT,
  reported_ms BIGINT NOT NULL
);
"#,
    ),
    (
        7,
        r#"
-- Issue 19. Operator writes made with an Idempotency-Key, and their answers (a repeat gets
-- the first).
CREATE TABLE idempotency_keys (
  key TEXT PRIMARY KEY,
  request TEXT NOT NULL,
  status INTEGER,
  response TEXT,
  created_ms BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_ms);
-- What each agent last reported of the items its outbox keeps as refused.
CREATE TABLE agent_outboxes (
  agent_id TEXT PRIMARY KEY,
  report TEXT NOT NULL,
  reported_ms BIGINT NOT NULL
);
-- 100,000 runs and more: the run list newest first by site and by status, read in index
-- order; the runs an agent holds; each run's report and signed job removed with it.
CREATE INDEX runs_site_recent ON runs(site, created_ms DESC, seq DESC);
CREATE INDEX runs_status_recent ON runs(status, created_ms DESC, seq DESC);
CREATE INDEX runs_held ON runs(agent_id) WHERE status = 'running';
-- Issue 16: events uploaded by sites, decisions (made at a site or by an operator) and where
-- each was in effect; each kept once.
CREATE TABLE response_events (
  id TEXT PRIMARY KEY,
  site TEXT NOT NULL,
  received_ms BIGINT NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX response_events_recent ON response_events(received_ms DESC);
CREATE TABLE decisions (
  id TEXT PRIMARY KEY,
  body TEXT NOT NULL,
  scope TEXT NOT NULL,
  origin_site TEXT,
  event_ms BIGINT,
  decided_ms BIGINT NOT NULL,
  expires_ms BIGINT,
  deleted_ms BIGINT
);
CREATE TABLE decision_sites (
  decision_id TEXT NOT NULL,
  site TEXT NOT NULL,
  applied_ms BIGINT NOT NULL,
  PRIMARY KEY (decision_id, site)
);
"#,
    ),
    (
        8,
        r#"
-- Issue 16: where each threat-intelligence feed's poll resumes (TAXII `added_after`).
CREATE TABLE feed_positions (
  feed TEXT PRIMARY KEY,
  position TEXT NOT NULL,
  updated_ms BIGINT NOT NULL
);
"#,
    ),
    (
        9,
        r#"
CREATE TABLE bouncers (
  name TEXT PRIMARY KEY,
  key_hash TEXT NOT NULL UNIQUE,
  site TEXT,
  created_ms BIGINT NOT NULL,
  last_pull_ms BIGINT,
  known TEXT NOT NULL
);
"#,
    ),
    (
        10,
        r#"
-- Approvals (issue 16): decisions and workflow runs waiting for a person, each once by id.
CREATE TABLE approvals (
  id TEXT PRIMARY KEY,
  response TEXT NOT NULL,
  body TEXT NOT NULL,
  scope TEXT NOT NULL,
  site TEXT NOT NULL,
  event_ms BIGINT,
  created_ms BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('awaiting', 'approved', 'denied')),
  settled_ms BIGINT
);
-- Sites' labels (issue 16): a Response's `scope.labels` matches the sites carrying them.
CREATE TABLE site_labels (
  site TEXT PRIMARY KEY,
  labels TEXT NOT NULL
);
"#,
    ),
    (
        11,
        r#"
-- Decisions, their deletions and approvals as the orchestrator signed them when made: what
-- sites act on (a row written by hand is not signed; `vacsine_contract::decisions`).
ALTER TABLE decisions ADD COLUMN signed TEXT, ADD COLUMN deletion TEXT;
ALTER TABLE approvals ADD COLUMN signed TEXT;
"#,
    ),
    // Assessment history (issue 17).
    (12, posture::MIGRATION),
    (
        13,
        r#"
-- Console users and their sessions (issue 17): tokens and session cookies kept as hashes.
CREATE TABLE console_users (
  name TEXT PRIMARY KEY,
  role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  token_hash TEXT NOT NULL UNIQUE,
  created_ms BIGINT NOT NULL,
  revoked_ms BIGINT
);
CREATE TABLE console_sessions (
  id_hash TEXT PRIMARY KEY,
  user_name TEXT NOT NULL REFERENCES console_users(name),
  csrf TEXT NOT NULL,
  created_ms BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL
);
CREATE INDEX console_sessions_user ON console_sessions(user_name);
"#,
    ),
];

/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "vacsine";

const RUN_COLS: &str = "id, site, workflow, request, status, agent_id, lease_expires_ms, offers, created_ms, started_ms, finished_ms, message, (SELECT COUNT(*) FROM records WHERE run_id = runs.id) AS nrec, (SELECT status FROM site_outcomes WHERE run_id = runs.id) AS site_status, (SELECT message FROM site_outcomes WHERE run_id = runs.id) AS site_message, (SELECT reported_ms FROM site_outcomes WHERE run_id = runs.id) AS site_reported_ms";

const REG_COLS: &str = "kind, name, version, sha256, document, pushed_ms, signature";

fn registry_row(r: &Row) -> RegistryRow {
    RegistryRow {
        kind: r.get(0),
        name: r.get(1),
        version: r.get(2),
        sha256: r.get(3),
        document: r.get(4),
        pushed_ms: r.get(5),
        signature: r.get(6),
    }
}

pub struct PgStore {
    pool: Pool,
    /// For the LISTEN connection, which is not pooled.
    config: tokio_postgres::Config,
    channel: String,
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(e),
            e => StoreError::Pool(e.to_string()),
        }
    }
}

/// `url` with its password replaced by `***` (URL form `postgres://user:pw@host/db`, its
/// `password=` query parameter, and the key/value form `host=… password=…`), for logs and
/// errors.
pub fn mask_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    if let Some(i) = rest.find("://") {
        let (scheme, tail) = rest.split_at(i + 3);
        out.push_str(scheme);
        let end = tail.find(['/', '?']).unwrap_or(tail.len());
        let (auth, after) = tail.split_at(end);
        match auth.rfind('@') {
            Some(at) => {
                let user = &auth[..at];
                match user.find(':') {
                    Some(c) => {
                        out.push_str(&user[..c]);
                        out.push_str(":***");
                    }
                    None => out.push_str(user),
                }
                out.push_str(&auth[at..]);
            }
            None => out.push_str(auth),
        }
        rest = after;
    }
    // `password=` as a query parameter or as a key/value pair (quoted or not).
    let mut s = rest;
    while let Some(i) = s.find("password") {
        let (before, from) = s.split_at(i);
        out.push_str(before);
        let after_key = &from["password".len()..];
        let trimmed = after_key.trim_start();
        if let Some(v) = trimmed.strip_prefix('=') {
            let v = v.trim_start();
            out.push_str("password=***");
            let len = if let Some(q) = v.strip_prefix('\'') {
                // A quoted value ends at the next unescaped quote.
                let mut n = 1;
                let mut chars = q.chars();
                while let Some(c) = chars.next() {
                    n += c.len_utf8();
                    if c == '\\' {
                        n += chars.next().map_or(0, char::len_utf8);
                    } else if c == '\'' {
                        break;
                    }
                }
                n
            } else {
                v.find(|c: char| c.is_whitespace() || c == '&')
                    .unwrap_or(v.len())
            };
            s = &v[len..];
        } else {
            out.push_str("password");
            s = after_key;
        }
    }
    out.push_str(s);
    out
}

fn valid_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Other(format!(
            "PostgreSQL schema {schema:?}: use 1 to 48 lowercase letters, digits or `_`"
        )))
    }
}

fn run_row(r: &Row) -> RunRow {
    RunRow {
        id: r.get("id"),
        site: r.get("site"),
        workflow: r.get("workflow"),
        request: r.get("request"),
        status: r.get("status"),
        agent_id: r.get("agent_id"),
        lease_expires_ms: r.get("lease_expires_ms"),
        offers: r.get("offers"),
        created_ms: r.get("created_ms"),
        started_ms: r.get("started_ms"),
        finished_ms: r.get("finished_ms"),
        message: r.get("message"),
        records: r.get("nrec"),
        site_outcome: r
            .get::<_, Option<String>>("site_status")
            .map(|status| SiteOutcome {
                status,
                message: r.get("site_message"),
                reported_ms: r.get("site_reported_ms"),
            }),
    }
}

fn agent_row(r: &Row) -> AgentRow {
    AgentRow {
        id: r.get("id"),
        site: r.get("site"),
        name: r.get("name"),
        public_key: r.get("public_key"),
        version: r.get("version"),
        enrolled_ms: r.get("enrolled_ms"),
        last_seen_ms: r.get("last_seen_ms"),
        revoked_ms: r.get("revoked_ms"),
    }
}

fn site_row(r: &Row) -> SiteRow {
    SiteRow {
        name: r.get("name"),
        created_ms: r.get("created_ms"),
        revoked_ms: r.get("revoked_ms"),
    }
}

/// What a change announces to the replicas.
#[derive(Clone, Copy)]
enum News {
    Queue,
    Run,
    Both,
}

fn is_unique_violation(e: &tokio_postgres::Error, constraint: &str) -> bool {
    e.as_db_error().is_some_and(|d| {
        *d.code() == SqlState::UNIQUE_VIOLATION && d.constraint() == Some(constraint)
    })
}

impl PgStore {
    /// Connect to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB` or `host=… dbname=…`),
    /// make or migrate the tables in schema `vacsine`.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_schema(url, DEFAULT_SCHEMA).await
    }

    /// As [`PgStore::connect`], with the tables in `schema` (made when missing).
    pub async fn connect_schema(url: &str, schema: &str) -> Result<Self> {
        valid_schema(schema)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Other(format!(
                "database URL {}: {e} (expected postgres://USER:PASSWORD@HOST:PORT/DATABASE)",
                mask_url(url)
            ))
        })?;
        // Our schema first: every statement names tables unqualified.
        let options = match config.get_options() {
            Some(o) if !o.trim().is_empty() => format!("{o} -c search_path={schema}"),
            _ => format!("-c search_path={schema}"),
        };
        config.options(options);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        // A dead peer is noticed in about a minute rather than two hours.
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("vacsine-orchestrator");
        }
        let mgr = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        let store = PgStore {
            pool,
            config,
            channel: format!("vacsine_{schema}"),
        };
        store.migrate(schema).await?;
        Ok(store)
    }

    /// Announce a committed change to every replica (this one included). Best effort: the
    /// change is made; a replica that misses the news finds it at its next look.
    async fn notify(&self, c: &deadpool_postgres::Client, news: News) {
        let sql = match news {
            News::Queue => "SELECT pg_notify($1, 'queue')",
            News::Run => "SELECT pg_notify($1, 'run')",
            News::Both => "SELECT pg_notify($1, 'queue'), pg_notify($1, 'run')",
        };
        let r = async {
            let st = c.prepare_cached(sql).await?;
            c.execute(&st, &[&self.channel]).await
        }
        .await;
        if let Err(e) = r {
            tracing::warn!("PostgreSQL store: NOTIFY {}: {e}", self.channel);
        }
    }

    /// Make the schema and apply the migrations it lacks, one replica at a time.
    async fn migrate(&self, schema: &str) -> Result<()> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('vacsine.migrate.' || $1::text))",
            &[&schema],
        )
        .await?;
        // Only when missing: a role without CREATE on the database can use a schema its
        // administrator made.
        let exists = tx
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await?
            .is_some();
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
                .await?;
        }
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS vacsine_migrations (
               version INTEGER PRIMARY KEY,
               applied_ms BIGINT NOT NULL
             )",
        )
        .await?;
        let applied: Vec<i32> = tx
            .query("SELECT version FROM vacsine_migrations", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(newer) = applied
            .iter()
            .find(|v| !MIGRATIONS.iter().any(|(m, _)| m == *v))
        {
            return Err(StoreError::Other(format!(
                "the database schema `{schema}` is at migration {newer}, which this build does not know: run a newer vacsine"
            )));
        }
        for (v, sql) in MIGRATIONS {
            if applied.contains(v) {
                continue;
            }
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO vacsine_migrations (version, applied_ms) VALUES ($1, $2)",
                &[v, &crate::now_ms()],
            )
            .await?;
            tracing::info!("PostgreSQL store: migration {v} applied to schema {schema}");
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_site(&self, name: &str, intake_hash: &str, now: i64) -> Result<()> {
        let c = self.pool.get().await?;
        match c
            .execute(
                "INSERT INTO sites (name, intake_hash, created_ms) VALUES ($1, $2, $3)",
                &[&name, &intake_hash, &now],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e, "sites_pkey") => Err(policy::site_exists(name)),
            Err(e) => Err(e.into()),
        }
    }

    async fn sites(&self) -> Result<Vec<SiteRow>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT name, created_ms, revoked_ms FROM sites ORDER BY name",
                &[],
            )
            .await?;
        Ok(rows.iter().map(site_row).collect())
    }

    async fn revoke_site(&self, name: &str, now: i64) -> Result<()> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "UPDATE sites SET revoked_ms = COALESCE(revoked_ms, $2) WHERE name = $1",
                &[&name, &now],
            )
            .await?;
        if n == 0 {
            return Err(policy::no_site(name));
        }
        tx.execute(
            "UPDATE agents SET revoked_ms = COALESCE(revoked_ms, $2) WHERE site = $1",
            &[&name, &now],
        )
        .await?;
        tx.commit().await?;
        self.notify(&c, News::Queue).await;
        Ok(())
    }

    async fn revoke_agent(&self, site: &str, name: &str, now: i64) -> Result<()> {
        let c = self.pool.get().await?;
        let n = c
            .execute(
                "UPDATE agents SET revoked_ms = COALESCE(revoked_ms, $3) WHERE site = $1 AND name = $2",
                &[&site, &name, &now],
            )
            .await?;
        if n == 0 {
            return Err(policy::no_agent(site, name));
        }
        self.notify(&c, News::Queue).await;
        Ok(())
    }

    async fn site_by_intake(&self, intake_hash: &str) -> Result<Option<SiteRow>> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT name, created_ms, revoked_ms FROM sites WHERE intake_hash = $1 AND revoked_ms IS NULL",
            )
            .await?;
        Ok(c.query_opt(&st, &[&intake_hash])
            .await?
            .as_ref()
            .map(site_row))
    }

    async fn enroll_agent(&self, a: &AgentRow) -> Result<()> {
        let c = self.pool.get().await?;
        match c
            .execute(
                "INSERT INTO agents (id, site, name, public_key, version, enrolled_ms, last_seen_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
                &[&a.id, &a.site, &a.name, &a.public_key, &a.version, &a.enrolled_ms],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e, "agents_live_name") => {
                Err(policy::agent_name_taken(&a.site, &a.name))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn agent(&self, id: &str) -> Result<Option<AgentRow>> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached("SELECT * FROM agents WHERE id = $1")
            .await?;
        Ok(c.query_opt(&st, &[&id]).await?.as_ref().map(agent_row))
    }

    async fn agents(&self) -> Result<Vec<AgentRow>> {
        let c = self.pool.get().await?;
        let rows = c
            .query("SELECT * FROM agents ORDER BY site, name, enrolled_ms", &[])
            .await?;
        Ok(rows.iter().map(agent_row).collect())
    }

    async fn touch_agent(&self, id: &str, now: i64) -> Result<()> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "UPDATE agents SET last_seen_ms = GREATEST(last_seen_ms, $2) WHERE id = $1",
            )
            .await?;
        c.execute(&st, &[&id, &now]).await?;
        Ok(())
    }

    async fn put_signed_job(&self, run: &str, j: &SignedRow, now: i64) -> Result<()> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO signed_jobs (run_id, payload, signature, key_id, signed_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id) DO NOTHING",
            )
            .await?;
        let n = c
            .execute(&st, &[&run, &j.payload, &j.signature, &j.key_id, &now])
            .await?;
        if n == 0 {
            return Err(policy::job_already_signed(run));
        }
        Ok(())
    }

    async fn signed_job(&self, run: &str) -> Result<Option<SignedRow>> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached("SELECT payload, signature, key_id FROM signed_jobs WHERE run_id = $1")
            .await?;
        Ok(c.query_opt(&st, &[&run]).await?.map(|r| SignedRow {
            payload: r.get(0),
            signature: r.get(1),
            key_id: r.get(2),
        }))
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
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Pushes of one document on several replicas take their turn.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('vacsine.registry.' || $1 || '/' || $2))",
            &[&kind, &name],
        )
        .await?;
        let latest = tx
            .query_opt(
                &format!("SELECT {REG_COLS} FROM registry WHERE kind = $1 AND name = $2 ORDER BY version DESC LIMIT 1"),
                &[&kind, &name],
            )
            .await?
            .map(|r| registry_row(&r));
        if let Some(l) = latest.as_ref().filter(|l| l.sha256 == sha256) {
            let mut l = l.clone();
            if l.signature.is_none() {
                tx.execute(
                    "UPDATE registry SET signature = $4 WHERE kind = $1 AND name = $2 AND version = $3",
                    &[&l.kind, &l.name, &l.version, &signature],
                )
                .await?;
                tx.commit().await?;
                l.signature = Some(signature.to_string());
            }
            return Ok((l, false));
        }
        let row = RegistryRow {
            kind: kind.into(),
            name: name.into(),
            version: latest.map_or(1, |l| l.version + 1),
            sha256: sha256.into(),
            document: document.into(),
            pushed_ms: now,
            signature: Some(signature.to_string()),
        };
        tx.execute(
            "INSERT INTO registry (kind, name, version, sha256, document, pushed_ms, signature) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&row.kind, &row.name, &row.version, &row.sha256, &row.document, &row.pushed_ms, &row.signature],
        )
        .await?;
        tx.commit().await?;
        Ok((row, true))
    }

    async fn registry(&self) -> Result<Vec<RegistryRow>> {
        let c = self.pool.get().await?;
        Ok(c.query(
            &format!("SELECT {REG_COLS} FROM registry ORDER BY kind, name, version"),
            &[],
        )
        .await?
        .iter()
        .map(registry_row)
        .collect())
    }

    async fn registry_document(
        &self,
        kind: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<RegistryRow>> {
        let c = self.pool.get().await?;
        Ok(c
            .query_opt(
                &format!("SELECT {REG_COLS} FROM registry WHERE kind = $1 AND name = $2 AND ($3::BIGINT IS NULL OR version = $3) ORDER BY version DESC LIMIT 1"),
                &[&kind, &name, &version],
            )
            .await?
            .map(|r| registry_row(&r)))
    }

    async fn create_run(&self, r: &RunRow) -> Result<()> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO runs (id, site, workflow, request, status, created_ms, message,
                   agent_id, started_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .await?;
        c.execute(
            &st,
            &[
                &r.id,
                &r.site,
                &r.workflow,
                &r.request,
                &r.status,
                &r.created_ms,
                &r.message,
                &r.agent_id,
                &r.started_ms,
            ],
        )
        .await?;
        self.notify(&c, News::Both).await;
        Ok(())
    }

    async fn run(&self, id: &str) -> Result<Option<RunRow>> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(&format!("SELECT {RUN_COLS} FROM runs WHERE id = $1"))
            .await?;
        Ok(c.query_opt(&st, &[&id]).await?.as_ref().map(run_row))
    }

    async fn metric_counts(&self, online_since: i64) -> Result<MetricCounts> {
        let c = self.pool.get().await?;
        let runs = c
            .query("SELECT status, COUNT(*) FROM runs GROUP BY status", &[])
            .await?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
        let a = c
            .query_one(
                "SELECT COALESCE(SUM(CASE WHEN last_seen_ms >= $1 THEN 1 ELSE 0 END), 0)::BIGINT,
                        COUNT(*) FROM agents WHERE revoked_ms IS NULL",
                &[&online_since],
            )
            .await?;
        Ok(MetricCounts {
            runs,
            agents_online: a.get(0),
            agents: a.get(1),
        })
    }

    async fn runs(&self, limit: usize) -> Result<Vec<RunRow>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!("SELECT {RUN_COLS} FROM runs ORDER BY created_ms DESC, seq DESC LIMIT $1"),
                &[&(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(run_row).collect())
    }

    async fn runs_page(&self, q: &RunQuery) -> Result<RunPage> {
        let c = self.pool.get().await?;
        let mut cond: Vec<String> = Vec::new();
        let mut args: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
        for (col, v) in [
            ("site", &q.site),
            ("status", &q.status),
            ("workflow", &q.workflow),
        ] {
            if let Some(v) = v {
                args.push(Box::new(v.clone()));
                cond.push(format!("{col} = ${}", args.len()));
            }
        }
        if let Some(b) = q.before {
            args.push(Box::new(b.created_ms));
            args.push(Box::new(b.seq));
            cond.push(format!(
                "(created_ms, seq) < (${}, ${})",
                args.len() - 1,
                args.len()
            ));
        }
        let limit = q.limit.max(1);
        args.push(Box::new(limit as i64 + 1));
        let filter = if cond.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", cond.join(" AND "))
        };
        let sql = format!(
            "SELECT {RUN_COLS}, seq FROM runs {filter} ORDER BY created_ms DESC, seq DESC LIMIT ${}",
            args.len()
        );
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            args.iter().map(|a| a.as_ref() as _).collect();
        let mut rows: Vec<(i64, RunRow)> = c
            .query(&sql, &refs)
            .await?
            .iter()
            .map(|r| (r.get::<_, i64>("seq"), run_row(r)))
            .collect();
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
    }

    async fn last_autonomous(&self, within: usize) -> Result<Vec<(String, i64)>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT agent_id, MAX(created_ms) FROM
                   (SELECT agent_id, created_ms, workflow FROM runs
                    ORDER BY created_ms DESC, seq DESC LIMIT $1) recent
                 WHERE agent_id IS NOT NULL AND right(workflow, 13) = ' (autonomous)'
                 GROUP BY agent_id",
                &[&(within as i64)],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn ended_runs(&self) -> Result<Vec<Candidate>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT id, site, COALESCE(finished_ms, created_ms),
                       octet_length(request)::BIGINT
                       + COALESCE((SELECT SUM(octet_length(record)) FROM records WHERE run_id = runs.id), 0)::BIGINT
                       + COALESCE((SELECT octet_length(report) FROM run_reports WHERE run_id = runs.id), 0)::BIGINT
                     FROM runs WHERE status IN {ENDED_SQL}"
                ),
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Candidate {
                id: r.get(0),
                group: r.get(1),
                ended_ms: r.get(2),
                bytes: r.get::<_, i64>(3).max(0) as u64,
                held: false,
            })
            .collect())
    }

    async fn remove_runs(&self, ids: &[String]) -> Result<Removed> {
        let mut out = Removed::default();
        let mut c = self.pool.get().await?;
        for chunk in ids.chunks(500) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let tx = c.transaction().await?;
            // Ended runs only, locked so nothing adds to them meanwhile.
            let ended: Vec<String> = tx
                .query(
                    &format!("SELECT id FROM runs WHERE id = ANY($1) AND status IN {ENDED_SQL} FOR UPDATE"),
                    &[&chunk],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if ended.is_empty() {
                tx.commit().await?;
                continue;
            }
            out.records += tx
                .execute("DELETE FROM records WHERE run_id = ANY($1)", &[&ended])
                .await?;
            for t in ["run_reports", "site_outcomes", "signed_jobs"] {
                tx.execute(
                    &format!("DELETE FROM {t} WHERE run_id = ANY($1)"),
                    &[&ended],
                )
                .await?;
            }
            out.runs += tx
                .execute("DELETE FROM runs WHERE id = ANY($1)", &[&ended])
                .await?;
            tx.commit().await?;
        }
        // PostgreSQL's autovacuum makes the space reusable; the files do not shrink.
        Ok(out)
    }

    async fn running_held_by(&self, agent: &str) -> Result<Vec<RunRow>> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {RUN_COLS} FROM runs WHERE status = 'running' AND agent_id = $1 ORDER BY created_ms"
                ),
                &[&agent],
            )
            .await?;
        Ok(rows.iter().map(run_row).collect())
    }

    async fn lease_next(
        &self,
        site: &str,
        agent: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<Option<RunRow>> {
        let c = self.pool.get().await?;
        // The oldest queued run nobody else is claiming right now; a run another replica
        // holds locked is skipped, not waited for.
        let st = c
            .prepare_cached(&format!(
                "UPDATE runs SET status = 'running', agent_id = $2, lease_expires_ms = $3,
                   offers = offers + 1, started_ms = COALESCE(started_ms, $4)
                 WHERE status = 'queued' AND id = (
                   SELECT id FROM runs WHERE site = $1 AND status = 'queued'
                   ORDER BY created_ms, seq LIMIT 1
                   FOR UPDATE SKIP LOCKED)
                 RETURNING {RUN_COLS}"
            ))
            .await?;
        let leased = c
            .query_opt(&st, &[&site, &agent, &(now + ttl_ms), &now])
            .await?
            .as_ref()
            .map(run_row);
        if leased.is_some() {
            self.notify(&c, News::Run).await;
        }
        Ok(leased)
    }

    async fn renew(
        &self,
        agent: &str,
        runs: &[String],
        now: i64,
        ttl_ms: i64,
    ) -> Result<Vec<String>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "UPDATE runs SET lease_expires_ms = $3
                 WHERE id = ANY($1) AND agent_id = $2 AND status = 'running'
                 RETURNING id",
            )
            .await?;
        let held: Vec<String> = c
            .query(&st, &[&runs, &agent, &(now + ttl_ms)])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(runs.iter().filter(|r| held.contains(r)).cloned().collect())
    }

    async fn expire_leases(&self, now: i64) -> Result<Vec<Expired>> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Each expired lease is handled by one sweeper: rows another replica's sweep (or an
        // upload, or a renewal) holds are left to it.
        let st = tx
            .prepare_cached(
                "SELECT id, agent_id, lease_expires_ms, offers,
                   (SELECT COUNT(*) FROM records WHERE run_id = runs.id) AS nrec
                 FROM runs WHERE status = 'running' AND lease_expires_ms < $1
                 FOR UPDATE SKIP LOCKED",
            )
            .await?;
        let expired = tx.query(&st, &[&now]).await?;
        let mut out = Vec::new();
        for row in &expired {
            let id: String = row.get("id");
            let agent: String = row.get::<_, Option<String>>("agent_id").unwrap_or_default();
            let at: i64 = row.get("lease_expires_ms");
            let offers: i64 = row.get("offers");
            let nrec: i64 = row.get("nrec");
            let (st, msg) = policy::lapsed(&policy::LapsedLease {
                agent: &agent,
                expired_at_ms: at,
                offers,
                records: nrec,
            });
            let st = st.as_str();
            tx.execute(
                "UPDATE runs SET status = $2::text, message = $3, lease_expires_ms = NULL,
                   agent_id = CASE WHEN $2::text = 'queued' THEN NULL ELSE agent_id END,
                   finished_ms = CASE WHEN $2::text = 'failed' THEN $4::bigint ELSE NULL END
                 WHERE id = $1",
                &[&id, &st, &msg, &now],
            )
            .await?;
            out.push(Expired {
                run_id: id,
                agent_id: agent,
                now_status: st.to_string(),
            });
        }
        // Nonces past their time: their envelopes are refused as stale anyway.
        tx.execute("DELETE FROM nonces WHERE keep_until_ms < $1", &[&now])
            .await?;
        tx.commit().await?;
        if out.iter().any(|e| e.now_status == status::QUEUED) {
            self.notify(&c, News::Both).await;
        } else if !out.is_empty() {
            self.notify(&c, News::Run).await;
        }
        Ok(out)
    }

    async fn extend_leases(&self, now: i64, ttl_ms: i64) -> Result<usize> {
        let c = self.pool.get().await?;
        let n = c
            .execute(
                "UPDATE runs SET lease_expires_ms = GREATEST(lease_expires_ms, $1)
                 WHERE status = 'running' AND lease_expires_ms IS NOT NULL",
                &[&(now + ttl_ms)],
            )
            .await?;
        Ok(n as usize)
    }

    async fn cancel_queued(&self, run: &str, message: &str, now: i64) -> Result<bool> {
        let c = self.pool.get().await?;
        let n = c
            .execute(
                "UPDATE runs SET status = 'cancelled', message = $2, finished_ms = $3
                 WHERE id = $1 AND status = 'queued'",
                &[&run, &message, &now],
            )
            .await?;
        if n == 1 {
            self.notify(&c, News::Run).await;
        }
        Ok(n == 1)
    }

    async fn add_records(
        &self,
        run: &str,
        agent: &str,
        records: &[(String, String)],
        now: i64,
    ) -> Result<Stored> {
        let c = self.pool.get().await?;
        // One statement, one round trip: the run's row is locked first (the `owner` scan, an
        // init plan of the insert) and stays locked until the records are in: ownership cannot
        // change under the upload, and one run's sequence numbers follow commit order. Nothing
        // is inserted unless the run is this agent's; who holds it is decided below.
        let st = c
            .prepare_cached(
                "WITH owner AS (SELECT agent_id FROM runs WHERE id = $1 FOR UPDATE),
                 ins AS (
                   INSERT INTO records (run_id, key, record, received_ms)
                   SELECT $1, k, r, $4
                   FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(k, r, n)
                   WHERE EXISTS (SELECT 1 FROM owner WHERE agent_id = $5)
                   ORDER BY n
                   ON CONFLICT (key) DO NOTHING
                   RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM owner) AS found,
                   (SELECT agent_id FROM owner) AS holder,
                   (SELECT count(*) FROM ins) AS stored",
            )
            .await?;
        let keys: Vec<String> = records.iter().map(|(k, _)| format!("{run}/{k}")).collect();
        let bodies: Vec<&str> = records.iter().map(|(_, r)| r.as_str()).collect();
        let row = c
            .query_one(&st, &[&run, &keys, &bodies, &now, &agent])
            .await?;
        let holder: Option<&str> = row.get("holder");
        policy::may_record(run, row.get::<_, bool>("found").then_some(holder), agent)?;
        let stored = row.get::<_, i64>("stored") as usize;
        if stored > 0 {
            self.notify(&c, News::Run).await;
        }
        Ok(Stored {
            stored,
            duplicates: records.len() - stored,
        })
    }

    async fn records(&self, run: &str, after: i64) -> Result<Vec<(i64, String)>> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT seq, record FROM records WHERE run_id = $1 AND seq > $2 ORDER BY seq",
            )
            .await?;
        Ok(c.query(&st, &[&run, &after])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
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
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "UPDATE runs SET status = $3, message = $4, finished_ms = $5, lease_expires_ms = NULL
                 WHERE id = $1 AND agent_id = $2 AND status = 'running'",
            )
            .await?;
        let taken = c
            .execute(&st, &[&run, &agent, &status, &message, &now])
            .await?
            == 1;
        if taken {
            self.notify(&c, News::Run).await;
        } else {
            // Ended already without this agent (its lease lost): its own end is kept beside
            // the run's, once.
            c.execute(
                "INSERT INTO site_outcomes (run_id, status, message, reported_ms)
                 SELECT id, $3, $4, $5 FROM runs
                 WHERE id = $1 AND agent_id = $2 AND status NOT IN ('queued', 'running')
                 ON CONFLICT (run_id) DO NOTHING",
                &[&run, &agent, &status, &message, &now],
            )
            .await?;
        }
        Ok(taken)
    }

    async fn set_report(&self, run: &str, agent: &str, report: &str, now: i64) -> Result<bool> {
        let c = self.pool.get().await?;
        // One statement: the report is kept only while the agent holds the run.
        let st = c
            .prepare_cached(
                "INSERT INTO run_reports (run_id, report, received_ms)
                 SELECT id, $3, $4 FROM runs WHERE id = $1 AND agent_id = $2 AND status = 'running'
                 ON CONFLICT (run_id) DO UPDATE SET report = EXCLUDED.report, received_ms = EXCLUDED.received_ms",
            )
            .await?;
        Ok(c.execute(&st, &[&run, &agent, &report, &now]).await? == 1)
    }

    async fn report(&self, run: &str) -> Result<Option<String>> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached("SELECT report FROM run_reports WHERE run_id = $1")
            .await?;
        Ok(c.query_opt(&st, &[&run]).await?.map(|r| r.get(0)))
    }

    async fn claim_idempotency_key(
        &self,
        key: &str,
        request: &str,
        now: i64,
        forget_before: i64,
    ) -> Result<Option<IdempotentRow>> {
        let c = self.pool.get().await?;
        let forget = c
            .prepare_cached("DELETE FROM idempotency_keys WHERE created_ms < $1")
            .await?;
        c.execute(&forget, &[&forget_before]).await?;
        // Two replicas claiming one key at once: the second waits for the first's commit,
        // then inserts nothing and reads the first's claim.
        let claim = c
            .prepare_cached(
                "INSERT INTO idempotency_keys (key, request, created_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO NOTHING",
            )
            .await?;
        if c.execute(&claim, &[&key, &request, &now]).await? == 1 {
            return Ok(None);
        }
        let st = c
            .prepare_cached(
                "SELECT request, status, response, created_ms FROM idempotency_keys WHERE key = $1",
            )
            .await?;
        let Some(r) = c.query_opt(&st, &[&key]).await? else {
            return Err(StoreError::Conflict(format!(
                "idempotency key {key}: forgotten while claimed; send it again"
            )));
        };
        let status: Option<i32> = r.get(1);
        let response: Option<String> = r.get(2);
        Ok(Some(IdempotentRow {
            request: r.get(0),
            answer: status.map(|s| s as u16).zip(response),
            created_ms: r.get(3),
        }))
    }

    async fn answer_idempotency_key(&self, key: &str, status: u16, body: &str) -> Result<()> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached("UPDATE idempotency_keys SET status = $2, response = $3 WHERE key = $1")
            .await?;
        c.execute(&st, &[&key, &(status as i32), &body]).await?;
        Ok(())
    }

    async fn release_idempotency_key(&self, key: &str) -> Result<()> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached("DELETE FROM idempotency_keys WHERE key = $1 AND status IS NULL")
            .await?;
        c.execute(&st, &[&key]).await?;
        Ok(())
    }

    async fn set_agent_outbox(&self, agent: &str, report: &str, now: i64) -> Result<()> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO agent_outboxes (agent_id, report, reported_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (agent_id) DO UPDATE SET report = EXCLUDED.report, reported_ms = EXCLUDED.reported_ms",
            )
            .await?;
        c.execute(&st, &[&agent, &report, &now]).await?;
        Ok(())
    }

    async fn agent_outboxes(&self) -> Result<Vec<(String, String)>> {
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached("SELECT agent_id, report FROM agent_outboxes")
            .await?;
        Ok(c.query(&st, &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    async fn first_use(&self, nonce: &str, now: i64, keep_until: i64) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        // Not waiting for the disk here: a nonce lost in a crash of the database only lets an
        // envelope captured just before it be replayed once, within its clock window (the
        // replica that opened it first refuses it anyway).
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
        let st = tx
            .prepare_cached(
                "INSERT INTO nonces (nonce, keep_until_ms) VALUES ($1, $2)
                 ON CONFLICT (nonce) DO UPDATE SET keep_until_ms = EXCLUDED.keep_until_ms
                   WHERE nonces.keep_until_ms < $3",
            )
            .await?;
        let n = tx.execute(&st, &[&nonce, &keep_until, &now]).await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn listen(&self, wake: &(dyn Fn(Change) + Send + Sync)) -> Result<()> {
        let (client, mut conn) = self.config.connect(NoTls).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut msgs = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(m) = msgs.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(Ok(n.payload().to_string())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let _driver = AbortOnDrop(driver);
        client
            .batch_execute(&format!("LISTEN \"{}\"", self.channel))
            .await?;
        // What changed before we listened.
        wake(Change::Queue);
        wake(Change::Run);
        let mut ping = tokio::time::interval(Duration::from_secs(15));
        ping.tick().await;
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Ok(p)) => match p.as_str() {
                        "queue" => wake(Change::Queue),
                        "run" => wake(Change::Run),
                        _ => {}
                    },
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(StoreError::Pool("the LISTEN connection closed".into())),
                },
                // A connection that died silently delivers nothing: notice it.
                _ = ping.tick() => {
                    match tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => return Err(StoreError::Pool("the LISTEN connection stopped answering".into())),
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::mask_url;

    #[test]
    fn passwords_are_masked_in_every_url_form() {
        for (url, want) in [
            (
                "postgres://vacsine:s3cret@db:5432/v",
                "postgres://vacsine:***@db:5432/v",
            ),
            ("postgresql://u:p@x@h/d", "postgresql://u:***@h/d"),
            ("postgres://u@h/d", "postgres://u@h/d"),
            (
                "postgres://h/d?password=pw&x=1",
                "postgres://h/d?password=***&x=1",
            ),
            (
                "host=h user=u password=pw dbname=d",
                "host=h user=u password=*** dbname=d",
            ),
            (
                "host=h password = 'a b\\' c' dbname=d",
                "host=h password=*** dbname=d",
            ),
        ] {
            let got = mask_url(url);
            assert_eq!(got, want, "{url}");
        }
    }
}
