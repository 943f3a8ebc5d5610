//! STIX 2.1: a bundle (`{"type": "bundle", "objects": [...]}`), a TAXII 2.1 envelope
//! (`{"objects": [...]}`), a single indicator object, or one of those per line.
//!
//! Each `indicator` object with `pattern_type: stix` whose pattern can be evaluated (see
//! [`super::stix_pattern`]) becomes an `indicator` event: time `created` (else `valid_from`),
//! severity from `confidence` (≥ 85 high, ≥ 50 medium, below low; absent: medium), validity in
//! fields `valid_from` / `valid_until`. Its observables are the values each of which alone
//! satisfies the pattern; a pattern that needs several comparisons together (`AND`) gives an
//! event with no observables and `pattern_conjunctive: true` (the compiled pattern is in
//! [`Indicator`] for evaluation against events). Other pattern types, patterns that cannot be
//! evaluated and invalid ones are reported at the line of the indicator's id; revoked
//! indicators and other object types are skipped.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::stix_pattern::Pattern;
use crate::event::{Event, EventKind, Severity};
use crate::input::{json_values, type_name, ErrorKind, ParseError, Parsed, Rec};
use crate::observable::quote;

/// A STIX indicator with its compiled pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Indicator {
    pub id: String,
    pub name: Option<String>,
    pub pattern: Pattern,
    pub valid_from: DateTime<Utc>,
    pub valid_until: Option<DateTime<Utc>>,
}

impl Indicator {
    /// Whether `t` is within `[valid_from, valid_until)`.
    pub fn is_valid_at(&self, t: DateTime<Utc>) -> bool {
        t >= self.valid_from && self.valid_until.is_none_or(|u| t < u)
    }
}

/// Events and compiled indicators of a STIX input.
pub fn parse_indicators(bytes: &[u8]) -> (Vec<Indicator>, Parsed) {
    let mut out = Parsed::default();
    let mut inds = Vec::new();
    let mut loc = Locator {
        doc: bytes,
        off: 0,
        line: 1,
    };
    json_values(bytes, &mut out, |line, v, out| {
        top(&mut loc, line, &v, out, &mut inds);
    });
    (inds, out)
}

pub(crate) fn parse(bytes: &[u8], out: &mut Parsed) {
    let (_, p) = parse_indicators(bytes);
    out.merge(p);
}

fn top(loc: &mut Locator, line: usize, v: &Value, out: &mut Parsed, inds: &mut Vec<Indicator>) {
    match v.get("objects") {
        Some(Value::Array(objs)) => {
            for o in objs {
                object(loc, line, o, out, inds);
            }
        }
        Some(other) => out.errors.push(ParseError::new(
            line,
            ErrorKind::Invalid,
            format!(
                "field `objects` is {}, expected an array of STIX objects",
                type_name(other)
            ),
        )),
        None if v.get("type").is_some() => object(loc, line, v, out, inds),
        None => out.errors.push(ParseError::new(
            line,
            ErrorKind::Invalid,
            "expected a STIX bundle (with `objects`) or a STIX object (with `type`)",
        )),
    }
}

/// Finds where each object's id is written, moving forward through the document (objects
/// come in document order), counting lines as it goes: linear in the document.
struct Locator<'d> {
    doc: &'d [u8],
    off: usize,
    line: usize,
}

impl Locator<'_> {
    /// The line of the next `"id"` in the document, else `fallback` (the cursor stays).
    fn line_of(&mut self, id: &str, fallback: usize) -> usize {
        if id.is_empty() {
            return fallback;
        }
        let needle = format!("\"{id}\"");
        let n = needle.as_bytes();
        let rest = &self.doc[self.off..];
        if n.len() > rest.len() {
            return fallback;
        }
        // The occurrence that is the value of an `"id"` key (not a `*_ref` naming it).
        let is_id = |i: usize| {
            let before = rest[..i].trim_ascii_end();
            before
                .strip_suffix(b":")
                .is_some_and(|b| b.trim_ascii_end().ends_with(b"\"id\""))
        };
        let mut from = 0;
        while let Some(j) = rest[from..].windows(n.len()).position(|w| w == n) {
            let i = from + j;
            if is_id(i) {
                self.line += rest[..i].iter().filter(|c| **c == b'\n').count();
                self.off += i;
                return self.line;
            }
            from = i + n.len();
        }
        fallback
    }
}

fn object(
    loc: &mut Locator,
    bundle_line: usize,
    o: &Value,
    out: &mut Parsed,
    inds: &mut Vec<Indicator>,
) {
    let id = o.get("id").and_then(Value::as_str).unwrap_or("");
    let line = loc.line_of(id, bundle_line);
    let r = Rec::new(line, o);
    if !o.is_object() {
        return out.errors.push(r.err(
            ErrorKind::Invalid,
            format!("a STIX object is {}, expected an object", type_name(o)),
        ));
    }
    match r.opt_str("type") {
        Ok(Some("indicator")) => {}
        Ok(_) => {
            out.skipped += 1;
            return;
        }
        Err(e) => return out.errors.push(e),
    }
    match indicator(&r, id) {
        Ok(Some((ind, ev))) => {
            inds.push(ind);
            out.push(ev);
        }
        Ok(None) => out.skipped += 1,
        Err(e) => out.errors.push(e),
    }
}

fn indicator(r: &Rec, id: &str) -> Result<Option<(Indicator, Event)>, ParseError> {
    let who = if id.is_empty() {
        "indicator".to_string()
    } else {
        format!("indicator {}", quote(id))
    };
    if r.get("revoked") == Some(&Value::Bool(true)) {
        return Ok(None);
    }
    let pattern_type = r.str("pattern_type")?;
    if pattern_type != "stix" {
        return Err(r.err(
            ErrorKind::NotEvaluable,
            format!(
                "{who}: pattern_type {} is not evaluated (expected stix)",
                quote(pattern_type)
            ),
        ));
    }
    let text = r.str("pattern")?;
    let pattern = Pattern::parse(text).map_err(|e| {
        r.err(
            if e.not_evaluable {
                ErrorKind::NotEvaluable
            } else {
                ErrorKind::Invalid
            },
            format!("{who}: pattern {}: {e}", quote(text)),
        )
    })?;
    let valid_from = r.time("valid_from")?;
    let valid_until = match r.opt_str("valid_until")? {
        None => None,
        Some(_) => Some(r.time("valid_until")?),
    };
    if let Some(u) = valid_until {
        if u <= valid_from {
            return Err(r.err(
                ErrorKind::Invalid,
                format!("{who}: valid_until ({u}) is not after valid_from ({valid_from})"),
            ));
        }
    }
    let time = match r.opt_str("created")? {
        Some(_) => r.time("created")?,
        None => valid_from,
    };
    let sev = match r.opt_int("confidence")? {
        None => Severity::Medium,
        Some(c) if c >= 85 => Severity::High,
        Some(c) if c >= 50 => Severity::Medium,
        Some(_) => Severity::Low,
    };
    let name = r.opt_str("name")?;
    let mut e = Event::new(
        EventKind::Indicator,
        "stix",
        time,
        sev,
        format!("stix: {}", name.unwrap_or(text)),
    );
    match pattern.sufficient_observables() {
        Some(obs) => obs.into_iter().for_each(|o| e.observe(o)),
        None => {
            e.field("pattern_conjunctive", "true");
        }
    }
    e.field("stix_id", id);
    e.field("pattern", text);
    e.field("valid_from", valid_from.to_rfc3339());
    if let Some(u) = valid_until {
        e.field("valid_until", u.to_rfc3339());
    }
    if let Some(n) = name {
        e.field("name", n);
    }
    if let Some(Value::Array(t)) = r.get("indicator_types") {
        let t: Vec<&str> = t.iter().filter_map(Value::as_str).collect();
        e.field("indicator_types", t.join(","));
    }
    let ind = Indicator {
        id: id.to_string(),
        name: name.map(str::to_string),
        pattern,
        valid_from,
        valid_until,
    };
    Ok(Some((ind, e)))
}
