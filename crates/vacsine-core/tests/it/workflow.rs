//! Workflow inputs and structure: declared places, command-line values, names (issue 7).

use serde_json::json;
use std::collections::BTreeMap;
use vacsine_core::doc::{parse_as, SourceFile};
use vacsine_core::validate::validate_workflow_structure;
use vacsine_core::workflow::{check_workflow_name, coerce_inputs, InputType, Workflow};

const WF: &str = "apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: typed
spec:
  inputs:
    pattern: { type: string }
    port:
      type: port
      default: ssh
    ports: { type: array, default: [22] }
  steps:
    - {id: a, uses: command}
";

fn load(text: &str) -> Workflow {
    parse_as(&SourceFile::new("w.yaml", text)).unwrap()
}

#[test]
fn inputs_remember_where_they_are_declared() {
    let w = load(WF);
    let at = |k: &str| (w.spec.inputs[k].name.line, w.spec.inputs[k].name.column);
    assert_eq!(at("pattern"), (7, 5));
    assert_eq!(at("port"), (8, 5));
    assert_eq!(at("ports"), (11, 5));
    assert_eq!(w.spec.inputs["pattern"].name.value, "pattern");
    let d = w.spec.inputs["port"].default.as_ref().unwrap();
    assert_eq!((d.line, d.value.clone()), (10, json!("ssh")));
    // Read back from the journal's JSON: same inputs, no places.
    let back: Workflow = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
    assert_eq!(
        back.spec.inputs["ports"].default.as_ref().unwrap().value,
        json!([22])
    );
}

#[test]
fn wrong_default_is_reported_at_the_default() {
    let p = validate_workflow_structure(&load(WF), &BTreeMap::new());
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].line, 10, "{p:#?}");
    assert!(
        p[0].message
            .contains("default of input `port`: expected a port"),
        "{p:#?}"
    );
}

/// (type, text given with -i, expected value or error fragment)
const CLI: &[(InputType, &str, Result<&str, &str>)] = &[
    (InputType::String, "[0-9]+", Ok(r#""[0-9]+""#)),
    (InputType::String, "{a}", Ok(r#""{a}""#)),
    (InputType::String, "", Ok(r#""""#)),
    (InputType::Port, "8080", Ok("8080")),
    (InputType::Port, "ssh", Err("expected a port")),
    (InputType::Boolean, "true", Ok("true")),
    (InputType::Integer, "-3", Ok("-3")),
    (InputType::Ip, "10.0.0.1", Ok(r#""10.0.0.1""#)),
    (InputType::Array, r#"["a", 1]"#, Ok(r#"["a",1]"#)),
    (InputType::Array, "[0-9]+", Err("expected a JSON array")),
    (InputType::Array, r#"{"a": 1}"#, Err("expected array")),
    (InputType::Object, r#"{"a": 1}"#, Ok(r#"{"a":1}"#)),
    (InputType::Object, "a=1", Err("expected a JSON object")),
];

#[test]
fn command_line_values_are_strings_unless_the_type_says_otherwise() {
    for (i, (ty, raw, want)) in CLI.iter().enumerate() {
        let got = ty.from_command_line(raw).and_then(|v| ty.coerce(&v));
        match (got, want) {
            (Ok(v), Ok(w)) => assert_eq!(v.to_string(), *w, "case {i}"),
            (Err(e), Err(w)) => assert!(e.contains(w), "case {i}: {e}"),
            (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn inputs_are_coerced_with_enums_and_defaults() {
    let w = load(&WF.replace("default: ssh", "default: 22"));
    let given = json!({"pattern": "[0-9]+"});
    let out = coerce_inputs(&w.spec.inputs, given.as_object().unwrap()).unwrap();
    assert_eq!(
        json!(out),
        json!({"pattern": "[0-9]+", "port": 22, "ports": [22]})
    );
    let e = coerce_inputs(&w.spec.inputs, &Default::default()).unwrap_err();
    assert_eq!(e.name, "pattern");
    assert!(e.message.contains("required"), "{e:?}");
}

#[test]
fn workflow_names() {
    for good in ["block-ip", "a", "0", "set_sysctl.v2", &"x".repeat(63)] {
        assert!(check_workflow_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "Block",
        "-a",
        ".a",
        "_a",
        "a b",
        "a/b",
        "é",
        &"x".repeat(64),
    ] {
        assert!(check_workflow_name(bad).is_err(), "{bad}");
    }
}
