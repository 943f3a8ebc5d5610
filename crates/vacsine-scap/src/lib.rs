//! SCAP content for Vacsine: SCAP 1.3 source data streams (XCCDF 1.2 benchmark, CPE
//! applicability, OVAL 5.11 definitions) parsed with `roxmltree`, and a pure OVAL evaluator
//! that reads a system only through [`system::System`]'s primitives. [`node::NodeSystem`]
//! implements them over a driver's `NodeOps`, so content is evaluated on any node.

pub mod cache;
pub mod ds;
pub mod import;
pub mod node;
pub mod oval;
pub mod results;
pub mod system;
pub mod tailoring;
pub mod units;
pub mod xccdf;
pub mod xml;

pub use ds::{parse, DataStream, ScapError};
pub use xccdf::{evaluate, Options, Outcome, Report};
