//! Regression tests of issue 7 on the local node: files behind symbolic links and on mount
//! points, commands with large output, and background processes left by a step.

use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};
use vacsine_core::record::StepStatus;

fn texts(r: &vacsine_engine::RunReport, id: &str) -> String {
    recs(r, id)
        .iter()
        .flat_map(|x| x.messages.iter().map(|m| m.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Issue 7: a command writing more than the 8 MiB read cap was killed by SIGPIPE halfway.
/// Output past the cap is drained and dropped, the count of dropped bytes recorded.
#[tokio::test]
async fn issue_7_command_with_20_mib_of_output_runs_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("done");
    let w = wf(
        "big",
        r#"
  inputs:
    marker: { type: string }
  steps:
    - id: big
      uses: command
      with: { argv: [sh, -c, 'head -c 20971520 /dev/zero && touch "$1"', sh, "{{ inputs.marker }}"] }
"#,
    );
    let r = run(w, json!({"marker": marker.to_str()})).await;
    let rec = &recs(&r, "big")[0];
    assert_eq!(rec.status, StepStatus::Succeeded, "{:?}", rec.error);
    assert!(marker.exists(), "the command stopped halfway");
    let msgs = texts(&r, "big");
    assert!(
        msgs.contains(&format!("stdout: {} bytes dropped", 20971520 - 8388608)),
        "{msgs}"
    );
}

/// Issue 7: a step leaving a background process: the process survived and the output the step
/// had printed was discarded. When the main process ends, its process group is ended too and
/// the output is kept.
#[tokio::test]
async fn issue_7_background_child_is_ended_and_output_kept() {
    let w = wf(
        "bg",
        r#"
  steps:
    - id: bg
      uses: command
      with: { argv: [sh, -c, 'sleep 300 & echo "pid $!"; echo hello'] }
"#,
    );
    let t = Instant::now();
    let r = run(w, json!({})).await;
    let took = t.elapsed();
    assert_eq!(status(&r, "bg"), StepStatus::Succeeded, "{r:#?}");
    let out = stdout(&r, "bg");
    assert!(out.contains("hello\n"), "output lost: {out:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let pid: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {out:?}"));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !process_gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        process_gone(pid),
        "background sleep {pid} survived the step"
    );
}
