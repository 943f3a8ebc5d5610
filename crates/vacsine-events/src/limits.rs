//! Bounds on what the parsers accept. Input past a bound is refused with a located error; it
//! is never truncated silently nor allowed to grow memory or the stack without limit.

/// Longest line of a line-oriented format (JSON Lines): 1 MiB.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Longest string value (or object key) in a record: 64 KiB.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Largest whole document (a STIX bundle, an nmap XML report, a CrowdSec JSON array): 64 MiB.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;
/// Deepest JSON nesting (serde_json's own recursion limit, 128, applies first).
pub const MAX_JSON_DEPTH: usize = 128;
/// Raw fields kept per event.
pub const MAX_FIELDS: usize = 32;
/// Longest raw field name kept.
pub const MAX_FIELD_NAME: usize = 128;
/// Most comparisons in one STIX pattern.
pub const MAX_PATTERN_COMPARISONS: usize = 1000;
/// Deepest nesting of brackets and parentheses in one STIX pattern.
pub const MAX_PATTERN_DEPTH: usize = 32;
/// Most XML nodes in an nmap report.
pub const MAX_XML_NODES: u32 = 4_000_000;
/// Deepest nesting of XML elements (nmap writes 5 or 6 levels).
pub const MAX_XML_DEPTH: usize = 256;
