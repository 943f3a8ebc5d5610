//! Issue 16, `approval: required`: a quarantine an orchestrated Response asks for waits at
//! the orchestrator until an operator approves it, then runs at the site through the
//! `quarantine` executor on the named node (a real Docker container: its network is cut,
//! observed); a denied one and an expired one never run; none runs twice across an agent
//! restart. Real orchestrator and agent processes; containers and network named from the pid.
//! And site labels: a Response scoped by `labels` decides only at the sites carrying them.

use super::{net_tools, text, wait_until, Agent, Orch, Site};
use crate::write;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const RESPONSE: &str = r#"apiVersion: vacsine.io/v1
kind: Response
metadata:
  name: quarantine-on-touch
  version: "1"
spec:
  on:
    events: [indicator]
    sources: [opencanary]
    fields:
      - {field: dst_port, equals: "2222"}
  decide:
    quarantine: {}
  mode: orchestrated
  approval: required
  approvalExpires: 12s
"#;

/// Autonomous, no approval: the site quarantines at once.
const AT_ONCE: &str = r#"apiVersion: vacsine.io/v1
kind: Response
metadata:
  name: quarantine-now
spec:
  on:
    events: [indicator]
    fields:
      - {field: dst_port, equals: "2223"}
  decide:
    quarantine: {}
  mode: autonomous
  approval: none
"#;

const AUTONOMOUS: &str = r#"apiVersion: vacsine.io/v1
kind: Response
metadata:
  name: quarantine-at-once
spec:
  on:
    events: [indicator]
  decide:
    quarantine: {}
  mode: autonomous
  approval: required
"#;

/// Containers and their network, removed at the end.
struct Nodes {
    net: String,
    names: Vec<String>,
}

impl Nodes {
    fn start(tag: &str, n: usize) -> Nodes {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let d = vacsine_docker::connect().await.expect("docker");
            vacsine_docker::demo::images(&d).await.expect("demo images");
        });
        let net = format!("{tag}-net");
        let _ = Command::new("docker")
            .args(["network", "rm", &net])
            .output();
        crate::docker(&["network", "create", &net]);
        let image = vacsine_docker::demo::image_tag("base");
        let names: Vec<String> = (0..n).map(|i| format!("{tag}-n{i}")).collect();
        let nodes = Nodes { net, names };
        for name in &nodes.names {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
            crate::docker(&["run", "-d", "--name", name, "--network", &nodes.net, &image]);
        }
        nodes
    }

    /// How many networks container `name` is on.
    fn networks(name: &str) -> usize {
        crate::docker(&["inspect", "-f", "{{len .NetworkSettings.Networks}}", name])
            .parse()
            .unwrap()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("docker").args(["rm", "-f", n]).output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.net])
            .output();
    }
}

fn canary(node: &str, i: usize) -> String {
    canary_port(node, i, 2222)
}

fn canary_port(node: &str, i: usize, port: u16) -> String {
    format!(
        r#"{{"dst_host":"","dst_port":{port},"local_time":"2026-12-07 01:00:0{i}.000000","logdata":{{"USERNAME":"root"}},"logtype":4002,"node_id":"{node}","src_host":"198.51.100.{i}","src_port":4000{i},"utc_time":"2026-12-07 01:00:0{i}.000000"}}"#
    )
}

/// Output on one line (miette wraps and draws a margin).
fn flat(o: &std::process::Output) -> String {
    text(o)
        .split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ")
}

fn approvals(o: &Orch) -> Vec<Value> {
    o.json(&["approvals", "--format", "json"])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn issue16_a_quarantine_waits_for_approval_then_runs_denied_and_expired_never_run() {
    if !crate::docker_available() {
        return;
    }
    let _g = crate::site_lock();
    let tag = format!("apq-{}", std::process::id());
    let nodes = Nodes::start(&tag, 4);
    let (x, y, z) = (&nodes.names[0], &nodes.names[1], &nodes.names[2]);
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);

    // `approval: required` with `mode: autonomous` is refused at push, located.
    let auto = write(d.path(), "auto.yaml", AUTONOMOUS);
    let refused = o.cli(&["push", auto.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        flat(&refused).contains("auto.yaml:11")
            && flat(&refused)
                .contains("`approval: required` cannot be used with `mode: autonomous`"),
        "{}",
        text(&refused)
    );

    let resp = write(d.path(), "q.yaml", RESPONSE);
    let now = write(d.path(), "now.yaml", AT_ONCE);
    o.json(&[
        "push",
        resp.to_str().unwrap(),
        now.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let data = d.path().join("agent");
    let key = o.site("edge-q");
    let mut agent = Agent::start(&o, &key, "edge-q-1", &data);
    wait_until(
        Duration::from_secs(30),
        "the bundle with the Response",
        || {
            agent
                .log()
                .contains("Response/quarantine-on-touch@1")
                .then_some(())
        },
    );

    // Decoy touches on three nodes (x twice): each node's quarantine is asked for once.
    let ev = write(
        d.path(),
        "touch.jsonl",
        &format!(
            "{}\n{}\n{}\n{}\n",
            canary(x, 1),
            canary(y, 2),
            canary(z, 3),
            canary(x, 6)
        ),
    );
    let ing = Command::new(env!("CARGO_BIN_EXE_vacsine"))
        .args(["agent", "ingest", "--from", "opencanary"])
        .arg(&ev)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(ing.status.success(), "{}", text(&ing));
    let waiting = wait_until(Duration::from_secs(30), "three approvals", || {
        let a = approvals(&o);
        (a.len() == 3).then_some(a)
    });
    let id_of = |node: &str| -> String {
        waiting
            .iter()
            .find(|a| a["held"]["decision"]["action"]["node"] == node)
            .unwrap_or_else(|| panic!("no approval for {node}: {waiting:?}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ix, iy, iz) = (id_of(x), id_of(y), id_of(z));
    assert!(
        waiting.iter().all(|a| a["state"] == "awaiting"),
        "{waiting:?}"
    );
    // Nothing runs while it waits; x touched twice asks once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(approvals(&o).len(), 3, "{:?}", approvals(&o));
    assert_eq!(Nodes::networks(x), 1, "quarantined before approval");
    assert!(o
        .json(&["decisions", "--format", "json"])
        .as_array()
        .unwrap()
        .is_empty());

    // Approve x (by a prefix of its id), deny y.
    let ok = o.cli(&["approve", &ix[..12]]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(flat(&ok).contains("fanned out"), "{}", text(&ok));
    let no = o.cli(&["deny", &iy]);
    assert!(no.status.success(), "{}", text(&no));
    let late = o.cli(&["approve", &iy]);
    assert_eq!(late.status.code(), Some(1), "{}", text(&late));
    assert!(flat(&late).contains("is denied"), "{}", text(&late));

    // x is cut off at the site; the decision says where it is in effect.
    wait_until(Duration::from_secs(30), "x quarantined", || {
        (Nodes::networks(x) == 0).then_some(())
    });
    let ds = wait_until(Duration::from_secs(30), "x's decision in effect", || {
        let ds = o.json(&["decisions", "--format", "json"]);
        let arr = ds.as_array().unwrap().clone();
        (arr.len() == 1 && arr[0]["applied"]["edge-q"].is_string()).then_some(arr)
    });
    assert_eq!(ds[0]["id"], ix.as_str(), "{ds:?}");

    // z lapses: approving it after its expiry is refused; it never runs.
    wait_until(Duration::from_secs(30), "z expired", || {
        approvals(&o)
            .iter()
            .any(|a| a["id"] == iz.as_str() && a["state"] == "expired")
            .then_some(())
    });
    let lapsed = o.cli(&["approve", &iz]);
    assert_eq!(lapsed.status.code(), Some(1), "{}", text(&lapsed));
    assert!(
        flat(&lapsed).contains("is expired (it expired at"),
        "{}",
        text(&lapsed)
    );
    let states: Vec<(String, String)> = approvals(&o)
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (id, want) in [(&ix, "approved"), (&iy, "denied"), (&iz, "expired")] {
        assert!(
            states.iter().any(|(i, s)| i == id && s == want),
            "{id} not {want}: {states:?}"
        );
    }
    assert_eq!(Nodes::networks(y), 1, "a denied quarantine ran");
    assert_eq!(Nodes::networks(z), 1, "an expired quarantine ran");
    assert_eq!(
        o.json(&["decisions", "--format", "json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The quarantine lifted: the operator deletes x's decision, the site releases x (the
    // quarantine run rolled back: x is on its network again), once.
    let del = o.cli(&["decisions", "delete", &ix]);
    assert!(del.status.success(), "{}", text(&del));
    wait_until(Duration::from_secs(30), "x released", || {
        (Nodes::networks(x) == 1).then_some(())
    });
    wait_until(Duration::from_secs(10), "the release said", || {
        agent.log().contains("lifted: node").then_some(())
    });
    let ip = crate::docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        x,
    ]);
    assert!(
        !ip.is_empty(),
        "x has no address on its network after its release"
    );

    // An autonomous quarantine (no approval) acts at once, at the site.
    let w = &nodes.names[3];
    let ev = write(
        d.path(),
        "now.jsonl",
        &format!("{}\n", canary_port(w, 5, 2223)),
    );
    let ing = Command::new(env!("CARGO_BIN_EXE_vacsine"))
        .args(["agent", "ingest", "--from", "opencanary"])
        .arg(&ev)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(ing.status.success(), "{}", text(&ing));
    assert!(flat(&ing).contains("run here"), "{}", text(&ing));
    assert_eq!(Nodes::networks(w), 0, "not quarantined at once");

    // Never twice: x reconnected by hand, the agent restarted: it does not cut x again.
    let runs = agent.log().matches("run here").count();
    assert_eq!(runs, 1, "{}", agent.log());
    agent.kill9();
    crate::docker(&["network", "connect", &nodes.net, w]);
    let agent = Agent::start(&o, &key, "edge-q-1", &data);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(Nodes::networks(x), 1, "quarantined twice: {}", agent.log());
    assert_eq!(Nodes::networks(w), 1, "quarantined twice: {}", agent.log());
    assert!(!agent.log().contains("run here"), "{}", agent.log());
    assert!(
        !agent.log().contains("lifted: node"),
        "released twice: {}",
        agent.log()
    );
}

const LABELED: &str = r#"apiVersion: vacsine.io/v1
kind: Response
metadata:
  name: ban-in-dmz
  version: "1"
spec:
  on:
    events: [indicator]
    sources: [opencanary]
  decide:
    ban:
      for: 1h
  scope:
    labels:
      tier: dmz
  mode: autonomous
"#;

/// `vacsine agent ingest` of `line` inside `site`'s namespace: its JSON report.
fn ingest_at(site: &Site, data: &std::path::Path, dir: &std::path::Path, line: &str) -> Value {
    let ev = write(dir, &format!("{}.jsonl", site.ns), &format!("{line}\n"));
    let o = Command::new("ip")
        .args(["netns", "exec", &site.ns, env!("CARGO_BIN_EXE_vacsine")])
        .args(["agent", "ingest", "--from", "opencanary"])
        .arg(&ev)
        .arg("--data")
        .arg(data)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn nft_table(site: &Site) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", &site.ns, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Two sites, A labeled `tier=dmz` (after it was created, with `vacsine site label`), B not:
/// a Response scoped by that label decides at A (the ban in A's nft set) and not at B, and
/// its decision is fanned out to A only. The labels reach the agents signed, in the decision
/// set; `vacsine status` shows them; a bad label is refused, naming it.
#[test]
fn issue16_a_label_scoped_response_matches_only_the_sites_carrying_the_labels() {
    if !net_tools(&["ip", "nft"]) {
        return;
    }
    let _l = crate::site_lock();
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (Site::new("la", 1), Site::new("lb", 2));
    let o = Orch::start(&d.path().join("orch"), "0.0.0.0:0", 30_000);
    let resp = write(d.path(), "dmz.yaml", LABELED);
    o.json(&["push", resp.to_str().unwrap(), "--format", "json"]);
    let (da, db) = (d.path().join("agent-a"), d.path().join("agent-b"));
    let ag_a = a.agent(&o, "edge-a", &da);
    let ag_b = b.agent(&o, "edge-b", &db);
    for ag in [&ag_a, &ag_b] {
        wait_until(
            Duration::from_secs(30),
            "the bundle with the Response",
            || ag.log().contains("Response/ban-in-dmz@1").then_some(()),
        );
    }
    // Labels are checked, named when bad; a site made with labels shows them.
    let bad = o.cli(&["site", "label", "edge-a", "tier=dmz zone"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        flat(&bad).contains("\"tier\"=\"dmz zone\""),
        "{}",
        text(&bad)
    );
    o.json(&[
        "site",
        "create",
        "edge-c",
        "--label",
        "tier=core",
        "--format",
        "json",
    ]);
    let set = o.json(&[
        "site", "label", "edge-a", "tier=dmz", "room=2", "--format", "json",
    ]);
    assert_eq!(set["tier"], "dmz", "{set}");
    let set = o.json(&["site", "label", "edge-a", "room-", "--format", "json"]);
    assert!(set.get("room").is_none(), "{set}");
    let st = o.status();
    let label_of = |site: &str| {
        st["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == site)
            .unwrap()["labels"]
            .clone()
    };
    assert_eq!(label_of("edge-a"), serde_json::json!({"tier": "dmz"}));
    assert_eq!(label_of("edge-b"), serde_json::json!({}));
    assert_eq!(label_of("edge-c"), serde_json::json!({"tier": "core"}));
    let human = o.cli(&["status"]);
    assert!(text(&human).contains("labels tier=dmz"), "{}", text(&human));
    // The labels reach A's agent in its signed decision set.
    wait_until(Duration::from_secs(30), "A's labels at its agent", || {
        std::fs::read_to_string(da.join("site-labels.json"))
            .ok()
            .filter(|t| t.contains("dmz"))
    });

    let at_b = ingest_at(&b, &db, d.path(), &canary("decoy-b", 7));
    assert!(at_b["outcomes"].as_array().unwrap().is_empty(), "{at_b}");
    assert!(!nft_table(&b).contains("198.51.100.7"), "{}", nft_table(&b));
    let at_a = ingest_at(&a, &da, d.path(), &canary("decoy-a", 8));
    assert_eq!(at_a["outcomes"][0]["reason"], "decided", "{at_a}");
    assert_eq!(at_a["applied"].as_array().unwrap().len(), 1, "{at_a}");
    assert!(nft_table(&a).contains("198.51.100.8"), "{}", nft_table(&a));

    // Fanned out to A only: B never holds it.
    let ds = wait_until(
        Duration::from_secs(30),
        "the decision at the orchestrator",
        || {
            let v = o.json(&["decisions", "--format", "json"]);
            let arr = v.as_array().unwrap().clone();
            (arr.len() == 1 && arr[0]["applied"]["edge-a"].is_string()).then_some(arr)
        },
    );
    assert_eq!(ds[0]["scope"], serde_json::json!(["edge-a"]), "{ds:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!nft_table(&b).contains("198.51.100.8"), "{}", nft_table(&b));
}

const NOTE: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: note-touch
spec:
  inputs:
    who:
      type: string
  steps:
    - id: note
      uses: command
      with:
        argv: [echo, "touched {{ inputs.who }}"]
"#;

const RUN_ON_TOUCH: &str = r#"apiVersion: vacsine.io/v1
kind: Response
metadata:
  name: note-on-touch
spec:
  on:
    events: [indicator]
    sources: [opencanary]
  decide:
    workflow:
      name: note-touch
      inputs:
        who: {event: node}
  mode: orchestrated
"#;

/// A workflow run an orchestrated Response asks for waits for approval by default (a
/// workflow is disruptive), then runs at the site whose event asked for it, as a registry
/// run, with its inputs taken from the event.
#[test]
fn issue16_an_approved_workflow_run_runs_at_the_events_site() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);
    let wf = write(d.path(), "note.yaml", NOTE);
    let resp = write(d.path(), "run.yaml", RUN_ON_TOUCH);
    o.json(&[
        "push",
        wf.to_str().unwrap(),
        resp.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let data = d.path().join("agent");
    let agent = Agent::start(&o, &o.site("edge-w"), "edge-w-1", &data);
    wait_until(
        Duration::from_secs(30),
        "the bundle with the Response",
        || {
            agent
                .log()
                .contains("Response/note-on-touch@1")
                .then_some(())
        },
    );
    let ev = write(d.path(), "t.jsonl", &format!("{}\n", canary("decoy-9", 4)));
    let ing = Command::new(env!("CARGO_BIN_EXE_vacsine"))
        .args(["agent", "ingest", "--from", "opencanary"])
        .arg(&ev)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(ing.status.success(), "{}", text(&ing));
    let a = wait_until(Duration::from_secs(30), "the run awaiting approval", || {
        approvals(&o).first().cloned()
    });
    assert_eq!(a["what"], "run workflow note-touch", "{a}");
    assert_eq!(a["held"]["run"]["inputs"]["who"], "decoy-9", "{a}");
    assert!(
        o.status()["runs"].as_array().unwrap().is_empty(),
        "ran before approval"
    );
    let ok = o.cli(&["approve", a["id"].as_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        flat(&ok).contains("submitted to site edge-w"),
        "{}",
        text(&ok)
    );
    let run = wait_until(Duration::from_secs(30), "the run succeeded", || {
        o.status()["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["status"] == "succeeded")
            .cloned()
    });
    assert_eq!(run["site"], "edge-w", "{run}");
    let logs = o.cli(&["logs", run["id"].as_str().unwrap(), "--format", "json"]);
    assert!(text(&logs).contains("touched decoy-9"), "{}", text(&logs));
    // Approving again does not run it twice.
    let again = o.cli(&["approve", a["id"].as_str().unwrap()]);
    assert!(again.status.success(), "{}", text(&again));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(o.status()["runs"].as_array().unwrap().len(), 1);
}
