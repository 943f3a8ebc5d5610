//! The `ansible` executor with a real `ansible-playbook` (ansible-core) on the local host.

use crate::support::*;
use serde_json::json;
use vacsine_core::record::StepStatus;
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
