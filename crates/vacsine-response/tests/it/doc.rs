//! `kind: Response` documents: the example parses; hostile or wrong ones give located errors.

use chrono::TimeDelta;
use vacsine_core::SourceFile;
use vacsine_events::{EventKind, ObservableType, Severity};
use vacsine_response::response::{KeyBy, Mode, RuleAction};
use vacsine_response::{load, schema};

use crate::common::{doc, BAN_SPEC};

#[test]
fn example_ban_decoy_touch_parses() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/responses/ban-decoy-touch.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let r = load(&SourceFile::new(path, text)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.name, "ban-decoy-touch");
    assert_eq!(r.mode, Mode::Autonomous);
    assert_eq!(r.on.kinds, vec![EventKind::Indicator]);
    assert_eq!(r.on.min_severity, Some(Severity::Medium));
    assert_eq!(r.on.sources, vec!["opencanary", "cowrie"]);
    assert_eq!(
        r.action,
        RuleAction::Ban {
            types: vec![ObservableType::Ipv4, ObservableType::Ipv6],
            duration: TimeDelta::hours(4)
        }
    );
    assert_eq!(r.dedupe, Some((KeyBy::Address, TimeDelta::minutes(10))));
    assert_eq!(
        r.throttle,
        Some((KeyBy::Response, TimeDelta::minutes(1), 200))
    );
    assert_eq!(r.approval, None);
    assert_eq!(r.labels.get("decoys").map(String::as_str), Some("yes"));
}

#[test]
fn schema_names_the_fields() {
    let s = serde_json::to_string(&schema()).unwrap();
    for f in [
        "apiVersion",
        "decide",
        "ban",
        "quarantine",
        "workflow",
        "dedupe",
        "throttle",
        "approvalExpires",
        "minSeverity",
        "oneOf",
    ] {
        assert!(s.contains(f), "schema lacks {f}");
    }
}

/// `(name, document, expected line, a fragment of the message)`.
fn check_err(name: &str, text: &str, line: u64, frag: &str) {
    let e = match load(&SourceFile::new("r.yaml", text.to_string())) {
        Ok(r) => panic!("{name}: accepted: {r:?}"),
        Err(e) => e,
    };
    assert!(
        e.message.contains(frag),
        "{name}: message {:?} lacks {frag:?}",
        e.message
    );
    assert_eq!(e.line, line, "{name}: wrong line in {e}");
    assert!(e.to_string().starts_with("r.yaml:"), "{name}: {e}");
}

#[test]
fn bad_documents_are_located() {
    let cases: &[(&str, String, u64, &str)] = &[
        (
            "unknown field in spec",
            doc("a", &format!("{BAN_SPEC}  modee: autonomous\n")),
            12,
            "unknown field",
        ),
        (
            "unknown field in on",
            doc("a", "  on:\n    events: [indicator]\n    severity: high\n  decide:\n    ban:\n      for: 4h\n  mode: autonomous\n"),
            8,
            "unknown field",
        ),
        (
            "bad duration unit",
            doc("a", "  on:\n    events: [indicator]\n  decide:\n    ban:\n      for: 4 hours\n  mode: autonomous\n"),
            10,
            "invalid duration",
        ),
        (
            "zero duration",
            doc("a", "  on:\n    events: [indicator]\n  decide:\n    ban:\n      for: 0s\n  mode: autonomous\n"),
            10,
            "out of range",
        ),
        (
            "too long duration",
            doc("a", "  on:\n    events: [indicator]\n  decide:\n    ban:\n      for: 366d\n  mode: autonomous\n"),
            10,
            "out of range",
        ),
        (
            "huge number",
            doc("a", "  on:\n    events: [indicator]\n  decide:\n    ban:\n      for: 99999999999999999999h\n  mode: autonomous\n"),
            10,
            "invalid duration",
        ),
        (
            "bad window",
            doc("a", &format!("{BAN_SPEC}  dedupe:\n    key: address\n    window: soon\n")),
            14,
            "invalid duration",
        ),
        (
            "bad dedupe key",
            doc("a", &format!("{BAN_SPEC}  dedupe:\n    key: ip\n    window: 10m\n")),
            13,
            "unknown variant",
        ),
        (
            "throttle max 0",
            doc("a", &format!("{BAN_SPEC}  throttle:\n    key: address\n    window: 10m\n    max: 0\n")),
            15,
            "at least 1",
        ),
        (
            "autonomous with approval",
            doc("a", &format!("{BAN_SPEC}  approval: required\n")),
            12,
            "cannot be used with `mode: autonomous`",
        ),
        (
            "approvalExpires without approval",
            doc("a", &format!("{BAN_SPEC}  approvalExpires: 1h\n")),
            12,
            "only meaningful",
        ),
        (
            "ban of a domain",
            doc("a", "  on:\n    events: [indicator]\n  decide:\n    ban:\n      observables: [domain]\n      for: 1h\n  mode: autonomous\n"),
            10,
            "not `domain`",
        ),
        (
            "two decisions",
            doc("a", "  on:\n    events: [indicator]\n  decide:\n    ban:\n      for: 1h\n    quarantine: {}\n  mode: autonomous\n"),
            11,
            "expected end of mapping",
        ),
        (
            "field matcher with two ops",
            doc("a", "  on:\n    events: [indicator]\n    fields:\n      - field: service\n        equals: ssh\n        prefix: s\n  decide:\n    ban:\n      for: 1h\n  mode: autonomous\n"),
            9,
            "exactly one of",
        ),
        (
            "empty events",
            doc("a", "  on:\n    events: []\n  decide:\n    ban:\n      for: 1h\n  mode: autonomous\n"),
            7,
            "is empty",
        ),
        (
            "bad name",
            doc("Bad Name", BAN_SPEC),
            4,
            "invalid response name",
        ),
        (
            "wrong kind",
            "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: a\nspec: {}\n".into(),
            2,
            "expected a Response document",
        ),
        (
            "wrong apiVersion",
            "apiVersion: vacsine.io/v2\nkind: Response\n".into(),
            1,
            "unsupported apiVersion",
        ),
        (
            "missing mode",
            doc("a", "  on:\n    events: [indicator]\n  decide:\n    ban:\n      for: 1h\n"),
            8,
            "missing field `mode`",
        ),
    ];
    for (name, text, line, frag) in cases {
        check_err(name, text, *line, frag);
    }
}

#[test]
fn a_10_mb_field_is_refused_quickly() {
    let big = "x".repeat(10 * 1024 * 1024);
    let text = doc("a", &format!("  on:\n    events: [indicator]\n    sources: [\"{big}\"]\n  decide:\n    ban:\n      for: 1h\n  mode: autonomous\n"));
    let t = std::time::Instant::now();
    let e = load(&SourceFile::new("big.yaml", text)).unwrap_err();
    assert!(e.message.contains("bytes, more than"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    // Under the document bound, a long source is still refused at its place.
    let long = "y".repeat(100_000);
    let text = doc("a", &format!("  on:\n    events: [indicator]\n    sources: [\"{long}\"]\n  decide:\n    ban:\n      for: 1h\n  mode: autonomous\n"));
    check_err("long source", &text, 8, "1 to 1024 bytes");
}

#[test]
fn approval_defaults() {
    let q = |mode: &str, extra: &str| {
        crate::common::rule(&doc(
            "q",
            &format!("  on:\n    events: [incident]\n  decide:\n    quarantine: {{}}\n  mode: {mode}\n{extra}"),
        ))
    };
    // Orchestrated quarantine waits for approval by default, one hour.
    assert_eq!(q("orchestrated", "").approval, Some(TimeDelta::hours(1)));
    assert_eq!(
        q(
            "orchestrated",
            "  approval: required\n  approvalExpires: 30m\n"
        )
        .approval,
        Some(TimeDelta::minutes(30))
    );
    assert_eq!(q("orchestrated", "  approval: none\n").approval, None);
    // Autonomous acts at once.
    assert_eq!(q("autonomous", "").approval, None);
}

/// The committed schema (for editors: `# yaml-language-server: $schema=…`) matches the code.
/// Regenerate with `VACSINE_BLESS=1 cargo test -p vacsine-response --test it committed_schema`.
#[test]
fn committed_schema_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/response.schema.json");
    let now = format!("{}\n", serde_json::to_string_pretty(&schema()).unwrap());
    if std::env::var_os("VACSINE_BLESS").is_some() {
        std::fs::write(path, &now).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(
        committed, now,
        "{path} is stale: regenerate with VACSINE_BLESS=1"
    );
}
