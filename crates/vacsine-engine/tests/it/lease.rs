//! One driver per run (issue 7, faults 1 and 2): a resume of a run still driven by a live
//! process is refused, naming the holder; once the holder is gone the run is taken over.
//! A resumed run gets the real values of its secrets, inputs and outputs (journaled sealed,
//! never in plain text), not the masked ones.

use crate::support::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vacsine_core::record::StepStatus;
use vacsine_engine::{Catalog, Engine, EngineError, Journal, RunRequest, RunStatus};

const SECRET: &str = "Pa55word-L0NGsecretTail";

/// A run whose middle step (idempotent) waits long; the last step writes the first step's
/// output and an input into a file. Both carry the secret.
const SPEC: &str = r#"
  inputs:
    dir: { type: string }
    dsn: { type: string }
  secrets:
    token: { env: VX_LEASE_TOKEN }
  steps:
    - id: first
      uses: command
      with: { argv: [printf, "%s", "{{ secrets.token }}"] }
      outputs: { tok: "{{ result.stdout }}" }
    - id: long
      uses: command
      needs: [first]
      idempotent: true
      with:
        argv:
          - sh
          - -c
          - 'if [ -e "$1/long-done" ]; then echo resumed; else touch "$1/long-done"; echo $$ > "$1/long-pid.tmp"; mv "$1/long-pid.tmp" "$1/long-pid"; exec sleep 60; fi'
          - sh
          - "{{ inputs.dir }}"
    - id: last
      uses: command
      needs: [long]
      with:
        argv: [sh, -c, 'printf "%s|%s" "$2" "$3" > "$1/out"', sh, "{{ inputs.dir }}", "{{ steps.first.outputs.tok }}", "{{ inputs.dsn }}"]
"#;

fn dsn() -> String {
    format!("postgres://app:{SECRET}@db/app")
}

/// Entry point of the child process (does nothing unless started by `start_child`).
#[tokio::test]
#[ignore = "child process of the lease tests"]
async fn lease_child() {
    let Ok(journal) = std::env::var("VX_LEASE_JOURNAL") else {
        return;
    };
    let dir = std::env::var("VX_LEASE_DIR").unwrap();
    let e = Engine::new(Journal::open(Path::new(&journal)).unwrap(), Catalog::new());
    let mut req = RunRequest::new(wf("leased", SPEC));
    req.inputs = inputs(json!({"dir": dir, "dsn": dsn()}));
    req.nodes = nodes(&[local("local")]);
    let _ = e.run(req).await;
}

struct Child {
    child: std::process::Child,
    dir: PathBuf,
}

impl Child {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("long-pid")) {
            let pid = nix::unistd::Pid::from_raw(pid.trim().parse().unwrap());
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start a child process driving the run; return once its long step runs.
fn start_child(dir: &Path, journal: &Path) -> Child {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "lease::lease_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VX_LEASE_JOURNAL", journal)
        .env("VX_LEASE_DIR", dir)
        .env("VX_LEASE_TOKEN", SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !dir.join("long-pid").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "child never reached the long step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Child {
        child,
        dir: dir.to_path_buf(),
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn resume_of_a_live_run_is_refused_then_taken_over_once_its_holder_dies() {
    // The test process reads the same secret when it resumes (secrets are re-read).
    std::env::set_var("VX_LEASE_TOKEN", SECRET);
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    let mut child = start_child(dir.path(), &journal);
    let pid = child.child.id();

    let e = Engine::new(Journal::open(&journal).unwrap(), Catalog::new());
    let run_id = e.journal().runs(1).unwrap()[0].id.clone();
    let before = e.journal().records(&run_id).unwrap();
    let err = e
        .resume(&run_id, nodes(&[local("local")]))
        .await
        .expect_err("a live run must not be resumed");
    assert!(matches!(err, EngineError::LeaseHeld { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("process {pid}")), "{msg}");
    assert_eq!(
        e.journal().records(&run_id).unwrap(),
        before,
        "the refused resume changed the journal"
    );
    assert!(!dir.path().join("out").exists());

    // The holder dies: the run is taken over at once (its process is gone on this host).
    child.kill();
    let r = e.resume(&run_id, nodes(&[local("local")])).await.unwrap();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    assert_eq!(recs(&r, "first").len(), 1, "finished step re-run");
    assert_eq!(status(&r, "long"), StepStatus::Succeeded);
    assert_eq!(recs(&r, "last").len(), 1);

    // The resumed step got the real values, not `***`.
    let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
    assert_eq!(out, format!("{SECRET}|{}", dsn()));
    // Records show them masked.
    let first = &recs(&r, "first")[0];
    assert_eq!(first.outputs["tok"], json!("***"));
    assert!(!first.stdout.contains(SECRET));

    // Nothing in the journal files holds the secret in plain text; they are private.
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", journal.display()));
        if let Ok(bytes) = std::fs::read(&p) {
            assert!(
                !contains(&bytes, SECRET),
                "{} holds the secret",
                p.display()
            );
            assert!(
                !contains(&bytes, "L0NGsecret"),
                "{} holds a part",
                p.display()
            );
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", p.display());
        }
    }
    let key = Journal::key_path(&journal);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn a_journal_copied_without_its_key_cannot_resume_with_secrets() {
    std::env::set_var("VX_LEASE_TOKEN", SECRET);
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.db");
    let mut child = start_child(dir.path(), &journal);
    child.kill();
    // Another key: the sealed inputs cannot be opened, and the error says why.
    std::fs::remove_file(Journal::key_path(&journal)).unwrap();
    let e = Engine::new(Journal::open(&journal).unwrap(), Catalog::new());
    let run_id = e.journal().runs(1).unwrap()[0].id.clone();
    let err = e
        .resume(&run_id, nodes(&[local("local")]))
        .await
        .expect_err("sealed values opened with another key");
    assert!(err.to_string().contains("cannot decrypt"), "{err}");
    assert!(!dir.path().join("out").exists());
}
