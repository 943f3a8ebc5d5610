//! The run journal: embedded SQLite (WAL, `synchronous=FULL`), written before each step starts
//! and after it ends, so a crash can be resumed without silently re-running a step.
//!
//! Nothing secret is stored in plain text: records and inputs are masked before they get here,
//! and what a resume or an undo needs in full (real inputs and outputs, undo data) is sealed
//! with a key kept in a file of its own (see [`crate::seal`]). The database, its WAL and the key
//! are private to their owner (0600).
//!
//! A run is driven by one process at a time: the driver holds a lease on the run (holder,
//! heartbeat); another process may take it over only once the holder is gone (its process no
//! longer exists on this host, or its heartbeat is older than [`LEASE_TTL`]).

use crate::seal::Sealer;
use crate::RunStatus;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vacsine_core::record::{StepRecord, StepStatus};

#[derive(Debug, thiserror::Error)]
#[error("journal: {0}")]
pub struct JournalError(String);

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        JournalError(e.to_string())
    }
}

impl From<serde_json::Error> for JournalError {
    fn from(e: serde_json::Error) -> Self {
        JournalError(format!("corrupt JSON: {e}"))
    }
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id            TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    workflow_json TEXT NOT NULL,
    inputs_json   TEXT NOT NULL,
    target        TEXT NOT NULL,
    labels_json   TEXT NOT NULL,
    default_node  TEXT,
    status        TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    message       TEXT,
    compensated   INTEGER NOT NULL DEFAULT 0,
    inputs_sealed TEXT,
    holder        TEXT,
    heartbeat_ms  INTEGER
);
CREATE TABLE IF NOT EXISTS step_records (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL REFERENCES runs(id),
    step_id       TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    node          TEXT,
    executor      TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    duration_ms   INTEGER,
    status        TEXT NOT NULL,
    exit_code     INTEGER,
    stdout        TEXT NOT NULL,
    stderr        TEXT NOT NULL,
    changed       INTEGER NOT NULL,
    messages_json TEXT NOT NULL,
    error         TEXT,
    outputs_json  TEXT NOT NULL,
    outputs_sealed TEXT
);
CREATE INDEX IF NOT EXISTS step_records_run ON step_records(run_id, seq);
CREATE TABLE IF NOT EXISTS undo (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs(id),
    record_seq  INTEGER NOT NULL REFERENCES step_records(seq),
    step_id     TEXT NOT NULL,
    node        TEXT,
    executor    TEXT NOT NULL,
    data_json   TEXT NOT NULL,
    undone_at   TEXT
);
CREATE INDEX IF NOT EXISTS undo_run ON undo(run_id, seq);
";

/// Columns added after the first schema, added to older journals when opened.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("runs", "inputs_sealed", "TEXT"),
    ("runs", "holder", "TEXT"),
    ("runs", "heartbeat_ms", "INTEGER"),
    ("step_records", "outputs_sealed", "TEXT"),
];

/// A lease whose heartbeat is older than this is expired (its holder is taken for dead).
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a driver renews its lease.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Who drives a run: `<host>/<pid>/<process start time>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub host: String,
    pub pid: u32,
    start: String,
}

impl LeaseHolder {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        LeaseHolder {
            host: hostname(),
            pid,
            start: process_start(pid).unwrap_or_default(),
        }
    }
    fn encode(&self) -> String {
        format!("{}/{}/{}", self.host, self.pid, self.start)
    }
    fn decode(s: &str) -> Option<Self> {
        let mut it = s.rsplitn(3, '/');
        let start = it.next()?.to_string();
        let pid = it.next()?.parse().ok()?;
        let host = it.next()?.to_string();
        Some(LeaseHolder { host, pid, start })
    }
    /// Whether the holder is known to be gone: on this host, its process no longer exists
    /// (or the pid now belongs to another process).
    fn is_gone(&self) -> bool {
        self.host == hostname() && process_start(self.pid).as_deref() != Some(self.start.as_str())
    }
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process {} on host `{}`", self.pid, self.host)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19).map(str::to_string)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Why a lease could not be taken.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseBusy {
    pub holder: String,
    /// Time since the holder's last heartbeat.
    pub since_heartbeat: Duration,
}

/// A run as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    pub id: String,
    pub workflow: String,
    pub target: String,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Why the run stopped, when it did not succeed.
    pub message: Option<String>,
}

/// A run as stored, to resume or roll it back.
#[derive(Debug, Clone)]
pub(crate) struct StoredRun {
    pub summary: RunSummary,
    pub workflow_json: String,
    pub inputs: serde_json::Map<String, Value>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub default_node: Option<String>,
    pub compensated: bool,
}

/// A run as it is first journaled.
pub(crate) struct NewRun<'a> {
    pub id: &'a str,
    pub workflow: &'a str,
    pub workflow_json: &'a str,
    /// Masked, for display.
    pub inputs: &'a Map<String, Value>,
    /// Real, sealed.
    pub real_inputs: &'a Map<String, Value>,
    pub target: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
    pub default_node: Option<&'a str>,
    pub started_at: &'a str,
}

/// An ended run of the journal, as retention sees it ([`Journal::ended_runs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedRun {
    pub id: String,
    pub workflow: String,
    /// RFC 3339.
    pub finished_at: String,
    pub bytes: u64,
}

/// Give the free pages of the SQLite file at `path` back to the file system, through a
/// connection of its own (other connections may be open): an incremental vacuum when the
/// file allows it, else a full `VACUUM` that also turns incremental vacuum on for the next
/// time; then the write-ahead log is checkpointed and truncated. Returns the bytes the file
/// and its log shrank by.
pub fn reclaim_space(path: &Path) -> Result<u64> {
    let size = || {
        let f = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        f(path) + f(Path::new(&wal))
    };
    let before = size();
    let c = vacsine_private::sqlite::open(path).map_err(|e| JournalError(e.to_string()))?;
    c.busy_timeout(Duration::from_secs(30))?;
    let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    if free > 0 {
        if mode == 2 {
            // Each step of the pragma frees pages: stepped to its end.
            let mut st = c.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = st.query([])?;
            while rows.next()?.is_some() {}
        } else {
            c.execute_batch("PRAGMA auto_vacuum=INCREMENTAL; VACUUM;")?;
        }
    }
    // (busy, log pages, checkpointed): a reader still in the log leaves it as it is.
    let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    drop(c);
    Ok(before.saturating_sub(size()))
}

/// The place a sealed value is bound to.
fn place_inputs(run_id: &str) -> String {
    format!("run/{run_id}/inputs")
}
fn place_outputs(run_id: &str, seq: i64) -> String {
    format!("run/{run_id}/record/{seq}/outputs")
}
fn place_undo(run_id: &str, record_seq: i64) -> String {
    format!("run/{run_id}/record/{record_seq}/undo")
}

/// Undo data of one changed step, captured before the change.
#[derive(Debug, Clone)]
pub(crate) struct UndoEntry {
    pub seq: i64,
    pub record_seq: i64,
    pub step_id: String,
    pub node: Option<String>,
    pub executor: String,
    pub data: Value,
}

/// The journal. Cheap to clone (one shared connection).
#[derive(Clone)]
pub struct Journal {
    conn: Arc<Mutex<Connection>>,
    sealer: Arc<Sealer>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, StepRecord)> {
    let status: String = r.get("status")?;
    let messages: String = r.get("messages_json")?;
    let outputs: String = r.get("outputs_json")?;
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    Ok((
        r.get("seq")?,
        StepRecord {
            run_id: r.get("run_id")?,
            step_id: r.get("step_id")?,
            attempt: r.get("attempt")?,
            node: r.get("node")?,
            executor: r.get("executor")?,
            started_at: r.get("started_at")?,
            finished_at: r.get("finished_at")?,
            duration_ms: r.get::<_, Option<i64>>("duration_ms")?.map(|d| d as u64),
            status: StepStatus::parse(&status)
                .ok_or_else(|| bad(0, format!("unknown status {status}")))?,
            exit_code: r.get("exit_code")?,
            stdout: r.get("stdout")?,
            stderr: r.get("stderr")?,
            changed: r.get("changed")?,
            messages: serde_json::from_str(&messages).map_err(|e| bad(0, e.to_string()))?,
            error: r.get("error")?,
            outputs: serde_json::from_str(&outputs).map_err(|e| bad(0, e.to_string()))?,
            engine_run_id: None,
        },
    ))
}

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunSummary> {
    let status: String = r.get("status")?;
    Ok(RunSummary {
        id: r.get("id")?,
        workflow: r.get("workflow")?,
        target: r.get("target")?,
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        started_at: r.get("started_at")?,
        finished_at: r.get("finished_at")?,
        message: r.get("message")?,
    })
}

impl Journal {
    /// Open (or create) the journal file, private to its owner (0600, its WAL and shared
    /// memory files too), with its key in [`Journal::key_path`].
    pub fn open(path: &Path) -> Result<Self> {
        let conn = vacsine_private::sqlite::open(path)
            .map_err(|e| JournalError(format!("cannot open {e}")))?;
        let sealer = Sealer::load_or_create(&Self::key_path(path)).map_err(JournalError)?;
        Self::init(conn, sealer)
    }

    /// The key file of a journal: `journal.db` → `journal.key`.
    pub fn key_path(path: &Path) -> PathBuf {
        path.with_extension("key")
    }

    /// A journal that lives in memory (tests, one-shot runs), with an ephemeral key.
    pub fn in_memory() -> Result<Self> {
        Self::init(
            Connection::open_in_memory()?,
            Sealer::ephemeral().map_err(JournalError)?,
        )
    }

    fn init(conn: Connection, sealer: Sealer) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // A new journal gives freed pages back as runs are removed ([`reclaim_space`]
        // converts an older one).
        conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)?;
        for (table, column, ty) in ADDED_COLUMNS {
            let has: bool = conn.query_row(
                &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get(0),
            )?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
            }
        }
        conn.execute_batch("PRAGMA user_version = 2;")?;
        Ok(Journal {
            conn: Arc::new(Mutex::new(conn)),
            sealer: Arc::new(sealer),
        })
    }

    fn seal_json(&self, place: &str, v: &impl serde::Serialize) -> Result<String> {
        let plain = serde_json::to_vec(v)?;
        self.sealer.seal(place, &plain).map_err(JournalError)
    }

    fn open_json<T: serde::de::DeserializeOwned>(&self, place: &str, stored: &str) -> Result<T> {
        if !Sealer::is_sealed(stored) {
            return Ok(serde_json::from_str(stored)?);
        }
        let plain = self.sealer.open(place, stored).map_err(JournalError)?;
        Ok(serde_json::from_slice(&plain)?)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut c = self
            .conn
            .lock()
            .map_err(|_| JournalError("connection lock poisoned".into()))?;
        f(&mut c)
    }

    /// The most recent runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunSummary>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?1")?;
            let rows = st.query_map([limit as i64], summary_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Every run of workflow `workflow` journaled under target name `target`, oldest first.
    pub fn runs_of(&self, target: &str, workflow: &str) -> Result<Vec<RunSummary>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT * FROM runs WHERE target = ?1 AND workflow = ?2
                 ORDER BY started_at, rowid",
            )?;
            let rows = st.query_map([target, workflow], summary_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The workflow a run executed, as journaled (JSON of its `Workflow`, with the `with`
    /// values of its steps as written, before templating).
    pub fn run_workflow(&self, run_id: &str) -> Result<Option<String>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT workflow_json FROM runs WHERE id = ?1",
                [run_id],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    /// One run.
    pub fn run(&self, run_id: &str) -> Result<Option<RunSummary>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT * FROM runs WHERE id = ?1",
                [run_id],
                summary_from_row,
            )
            .optional()?)
        })
    }

    /// Runs that ended (any status but `running`, with an end time), with their workflow,
    /// end and the bytes they take (workflow, inputs, records, undo data): what retention
    /// may remove. A run still `running` (driven, or resumable after a crash) is never
    /// listed.
    pub fn ended_runs(&self) -> Result<Vec<EndedRun>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, workflow, finished_at,
                   length(CAST(workflow_json AS BLOB)) + length(CAST(inputs_json AS BLOB))
                   + COALESCE(length(CAST(inputs_sealed AS BLOB)), 0)
                   + COALESCE((SELECT SUM(length(CAST(stdout AS BLOB)) + length(CAST(stderr AS BLOB))
                       + length(CAST(messages_json AS BLOB)) + length(CAST(outputs_json AS BLOB))
                       + COALESCE(length(CAST(outputs_sealed AS BLOB)), 0)
                       + COALESCE(length(CAST(error AS BLOB)), 0) + 64)
                     FROM step_records WHERE run_id = runs.id), 0)
                   + COALESCE((SELECT SUM(length(CAST(data_json AS BLOB)) + 64)
                     FROM undo WHERE run_id = runs.id), 0)
                 FROM runs WHERE status != 'running' AND finished_at IS NOT NULL",
            )?;
            let rows = st.query_map([], |r| {
                Ok(EndedRun {
                    id: r.get(0)?,
                    workflow: r.get(1)?,
                    finished_at: r.get(2)?,
                    bytes: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Remove these runs, if ended, with their records and undo data (they can no longer be
    /// rolled back): the runs and records removed. A run `running` is left alone.
    pub fn remove_runs(&self, ids: &[String]) -> Result<(u64, u64)> {
        let (mut runs, mut records) = (0u64, 0u64);
        // Bounded transactions: a run being journaled waits at most for one.
        for chunk in ids.chunks(500) {
            self.with(|c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                for id in chunk {
                    let ended: bool = tx
                        .query_row(
                            "SELECT status != 'running' AND finished_at IS NOT NULL FROM runs WHERE id = ?1",
                            [id],
                            |r| r.get(0),
                        )
                        .optional()?
                        .unwrap_or(false);
                    if !ended {
                        continue;
                    }
                    tx.execute("DELETE FROM undo WHERE run_id = ?1", [id])?;
                    records += tx.execute("DELETE FROM step_records WHERE run_id = ?1", [id])? as u64;
                    runs += tx.execute("DELETE FROM runs WHERE id = ?1", [id])? as u64;
                }
                tx.commit()?;
                Ok(())
            })?;
        }
        Ok((runs, records))
    }

    /// Every step record of a run, in the order they were started.
    pub fn records(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        Ok(self
            .records_seq(run_id)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    pub(crate) fn records_seq(&self, run_id: &str) -> Result<Vec<(i64, StepRecord)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT * FROM step_records WHERE run_id = ?1 ORDER BY seq")?;
            let rows = st.query_map([run_id], record_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Journal a new run, leased to `holder`. `inputs` are shown (masked); `real_inputs`
    /// are sealed for a resume.
    pub(crate) fn create_run(&self, n: NewRun<'_>, holder: &LeaseHolder) -> Result<()> {
        let inputs = serde_json::to_string(n.inputs)?;
        let sealed = self.seal_json(&place_inputs(n.id), n.real_inputs)?;
        let labels = serde_json::to_string(n.labels)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, workflow, workflow_json, inputs_json, target, labels_json,
                   default_node, status, started_at, inputs_sealed, holder, heartbeat_ms)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,'running',?8,?9,?10,?11)",
                params![
                    n.id,
                    n.workflow,
                    n.workflow_json,
                    inputs,
                    n.target,
                    labels,
                    n.default_node,
                    n.started_at,
                    sealed,
                    holder.encode(),
                    now_ms()
                ],
            )?;
            Ok(())
        })
    }

    /// Take the lease of a run for `holder`: granted when nobody holds it, the holder is
    /// `holder` itself, or the holder is gone (process gone on this host, or heartbeat older
    /// than [`LEASE_TTL`]).
    pub(crate) fn acquire_lease(
        &self,
        run_id: &str,
        holder: &LeaseHolder,
    ) -> Result<std::result::Result<(), LeaseBusy>> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row: Option<(Option<String>, Option<i64>)> = tx
                .query_row(
                    "SELECT holder, heartbeat_ms FROM runs WHERE id = ?1",
                    [run_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((current, beat)) = row else {
                return Err(JournalError(format!("run `{run_id}` not found")));
            };
            let now = now_ms();
            if let Some(cur) = current.as_deref().filter(|c| *c != holder.encode()) {
                let age = Duration::from_millis((now - beat.unwrap_or(0)).max(0) as u64);
                let gone = LeaseHolder::decode(cur).is_none_or(|h| h.is_gone());
                if !gone && age < LEASE_TTL {
                    let shown = LeaseHolder::decode(cur)
                        .map(|h| h.to_string())
                        .unwrap_or_else(|| cur.to_string());
                    return Ok(Err(LeaseBusy {
                        holder: shown,
                        since_heartbeat: age,
                    }));
                }
            }
            tx.execute(
                "UPDATE runs SET holder = ?2, heartbeat_ms = ?3 WHERE id = ?1",
                params![run_id, holder.encode(), now],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })
    }

    /// Renew the lease; false when `holder` no longer holds it.
    pub(crate) fn heartbeat(&self, run_id: &str, holder: &LeaseHolder) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE runs SET heartbeat_ms = ?3 WHERE id = ?1 AND holder = ?2",
                params![run_id, holder.encode(), now_ms()],
            )?;
            Ok(n == 1)
        })
    }

    /// Give the lease up (the run ended, or its driver stops).
    pub(crate) fn release_lease(&self, run_id: &str, holder: &LeaseHolder) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET holder = NULL WHERE id = ?1 AND holder = ?2",
                params![run_id, holder.encode()],
            )?;
            Ok(())
        })
    }

    pub(crate) fn load_run(&self, id: &str) -> Result<Option<StoredRun>> {
        self.with(|c| {
            c.query_row("SELECT * FROM runs WHERE id = ?1", [id], |r| {
                let inputs: String = r.get("inputs_json")?;
                let sealed: Option<String> = r.get("inputs_sealed")?;
                let labels: String = r.get("labels_json")?;
                Ok((
                    StoredRun {
                        summary: summary_from_row(r)?,
                        workflow_json: r.get("workflow_json")?,
                        inputs: serde_json::from_str(&inputs).unwrap_or_default(),
                        labels: serde_json::from_str(&labels).unwrap_or_default(),
                        default_node: r.get("default_node")?,
                        compensated: r.get("compensated")?,
                    },
                    sealed,
                ))
            })
            .optional()
            .map_err(JournalError::from)
        })?
        .map(|(mut run, sealed)| {
            // The real inputs (a journal from before sealing has only the masked ones).
            if let Some(sealed) = sealed {
                run.inputs = self.open_json(&place_inputs(id), &sealed)?;
            }
            Ok(run)
        })
        .transpose()
    }

    /// Every step record of a run with the real outputs (for a resume or a rollback, whose
    /// later steps must see real values, not masked ones).
    pub(crate) fn records_unsealed(&self, run_id: &str) -> Result<Vec<(i64, StepRecord)>> {
        let sealed: Vec<(i64, String)> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT seq, outputs_sealed FROM step_records
                 WHERE run_id = ?1 AND outputs_sealed IS NOT NULL",
            )?;
            let rows = st.query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let mut real: std::collections::HashMap<i64, Map<String, Value>> = Default::default();
        for (seq, s) in sealed {
            real.insert(seq, self.open_json(&place_outputs(run_id, seq), &s)?);
        }
        let mut recs = self.records_seq(run_id)?;
        for (seq, r) in &mut recs {
            if let Some(o) = real.remove(seq) {
                r.outputs = o;
            }
        }
        Ok(recs)
    }

    pub(crate) fn set_run_status(
        &self,
        id: &str,
        status: RunStatus,
        finished_at: Option<&str>,
        message: Option<&str>,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, message = ?4 WHERE id = ?1",
                params![id, status.as_str(), finished_at, message],
            )?;
            Ok(())
        })
    }

    pub(crate) fn set_compensated(&self, id: &str) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE runs SET compensated = 1 WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Journal a record as it starts (status `running`); returns its sequence number.
    pub(crate) fn start_record(&self, r: &StepRecord) -> Result<i64> {
        let messages = serde_json::to_string(&r.messages)?;
        let outputs = serde_json::to_string(&r.outputs)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO step_records (run_id, step_id, attempt, node, executor, started_at,
                   finished_at, duration_ms, status, exit_code, stdout, stderr, changed,
                   messages_json, error, outputs_json)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)",
                params![
                    r.run_id,
                    r.step_id,
                    r.attempt,
                    r.node,
                    r.executor,
                    r.started_at,
                    r.finished_at,
                    r.duration_ms.map(|d| d as i64),
                    r.status.as_str(),
                    r.exit_code,
                    r.stdout,
                    r.stderr,
                    r.changed,
                    messages,
                    r.error,
                    outputs
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Journal a record as it ends, with its undo data (one transaction). `real_outputs`,
    /// when they differ from the (masked) record's, are sealed for a resume.
    pub(crate) fn finish_record(
        &self,
        seq: i64,
        r: &StepRecord,
        undo: Option<&Value>,
        real_outputs: Option<&Map<String, Value>>,
    ) -> Result<()> {
        let messages = serde_json::to_string(&r.messages)?;
        let outputs = serde_json::to_string(&r.outputs)?;
        let sealed_outputs = real_outputs
            .filter(|o| **o != r.outputs)
            .map(|o| self.seal_json(&place_outputs(&r.run_id, seq), o))
            .transpose()?;
        let undo = undo
            .map(|u| self.seal_json(&place_undo(&r.run_id, seq), u))
            .transpose()?;
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE step_records SET finished_at=?2, duration_ms=?3, status=?4, exit_code=?5,
                   stdout=?6, stderr=?7, changed=?8, messages_json=?9, error=?10, outputs_json=?11,
                   outputs_sealed = COALESCE(?12, outputs_sealed), started_at = ?13
                 WHERE seq = ?1",
                params![
                    seq,
                    r.finished_at,
                    r.duration_ms.map(|d| d as i64),
                    r.status.as_str(),
                    r.exit_code,
                    r.stdout,
                    r.stderr,
                    r.changed,
                    messages,
                    r.error,
                    outputs,
                    sealed_outputs,
                    // The start as it was, unless the step ran elsewhere and reported when.
                    r.started_at
                ],
            )?;
            if let Some(u) = undo {
                tx.execute(
                    "INSERT INTO undo (run_id, record_seq, step_id, node, executor, data_json)
                     VALUES (?1,?2,?3,?4,?5,?6)",
                    params![r.run_id, seq, r.step_id, r.node, r.executor, u],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Journal undo data of a running attempt *before* the change it protects (replacing any
    /// earlier capture of the same attempt).
    pub(crate) fn save_undo(
        &self,
        run_id: &str,
        record_seq: i64,
        step_id: &str,
        node: Option<&str>,
        executor: &str,
        data: &Value,
    ) -> Result<()> {
        let data = self.seal_json(&place_undo(run_id, record_seq), data)?;
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM undo WHERE record_seq = ?1 AND undone_at IS NULL",
                [record_seq],
            )?;
            tx.execute(
                "INSERT INTO undo (run_id, record_seq, step_id, node, executor, data_json)
                 VALUES (?1,?2,?3,?4,?5,?6)",
                params![run_id, record_seq, step_id, node, executor, data],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Forget the undo data of an attempt that changed nothing after all.
    pub(crate) fn drop_undo(&self, record_seq: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM undo WHERE record_seq = ?1 AND undone_at IS NULL",
                [record_seq],
            )?;
            Ok(())
        })
    }

    /// Change a finished record's status (e.g. to `rolled_back`), adding a message.
    pub(crate) fn update_record(&self, seq: i64, r: &StepRecord) -> Result<()> {
        self.finish_record(seq, r, None, None)
    }

    /// Undo data not yet applied, in completion order.
    pub(crate) fn pending_undo(&self, run_id: &str) -> Result<Vec<UndoEntry>> {
        let mut entries = self.with(|c| {
            let mut st = c.prepare(
                "SELECT seq, record_seq, step_id, node, executor, data_json FROM undo
                 WHERE run_id = ?1 AND undone_at IS NULL ORDER BY seq",
            )?;
            let rows = st.query_map([run_id], |r| {
                let data: String = r.get(5)?;
                Ok(UndoEntry {
                    seq: r.get(0)?,
                    record_seq: r.get(1)?,
                    step_id: r.get(2)?,
                    node: r.get(3)?,
                    executor: r.get(4)?,
                    data: Value::String(data),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        for e in &mut entries {
            if let Value::String(stored) = &e.data {
                e.data = self.open_json(&place_undo(run_id, e.record_seq), stored)?;
            }
        }
        Ok(entries)
    }

    pub(crate) fn mark_undone(&self, seq: i64, at: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE undo SET undone_at = ?2 WHERE seq = ?1",
                params![seq, at],
            )?;
            Ok(())
        })
    }
}
