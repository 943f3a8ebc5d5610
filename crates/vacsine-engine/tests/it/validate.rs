//! Static validation: one case per problem, each expected message and location.

use crate::support::*;
use vacsine_engine::{validate_workflow, Catalog};

fn catalog() -> Catalog {
    [wf(
        "child",
        r#"
  inputs:
    port: { type: port }
    mode: { type: string, enum: [a, b], default: a }
  steps:
    - id: x
      uses: command
      with: { argv: [echo, "{{ inputs.port }}"] }
"#,
    )]
    .into_iter()
    .collect()
}

/// (spec, expected message fragment, expected line or 0 for "any").
const CASES: &[(&str, &str, u64)] = &[
    ("  steps:\n    - id: a\n      uses: comand\n", "unknown executor `comand`", 8),
    ("  steps:\n    - id: a\n      uses: command\n      needs: [nope]\n      with: { argv: [x] }\n", "needs unknown step `nope`", 9),
    (
        "  steps:\n    - id: a\n      uses: command\n      needs: [b]\n      with: { argv: [x] }\n    - id: b\n      uses: command\n      needs: [a]\n      with: { argv: [x] }\n",
        "cycle",
        7,
    ),
    ("  steps:\n    - id: a\n      uses: command\n      with: { argv: [\"{{ inputs.ip \"] }\n", "template error", 8),
    ("  steps:\n    - id: a\n      uses: command\n      with: { argv: [\"{{ inputs.ip }}\"] }\n", "`inputs.ip`, which is not a declared input", 8),
    ("  steps:\n    - id: a\n      uses: command\n      if: inputs.on and\n      with: { argv: [x] }\n", "`if`: expression error", 9),
    ("  steps:\n    - id: a\n      uses: command\n      with: { argv: [\"{{ secrets.pw }}\"] }\n", "`secrets.pw`, which is not a declared secret", 8),
    ("  steps:\n    - id: a\n      uses: command\n      with: { argv: [\"{{ foo }}\"] }\n", "`foo`, which is not defined", 8),
    (
        "  steps:\n    - id: a\n      uses: command\n      with: { argv: [x] }\n    - id: b\n      uses: command\n      with: { argv: [\"{{ steps.a.outputs.x }}\"] }\n",
        "does not need `a`",
        11,
    ),
    ("  steps:\n    - id: a\n      uses: command\n      with: { argv: [x], bogus: 1 }\n", "unknown field `bogus`", 8),
    ("  steps:\n    - id: a\n      uses: command\n      timeout: 5 parsecs\n      with: { argv: [x] }\n", "invalid duration", 9),
    ("  steps:\n    - id: a\n      uses: workflow\n      with: { workflow: nope }\n", "workflow `nope` is not in the catalog", 8),
    ("  steps:\n    - id: a\n      uses: workflow\n      with: { workflow: child, inputs: { port: \"ssh\" } }\n", "input `port` of workflow `child`: expected a port", 8),
    ("  steps:\n    - id: a\n      uses: workflow\n      with: { workflow: child, inputs: { port: 22, mode: c } }\n", "input `mode` of workflow `child`", 8),
    ("  steps:\n    - id: a\n      uses: workflow\n      with: { workflow: child }\n", "requires input `port`", 8),
    ("  steps:\n    - id: a\n      uses: workflow\n      with: { workflow: child, inputs: { port: 22, prot: 22 } }\n", "has no input `prot`", 8),
    (
        "  steps:\n    - id: a\n      uses: firewall\n      with: { chains: [{ name: input }], rules: [{ chain: input, rule: \"drop; flush ruleset\" }] }\n",
        "not allowed in a firewall rule",
        8,
    ),
    ("  steps:\n    - id: a\n      uses: file\n      with: { path: /x, line: a, content: b }\n", "either `line` or `content`", 8),
    ("  steps:\n    - id: a\n      uses: command\n      with: { argv: [x] }\n    - id: a\n      uses: command\n      with: { argv: [x] }\n", "duplicate step id `a`", 10),
    ("  steps:\n    - id: a\n      uses: command\n      with: { argv: [x] }\n      outputs: { o: \"{{ reslt.stdout }}\" }\n", "`reslt`, which is not defined", 0),
    // Issue 7: a wrong-typed default is reported at the default's own line.
    ("  inputs:\n    port:\n      type: port\n      default: ssh\n  steps:\n    - id: a\n      uses: command\n      with: { argv: [x] }\n", "default of input `port`: expected a port", 9),
    ("  inputs:\n    mode: { type: string, enum: [a, b], default: c }\n  steps:\n    - id: a\n      uses: command\n      with: { argv: [x] }\n", "default of input `mode`", 7),
    // Issue 7: a list input used whole as one argument is refused before running.
    ("  inputs:\n    ports: { type: array }\n  steps:\n    - id: a\n      uses: command\n      with: { argv: [echo, \"{{ inputs.ports }}\"] }\n", "expected a string (with the declared types of the inputs used)", 10),
    ("  steps:\n    - id: a\n      uses: command\n      needs: [a]\n      with: { argv: [x] }\n", "needs itself", 9),
    ("  steps:\n    - id: a\n      uses: command\n      retry: { attempts: 0 }\n      with: { argv: [x] }\n", "`retry.attempts` must be at least 1", 7),
    ("  steps:\n    - id: a\n      uses: command\n      with: { argv: [x] }\n  rollback:\n    - id: r\n      uses: command\n      needs: [a]\n      with: { argv: [x] }\n", "no effect in rollback steps", 13),
    ("  steps:\n    - id: a b\n      uses: command\n      with: { argv: [x] }\n", "invalid step id", 7),
];

/// Each case has one fault: exactly one problem is reported (issue 7: the core and the engine
/// used to report the same fault twice, in two wordings).
#[test]
fn each_fault_is_reported_once() {
    let cat = catalog();
    for (i, (spec, want, _)) in CASES.iter().enumerate() {
        let w = wf(&format!("v{i}"), spec);
        let problems = validate_workflow(&w, &cat);
        assert_eq!(problems.len(), 1, "case {i} ({want}): {problems:#?}");
    }
}

/// Issue 7: workflow names follow `^[a-z0-9][a-z0-9._-]{0,62}$`.
#[test]
fn workflow_names_are_checked() {
    let cat = catalog();
    let spec = "  steps:\n    - id: a\n      uses: command\n      with: { argv: [x] }\n";
    let long = "a".repeat(64);
    for bad in [
        "Block-IP",
        "\"-x\"",
        "\"a b\"",
        "\".hidden\"",
        "\"a/b\"",
        long.as_str(),
    ] {
        let p = validate_workflow(&wf(bad, spec), &cat);
        assert_eq!(p.len(), 1, "{bad}: {p:#?}");
        assert!(
            p[0].message.contains("invalid workflow name"),
            "{bad}: {p:#?}"
        );
        assert_eq!(p[0].line, 4, "{bad}: {p:#?}");
    }
    let ok63 = "a".repeat(63);
    for good in ["block-ip", "a", "0day", "set_sysctl.v2", ok63.as_str()] {
        let p = validate_workflow(&wf(good, spec), &cat);
        assert!(p.is_empty(), "{good}: {p:#?}");
    }
}

/// Issue 7: a typed input used whole as an argv/env element passes validation and runs.
#[tokio::test]
async fn typed_inputs_as_whole_arguments_run() {
    let w = wf(
        "typed",
        r#"
  inputs:
    port: { type: port }
    on: { type: boolean, default: true }
    n: { type: number, default: 1.5 }
  steps:
    - id: a
      uses: command
      with: { argv: [echo, "{{ inputs.port }}", "{{ inputs.n }}"] }
    - id: b
      uses: command
      with: { argv: [sh, -c, 'echo "$ON"'], env: { ON: "{{ inputs.on }}" } }
"#,
    );
    assert!(validate_workflow(&w, &catalog()).is_empty());
    let r = run(w, serde_json::json!({"port": "8080"})).await;
    assert_eq!(r.status, vacsine_engine::RunStatus::Succeeded, "{r:#?}");
    assert_eq!(recs(&r, "a")[0].stdout, "8080 1.5\n");
    assert_eq!(recs(&r, "b")[0].stdout, "true\n");
}

#[test]
fn each_problem_is_found_and_located() {
    let cat = catalog();
    for (i, (spec, want, line)) in CASES.iter().enumerate() {
        let w = wf(&format!("v{i}"), spec);
        let problems = validate_workflow(&w, &cat);
        let hit = problems.iter().find(|p| p.message.contains(want));
        let Some(p) = hit else {
            panic!("case {i}: no problem containing {want:?} in {problems:#?}")
        };
        if *line > 0 {
            assert_eq!(p.line, *line, "case {i}: {p:?}");
            assert!(p.column > 0, "case {i}: {p:?}");
        }
    }
}

#[test]
fn good_workflows_have_no_problems() {
    let cat = catalog();
    let spec = r#"
  inputs:
    ip: { type: ip }
    on: { type: boolean, default: true }
  secrets:
    tok: { env: TOKEN }
  steps:
    - id: a
      uses: command
      if: inputs.on
      with: { argv: [echo, "{{ inputs.ip }}", "{{ secrets.tok }}", "{{ node.name }} {{ target.name }}"] }
      outputs: { out: "{{ result.stdout | trim }}" }
    - id: b
      uses: command
      needs: [a]
      with: { argv: ["{% for x in [1, 2] %}{{ x }}{% endfor %}", "{{ steps.a.outputs.out }}"] }
    - id: c
      uses: workflow
      needs: [b]
      with: { workflow: child, inputs: { port: "{{ 20 + 2 }}", mode: b } }
    - id: s
      uses: script
      with: { script: 'echo "{{ not a template }}"' }
  rollback:
    - id: r
      uses: command
      with: { argv: [echo, "{{ steps.c.status }}"] }
"#;
    let w = wf("good", spec);
    let p = validate_workflow(&w, &cat);
    assert!(p.is_empty(), "{p:#?}");
}
