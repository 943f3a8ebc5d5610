//! Located errors, the result of a parse, and the bounded readers shared by the parsers:
//! lines of bytes (UTF-8 checked per line), JSON values with their field sizes checked, and
//! the top-level values of a JSON document located by line.

use std::fmt;
use std::io::BufRead;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

use crate::event::Event;
use crate::limits::{MAX_DOCUMENT_BYTES, MAX_FIELD_BYTES, MAX_LINE_BYTES};
use crate::observable::quote;

/// What kind of refusal (for callers and tests; the message says it for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A line past [`MAX_LINE_BYTES`].
    LineTooLong,
    /// A document past [`MAX_DOCUMENT_BYTES`].
    DocumentTooLarge,
    /// A string value past [`MAX_FIELD_BYTES`].
    FieldTooLarge,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// Not JSON / not XML, or nested too deeply.
    Syntax,
    /// A required field is absent.
    Missing,
    /// A field has the wrong type or an invalid value (an IP field that is not an IP…).
    Invalid,
    /// Valid input this crate does not evaluate (a STIX qualifier, a CrowdSec scope…): reported
    /// with the reason, never guessed.
    NotEvaluable,
}

/// A located refusal: `line N[, column C]: what is wrong, what was expected`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// 1-based line in the input.
    pub line: usize,
    /// 1-based column (bytes) when known.
    pub column: Option<usize>,
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(c) => write!(f, "line {}, column {}: {}", self.line, c, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

impl ParseError {
    pub fn new(line: usize, kind: ErrorKind, message: impl Into<String>) -> ParseError {
        ParseError {
            line,
            column: None,
            kind,
            message: message.into(),
        }
    }

    pub fn at(mut self, column: usize) -> ParseError {
        self.column = Some(column);
        self
    }
}

/// The good events of an input and a located error for each bad record. A bad record never
/// drops the good ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub events: Vec<Event>,
    pub errors: Vec<ParseError>,
    /// Well-formed records that are not events (an EVE `flow` record, OpenCanary's start-up
    /// messages, a closed port).
    pub skipped: usize,
}

impl Parsed {
    /// Every event placed at `site` (ids recomputed).
    pub fn at_site(mut self, site: &str) -> Parsed {
        self.events = self.events.into_iter().map(|e| e.at_site(site)).collect();
        self
    }

    pub(crate) fn push(&mut self, e: Event) {
        self.events.push(e.seal());
    }

    pub(crate) fn merge(&mut self, other: Parsed) {
        self.events.extend(other.events);
        self.errors.extend(other.errors);
        self.skipped += other.skipped;
    }
}

/// Splits `bytes` into lines (`\n`, a trailing `\r` dropped), calling `f(line_number, text)`
/// for each non-blank line that is within [`MAX_LINE_BYTES`] and UTF-8; the others become
/// errors in `out`.
pub(crate) fn for_each_line(
    bytes: &[u8],
    out: &mut Parsed,
    mut f: impl FnMut(usize, &str, &mut Parsed),
) {
    let mut line_no = 0;
    for raw in bytes.split(|b| *b == b'\n') {
        line_no += 1;
        one_line(line_no, raw, out, &mut f);
    }
}

fn one_line(
    line_no: usize,
    raw: &[u8],
    out: &mut Parsed,
    f: &mut impl FnMut(usize, &str, &mut Parsed),
) {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.len() > MAX_LINE_BYTES {
        out.errors.push(ParseError::new(
            line_no,
            ErrorKind::LineTooLong,
            format!(
                "line of {} bytes refused (at most {MAX_LINE_BYTES} bytes per line)",
                raw.len()
            ),
        ));
        return;
    }
    match std::str::from_utf8(raw) {
        Ok(s) if s.trim().is_empty() => {}
        Ok(s) => f(line_no, s, out),
        Err(e) => out.errors.push(
            ParseError::new(
                line_no,
                ErrorKind::InvalidUtf8,
                "invalid UTF-8 (expected UTF-8 text)",
            )
            .at(e.valid_up_to() + 1),
        ),
    }
}

/// As [`for_each_line`] over a reader, holding at most one line of [`MAX_LINE_BYTES`] (a
/// longer line is consumed and refused without being kept).
pub(crate) fn for_each_line_read<R: BufRead>(
    mut r: R,
    out: &mut Parsed,
    mut f: impl FnMut(usize, &str, &mut Parsed),
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut line_no = 0;
    let mut over = 0usize; // bytes of the current line past the limit (dropped)
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            if !buf.is_empty() || over > 0 {
                line_no += 1;
                finish(line_no, &buf, over, out, &mut f);
            }
            return Ok(());
        }
        let (take, newline) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        let room = (MAX_LINE_BYTES + 1).saturating_sub(buf.len());
        if take <= room {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            buf.extend_from_slice(&chunk[..room]);
            over += take - room;
        }
        r.consume(take + usize::from(newline));
        if newline {
            line_no += 1;
            finish(line_no, &buf, over, out, &mut f);
            buf.clear();
            over = 0;
        }
    }
}

fn finish(
    line_no: usize,
    buf: &[u8],
    over: usize,
    out: &mut Parsed,
    f: &mut impl FnMut(usize, &str, &mut Parsed),
) {
    if over > 0 {
        out.errors.push(ParseError::new(
            line_no,
            ErrorKind::LineTooLong,
            format!(
                "line of {} bytes refused (at most {MAX_LINE_BYTES} bytes per line)",
                buf.len() + over
            ),
        ));
    } else {
        one_line(line_no, buf, out, f);
    }
}

/// Reads a whole document of at most [`MAX_DOCUMENT_BYTES`].
pub(crate) fn read_document<R: BufRead>(r: R) -> std::io::Result<Result<Vec<u8>, ParseError>> {
    use std::io::Read;
    let mut buf = Vec::new();
    r.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    if buf.len() > MAX_DOCUMENT_BYTES {
        return Ok(Err(ParseError::new(
            1,
            ErrorKind::DocumentTooLarge,
            format!("document larger than {MAX_DOCUMENT_BYTES} bytes refused"),
        )));
    }
    Ok(Ok(buf))
}

/// A document's text, or a located error for its first invalid UTF-8 byte or its size.
pub(crate) fn document_text(bytes: &[u8]) -> Result<&str, ParseError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(ParseError::new(
            1,
            ErrorKind::DocumentTooLarge,
            format!(
                "document of {} bytes refused (at most {MAX_DOCUMENT_BYTES})",
                bytes.len()
            ),
        ));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let (line, col) = line_col(bytes, e.valid_up_to());
        ParseError::new(
            line,
            ErrorKind::InvalidUtf8,
            "invalid UTF-8 (expected UTF-8 text)",
        )
        .at(col)
    })
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = before.len()
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    (line, col)
}

/// One JSON value from one line; syntax errors and oversized fields located.
pub(crate) fn json_line(line_no: usize, text: &str) -> Result<Value, ParseError> {
    let v: Value = serde_json::from_str(text).map_err(|e| json_error(line_no - 1, &e))?;
    check_sizes(&v).map_err(|m| ParseError::new(line_no, ErrorKind::FieldTooLarge, m))?;
    Ok(v)
}

/// A serde_json error placed `line_offset` lines further down.
pub(crate) fn json_error(line_offset: usize, e: &serde_json::Error) -> ParseError {
    let msg = e.to_string();
    // serde_json appends " at line L column C"; we say it our way.
    let what = msg.split(" at line ").next().unwrap_or(&msg);
    let what = if what.contains("recursion limit") {
        format!("JSON nested too deeply ({what}; expected at most 128 levels)")
    } else {
        format!("not valid JSON: {what}")
    };
    let mut err = ParseError::new(line_offset + e.line().max(1), ErrorKind::Syntax, what);
    if e.column() > 0 {
        err = err.at(e.column());
    }
    err
}

/// Whether the nesting of arrays and objects in a JSON text stays within `max` (a linear scan
/// that knows strings and escapes; syntax is not checked here). Used before deserializers that
/// skip values without a depth bound.
pub(crate) fn json_depth_within(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for &c in text.as_bytes() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Every string value and key within [`MAX_FIELD_BYTES`]; else the path of the first one past it.
pub(crate) fn check_sizes(v: &Value) -> Result<(), String> {
    fn walk<'v>(v: &'v Value, path: &mut Vec<std::borrow::Cow<'v, str>>) -> Result<(), String> {
        let over = |path: &[std::borrow::Cow<'v, str>], len: usize| {
            let p = if path.is_empty() {
                "(the value)".to_string()
            } else {
                path.join(".")
            };
            format!(
                "field `{p}` of {len} bytes refused (at most {MAX_FIELD_BYTES} bytes per field)"
            )
        };
        match v {
            Value::String(s) if s.len() > MAX_FIELD_BYTES => Err(over(path, s.len())),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(i.to_string().into());
                    walk(x, path)?;
                    path.pop();
                }
                Ok(())
            }
            Value::Object(o) => {
                for (k, x) in o {
                    if k.len() > MAX_FIELD_BYTES {
                        return Err(over(path, k.len()).replace("field", "field name under"));
                    }
                    path.push(k.as_str().into());
                    walk(x, path)?;
                    path.pop();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(v, &mut Vec::new())
}

/// The top-level JSON values of a document: the elements of a top-level array, or each value
/// of a stream of whitespace-separated values (one object, JSON Lines), with the 1-based line
/// where each starts. A syntax error inside an array ends the walk (what came before is
/// kept); in a stream of values, the walk goes on at the line after the error.
pub(crate) fn json_values(
    bytes: &[u8],
    out: &mut Parsed,
    mut f: impl FnMut(usize, Value, &mut Parsed),
) {
    let text = match document_text(bytes) {
        Ok(t) => t,
        Err(e) => return out.errors.push(e),
    };
    let b = text.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut pos = skip_ws(0);
    let in_array = b.get(pos) == Some(&b'[');
    if in_array {
        pos = skip_ws(pos + 1);
        if b.get(pos) == Some(&b']') {
            return;
        }
    }
    // Lines counted incrementally: `line` is the line of `counted`.
    let (mut counted, mut line) = (0usize, 1usize);
    while pos < b.len() {
        line += b[counted..pos].iter().filter(|c| **c == b'\n').count();
        counted = pos;
        let mut it = serde_json::Deserializer::from_slice(&b[pos..]).into_iter::<Value>();
        match it.next() {
            None => return,
            Some(Err(e)) => {
                let mut err = json_error(line - 1, &e);
                if e.line() == 1 {
                    err.column = err.column.map(|c| c + line_col(b, pos).1 - 1);
                }
                out.errors.push(err);
                if in_array || e.is_eof() {
                    // Inside one document: what follows cannot be told apart.
                    return;
                }
                // A stream of values (JSON Lines): go on after the line of the error.
                let mut skip = e.line().max(1);
                let mut next = pos;
                while skip > 0 {
                    match b[next..].iter().position(|c| *c == b'\n') {
                        Some(i) => next += i + 1,
                        None => return,
                    }
                    skip -= 1;
                }
                pos = skip_ws(next);
                continue;
            }
            Some(Ok(v)) => {
                let end = pos + it.byte_offset();
                match check_sizes(&v) {
                    Ok(()) => f(line, v, out),
                    Err(m) => out
                        .errors
                        .push(ParseError::new(line, ErrorKind::FieldTooLarge, m)),
                }
                pos = skip_ws(end);
                if in_array {
                    match b.get(pos) {
                        Some(b',') => pos = skip_ws(pos + 1),
                        Some(b']') => {
                            pos = skip_ws(pos + 1);
                            if pos < b.len() {
                                let (l, c) = line_col(b, pos);
                                out.errors.push(
                                    ParseError::new(
                                        l,
                                        ErrorKind::Syntax,
                                        "text after the end of the JSON array",
                                    )
                                    .at(c),
                                );
                            }
                            return;
                        }
                        _ => {
                            let (l, c) = line_col(b, pos);
                            out.errors.push(
                                ParseError::new(
                                    l,
                                    ErrorKind::Syntax,
                                    "expected ',' or ']' after an array element",
                                )
                                .at(c),
                            );
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Typed access to the fields of one record, every refusal located at its line.
pub(crate) struct Rec<'a> {
    pub line: usize,
    pub v: &'a Value,
}

impl<'a> Rec<'a> {
    pub fn new(line: usize, v: &'a Value) -> Rec<'a> {
        Rec { line, v }
    }

    pub fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> ParseError {
        ParseError::new(self.line, kind, msg)
    }

    /// The value at a dotted path (keys that contain dots, like Falco's `fd.sip`, are looked up
    /// whole first).
    pub fn get(&self, path: &str) -> Option<&'a Value> {
        if let Some(x) = self.v.get(path) {
            return Some(x);
        }
        let mut cur = self.v;
        for k in path.split('.') {
            cur = cur.get(k)?;
        }
        Some(cur)
    }

    /// A string field, absent or null as `None`; another type is refused.
    pub fn opt_str(&self, path: &str) -> Result<Option<&'a str>, ParseError> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(
                ErrorKind::Invalid,
                format!("field `{path}` is {}, expected a string", type_name(other)),
            )),
        }
    }

    pub fn str(&self, path: &str) -> Result<&'a str, ParseError> {
        self.opt_str(path)?.ok_or_else(|| {
            self.err(
                ErrorKind::Missing,
                format!("field `{path}` is missing (expected a string)"),
            )
        })
    }

    /// An integer field (a JSON number, or a string of digits), absent or null as `None`.
    pub fn opt_int(&self, path: &str) -> Result<Option<i64>, ParseError> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(Value::String(s)) if s.parse::<i64>().is_ok() => Ok(s.parse().ok()),
            Some(other) => Err(self.err(
                ErrorKind::Invalid,
                format!(
                    "field `{path}` is {}, expected an integer",
                    type_name(other)
                ),
            )),
        }
    }

    /// A port: an integer 0–65535.
    pub fn opt_port(&self, path: &str) -> Result<Option<u16>, ParseError> {
        match self.opt_int(path)? {
            None => Ok(None),
            Some(p) => u16::try_from(p).map(Some).map_err(|_| {
                self.err(
                    ErrorKind::Invalid,
                    format!("field `{path}` is {p}, expected a port (0 to 65535)"),
                )
            }),
        }
    }

    /// A timestamp field (see [`parse_time`]).
    pub fn time(&self, path: &str) -> Result<DateTime<Utc>, ParseError> {
        let s = self.str(path)?;
        parse_time(s).ok_or_else(|| {
            self.err(
                ErrorKind::Invalid,
                format!(
                    "field `{path}` is {}, expected an RFC 3339 timestamp",
                    quote(s)
                ),
            )
        })
    }

    /// An IP address field; a value that is not an IP is refused with its location.
    pub fn opt_ip(&self, path: &str) -> Result<Option<std::net::IpAddr>, ParseError> {
        match self.opt_str(path)? {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                self.err(
                    ErrorKind::Invalid,
                    format!("field `{path}` is {}, expected an IP address", quote(s)),
                )
            }),
        }
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Timestamps as producers write them: RFC 3339 (`2024-05-01T10:00:00.123Z`), an offset without
/// a colon (Suricata: `2024-05-01T12:00:00.123456+0200`), or a space instead of `T` and no
/// offset, read as UTC (OpenCanary's `utc_time`).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // `…+0100` (Suricata): the offset given its colon, then RFC 3339 again (the fast path).
    let b = s.as_bytes();
    if b.len() > 5
        && matches!(b[b.len() - 5], b'+' | b'-')
        && b[b.len() - 4..].iter().all(u8::is_ascii_digit)
    {
        let (head, off) = s.split_at(s.len() - 2);
        if let Ok(t) = DateTime::parse_from_rfc3339(&format!("{head}:{off}")) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    None
}
