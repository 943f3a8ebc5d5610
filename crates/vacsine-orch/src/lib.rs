//! Vacsine's orchestrator: the cloud side of the contract ([`vacsine_contract`]).
//!
//! * [`server`]: HTTPS (rustls, a self-signed certificate made on first start and pinned by
//!   its SHA-256), agent endpoints whose bodies are sealed end to end ([`vacsine_wire`]),
//!   operator endpoints behind a bearer token, the console, a work queue with leases, runs
//!   spanning sites ([`xsite`]), responses, approvals, decisions, TAXII and CrowdSec feeds.
//! * [`store`]: the orchestrator's store behind a trait: SQLite (one process) or PostgreSQL
//!   (replicas sharing the work); store policy decided once in [`store`]'s pure code.
//! * [`gc`], [`posture`], [`metrics`], [`loki`], [`taxii`]: retention of the store, the
//!   posture views, Prometheus metrics, Grafana Loki, STIX/TAXII.
//!
//! The site agent is the `vacsine-agent` crate; both speak only through `vacsine-contract`.
#![forbid(unsafe_code)]

pub mod gc;
pub mod loki;
pub mod metrics;
pub mod posture;
pub mod server;
pub mod store;
pub mod taxii;
pub mod tls;
pub mod xsite;

#[cfg(test)]
mod fit_tests;

pub use vacsine_contract::{now_ms, rfc3339, VERSION};
