//! The orchestrator's store: sites and their intake keys, agents, the work queue with leases,
//! and the step records agents upload (deduplicated by idempotency key).
//!
//! [`Store`] is the seam, with two implementations that pass the same test suite
//! (`tests.rs`):
//!
//! * [`SqliteStore`]: embedded, one file (WAL, synchronous FULL, 0600), one process; the
//!   connection has its own thread, which commits the operations waiting together once
//!   (group commit) before answering any of them.
//! * [`PgStore`]: PostgreSQL, shared by several orchestrator replicas: leases are claimed with
//!   `FOR UPDATE SKIP LOCKED`, and every change that can wake a waiting request is announced
//!   with `NOTIFY` so a replica's long poll wakes when another replica queued the work.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

mod pg;
pub mod policy;
mod posture;
mod sqlite;
#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests open the database behind the store to alter it
mod tests;

pub use pg::{mask_url, PgStore};
pub use posture::{AssessmentRow, HistoryRow, PostureStore};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("store: {0}")]
    Db(#[from] rusqlite::Error),
    /// Shown with its causes (the driver's own message is only "db error").
    #[error("PostgreSQL store: {}", causes(.0))]
    Postgres(tokio_postgres::Error),
    #[error("PostgreSQL store: {0}")]
    Pool(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("store: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// An error and its causes on one line, each said once.
fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteRow {
    pub name: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRow {
    pub id: String,
    pub site: String,
    pub name: String,
    /// HPKE public key, base64.
    pub public_key: String,
    pub version: String,
    pub enrolled_ms: i64,
    pub last_seen_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// Status of a run in the work queue: the names of the core's one [`RunStatus`], as the
/// stores keep them (the SQL boundary).
///
/// [`RunStatus`]: vacsine_core::status::RunStatus
pub mod status {
    use vacsine_core::status::RunStatus;
    pub const QUEUED: &str = RunStatus::Queued.as_str();
    /// Leased to an agent, which is executing it.
    pub const RUNNING: &str = RunStatus::Running.as_str();
    pub const SUCCEEDED: &str = RunStatus::Succeeded.as_str();
    pub const FAILED: &str = RunStatus::Failed.as_str();
    pub const CANCELLED: &str = RunStatus::Cancelled.as_str();
    /// Whether a stored status is final.
    pub fn is_final(s: &str) -> bool {
        RunStatus::is_final_str(s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRow {
    pub id: String,
    pub site: String,
    pub workflow: String,
    /// The work as the agent receives it (JSON).
    pub request: String,
    pub status: String,
    pub agent_id: Option<String>,
    pub lease_expires_ms: Option<i64>,
    /// How many times the run was leased.
    pub offers: i64,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub message: Option<String>,
    pub records: i64,
    /// What the run's agent itself reported after the orchestrator had ended the run without
    /// it (its lease lost while the site was cut off): kept beside that end, never in its
    /// place, so neither hides the other.
    pub site_outcome: Option<SiteOutcome>,
}

/// An end a site reported for a run the orchestrator had already ended (see
/// [`RunRow::site_outcome`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteOutcome {
    pub status: String,
    pub message: Option<String>,
    /// When the report reached the orchestrator.
    pub reported_ms: i64,
}

/// What an upload of records did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stored {
    pub stored: usize,
    pub duplicates: usize,
}

/// Counts for `/metrics` (see [`Store::metric_counts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricCounts {
    /// `(status, runs)`, statuses with no run left out.
    pub runs: Vec<(String, i64)>,
    pub agents_online: i64,
    /// Agents enrolled and not revoked.
    pub agents: i64,
}

/// A lease that expired, and what became of its run.
#[derive(Debug, Clone)]
pub struct Expired {
    pub run_id: String,
    pub agent_id: String,
    /// `queued` (re-offered) or `failed`.
    pub now_status: String,
}

/// A run's job as the orchestrator signed it (see `vacsine_contract::bundle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRow {
    pub payload: String,
    pub signature: String,
    pub key_id: String,
}

/// A version of a policy or workflow in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRow {
    pub kind: String,
    pub name: String,
    pub version: i64,
    pub sha256: String,
    /// The document as JSON.
    pub document: String,
    pub pushed_ms: i64,
    /// The orchestrator's signature of kind, name and SHA-256, made when it was pushed
    /// (`bundle::sign_document`); `None` for a document pushed before documents were signed.
    pub signature: Option<String>,
}

pub use policy::MAX_OFFERS;

/// An operator write made with an `Idempotency-Key` (`server/idempotency.rs`): what was asked
/// and, once answered, the answer, so that the same key sent again gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRow {
    /// What was asked: method and path (`POST /v1/runs`).
    pub request: String,
    /// The answer (status, JSON body). `None`: under way, or cut by a stop of the orchestrator.
    pub answer: Option<(u16, String)>,
    pub created_ms: i64,
}

/// A page of [`Store::runs_page`]: filters, and where the previous page ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    pub site: Option<String>,
    pub status: Option<String>,
    pub workflow: Option<String>,
    /// Only runs listed after this one (newest first): the previous page's [`RunPage::next`].
    pub before: Option<Cursor>,
    pub limit: usize,
}

/// A place in the list of runs, newest first: a run's creation and its insertion order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_ms: i64,
    pub seq: i64,
}

impl Cursor {
    /// As the API and the CLI pass it: `CREATED_MS.SEQ`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_ms, self.seq)
    }
    pub fn decode(s: &str) -> Option<Cursor> {
        let (a, b) = s.split_once('.')?;
        Some(Cursor {
            created_ms: a.parse().ok()?,
            seq: b.parse().ok()?,
        })
    }
}

/// Runs newest first, and the cursor of the next page when there may be one.
#[derive(Debug, Clone, Default)]
pub struct RunPage {
    pub runs: Vec<RunRow>,
    pub next: Option<Cursor>,
}

/// Ended statuses, as the stores' SQL lists them (retention removes only these).
pub(crate) const ENDED_SQL: &str = "('succeeded', 'failed', 'cancelled')";

/// A change another process sharing the store made, that may end a wait here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Work was queued or re-offered, or an agent revoked: long polls look again.
    Queue,
    /// A run changed status or got records: operators following a run look again.
    Run,
}

/// A decision as the orchestrator keeps it (issue 16): made at a site and uploaded, or added
/// by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRow {
    pub id: String,
    /// The decision (`vacsine_response::Decision`, JSON).
    pub body: String,
    /// Sites it applies at, JSON array (empty: every site).
    pub scope: String,
    pub origin_site: Option<String>,
    pub event_ms: Option<i64>,
    pub decided_ms: i64,
    pub expires_ms: Option<i64>,
    pub deleted_ms: Option<i64>,
    /// (site, when it was in effect there), by site.
    pub applied: Vec<(String, i64)>,
    /// The decision and its scope as the orchestrator signed them when it was made
    /// (`proto::SignedJob`, JSON; `vacsine_contract::decisions`): what sites act on, `body` and `scope`
    /// only index it. None for a row written before decisions were signed.
    pub signed: Option<String>,
    /// Its deletion as the orchestrator signed it (`proto::SignedJob`, JSON).
    pub deletion: Option<String>,
}

/// A decision or workflow run waiting for a person's approval (issue 16, `approval:
/// required`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRow {
    /// The decision's or the run's id (deterministic: one approval per response, event and
    /// target).
    pub id: String,
    pub response: String,
    /// What waits (`proto::Held`, JSON: a decision or a workflow run).
    pub body: String,
    /// Sites it applies at once approved, JSON array (empty: every site).
    pub scope: String,
    /// The site whose event asked for it.
    pub site: String,
    pub event_ms: Option<i64>,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// `awaiting`, `approved` or `denied` (an awaiting one past `expires_ms` is expired).
    pub state: String,
    pub settled_ms: Option<i64>,
    /// What waits, its scope, site and expiry as the orchestrator signed them when the
    /// Response asked (`proto::SignedJob`, JSON; `vacsine_contract::decisions::ApprovalGrant`): what an
    /// approval enacts. None for a row written before approvals were signed.
    pub signed: Option<String>,
}

/// Approvals (issue 16): each kept once by id, settled once; and the sites' labels (a
/// Response's `scope.labels` matches the sites carrying them).
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Every site's labels: (site, JSON object of strings).
    async fn site_labels(&self) -> Result<Vec<(String, String)>>;
    /// Replace site `site`'s labels (JSON object of strings).
    async fn set_site_labels(&self, site: &str, labels: &str) -> Result<()>;
    /// Keep an approval once by its id; true when new.
    async fn put_approval(&self, a: &ApprovalRow) -> Result<bool>;
    /// Every approval, oldest first.
    async fn approvals(&self) -> Result<Vec<ApprovalRow>>;
    /// Settle approval `id` as `state` (`approved`/`denied`) if it is awaiting and not
    /// expired at `now`; true when this call settled it.
    async fn settle_approval(&self, id: &str, state: &str, now: i64) -> Result<bool>;
}

/// An event a site uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    pub id: String,
    pub site: String,
    pub received_ms: i64,
    /// The event (`vacsine_events::Event`, JSON).
    pub body: String,
}

/// Each (decision, site, time) onto its decision.
fn attach_applied(rows: &mut [DecisionRow], applied: Vec<(String, String, i64)>) {
    let index: std::collections::HashMap<String, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    for (id, site, at) in applied {
        if let Some(&i) = index.get(&id) {
            rows[i].applied.push((site, at));
        }
    }
}

/// Events and decisions (issue 16), each kept once.
#[async_trait]
pub trait ResponseStore: Send + Sync {
    /// Keep events (`(id, JSON)`) uploaded from `site`, each once by its id; how many were
    /// new.
    async fn put_events(&self, site: &str, events: &[(String, String)], now: i64) -> Result<usize>;
    /// Keep a decision once by its id (`applied`, `deleted_ms` and `deletion` are not read);
    /// true when new.
    async fn put_decision(&self, d: &DecisionRow) -> Result<bool>;
    /// Decision `id` in effect at `site` since `at_ms` (the first report kept); true when new.
    async fn decision_applied(&self, id: &str, site: &str, at_ms: i64) -> Result<bool>;
    /// Delete decision `id` (by hand), with its signed deletion; false when unknown or
    /// deleted already.
    async fn delete_decision(&self, id: &str, now: i64, deletion: &str) -> Result<bool>;
    /// Every decision, oldest first, with where it was applied.
    async fn decisions(&self) -> Result<Vec<DecisionRow>>;
    /// The latest `limit` events (of `site`), newest first.
    async fn events(&self, site: Option<&str>, limit: usize) -> Result<Vec<EventRow>>;
    /// Where the poll of threat-intelligence feed `feed` (its URL) resumes (TAXII
    /// `added_after`), if it was ever polled.
    async fn feed_position(&self, feed: &str) -> Result<Option<String>>;
    /// Keep `position` as where the poll of `feed` resumes.
    async fn set_feed_position(&self, feed: &str, position: &str, now: i64) -> Result<()>;
}

/// A CrowdSec bouncer allowed to read the decisions (issue 16, compatible enforcement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BouncerRow {
    pub name: String,
    /// `sha256:…` of its API key (the key itself is shown once, never kept).
    pub key_hash: String,
    /// Only decisions whose scope holds this site (`None`: decisions for every site).
    pub site: Option<String>,
    pub created_ms: i64,
    /// Its last pull of the decision stream.
    pub last_pull_ms: Option<i64>,
    /// The decision ids it was last given as active (JSON array): the next stream's `new`
    /// and `deleted` are the difference from this.
    pub known: String,
}

/// CrowdSec bouncers and what each was last given (issue 16).
#[async_trait]
pub trait BouncerStore: Send + Sync {
    /// Keep a new bouncer; false when the name is taken.
    async fn put_bouncer(&self, b: &BouncerRow) -> Result<bool>;
    /// Every bouncer, by name.
    async fn bouncers(&self) -> Result<Vec<BouncerRow>>;
    /// Remove bouncer `name`; false when unknown.
    async fn delete_bouncer(&self, name: &str) -> Result<bool>;
    /// Record a pull: what bouncer `name` now holds, and when.
    async fn bouncer_pulled(&self, name: &str, known: &str, now: i64) -> Result<()>;
}

/// A person allowed into the console (issue 17): `vacsine user add NAME --role R`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// `sha256:…` of the user's token (the token is shown once, never kept).
    pub token_hash: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// A console session (issue 17): the cookie's value is known only to the browser; the store
/// keeps its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    /// `sha256:…` of the session cookie's value.
    pub id_hash: String,
    pub user: String,
    /// The token every form of this session carries (checked on every POST).
    pub csrf: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// Console users and their sessions (issue 17).
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Keep a new user; false when a user of that name exists and is not revoked (a revoked
    /// one is replaced: new role, new token).
    async fn put_user(&self, u: &UserRow) -> Result<bool>;
    /// Every user, by name (revoked ones too).
    async fn users(&self) -> Result<Vec<UserRow>>;
    /// The user (not revoked) holding the token whose hash is `token_hash`.
    async fn user_by_token(&self, token_hash: &str) -> Result<Option<UserRow>>;
    /// Revoke user `name` and end every session of theirs, at once; how many sessions were
    /// ended, `None` when there is no such user or it was revoked already.
    async fn revoke_user(&self, name: &str, now: i64) -> Result<Option<usize>>;
    /// Keep a new session (sessions expired at `now` are forgotten first).
    async fn put_session(&self, s: &SessionRow, now: i64) -> Result<()>;
    /// Session `id_hash` and its user, if the session has not expired at `now` and its user
    /// is not revoked.
    async fn session(&self, id_hash: &str, now: i64) -> Result<Option<(SessionRow, UserRow)>>;
    /// End session `id_hash` (logout); false when unknown.
    async fn delete_session(&self, id_hash: &str) -> Result<bool>;
}

#[async_trait]
pub trait Store:
    ResponseStore + ApprovalStore + BouncerStore + UserStore + PostureStore + Send + Sync
{
    async fn create_site(&self, name: &str, intake_hash: &str, now: i64) -> Result<()>;
    async fn sites(&self) -> Result<Vec<SiteRow>>;
    /// Revoke a site and every agent of it.
    async fn revoke_site(&self, name: &str, now: i64) -> Result<()>;
    async fn revoke_agent(&self, site: &str, name: &str, now: i64) -> Result<()>;
    /// The site an intake key belongs to, if it is not revoked.
    async fn site_by_intake(&self, intake_hash: &str) -> Result<Option<SiteRow>>;
    async fn enroll_agent(&self, a: &AgentRow) -> Result<()>;
    async fn agent(&self, id: &str) -> Result<Option<AgentRow>>;
    async fn agents(&self) -> Result<Vec<AgentRow>>;
    async fn touch_agent(&self, id: &str, now: i64) -> Result<()>;
    async fn create_run(&self, r: &RunRow) -> Result<()>;
    async fn run(&self, id: &str) -> Result<Option<RunRow>>;
    async fn runs(&self, limit: usize) -> Result<Vec<RunRow>>;
    /// What `/metrics` shows from the store (issue 17): runs per status, agents not revoked
    /// and seen since `online_since`; counts only, one cheap query each.
    async fn metric_counts(&self, online_since: i64) -> Result<MetricCounts>;
    /// One page of runs, newest first, filtered in the store (indexed by site and status).
    async fn runs_page(&self, q: &RunQuery) -> Result<RunPage>;
    /// Agents and the creation of their latest autonomous run among the `within` most
    /// recent runs (`vacsine status`).
    async fn last_autonomous(&self, within: usize) -> Result<Vec<(String, i64)>>;
    /// Ended runs (succeeded, failed, cancelled), each with its site, end and bytes (its
    /// job and records): what retention may remove ([`vacsine_engine::retention::plan`] decides).
    /// Never a queued or running run.
    async fn ended_runs(&self) -> Result<Vec<vacsine_engine::retention::Candidate>>;
    /// Remove these runs, if ended, with their records, report, site outcome and signed
    /// job; then give the space back (SQLite: the file shrinks). Ids not ended or unknown
    /// are left alone.
    async fn remove_runs(&self, ids: &[String]) -> Result<vacsine_engine::retention::Removed>;
    /// Runs `running` and held by `agent` (the orchestrator's own driver: runs spanning sites).
    async fn running_held_by(&self, agent: &str) -> Result<Vec<RunRow>>;
    /// Lease the oldest queued run of `site` to `agent` until `now + ttl_ms`.
    async fn lease_next(
        &self,
        site: &str,
        agent: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<Option<RunRow>>;
    /// Renew `agent`'s leases on `runs`; returns the runs it still holds.
    async fn renew(
        &self,
        agent: &str,
        runs: &[String],
        now: i64,
        ttl_ms: i64,
    ) -> Result<Vec<String>>;
    /// Leases past their expiry: re-offered when nothing was recorded yet (at most
    /// [`MAX_OFFERS`] offers), failed visibly otherwise.
    async fn expire_leases(&self, now: i64) -> Result<Vec<Expired>>;
    /// At start: the leases held when the orchestrator stopped get one more TTL (their agents
    /// could not renew while it was down).
    async fn extend_leases(&self, now: i64, ttl_ms: i64) -> Result<usize>;
    /// Cancel `run` if no agent took it yet (a step of a run spanning sites whose wait
    /// ended); false when it was taken or had ended.
    async fn cancel_queued(&self, run: &str, message: &str, now: i64) -> Result<bool>;
    /// Store records of `run` uploaded by `agent`, each once by its idempotency key.
    async fn add_records(
        &self,
        run: &str,
        agent: &str,
        records: &[(String, String)],
        now: i64,
    ) -> Result<Stored>;
    /// Records of a run after sequence number `after`, in arrival order.
    async fn records(&self, run: &str, after: i64) -> Result<Vec<(i64, String)>>;
    /// The agent holding `run` reports its end. Returns false when it no longer holds it;
    /// then, if the run was this agent's and has already ended (its lease lost), the end the
    /// agent reports is kept as the run's [`SiteOutcome`] (the first one only).
    async fn finish_run(
        &self,
        run: &str,
        agent: &str,
        status: &str,
        message: Option<&str>,
        now: i64,
    ) -> Result<bool>;
    /// Keep the report `agent` made of `run` (an enforce job), while it holds the run's lease
    /// (a report sent again replaces the first). Returns false when it no longer holds it.
    async fn set_report(&self, run: &str, agent: &str, report: &str, now: i64) -> Result<bool>;
    /// The report kept with `run`, if any.
    async fn report(&self, run: &str) -> Result<Option<String>>;
    /// Remember the nonce of a sealed request that opened, until `keep_until`; false when a
    /// process sharing the store saw it already: a replay sent to another replica (each
    /// process also refuses replays it saw itself). A store one process uses has nothing to
    /// add to that process's memory: true.
    /// Keep the signed job of run `run` (before the run is queued, so no agent is handed it
    /// unsigned). A second one for the same run is a conflict.
    async fn put_signed_job(&self, run: &str, job: &SignedRow, now: i64) -> Result<()>;
    /// Queue run `r` with its signed job (the signed job first: a run is never offered
    /// without it).
    async fn create_signed_run(&self, r: &RunRow, job: &SignedRow, now: i64) -> Result<()> {
        self.put_signed_job(&r.id, job, now).await?;
        self.create_run(r).await
    }
    /// The signed job of run `run`, if it was signed.
    async fn signed_job(&self, run: &str) -> Result<Option<SignedRow>>;
    /// Push a document into the registry: a new version (1, 2, …) of `kind`/`name` when its
    /// content (`sha256`) differs from the latest one, else the latest one (given
    /// `signature` if it had none). `true` when a version was made.
    async fn push_document(
        &self,
        kind: &str,
        name: &str,
        sha256: &str,
        document: &str,
        signature: &str,
        now: i64,
    ) -> Result<(RegistryRow, bool)>;
    /// Every version of every document, by kind, name and version.
    async fn registry(&self) -> Result<Vec<RegistryRow>>;
    /// One version of a document, or its latest (`version` `None`).
    async fn registry_document(
        &self,
        kind: &str,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<RegistryRow>>;
    /// Claim idempotency key `key` for `request` (keys claimed before `forget_before` are
    /// forgotten first): `None` when the key was new and is now claimed by the caller, which
    /// then answers or releases it; the row the key holds otherwise.
    async fn claim_idempotency_key(
        &self,
        key: &str,
        request: &str,
        now: i64,
        forget_before: i64,
    ) -> Result<Option<IdempotentRow>>;
    /// Keep the answer to the write that claimed `key`.
    async fn answer_idempotency_key(&self, key: &str, status: u16, body: &str) -> Result<()>;
    /// Forget the claim of `key` (its write was not made: the same key may ask again).
    async fn release_idempotency_key(&self, key: &str) -> Result<()>;
    /// Keep what agent `agent` last reported of its outbox's refused items (JSON of
    /// `proto::OutboxReport`), replacing the one before.
    async fn set_agent_outbox(&self, agent: &str, report: &str, now: i64) -> Result<()>;
    /// Every agent's last outbox report: (agent id, JSON).
    async fn agent_outboxes(&self) -> Result<Vec<(String, String)>>;
    async fn first_use(&self, nonce: &str, now: i64, keep_until: i64) -> Result<bool> {
        let _ = (nonce, now, keep_until);
        Ok(true)
    }
    /// Runs until the store's connection fails, calling `wake` for each change made by any
    /// process sharing the store (this one included), and once for each kind when it starts
    /// (what changed while it was not listening). A store only one process uses has nothing
    /// to report: it waits forever.
    async fn listen(&self, wake: &(dyn Fn(Change) + Send + Sync)) -> Result<()> {
        let _ = wake;
        std::future::pending().await
    }
}
