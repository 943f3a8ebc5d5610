//! Crash and resume: a child process runs a workflow against a journal file and is killed with
//! SIGKILL in the middle of a long step; the run is then resumed from the journal.

use crate::support::*;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vacsine_core::record::StepStatus;
use vacsine_engine::executor::{ExecCtx, Executor, StepResult};
use vacsine_engine::{Catalog, Engine, EngineError, Journal, RunRequest, RunStatus};

fn spec(idempotent: bool) -> String {
    format!(
        r#"
  inputs:
    dir: {{ type: string }}
  steps:
    - id: first
      uses: command
      with: {{ argv: [sh, -c, 'echo ran >> "$1/first"', sh, "{{{{ inputs.dir }}}}"] }}
    - id: long
      uses: command
      needs: [first]
      idempotent: {idempotent}
      with:
        argv:
          - sh
          - -c
          - 'if [ -e "$1/long-done" ]; then echo resumed; else touch "$1/long-done"; echo $$ > "$1/long-pid.tmp"; mv "$1/long-pid.tmp" "$1/long-pid"; exec sleep 30; fi'
          - sh
          - "{{{{ inputs.dir }}}}"
    - id: after
      uses: command
      needs: [long]
      with: {{ argv: [sh, -c, 'echo ran >> "$1/after"', sh, "{{{{ inputs.dir }}}}"] }}
"#
    )
}

/// A test executor that journals the prior content, changes the file, then takes long: a
/// crash in the middle leaves a changed file and a step still `running`.
struct SlowWrite;

#[async_trait::async_trait]
impl Executor for SlowWrite {
    fn name(&self) -> &'static str {
        "slow-write"
    }
    fn summary(&self) -> &'static str {
        "test: journal, change a file, then take long"
    }
    fn args_schema(&self, _g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "object"})
    }
    fn idempotent(&self) -> bool {
        false
    }
    fn check_args(&self, _args: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
    async fn run(&self, ctx: &ExecCtx, args: serde_json::Value) -> StepResult {
        let path = args["path"].as_str().unwrap().to_string();
        let prior = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = ctx.save_undo(&json!({"path": path, "prior": prior})) {
            return StepResult::failed(e);
        }
        std::fs::write(&path, args["content"].as_str().unwrap()).unwrap();
        std::fs::write(format!("{path}.changed"), "").unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        StepResult::ok(true)
    }
    async fn undo(&self, _ctx: &ExecCtx, undo: serde_json::Value) -> StepResult {
        std::fs::write(
            undo["path"].as_str().unwrap(),
            undo["prior"].as_str().unwrap(),
        )
        .unwrap();
        StepResult::ok(true)
    }
}

const SLOW_SPEC: &str = r#"
  inputs:
    dir: { type: string }
  steps:
    - id: change
      uses: slow-write
      with: { path: "{{ inputs.dir }}/conf", content: "changed\n" }
"#;

/// Entry point of the child process (does nothing unless started by `crash_with`).
#[tokio::test]
#[ignore = "child process of the crash tests"]
async fn child_runner() {
    let Ok(journal) = std::env::var("VX_RESUME_JOURNAL") else {
        return;
    };
    let dir = std::env::var("VX_RESUME_DIR").unwrap();
    let mode = std::env::var("VX_RESUME_IDEMPOTENT").unwrap();
    let mut e = Engine::new(Journal::open(Path::new(&journal)).unwrap(), Catalog::new());
    e.register(Arc::new(SlowWrite));
    let w = match mode.as_str() {
        "slow-write" => wf("slow", SLOW_SPEC),
        m if m.starts_with("retry-") => {
            let (attempts, succeed_at) = m["retry-".len()..].split_once('-').unwrap();
            wf("retry", &retry_spec(attempts, succeed_at))
        }
        m => wf("crashy", &spec(m == "true")),
    };
    let mut req = RunRequest::new(w);
    req.inputs = inputs(json!({"dir": dir}));
    req.nodes = nodes(&[local("local")]);
    let _ = e.run(req).await;
}

fn crash(dir: &Path, journal: &Path, idempotent: bool) -> String {
    crash_with(dir, journal, &idempotent.to_string(), "long-pid", "long")
}

fn crash_with(dir: &Path, journal: &Path, mode: &str, wait_for: &str, step: &str) -> String {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "resume::child_runner",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VX_RESUME_JOURNAL", journal)
        .env("VX_RESUME_DIR", dir)
        .env("VX_RESUME_IDEMPOTENT", mode)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !dir.join(wait_for).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "child never reached the long step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The long step's process group outlives its killed parent: clean it up.
    if let Ok(pid) = std::fs::read_to_string(dir.join("long-pid")) {
        let pid = nix::unistd::Pid::from_raw(pid.trim().parse().unwrap());
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let j = Journal::open(journal).unwrap();
    let runs = j.runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Running);
    let recs = j.records(&runs[0].id).unwrap();
    let long: Vec<_> = recs.iter().filter(|r| r.step_id == step).collect();
    assert_eq!(long.len(), 1);
    assert_eq!(
        long[0].status,
        StepStatus::Running,
        "journaled before the step started"
    );
    runs[0].id.clone()
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn crash_and_resume_non_idempotent_step_is_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    let run_id = crash(dir.path(), &journal, false);
    let e = Engine::new(Journal::open(&journal).unwrap(), Catalog::new());
    let r = e.resume(&run_id, nodes(&[local("local")])).await.unwrap();
    assert_eq!(r.status, RunStatus::Interrupted, "{r:#?}");
    let msg = r.message.clone().unwrap();
    assert!(
        msg.contains("step `long`") && msg.contains("not idempotent"),
        "{msg}"
    );
    assert_eq!(recs(&r, "first").len(), 1, "finished step re-run");
    assert_eq!(status(&r, "first"), StepStatus::Succeeded);
    let long = recs(&r, "long");
    assert_eq!(long.len(), 1);
    assert_eq!(long[0].status, StepStatus::Interrupted);
    assert!(long[0]
        .error
        .as_deref()
        .unwrap()
        .contains("not re-run automatically"));
    assert!(recs(&r, "after").is_empty());
    assert_eq!(lines(&dir.path().join("first")), 1);
    assert_eq!(lines(&dir.path().join("after")), 0);
    // The journal agrees, and the run cannot be resumed twice.
    assert_eq!(
        e.journal().run(&run_id).unwrap().unwrap().status,
        RunStatus::Interrupted
    );
    let err = e
        .resume(&run_id, nodes(&[local("local")]))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidState { .. }), "{err}");
}

#[tokio::test]
async fn crash_and_resume_idempotent_step_is_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    let run_id = crash(dir.path(), &journal, true);
    let e = Engine::new(Journal::open(&journal).unwrap(), Catalog::new());
    let r = e.resume(&run_id, nodes(&[local("local")])).await.unwrap();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    assert_eq!(recs(&r, "first").len(), 1);
    let long: Vec<_> = recs(&r, "long")
        .iter()
        .map(|x| (x.attempt, x.status, x.stdout.clone()))
        .collect();
    assert_eq!(
        long,
        vec![
            (1, StepStatus::Interrupted, String::new()),
            (2, StepStatus::Succeeded, "resumed\n".to_string())
        ]
    );
    assert_eq!(status(&r, "after"), StepStatus::Succeeded);
    assert_eq!(lines(&dir.path().join("first")), 1);
    assert_eq!(lines(&dir.path().join("after")), 1);
}

#[tokio::test]
async fn crash_mid_change_still_rolls_back_to_the_true_prior_state() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    let conf = dir.path().join("conf");
    std::fs::write(&conf, "original\n").unwrap();
    let run_id = crash_with(dir.path(), &journal, "slow-write", "conf.changed", "change");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "changed\n");
    let mut e = Engine::new(Journal::open(&journal).unwrap(), Catalog::new());
    e.register(Arc::new(SlowWrite));
    let r = e.resume(&run_id, nodes(&[local("local")])).await.unwrap();
    assert_eq!(r.status, RunStatus::Interrupted);
    let rb = e.rollback(&run_id, nodes(&[local("local")])).await.unwrap();
    assert_eq!(rb.status, RunStatus::RolledBack, "{rb:#?}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "original\n");
    let ids: Vec<_> = rb
        .records
        .iter()
        .map(|r| (r.step_id.as_str(), r.status))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("change", StepStatus::RolledBack),
            ("undo:change", StepStatus::Succeeded)
        ]
    );
}

/// A step that fails its first attempt(s), with a long backoff: the process is killed while it
/// waits to retry. (The backoff applies after the resumed attempts too, so the cases below
/// need at most one more attempt.)
fn retry_spec(attempts: &str, succeed_at: &str) -> String {
    format!(
        r#"
  inputs:
    dir: {{ type: string }}
  steps:
    - id: flaky
      uses: script
      retry: {{ attempts: {attempts}, backoff: 60s }}
      with:
        env: {{ DIR: "{{{{ inputs.dir }}}}" }}
        script: |
          n=$(cat "$DIR/n" 2>/dev/null || echo 0)
          n=$((n+1))
          echo $n > "$DIR/n"
          echo "attempt $n"
          [ $n -ge {succeed_at} ]
    - id: after
      uses: command
      needs: [flaky]
      with: {{ argv: [sh, -c, 'echo ran >> "$1/after"', sh, "{{{{ inputs.dir }}}}"] }}
"#
    )
}

/// Data-driven: (retry attempts, attempt that succeeds, run status after resume, `flaky`
/// records after resume, `after` ran). The child is killed during the backoff after attempt 1 failed.
#[tokio::test]
async fn resume_between_attempts_goes_on_retrying() {
    use StepStatus::*;
    type Case<'a> = (
        &'a str,
        &'a str,
        RunStatus,
        &'a [(u32, StepStatus, &'a str)],
        usize,
    );
    let cases: &[Case] = &[
        (
            "3",
            "2",
            RunStatus::Succeeded,
            &[(1, Failed, "attempt 1\n"), (2, Succeeded, "attempt 2\n")],
            1,
        ),
        (
            "2",
            "99",
            RunStatus::Failed,
            &[(1, Failed, "attempt 1\n"), (2, Failed, "attempt 2\n")],
            0,
        ),
    ];
    for (i, (attempts, succeed_at, run_status, flaky, after)) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal.db");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "resume::child_runner",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VX_RESUME_JOURNAL", &journal)
            .env("VX_RESUME_DIR", dir.path())
            .env(
                "VX_RESUME_IDEMPOTENT",
                format!("retry-{attempts}-{succeed_at}"),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the failed first attempt is journaled (the child then sleeps 60s).
        let t = Instant::now();
        let run_id = loop {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "case {i}: first attempt never journaled"
            );
            std::thread::sleep(Duration::from_millis(20));
            if !journal.exists() {
                continue;
            }
            let Ok(j) = Journal::open(&journal) else {
                continue;
            };
            let Some(run) = j.runs(1).ok().and_then(|r| r.into_iter().next()) else {
                continue;
            };
            let failed = j
                .records(&run.id)
                .map(|r| r.iter().any(|x| x.step_id == "flaky" && x.status == Failed))
                .unwrap_or(false);
            if failed {
                break run.id;
            }
        };
        child.kill().unwrap(); // SIGKILL, during the backoff
        child.wait().unwrap();
        let e = Engine::new(Journal::open(&journal).unwrap(), Catalog::new());
        assert_eq!(
            e.journal().run(&run_id).unwrap().unwrap().status,
            RunStatus::Running
        );
        let t = Instant::now();
        let r = e.resume(&run_id, nodes(&[local("local")])).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "case {i}: {:?}",
            t.elapsed()
        );
        assert_eq!(r.status, *run_status, "case {i}: {r:#?}");
        let got: Vec<(u32, StepStatus, &str)> = recs(&r, "flaky")
            .iter()
            .map(|x| (x.attempt, x.status, x.stdout.as_str()))
            .collect();
        assert_eq!(got, *flaky, "case {i}");
        assert_eq!(lines(&dir.path().join("after")), *after, "case {i}");
    }
}
