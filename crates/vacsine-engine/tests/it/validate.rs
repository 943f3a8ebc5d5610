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
    ("  steps:\n    - id: a\n      uses: workflow\n      with: { workflow: child, inputs: { prot: 22 } }\n", "has no input `prot`", 8),
    (
        "  steps:\n    - id: a\n      uses: firewall\n      with: { chains: [{ name: input }], rules: [{ chain: input, rule: \"drop; flush ruleset\" }] }\n",
        "not allowed in a firewall rule",
        8,
    ),
    ("  steps:\n    - id: a\n      uses: file\n      with: { path: /x, line: a, content: b }\n", "either `line` or `content`", 8),
    ("  steps:\n    - id: a\n      uses: command\n      with: { argv: [x] }\n    - id: a\n      uses: command\n      with: { argv: [x] }\n", "duplicate step id `a`", 10),
    ("  steps:\n    - id: a\n      uses: command\n      with: { argv: [x] }\n      outputs: { o: \"{{ reslt.stdout }}\" }\n", "`reslt`, which is not defined", 0),
];

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
