//! Issue 17, scheduled assessments end to end: real processes of the built binary, a real
//! Debian container as the target, a site in a network namespace (named and addressed from
//! the process id) whose link to the orchestrator is cut at the network level, and Debian's
//! `nmap` for the scans.

use super::{free_port, net_tools, sh, wait_until, Agent, Orch, Site};
use crate::{docker, docker_available, write};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const POLICY: &str = r#"apiVersion: vacsine.io/v1
kind: Policy
metadata:
  name: sched-baseline
spec:
  requirements:
    - id: marker-not-world-writable
      title: The marker file is not world-writable
      severity: high
      check:
        file: {path: /etc/vacsine-marker, maxMode: "0644"}
      references:
        anssi-bp28: [R50]
        cis-debian-linux-12-v1.1.0: ["7.1.1"]
    - id: marker-exists
      title: The marker file exists
      severity: low
      check:
        file: {path: /etc/vacsine-marker, exists: true}
      references:
        anssi-bp28: [R51]
"#;

/// A Debian container of the demo's base image, removed at the end.
struct Container(String);

impl Container {
    fn start(name: &str, network: &str) -> Option<Container> {
        if !docker_available() {
            return None;
        }
        let tag = vacsine_docker::demo::debian_base_tag();
        if let Err(e) =
            vacsine_docker::debian::ensure_image(&tag, vacsine_docker::demo::DEBIAN_PACKAGES)
        {
            assert!(
                std::env::var("VACSINE_REQUIRE_DOCKER").is_err(),
                "the Debian base image cannot be built: {e}"
            );
            eprintln!("skipping: the Debian base image cannot be built: {e}");
            return None;
        }
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", name])
            .output();
        docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            &tag,
            "sleep",
            "infinity",
        ]);
        Some(Container(name.to_string()))
    }

    fn exec(&self, script: &str) -> String {
        docker(&["exec", &self.0, "sh", "-c", script])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

fn schedule(name: &str, container: &str, every: &str, what: &str) -> String {
    format!(
        r#"apiVersion: vacsine.io/v1
kind: Schedule
metadata:
  name: {name}
spec:
  every: {every}
  sites: [edge]
  target:
    apiVersion: vacsine.io/v1
    kind: Target
    metadata: {{name: edge-web}}
    spec:
      driver: docker
      nodes:
        - {{name: web, container: {container}, roles: [web]}}
{what}"#
    )
}

fn posture(o: &Orch, extra: &[&str]) -> Value {
    let mut args = vec!["posture", "--site", "edge", "--format", "json"];
    args.extend_from_slice(extra);
    let out = o.cli(&args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("posture: {e}: {}", super::text(&out)))
}

fn site_of(v: &Value) -> Value {
    v["sites"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["site"] == "edge"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The keys of the assessments the agent queued, in its log.
fn queued(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split("queued as ").nth(1))
        .map(|k| k.trim().to_string())
        .collect()
}

fn events(o: &Orch) -> Vec<Value> {
    let v = o.json(&["events", "--site", "edge", "--format", "json"]);
    v.as_array().cloned().unwrap_or_default()
}

fn push(o: &Orch, dir: &Path, files: &[(&str, &str)]) {
    for (name, body) in files {
        let f = write(dir, name, body);
        let out = o.cli(&["push", f.to_str().unwrap(), "--format", "json"]);
        assert!(out.status.success(), "push {name}: {}", super::text(&out));
    }
}

/// A schedule checks a policy on a real Debian container at a site every 2 s; the site is cut
/// off: the agent goes on assessing from the bundle it holds, a requirement that passed and
/// now fails there is a `requirement_changed` event, and every assessment made while cut off
/// reaches the orchestrator once the link returns, exactly once. `vacsine posture` shows
/// the failing requirement with its evidence, the ANSSI control failing, and the trend.
#[test]
fn issue17_a_schedule_at_a_cut_off_site_uploads_its_results_once_and_a_drift_is_an_event() {
    if !net_tools(&["ip"]) {
        return;
    }
    let _l = crate::site_lock();
    let id = std::process::id();
    let Some(web) = Container::start(&format!("vsn-sched-web-{id}"), "none") else {
        return;
    };
    web.exec("echo marker > /etc/vacsine-marker && chmod 0644 /etc/vacsine-marker");
    let d = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let o = Orch::start_with(
        &d.path().join("orch"),
        "0.0.0.0:0",
        30_000,
        &["--metrics-listen", &metrics],
    );
    // Refused before anything is kept: a typo, a port list nmap would misread.
    let bad = write(
        d.path(),
        "bad.yaml",
        &schedule(
            "bad",
            &web.0,
            "2s",
            "  check: {policy: sched-baseline}\n  evry: 1m\n",
        ),
    );
    let out = o.cli(&["push", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(super::text(&out).contains("evry"), "{}", super::text(&out));
    push(
        &o,
        d.path(),
        &[
            ("policy.yaml", POLICY),
            (
                "schedule.yaml",
                &schedule(
                    "edge-baseline",
                    &web.0,
                    "2s",
                    "  check: {policy: sched-baseline}\n",
                ),
            ),
        ],
    );
    let site = Site::new("sc", 1);
    let data = d.path().join("agent");
    let mut agent = site.agent(&o, "edge", &data);
    wait_until(
        Duration::from_secs(60),
        "a first assessment at the orchestrator",
        || {
            let s = site_of(&posture(&o, &["--window", "1h"]));
            (s["passing"] == 2).then_some(())
        },
    );

    // Cut off: the schedule goes on; the file is made world-writable there.
    site.cut();
    let before_cut = queued(&agent.log()).len();
    wait_until(Duration::from_secs(30), "assessments while cut off", || {
        (queued(&agent.log()).len() >= before_cut + 2).then_some(())
    });
    web.exec("chmod 0666 /etc/vacsine-marker");
    wait_until(
        Duration::from_secs(30),
        "the drift seen at the cut-off site",
        || {
            agent
                .log()
                .contains("event requirement_changed")
                .then_some(())
        },
    );
    wait_until(
        Duration::from_secs(30),
        "assessments after the drift",
        || (queued(&agent.log()).len() >= before_cut + 4).then_some(()),
    );
    // Nothing reached the orchestrator meanwhile.
    let s = site_of(&posture(&o, &["--window", "1h"]));
    assert_eq!(s["failing"], 0, "{s}");
    assert!(
        s["assessments"].as_u64().unwrap() <= before_cut as u64 + 1,
        "{s}"
    );

    // The link returns; the agent is stopped once its outbox is empty, so that the count of
    // assessments it made is final.
    site.restore();
    wait_until(
        Duration::from_secs(60),
        "the drift at the orchestrator",
        || {
            let s = site_of(&posture(&o, &["--window", "1h"]));
            (s["failing"] == 1).then_some(())
        },
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &agent.pid().to_string()])
        .output();
    wait_until(Duration::from_secs(30), "the agent stopped", || {
        agent.exited().then_some(())
    });
    let made = queued(&agent.log());
    let mut unique = made.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), made.len(), "each key queued once");
    let log = agent.log();
    assert!(
        log.contains("outbox empty"),
        "the agent stopped with items left: {log}"
    );
    let v = posture(&o, &["--window", "1h", "--bucket", "1s"]);
    let s = site_of(&v);
    assert_eq!(
        s["assessments"].as_u64().unwrap(),
        made.len() as u64,
        "every assessment made (while cut off too) kept exactly once: {s}"
    );
    let failing = &s["failing_now"][0];
    assert_eq!(failing["item"], "marker-not-world-writable", "{s}");
    assert_eq!(failing["node"], "web");
    assert!(
        failing["evidence"].as_str().unwrap().contains("666"),
        "the evidence says what was seen: {failing}"
    );
    let r50 = v["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["control"] == "R50")
        .unwrap_or_else(|| panic!("no R50 in {v}"));
    assert_eq!(r50["status"], "fail");
    // The trend: passing first, failing after the drift.
    let trend: Vec<(i64, i64)> = v["trend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["passing"].as_i64().unwrap(),
                p["failing"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(trend.first(), Some(&(2, 0)), "{trend:?}");
    assert_eq!(trend.last(), Some(&(1, 1)), "{trend:?}");
    let anssi: Vec<(u64, u64)> = v["control_trend"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["framework"] == "anssi-bp28")
        .map(|p| {
            (
                p["passing"].as_u64().unwrap(),
                p["failing"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        anssi.contains(&(2, 0)) && anssi.last() == Some(&(1, 1)),
        "{anssi:?}"
    );
    // `--framework cis`: only the requirement it references counts.
    let cis = site_of(&posture(&o, &["--window", "1h", "--framework", "cis"]));
    assert_eq!(
        (cis["passing"].as_u64(), cis["failing"].as_u64()),
        (Some(0), Some(1))
    );
    // The human view exits 2 (failing now) and shows the trend.
    let human = o.cli(&["posture", "--site", "edge", "--window", "1h"]);
    assert_eq!(human.status.code(), Some(2), "{}", super::text(&human));
    assert!(super::text(&human).contains("Trend"));

    // The drift reached the event pipeline: one `requirement_changed` event, once.
    let drift: Vec<Value> = events(&o)
        .into_iter()
        .filter(|e| e["event"]["kind"] == "requirement_changed")
        .collect();
    assert_eq!(drift.len(), 1, "{drift:?}");
    let e = &drift[0]["event"];
    assert_eq!(e["fields"]["requirement"], "marker-not-world-writable");
    assert_eq!(e["fields"]["schedule"], "edge-baseline");
    assert_eq!(e["node"], "web");
    // The gauges.
    let metrics = sh(&format!("curl -s http://{metrics}/metrics"));
    assert!(
        metrics.contains("vacsine_posture_failing{site=\"edge\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("vacsine_posture_controls_failing{site=\"edge\",framework=\"anssi-bp28\"} 1"),
        "{metrics}"
    );
}

/// A schedule scans a Debian container from the agent's machine with Debian's `nmap`: the
/// first scan is the baseline; a port opened after it (nginx started in the container) is a
/// `vulnerability` event at the orchestrator, and shown as exposure by `vacsine posture`.
#[test]
fn issue17_a_scan_finds_a_newly_opened_port_and_emits_an_event() {
    if !net_tools(&["nmap"]) {
        return;
    }
    let id = std::process::id();
    let Some(web) = Container::start(&format!("vsn-scan-web-{id}"), "bridge") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);
    push(
        &o,
        d.path(),
        &[(
            "scan.yaml",
            &schedule(
                "edge-exposure",
                &web.0,
                "2s",
                "  scan: {from: agent, ports: \"22,80,8080\"}\n",
            ),
        )],
    );
    let key = o.site("edge");
    let agent = Agent::start(&o, &key, "edge-1", &d.path().join("agent"));
    wait_until(Duration::from_secs(60), "the baseline scan", || {
        agent
            .log()
            .contains("schedule edge-exposure (scan): assessed")
            .then_some(())
    });
    web.exec("nginx");
    wait_until(Duration::from_secs(60), "the new open port seen", || {
        agent.log().contains("new open port tcp/80").then_some(())
    });
    let ev = wait_until(
        Duration::from_secs(30),
        "the event at the orchestrator",
        || {
            events(&o)
                .into_iter()
                .find(|e| e["event"]["fields"]["change"] == "new_open_port")
        },
    );
    let e = &ev["event"];
    assert_eq!(e["kind"], "vulnerability");
    assert_eq!(e["fields"]["port"], "80");
    assert_eq!(e["node"], "web");
    // Once: later scans see the port open as before.
    std::thread::sleep(Duration::from_secs(5));
    let n = events(&o)
        .iter()
        .filter(|e| e["event"]["fields"]["change"] == "new_open_port")
        .count();
    assert_eq!(n, 1);
    let v = posture(&o, &["--window", "1h"]);
    let exposure = v["exposure"].as_array().unwrap();
    assert_eq!(exposure.len(), 1, "{v}");
    assert_eq!(exposure[0]["port"], "tcp/80");
}
