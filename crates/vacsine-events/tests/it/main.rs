//! Integration tests of vacsine-events: one binary, one module per concern.
// The stix2 test runs python3 (argv only).
#![allow(clippy::disallowed_methods)]

mod common;
mod detect;
mod drift;
mod formats;
mod hostile;
mod matcher;
mod model;
mod pattern;
mod stix2_lib;
