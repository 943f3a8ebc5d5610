//! Integration tests of vacsine-events: one binary, one module per concern.
// The stix2 and nmap tests run python3 and nmap (argv only).
#![allow(clippy::disallowed_methods)]

mod common;
mod detect;
mod drift;
mod formats;
mod hostile;
mod matcher;
mod model;
mod pattern;
mod real_nmap;
mod stix2_lib;
