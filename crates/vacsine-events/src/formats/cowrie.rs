//! Cowrie JSON log lines (`cowrie.json`): `eventid`, `src_ip`, `src_port`, `dst_ip`,
//! `dst_port`, `session`, `sensor`, `timestamp`, `message`, and per event id `username`,
//! `password`, `input`, `url`, `shasum`. Each is an `indicator` about `src_ip`.
//!
//! Event ids read: `cowrie.session.connect` (medium), `cowrie.login.failed` (medium),
//! `cowrie.login.success` (high), `cowrie.command.input` / `cowrie.command.failed` (high),
//! `cowrie.session.file_download` / `cowrie.session.file_upload` (high, with the URL and the
//! file's SHA-256 as observables). Other event ids (client version, closed sessions…) are
//! skipped.

use serde_json::Value;

use crate::event::{Event, EventKind, Severity};
use crate::input::{json_line, ErrorKind, ParseError, Parsed, Rec};
use crate::observable::{quote, HashAlgo, Observable, Url};

pub(crate) fn line(line_no: usize, text: &str, out: &mut Parsed) {
    match json_line(line_no, text).and_then(|v| record(line_no, &v)) {
        Ok(Some(e)) => out.push(e),
        Ok(None) => out.skipped += 1,
        Err(e) => out.errors.push(e),
    }
}

fn record(line_no: usize, v: &Value) -> Result<Option<Event>, ParseError> {
    let r = Rec::new(line_no, v);
    if !v.is_object() {
        return Err(r.err(
            ErrorKind::Invalid,
            "expected a JSON object (one Cowrie log entry per line)",
        ));
    }
    let id = r.str("eventid")?;
    let (sev, what) = match id {
        "cowrie.session.connect" => (Severity::Medium, "connection"),
        "cowrie.login.failed" => (Severity::Medium, "failed login"),
        "cowrie.login.success" => (Severity::High, "successful login"),
        "cowrie.command.input" => (Severity::High, "command"),
        "cowrie.command.failed" => (Severity::High, "unknown command"),
        "cowrie.session.file_download" => (Severity::High, "file download"),
        "cowrie.session.file_upload" => (Severity::High, "file upload"),
        _ => return Ok(None),
    };
    let src = r.opt_ip("src_ip")?.ok_or_else(|| {
        r.err(
            ErrorKind::Missing,
            "field `src_ip` is missing (expected the visitor's IP address)",
        )
    })?;
    let dst = r.opt_ip("dst_ip")?;
    let time = r.time("timestamp")?;
    let mut e = Event::new(
        EventKind::Indicator,
        "cowrie",
        time,
        sev,
        format!("cowrie: {what} from {src}"),
    );
    e.observe(Observable::ip(src));
    e.node = r.opt_str("sensor")?.map(str::to_string);
    e.field("eventid", id);
    e.field("src_ip", src.to_string());
    if let Some(d) = dst {
        e.field("dst_ip", d.to_string());
    }
    for (k, p) in [
        ("src_port", r.opt_port("src_port")?),
        ("dst_port", r.opt_port("dst_port")?),
    ] {
        if let Some(p) = p {
            e.field(k, p.to_string());
        }
    }
    for k in [
        "session", "protocol", "username", "password", "input", "message", "outfile", "filename",
    ] {
        if let Some(s) = r.opt_str(k)? {
            e.field(k, s);
        }
    }
    if let Some(u) = r.opt_str("url")? {
        let url = Url::parse(u).map_err(|err| {
            r.err(
                ErrorKind::Invalid,
                format!("field `url` is {}: {err}", quote(u)),
            )
        })?;
        e.field("url", u);
        e.observe(Observable::Url(url));
    }
    if let Some(h) = r.opt_str("shasum")? {
        let o = Observable::hash(HashAlgo::Sha256, h)
            .map_err(|err| r.err(ErrorKind::Invalid, format!("field `shasum`: {err}")))?;
        e.observe(o);
    }
    Ok(Some(e))
}
