//! The formats read, one module each, and [`Format`]: detection and dispatch.

pub mod cowrie;
pub mod crowdsec;
pub mod drift;
pub mod eve;
pub mod falco;
pub mod nmap;
pub mod opencanary;
pub mod stix;
pub mod stix_pattern;

use std::fmt;
use std::io::BufRead;
use std::str::FromStr;

use crate::input::{for_each_line, for_each_line_read, read_document, Parsed};
use crate::Options;

/// A supported input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Suricata EVE JSON lines.
    Eve,
    /// Falco JSON output lines.
    Falco,
    /// STIX 2.1 bundle (or TAXII envelope, or objects per line).
    Stix,
    /// CrowdSec alerts (`cscli alerts list -o json`) or decisions (local API).
    CrowdSec,
    /// OpenCanary JSON log lines.
    OpenCanary,
    /// Cowrie JSON log lines.
    Cowrie,
    /// nmap XML (`-oX`).
    Nmap,
}

impl Format {
    pub const ALL: [Format; 7] = [
        Format::Eve,
        Format::Falco,
        Format::Stix,
        Format::CrowdSec,
        Format::OpenCanary,
        Format::Cowrie,
        Format::Nmap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Eve => "eve",
            Format::Falco => "falco",
            Format::Stix => "stix",
            Format::CrowdSec => "crowdsec",
            Format::OpenCanary => "opencanary",
            Format::Cowrie => "cowrie",
            Format::Nmap => "nmap",
        }
    }

    /// Whether records are one per line (a bad line is skipped and the next one read) rather
    /// than one document.
    pub fn is_line_oriented(self) -> bool {
        matches!(
            self,
            Format::Eve | Format::Falco | Format::OpenCanary | Format::Cowrie
        )
    }

    /// Guesses the format from the first bytes of an input (a few KiB are enough), from the
    /// fields each producer always writes; `None` when nothing fits.
    pub fn detect(first: &[u8]) -> Option<Format> {
        let head = &first[..first.len().min(8192)];
        let text = String::from_utf8_lossy(head);
        let t = text.trim_start_matches('\u{feff}').trim_start();
        if t.starts_with('<') {
            return t.contains("<nmaprun").then_some(Format::Nmap);
        }
        if !(t.starts_with('{') || t.starts_with('[')) {
            return None;
        }
        // The first record is what decides (a later one may be of another producer).
        let first_rec = t.lines().next().unwrap_or(t);
        let has =
            |k: &str| first_rec.contains(&format!("\"{k}\"")) || t.contains(&format!("\"{k}\""));
        if has("event_type") {
            Some(Format::Eve)
        } else if has("eventid") && t.contains("\"cowrie.") {
            Some(Format::Cowrie)
        } else if has("logtype") && (has("src_host") || has("node_id")) {
            Some(Format::OpenCanary)
        } else if has("output_fields") || (has("rule") && has("priority") && has("output")) {
            Some(Format::Falco)
        } else if has("spec_version")
            || has("pattern_type")
            || t.contains("\"bundle--")
            || t.contains("\"indicator--")
        {
            Some(Format::Stix)
        } else if has("scenario") || (has("scope") && has("value")) || has("new") || has("deleted")
        {
            Some(Format::CrowdSec)
        } else {
            None
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        let l = s.to_ascii_lowercase();
        Format::ALL
            .into_iter()
            .find(|f| f.name() == l || (l == "suricata" && *f == Format::Eve))
            .ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown event format {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// Parses a whole input held in memory.
pub fn parse(format: Format, bytes: &[u8]) -> Parsed {
    parse_with(format, bytes, &Options::default())
}

/// As [`parse`], with options.
pub fn parse_with(format: Format, bytes: &[u8], opts: &Options) -> Parsed {
    let mut out = Parsed::default();
    match format {
        Format::Eve => for_each_line(bytes, &mut out, eve::line),
        Format::Falco => for_each_line(bytes, &mut out, falco::line),
        Format::OpenCanary => for_each_line(bytes, &mut out, opencanary::line),
        Format::Cowrie => for_each_line(bytes, &mut out, cowrie::line),
        Format::Stix => stix::parse(bytes, &mut out),
        Format::CrowdSec => crowdsec::parse(bytes, opts, &mut out),
        Format::Nmap => nmap::parse(bytes, &mut out),
    }
    out
}

/// Parses from a reader: line formats one bounded line at a time, document formats up to
/// [`crate::limits::MAX_DOCUMENT_BYTES`]. Only the reader's own failures are `Err`.
pub fn parse_reader<R: BufRead>(format: Format, r: R, opts: &Options) -> std::io::Result<Parsed> {
    let mut out = Parsed::default();
    match format {
        Format::Eve => for_each_line_read(r, &mut out, eve::line)?,
        Format::Falco => for_each_line_read(r, &mut out, falco::line)?,
        Format::OpenCanary => for_each_line_read(r, &mut out, opencanary::line)?,
        Format::Cowrie => for_each_line_read(r, &mut out, cowrie::line)?,
        Format::Stix | Format::CrowdSec | Format::Nmap => match read_document(r)? {
            Ok(doc) => return Ok(parse_with(format, &doc, opts)),
            Err(e) => out.errors.push(e),
        },
    }
    Ok(out)
}
