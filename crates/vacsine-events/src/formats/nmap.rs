//! nmap XML (`nmap -oX`). Each open port of each host becomes one `vulnerability` event
//! (exposure information, severity info): observables the host's address (and its host names
//! when they are valid domain names, and the service's product as a package with its
//! version); fields `port`, `protocol`, `state`, `reason`, `service`, `product`, `version`,
//! `extrainfo`, `tunnel`, `cpe`. Closed and filtered ports, and hosts that are down, are
//! skipped. Time: the host's `starttime`, else the run's `start` (Unix seconds).
//!
//! The document is read with `roxmltree`: no external entities are ever loaded, a document
//! that declares entities is refused, and the node count is bounded.

use chrono::{DateTime, Utc};
use roxmltree::{Document, Node, ParsingOptions};

use crate::event::{Event, EventKind, Severity};
use crate::input::{document_text, ErrorKind, ParseError, Parsed};
use crate::limits::{MAX_FIELD_BYTES, MAX_XML_DEPTH, MAX_XML_NODES};
use crate::observable::{quote, Domain, Observable};

pub(crate) fn parse(bytes: &[u8], out: &mut Parsed) {
    let text = match document_text(bytes) {
        Ok(t) => t,
        Err(e) => return out.errors.push(e),
    };
    if let Some(i) = text.find("<!ENTITY") {
        let line = text[..i].matches('\n').count() + 1;
        return out.errors.push(ParseError::new(
            line,
            ErrorKind::Invalid,
            "entity declarations are refused in nmap XML (nmap writes none)",
        ));
    }
    if let Err(e) = depth_check(text) {
        return out.errors.push(e);
    }
    let opts = ParsingOptions {
        allow_dtd: true,
        nodes_limit: MAX_XML_NODES,
    };
    let doc = match Document::parse_with_options(text, opts) {
        Ok(d) => d,
        Err(e) => {
            let p = e.pos();
            return out.errors.push(
                ParseError::new(
                    p.row as usize,
                    ErrorKind::Syntax,
                    format!("not valid XML: {e}"),
                )
                .at(p.col as usize),
            );
        }
    };
    let root = doc.root_element();
    if root.tag_name().name() != "nmaprun" {
        return out.errors.push(ParseError::new(
            doc.text_pos_at(root.range().start).row as usize,
            ErrorKind::Invalid,
            format!(
                "root element is <{}>, expected <nmaprun> (nmap -oX output)",
                root.tag_name().name()
            ),
        ));
    }
    let run_start = root.attribute("start").and_then(epoch);
    for host in root.children().filter(|n| n.has_tag_name("host")) {
        host_events(&doc, host, run_start, out);
    }
}

/// Refuses elements nested deeper than [`MAX_XML_DEPTH`] before the tree is built (the tree
/// builder recurses per level). A light scan: comments, CDATA, processing instructions and
/// declarations are skipped, quoted attribute values may hold `>`.
fn depth_check(text: &str) -> Result<(), ParseError> {
    let b = text.as_bytes();
    let find = |from: usize, pat: &[u8]| {
        b[from.min(b.len())..]
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|i| from + i + pat.len())
    };
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|c| *c == b'<') {
        let at = i + off;
        let rest = &b[at..];
        i = if rest.starts_with(b"<!--") {
            find(at, b"-->")
        } else if rest.starts_with(b"<![CDATA[") {
            find(at, b"]]>")
        } else if rest.starts_with(b"<?") {
            find(at, b"?>")
        } else if rest.starts_with(b"<!") {
            let close = find(at, b">");
            match b[at..close.unwrap_or(b.len())].contains(&b'[') {
                true => find(at, b"]>").or(close),
                false => close,
            }
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            find(at, b">")
        } else {
            // An element start tag: to its '>' outside quotes.
            let mut j = at + 1;
            let mut quote = None;
            while j < b.len() {
                match (quote, b[j]) {
                    (None, q @ (b'"' | b'\'')) => quote = Some(q),
                    (Some(q), c) if c == q => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            if j < b.len() && b[j - 1] != b'/' {
                depth += 1;
                if depth > MAX_XML_DEPTH {
                    let line = text[..at].matches('\n').count() + 1;
                    return Err(ParseError::new(
                        line,
                        ErrorKind::Syntax,
                        format!("XML nested more than {MAX_XML_DEPTH} levels deep (refused)"),
                    ));
                }
            }
            Some(j + 1)
        }
        .unwrap_or(b.len());
        if i >= b.len() {
            break;
        }
    }
    Ok(())
}

fn epoch(s: &str) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(s.parse().ok()?, 0)
}

fn line_of(doc: &Document, n: Node) -> usize {
    doc.text_pos_at(n.range().start).row as usize
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(name))
}

fn host_events(doc: &Document, host: Node, run_start: Option<DateTime<Utc>>, out: &mut Parsed) {
    if child(host, "status").and_then(|s| s.attribute("state")) == Some("down") {
        out.skipped += 1;
        return;
    }
    let mut addr = None;
    for a in host.children().filter(|c| c.has_tag_name("address")) {
        let ty = a.attribute("addrtype").unwrap_or("");
        if ty != "ipv4" && ty != "ipv6" {
            continue;
        }
        let v = a.attribute("addr").unwrap_or("");
        match Observable::parse_ip(v) {
            Ok(o) => {
                addr = Some(o);
                break;
            }
            Err(e) => {
                out.errors.push(ParseError::new(
                    line_of(doc, a),
                    ErrorKind::Invalid,
                    format!("<address addr=…>: {e}"),
                ));
                return;
            }
        }
    }
    let Some(addr) = addr else {
        out.errors.push(ParseError::new(
            line_of(doc, host),
            ErrorKind::Missing,
            "<host> without an <address addrtype=\"ipv4|ipv6\">",
        ));
        return;
    };
    let time = host.attribute("starttime").and_then(epoch).or(run_start);
    let Some(time) = time else {
        out.errors.push(ParseError::new(
            line_of(doc, host),
            ErrorKind::Missing,
            "<host> without starttime and <nmaprun> without start (expected Unix seconds)",
        ));
        return;
    };
    let names: Vec<Domain> = child(host, "hostnames")
        .into_iter()
        .flat_map(|h| h.children().filter(|c| c.has_tag_name("hostname")))
        .filter_map(|h| h.attribute("name"))
        .filter_map(|n| Domain::parse(n).ok())
        .collect();
    let Some(ports) = child(host, "ports") else {
        return;
    };
    for port in ports.children().filter(|c| c.has_tag_name("port")) {
        match port_event(doc, port, &addr, &names, time) {
            Ok(Some(e)) => out.push(e),
            Ok(None) => out.skipped += 1,
            Err(e) => out.errors.push(e),
        }
    }
}

fn port_event(
    doc: &Document,
    port: Node,
    addr: &Observable,
    names: &[Domain],
    time: DateTime<Utc>,
) -> Result<Option<Event>, ParseError> {
    // Lines are computed for errors only (finding one scans the document from its start).
    let err = |kind, m: String| ParseError::new(line_of(doc, port), kind, m);
    let state = child(port, "state");
    let st = state.and_then(|s| s.attribute("state")).unwrap_or("");
    if st != "open" {
        return Ok(None);
    }
    let proto = port.attribute("protocol").unwrap_or("");
    if !matches!(proto, "tcp" | "udp" | "sctp" | "ip") {
        return Err(err(
            ErrorKind::Invalid,
            format!(
                "<port protocol=…> is {}, expected tcp, udp, sctp or ip",
                quote(proto)
            ),
        ));
    }
    let pid = port.attribute("portid").unwrap_or("");
    let portid: u16 = pid.parse().map_err(|_| {
        err(
            ErrorKind::Invalid,
            format!(
                "<port portid=…> is {}, expected a port (0 to 65535)",
                quote(pid)
            ),
        )
    })?;
    let svc = child(port, "service");
    let attr = |k: &str| -> Result<Option<&str>, ParseError> {
        match svc.and_then(|s| s.attribute(k)) {
            Some(v) if v.len() > MAX_FIELD_BYTES => Err(err(
                ErrorKind::FieldTooLarge,
                format!(
                    "service attribute `{k}` of {} bytes refused (at most {MAX_FIELD_BYTES})",
                    v.len()
                ),
            )),
            other => Ok(other),
        }
    };
    let service = attr("name")?;
    let product = attr("product")?;
    let version = attr("version")?;
    let what = match (service, product) {
        (_, Some(p)) => format!(
            " ({p}{})",
            version.map_or(String::new(), |v| format!(" {v}"))
        ),
        (Some(s), None) => format!(" ({s})"),
        _ => String::new(),
    };
    let mut e = Event::new(
        EventKind::Vulnerability,
        "nmap",
        time,
        Severity::Info,
        format!("nmap: {portid}/{proto} open on {}{what}", addr.value()),
    );
    e.observe(addr.clone());
    for n in names {
        e.observe(Observable::Domain(n.clone()));
    }
    if let Some(p) = product {
        if let Ok(o) = Observable::package(p, version) {
            e.observe(o);
        }
    }
    e.field("port", portid.to_string());
    e.field("protocol", proto);
    e.field("state", st);
    if let Some(r) = state.and_then(|s| s.attribute("reason")) {
        e.field("reason", r);
    }
    for (k, v) in [
        ("service", service),
        ("product", product),
        ("version", version),
        ("extrainfo", attr("extrainfo")?),
        ("tunnel", attr("tunnel")?),
    ] {
        if let Some(v) = v {
            e.field(k, v);
        }
    }
    let cpes: Vec<&str> = svc
        .into_iter()
        .flat_map(|s| s.children().filter(|c| c.has_tag_name("cpe")))
        .filter_map(|c| c.text())
        .collect();
    if !cpes.is_empty() {
        e.field("cpe", cpes.join(" "));
    }
    Ok(Some(e))
}
