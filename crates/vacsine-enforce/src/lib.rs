//! Vacsine enforce: checking a policy on a site, and the verified-remediation pipeline
//! (design §5), with the reports it produces.
#![forbid(unsafe_code)]

pub mod check;
pub mod inputs;
pub mod pipeline;
pub mod report;
pub mod subset;
pub mod watch;

pub use pipeline::{enforce, EnforceError, EnforceOptions, HookPoint};
pub use report::{Report, Verdict};

/// The engine's view of a catalog.
pub fn engine_catalog(c: &inputs::Catalog) -> vacsine_engine::Catalog {
    let mut cat = vacsine_engine::Catalog::new();
    for w in c.workflows.values() {
        cat.insert(w.doc.clone());
    }
    cat
}
