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

/// When and how long a step ran where it ran (a site's agent), as that place measured it:
/// the record of a step dispatched elsewhere carries these times, not the dispatcher's wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ran {
    /// RFC 3339 with microseconds.
    pub started_at: String,
    pub duration_ms: u64,
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
    /// When `run_id` is the run an operator was given and the record was made by another
    /// engine run (an agent's own runs of a job at its site: an enforce job runs the engine
    /// on the sandbox, the target and a rollback), that engine run's id, so both are named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_run_id: Option<String>,
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
            engine_run_id: None,
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

/// What a masked secret becomes.
pub const MASK: &str = "***";

/// Derived forms (encodings, single lines) are masked only for a secret or line of at least this
/// many characters: shorter ones would hide ordinary text. The secret itself is always masked.
pub const MIN_DERIVED_CHARS: usize = 4;

/// A base64 fragment of a secret found inside a longer base64 text (HTTP Basic credentials,
/// a base64-encoded config file) is masked only from this many characters.
const MIN_FRAGMENT_CHARS: usize = 8;

/// RFC 3986 unreserved characters stay as they are; everything else is percent-encoded.
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Masks a run's secrets in any text, built once from the secret list.
///
/// Besides each secret itself it masks the forms a secret commonly takes in output: standard
/// and URL-safe base64 (padded or not, and the part of it that survives inside a longer base64
/// text at any byte offset), lowercase and uppercase hex, percent-encoding (`%20` and `+` for a
/// space), JSON string escaping (also `\uXXXX` as Python's `json.dumps` writes non-ASCII), and
/// every line of a multi-line secret. All patterns are matched in one pass (Aho-Corasick); every
/// byte covered by any occurrence of any pattern is masked, so a secret that contains,
/// overlaps or extends another never leaves a visible tail.
#[derive(Clone, Default)]
pub struct Masker {
    matcher: Option<aho_corasick::AhoCorasick>,
    /// Used only if the automaton cannot be built (far beyond any real secret list): the same
    /// patterns, longest first, replaced one after the other.
    fallback: Vec<String>,
}

impl std::fmt::Debug for Masker {
    // Never print the patterns: they are the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = match &self.matcher {
            Some(m) => m.patterns_len(),
            None => self.fallback.len(),
        };
        f.debug_struct("Masker").field("patterns", &n).finish()
    }
}

impl Masker {
    /// Build the matcher for these secrets (empty strings are ignored).
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Self {
        let mut patterns = Vec::new();
        for s in secrets {
            secret_forms(s.as_ref(), &mut patterns);
        }
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.is_empty() {
            return Masker::default();
        }
        match aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::Standard)
            // A DFA searches a little faster but takes milliseconds to build; texts are short.
            .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
            .build(&patterns)
        {
            Ok(m) => Masker {
                matcher: Some(m),
                fallback: Vec::new(),
            },
            Err(_) => {
                patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
                Masker {
                    matcher: None,
                    fallback: patterns,
                }
            }
        }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none() && self.fallback.is_empty()
    }

    /// `text` with every occurrence of a secret (or a derived form) replaced by [`MASK`];
    /// overlapping or touching-inside occurrences become a single mask.
    pub fn mask<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        use std::borrow::Cow;
        let Some(m) = &self.matcher else {
            if self.fallback.is_empty() {
                return Cow::Borrowed(text);
            }
            let mut out = text.to_string();
            for p in &self.fallback {
                if out.contains(p.as_str()) {
                    out = out.replace(p.as_str(), MASK);
                }
            }
            return Cow::Owned(out);
        };
        // Every occurrence, overlapping ones included, merged into disjoint spans.
        let mut spans: Vec<(usize, usize)> = m
            .find_overlapping_iter(text)
            .map(|x| (x.start(), x.end()))
            .collect();
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut cur = spans[0];
        for &(s, e) in &spans[1..] {
            if s < cur.1 {
                cur.1 = cur.1.max(e);
            } else {
                out.push_str(&text[at..cur.0]);
                out.push_str(MASK);
                at = cur.1;
                cur = (s, e);
            }
        }
        out.push_str(&text[at..cur.0]);
        out.push_str(MASK);
        out.push_str(&text[cur.1..]);
        Cow::Owned(out)
    }

    /// Every string in a JSON value masked (object keys are kept).
    pub fn mask_json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) => Value::String(self.mask(s).into_owned()),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.mask_json(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), self.mask_json(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// The secret and the forms it takes in output.
fn secret_forms(secret: &str, out: &mut Vec<String>) {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    if secret.is_empty() {
        return;
    }
    out.push(secret.to_string());
    if secret.chars().count() >= MIN_DERIVED_CHARS {
        let b = secret.as_bytes();
        for e in [&STANDARD, &URL_SAFE] {
            out.push(e.encode(b));
        }
        for e in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            out.push(e.encode(b));
            base64_fragments(b, e, out);
        }
        out.push(hex::encode(b));
        out.push(hex::encode_upper(b));
        let url = percent_encoding::utf8_percent_encode(secret, URL_COMPONENT).to_string();
        if secret.contains(' ') {
            out.push(url.replace("%20", "+"));
        }
        out.push(url);
        let json = serde_json::Value::String(secret.to_string()).to_string();
        out.push(json[1..json.len() - 1].to_string());
        if !secret.is_ascii() {
            out.push(json_ascii_escaped(&json[1..json.len() - 1]));
        }
    }
    if secret.contains('\n') {
        for line in secret.lines() {
            let line = line.trim();
            if line.chars().count() >= MIN_DERIVED_CHARS {
                out.push(line.to_string());
            }
        }
    }
}

/// The part of `base64(prefix ++ secret ++ suffix)` that depends on the secret alone, for each
/// of the three alignments the secret can have in the encoded stream.
fn base64_fragments(secret: &[u8], engine: &impl base64::Engine, out: &mut Vec<String>) {
    for shift in 0..3usize {
        let mut buf = vec![0u8; shift];
        buf.extend_from_slice(secret);
        let enc = engine.encode(&buf);
        // Leading characters that mix in prefix bits; a trailing one that mixes in suffix bits.
        let skip = [0, 2, 3][shift];
        let end = enc.len() - usize::from(buf.len() % 3 != 0);
        if end >= skip + MIN_FRAGMENT_CHARS {
            out.push(enc[skip..end].to_string());
        }
    }
}

/// A JSON string body with non-ASCII characters written as `\uXXXX` (UTF-16, lowercase hex),
/// as Python's `json.dumps` does by default.
fn json_ascii_escaped(body: &str) -> String {
    let mut s = String::with_capacity(body.len() * 2);
    for c in body.chars() {
        if c.is_ascii() {
            s.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                s.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    s
}

/// Replace every occurrence of each secret (and its derived forms, see [`Masker`]) by `***`.
/// Builds a [`Masker`] on each call: to mask many strings, build one and reuse it.
pub fn mask(text: &str, secrets: &[String]) -> String {
    Masker::new(secrets).mask(text).into_owned()
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
