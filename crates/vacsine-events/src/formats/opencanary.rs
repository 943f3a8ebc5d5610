//! OpenCanary JSON log lines: `dst_host`, `dst_port`, `local_time`, `logdata`, `logtype`,
//! `node_id`, `src_host`, `src_port`, `utc_time`. A touch of a decoy is an `indicator` about
//! `src_host`, severity high (nothing legitimate uses a decoy). Log types below 2000 are the
//! daemon's own messages (start-up, errors) and are skipped.

use serde_json::Value;

use crate::event::{Event, EventKind, Severity};
use crate::input::{json_line, ErrorKind, ParseError, Parsed, Rec};
use crate::observable::Observable;

pub(crate) fn line(line_no: usize, text: &str, out: &mut Parsed) {
    match json_line(line_no, text).and_then(|v| record(line_no, &v)) {
        Ok(Some(e)) => out.push(e),
        Ok(None) => out.skipped += 1,
        Err(e) => out.errors.push(e),
    }
}

/// The log type codes of OpenCanary's `logger.py` that name a service touch.
pub fn logtype_name(code: i64) -> Option<&'static str> {
    Some(match code {
        2000 => "FTP login attempt",
        3000 => "HTTP GET",
        3001 => "HTTP login attempt",
        4000 => "SSH new connection",
        4001 => "SSH remote version sent",
        4002 => "SSH login attempt",
        5000 => "SMB file open",
        5001 => "port scan (SYN)",
        5002 => "port scan (OS fingerprint)",
        5003 => "port scan (NULL)",
        5004 => "port scan (XMAS)",
        5005 => "port scan (FIN)",
        6001 => "Telnet login attempt",
        7001 => "HTTP proxy login attempt",
        8001 => "MySQL login attempt",
        9001 => "MSSQL login attempt (SQL auth)",
        9002 => "MSSQL login attempt (Windows auth)",
        10001 => "TFTP request",
        11001 => "NTP monlist request",
        12001 => "VNC login attempt",
        13001 => "SNMP command",
        14001 => "RDP login attempt",
        15001 => "SIP request",
        16001 => "Git clone request",
        17001 => "Redis command",
        18001 => "TCP banner connection",
        18002 => "TCP banner keep-alive connection",
        18003 => "TCP banner secret received",
        18004 => "TCP banner keep-alive secret received",
        18005 => "TCP banner keep-alive data received",
        19001 => "LLMNR query",
        _ => return None,
    })
}

fn record(line_no: usize, v: &Value) -> Result<Option<Event>, ParseError> {
    let r = Rec::new(line_no, v);
    if !v.is_object() {
        return Err(r.err(
            ErrorKind::Invalid,
            "expected a JSON object (one OpenCanary log entry per line)",
        ));
    }
    let code = r.opt_int("logtype")?.ok_or_else(|| {
        r.err(
            ErrorKind::Missing,
            "field `logtype` is missing (expected an OpenCanary log type code)",
        )
    })?;
    if code < 2000 {
        return Ok(None);
    }
    let src = r.opt_ip("src_host")?.ok_or_else(|| {
        r.err(
            ErrorKind::Missing,
            "field `src_host` is missing (expected the visitor's IP address)",
        )
    })?;
    let dst = match r.opt_str("dst_host")? {
        Some("") | None => None,
        Some(_) => r.opt_ip("dst_host")?,
    };
    let src_port = r.opt_port("src_port")?;
    let dst_port = r.opt_port("dst_port")?;
    let time = if r.get("utc_time").is_some() {
        r.time("utc_time")?
    } else {
        r.time("local_time")?
    };
    let what = logtype_name(code).map_or_else(|| format!("log type {code}"), str::to_string);
    let port = dst_port.map_or_else(String::new, |p| format!(" on port {p}"));
    let mut e = Event::new(
        EventKind::Indicator,
        "opencanary",
        time,
        Severity::High,
        format!("opencanary: {what} from {src}{port}"),
    );
    e.observe(Observable::ip(src));
    e.node = r.opt_str("node_id")?.map(str::to_string);
    e.field("logtype", code.to_string());
    e.field("src_host", src.to_string());
    if let Some(p) = src_port {
        e.field("src_port", p.to_string());
    }
    if let Some(d) = dst {
        e.field("dst_host", d.to_string());
    }
    if let Some(p) = dst_port {
        e.field("dst_port", p.to_string());
    }
    match r.get("logdata") {
        Some(Value::Object(o)) => {
            for (k, x) in o {
                let val = match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                e.field(&format!("logdata.{k}"), val);
            }
        }
        Some(Value::String(s)) => {
            e.field("logdata", s.as_str());
        }
        _ => {}
    }
    Ok(Some(e))
}
