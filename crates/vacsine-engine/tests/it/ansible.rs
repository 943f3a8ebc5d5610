//! The `ansible` executor with a real `ansible-playbook` (ansible-core) on the local host.

use crate::support::*;
use serde_json::{json, Value};
use vacsine_core::record::{Level, StepStatus};
use vacsine_engine::RunStatus;

fn ansible_or_skip() -> bool {
    let ok = have("ansible-playbook");
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "ansible-playbook required in CI"
        );
        eprintln!("SKIP: ansible-playbook not on PATH");
    }
    ok
}

const SPEC: &str = r#"
  inputs:
    path: { type: string }
    line: { type: string }
  steps:
    - id: play
      uses: ansible
      timeout: 120s
      with:
        vars: { target_path: "{{ inputs.path }}", wanted: "{{ inputs.line }}" }
        tasks:
          - name: ensure the line
            ansible.builtin.lineinfile: { path: "{{ target_path }}", line: "{{ wanted }}", create: true, mode: "0600" }
          - name: read it back
            ansible.builtin.command: { argv: [cat, "{{ target_path }}"] }
            changed_when: false
"#;

#[tokio::test]
async fn ansible_tasks_become_messages_and_report_changed() {
    if !ansible_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conf");
    let marker = format!("/tmp/pwned-{}", uniq());
    let hostile = format!("{{{{ lookup('pipe', 'touch {marker}') }}}}");
    let e = engine();
    let i = json!({"path": path.to_str().unwrap(), "line": hostile});
    let r = run_on(&e, wf("ans", SPEC), i.clone()).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    let rec = &recs(&r, "play")[0];
    assert!(rec.changed);
    let texts: Vec<&str> = rec.messages.iter().map(|m| m.text.as_str()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("changed: ensure the line")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.starts_with("ok: read it back")),
        "{texts:?}"
    );
    assert_eq!(rec.outputs["changed_tasks"], json!(1));
    // The hostile value is data for Ansible too: written literally, never evaluated.
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{hostile}\n")
    );
    assert!(!std::path::Path::new(&marker).exists());

    let r2 = run_on(&e, wf("ans", SPEC), i).await;
    assert_eq!(r2.status, RunStatus::Succeeded);
    assert!(!recs(&r2, "play")[0].changed, "{r2:#?}");
}

#[tokio::test]
async fn ansible_failed_task_fails_the_step() {
    if !ansible_or_skip() {
        return;
    }
    let w = wf(
        "ansfail",
        r#"
  steps:
    - id: play
      uses: ansible
      with:
        tasks:
          - name: always fails
            ansible.builtin.fail: { msg: "on purpose" }
"#,
    );
    let r = run(w, json!({})).await;
    let rec = &recs(&r, "play")[0];
    assert_eq!(rec.status, StepStatus::Failed, "{rec:#?}");
    assert!(
        rec.error
            .as_deref()
            .unwrap()
            .contains("task `always fails` failed: on purpose"),
        "{rec:#?}"
    );
}

/// Issue 7, fault 12: every task message carried the time the output was parsed; no start,
/// duration, skip reason, loop item or diff; a failed play said nothing of its earlier changes.
#[tokio::test]
async fn issue_7_ansible_per_task_records_and_kept_changes() {
    if !ansible_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conf");
    let w = wf(
        "anstasks",
        r#"
  inputs:
    path: { type: string }
  steps:
    - id: play
      uses: ansible
      timeout: 120s
      with:
        diff: true
        vars: { target_path: "{{ inputs.path }}", do_it: false }
        tasks:
          - name: write the file
            ansible.builtin.copy: { content: "first\n", dest: "{{ target_path }}", mode: "0600" }
          - name: only when asked
            ansible.builtin.command: { argv: ["true"] }
            when: do_it
          - name: add lines
            ansible.builtin.lineinfile: { path: "{{ target_path }}", line: "{{ item }}" }
            loop: [alpha, beta, gamma]
          - name: boom
            ansible.builtin.fail: { msg: "on purpose" }
"#,
    );
    let r = run(w, json!({"path": path.to_str().unwrap()})).await;
    let rec = &recs(&r, "play")[0];
    assert_eq!(rec.status, StepStatus::Failed, "{rec:#?}");
    assert!(rec.changed, "{rec:#?}");
    // The changes are really kept.
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "first\nalpha\nbeta\ngamma\n"
    );

    // The failure names the failed task and the earlier changes.
    let err = rec.error.as_deref().unwrap();
    assert!(err.contains("task `boom` failed: on purpose"), "{err}");
    assert!(
        err.contains(
            "earlier changes kept, no automatic undo: `write the file`, `add lines` (items alpha, beta, gamma)"
        ),
        "{err}"
    );
    assert!(
        rec.messages.iter().any(|m| m.level == Level::Warn
            && m.text
                .starts_with("earlier changes kept, no automatic undo: `write the file`")),
        "{rec:#?}"
    );

    // One entry per task and per loop item, in start order.
    let results = rec.outputs["results"].as_array().unwrap();
    let field = |r: &Value, k: &str| r[k].as_str().unwrap_or_default().to_string();
    let tasks: Vec<&Value> = results.iter().filter(|r| r.get("item").is_none()).collect();
    let names: Vec<String> = tasks.iter().map(|t| field(t, "task")).collect();
    assert_eq!(
        names,
        ["write the file", "only when asked", "add lines", "boom"],
        "{results:#?}"
    );
    let status: Vec<String> = tasks.iter().map(|t| field(t, "status")).collect();
    assert_eq!(status, ["changed", "skipped", "changed", "failed"]);
    let starts: Vec<String> = tasks.iter().map(|t| field(t, "started_at")).collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "distinct start times in order: {starts:?}"
    );
    // Within the step's own time span.
    assert!(
        starts[0] >= rec.started_at && starts[3] <= *rec.finished_at.as_ref().unwrap(),
        "{starts:?} {rec:#?}"
    );
    // Real durations: copying a file takes a module run, longer than a millisecond.
    assert!(
        tasks[0]["duration_ms"].as_u64().unwrap() > 0,
        "{results:#?}"
    );
    assert!(tasks.iter().all(|t| t["duration_ms"].is_u64()));
    assert_eq!(
        field(tasks[1], "skip_reason"),
        "Conditional result was False (when: do_it)"
    );
    assert_eq!(field(tasks[3], "msg"), "on purpose");
    assert_eq!(tasks[0]["diff"][0]["added"], json!(1), "{results:#?}");

    let items: Vec<&Value> = results.iter().filter(|r| r.get("item").is_some()).collect();
    let labels: Vec<&Value> = items.iter().map(|i| &i["item"]).collect();
    assert_eq!(labels, [&json!("alpha"), &json!("beta"), &json!("gamma")]);
    let item_starts: Vec<String> = items.iter().map(|i| field(i, "started_at")).collect();
    assert!(
        item_starts.windows(2).all(|w| w[0] < w[1]) && item_starts[0] >= starts[2],
        "{item_starts:?}"
    );
    assert!(items.iter().all(|i| i["changed"] == json!(true)));
    assert_eq!(rec.outputs["tasks"], json!(4));
    assert_eq!(rec.outputs["changed_tasks"], json!(2));

    // Messages carry the same start times and say it in words.
    let task_msgs: Vec<(&str, &str)> = rec
        .messages
        .iter()
        .filter(|m| m.level != Level::Warn && !m.text.contains("[item="))
        .map(|m| (m.at.as_str(), m.text.as_str()))
        .collect();
    // (The step's error is appended as the last message.)
    assert_eq!(task_msgs.len(), 5, "{task_msgs:#?}");
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(task_msgs[i].0, field(t, "started_at"));
    }
    let want = [
        "changed: write the file (localhost, ",
        "skipped: only when asked (localhost, ",
        "changed: add lines (localhost, ",
        "failed: boom (localhost, ",
    ];
    for (i, w) in want.iter().enumerate() {
        assert!(task_msgs[i].1.starts_with(w), "{w}: {task_msgs:#?}");
    }
    assert!(
        task_msgs[0]
            .1
            .contains(&format!("— diff {} +1 -0", path.display())),
        "{task_msgs:#?}"
    );
    assert!(task_msgs[1]
        .1
        .ends_with("): Conditional result was False (when: do_it)"));
    let item_msgs: Vec<&str> = rec
        .messages
        .iter()
        .filter(|m| m.text.contains("[item="))
        .map(|m| m.text.as_str())
        .collect();
    for (i, l) in ["alpha", "beta", "gamma"].iter().enumerate() {
        assert!(
            item_msgs[i].starts_with(&format!("changed: add lines [item={l}] (localhost, ")),
            "{item_msgs:#?}"
        );
    }
    // The playbook's own output stays in stdout.
    assert!(rec.stdout.contains("PLAY RECAP"), "{}", rec.stdout);
}

/// A play killed at the step's timeout still reports what it had changed by then.
#[tokio::test]
async fn ansible_timeout_names_the_changes_made_before_it() {
    if !ansible_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conf");
    let w = wf(
        "anstimeout",
        r#"
  inputs:
    path: { type: string }
  steps:
    - id: play
      uses: ansible
      timeout: 40s
      with:
        vars: { target_path: "{{ inputs.path }}" }
        tasks:
          - name: write the file
            ansible.builtin.copy: { content: "x\n", dest: "{{ target_path }}" }
          - name: hang
            ansible.builtin.command: { argv: [sleep, "300"] }
"#,
    );
    let r = run(w, json!({"path": path.to_str().unwrap()})).await;
    let rec = &recs(&r, "play")[0];
    assert_eq!(rec.status, StepStatus::TimedOut, "{rec:#?}");
    assert!(rec.changed, "{rec:#?}");
    assert!(path.exists());
    let err = rec.error.as_deref().unwrap();
    assert!(
        err.starts_with("timed out after")
            && err.ends_with("earlier changes kept, no automatic undo: `write the file`"),
        "{err}"
    );
    assert!(
        rec.messages
            .iter()
            .any(|m| m.text.starts_with("changed: write the file (localhost, ")),
        "{rec:#?}"
    );
}
