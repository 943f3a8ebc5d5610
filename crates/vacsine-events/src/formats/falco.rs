//! Falco JSON output (`json_output: true`, one object per line): `time`, `rule`, `priority`,
//! `output`, `hostname`, `source`, `tags`, `output_fields`. Each line is an `incident`.
//!
//! Priority → severity: Emergency, Alert, Critical → critical; Error → high; Warning →
//! medium; Notice → low; Informational, Info, Debug → info.
//! The suspect is the remote end of the connection, `fd.rip` (and `fd.rip.name` when it is a
//! domain name); `fd.sip`, `fd.cip`, `fd.lip` are validated and kept in fields. The node is the
//! container (`container.name`) when the event is in one, else the host (`hostname`).

use serde_json::Value;

use crate::event::{Event, EventKind, Severity};
use crate::input::{json_line, type_name, ErrorKind, ParseError, Parsed, Rec};
use crate::observable::{quote, Domain, Observable};

pub(crate) fn line(line_no: usize, text: &str, out: &mut Parsed) {
    match json_line(line_no, text).and_then(|v| record(line_no, &v)) {
        Ok(e) => out.push(e),
        Err(e) => out.errors.push(e),
    }
}

fn priority(r: &Rec, p: &str) -> Result<Severity, ParseError> {
    Ok(match p.to_ascii_lowercase().as_str() {
        "emergency" | "alert" | "critical" => Severity::Critical,
        "error" => Severity::High,
        "warning" => Severity::Medium,
        "notice" => Severity::Low,
        "informational" | "info" | "debug" => Severity::Info,
        _ => {
            return Err(r.err(
                ErrorKind::Invalid,
                format!(
                    "field `priority` is {}, expected one of Emergency, Alert, Critical, Error, Warning, Notice, Informational, Debug",
                    quote(p)
                ),
            ))
        }
    })
}

fn record(line_no: usize, v: &Value) -> Result<Event, ParseError> {
    let r = Rec::new(line_no, v);
    if !v.is_object() {
        return Err(r.err(
            ErrorKind::Invalid,
            "expected a JSON object (one Falco event per line)",
        ));
    }
    let rule = r.str("rule")?;
    let sev = priority(&r, r.str("priority")?)?;
    let time = r.time("time")?;
    let fields = match r.get("output_fields") {
        None | Some(Value::Null) => &Value::Null,
        Some(o @ Value::Object(_)) => o,
        Some(other) => {
            return Err(r.err(
                ErrorKind::Invalid,
                format!(
                    "field `output_fields` is {}, expected an object",
                    type_name(other)
                ),
            ))
        }
    };
    let of = Rec::new(line_no, fields);
    let at = |k: &str| format!("output_fields.{k}");
    let ip = |k: &str| {
        of.opt_ip(k).map_err(|mut e| {
            e.message = e
                .message
                .replacen(&format!("`{k}`"), &format!("`{}`", at(k)), 1);
            e
        })
    };
    let rip = ip("fd.rip")?;
    let sip = ip("fd.sip")?;
    let cip = ip("fd.cip")?;
    let lip = ip("fd.lip")?;
    let mut e = Event::new(
        EventKind::Incident,
        "falco",
        time,
        sev,
        format!("falco: {rule}"),
    );
    let container = of.opt_str("container.name").ok().flatten();
    let host = r.opt_str("hostname")?;
    e.node = match container {
        Some(c) if c != "host" && !c.is_empty() => Some(c.to_string()),
        _ => host.map(str::to_string),
    };
    if let Some(a) = rip {
        e.observe(Observable::ip(a));
    }
    if let Ok(Some(name)) = of.opt_str("fd.rip.name") {
        if let Ok(d) = Domain::parse(name) {
            e.observe(Observable::Domain(d));
        }
    }
    e.field("rule", rule);
    e.field("priority", r.str("priority")?);
    if let Some(o) = r.opt_str("output")? {
        e.field("output", o);
    }
    if let Some(s) = r.opt_str("source")? {
        e.field("falco_source", s);
    }
    if let Some(h) = host {
        e.field("hostname", h);
    }
    for (k, a) in [
        ("fd.rip", rip),
        ("fd.sip", sip),
        ("fd.cip", cip),
        ("fd.lip", lip),
    ] {
        if let Some(a) = a {
            e.field(k, a.to_string());
        }
    }
    for k in [
        "container.id",
        "container.name",
        "container.image.repository",
        "k8s.ns.name",
        "k8s.pod.name",
        "proc.name",
        "proc.cmdline",
        "proc.pid",
        "user.name",
        "fd.name",
        "fd.rport",
        "fd.sport",
        "fd.lport",
        "evt.type",
    ] {
        match fields.get(k) {
            Some(Value::String(s)) => {
                e.field(k, s.as_str());
            }
            Some(Value::Number(n)) => {
                e.field(k, n.to_string());
            }
            _ => {}
        }
    }
    if let Some(Value::Array(tags)) = r.get("tags") {
        let t: Vec<&str> = tags.iter().filter_map(Value::as_str).collect();
        e.field("tags", t.join(","));
    }
    Ok(e)
}
