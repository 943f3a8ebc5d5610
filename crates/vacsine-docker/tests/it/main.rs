//! Integration tests of the docker driver against the real local Docker Engine.
//!
//! Skipped (with a message) when the engine is unreachable, unless `VACSINE_REQUIRE_DOCKER=1`.
//! Every test uses its own uniquely named containers/networks and removes them, except the
//! shared demo site (started once per test run, read-only for tests).
// Tests and benches set up and inspect their peers (docker, nft, the binary) directly.
#![allow(clippy::disallowed_methods)]

mod common;
mod ops;
mod probes;
mod sandbox;
mod ssh;
