//! Issue 7, fault 8: a real `vacsine run` process receiving SIGINT or SIGTERM stops
//! scheduling, stops its running step's processes, journals the step `cancelled`, marks the
//! run `cancelled`, exits 130 or 143, and the run can then be resumed.

use crate::{root, text, vacsine, write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `first`, then `long` (idempotent; waits unless resumed), then `after`. `long` records
/// its shell's pid; with `ignore_term` it ignores SIGTERM (only SIGKILL stops it).
fn workflow(dir: &Path, ignore_term: bool) -> std::path::PathBuf {
    let trap = if ignore_term { "trap \"\" TERM; " } else { "" };
    write(
        dir,
        "wf.yaml",
        &format!(
            r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata: {{name: interruptible}}
spec:
  inputs:
    dir: {{type: string}}
  steps:
    - id: first
      uses: command
      with: {{argv: [sh, -c, 'echo ran >> "$1/first"', sh, "{{{{ inputs.dir }}}}"]}}
    - id: long
      uses: command
      needs: [first]
      idempotent: true
      with:
        argv:
          - sh
          - -c
          - '{trap}if [ -e "$1/pid" ]; then echo resumed; else echo $$ > "$1/pid.tmp"; mv "$1/pid.tmp" "$1/pid"; while :; do sleep 0.1; done; fi'
          - sh
          - "{{{{ inputs.dir }}}}"
    - id: after
      uses: command
      needs: [long]
      with: {{argv: [sh, -c, 'echo ran >> "$1/after"', sh, "{{{{ inputs.dir }}}}"]}}
"#
        ),
    )
}

fn start(dir: &Path, wf: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vacsine"))
        .args([
            "run",
            wf.to_str().unwrap(),
            "--input",
            &format!("dir={}", dir.display()),
        ])
        .current_dir(root())
        .env("VACSINE_HOME", dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vacsine run")
}

fn wait_for(p: &Path) -> u32 {
    let t = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            return s.trim().parse().unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the run never reached its long step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Wait for the process to exit; its exit code and how long it took.
fn wait_exit(child: &mut Child, limit: Duration) -> (Option<i32>, Duration) {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st.code(), t.elapsed());
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("vacsine did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn only_run(dir: &Path) -> serde_json::Value {
    let o = vacsine(&["runs", "--format", "json"], dir);
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    runs[0].clone()
}

fn records(dir: &Path, run_id: &str) -> Vec<serde_json::Value> {
    let o = vacsine(&["logs", run_id, "--format", "json"], dir);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn issue7_sigint_cancels_the_run_and_resume_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let wf = workflow(dir.path(), false);
    let mut child = start(dir.path(), &wf);
    let step_pid = wait_for(&dir.path().join("pid"));
    signal(child.id(), "INT");
    let (code, took) = wait_exit(&mut child, Duration::from_secs(15));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(4), "took {took:?} to stop");
    assert!(!alive(step_pid), "the step's process survived the cancel");
    assert!(err.contains("--resume"), "{err}");

    let run = only_run(dir.path());
    assert_eq!(run["status"], "cancelled", "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let recs = records(dir.path(), &id);
    let long: Vec<_> = recs.iter().filter(|r| r["step_id"] == "long").collect();
    assert_eq!(long.len(), 1);
    assert_eq!(long[0]["status"], "cancelled", "{recs:#?}");
    assert!(recs.iter().all(|r| r["step_id"] != "after"), "{recs:#?}");

    let o = vacsine(&["run", "--resume", &id], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let first = std::fs::read_to_string(dir.path().join("first")).unwrap();
    assert_eq!(first, "ran\n", "a finished step was re-run");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("after")).unwrap(),
        "ran\n"
    );
    assert_eq!(only_run(dir.path())["status"], "succeeded");
}

#[test]
fn issue7_second_sigterm_kills_a_step_that_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let wf = workflow(dir.path(), true);
    let mut child = start(dir.path(), &wf);
    let step_pid = wait_for(&dir.path().join("pid"));
    signal(child.id(), "TERM");
    std::thread::sleep(Duration::from_millis(500));
    // The step ignores SIGTERM: still running within the grace period.
    assert!(alive(step_pid));
    assert!(child.try_wait().unwrap().is_none());
    signal(child.id(), "TERM");
    let (code, took) = wait_exit(&mut child, Duration::from_secs(15));
    assert_eq!(code, Some(143));
    assert!(
        took < Duration::from_secs(3),
        "a second signal must not wait for the grace period ({took:?})"
    );
    assert!(
        !alive(step_pid),
        "the step's process survived the second signal"
    );
    let run = only_run(dir.path());
    assert_eq!(run["status"], "cancelled", "{run}");
    let recs = records(dir.path(), run["id"].as_str().unwrap());
    let long = recs.iter().find(|r| r["step_id"] == "long").unwrap();
    assert_eq!(long["status"], "cancelled", "{long}");
}
