//! The file executor (changed/unchanged, undo byte for byte) and compensation order.

use crate::support::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use vacsine_core::record::StepStatus;
use vacsine_engine::{Catalog, Engine, Journal, RunRequest, RunStatus};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

const FILE_SPEC: &str = r#"
  inputs:
    path: { type: string }
  steps:
    - id: root-login
      uses: file
      with:
        path: "{{ inputs.path }}"
        regexp: "^#?PermitRootLogin"
        line: PermitRootLogin no
    - id: mode
      uses: file
      needs: [root-login]
      with: { path: "{{ inputs.path }}", mode: "0600" }
"#;

#[tokio::test]
async fn file_reports_changed_accurately_and_undo_restores_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sshd_config");
    let original = b"Port 22\n#PermitRootLogin yes\nX11Forwarding no".to_vec(); // no final newline
    std::fs::write(&path, &original).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = engine();
    let p = json!({"path": path.to_str().unwrap()});

    let r1 = run_on(&e, wf("file", FILE_SPEC), p.clone()).await;
    assert_eq!(r1.status, RunStatus::Succeeded, "{r1:#?}");
    assert!(r1.changed);
    assert!(recs(&r1, "root-login")[0].changed && recs(&r1, "mode")[0].changed);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "Port 22\nPermitRootLogin no\nX11Forwarding no\n"
    );
    assert_eq!(mode(&path), 0o600);

    // Second application: nothing to change (idempotence).
    let r2 = run_on(&e, wf("file", FILE_SPEC), p.clone()).await;
    assert_eq!(r2.status, RunStatus::Succeeded);
    assert!(!r2.changed, "{r2:#?}");
    assert!(r2.records.iter().all(|x| !x.changed));

    // Roll back the first run: original bytes and mode.
    let rb = e
        .rollback(&r1.run_id, nodes(&[local("local")]))
        .await
        .unwrap();
    assert_eq!(rb.status, RunStatus::RolledBack, "{rb:#?}");
    assert_eq!(std::fs::read(&path).unwrap(), original);
    assert_eq!(mode(&path), 0o644);
    let ids: Vec<(&str, StepStatus)> = rb
        .records
        .iter()
        .map(|x| (x.step_id.as_str(), x.status))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("root-login", StepStatus::RolledBack),
            ("mode", StepStatus::RolledBack),
            ("undo:mode", StepStatus::Succeeded),
            ("undo:root-login", StepStatus::Succeeded),
        ]
    );
    // Rolling back again is a no-op.
    let again = e
        .rollback(&r1.run_id, nodes(&[local("local")]))
        .await
        .unwrap();
    assert_eq!(again.records.len(), 4);
}

#[tokio::test]
async fn file_content_absent_and_creation_undo() {
    let dir = tempfile::tempdir().unwrap();
    let created = dir.path().join("new.conf");
    let doomed = dir.path().join("doomed");
    std::fs::write(&doomed, b"\x00\x01binary\xff").unwrap();
    std::fs::set_permissions(&doomed, std::fs::Permissions::from_mode(0o751)).unwrap();
    let spec = r#"
  inputs:
    created: { type: string }
    doomed: { type: string }
  steps:
    - id: create
      uses: file
      with: { path: "{{ inputs.created }}", content: "a=1\n", mode: "0640" }
    - id: remove
      uses: file
      with: { path: "{{ inputs.doomed }}", state: absent }
"#;
    let e = engine();
    let i = json!({"created": created.to_str().unwrap(), "doomed": doomed.to_str().unwrap()});
    let r = run_on(&e, wf("content", spec), i.clone()).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    assert_eq!(std::fs::read_to_string(&created).unwrap(), "a=1\n");
    assert_eq!(mode(&created), 0o640);
    assert!(!doomed.exists());
    let r2 = run_on(&e, wf("content", spec), i).await;
    assert!(!r2.changed, "{r2:#?}");
    e.rollback(&r.run_id, nodes(&[local("local")]))
        .await
        .unwrap();
    assert!(!created.exists());
    assert_eq!(std::fs::read(&doomed).unwrap(), b"\x00\x01binary\xff");
    assert_eq!(mode(&doomed), 0o751);
}

#[tokio::test]
async fn failed_run_undoes_changes_then_runs_rollback_steps_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let (f1, f2, log) = (
        dir.path().join("one"),
        dir.path().join("two"),
        dir.path().join("log"),
    );
    std::fs::write(&f2, "before\n").unwrap();
    let spec = r#"
  inputs:
    f1: { type: string }
    f2: { type: string }
    log: { type: string }
  steps:
    - id: one
      uses: file
      with: { path: "{{ inputs.f1 }}", content: "one\n" }
    - id: two
      uses: file
      needs: [one]
      with: { path: "{{ inputs.f2 }}", content: "after\n" }
    - id: boom
      uses: command
      needs: [two]
      with: { argv: ["false"] }
  rollback:
    - id: first-declared
      uses: command
      with: { argv: [sh, -c, 'echo first >> "$1"', sh, "{{ inputs.log }}"] }
    - id: second-declared
      uses: command
      with: { argv: [sh, -c, 'echo "second saw $2" >> "$1"', sh, "{{ inputs.log }}", "{{ steps.boom.status }}"] }
"#;
    let e = Engine::new(Journal::in_memory().unwrap(), Catalog::new());
    let mut req = RunRequest::new(wf("comp", spec));
    req.inputs = inputs(json!({"f1": f1.to_str(), "f2": f2.to_str(), "log": log.to_str()}));
    req.nodes = nodes(&[local("l")]);
    let r = e.run(req).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert!(
        r.message.as_deref().unwrap().contains("boom"),
        "{:?}",
        r.message
    );
    let order: Vec<(&str, StepStatus)> = r
        .records
        .iter()
        .map(|x| (x.step_id.as_str(), x.status))
        .collect();
    assert_eq!(
        order,
        vec![
            ("one", StepStatus::RolledBack),
            ("two", StepStatus::RolledBack),
            ("boom", StepStatus::Failed),
            ("undo:two", StepStatus::Succeeded),
            ("undo:one", StepStatus::Succeeded),
            ("rollback:second-declared", StepStatus::Succeeded),
            ("rollback:first-declared", StepStatus::Succeeded),
        ]
    );
    assert!(!f1.exists());
    assert_eq!(std::fs::read_to_string(&f2).unwrap(), "before\n");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "second saw failed\nfirst\n"
    );
    assert!(!r.changed);
}
