//! Attacker-controlled values reach executors as data: never through a shell, never templated
//! into script text.

use crate::support::*;
use serde_json::json;
use vacsine_engine::RunStatus;

#[tokio::test]
async fn hostile_inputs_arrive_literally_and_run_nothing() {
    let marker = format!("/tmp/pwned-{}", uniq());
    let hostile = [
        format!("1.2.3.4; touch {marker}"),
        format!("$(touch {marker})"),
        format!("`touch {marker}`"),
        format!("x' && touch {marker} && '"),
        "$(id)".to_string(),
        "{{ 7*7 }}".to_string(),
    ];
    let w = wf(
        "inject",
        r#"
  inputs:
    value: { type: string }
  steps:
    - id: argv
      uses: command
      with: { argv: [printf, "%s", "{{ inputs.value }}"] }
    - id: sh-arg
      uses: command
      with: { argv: [sh, -c, 'printf "%s" "$1"', sh, "{{ inputs.value }}"] }
    - id: env
      uses: command
      with:
        argv: [sh, -c, 'printf "%s" "$V"']
        env: { V: "{{ inputs.value }}" }
    - id: stdin
      uses: command
      with: { argv: [cat], stdin: "{{ inputs.value }}" }
    - id: script-env
      uses: script
      with:
        env: { V: "{{ inputs.value }}" }
        script: printf "%s" "$V"
    - id: script-literal
      uses: script
      with:
        script: printf "%s" "{{ inputs.value }}"
"#,
    );
    for v in &hostile {
        let r = run(w.clone(), json!({"value": v})).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{v}: {r:#?}");
        for id in ["argv", "sh-arg", "env", "stdin", "script-env"] {
            assert_eq!(&stdout(&r, id), v, "step {id} altered {v:?}");
        }
        // The script text is never templated: the braces arrive as written.
        assert_eq!(stdout(&r, "script-literal"), "{{ inputs.value }}");
        assert!(
            !std::path::Path::new(&marker).exists(),
            "{v:?} created {marker}"
        );
    }
}

#[tokio::test]
async fn hostile_ip_cannot_reach_the_firewall_script() {
    // Typed input: the ip type refuses the payload before anything runs.
    let w = wf(
        "block",
        r#"
  inputs:
    ip: { type: ip }
  steps:
    - id: block
      uses: firewall
      with:
        chains: [{ name: input, hook: input, priority: 0, policy: accept }]
        rules: [{ chain: input, rule: "ip saddr {{ inputs.ip }} drop" }]
"#,
    );
    let e = engine();
    let mut req = vacsine_engine::RunRequest::new(w);
    req.inputs = inputs(json!({"ip": "1.2.3.4; flush ruleset"}));
    req.nodes = nodes(&[local("l")]);
    let err = e.run(req).await.unwrap_err().to_string();
    assert!(err.contains("input `ip`: expected an IP address"), "{err}");

    // Untyped (string) input: the rule whitelist refuses it at run time, before nft runs.
    let w = wf(
        "block2",
        r#"
  inputs:
    ip: { type: string }
  steps:
    - id: block
      uses: firewall
      with:
        chains: [{ name: input, hook: input, priority: 0, policy: accept }]
        rules: [{ chain: input, rule: "ip saddr {{ inputs.ip }} drop" }]
"#,
    );
    for bad in [
        "1.2.3.4 drop; flush ruleset;",
        "1.2.3.4 drop\nflush ruleset",
        "1.2.3.4 } table inet x {",
    ] {
        let r = run(w.clone(), json!({"ip": bad})).await;
        assert_eq!(r.status, RunStatus::Failed);
        let rec = &recs(&r, "block")[0];
        assert!(
            rec.error.as_deref().unwrap().contains("not allowed")
                || rec.error.as_deref().unwrap().contains("unbalanced"),
            "{bad:?}: {rec:#?}"
        );
    }
}
