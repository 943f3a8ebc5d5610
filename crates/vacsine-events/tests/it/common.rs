use vacsine_events::{Event, Parsed};

pub fn sample(name: &str) -> Vec<u8> {
    let p = format!("{}/tests/it/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The observables of an event as `type:value` text.
pub fn obs(e: &Event) -> Vec<String> {
    e.observables.iter().map(|o| o.to_string()).collect()
}

/// Errors as the user reads them.
pub fn errors(p: &Parsed) -> Vec<String> {
    p.errors.iter().map(|e| e.to_string()).collect()
}

/// An expected event: kind, severity, node, observables, a piece of the summary.
pub struct Want<'a> {
    pub kind: &'a str,
    pub severity: &'a str,
    pub node: Option<&'a str>,
    pub obs: &'a [&'a str],
    pub summary: &'a str,
    pub time: &'a str,
}

/// Checks events in order against `want` and errors against (line, piece of the message).
pub fn check(p: &Parsed, want: &[Want], want_errors: &[(usize, &str)]) {
    let got: Vec<String> = p
        .events
        .iter()
        .map(|e| {
            format!(
                "{} {} {:?} {:?} {}",
                e.kind.as_str(),
                e.severity,
                e.node,
                obs(e),
                e.summary
            )
        })
        .collect();
    assert_eq!(
        p.events.len(),
        want.len(),
        "events: {got:#?}\nerrors: {:#?}",
        errors(p)
    );
    for (e, w) in p.events.iter().zip(want) {
        assert_eq!(e.kind.as_str(), w.kind, "{e:#?}");
        assert_eq!(e.severity.as_str(), w.severity, "{e:#?}");
        assert_eq!(e.node.as_deref(), w.node, "{e:#?}");
        assert_eq!(obs(e), w.obs, "{e:#?}");
        assert!(
            e.summary.contains(w.summary),
            "summary {:?} lacks {:?}",
            e.summary,
            w.summary
        );
        assert_eq!(e.time.to_rfc3339(), w.time, "{e:#?}");
        assert_eq!(e.id, e.content_id(), "id is the content id");
        assert_eq!(e.id.len(), 64);
    }
    let errs = errors(p);
    assert_eq!(p.errors.len(), want_errors.len(), "errors: {errs:#?}");
    for (e, (line, piece)) in p.errors.iter().zip(want_errors) {
        assert_eq!(e.line, *line, "{e}");
        assert!(e.to_string().contains(piece), "{e} lacks {piece:?}");
        assert!(e.to_string().starts_with(&format!("line {line}")), "{e}");
    }
}
