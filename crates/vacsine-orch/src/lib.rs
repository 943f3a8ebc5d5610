//! Vacsine's orchestrator and site agent.
//!
//! * [`server`]: the orchestrator: HTTPS (rustls, a self-signed certificate made on first start
//!   and pinned by its SHA-256), agent endpoints whose bodies are sealed end to end
//!   ([`vacsine_wire`]), operator endpoints behind a bearer token, a work queue with leases.
//! * [`agent`]: the site agent: enrols with an intake key, opens every connection itself,
//!   long-polls for work, runs it with the one engine ([`vacsine_engine`]) on this machine,
//!   and uploads each step record from a local outbox (store and forward).
//! * [`store`]: the orchestrator's store behind a trait: SQLite (one process) or PostgreSQL
//!   (replicas sharing the work).
#![forbid(unsafe_code)]

pub mod agent;
pub mod bundle;
pub mod client;
pub mod decisions;
pub mod enforce;
pub mod files;
pub mod fit;
pub mod gc;
pub mod images;
pub mod loki;
pub mod metrics;
pub mod posture;
pub mod preflight;
pub mod proto;
pub mod retention;
pub mod schedule;
pub mod server;
pub mod store;
pub mod taxii;
pub mod tls;
pub mod xsite;

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
