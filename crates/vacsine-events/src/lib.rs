//! Vacsine's event intake: the event model (design brief §3 "Event"), pure parsers of the
//! formats security tools write, and a matcher.
//!
//! No I/O beyond reading the bytes or the `BufRead` a caller gives; no clock (a time the input
//! lacks comes from [`Options`]). Every parser returns the good events and a located error
//! (`line N[, column C]: what is wrong, what was expected`) per bad record; a bad record never
//! drops the good ones. Bounds: [`limits`].
#![forbid(unsafe_code)]

pub mod event;
pub mod formats;
pub mod input;
pub mod limits;
pub mod matcher;
pub mod observable;

pub use event::{Event, EventKind, Severity};
pub use formats::drift::{drift, read_check_results, CheckResult, Outcome};
pub use formats::stix::{parse_indicators, Indicator};
pub use formats::stix_pattern::{Pattern, PatternError};
pub use formats::{parse, parse_reader, parse_with, Format};
pub use input::{parse_time, ErrorKind, ParseError, Parsed};
pub use matcher::{matches, Condition, Match};
pub use observable::{Cidr, Cve, Domain, HashAlgo, InvalidValue, Observable, ObservableType, Url};

use chrono::{DateTime, Utc};

/// Options of a parse.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// When the input was received: the time of records that carry none (CrowdSec decisions
    /// from the local API without `until`).
    pub received: Option<DateTime<Utc>>,
}
