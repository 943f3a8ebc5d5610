//! Step records: the traceable log of every step a workflow runs (design §6).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Bound on stdout/stderr kept in a record, per stream.
pub const MAX_STREAM_BYTES: usize = 16 * 1024;
/// Marker appended when a stream was cut.
pub const TRUNCATION_MARKER: &str = "\n…[truncated by vacsine]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Journaled as started, not finished yet.
    Running,
    Succeeded,
    Failed,
    Skipped,
    TimedOut,
    Cancelled,
    RolledBack,
    Interrupted,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::TimedOut => "timed_out",
            StepStatus::Cancelled => "cancelled",
            StepStatus::RolledBack => "rolled_back",
            StepStatus::Interrupted => "interrupted",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => StepStatus::Running,
            "succeeded" => StepStatus::Succeeded,
            "failed" => StepStatus::Failed,
            "skipped" => StepStatus::Skipped,
            "timed_out" => StepStatus::TimedOut,
            "cancelled" => StepStatus::Cancelled,
            "rolled_back" => StepStatus::RolledBack,
            "interrupted" => StepStatus::Interrupted,
            _ => return None,
        })
    }
    /// Whether the step counts as done successfully for dependants.
    pub fn is_ok(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Skipped)
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// RFC 3339 with microseconds.
    pub at: String,
    pub level: Level,
    pub text: String,
}

/// One attempt of one step on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub run_id: String,
    pub step_id: String,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub executor: String,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    pub status: StepStatus,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub changed: bool,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub outputs: serde_json::Map<String, serde_json::Value>,
}

impl StepRecord {
    /// A record as an attempt starts: status `running`, nothing else known yet.
    pub fn started(
        run_id: &str,
        step_id: &str,
        attempt: u32,
        node: Option<&str>,
        executor: &str,
        started_at: String,
    ) -> Self {
        StepRecord {
            run_id: run_id.into(),
            step_id: step_id.into(),
            attempt,
            node: node.map(str::to_string),
            executor: executor.into(),
            started_at,
            finished_at: None,
            duration_ms: None,
            status: StepStatus::Running,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            changed: false,
            messages: Vec::new(),
            error: None,
            outputs: serde_json::Map::new(),
        }
    }

    /// A record of a step that ended at once without running (skipped, cancelled, failed
    /// before its executor could start), with one message.
    pub fn instant(
        run_id: &str,
        step_id: &str,
        attempt: u32,
        node: Option<&str>,
        executor: &str,
        status: StepStatus,
        message: Message,
    ) -> Self {
        let mut r =
            StepRecord::started(run_id, step_id, attempt, node, executor, message.at.clone());
        r.finished_at = Some(message.at.clone());
        r.duration_ms = Some(0);
        r.status = status;
        if status == StepStatus::Failed {
            r.error = Some(message.text.clone());
        }
        r.messages.push(message);
        r
    }
}

/// RFC 3339 UTC timestamp with microseconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Bound a stream for a record, marking truncation; invalid UTF-8 is replaced.
pub fn bound_stream(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() <= MAX_STREAM_BYTES {
        return s.into_owned();
    }
    let mut cut = MAX_STREAM_BYTES;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{TRUNCATION_MARKER}", &s[..cut])
}

/// Masks a fixed set of secrets in many strings (built once per run).
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<String>,
}

impl Masker {
    pub fn new(secrets: &[String]) -> Self {
        let mut secrets: Vec<String> = secrets.iter().filter(|s| !s.is_empty()).cloned().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Masker { secrets }
    }
    pub fn mask(&self, text: &str) -> String {
        mask(text, &self.secrets)
    }
}

/// Replace every occurrence of each secret by `***`.
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_stream_marks_truncation() {
        let big = vec![b'a'; MAX_STREAM_BYTES + 10];
        let s = bound_stream(&big);
        assert!(s.ends_with(TRUNCATION_MARKER));
        assert_eq!(s.len(), MAX_STREAM_BYTES + TRUNCATION_MARKER.len());
        assert_eq!(bound_stream(b"short"), "short");
    }

    #[test]
    fn mask_replaces_every_secret() {
        assert_eq!(
            mask("pw=hunter2 again hunter2", &["hunter2".into()]),
            "pw=*** again ***"
        );
        assert_eq!(mask("nothing", &["".into()]), "nothing");
    }
}
