//! Step records, events and decisions pushed to Grafana Loki (issue 17), through its push
//! API (`POST /loki/api/v1/push`, JSON).
//!
//! * Labels: `site`, `agent`, `level`, `kind` only (few values each); run, step, event and
//!   decision ids are in the line, never in a label.
//! * Batched (up to [`LokiConfig::batch`] lines a request), retried with exponential backoff
//!   (0.5 s … 30 s) while Loki is unreachable or answers 429/5xx.
//! * A bounded buffer ([`LokiConfig::buffer`] lines) backed by `loki-spool.jsonl` in the
//!   data folder (see [`Loki`]): while Loki is down nothing is lost as long as the backlog
//!   is within the bound, across a stop or a crash of the orchestrator; past the bound new
//!   lines are given up, counted (`vacsine_loki_dropped_total`) and logged.
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
            line: serde_json::json!({"run": run, "key": key, "record": record}).to_string(),
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

/// The buffer between the handlers and the pusher, backed by the spool file: every line
/// queued is appended to it (JSON Lines) before it is pushed, and the number of lines done
/// (accepted or refused by Loki) from its start is kept beside it (`.ack`), so a process that
/// dies, even by SIGKILL, loses none: the next start reads the lines after that count. A
/// batch accepted whose count was not written yet is sent again: the same timestamp and line,
/// which Loki keeps once. Lines leave the queue from its front only, in the file's order;
/// past the bound new lines are refused (counted, logged), so the done count is always a
/// prefix of the file.
pub struct Loki {
    state: Mutex<State>,
    wake: Notify,
    cap: usize,
    metrics: Arc<Metrics>,
    spool: PathBuf,
}

struct State {
    queue: VecDeque<Line>,
    /// Taken by the pusher, not done yet (they are before `queue` in the file).
    inflight: usize,
    /// Lines done from the start of the spool file.
    acked: u64,
    file: Option<std::fs::File>,
}

fn ack_path(spool: &Path) -> PathBuf {
    spool.with_extension("ack")
}

/// Write `bytes` to `path` whole, private and durable (see `vacsine_private`).
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    vacsine_private::write_private(path, bytes)
}

impl Loki {
    /// A buffer of `cap` lines backed by `spool`, holding the lines a previous process left
    /// there not done (the file is rewritten with only those).
    pub fn open(cap: usize, spool: &Path, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Loki>> {
        let cap = cap.max(1);
        let acked: usize = match std::fs::read_to_string(ack_path(spool)) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(_) => 0,
        };
        let mut queue = VecDeque::new();
        let mut over = 0u64;
        match std::fs::read_to_string(spool) {
            Ok(s) => {
                for (i, line) in s.lines().enumerate().skip(acked) {
                    match serde_json::from_str::<Line>(line) {
                        Ok(x) if queue.len() < cap => queue.push_back(x),
                        Ok(_) => over += 1,
                        // A line cut by a crash mid-write: never confirmed to anyone.
                        Err(e) => tracing::warn!(
                            "{}:{}: not a spooled Loki line ({e}): skipped",
                            spool.display(),
                            i + 1
                        ),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", spool.display())),
        }
        if over > 0 {
            metrics.loki_dropped.inc_by(over);
            tracing::warn!("{over} spooled Loki line(s) past --loki-buffer {cap} given up");
        }
        // Compacted: only the lines not done, and a done count of 0.
        let mut text = String::new();
        for l in &queue {
            text.push_str(&serde_json::to_string(l)?);
            text.push('\n');
        }
        write_whole(spool, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", spool.display()))?;
        write_whole(&ack_path(spool), b"0")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", ack_path(spool).display()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(spool)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", spool.display()))?;
        if !queue.is_empty() {
            tracing::info!(
                "{} line(s) for Loki read back from {}",
                queue.len(),
                spool.display()
            );
        }
        metrics.loki_buffered.set(queue.len() as i64);
        Ok(Arc::new(Loki {
            state: Mutex::new(State {
                queue,
                inflight: 0,
                acked: 0,
                file: Some(file),
            }),
            wake: Notify::new(),
            cap,
            metrics,
            spool: spool.to_path_buf(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue lines (appended to the spool first); past the bound they are refused (counted,
    /// logged).
    pub fn push(&self, lines: impl IntoIterator<Item = Line>) {
        let mut refused = 0u64;
        {
            let mut st = self.lock();
            let mut text = String::new();
            let mut added = Vec::new();
            for l in lines {
                if st.queue.len() + st.inflight + added.len() >= self.cap {
                    refused += 1;
                    continue;
                }
                match serde_json::to_string(&l) {
                    Ok(j) => {
                        text.push_str(&j);
                        text.push('\n');
                        added.push(l);
                    }
                    Err(_) => refused += 1,
                }
            }
            if let Some(f) = st.file.as_mut() {
                use std::io::Write;
                // On disk before the handler answers: a crash after it loses no line.
                if let Err(e) = f.write_all(text.as_bytes()).and_then(|()| f.sync_data()) {
                    // Still pushed from memory; only a crash before then would lose them.
                    tracing::error!("appending to {}: {e}", self.spool.display());
                }
            }
            st.queue.extend(added);
            self.metrics
                .loki_buffered
                .set((st.queue.len() + st.inflight) as i64);
        }
        if refused > 0 {
            self.metrics.loki_dropped.inc_by(refused);
            tracing::warn!(
                "Loki backlog full ({} lines): {refused} new line(s) given up",
                self.cap
            );
        }
        self.wake.notify_one();
    }

    /// Lines waiting (queued and in flight).
    pub fn backlog(&self) -> usize {
        let st = self.lock();
        st.queue.len() + st.inflight
    }

    /// Take up to `n` lines from the front.
    fn take(&self, n: usize) -> Vec<Line> {
        let mut st = self.lock();
        let k = n.min(st.queue.len());
        st.inflight += k;
        st.queue.drain(..k).collect()
    }

    /// Put lines not delivered back in front (they are older than what is queued).
    fn put_back(&self, lines: Vec<Line>) {
        let mut st = self.lock();
        st.inflight -= lines.len();
        for l in lines.into_iter().rev() {
            st.queue.push_front(l);
        }
    }

    /// `n` lines from the front done (accepted, or refused for good): counted in the `.ack`
    /// file; when nothing is left, the spool is emptied.
    fn done(&self, n: usize) {
        let mut st = self.lock();
        st.inflight -= n;
        st.acked += n as u64;
        let r = if st.queue.is_empty() && st.inflight == 0 {
            // Emptied first: a crash between the two leaves an empty file and a count past
            // its end (nothing to send), never a count of 0 before old lines.
            st.acked = 0;
            st.file
                .as_ref()
                .map_or(Ok(()), |f| f.set_len(0))
                .and_then(|()| write_whole(&ack_path(&self.spool), b"0"))
        } else {
            write_whole(&ack_path(&self.spool), st.acked.to_string().as_bytes())
        };
        self.metrics
            .loki_buffered
            .set((st.queue.len() + st.inflight) as i64);
        if let Err(e) = r {
            // The lines are sent again after a restart: Loki keeps them once.
            tracing::warn!("writing {}: {e}", ack_path(&self.spool).display());
        }
    }

    /// Push until `stop` turns true, then one last quick try; what is left stays in the
    /// spool for the next start.
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
                    self.done(batch.len());
                    if failing {
                        tracing::info!("Loki reachable again at {url}");
                    }
                    failing = false;
                    backoff = FIRST_BACKOFF;
                }
                Sent::Refused(why) => {
                    // Loki will never take these (malformed, too old): given up, counted.
                    self.metrics.loki_dropped.inc_by(batch.len() as u64);
                    self.done(batch.len());
                    tracing::warn!("Loki refused {} line(s): {why}", batch.len());
                }
                Sent::Retry(why) => {
                    if !failing {
                        tracing::warn!(
                            "Loki at {url}: {why}: kept ({} line(s) waiting), retrying with backoff",
                            self.backlog()
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
        if !failing {
            while self.backlog() > 0 {
                let batch = self.take(cfg.batch.max(1));
                match tokio::time::timeout(Duration::from_secs(2), send(&client, &url, &batch))
                    .await
                {
                    Ok(Sent::Ok) => {
                        self.metrics.loki_pushed.inc_by(batch.len() as u64);
                        self.done(batch.len());
                    }
                    _ => {
                        self.put_back(batch);
                        break;
                    }
                }
            }
        }
        let left = self.backlog();
        if left > 0 {
            eprintln!(
                "{left} line(s) for Loki kept in {} (pushed after the next start)",
                self.spool.display()
            );
        }
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
    fn bounded_buffer_refuses_past_its_bound_and_a_new_process_resumes_after_the_done_lines() {
        let m = Arc::new(Metrics::new());
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join(SPOOL);
        let l = Loki::open(3, &spool, m.clone()).unwrap();
        l.push((0..5).map(|i| line("s", i, "x")));
        assert_eq!(l.backlog(), 3);
        assert_eq!(m.loki_dropped.get(), 2);
        let b = l.take(2);
        assert_eq!(b[0].ts_ns, 0);
        // In flight counts against the bound.
        l.push([line("s", 9, "y")]);
        assert_eq!(m.loki_dropped.get(), 3);
        l.put_back(b);
        let b = l.take(1);
        l.done(b.len());
        // A crash now (the process dropped without anything else): the next one resumes
        // after the line done, in order.
        drop(l);
        let again = Loki::open(10, &spool, m.clone()).unwrap();
        let got: Vec<i64> = again.take(10).iter().map(|x| x.ts_ns).collect();
        assert_eq!(got, vec![1, 2]);
        again.done(2);
        // All done: the spool is emptied.
        assert_eq!(std::fs::read_to_string(&spool).unwrap(), "");
        drop(again);
        let third = Loki::open(10, &spool, m).unwrap();
        assert_eq!(third.backlog(), 0);
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
