use vacsine_events::{drift, CheckResult, EventKind, Outcome, Severity};

fn r(req: &str, node: &str, outcome: Outcome) -> CheckResult {
    CheckResult {
        requirement: req.into(),
        node: node.into(),
        outcome,
        severity: None,
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
