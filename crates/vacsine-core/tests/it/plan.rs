use std::collections::BTreeMap;
use vacsine_core::doc::{parse_as, SourceFile};
use vacsine_core::plan::{plan, Finding};
use vacsine_core::policy::Policy;
use vacsine_core::target::ResolvedNode;
use vacsine_core::validate::{validate_policy, validate_workflow_structure, CatalogIndex};
use vacsine_core::workflow::Workflow;
use vacsine_core::Outcome;

fn wf(name: &str, inputs: &str) -> Workflow {
    parse_as(&SourceFile::new(
        "w.yaml",
        format!("apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  inputs: {inputs}\n  steps: [{{id: a, uses: command, with: {{argv: [true]}}}}]\n"),
    ))
    .unwrap()
}

fn policy() -> Policy {
    parse_as(&SourceFile::new(
        "p.yaml",
        "apiVersion: vacsine.io/v1
kind: Policy
metadata: {name: p}
spec:
  requirements:
    - id: telnet
      title: t
      severity: high
      check: {port: {port: 23, from: outside, expect: closed}}
      fixes:
        - {uses: disable, with: {service: telnetd}, disruption: medium}
        - {uses: block, with: {port: 23}, disruption: low}
    - id: proc
      title: p
      severity: high
      check: {process: {name: telnetd, running: false}}
      fixes:
        - {uses: disable, with: {service: telnetd}, disruption: low}
    - id: guard
      title: g
      kind: availability
      severity: high
      check: {port: {port: 80, from: outside, expect: open}}
",
    ))
    .unwrap()
}

fn node(n: &str) -> ResolvedNode {
    ResolvedNode {
        name: n.into(),
        roles: vec![],
        labels: BTreeMap::new(),
        handle: n.into(),
    }
}

#[test]
fn least_disruptive_fix_first_and_per_node_chains() {
    let (d, b) = (
        wf("disable", "{service: {type: string}}"),
        wf("block", "{port: {type: port}}"),
    );
    let idx: CatalogIndex = [("disable".to_string(), &d), ("block".to_string(), &b)]
        .into_iter()
        .collect();
    let f = |r: &str, n: &str, o| Finding {
        requirement: r.into(),
        node: n.into(),
        outcome: o,
    };
    let findings = vec![
        f("telnet", "a", Outcome::Fail),
        f("proc", "a", Outcome::Fail),
        f("telnet", "b", Outcome::Fail),
        f("proc", "b", Outcome::Pass),
        f("guard", "a", Outcome::Fail),
    ];
    let p = plan(&policy(), "t", &[node("a"), node("b")], &findings, &idx);
    let summary: Vec<(String, String)> = p
        .items
        .iter()
        .map(|i| (i.workflow.clone(), i.node.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("block".into(), "a".into()),
            ("block".into(), "b".into()),
            ("disable".into(), "a".into())
        ]
    );
    // Availability guards are never "fixed".
    assert!(p
        .items
        .iter()
        .all(|i| !i.requirements.contains(&"guard".to_string())));
    // Same node: sequential; other node: independent.
    let steps = &p.workflow.spec.steps;
    assert!(steps[0].needs.is_empty());
    assert!(steps[1].needs.is_empty());
    assert_eq!(steps[2].needs[0].value, steps[0].id.value);
    assert!(validate_workflow_structure(&p.workflow, &idx).is_empty());
}

#[test]
fn unfixable_when_catalog_lacks_fix() {
    let idx: CatalogIndex = BTreeMap::new();
    let p = plan(
        &policy(),
        "t",
        &[node("a")],
        &[Finding {
            requirement: "proc".into(),
            node: "a".into(),
            outcome: Outcome::Fail,
        }],
        &idx,
    );
    assert!(p.items.is_empty());
    assert_eq!(p.unfixable.len(), 1);
}

#[test]
fn validation_names_missing_workflow_and_bad_inputs() {
    let b = wf("block", "{port: {type: port}}");
    let idx: CatalogIndex = [("block".to_string(), &b)].into_iter().collect();
    let probs = validate_policy(&policy(), &idx, None);
    let msgs: Vec<String> = probs
        .iter()
        .map(|p| format!("{}:{} {}", p.line, p.column, p.message))
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("`disable`, which is not in the catalog")),
        "{msgs:?}"
    );
    assert!(probs.iter().all(|p| p.line > 0));
    let p2: Policy = parse_as(&SourceFile::new("p.yaml", "apiVersion: vacsine.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  requirements:\n    - id: r\n      title: t\n      severity: low\n      check: {file: {path: /x, mode: '999', contains: '(('}}\n      fixes: [{uses: block, with: {port: 99999}}]\n")).unwrap();
    let probs = validate_policy(&p2, &idx, None);
    let msgs: Vec<String> = probs.iter().map(|p| p.message.clone()).collect();
    assert!(msgs.iter().any(|m| m.contains("invalid mode")), "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m.contains("invalid regular expression")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("expected a port")),
        "{msgs:?}"
    );
}

#[test]
fn needs_cycle_and_unknown_need_are_reported() {
    let w: Workflow = parse_as(&SourceFile::new("w.yaml", "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  steps:\n    - {id: a, uses: command, needs: [b]}\n    - {id: b, uses: command, needs: [a]}\n    - {id: c, uses: command, needs: [zz]}\n")).unwrap();
    let probs = validate_workflow_structure(&w, &BTreeMap::new());
    let msgs: Vec<String> = probs
        .iter()
        .map(|p| format!("{}: {}", p.line, p.message))
        .collect();
    assert!(msgs.iter().any(|m| m.contains("cycle")), "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("8: ") && m.contains("`zz`")),
        "{msgs:?}"
    );
}

#[test]
fn plan_workflow_names_are_valid_workflow_names() {
    use vacsine_core::plan::plan_workflow_name;
    use vacsine_core::workflow::check_workflow_name;
    for (policy, want) in [
        ("edge-site", "remediate-edge-site"),
        ("Edge Site/CIS v8", "remediate-edge-site-cis-v8"),
        ("été", "remediate--t-"),
    ] {
        let got = plan_workflow_name(policy);
        assert_eq!(got, want);
        check_workflow_name(&got).unwrap_or_else(|e| panic!("{policy}: {e}"));
    }
    let long = plan_workflow_name(&"x".repeat(200));
    assert_eq!(long.len(), 63);
    check_workflow_name(&long).unwrap();
}

/// Issue 18: a catalog input renamed keeps its old name as a deprecated alias: a policy
/// naming it validates with one warning at the value's place naming the new name, the plan
/// passes the new name, run-time coercion maps it; old and new together are an error.
#[test]
fn issue18_a_renamed_input_keeps_its_old_name_as_a_deprecated_alias() {
    use vacsine_core::workflow::coerce_inputs;
    let d = wf(
        "disable",
        "{service: {type: string}, inetd_conf: {type: string, default: /etc/inetd.conf, deprecatedNames: [services_file]}}",
    );
    let idx: CatalogIndex = [("disable".to_string(), &d)].into_iter().collect();
    let pol = |with: &str| -> Policy {
        parse_as(&SourceFile::new(
            "p.yaml",
            format!("apiVersion: vacsine.io/v1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  requirements:\n    - id: proc\n      title: p\n      severity: high\n      check: {{process: {{name: telnetd, running: false}}}}\n      fixes:\n        - uses: disable\n          with: {with}\n"),
        ))
        .unwrap()
    };
    let old = pol("{service: telnetd, services_file: /etc/inetd.local}");
    let probs = validate_policy(&old, &idx, None);
    assert_eq!(probs.len(), 1, "{probs:?}");
    let w = &probs[0];
    assert!(w.warning, "{w:?}");
    assert_eq!(w.line, 12, "{w:?}");
    assert!(
        w.message.contains(
            "input `services_file` of workflow `disable` is deprecated: it is now `inetd_conf`"
        ),
        "{w:?}"
    );
    // The plan passes the new name.
    let p = plan(
        &old,
        "t",
        &[node("a")],
        &[Finding {
            requirement: "proc".into(),
            node: "a".into(),
            outcome: Outcome::Fail,
        }],
        &idx,
    );
    assert_eq!(p.items[0].inputs["inetd_conf"], "/etc/inetd.local");
    assert!(!p.items[0].inputs.contains_key("services_file"));
    // Both names: an error, not a warning.
    let both = pol("{service: telnetd, services_file: /a, inetd_conf: /b}");
    let probs = validate_policy(&both, &idx, None);
    assert!(
        probs
            .iter()
            .any(|p| !p.warning && p.message.contains("given twice")),
        "{probs:?}"
    );
    // Run time (`vacsine run --input services_file=…`, a sub-workflow call).
    let given = |pairs: &[(&str, &str)]| -> serde_json::Map<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect()
    };
    let got = coerce_inputs(
        &d.spec.inputs,
        &given(&[("service", "telnetd"), ("services_file", "/x")]),
    )
    .unwrap();
    assert_eq!(got["inetd_conf"], "/x");
    let e = coerce_inputs(
        &d.spec.inputs,
        &given(&[
            ("service", "t"),
            ("services_file", "/x"),
            ("inetd_conf", "/y"),
        ]),
    )
    .unwrap_err();
    assert!(e.message.contains("given twice"), "{}", e.message);
    // A name that never was an input is still refused.
    let e = coerce_inputs(&d.spec.inputs, &given(&[("service", "t"), ("nope", "x")])).unwrap_err();
    assert_eq!(e.name, "nope");
}
