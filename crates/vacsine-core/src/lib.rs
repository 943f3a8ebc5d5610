//! Vacsine pure core.
//!
//! Everything in this crate is plain code over data: the user-facing formats (policy, target,
//! workflow), their strict loading with located diagnostics, cross-reference validation, the
//! evaluation of a probe observation into an XCCDF-style outcome, remediation planning, and DAG
//! decisions. **This crate performs no I/O** (architecture invariant): drivers and executors
//! live in other crates, behind the traits of [`node`] and [`driver`].
#![forbid(unsafe_code)]

pub mod dag;
pub mod doc;
pub mod driver;
pub mod eval;
pub mod node;
pub mod outcome;
pub mod parse;
pub mod plan;
pub mod policy;
pub mod procnet;
pub mod record;
pub mod status;
pub mod target;
pub mod validate;
pub mod version;
pub mod workflow;

pub use doc::{Document, LoadError, SourceFile};
pub use outcome::Outcome;

/// The only `apiVersion` this release reads.
pub const API_VERSION: &str = "vacsine.io/v1";
