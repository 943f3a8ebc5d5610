//! CrowdSec alerts and decisions, as `cscli alerts list -o json` prints them (a JSON array of
//! alerts, each with `source`, `scenario`, `created_at`/`start_at` and its `decisions`), as the
//! local API returns them (`GET /v1/decisions`: an array of decisions with `value`, `scope`,
//! `type`, `duration`, `scenario`, `origin`, optionally `until`; the bouncer stream
//! `{"new": [...], "deleted": [...]}`), or one such object per line.
//!
//! Each decision is an `indicator` about its value: scope `Ip` → an address, `Range` → a
//! network. Other scopes (`Country`, `AS`, `Username`…) are reported as not evaluable. Type
//! `ban` → severity high, any other type (`captcha`…) → medium. A decision whose duration is
//! negative (already expired) and the `deleted` part of a stream are skipped. An alert without
//! decisions gives one event about its source.
//!
//! A decision carries no time of its own: the time is its alert's `created_at` (or
//! `start_at`), else `until` minus `duration`, else the time received given in
//! [`crate::Options`]; with none of them the decision is refused.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::event::{Event, EventKind, Severity};
use crate::input::{json_values, parse_time, type_name, ErrorKind, ParseError, Parsed, Rec};
use crate::observable::{quote, Observable};
use crate::Options;

pub(crate) fn parse(bytes: &[u8], opts: &Options, out: &mut Parsed) {
    json_values(bytes, out, |line, v, out| top(line, &v, opts, out));
}

fn top(line: usize, v: &Value, opts: &Options, out: &mut Parsed) {
    let r = Rec::new(line, v);
    match v {
        Value::Array(items) => {
            // JSON Lines whose lines are arrays: each element, at this line.
            for x in items {
                top(line, x, opts, out);
            }
        }
        Value::Object(o) if o.contains_key("new") || o.contains_key("deleted") => {
            match o.get("new") {
                None | Some(Value::Null) => {}
                Some(Value::Array(ds)) => {
                    for d in ds {
                        one(decision(&Rec::new(line, d), None, None, opts), out);
                    }
                }
                Some(other) => out.errors.push(r.err(
                    ErrorKind::Invalid,
                    format!("field `new` is {}, expected an array of decisions", type_name(other)),
                )),
            }
            if let Some(Value::Array(ds)) = o.get("deleted") {
                out.skipped += ds.len();
            }
        }
        Value::Object(o) if o.contains_key("scenario") && o.contains_key("source") => {
            alert(&r, opts, out);
        }
        Value::Object(o) if o.contains_key("value") && o.contains_key("scope") => {
            one(decision(&r, None, None, opts), out);
        }
        _ => out.errors.push(r.err(
            ErrorKind::Invalid,
            "expected a CrowdSec alert (with `scenario` and `source`), a decision (with `value` and `scope`) or a decision stream (with `new`)",
        )),
    }
}

fn one(res: Result<Option<Event>, ParseError>, out: &mut Parsed) {
    match res {
        Ok(Some(e)) => out.push(e),
        Ok(None) => out.skipped += 1,
        Err(e) => out.errors.push(e),
    }
}

fn alert(r: &Rec, opts: &Options, out: &mut Parsed) {
    let time = match r.opt_str("created_at").and_then(|c| match c {
        Some(_) => r.time("created_at").map(Some),
        None => match r.opt_str("start_at")? {
            Some(_) => r.time("start_at").map(Some),
            None => Ok(None),
        },
    }) {
        Ok(t) => t,
        Err(e) => return out.errors.push(e),
    };
    let machine = r.opt_str("machine_id").ok().flatten();
    match r.get("decisions") {
        Some(Value::Array(ds)) if !ds.is_empty() => {
            for d in ds {
                let mut res = decision(&Rec::new(r.line, d), time, Some(r), opts);
                if let Ok(Some(e)) = &mut res {
                    e.node = machine.map(str::to_string);
                }
                one(res, out);
            }
        }
        None | Some(Value::Null) | Some(Value::Array(_)) => {
            let res = (|| {
                let scope = r.str("source.scope")?;
                let value = r.str("source.value")?;
                let obs = observable(r, scope, value, "source")?;
                let scenario = r.str("scenario")?;
                let time = time.or(opts.received).ok_or_else(|| {
                    r.err(
                        ErrorKind::Missing,
                        "alert has no `created_at` or `start_at` (expected an RFC 3339 timestamp)",
                    )
                })?;
                let mut e = Event::new(
                    EventKind::Indicator,
                    "crowdsec",
                    time,
                    Severity::Medium,
                    format!("crowdsec: {scenario} by {value}"),
                );
                e.observe(obs);
                e.node = machine.map(str::to_string);
                e.field("scenario", scenario);
                e.field("scope", scope);
                if let Some(m) = r.opt_str("message")? {
                    e.field("message", m);
                }
                if let Some(n) = r.opt_int("events_count")? {
                    e.field("events_count", n.to_string());
                }
                Ok(Some(e))
            })();
            one(res, out);
        }
        Some(other) => out.errors.push(r.err(
            ErrorKind::Invalid,
            format!(
                "field `decisions` is {}, expected an array",
                type_name(other)
            ),
        )),
    }
}

fn observable(r: &Rec, scope: &str, value: &str, at: &str) -> Result<Observable, ParseError> {
    match scope.to_ascii_lowercase().as_str() {
        "ip" => Observable::parse_ip(value),
        "range" => Observable::parse_ip_or_cidr(value),
        _ => {
            return Err(r.err(
                ErrorKind::NotEvaluable,
                format!(
                    "{at} scope {} is not evaluated (expected Ip or Range)",
                    quote(scope)
                ),
            ))
        }
    }
    .map_err(|e| r.err(ErrorKind::Invalid, format!("{at} value: {e}")))
}

/// A Go duration (`4h`, `3h59m50.1s`, `-12m`, `150ms`) in whole seconds.
pub fn go_duration_secs(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[u..];
        total += num * mult;
    }
    if !total.is_finite() || total > 1e12 {
        return None;
    }
    let secs = total.floor() as i64;
    Some(if neg { -secs } else { secs })
}

fn decision(
    r: &Rec,
    alert_time: Option<DateTime<Utc>>,
    alert: Option<&Rec>,
    opts: &Options,
) -> Result<Option<Event>, ParseError> {
    if !r.v.is_object() {
        return Err(r.err(
            ErrorKind::Invalid,
            format!("a decision is {}, expected an object", type_name(r.v)),
        ));
    }
    let scope = r.str("scope")?;
    let value = r.str("value")?;
    let ty = r.str("type")?;
    let obs = observable(r, scope, value, "decision")?;
    let duration = match r.opt_str("duration")? {
        None => None,
        Some(d) => Some(go_duration_secs(d).ok_or_else(|| {
            r.err(
                ErrorKind::Invalid,
                format!(
                    "field `duration` is {}, expected a duration such as 4h or 3h59m50s",
                    quote(d)
                ),
            )
        })?),
    };
    if duration.is_some_and(|d| d < 0) {
        return Ok(None);
    }
    let until = match r.opt_str("until")? {
        None => None,
        Some(u) => Some(parse_time(u).ok_or_else(|| {
            r.err(
                ErrorKind::Invalid,
                format!(
                    "field `until` is {}, expected an RFC 3339 timestamp",
                    quote(u)
                ),
            )
        })?),
    };
    let time = alert_time
        .or_else(|| until?.checked_sub_signed(TimeDelta::try_seconds(duration?)?))
        .or(opts.received)
        .ok_or_else(|| {
            r.err(
                ErrorKind::Missing,
                "decision has no time (no alert `created_at`, no `until` with `duration`; give the time received)",
            )
        })?;
    let scenario = match r.opt_str("scenario")? {
        Some(s) => Some(s),
        None => alert.and_then(|a| a.opt_str("scenario").ok().flatten()),
    };
    let sev = if ty.eq_ignore_ascii_case("ban") {
        Severity::High
    } else {
        Severity::Medium
    };
    let mut e = Event::new(
        EventKind::Indicator,
        "crowdsec",
        time,
        sev,
        format!(
            "crowdsec: {ty} {value} ({})",
            scenario.unwrap_or("no scenario")
        ),
    );
    e.observe(obs);
    e.field("decision_type", ty);
    e.field("scope", scope);
    if let Some(s) = scenario {
        e.field("scenario", s);
    }
    if let Some(o) = r.opt_str("origin")? {
        e.field("origin", o);
    }
    if let Some(d) = duration {
        e.field("duration_seconds", d.to_string());
    }
    if let Some(d) = r.opt_str("duration")? {
        e.field("duration", d);
    }
    if let Some(u) = until {
        e.field("until", u.to_rfc3339());
    }
    if let Some(id) = r.opt_int("id")? {
        e.field("decision_id", id.to_string());
    }
    if let Some(a) = alert {
        if let Some(id) = a.opt_int("id")? {
            e.field("alert_id", id.to_string());
        }
    }
    Ok(Some(e))
}
