use vacsine_events::{drift, read_check_results, CheckResult, EventKind, Outcome, Severity};

fn r(req: &str, node: &str, outcome: Outcome) -> CheckResult {
    CheckResult {
        requirement: req.into(),
        node: node.into(),
        outcome,
        severity: None,
        title: None,
    }
}

#[test]
fn a_rule_that_passed_and_now_fails_is_a_requirement_changed_event() {
    use Outcome::*;
    let prev = [
        r("ssh-no-root", "web-1", Pass),
        r("ssh-no-root", "db-1", Pass),
        r("fw-default-drop", "web-1", Fail),
        r("telnet-off", "web-1", Pass),
        r("tls-only", "web-1", Pass),
    ];
    let mut cur = vec![
        r("ssh-no-root", "web-1", Fail),     // drift
        r("ssh-no-root", "db-1", Pass),      // unchanged
        r("fw-default-drop", "web-1", Fail), // was already failing
        r("telnet-off", "web-1", Error),     // not a failure: could not check
        r("new-rule", "web-1", Fail),        // no previous result
        r("tls-only", "web-1", NotApplicable),
    ];
    cur[0].severity = Some(Severity::High);
    let at = "2026-03-02T12:00:00Z".parse().unwrap();
    let ev = drift(&prev, &cur, at);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    let e = &ev[0];
    assert_eq!(e.kind, EventKind::RequirementChanged);
    assert_eq!(e.source, "vacsine");
    assert_eq!(e.node.as_deref(), Some("web-1"));
    assert_eq!(e.severity, Severity::High);
    assert_eq!(e.fields["requirement"], "ssh-no-root");
    assert_eq!(e.time, at);
    assert_eq!(e.id, e.content_id());
    // Idempotent: the same comparison gives the same event id.
    assert_eq!(drift(&prev, &cur, at)[0].id, e.id);
    // Nothing drifts when nothing changed.
    assert!(drift(&prev, &prev, at).is_empty());
}

#[test]
fn check_results_have_a_tolerant_json_form() {
    let v: Vec<CheckResult> = serde_json::from_str(
        r#"[{"requirement":"a","node":"n","outcome":"not_applicable","evidence":"ignored"}]"#,
    )
    .unwrap();
    assert_eq!(v[0].outcome, Outcome::NotApplicable);
}

#[test]
fn check_output_is_read_and_drift_computed_between_two_runs() {
    // The shape `vacsine check --format json` prints (crates/vacsine-enforce CheckResult).
    let before = br#"{"results": [
      {"requirement": "ssh-no-root", "node": "web-1", "outcome": "pass", "observed": "PermitRootLogin no", "message": "", "title": "No root login over SSH", "severity": "high", "kind": "security"},
      {"requirement": "fw-default-drop", "node": "web-1", "outcome": "fail", "observed": "policy accept", "message": "", "title": "Default drop", "severity": "medium", "kind": "security"}
    ]}"#;
    let after = br#"{"results": [
      {"requirement": "ssh-no-root", "node": "web-1", "outcome": "fail", "observed": "PermitRootLogin yes", "message": "", "title": "No root login over SSH", "severity": "high", "kind": "security"},
      {"requirement": "fw-default-drop", "node": "web-1", "outcome": "nope", "observed": "", "message": "", "title": "Default drop", "severity": "medium", "kind": "security"}
    ]}"#;
    let (prev, errs) = read_check_results(before);
    assert!(errs.is_empty(), "{errs:?}");
    let (cur, errs) = read_check_results(after);
    assert_eq!(cur.len(), 1);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0]
            .to_string()
            .starts_with("line 1: results[1]: unknown variant `nope`"),
        "{}",
        errs[0]
    );
    let ev = drift(&prev, &cur, "2026-03-02T12:00:00Z".parse().unwrap());
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].severity, Severity::High);
    assert_eq!(
        ev[0].summary,
        "vacsine: ssh-no-root (No root login over SSH) passed and now fails on web-1"
    );
    let (_, errs) = read_check_results(b"{\"verdict\": \"x\"}");
    assert!(errs[0]
        .to_string()
        .contains("expected `vacsine check --format json` output"));
}

#[test]
fn scap_check_output_is_read_too() {
    // The shape `vacsine check --scap … --format json` prints: one line per node.
    let before = concat!(
        r#"{"node":"web-1","report":{"benchmark":"xccdf_org.ssgproject.content_benchmark_DEBIAN-12","profile":"p","profile_title":"t","rules":[{"id":"xccdf_org.ssgproject.content_rule_sshd_disable_root_login","title":"Disable SSH Root Login","severity":"medium","outcome":"pass","evidence":[],"controls":[]},{"id":"xccdf_org.ssgproject.content_rule_package_telnetd_removed","title":"Uninstall telnetd","severity":"high","outcome":"notapplicable","evidence":[],"controls":[]}],"summary":{},"families":{}},"timing":{"load_ms":1}}"#,
        "\n",
    );
    let after = before
        .replace(
            r#""severity":"medium","outcome":"pass""#,
            r#""severity":"medium","outcome":"fail""#,
        )
        .replace(r#""outcome":"notapplicable""#, r#""outcome":"fail""#);
    let (prev, errs) = read_check_results(before.as_bytes());
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(prev[1].outcome, Outcome::NotApplicable);
    let (cur, errs) = read_check_results(after.as_bytes());
    assert!(errs.is_empty(), "{errs:?}");
    let ev = drift(&prev, &cur, "2026-03-02T12:00:00Z".parse().unwrap());
    assert_eq!(ev.len(), 1, "not applicable → fail is not drift: {ev:#?}");
    assert_eq!(
        ev[0].fields["requirement"],
        "xccdf_org.ssgproject.content_rule_sshd_disable_root_login"
    );
    assert_eq!(ev[0].node.as_deref(), Some("web-1"));
    assert_eq!(ev[0].severity, Severity::Medium);
    assert!(
        ev[0].summary.contains("(Disable SSH Root Login)"),
        "{}",
        ev[0].summary
    );
}
