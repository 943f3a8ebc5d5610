//! One integration-test binary for vacsine-response (modules per feature).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;
mod decide;
mod doc;
mod reconcile;
mod store;
