//! Integration tests of the engine, run on the local host (LocalNode), data-driven where the
//! feature allows: each case is a small workflow written as YAML.
// Tests and benches set up and inspect their peers (docker, nft, the binary) directly.
#![allow(clippy::disallowed_methods)]

mod ansible;
mod ansible_docker;
mod container;
mod dag;
mod executors;
mod firewall;
mod injection;
mod lease;
mod local_node;
mod nftset;
mod reference;
mod resume;
mod retention;
mod rollback;
mod secrets;
mod subworkflow;
mod support;
mod validate;
