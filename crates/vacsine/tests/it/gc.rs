//! Retention (issue 19 item 4) on real data folders, through the built binary: `vacsine gc`
//! on an agent's folder (journal and outbox made by real autonomous runs) and on an
//! orchestrator's SQLite store. Nothing not uploaded is removed; `--dry-run` changes nothing.

use crate::orchestrator::{text, wait_until, Agent, Orch};
use crate::write;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_vacsine");

fn gc(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("gc")
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("VACSINE_DATABASE_URL")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn gc_json(data: &Path, args: &[&str]) -> (Value, i32) {
    let mut a = args.to_vec();
    a.extend(["--format", "json"]);
    let o = gc(data, &a);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    (v, o.status.code().unwrap_or(-1))
}

/// `sqlite3 DB SQL`: how the test ages data (an operator's tool, as in the bundle tests).
fn sqlite(db: &Path, sql: &str) -> String {
    let o = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("the `sqlite3` tool is needed by this test (apt-get install sqlite3)");
    assert!(o.status.success(), "sqlite3 {sql}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn agent_run(data: &Path, wf: &str) {
    let o = Command::new(BIN)
        .args(["agent", "run", wf, "--format", "json", "--data"])
        .arg(data)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

const WORKFLOW: &str = "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: tidy\nspec:\n  steps:\n    - id: one\n      uses: command\n      with:\n        argv: [\"sh\", \"-c\", \"head -c 4000 /dev/zero | tr '\\\\0' a\"]\n    - id: two\n      uses: command\n      with:\n        argv: [\"true\"]\n";

#[test]
fn issue19_gc_prunes_old_uploaded_runs_never_what_waits_and_dry_run_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);
    let key = o.site("edge-gc");
    let adata = d.path().join("agent");
    let wf = write(d.path(), "tidy.yaml", WORKFLOW);
    o.json(&["push", wf.to_str().unwrap(), "--format", "json"]);
    let a = Agent::start(&o, &key, "edge-gc-1", &adata);
    wait_until(Duration::from_secs(30), "the bundle kept", || {
        a.log().contains("verified and kept").then_some(())
    });
    // Four runs uploaded while the agent runs…
    for _ in 0..4 {
        agent_run(&adata, "tidy");
    }
    wait_until(Duration::from_secs(60), "four runs uploaded", || {
        let runs = o.json(&["runs", "--site", "edge-gc", "--format", "json"]);
        let done = runs
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "succeeded" && r["records"] == 2)
            .count();
        (done == 4).then_some(())
    });
    let db = adata.join("agent.db");
    wait_until(Duration::from_secs(20), "the outbox emptied", || {
        (sqlite(&db, "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL") == "0").then_some(())
    });
    // …two more while it is stopped: they wait in the outbox.
    drop(a);
    agent_run(&adata, "tidy");
    agent_run(&adata, "tidy");
    let journal = adata.join("journal.db");
    let waiting: Vec<String> = sqlite(
        &db,
        "SELECT DISTINCT run_id FROM outbox WHERE sent_ms IS NULL ORDER BY run_id",
    )
    .lines()
    .map(String::from)
    .collect();
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    // Every run ended 60 days ago: older than the default 30.
    sqlite(
        &journal,
        "UPDATE runs SET finished_at = '2000-01-01T00:00:00Z', started_at = '2000-01-01T00:00:00Z'",
    );
    let count = |sql: &str| sqlite(&journal, sql);
    let before = (
        count("SELECT COUNT(*) FROM runs"),
        count("SELECT COUNT(*) FROM step_records"),
    );
    assert_eq!(before, ("6".into(), "12".into()));

    // Dry run: says what would go, changes nothing.
    let (v, code) = gc_json(&adata, &["--dry-run", "--keep-last", "0"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["journal"]["ended"], 6, "{v}");
    assert_eq!(v["journal"]["removed"], 4, "{v}");
    assert_eq!(v["journal"]["by_age"], 4, "{v}");
    assert_eq!(v["journal"]["held"], 2, "{v}");
    assert_eq!(v["agent_db"]["outbox_pending"], 8, "{v}");
    assert_eq!(
        (
            count("SELECT COUNT(*) FROM runs"),
            count("SELECT COUNT(*) FROM step_records")
        ),
        before
    );

    // For real, with a count limit of 1: the uploaded runs go; the two waiting stay though
    // they exceed it, and the exit code (2) and the output say so.
    let o2 = gc(&adata, &["--keep-last", "0", "--keep-runs", "1"]);
    let out = text(&o2);
    assert_eq!(o2.status.code(), Some(2), "{out}");
    assert!(out.contains("removed 4 of 6 ended run(s)"), "{out}");
    assert!(out.contains("2 held"), "{out}");
    assert!(
        out.contains("nothing not uploaded is ever removed"),
        "{out}"
    );
    let left: Vec<String> = count("SELECT id FROM runs ORDER BY id")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(left, waiting);
    assert_eq!(count("SELECT COUNT(*) FROM step_records"), "4");
    assert_eq!(
        sqlite(&db, "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL"),
        "8"
    );
    // Again: nothing more to remove.
    let (v, code) = gc_json(&adata, &["--keep-last", "0", "--keep-runs", "1"]);
    assert_eq!(
        (code, &v["journal"]["removed"]),
        (2, &Value::from(0)),
        "{v}"
    );

    // The agent back: what waited arrives whole.
    let a = Agent::start(&o, &key, "edge-gc-1", &adata);
    wait_until(Duration::from_secs(60), "the waiting runs uploaded", || {
        let runs = o.json(&["runs", "--site", "edge-gc", "--format", "json"]);
        let done = runs
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "succeeded" && r["records"] == 2)
            .count();
        (done == 6).then_some(())
    });
    drop(a);

    // The orchestrator's store: its runs ended 60 days ago; gc on its data folder while it
    // runs removes them (the newest 2 of the site kept), the rest still listed.
    let store = o.data.join("orchestrator.db");
    sqlite(
        &store,
        "UPDATE runs SET finished_ms = 1000, created_ms = 1000 + rowid",
    );
    let (v, code) = gc_json(&o.data, &["--dry-run", "--keep-last", "2"]);
    assert_eq!((code, &v["runs"]["removed"]), (0, &Value::from(4)), "{v}");
    assert_eq!(sqlite(&store, "SELECT COUNT(*) FROM runs"), "6");
    let o3 = gc(&o.data, &["--keep-last", "2"]);
    assert_eq!(o3.status.code(), Some(0), "{}", text(&o3));
    assert!(
        text(&o3).contains("removed 4 of 6 ended run(s)"),
        "{}",
        text(&o3)
    );
    assert_eq!(sqlite(&store, "SELECT COUNT(*) FROM runs"), "2");
    assert_eq!(sqlite(&store, "SELECT COUNT(*) FROM records"), "4");
    let runs = o.json(&["runs", "--site", "edge-gc", "--format", "json"]);
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");

    // A folder holding neither: a clear error, exit 1.
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = gc(&empty, &[]);
    assert_eq!(e.status.code(), Some(1), "{}", text(&e));
    assert!(
        text(&e).contains("no orchestrator store and no agent data"),
        "{}",
        text(&e)
    );
}

/// `vacsine gc --database URL --dry-run` on PostgreSQL (the test server's default schema,
/// which other tests share: a dry run only, which changes nothing); the URL's password never
/// printed. Skipped without `VACSINE_TEST_PG`.
#[test]
fn issue19_gc_dry_run_on_postgres_names_the_store_without_its_password() {
    let Ok(url) = std::env::var("VACSINE_TEST_PG") else {
        eprintln!("skipped: set VACSINE_TEST_PG=postgres://USER:PASSWORD@HOST:5432/DB to run it");
        return;
    };
    let empty = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["gc", "--dry-run", "--format", "json", "--data"])
        .arg(empty.path())
        .env("VACSINE_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dry_run"], true);
    assert!(
        v["store"]
            .as_str()
            .unwrap()
            .starts_with("PostgreSQL store at "),
        "{v}"
    );
    assert!(v["runs"]["ended"].is_u64(), "{v}");
    if let Some(pw) = url
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .and_then(|(auth, _)| auth.split_once(':'))
        .map(|(_, pw)| pw)
    {
        assert!(!text(&o).contains(&format!(":{pw}@")), "{}", text(&o));
    }
}

/// The orchestrator applies the policy by itself (`--gc-every`): old ended runs written into
/// its live store go within seconds; an old queued run stays.
#[test]
fn issue19_the_orchestrator_prunes_by_itself_and_never_a_queued_run() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start_with(
        &d.path().join("orch"),
        "127.0.0.1:0",
        30_000,
        &["--gc-every", "1", "--keep-last", "0"],
    );
    o.site("edge-auto");
    let store = o.data.join("orchestrator.db");
    let mut sql = String::from("BEGIN;");
    for i in 0..50 {
        sql.push_str(&format!(
            "INSERT INTO runs (id, site, workflow, request, status, created_ms, finished_ms)
               VALUES ('old-{i}', 'edge-auto', 'w', '{{}}', 'succeeded', {i}, 1000);
             INSERT INTO records (run_id, key, record, received_ms)
               VALUES ('old-{i}', 'old-{i}/k', '{{}}', 1000);"
        ));
    }
    sql.push_str(
        "INSERT INTO runs (id, site, workflow, request, status, created_ms)
           VALUES ('queued-old', 'edge-auto', 'w', '{}', 'queued', 1);
         COMMIT;",
    );
    sqlite(&store, &sql);
    wait_until(Duration::from_secs(30), "the old runs pruned", || {
        (sqlite(&store, "SELECT COUNT(*) FROM runs") == "1").then_some(())
    });
    assert_eq!(sqlite(&store, "SELECT id FROM runs"), "queued-old");
    assert_eq!(sqlite(&store, "SELECT COUNT(*) FROM records"), "0");
    let runs = o.json(&["runs", "--all-sites", "--format", "json"]);
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
}
