//! Issue 15: a job of every kind (a workflow, an enforce job, one step of a run spanning
//! sites, a registry document) altered in the orchestrator's store after it was signed is
//! refused by the agent: nothing of it runs (checked where it would have run: a marker file
//! on this machine, the target container's file mode), and the run fails naming the reason.
//! On SQLite, and on PostgreSQL when `VACSINE_TEST_PG` is set (always in CI).

use super::{run_records, status_final, submit, text, wait_until, workflow, Agent, Orch, TestDb};
use crate::enforce_site::{files, start_node};
use crate::{docker, docker_available};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The orchestrator's store, as someone with write access to it reaches it.
pub(super) enum Store {
    Sqlite(PathBuf),
    Pg(String),
}

impl Store {
    /// Run `sql` (one statement altering rows); the number of rows it changed.
    pub(super) fn alter(&self, sql: &str) -> u64 {
        match self {
            Store::Sqlite(db) => {
                // Waits for the orchestrator's own writes, as a person's sqlite3 would with
                // `.timeout`.
                let o = Command::new("sqlite3")
                    .args(["-cmd", ".timeout 10000"])
                    .arg(db)
                    .arg(format!("{sql}; SELECT changes();"))
                    .output()
                    .expect("the `sqlite3` tool is needed by this test (apt-get install sqlite3)");
                assert!(o.status.success(), "sqlite3 {sql}: {}", text(&o));
                String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
            }
            Store::Pg(url) => {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async {
                    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    let h = tokio::spawn(conn);
                    c.batch_execute("SET search_path TO vacsine").await.unwrap();
                    let n = c.execute(sql, &[]).await.unwrap();
                    drop(c);
                    let _ = h.await;
                    n
                })
            }
        }
    }
}

/// `UPDATE signed_jobs` replacing `from` by `to` in the payloads that hold `from`.
fn alter_signed(store: &Store, from: &str, to: &str) -> u64 {
    store.alter(&format!(
        "UPDATE signed_jobs SET payload = replace(payload, '{from}', '{to}') WHERE payload LIKE '%{from}%'"
    ))
}

const STEP_AT_SITE: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: t-span
spec:
  steps:
    - id: there
      uses: command
      runsOn: edge-t
      timeout: 120s
      with:
        argv: ["sh", "-c", "echo step-safe"]
"#;

const GREET: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: t-greet
spec:
  steps:
    - id: say
      uses: command
      with:
        argv: ["sh", "-c", "echo reg-safe"]
"#;

fn every_kind_altered_in_the_store_is_refused(o: &Orch, store: &Store, dir: &Path) {
    let key = o.site("edge-t");
    let adata = dir.join("agent");
    // Enrolled (the bundle key pinned), then away while the work is queued and altered.
    let mut a = Agent::start(o, &key, "edge-t-1", &adata);
    a.kill9();

    // A workflow job.
    let ran_wf = dir.join("ran-workflow");
    let wf = workflow(dir, "t-wf", &[("only", "echo wf-safe")]);
    let r_wf = submit(o, &wf, "edge-t");
    let touch_wf = format!("touch {}", ran_wf.display());
    assert_eq!(alter_signed(store, "echo wf-safe", &touch_wf), 1);

    // An enforce job on this test's own container (a file mode 0666 that the policy fixes to
    // 0640): altered to set 0600. Refused, the file keeps its mode.
    let node = docker_available().then(start_node);
    let r_enf = node.as_ref().map(|n| {
        let (policy, target) = files(dir, n);
        let v = o.json(&[
            "enforce", "--site", "edge-t", "--policy", &policy, "--target", &target, "--detach",
            "--format", "json",
        ]);
        let id = v["run_id"].as_str().unwrap().to_string();
        assert!(alter_signed(store, "0640", "0600") >= 1);
        id
    });

    // One step of a run spanning sites: the orchestrator queues it, signed, for edge-t.
    let ran_step = dir.join("ran-step");
    let span = dir.join("t-span.yaml");
    std::fs::write(&span, STEP_AT_SITE).unwrap();
    let r_span = submit(o, &span, "edge-t");
    let touch_step = format!("touch {}", ran_step.display());
    wait_until(Duration::from_secs(30), "the step's job queued", || {
        (alter_signed(store, "echo step-safe", &touch_step) == 1).then_some(())
    });

    // A registry document altered after it was pushed (content and SHA-256 together).
    let greet = dir.join("t-greet.yaml");
    std::fs::write(&greet, GREET).unwrap();
    o.json(&["push", greet.to_str().unwrap(), "--format", "json"]);
    let ran_reg = dir.join("ran-registry");
    let n = store.alter(&format!(
        "UPDATE registry SET document = replace(document, 'echo reg-safe', 'touch {}'), sha256 = 'sha256:{}' WHERE name = 't-greet'",
        ran_reg.display(),
        "0".repeat(64)
    ));
    assert_eq!(n, 1);
    // The orchestrator signs no job with it…
    let refused = o.cli(&["run", "t-greet", "--site", "edge-t", "--detach"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("registry Workflow `t-greet` version 1"),
        "{}",
        text(&refused)
    );

    let a = Agent::start(o, &key, "edge-t-1", &adata);
    let ids: Vec<&str> = [Some(r_wf.as_str()), r_enf.as_deref(), Some(r_span.as_str())]
        .into_iter()
        .flatten()
        .collect();
    let runs = wait_until(Duration::from_secs(150), "every run to end", || {
        let v: Vec<_> = ids.iter().map(|id| o.run(id)).collect();
        v.iter().all(status_final).then_some(v)
    });
    for r in &runs {
        assert_eq!(r["status"], "failed", "{r}\nagent:\n{}", a.log());
    }
    // The workflow job: refused, named, nothing ran.
    let m = runs[0]["message"].as_str().unwrap_or_default();
    assert!(m.contains("signature does not verify"), "{}", runs[0]);
    assert!(!ran_wf.exists(), "the altered workflow job ran");
    assert!(run_records(o, &r_wf).is_empty());
    // The enforce job: refused, and the target node untouched.
    if let (Some(n), Some(id)) = (&node, &r_enf) {
        let r = o.run(id);
        assert!(
            r["message"]
                .as_str()
                .unwrap_or_default()
                .contains("signature does not verify"),
            "{r}"
        );
        let mode = docker(&["exec", &n.node(), "stat", "-c", "%a", "/etc/es-secret"]);
        assert_eq!(
            mode.trim(),
            "666",
            "the altered enforce job changed the target"
        );
        assert!(
            run_records(o, id).is_empty(),
            "no step of the enforce job ran"
        );
    }
    // The step: refused at the site, the run spanning sites fails naming why.
    assert!(!ran_step.exists(), "the altered step ran");
    let recs = run_records(o, &r_span);
    let there = recs
        .iter()
        .find(|r| r["step_id"] == "there")
        .unwrap_or_else(|| panic!("no record of the step in {recs:#?}"));
    assert_eq!(there["status"], "failed", "{there}");
    assert!(
        there["error"]
            .as_str()
            .unwrap_or_default()
            .contains("signature does not verify"),
        "{there}"
    );
    // The registry document: the agent's sync refuses the bundle holding it.
    wait_until(Duration::from_secs(30), "the bundle refused", || {
        a.log()
            .contains("registry Workflow `t-greet` version 1")
            .then_some(())
    });
    assert!(
        a.log().contains("not the content that was pushed"),
        "{}",
        a.log()
    );
    assert!(!a.log().contains("verified and kept"), "{}", a.log());
    assert!(!ran_reg.exists());
}

#[test]
fn issue15_a_job_of_every_kind_altered_in_the_sqlite_store_is_refused_and_nothing_runs() {
    let _g = docker_available().then(crate::site_lock);
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 5000);
    let store = Store::Sqlite(o.data.join("orchestrator.db"));
    every_kind_altered_in_the_store_is_refused(&o, &store, d.path());
}

#[test]
fn issue15_a_job_of_every_kind_altered_in_the_postgres_store_is_refused_and_nothing_runs() {
    let Some(db) = TestDb::create("issue15_tampered_jobs_on_postgres") else {
        return;
    };
    let _g = docker_available().then(crate::site_lock);
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start_on(&d.path().join("orch"), "127.0.0.1:0", 5000, &db.url);
    let store = Store::Pg(db.url.clone());
    every_kind_altered_in_the_store_is_refused(&o, &store, d.path());
}
