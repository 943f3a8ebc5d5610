//! Runs spanning sites: the orchestrator dispatches one step at a time to the agent of the
//! step's site (`runsOn: SITE`) and waits for its confirmation before it advances; `needs`,
//! `if`, `retry`, outputs, undo and `rollback` keep their meaning across sites.

use super::*;

/// The network namespace a process started through `prefix` lives in (`net:[inode]`).
fn netns_of(prefix: &[&str]) -> String {
    let mut c = match prefix.split_first() {
        Some((p, rest)) => {
            let mut c = Command::new(p);
            c.args(rest);
            c
        }
        None => Command::new("sh"),
    };
    let out = if prefix.is_empty() {
        c.args(["-c", "readlink /proc/self/ns/net"]).output()
    } else {
        c.args(["readlink", "/proc/self/ns/net"]).output()
    }
    .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn records(o: &Orch, run: &str) -> Vec<Value> {
    let out = o.cli(&["logs", run, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect()
}

fn find<'a>(recs: &'a [Value], step: &str, attempt: u64) -> &'a Value {
    recs.iter()
        .find(|r| r["step_id"] == step && r["attempt"] == attempt)
        .unwrap_or_else(|| panic!("no record of {step}#{attempt} in {recs:#?}"))
}

fn wait_end(o: &Orch, id: &str, limit: Duration) -> Value {
    wait_until(limit, "the run's end", || {
        let r = o.run(id);
        (r["status"] != "running" && r["status"] != "queued").then_some(r)
    })
}

/// Sites edge-a and edge-b of `o`, an agent each on loopback (data in `dir`): (A's, B's).
fn two_agents(o: &Orch, dir: &Path) -> (Agent, Agent) {
    let (ka, kb) = (o.site("edge-a"), o.site("edge-b"));
    (
        Agent::start(o, &ka, "edge-a-1", &dir.join("agent-a")),
        Agent::start(o, &kb, "edge-b-1", &dir.join("agent-b")),
    )
}

/// Submit `wf` at `site`, detached: the run id.
fn submit_detached(o: &Orch, wf: &Path, site: &str) -> String {
    let v = o.json(&[
        "run",
        wf.to_str().unwrap(),
        "--site",
        site,
        "--detach",
        "--format",
        "json",
    ]);
    v["run_id"].as_str().unwrap().to_string()
}

/// A run whose step at edge-b marks `started`, takes 4 s and appends one line to `count`;
/// then `last`, at the run's site, prints `count`. Submitted at edge-a: the run id.
fn slow_step_at_b(o: &Orch, dir: &Path, count: &Path, started: &Path) -> String {
    let wf = dir.join("slow.yaml");
    std::fs::write(
        &wf,
        format!(
            r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: slow
spec:
  steps:
    - id: first
      uses: command
      with:
        argv: ["echo", "first"]
    - id: slow
      uses: command
      runsOn: edge-b
      needs: [first]
      with:
        argv: ["sh", "-c", "touch \"$2\"; sleep 4; echo once >> \"$1\"", "-", "{count}", "{started}"]
    - id: last
      uses: command
      needs: [slow]
      with:
        argv: ["cat", "{count}"]
"#,
            count = count.display(),
            started = started.display()
        ),
    )
    .unwrap();
    let id = submit_detached(o, &wf, "edge-a");
    wait_until(
        Duration::from_secs(30),
        "the slow step started at B",
        || started.exists().then_some(()),
    );
    id
}

/// The slow run ended well: the step under way was not sent again, `last` printed one line.
fn slow_ran_once(o: &Orch, id: &str, count: &Path) {
    assert_eq!(
        std::fs::read_to_string(count).unwrap(),
        "once\n",
        "the step under way was not sent again"
    );
    let recs = records(o, id);
    let last = recs
        .iter()
        .find(|r| r["step_id"] == "last" && r["status"] == "succeeded")
        .expect("the last step");
    assert_eq!(last["stdout"], "once\n");
}

/// Two sites in their own network namespaces. Site A's step feeds its output to site B's,
/// B's flaky step is retried at B, a false `if` skips, and the last step at A uses B's
/// output: each step ran in its own site's namespace, in order, each once.
#[test]
fn a_run_spanning_two_sites_is_dispatched_step_by_step() {
    if !net_tools(&["ip"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (Site::new("xa", 11), Site::new("xb", 12));
    let o = Orch::start(&d.path().join("orch"), "0.0.0.0:0", 30_000);
    let _ag_a = a.agent(&o, "edge-a", &d.path().join("agent-a"));
    let _ag_b = b.agent(&o, "edge-b", &d.path().join("agent-b"));
    let (ns_a, ns_b, ns_host) = (netns_of(&a.via()), netns_of(&b.via()), netns_of(&[]));
    assert!(ns_a != ns_b && ns_a != ns_host && ns_b != ns_host);
    let mark = d.path().join("flaky-mark");
    let wf = d.path().join("across.yaml");
    std::fs::write(
        &wf,
        format!(
            r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: across
spec:
  steps:
    - id: wherea
      uses: command
      with:
        argv: ["readlink", "/proc/self/ns/net"]
      outputs:
        ns: "{{{{ result.stdout | trim }}}}"
    - id: whereb
      uses: command
      runsOn: edge-b
      needs: [wherea]
      with:
        argv: ["sh", "-c", "readlink /proc/self/ns/net; echo \"$1\"", "-", "a said {{{{ steps.wherea.outputs.ns }}}}"]
      outputs:
        ns: "{{{{ result.stdout | lines | first }}}}"
    - id: flaky
      uses: command
      runsOn: edge-b
      needs: [whereb]
      retry:
        attempts: 2
        backoff: 100ms
      with:
        argv: ["sh", "-c", "if [ -e \"$1\" ]; then echo second; else touch \"$1\"; exit 3; fi", "-", "{mark}"]
    - id: never
      uses: command
      runsOn: edge-b
      needs: [flaky]
      if: "false"
      with:
        argv: ["true"]
    - id: back
      uses: command
      needs: [flaky, never]
      with:
        argv: ["echo", "b was {{{{ steps.whereb.outputs.ns }}}}"]
"#,
            mark = mark.display()
        ),
    )
    .unwrap();
    let id = submit_detached(&o, &wf, "edge-a");
    let run = wait_end(&o, &id, Duration::from_secs(90));
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["agent"], "orchestrator",
        "driven by the orchestrator: {run}"
    );
    let recs = records(&o, &id);
    let wa = find(&recs, "wherea", 1);
    let wb = find(&recs, "whereb", 1);
    assert_eq!(wa["node"], "edge-a");
    assert_eq!(wb["node"], "edge-b");
    // Each step ran in its site's namespace; A's output reached B through the orchestrator.
    assert_eq!(wa["stdout"].as_str().unwrap().trim(), ns_a, "{wa}");
    assert_eq!(
        wb["stdout"].as_str().unwrap(),
        format!("{ns_b}\na said {ns_a}\n"),
        "{wb}"
    );
    // Retried at B: attempt 1 failed, attempt 2 succeeded.
    assert_eq!(find(&recs, "flaky", 1)["status"], "failed");
    assert_eq!(find(&recs, "flaky", 1)["exit_code"], 3);
    assert_eq!(find(&recs, "flaky", 2)["status"], "succeeded");
    assert_eq!(find(&recs, "never", 1)["status"], "skipped");
    let back = find(&recs, "back", 1);
    assert_eq!(back["node"], "edge-a");
    assert_eq!(back["stdout"], format!("b was {ns_b}\n"));
    // Step by step: no step started before the one it needs was confirmed.
    let t = |r: &Value, k: &str| r[k].as_str().unwrap().to_string();
    assert!(t(wb, "started_at") >= t(wa, "finished_at"), "{wa} {wb}");
    assert!(t(find(&recs, "flaky", 1), "started_at") >= t(wb, "finished_at"));
    assert!(t(back, "started_at") >= t(find(&recs, "flaky", 2), "finished_at"));
    // Each attempt once: five executed attempts and one skip.
    assert_eq!(recs.len(), 6, "{recs:#?}");
    // Site B's view: the three step jobs it ran, each a run of its own.
    let b_runs = o.json(&["runs", "--site", "edge-b", "--format", "json"]);
    let b_runs = b_runs.as_array().unwrap();
    assert_eq!(b_runs.len(), 3, "{b_runs:#?}");
    assert!(b_runs
        .iter()
        .all(|r| r["agent"].as_str().is_some_and(|a| a != "orchestrator")));
    assert_eq!(
        b_runs.iter().filter(|r| r["status"] == "succeeded").count(),
        2,
        "{b_runs:#?}"
    );
}

/// A failure at site A after a change at site B: B's change is undone at B (the file holds
/// its old content again) and the workflow's `rollback` steps run, each at its site.
#[test]
fn a_failure_at_one_site_undoes_the_change_made_at_the_other() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);
    let _agents = two_agents(&o, d.path());
    let file = d.path().join("banner.conf");
    std::fs::write(&file, "old\n").unwrap();
    let note = d.path().join("rolled-back");
    let wf = d.path().join("undo.yaml");
    std::fs::write(
        &wf,
        format!(
            r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: undo-across
spec:
  steps:
    - id: put
      uses: file
      runsOn: edge-b
      with:
        path: "{file}"
        content: "new\n"
    - id: breaks
      uses: command
      needs: [put]
      with:
        argv: ["sh", "-c", "exit 7"]
  rollback:
    - id: tell
      uses: command
      runsOn: edge-b
      with:
        argv: ["touch", "{note}"]
"#,
            file = file.display(),
            note = note.display()
        ),
    )
    .unwrap();
    let out = o.cli(&["run", wf.to_str().unwrap(), "--site", "edge-a"]);
    assert!(!out.status.success(), "the run failed: {}", text(&out));
    let id = o
        .json(&["runs", "--site", "edge-a", "--format", "json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workflow"] == "undo-across")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .expect("the run");
    let run = wait_end(&o, &id, Duration::from_secs(30));
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["message"].as_str().unwrap_or("").contains("breaks"),
        "{run}"
    );
    // Undone at B: the old content is back; the rollback step ran at B.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "old\n");
    assert!(note.exists(), "the rollback step ran");
    let recs = records(&o, &id);
    let undo: Vec<&Value> = recs
        .iter()
        .filter(|r| r["step_id"].as_str().unwrap().contains("undo"))
        .collect();
    assert_eq!(undo.len(), 1, "{recs:#?}");
    assert_eq!(undo[0]["node"], "edge-b");
    assert_eq!(undo[0]["status"], "succeeded");
    let rb = recs
        .iter()
        .find(|r| r["step_id"].as_str().unwrap().contains("tell"))
        .expect("the rollback record");
    assert_eq!(rb["node"], "edge-b");
    assert_eq!(find(&recs, "breaks", 1)["exit_code"], 7);
}

/// Steps naming no site, secrets, and jobs made up as one-step jobs are refused before
/// anything runs.
#[test]
fn runs_spanning_sites_are_checked_before_anything_runs() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);
    o.site("edge-a");
    let wf = d.path().join("nowhere.yaml");
    std::fs::write(
        &wf,
        "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: nowhere\nspec:\n  steps:\n    - id: x\n      uses: command\n      runsOn: edge-z\n      with:\n        argv: [\"true\"]\n",
    )
    .unwrap();
    let out = o.cli(&["run", wf.to_str().unwrap(), "--site", "edge-a", "--detach"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("`runsOn: edge-z` names no site here")
            && text(&out).contains("vacsine site create edge-z"),
        "{}",
        text(&out)
    );
    let sec = d.path().join("secret.yaml");
    std::fs::write(
        &sec,
        "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: sec\nspec:\n  secrets:\n    tok:\n      env: VACSINE_TEST_NOT_SET_TOKEN\n  steps:\n    - id: x\n      uses: command\n      runsOn: edge-a\n      with:\n        argv: [\"true\"]\n",
    )
    .unwrap();
    let out = o.cli(&["run", sec.to_str().unwrap(), "--site", "edge-a", "--detach"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("declares secrets"), "{}", text(&out));
    assert!(
        o.json(&["runs", "--all-sites", "--format", "json"])
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was queued"
    );
}

/// kill -9 the orchestrator while a step runs at site B, start it again: the run is
/// resumed, the step under way is awaited (not sent again), and the run completes with each
/// step run once.
#[test]
fn a_run_spanning_sites_survives_the_orchestrator_killed_mid_step() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("orch");
    let mut o = Orch::start(&data, "127.0.0.1:0", 30_000);
    let addr = o.addr();
    let (_a, b) = two_agents(&o, d.path());
    let count = d.path().join("count");
    let started = d.path().join("started");
    let id = slow_step_at_b(&o, d.path(), &count, &started);
    o.kill9();
    drop(o);
    let killed = chrono::Utc::now();
    let o = Orch::start(&data, &addr, 30_000);
    let run = wait_end(&o, &id, Duration::from_secs(60));
    assert_eq!(run["status"], "succeeded", "{run}\n{}", b.log());
    slow_ran_once(&o, &id, &count);
    // Issue 15 4(b): the attempt after the restart says it awaited the job under way (not a
    // run again), with the site's own start and duration, not the orchestrator's wait.
    let recs = records(&o, &id);
    let (a1, a2) = (find(&recs, "slow", 1), find(&recs, "slow", 2));
    assert_eq!(a1["status"], "interrupted", "{a1}");
    assert_eq!(a2["status"], "succeeded", "{a2}");
    let said: Vec<&str> = a2["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(
        said.iter()
            .any(|m| m.contains("not sent again") && m.contains("the site's")),
        "{a2}"
    );
    // The step sleeps 4 s at the site: its duration there, from its start there (before
    // the orchestrator came back and marked attempt 1 interrupted).
    let ms = a2["duration_ms"].as_u64().unwrap();
    assert!((4_000..8_000).contains(&ms), "{a2}");
    let (s1, s2) = (
        a1["started_at"].as_str().unwrap(),
        a2["started_at"].as_str().unwrap(),
    );
    let at_site = chrono::DateTime::parse_from_rfc3339(s2).unwrap();
    assert!(
        s1 <= s2 && at_site < killed,
        "site start {s2}: after attempt 1's dispatch ({s1}), before the orchestrator was killed ({killed})"
    );
    // Site B ran one job for the slow step.
    let b_runs = o.json(&["runs", "--site", "edge-b", "--format", "json"]);
    assert_eq!(b_runs.as_array().unwrap().len(), 1, "{b_runs:#}");
}

/// A `container` step at site B in a run spanning sites: the image, pushed once and listed
/// in the run's signed job, is fetched, verified and run by B's agent; its output feeds the
/// next step at A.
#[test]
fn a_container_step_at_another_site_runs_the_pushed_image() {
    if !crate::docker_available() {
        return;
    }
    let tag = format!("vacsine-test/span-action:{}", std::process::id());
    let _made = super::images::Images(vec![tag.clone()]);
    if !super::images::build(&tag, "from-b") {
        assert!(
            std::env::var_os("VACSINE_REQUIRE_DOCKER").is_none(),
            "the test image cannot be built"
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);
    let (_a, b) = two_agents(&o, d.path());
    o.json(&["push", "image", &tag, "--format", "json"]);
    let wf = d.path().join("act.yaml");
    std::fs::write(
        &wf,
        format!(
            r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: act-across
spec:
  steps:
    - id: act
      uses: container
      runsOn: edge-b
      timeout: 60s
      with:
        image: "{tag}"
        input: {{who: site-b}}
    - id: back
      uses: command
      needs: [act]
      with:
        argv: ["echo", "{{{{ steps.act.outputs.greeting }}}}"]
"#
        ),
    )
    .unwrap();
    let id = submit_detached(&o, &wf, "edge-a");
    let run = wait_end(&o, &id, Duration::from_secs(120));
    assert_eq!(run["status"], "succeeded", "{run}\n{}", b.log());
    let recs = records(&o, &id);
    let act = find(&recs, "act", 1);
    assert_eq!(act["node"], "edge-b");
    assert_eq!(act["outputs"]["greeting"], "from-b", "{act}");
    assert_eq!(find(&recs, "back", 1)["stdout"], "from-b\n");
    assert!(
        b.log().contains("image") && b.log().contains(&tag),
        "site B's agent fetched or found the image: {}",
        b.log()
    );
}

/// Two replicas on PostgreSQL sharing the data folder: the replica driving a run spanning
/// sites dies mid-step; the other takes the run over (its journal is in the shared folder,
/// its driver's lease says it is gone) and completes it, the step under way run once.
#[test]
fn a_run_spanning_sites_is_taken_over_when_its_replica_dies() {
    let Some(db) = TestDb::create("spanning_takeover") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("orch");
    let mut a = Orch::start_on(&data, "127.0.0.1:0", 10_000, &db.url);
    let b = Orch::start_on(&data, "127.0.0.1:0", 10_000, &db.url);
    let (ka, kb) = (a.site("edge-a"), a.site("edge-b"));
    let urls = format!("{},{}", a.url, b.url);
    let _ag_a = Agent::start_via(&[], &urls, &a.pin, &ka, "edge-a-1", &d.path().join("ag-a"));
    let ag_b = Agent::start_via(&[], &urls, &a.pin, &kb, "edge-b-1", &d.path().join("ag-b"));
    let count = d.path().join("count");
    let started = d.path().join("started");
    // Submitted to A: A drives it.
    let id = slow_step_at_b(&a, d.path(), &count, &started);
    a.kill9();
    let run = wait_until(Duration::from_secs(60), "the run's end", || {
        let r = b.run(&id);
        (r["status"] != "running").then_some(r)
    });
    assert_eq!(run["status"], "succeeded", "{run}\n{}", ag_b.log());
    slow_ran_once(&b, &id, &count);
}
