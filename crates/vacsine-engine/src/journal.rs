//! The run journal: embedded SQLite (WAL, `synchronous=FULL`), written before each step starts
//! and after it ends, so a crash can be resumed without silently re-running a step.
//!
//! Nothing secret is stored in plain text: records and inputs are masked before they get here.

use crate::RunStatus;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
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
    compensated   INTEGER NOT NULL DEFAULT 0
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
    outputs_json  TEXT NOT NULL
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
PRAGMA user_version = 1;
";

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
    /// Open (or create) the journal file.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A journal that lives in memory (tests, one-shot runs).
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Journal {
            conn: Arc::new(Mutex::new(conn)),
        })
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

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_run(
        &self,
        id: &str,
        workflow: &str,
        workflow_json: &str,
        inputs: &serde_json::Map<String, Value>,
        target: &str,
        labels: &std::collections::BTreeMap<String, String>,
        default_node: Option<&str>,
        started_at: &str,
    ) -> Result<()> {
        let inputs = serde_json::to_string(inputs)?;
        let labels = serde_json::to_string(labels)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, workflow, workflow_json, inputs_json, target, labels_json,
                   default_node, status, started_at) VALUES (?1,?2,?3,?4,?5,?6,?7,'running',?8)",
                params![
                    id,
                    workflow,
                    workflow_json,
                    inputs,
                    target,
                    labels,
                    default_node,
                    started_at
                ],
            )?;
            Ok(())
        })
    }

    pub(crate) fn load_run(&self, id: &str) -> Result<Option<StoredRun>> {
        self.with(|c| {
            c.query_row("SELECT * FROM runs WHERE id = ?1", [id], |r| {
                let inputs: String = r.get("inputs_json")?;
                let labels: String = r.get("labels_json")?;
                Ok(StoredRun {
                    summary: summary_from_row(r)?,
                    workflow_json: r.get("workflow_json")?,
                    inputs: serde_json::from_str(&inputs).unwrap_or_default(),
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                    default_node: r.get("default_node")?,
                    compensated: r.get("compensated")?,
                })
            })
            .optional()
            .map_err(Into::into)
        })
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

    /// Journal a record as it ends, with its undo data (one transaction).
    pub(crate) fn finish_record(
        &self,
        seq: i64,
        r: &StepRecord,
        undo: Option<&Value>,
    ) -> Result<()> {
        let messages = serde_json::to_string(&r.messages)?;
        let outputs = serde_json::to_string(&r.outputs)?;
        let undo = undo.map(serde_json::to_string).transpose()?;
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE step_records SET finished_at=?2, duration_ms=?3, status=?4, exit_code=?5,
                   stdout=?6, stderr=?7, changed=?8, messages_json=?9, error=?10, outputs_json=?11
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
                    outputs
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
        let data = serde_json::to_string(data)?;
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
        self.finish_record(seq, r, None)
    }

    /// Undo data not yet applied, in completion order.
    pub(crate) fn pending_undo(&self, run_id: &str) -> Result<Vec<UndoEntry>> {
        self.with(|c| {
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
                    data: serde_json::from_str(&data).unwrap_or(Value::Null),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
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
