//! Suricata EVE JSON (one JSON object per line). `event_type: alert` records become `incident`
//! events; other record types (flow, dns, http, stats…) are counted as skipped.
//!
//! Severity per Suricata's documentation (`alert.severity`, from the rule's classtype
//! priority): 1 is the highest → `high`, 2 → `medium`, 3 → `low`, 4 and above → `info`;
//! absent, Suricata's default priority 3 → `low`.
//! The suspect is `src_ip` (or `alert.source.ip` when the rule set a `target`); the other end
//! stays in fields. Only the fields read are built and size-checked (`timestamp`, addresses,
//! ports, `proto`, `flow_id`, `in_iface`, `host`, `alert`); the rest of a record is skipped
//! unbuilt, within the line bound.

use serde::Deserialize;
use serde_json::Value;

use crate::event::{Event, EventKind, Severity};
use crate::input::{check_sizes, json_depth_within, json_line, ErrorKind, ParseError, Parsed, Rec};
use crate::limits::MAX_JSON_DEPTH;
use crate::observable::Observable;

pub(crate) fn line(line_no: usize, text: &str, out: &mut Parsed) {
    let res = match fast(line_no, text) {
        Some(r) => r,
        None => json_line(line_no, text).and_then(|v| record(line_no, &v)),
    };
    match res {
        Ok(Some(e)) => out.push(e),
        Ok(None) => out.skipped += 1,
        Err(e) => out.errors.push(e),
    }
}

/// The fields of an EVE record this parser reads; every other field (the `http`, `flow`,
/// `tls`… objects) is skipped by the deserializer without being built.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    event_type: Option<Value>,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    src_ip: Option<Value>,
    #[serde(default)]
    dest_ip: Option<Value>,
    #[serde(default)]
    src_port: Option<Value>,
    #[serde(default)]
    dest_port: Option<Value>,
    #[serde(default)]
    proto: Option<Value>,
    #[serde(default)]
    flow_id: Option<Value>,
    #[serde(default)]
    in_iface: Option<Value>,
    #[serde(default)]
    host: Option<Value>,
    #[serde(default)]
    alert: Option<AlertWire>,
}

/// The fields of `alert` read (its `metadata`, `rule`… are skipped unbuilt).
#[derive(Deserialize)]
struct AlertWire {
    #[serde(default)]
    signature: Option<Value>,
    #[serde(default)]
    signature_id: Option<Value>,
    #[serde(default)]
    severity: Option<Value>,
    #[serde(default)]
    category: Option<Value>,
    #[serde(default)]
    action: Option<Value>,
    #[serde(default)]
    source: Option<SourceWire>,
}

#[derive(Deserialize)]
struct SourceWire {
    #[serde(default)]
    ip: Option<Value>,
}

fn object<const N: usize>(fields: [(&str, Option<Value>); N]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

/// The hot path: a JSON object read into [`Wire`], non-alerts skipped at once, the fields
/// kept checked for size and read by [`record`] as usual. `None` (anything unusual: not an
/// object, a syntax error, a duplicate key) sends the line to the general path, which gives
/// the precise located error.
fn fast(line_no: usize, text: &str) -> Option<Result<Option<Event>, ParseError>> {
    if !text.trim_start().starts_with('{') || !json_depth_within(text, MAX_JSON_DEPTH) {
        return None;
    }
    let w: Wire = serde_json::from_str(text).ok()?;
    match &w.event_type {
        Some(Value::String(t)) if t == "alert" => {}
        Some(Value::String(_)) => return Some(Ok(None)),
        _ => return None,
    }
    let alert = w.alert.map(|a| {
        object([
            ("signature", a.signature),
            ("signature_id", a.signature_id),
            ("severity", a.severity),
            ("category", a.category),
            ("action", a.action),
            ("source", a.source.map(|s| object([("ip", s.ip)]))),
        ])
    });
    let v = object([
        ("event_type", w.event_type),
        ("timestamp", w.timestamp),
        ("src_ip", w.src_ip),
        ("dest_ip", w.dest_ip),
        ("src_port", w.src_port),
        ("dest_port", w.dest_port),
        ("proto", w.proto),
        ("flow_id", w.flow_id),
        ("in_iface", w.in_iface),
        ("host", w.host),
        ("alert", alert),
    ]);
    if let Err(msg) = check_sizes(&v) {
        return Some(Err(ParseError::new(line_no, ErrorKind::FieldTooLarge, msg)));
    }
    Some(record(line_no, &v))
}

pub(crate) fn severity(n: i64) -> Severity {
    match n {
        i64::MIN..=1 => Severity::High,
        2 => Severity::Medium,
        3 => Severity::Low,
        _ => Severity::Info,
    }
}

fn record(line_no: usize, v: &Value) -> Result<Option<Event>, ParseError> {
    let r = Rec::new(line_no, v);
    if !v.is_object() {
        return Err(r.err(
            ErrorKind::Invalid,
            "expected a JSON object (one EVE record per line)",
        ));
    }
    let et = r.str("event_type")?;
    if et != "alert" {
        return Ok(None);
    }
    let time = r.time("timestamp")?;
    let src = r.opt_ip("src_ip")?;
    let dest = r.opt_ip("dest_ip")?;
    let src_port = r.opt_port("src_port")?;
    let dest_port = r.opt_port("dest_port")?;
    let proto = r.opt_str("proto")?;
    let signature = r.str("alert.signature")?;
    let sid = r.opt_int("alert.signature_id")?;
    let sev = r.opt_int("alert.severity")?.unwrap_or(3);
    let category = r.opt_str("alert.category")?;
    let action = r.opt_str("alert.action")?;
    // Suricata 6+: with the rule keyword `target`, the alert names source and target itself.
    let suspect = match r.opt_ip("alert.source.ip")? {
        Some(ip) => Some(ip),
        None => src,
    };
    let mut e = Event::new(
        EventKind::Incident,
        "suricata",
        time,
        severity(sev),
        format!("suricata: {signature}"),
    );
    e.node = r.opt_str("host")?.map(str::to_string);
    if let Some(ip) = suspect {
        e.observe(Observable::ip(ip));
    }
    if let Some(ip) = src {
        e.field("src_ip", ip.to_string());
    }
    if let Some(ip) = dest {
        e.field("dest_ip", ip.to_string());
    }
    if let Some(p) = src_port {
        e.field("src_port", p.to_string());
    }
    if let Some(p) = dest_port {
        e.field("dest_port", p.to_string());
    }
    if let Some(p) = proto {
        e.field("proto", p);
    }
    e.field("signature", signature);
    if let Some(s) = sid {
        e.field("signature_id", s.to_string());
    }
    e.field("alert_severity", sev.to_string());
    if let Some(c) = category {
        e.field("category", c);
    }
    if let Some(a) = action {
        e.field("action", a);
    }
    if let Some(f) = r.opt_int("flow_id")? {
        e.field("flow_id", f.to_string());
    }
    if let Some(i) = r.opt_str("in_iface")? {
        e.field("in_iface", i);
    }
    Ok(Some(e))
}
