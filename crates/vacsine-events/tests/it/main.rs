//! Integration tests of vacsine-events: one binary, one module per concern.
// The tests of real producers run python3, nmap, twistd (argv only).
#![allow(clippy::disallowed_methods)]

mod common;
mod detect;
mod drift;
mod formats;
mod hostile;
mod matcher;
mod model;
mod mutate;
mod pattern;
mod real_cowrie;
mod real_nmap;
mod real_opencanary;
mod stix2_lib;
