//! Signed work, end to end: the orchestrator signs each job when it is submitted; a job
//! altered in its store afterwards is refused by the agent before anything runs.

use super::{run_records, status_final, submit, text, wait_until, workflow, Agent, Orch};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `sqlite3 DB SQL`, its output (the test needs the `sqlite3` tool, as an operator would to
/// tamper with the file).
fn sqlite(db: &Path, sql: &str) -> String {
    let o = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the `sqlite3` tool is needed by this test (apt-get install sqlite3)");
    assert!(o.status.success(), "sqlite3 {sql}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn a_job_altered_in_the_store_after_signing_is_refused_and_nothing_runs() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 3000);
    let key = o.site("edge-sig");
    let adata = d.path().join("agent");
    let mut a = Agent::start(&o, &key, "edge-sig-1", &adata);
    // The agent pinned the orchestrator's bundle key at enrolment.
    let id: serde_json::Value =
        serde_json::from_slice(&std::fs::read(adata.join("agent.json")).unwrap()).unwrap();
    let pinned = id["bundle_key"].as_str().expect("bundle_key in agent.json");
    assert_eq!(pinned.len(), 44, "{id}");
    a.kill9();

    // Two runs queued while the agent is away.
    let marker = d.path().join("tampered-ran");
    let marker2 = d.path().join("unsigned-copy-ran");
    let w1 = workflow(d.path(), "sig-one", &[("only", "echo safe-one")]);
    let w2 = workflow(d.path(), "sig-two", &[("only", "echo safe-two")]);
    let r1 = submit(&o, &w1, "edge-sig");
    let r2 = submit(&o, &w2, "edge-sig");
    let db = o.data.join("orchestrator.db");
    // Run 1: its signed job altered in the store (as someone with write access to the
    // database would): the command becomes `touch MARKER`.
    let n = sqlite(
        &db,
        &format!(
            "UPDATE signed_jobs SET payload = replace(payload, 'echo safe-one', 'touch {}') WHERE run_id = '{r1}'; SELECT changes();",
            marker.display()
        ),
    );
    assert_eq!(n, "1");
    assert!(sqlite(
        &db,
        &format!("SELECT payload FROM signed_jobs WHERE run_id = '{r1}'")
    )
    .contains("touch "));
    // Run 2: only the unsigned copy altered: the agent runs what was signed.
    let n = sqlite(
        &db,
        &format!(
            "UPDATE runs SET request = replace(request, 'echo safe-two', 'touch {}') WHERE id = '{r2}'; SELECT changes();",
            marker2.display()
        ),
    );
    assert_eq!(n, "1");

    let a = Agent::start(&o, &key, "edge-sig-1", &adata);
    let (v1, v2) = wait_until(Duration::from_secs(30), "both runs to end", || {
        let (v1, v2) = (o.run(&r1), o.run(&r2));
        (status_final(&v1) && status_final(&v2)).then_some((v1, v2))
    });
    assert_eq!(v1["status"], "failed", "{v1}");
    let msg = v1["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("signature does not verify") && msg.contains("nothing executed"),
        "{v1}"
    );
    assert!(!marker.exists(), "the tampered job ran");
    assert!(run_records(&o, &r1).is_empty(), "no step of run 1 ran");
    assert!(
        a.log().contains(&format!("run {r1}: failed")),
        "{}",
        a.log()
    );

    assert_eq!(v2["status"], "succeeded", "{v2}");
    assert!(!marker2.exists(), "the unsigned copy was executed");
    let recs = run_records(&o, &r2);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["stdout"], "safe-two\n");
    assert!(
        a.log()
            .contains(&format!("run {r2}: job signature verified")),
        "{}",
        a.log()
    );
    // The verified bundle is in the agent's local store; the refused one is not.
    let kept = sqlite(
        &adata.join("agent.db"),
        "SELECT run_id || ' ' || workflow FROM bundles",
    );
    assert_eq!(kept, format!("{r2} sig-two"));
}
