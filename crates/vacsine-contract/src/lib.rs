//! The contract between Vacsine's orchestrator, its agents and the CLI: what crosses the wire
//! and how it is signed.
//!
//! * [`proto`]: every request and answer, typed (a job is an enum of its kinds, agent
//!   operations an enum decoded once, one protocol version in a header).
//! * [`bundle`]: jobs and registry bundles signed with the bundle key, verified by an agent
//!   before it looks at what a job is ([`bundle::verified_work`]).
//! * [`decisions`]: decisions, deletions and labels signed when made, the set a site receives.
//! * [`schedule`], [`enforce`], [`images`], [`step`]: the documents and payloads of schedules,
//!   enforce jobs, action images and steps of runs spanning sites, decoded and checked once.
//! * [`client`], [`tls`]: the operator's and the agent's clients, pinned to the
//!   orchestrator's certificate.
//! * [`fit`]: records cut to fit an upload or a store, never dropped.
//!
//! Invariant: no `serde_json::Value` where a type exists; both sides decode with these types.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod client;
pub mod decisions;
pub mod enforce;
pub mod fit;
pub mod images;
pub mod proto;
pub mod schedule;
pub mod step;
pub mod tls;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 (ms, UTC) of a time in ms since the epoch.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// This build's version, as agents report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
