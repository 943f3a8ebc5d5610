//! Signed work, end to end: the orchestrator signs each job when it is submitted; a job
//! altered in its store afterwards is refused by the agent before anything runs.

use super::{run_records, status_final, submit, text, wait_until, workflow, Agent, Orch, BIN};
use serde_json::Value;
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
    // Issue 15: the record names the run the operator was given, and the agent's engine run.
    assert_eq!(recs[0]["run_id"], r2.as_str(), "{}", recs[0]);
    assert!(
        recs[0]["engine_run_id"]
            .as_str()
            .is_some_and(|e| !e.is_empty() && e != r2),
        "{}",
        recs[0]
    );
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

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn greet(word: &str) -> String {
    format!(
        "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: greet\nspec:\n  inputs:\n    who: {{type: string}}\n  steps:\n    - id: say\n      uses: command\n      with:\n        argv: [\"echo\", \"{word}-{{{{ inputs.who }}}}\"]\n"
    )
}

const SAY: &str = "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: say\nspec:\n  inputs:\n    who: {type: string}\n  steps:\n    - id: call\n      uses: workflow\n      with: {workflow: greet, inputs: {who: \"{{ inputs.who }}\"}}\n";

/// `(kind, name, version, created)` of a push's or a list's entries.
fn entries(v: &serde_json::Value) -> Vec<(String, String, i64, bool)> {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["name"].as_str().unwrap().to_string(),
                e["version"].as_i64().unwrap(),
                e["created"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn e(kind: &str, name: &str, version: i64, created: bool) -> (String, String, i64, bool) {
    (kind.into(), name.into(), version, created)
}

/// The stdout of every record of a followed run (`vacsine run … --format json`).
fn stdouts(o: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["stdout"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn pushed_workflows_are_versioned_and_run_at_a_site_by_name_and_version() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 3000);
    let key = o.site("edge-reg");
    let adata = d.path().join("agent");
    let a = Agent::start(&o, &key, "edge-reg-1", &adata);
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/edge-site/policy.yaml");
    let policy_name = "edge-baseline";
    assert!(std::fs::read_to_string(&policy)
        .unwrap()
        .contains("name: edge-baseline"));
    let say = write(d.path(), "say.yaml", SAY);
    let g = write(d.path(), "greet.yaml", &greet("hello"));
    let files = [
        say.to_str().unwrap(),
        g.to_str().unwrap(),
        policy.to_str().unwrap(),
    ];
    let push = |files: &[&str]| {
        let mut args = vec!["push"];
        args.extend_from_slice(files);
        args.extend(["--format", "json"]);
        entries(&o.json(&args))
    };
    assert_eq!(
        push(&files),
        [
            e("Workflow", "say", 1, true),
            e("Workflow", "greet", 1, true),
            e("Policy", policy_name, 1, true)
        ]
    );
    // Unchanged content: no new version.
    assert_eq!(
        push(&files),
        [
            e("Workflow", "say", 1, false),
            e("Workflow", "greet", 1, false),
            e("Policy", policy_name, 1, false)
        ]
    );
    std::fs::write(&g, greet("hi")).unwrap();
    assert_eq!(
        push(&[g.to_str().unwrap()]),
        [e("Workflow", "greet", 2, true)]
    );
    let list = o.json(&["registry", "list", "--format", "json"]);
    assert_eq!(
        entries(&list),
        [
            e("Policy", policy_name, 1, false),
            e("Workflow", "greet", 1, false),
            e("Workflow", "greet", 2, false),
            e("Workflow", "say", 1, false)
        ]
    );
    assert!(list["entries"][0]["sha256"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    // Each version as pushed, and the difference between two (issue 17, point 6).
    let v1 = o.json(&[
        "registry",
        "show",
        "Workflow",
        "greet",
        "--version",
        "1",
        "--format",
        "json",
    ]);
    assert_eq!(
        (v1["version"].as_i64(), v1["latest"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(v1["verified"], true, "{v1}");
    assert!(v1["document"].to_string().contains("hello-"), "{v1}");
    let diff = o.cli(&["registry", "diff", "Workflow", "greet", "1", "2"]);
    assert!(diff.status.success(), "{}", text(&diff));
    let out = String::from_utf8_lossy(&diff.stdout);
    assert!(
        out.starts_with("--- Workflow greet v1\n+++ Workflow greet v2\n"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with('-') && l.contains("hello-"))
            && out.lines().any(|l| l.starts_with('+') && l.contains("hi-")),
        "{out}"
    );
    let none = o.cli(&["registry", "show", "Workflow", "greet", "--version", "9"]);
    assert!(!none.status.success());
    assert!(
        text(&none).contains("no version 9 of Workflow `greet`"),
        "{}",
        text(&none)
    );
    // A file that does not parse is refused before anything is pushed, at its line.
    let bad = write(d.path(), "bad.yaml", &SAY.replace("  steps:", "  stepz:"));
    let r = o.cli(&["push", bad.to_str().unwrap()]);
    assert!(!r.status.success());
    assert!(text(&r).contains("bad.yaml"), "{}", text(&r));

    // Run by name: the latest versions, the catalog resolved from the registry.
    let r = o.cli(&[
        "run", "say", "--site", "edge-reg", "-i", "who=bob", "--format", "json",
    ]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(
        stdouts(&r).contains(&"hi-bob\n".to_string()),
        "{}",
        text(&r)
    );
    assert!(
        a.log().contains("versions Workflow/say@1,Workflow/greet@2"),
        "{}",
        a.log()
    );
    // An older version, by its number.
    let r = o.cli(&[
        "run", "greet@1", "--site", "edge-reg", "-i", "who=ann", "--format", "json",
    ]);
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(stdouts(&r), ["hello-ann\n"]);
    // A version that does not exist: a clear error, nothing queued.
    let runs_before = o.status()["runs"].as_array().unwrap().len();
    let r = o.cli(&["run", "say@7", "--site", "edge-reg"]);
    assert!(!r.status.success());
    assert!(
        text(&r).contains("no version 7 of workflow `say`"),
        "{}",
        text(&r)
    );
    assert_eq!(o.status()["runs"].as_array().unwrap().len(), runs_before);
    // Each verified bundle is in the agent's store with the versions it carries.
    let kept = sqlite(
        &adata.join("agent.db"),
        "SELECT versions FROM bundles ORDER BY verified_ms",
    );
    assert_eq!(
        kept,
        "Workflow/say@1,Workflow/greet@2\nWorkflow/greet@1,Workflow/say@1"
    );
}

#[test]
fn agents_sync_the_signed_registry_bundle_and_hold_it_verified_while_cut_off() {
    let d = tempfile::tempdir().unwrap();
    let mut o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 3000);
    let key = o.site("edge-sync");
    let adata = d.path().join("agent");
    let g = write(d.path(), "greet.yaml", &greet("hello"));
    o.json(&["push", g.to_str().unwrap(), "--format", "json"]);
    let kept_line = |log: &str, label: &str| -> Option<String> {
        log.lines()
            .find(|l| l.starts_with("registry bundle sha256:") && l.contains(label))
            .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
    };
    let mut a = Agent::start(&o, &key, "edge-sync-1", &adata);
    let v1 = wait_until(Duration::from_secs(20), "bundle v1 kept", || {
        kept_line(
            &a.log(),
            "verified and kept (1 document(s): Workflow/greet@1)",
        )
    });
    assert!(
        a.log().contains("registry bundle held: none yet"),
        "{}",
        a.log()
    );
    a.kill9();

    std::fs::write(&g, greet("hi")).unwrap();
    o.json(&["push", g.to_str().unwrap(), "--format", "json"]);
    let mut a = Agent::start(&o, &key, "edge-sync-1", &adata);
    let v2 = wait_until(Duration::from_secs(20), "bundle v2 kept", || {
        kept_line(&a.log(), "Workflow/greet@2), was")
    });
    assert_ne!(v1, v2);
    assert!(
        a.log().contains(&format!(
            "registry bundle held: {v1} (1 document(s): Workflow/greet@1)"
        )),
        "{}",
        a.log()
    );
    a.kill9();

    // Cut off: the bundle held is still verified and named.
    o.kill9();
    let a = Agent::start_via(&[], &o.url, &o.pin, &key, "edge-sync-1", &adata);
    wait_until(Duration::from_secs(20), "the held bundle named", || {
        let l = a.log();
        (l.contains(&format!(
            "registry bundle held: {v2} (1 document(s): Workflow/greet@2)"
        )) && l.contains("sync failed"))
        .then_some(())
    });
    drop(a);

    // Altered on disk: not used, dropped, synced again once the orchestrator is back.
    let n = sqlite(
        &adata.join("agent.db"),
        "UPDATE registry_bundles SET payload = replace(payload, 'hi-', 'rm -rf ') ; SELECT changes();",
    );
    assert_eq!(n, "1");
    let o = Orch::start(&d.path().join("orch"), &o.addr(), 3000);
    let a = Agent::start(&o, &key, "edge-sync-1", &adata);
    wait_until(Duration::from_secs(20), "bundle synced again", || {
        kept_line(&a.log(), "Workflow/greet@2)").filter(|v| *v == v2)
    });
    assert!(a.log().contains("does not verify"), "{}", a.log());
    assert!(
        !a.log().contains("registry bundle held: sha256"),
        "{}",
        a.log()
    );
}

/// Cut off from the orchestrator, the site acts on its own: `vacsine agent run` runs a
/// workflow of the registry bundle the agent holds (verified first; its catalog is the
/// bundle's), and the run reaches the orchestrator, marked autonomous, with each record once,
/// when the link returns. A bundle altered on disk is refused, nothing runs.
#[test]
fn a_cut_off_site_runs_a_bundled_workflow_on_its_own_and_reports_it_when_the_link_returns() {
    let d = tempfile::tempdir().unwrap();
    let mut o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);
    let key = o.site("edge-auto");
    let adata = d.path().join("agent");
    let g = write(d.path(), "greet.yaml", &greet("hello"));
    let s = write(d.path(), "say.yaml", SAY);
    o.json(&[
        "push",
        g.to_str().unwrap(),
        s.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let a = Agent::start(&o, &key, "edge-auto-1", &adata);
    wait_until(Duration::from_secs(20), "the bundle kept", || {
        a.log()
            .contains("verified and kept (2 document(s)")
            .then_some(())
    });
    // The link is down (the orchestrator is gone); the agent keeps running.
    o.kill9();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(["agent", "run"])
            .args(args)
            .arg("--data")
            .arg(&adata)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let out = run(&["say", "--input", "who=edge", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let recs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let said = recs
        .iter()
        .find(|r| r["step_id"] == "call/say")
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert_eq!(
        said["stdout"], "hello-edge\n",
        "the catalog came from the bundle"
    );
    // Unknown workflow, version not held: clear errors, nothing run.
    let out = run(&["nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no workflow `nope`") && text(&out).contains("greet@1"),
        "{}",
        text(&out)
    );
    let out = run(&["say@7"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not 7"), "{}", text(&out));

    // The link returns: the run arrives, marked autonomous, each record once.
    let o = Orch::start(&d.path().join("orch"), &o.addr(), 30_000);
    let view = wait_until(
        Duration::from_secs(30),
        "the autonomous run reported",
        || {
            o.json(&["runs", "--site", "edge-auto", "--format", "json"])
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["workflow"] == "say (autonomous)" && r["status"] == "succeeded")
                .cloned()
        },
    );
    let id = view["id"].as_str().unwrap();
    let logs = o.cli(&["logs", id, "--format", "json"]);
    assert!(logs.status.success(), "{}", text(&logs));
    let got: Vec<Value> = String::from_utf8_lossy(&logs.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), recs.len(), "each record once: {got:#?}");
    assert!(
        a.log().contains("reported to the orchestrator"),
        "{}",
        a.log()
    );
    // `status` names when each agent last acted on its own.
    let st = o.status();
    let agent = st["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "edge-auto-1")
        .cloned()
        .unwrap();
    assert_eq!(agent["last_autonomous"], view["created"], "{st}");
    let human = o.cli(&["status"]);
    assert!(
        text(&human).contains("LAST AUTONOMOUS RUN"),
        "{}",
        text(&human)
    );
    drop(a);

    // A bundle altered on disk: refused before anything runs.
    let n = sqlite(
        &adata.join("agent.db"),
        "UPDATE registry_bundles SET payload = replace(payload, 'hello-', 'bye-') ; SELECT changes();",
    );
    assert_eq!(n, "1");
    let out = run(&["say", "--input", "who=x"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("does not verify"), "{}", text(&out));
}

const BLOCK_ON_IOC: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: note-ioc
spec:
  inputs:
    ip: {type: ip}
  on:
    - event: indicator
      if: "event.payload.type == 'ip'"
      inputs:
        ip: "{{ event.payload.value }}"
      dedupe:
        key: "{{ event.payload.value }}"
        window: 10m
  steps:
    - id: note
      uses: command
      with:
        argv: ["sh", "-c", "echo \"$1 from $2\" >> \"$3\"", "-", "{{ inputs.ip }}", "{{ event.source }}", "NOTES"]
"#;

/// A local event, the orchestrator down: the trigger of a bundled workflow matches it and the
/// workflow runs at the site by itself, once per indicator within the dedupe window; events
/// it does not match start nothing; a payload that is not an IP is refused by the input's
/// type, nothing runs; the runs reach the orchestrator, marked autonomous, when it returns.
#[test]
fn a_local_event_starts_a_bundled_workflow_at_a_cut_off_site() {
    let d = tempfile::tempdir().unwrap();
    let mut o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);
    let key = o.site("edge-ioc");
    let adata = d.path().join("agent");
    let notes = d.path().join("notes.txt");
    let wf = write(
        d.path(),
        "note-ioc.yaml",
        &BLOCK_ON_IOC.replace("NOTES", notes.to_str().unwrap()),
    );
    o.json(&["push", wf.to_str().unwrap(), "--format", "json"]);
    let a = Agent::start(&o, &key, "edge-ioc-1", &adata);
    wait_until(Duration::from_secs(20), "the bundle kept", || {
        a.log()
            .contains("verified and kept (1 document(s)")
            .then_some(())
    });
    o.kill9();
    let event = |ty: &str, payload: &str| {
        Command::new(BIN)
            .args(["agent", "event", "--type", ty, "--payload", payload])
            .args(["--source", "suricata", "--format", "json", "--data"])
            .arg(&adata)
            .output()
            .unwrap()
    };
    let lines = |o: &std::process::Output| -> Vec<Value> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let out = event("indicator", r#"{"type": "ip", "value": "203.0.113.9"}"#);
    assert!(out.status.success(), "{}", text(&out));
    let got = lines(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["workflow"], "note-ioc");
    assert_eq!(got[0]["status"], "succeeded", "{got:?}");
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "203.0.113.9 from suricata\n"
    );
    // The same indicator again, within the window: not run again.
    let out = event("indicator", r#"{"type": "ip", "value": "203.0.113.9"}"#);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(lines(&out)[0]["status"], "deduplicated");
    // Not matched: another event type, another indicator type.
    for (ty, p) in [
        ("incident", r#"{"type": "ip", "value": "198.51.100.1"}"#),
        (
            "indicator",
            r#"{"type": "domain", "value": "evil.example"}"#,
        ),
    ] {
        let out = event(ty, p);
        assert!(out.status.success(), "{}", text(&out));
        assert!(lines(&out).is_empty(), "{}", text(&out));
    }
    // An attacker's string where an IP is expected: refused by the input's type, nothing ran.
    let out = event(
        "indicator",
        r#"{"type": "ip", "value": "1.2.3.4; rm -rf /"}"#,
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ip"), "{}", text(&out));
    // Bad events are usage errors.
    let bad = event("sighting", "{}");
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("not an event type"), "{}", text(&bad));
    let bad = event("indicator", "not json");
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "203.0.113.9 from suricata\n",
        "only the first event ran the workflow"
    );

    // The link returns: the autonomous run is reported.
    let o = Orch::start(&d.path().join("orch"), &o.addr(), 30_000);
    let view = wait_until(
        Duration::from_secs(30),
        "the triggered run reported",
        || {
            o.json(&["runs", "--site", "edge-ioc", "--format", "json"])
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["workflow"] == "note-ioc (autonomous)" && r["status"] == "succeeded")
                .cloned()
        },
    );
    assert_eq!(view["id"], got[0]["run_id"]);
}

const NOTE_ANY: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: note-any
spec:
  inputs:
    value: {type: string}
  on:
    - event: indicator
      inputs:
        value: "{{ event.payload.value }}"
  steps:
    - id: note
      uses: command
      with:
        argv: ["sh", "-c", "printf '%s\n' \"$1\" >> \"$2\"", "-", "{{ inputs.value }}", "SEEN"]
"#;

/// Issue 19: each workflow an event matches runs or is refused on its own (one whose input
/// is refused does not keep the other from running), every outcome is printed, the exit code
/// is the documented 2; the payload comes from standard input or a file, not only the
/// command line (128 KiB cap), bounded at 16 MiB.
#[test]
fn issue19_each_matching_workflow_runs_or_is_refused_on_its_own_and_payloads_come_from_files() {
    use std::io::Write as _;
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);
    let key = o.site("edge-two");
    let adata = d.path().join("agent");
    let (notes, seen) = (d.path().join("notes.txt"), d.path().join("seen.txt"));
    let ioc = write(
        d.path(),
        "note-ioc.yaml",
        &BLOCK_ON_IOC.replace("NOTES", notes.to_str().unwrap()),
    );
    let any = write(
        d.path(),
        "note-any.yaml",
        &NOTE_ANY.replace("SEEN", seen.to_str().unwrap()),
    );
    o.json(&[
        "push",
        ioc.to_str().unwrap(),
        any.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let a = Agent::start(&o, &key, "edge-two-1", &adata);
    wait_until(Duration::from_secs(20), "the bundle kept", || {
        a.log()
            .contains("verified and kept (2 document(s)")
            .then_some(())
    });
    drop(a);
    let event = |source: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(["agent", "event", "--type", "indicator"])
            .args(source)
            .args(["--format", "json", "--data"])
            .arg(&adata)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let by_workflow = |o: &std::process::Output| -> std::collections::BTreeMap<String, Value> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|v| (v["workflow"].as_str().unwrap().to_string(), v))
            .collect()
    };

    // From standard input: an attacker's string where note-ioc expects an IP.
    let out = event(
        &["--payload-file", "-"],
        Some(r#"{"type": "ip", "value": "1.2.3.4; rm -rf /"}"#),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let got = by_workflow(&out);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got["note-ioc"]["status"], "refused", "{got:?}");
    let why = got["note-ioc"]["message"].as_str().unwrap();
    assert!(why.contains("nothing ran") && why.contains("ip"), "{why}");
    assert_eq!(got["note-any"]["status"], "succeeded", "{got:?}");
    assert!(!notes.exists(), "the refused workflow ran");
    // The other one got the string as data, never through a shell.
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "1.2.3.4; rm -rf /\n"
    );

    // From a file, larger than a command line may be: both run, exit 0.
    let big = d.path().join("event.json");
    std::fs::write(
        &big,
        format!(
            r#"{{"type": "ip", "value": "203.0.113.7", "note": "{}"}}"#,
            "x".repeat(300 << 10)
        ),
    )
    .unwrap();
    let out = event(&["--payload-file", big.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = by_workflow(&out);
    assert_eq!(
        (
            got["note-ioc"]["status"].as_str(),
            got["note-any"]["status"].as_str()
        ),
        (Some("succeeded"), Some("succeeded")),
        "{got:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "203.0.113.7 from local\n"
    );

    // Over 16 MiB, not JSON, or both sources: usage errors (1), nothing runs.
    let huge = d.path().join("huge.json");
    std::fs::write(&huge, vec![b' '; (16 << 20) + 1]).unwrap();
    for (args, needle) in [
        (
            vec!["--payload-file", huge.to_str().unwrap()],
            "larger than 16 MiB",
        ),
        (vec!["--payload-file", "-"], "not JSON"),
        (
            vec!["--payload", "{}", "--payload-file", "-"],
            "cannot be used with",
        ),
    ] {
        let out = event(&args, Some("not json"));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(needle), "{args:?}: {}", text(&out));
    }
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap().lines().count(),
        2,
        "nothing ran on a refused payload"
    );
}
