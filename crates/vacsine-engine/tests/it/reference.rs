//! Issue 15 ("typed for authors too"): the workflow schema types each step's `with:` from the
//! executors' own argument types, so an editor refuses what the engine would refuse.

use serde_json::{json, Value};
use vacsine_engine::executor::Registry;
use vacsine_engine::reference::{executor_reference, workflow_schema};

fn validator() -> jsonschema::Validator {
    let schema = workflow_schema(&Registry::default());
    jsonschema::validator_for(&schema).expect("the generated workflow schema compiles")
}

fn workflow(steps: Value) -> Value {
    json!({
        "apiVersion": "vacsine.io/v1",
        "kind": "Workflow",
        "metadata": { "name": "w" },
        "spec": { "inputs": { "codes": { "type": "string" } }, "steps": steps },
    })
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn every_catalog_workflow_validates_against_the_generated_schema() {
    let v = validator();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_saphyr::from_str(&text).unwrap();
        let errs = errors(&v, &doc);
        assert!(errs.is_empty(), "{}: {errs:#?}", path.display());
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} catalog workflows found");
}

#[test]
fn a_typo_or_a_wrong_type_in_with_is_refused_where_a_template_is_accepted() {
    let v = validator();
    let ok = workflow(json!([
        { "id": "a", "uses": "command", "with": { "argv": ["true"], "expectExit": [0, 1] } },
        { "id": "b", "uses": "command", "with": { "argv": ["true"], "expectExit": "{{ inputs.codes }}" } },
        { "id": "c", "uses": "nftset", "with": { "op": "add", "addresses": ["192.0.2.7"], "timeout": "1h" } },
        { "id": "d", "uses": "file", "with": { "path": "/etc/x", "mode": 644 } },
        { "id": "e", "uses": "wait-until", "with": { "probe": { "process": { "name": "sshd", "running": "{{ inputs.codes }}" } } } },
    ]));
    let errs = errors(&v, &ok);
    assert!(errs.is_empty(), "{errs:#?}");

    for (step, why) in [
        (
            json!({ "id": "a", "uses": "command", "with": { "argvv": ["true"] } }),
            "typo",
        ),
        (
            json!({ "id": "a", "uses": "command", "with": { "argv": ["true"], "expectExit": "zero" } }),
            "not a list nor a template",
        ),
        (
            json!({ "id": "a", "uses": "nftset", "with": { "op": "ban", "addresses": [] } }),
            "op not one of add/delete/ensure",
        ),
        (
            json!({ "id": "a", "uses": "file", "with": { "path": "/etc/x", "state": "gone" } }),
            "state not present/absent",
        ),
        (
            json!({ "id": "a", "uses": "sysctl", "with": { "key": "net.ipv4.ip_forward" } }),
            "value missing",
        ),
        (
            json!({ "id": "a", "uses": "no-such-executor", "with": {} }),
            "unknown executor",
        ),
    ] {
        let doc = workflow(json!([step]));
        assert!(
            !errors(&v, &doc).is_empty(),
            "{why}: the schema accepted {}",
            doc["spec"]["steps"][0]
        );
    }
}

/// The schema and the engine agree: an argument no executor knows is refused by both.
#[test]
fn the_schema_and_the_engines_own_check_refuse_the_same_unknown_argument() {
    let v = validator();
    let registry = Registry::default();
    for e in registry.executors() {
        let with = json!({ "surelyNotAnArgument": 1 });
        assert!(
            e.check_args(&with).is_err(),
            "`{}`'s check accepted an unknown argument",
            e.name()
        );
        let doc = workflow(json!([{ "id": "a", "uses": e.name(), "with": with }]));
        assert!(
            !errors(&v, &doc).is_empty(),
            "the schema accepted an unknown argument for `{}`",
            e.name()
        );
    }
}

#[test]
fn the_reference_names_every_executor_with_its_arguments() {
    let registry = Registry::default();
    let md = executor_reference(&registry);
    for name in registry.names() {
        assert!(md.contains(&format!("## `{name}`")), "{name} missing");
    }
    // A few arguments and outputs, with their types, from the argument structs' own docs.
    for needle in [
        "| `argv` | [string] | yes |",
        "| `expectExit` | [integer] |",
        "| `op` | `add` \\| `delete` \\| `ensure` | yes |",
        "taken literally, never templated: `script`, `interpreter`",
        "- `added`: elements this step added",
    ] {
        assert!(
            md.contains(needle),
            "`{needle}` not in the reference:\n{md}"
        );
    }
}
