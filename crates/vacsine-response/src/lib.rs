//! Vacsine's response core (issue 16): `kind: Response` documents strictly parsed with
//! located errors ([`response`]), the pure decision of what an event calls for ([`decide`]),
//! decisions as data with deterministic ids ([`decision`]), reconcile by diff onto the
//! `nftset` sets ([`reconcile`]), and the agent-side store ([`store`], the only module doing
//! I/O: one SQLite file).
//!
//! Everything but [`store`] is plain functions over data: no clock (the caller passes `now`),
//! no network, no processes. Nothing from an event or a response is ever evaluated as code or
//! a template; addresses reach nft text only through parsed types.
#![forbid(unsafe_code)]

pub mod decide;
pub mod decision;
pub mod reconcile;
pub mod response;
pub mod store;

pub use decide::{
    decide, AllowList, Context, Decider, EventOrigin, Outcome, Target, Verdict, Windows,
    WorkflowRun,
};
pub use decision::{decision_id, Action, Decision, DecisionOrigin, IpNet};
pub use reconcile::{reconcile, render_nft, AppliedElement, BanSet, Diff, Element};
pub use response::{load, parse_span, schema, Response, Rule};
pub use store::{DecisionState, Store, StoreError};
