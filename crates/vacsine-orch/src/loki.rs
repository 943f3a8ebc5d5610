//! Step records, events and decisions pushed to Grafana Loki (issue 17), through its push
//! API (`POST /loki/api/v1/push`, JSON).
//!
//! * Labels: `site`, `agent`, `level`, `kind` only (few values each); run, step, event and
//!   decision ids are in the line, never in a label.
//! * Batched (up to [`LokiConfig::batch`] lines a request), retried with exponential backoff
//!   (0.5 s … 30 s) while Loki is unreachable or answers 429/5xx.
//! * A bounded buffer ([`LokiConfig::buffer`] lines): while Loki is down nothing is lost as
//!   long as the backlog is within the bound; past it the oldest lines are given up, counted
//!   (`vacsine_loki_dropped_total`) and logged. At a graceful stop the backlog is written to
//!   `loki-spool.jsonl` in the data folder and read back at the next start. A crash loses
//!   the backlog of this process (the records, events and decisions themselves are in the
//!   store).
//! * None doubled: each line's timestamp comes from the item itself (a record's end or
//!   start, an event's time, a decision's time), so a line sent again (an agent's upload
//!   retried, a batch whose answer was lost) is the same timestamp and line, which Loki keeps
//!   once.

use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct LokiConfig {
    /// Loki's base URL (`http://loki:3100`) or its full push URL.
    pub url: String,
    /// Lines held at most while Loki is unreachable.
    pub buffer: usize,
    /// Lines per push request at most.
    pub batch: usize,
    /// Where the backlog is kept across a graceful stop.
    pub spool: PathBuf,
}

/// Default of [`LokiConfig::buffer`].
pub const DEFAULT_BUFFER: usize = 200_000;
/// Default of [`LokiConfig::batch`].
pub const DEFAULT_BATCH: usize = 1_000;
/// Longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The spool file's name in the data folder.
pub const SPOOL: &str = "loki-spool.jsonl";

/// The push URL of a configured Loki URL.
pub fn push_url(url: &str) -> String {
    let u = url.trim_end_matches('/');
    if u.ends_with("/loki/api/v1/push") {
        u.to_string()
    } else {
        format!("{u}/loki/api/v1/push")
    }
}

/// One log line and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub site: String,
    pub agent: String,
    pub level: String,
    pub kind: String,
    /// Nanoseconds since the epoch, from the item (stable: see the module's docs).
    pub ts_ns: i64,
    pub line: String,
}

impl Line {
    /// A step record (`record`, as stored) of `run` under `key`, uploaded by `agent` of
    /// `site`.
    pub fn step_record(
        site: &str,
        agent: &str,
        run: &str,
        key: &str,
        record: &vacsine_core::record::StepRecord,
        raw: &serde_json::Value,
    ) -> Line {
        let at = record
            .finished_at
            .as_deref()
            .unwrap_or(record.started_at.as_str());
        let ts_ns = chrono::DateTime::parse_from_rfc3339(at)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(0);
        use vacsine_core::record::StepStatus;
        let failed = matches!(record.status, StepStatus::Failed | StepStatus::TimedOut);
        Line {
            site: site.into(),
            agent: agent.into(),
            level: if failed { "error" } else { "info" }.into(),
            kind: "step_record".into(),
            ts_ns,
            line: serde_json::json!({"run": run, "key": key, "record": raw}).to_string(),
        }
    }

    /// An event uploaded by `agent` of `site`.
    pub fn event(site: &str, agent: &str, e: &vacsine_events::Event, body: &str) -> Line {
        use vacsine_events::Severity;
        let level = match e.severity {
            Severity::Info | Severity::Low => "info",
            Severity::Medium => "warning",
            Severity::High => "error",
            Severity::Critical => "critical",
        };
        Line {
            site: site.into(),
            agent: agent.into(),
            level: level.into(),
            kind: "event".into(),
            ts_ns: e.time.timestamp_nanos_opt().unwrap_or(0),
            line: body.into(),
        }
    }

    /// A decision kept at the orchestrator (`body`: its JSON), made at `site` by `agent`
    /// (both empty for an operator's).
    pub fn decision(site: &str, agent: &str, decided_ms: i64, body: &str) -> Line {
        Line {
            site: site.into(),
            agent: agent.into(),
            level: "warning".into(),
            kind: "decision".into(),
            ts_ns: decided_ms.saturating_mul(1_000_000),
            line: body.into(),
        }
    }
}

/// The push request body of `lines` (one stream per label set; empty labels left out).
pub fn push_body(lines: &[Line]) -> serde_json::Value {
    let mut streams: BTreeMap<[&str; 4], Vec<(i64, &str)>> = BTreeMap::new();
    for l in lines {
        streams
            .entry([&l.site, &l.agent, &l.level, &l.kind])
            .or_default()
            .push((l.ts_ns, &l.line));
    }
    let streams: Vec<serde_json::Value> = streams
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|(t, _)| *t);
            let mut labels = serde_json::Map::new();
            for (name, value) in ["site", "agent", "level", "kind"].iter().zip(k) {
                if !value.is_empty() {
                    labels.insert((*name).into(), value.into());
                }
            }
            serde_json::json!({
                "stream": labels,
                "values": v.into_iter().map(|(t, l)| [t.to_string(), l.to_string()]).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "streams": streams })
}

/// The buffer between the handlers and the pusher.
pub struct Loki {
    queue: Mutex<VecDeque<Line>>,
    wake: Notify,
    cap: usize,
    metrics: Arc<Metrics>,
}

impl Loki {
    /// A buffer of `cap` lines, holding what `spool` kept at the last stop (the file is
    /// removed once read).
    pub fn open(cap: usize, spool: &Path, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Loki>> {
        let l = Arc::new(Loki {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            cap: cap.max(1),
            metrics,
        });
        match std::fs::read_to_string(spool) {
            Ok(s) => {
                let mut kept = Vec::new();
                for (i, line) in s.lines().enumerate() {
                    match serde_json::from_str::<Line>(line) {
                        Ok(x) => kept.push(x),
                        Err(e) => tracing::warn!(
                            "{}:{}: not a spooled Loki line ({e}): skipped",
                            spool.display(),
                            i + 1
                        ),
                    }
                }
                let n = kept.len();
                l.push(kept);
                std::fs::remove_file(spool)?;
                if n > 0 {
                    tracing::info!("{n} line(s) for Loki read back from {}", spool.display());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", spool.display())),
        }
        Ok(l)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Line>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue lines; past the bound the oldest are given up (counted, logged).
    pub fn push(&self, lines: impl IntoIterator<Item = Line>) {
        let mut dropped = 0u64;
        {
            let mut q = self.lock();
            for l in lines {
                if q.len() >= self.cap {
                    q.pop_front();
                    dropped += 1;
                }
                q.push_back(l);
            }
            self.metrics.loki_buffered.set(q.len() as i64);
        }
        if dropped > 0 {
            self.metrics.loki_dropped.inc_by(dropped);
            tracing::warn!(
                "Loki backlog full ({} lines): {dropped} oldest line(s) given up",
                self.cap
            );
        }
        self.wake.notify_one();
    }

    /// Lines waiting.
    pub fn backlog(&self) -> usize {
        self.lock().len()
    }

    /// Take up to `n` lines from the front.
    fn take(&self, n: usize) -> Vec<Line> {
        let mut q = self.lock();
        let k = n.min(q.len());
        q.drain(..k).collect()
    }

    /// Put lines not delivered back in front (they are older than what is queued); past the
    /// bound the oldest are given up.
    fn put_back(&self, lines: Vec<Line>) {
        let mut q = self.lock();
        for l in lines.into_iter().rev() {
            q.push_front(l);
        }
        let mut dropped = 0u64;
        while q.len() > self.cap {
            q.pop_front();
            dropped += 1;
        }
        self.metrics.loki_buffered.set(q.len() as i64);
        drop(q);
        if dropped > 0 {
            self.metrics.loki_dropped.inc_by(dropped);
            tracing::warn!("Loki backlog full: {dropped} oldest line(s) given up");
        }
    }

    /// Push until `stop` turns true; then one last try, and the backlog written to the
    /// spool.
    pub async fn run(self: Arc<Self>, cfg: LokiConfig, mut stop: watch::Receiver<bool>) {
        let url = push_url(&cfg.url);
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("Loki client: {e}: nothing will be pushed");
                return;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        loop {
            if *stop.borrow() {
                break;
            }
            let batch = self.take(cfg.batch.max(1));
            if batch.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {},
                    _ = stop.changed() => {},
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                }
                continue;
            }
            match send(&client, &url, &batch).await {
                Sent::Ok => {
                    self.metrics.loki_pushed.inc_by(batch.len() as u64);
                    self.metrics.loki_buffered.set(self.backlog() as i64);
                    if failing {
                        tracing::info!("Loki reachable again at {url}");
                    }
                    failing = false;
                    backoff = FIRST_BACKOFF;
                }
                Sent::Refused(why) => {
                    // Loki will never take these (malformed, too old): given up, counted.
                    self.metrics.loki_dropped.inc_by(batch.len() as u64);
                    tracing::warn!("Loki refused {} line(s): {why}", batch.len());
                }
                Sent::Retry(why) => {
                    if !failing {
                        tracing::warn!(
                            "Loki at {url}: {why}: kept ({} line(s) waiting), retrying with backoff",
                            batch.len() + self.backlog()
                        );
                    }
                    failing = true;
                    self.put_back(batch);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {},
                        _ = stop.changed() => {},
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        // Stopping: one quick try, then what is left goes to the spool.
        if !failing {
            while self.backlog() > 0 {
                let batch = self.take(cfg.batch.max(1));
                match tokio::time::timeout(Duration::from_secs(2), send(&client, &url, &batch))
                    .await
                {
                    Ok(Sent::Ok) => {
                        self.metrics.loki_pushed.inc_by(batch.len() as u64);
                    }
                    _ => {
                        self.put_back(batch);
                        break;
                    }
                }
            }
        }
        if let Err(e) = self.spool(&cfg.spool) {
            tracing::error!("writing the Loki backlog to {}: {e}", cfg.spool.display());
        }
    }

    /// Write the backlog to `path` (whole, then renamed into place); nothing when empty.
    pub fn spool(&self, path: &Path) -> std::io::Result<()> {
        let lines: Vec<Line> = self.lock().drain(..).collect();
        if lines.is_empty() {
            return Ok(());
        }
        let mut s = String::new();
        for l in &lines {
            s.push_str(&serde_json::to_string(l).map_err(std::io::Error::other)?);
            s.push('\n');
        }
        let tmp = path.with_extension("jsonl.tmp");
        crate::files::write_private(&tmp, s.as_bytes())?;
        std::fs::rename(&tmp, path)?;
        eprintln!(
            "{} line(s) for Loki kept in {} (pushed at the next start)",
            lines.len(),
            path.display()
        );
        Ok(())
    }
}

enum Sent {
    Ok,
    Refused(String),
    Retry(String),
}

async fn send(client: &reqwest::Client, url: &str, batch: &[Line]) -> Sent {
    let body = push_body(batch);
    match client.post(url).json(&body).send().await {
        Ok(r) if r.status().is_success() => Sent::Ok,
        Ok(r) => {
            let st = r.status();
            let text = r.text().await.unwrap_or_default();
            let text: String = text.chars().take(300).collect();
            if st.as_u16() == 429 || st.is_server_error() {
                Sent::Retry(format!("{st}: {text}"))
            } else {
                Sent::Refused(format!("{st}: {text}"))
            }
        }
        Err(e) => Sent::Retry(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(site: &str, ts: i64, l: &str) -> Line {
        Line {
            site: site.into(),
            agent: "a1".into(),
            level: "info".into(),
            kind: "event".into(),
            ts_ns: ts,
            line: l.into(),
        }
    }

    #[test]
    fn push_body_groups_streams_and_leaves_ids_out_of_labels() {
        let b = push_body(&[line("s1", 2, "b"), line("s2", 1, "x"), line("s1", 1, "a")]);
        let streams = b["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(
            streams[0]["stream"],
            serde_json::json!({"site": "s1", "agent": "a1", "level": "info", "kind": "event"})
        );
        assert_eq!(
            streams[0]["values"],
            serde_json::json!([["1", "a"], ["2", "b"]])
        );
        let mut op = line("", 5, "d");
        op.agent.clear();
        let b = push_body(&[op]);
        assert_eq!(
            b["streams"][0]["stream"],
            serde_json::json!({"level": "info", "kind": "event"})
        );
    }

    #[test]
    fn bounded_buffer_gives_up_the_oldest_and_counts_them() {
        let m = Arc::new(Metrics::new());
        let dir = tempfile::tempdir().unwrap();
        let l = Loki::open(3, &dir.path().join(SPOOL), m.clone()).unwrap();
        l.push((0..5).map(|i| line("s", i, "x")));
        assert_eq!(l.backlog(), 3);
        assert_eq!(m.loki_dropped.get(), 2);
        let b = l.take(2);
        assert_eq!(b[0].ts_ns, 2);
        l.push([line("s", 9, "y")]);
        l.put_back(b);
        assert_eq!(l.backlog(), 3);
        assert_eq!(m.loki_dropped.get(), 3);
        // Spooled and read back, in order.
        l.spool(&dir.path().join(SPOOL)).unwrap();
        let again = Loki::open(10, &dir.path().join(SPOOL), m).unwrap();
        let got: Vec<i64> = again.take(10).iter().map(|x| x.ts_ns).collect();
        assert_eq!(got, vec![3, 4, 9]);
        assert!(!dir.path().join(SPOOL).exists());
    }

    #[test]
    fn push_url_of_a_base_or_full_url() {
        assert_eq!(push_url("http://l:3100/"), "http://l:3100/loki/api/v1/push");
        assert_eq!(
            push_url("http://l:3100/loki/api/v1/push"),
            "http://l:3100/loki/api/v1/push"
        );
    }
}
