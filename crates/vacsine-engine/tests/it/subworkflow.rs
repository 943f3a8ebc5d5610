//! Sub-workflows: their own compensation when they fail, `timeout` over the whole sub-run,
//! and `Engine::rollback` of a parent undoing what its sub-workflows changed.

use crate::support::*;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};
use vacsine_core::record::StepStatus;
use vacsine_engine::{Catalog, Engine, Journal, RunRequest, RunStatus};

/// The child: changes a file, then (maybe) fails or takes long; its rollback steps log in
/// reverse declaration order what they see.
const CHILD: &str = r#"
  inputs:
    dir: { type: string }
    mode: { type: string }
  steps:
    - id: write
      uses: file
      with: { path: "{{ inputs.dir }}/child.conf", content: "child\n" }
    - id: work
      uses: command
      needs: [write]
      with:
        argv:
          - sh
          - -c
          - 'case "$2" in fail) exit 1;; slow) sleep 60 & echo $! > "$1/pid"; wait;; esac'
          - sh
          - "{{ inputs.dir }}"
          - "{{ inputs.mode }}"
    - id: after
      uses: command
      needs: [work]
      with: { argv: ["true"] }
  rollback:
    - id: first
      uses: command
      with: { argv: [sh, -c, 'echo "child first" >> "$1/log"', sh, "{{ inputs.dir }}"] }
    - id: second
      uses: command
      with: { argv: [sh, -c, 'echo "child second saw $2 $3" >> "$1/log"', sh, "{{ inputs.dir }}", "{{ steps.work.status }}", "{{ inputs.mode }}"] }
"#;

/// The parent: changes its own file, then calls the child (with `timeout` when given).
fn parent(timeout: &str) -> String {
    format!(
        r#"
  inputs:
    dir: {{ type: string }}
    mode: {{ type: string }}
  steps:
    - id: mine
      uses: file
      with: {{ path: "{{{{ inputs.dir }}}}/parent.conf", content: "parent\n" }}
    - id: sub
      uses: workflow
      needs: [mine]
      {timeout}
      with: {{ workflow: child, inputs: {{ dir: "{{{{ inputs.dir }}}}", mode: "{{{{ inputs.mode }}}}" }} }}
  rollback:
    - id: note
      uses: command
      with: {{ argv: [sh, -c, 'echo "parent saw $2" >> "$1/log"', sh, "{{{{ inputs.dir }}}}", "{{{{ steps.sub.status }}}}"] }}
"#
    )
}

fn engine_with_child() -> Engine {
    Engine::new(
        Journal::in_memory().unwrap(),
        [wf("child", CHILD)].into_iter().collect::<Catalog>(),
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Data-driven: (timeout line, mode, run status, records in order, log written by rollback
/// steps). Files are written as "before\n" first and must be back to that after a failure.
#[tokio::test]
async fn failed_sub_workflow_is_compensated_before_its_parent() {
    use StepStatus::*;
    type Case<'a> = (
        &'a str,
        &'a str,
        RunStatus,
        &'a [(&'a str, StepStatus)],
        &'a str,
    );
    let cases: &[Case] = &[
        (
            "",
            "ok",
            RunStatus::Succeeded,
            &[
                ("mine", Succeeded),
                ("sub", Succeeded),
                ("sub/write", Succeeded),
                ("sub/work", Succeeded),
                ("sub/after", Succeeded),
            ],
            "",
        ),
        (
            "",
            "fail",
            RunStatus::Failed,
            &[
                ("mine", RolledBack),
                ("sub", Failed),
                ("sub/write", RolledBack),
                ("sub/work", Failed),
                ("sub/after", Skipped),
                ("sub/undo:write", Succeeded),
                ("sub/rollback:second", Succeeded),
                ("sub/rollback:first", Succeeded),
                ("undo:mine", Succeeded),
                ("rollback:note", Succeeded),
            ],
            "child second saw failed fail\nchild first\nparent saw failed\n",
        ),
        (
            "timeout: 600ms",
            "slow",
            RunStatus::Failed,
            &[
                ("mine", RolledBack),
                ("sub", TimedOut),
                ("sub/write", RolledBack),
                ("sub/work", TimedOut),
                ("sub/after", Cancelled),
                ("sub/undo:write", Succeeded),
                ("sub/rollback:second", Succeeded),
                ("sub/rollback:first", Succeeded),
                ("undo:mine", Succeeded),
                ("rollback:note", Succeeded),
            ],
            "child second saw timed_out slow\nchild first\nparent saw timed_out\n",
        ),
        (
            // A generous timeout changes nothing.
            "timeout: 30s",
            "ok",
            RunStatus::Succeeded,
            &[
                ("mine", Succeeded),
                ("sub", Succeeded),
                ("sub/write", Succeeded),
                ("sub/work", Succeeded),
                ("sub/after", Succeeded),
            ],
            "",
        ),
    ];
    for (i, (timeout, mode, run_status, expected, log)) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["parent.conf", "child.conf"] {
            std::fs::write(d.join(f), "before\n").unwrap();
        }
        let t = Instant::now();
        let r = run_on(
            &engine_with_child(),
            wf("parent", &parent(timeout)),
            json!({"dir": d.to_str().unwrap(), "mode": mode}),
        )
        .await;
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "case {i}: {:?}",
            t.elapsed()
        );
        assert_eq!(r.status, *run_status, "case {i}: {r:#?}");
        let got: Vec<(&str, StepStatus)> = r
            .records
            .iter()
            .map(|x| (x.step_id.as_str(), x.status))
            .collect();
        assert_eq!(got, *expected, "case {i}");
        assert_eq!(read(&d.join("log")), *log, "case {i}");
        let want = if *run_status == RunStatus::Succeeded {
            ("parent\n", "child\n")
        } else {
            ("before\n", "before\n")
        };
        assert_eq!(
            (
                read(&d.join("parent.conf")).as_str(),
                read(&d.join("child.conf")).as_str()
            ),
            want,
            "case {i}"
        );
        assert_eq!(r.changed, *run_status == RunStatus::Succeeded, "case {i}");
        if *mode == "slow" {
            let sub = &recs(&r, "sub")[0];
            assert!(
                sub.error
                    .as_deref()
                    .unwrap()
                    .contains("timed out after 600ms"),
                "case {i}: {sub:#?}"
            );
            let work = &recs(&r, "sub/work")[0];
            assert!(
                work.error.as_deref().unwrap().contains("timed out"),
                "case {i}: {work:#?}"
            );
            // The sub-run's running process was killed like any timed-out step's.
            let pid: u32 = read(&d.join("pid")).trim().parse().unwrap();
            let mut gone = false;
            for _ in 0..100 {
                if process_gone(pid) {
                    gone = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                gone,
                "case {i}: sleep {pid} survived the sub-workflow timeout"
            );
        }
    }
}

#[tokio::test]
async fn rollback_of_a_succeeded_parent_undoes_its_sub_workflow_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let original = b"line one\n\x00binary\xfflast, no newline".to_vec();
    std::fs::write(d.join("child.conf"), &original).unwrap();
    std::fs::write(d.join("parent.conf"), "before\n").unwrap();
    let e = engine_with_child();
    let mut req = RunRequest::new(wf("parent", &parent("")));
    req.inputs = inputs(json!({"dir": d.to_str().unwrap(), "mode": "ok"}));
    req.nodes = nodes(&[local("local")]);
    let r = e.run(req).await.unwrap();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    assert_eq!(read(&d.join("child.conf")), "child\n");

    let rb = e
        .rollback(&r.run_id, nodes(&[local("local")]))
        .await
        .unwrap();
    assert_eq!(rb.status, RunStatus::RolledBack, "{rb:#?}");
    assert_eq!(std::fs::read(d.join("child.conf")).unwrap(), original);
    assert_eq!(read(&d.join("parent.conf")), "before\n");
    let undo: Vec<(&str, StepStatus)> = rb
        .records
        .iter()
        .filter(|x| x.step_id.contains("undo:"))
        .map(|x| (x.step_id.as_str(), x.status))
        .collect();
    assert_eq!(
        undo,
        vec![
            ("undo:sub/write", StepStatus::Succeeded),
            ("undo:mine", StepStatus::Succeeded)
        ]
    );
    assert_eq!(status(&rb, "sub/write"), StepStatus::RolledBack);
    // The parent's rollback steps ran (the run had not failed); the child's did not, as a
    // succeeded sub-workflow is undone through its undo data only.
    assert_eq!(read(&d.join("log")), "parent saw succeeded\n");
}
