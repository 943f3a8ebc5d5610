//! Data-driven tests of the pure core: loading, validation, evaluation, planning.

mod eval;
mod load;
mod mask;
mod nft;
mod plan;
mod procnet;
mod workflow;
