//! Issue 16, adaptive response end to end: real processes of the built binary, real nftables
//! in network namespaces named and addressed from the process id. Two sites and an attacker
//! namespace linked to both; the orchestrator cut off from site A at the network level.

use super::{net_tools, sh, text, wait_until, Agent, Orch, Site};
use crate::write;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vacsine");

#[path = "taxii.rs"]
mod taxii;

/// The Response the response tests push: an OpenCanary touch bans its source for an hour,
/// once per address per 10 minutes.
pub(crate) const RESPONSE: &str = r#"apiVersion: vacsine.io/v1
kind: Response
metadata:
  name: ban-decoy-touch
  version: "1"
spec:
  on:
    events: [indicator]
    sources: [opencanary]
    observables: [ipv4, ipv6]
  decide:
    ban:
      for: 1h
  mode: autonomous
  dedupe:
    key: address
    window: 10m
  approval: none
"#;

/// An attacker namespace with one address (`src`) linked to each site namespace by its own
/// veth pair; each site routes `src` back over that link.
pub(crate) struct Attacker {
    ns: String,
    pub(crate) src: String,
    pub(crate) links: Vec<String>,
}

impl Attacker {
    pub(crate) fn new(sites: &[(&Site, u8)]) -> Attacker {
        let id = std::process::id() % 10_000;
        let net = 20 + id % 200;
        let ns = format!("vsn-atk-{id}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
        let src = format!("10.{net}.200.7");
        sh(&format!(
            "ip -n {ns} addr add {src}/32 dev lo && ip -n {ns} addr add 10.{net}.200.8/32 dev lo"
        ));
        let mut links = Vec::new();
        for (site, n) in sites {
            let (atk_if, site_if) = (format!("va{n}{id}"), format!("vs{n}{id}"));
            let (a_ip, s_ip) = (
                format!("10.{net}.{}.1", 100 + n),
                format!("10.{net}.{}.2", 100 + n),
            );
            sh(&format!(
                "ip link add {atk_if} netns {ns} type veth peer name {site_if} netns {sns} && \
                 ip -n {ns} addr add {a_ip}/30 dev {atk_if} && ip -n {ns} link set {atk_if} up && \
                 ip -n {sns} addr add {s_ip}/30 dev {site_if} && ip -n {sns} link set {site_if} up && \
                 ip -n {sns} route add 10.{net}.200.0/24 via {a_ip} && \
                 ip -n {ns} route add {s_ip}/32 dev {atk_if} src {src}",
                sns = site.ns
            ));
            links.push(s_ip);
        }
        Attacker { ns, src, links }
    }

    /// Whether a TCP connection from the attacker to `ip:port` is accepted within 1 s.
    pub(crate) fn connects(&self, ip: &str, port: u16) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "timeout", "1", "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{ip}/{port}"))
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// A TCP listener in a site's namespace (the site's web service).
pub(crate) struct Listener(Child);

impl Listener {
    pub(crate) fn start(site: &Site, port: u16) -> Listener {
        let code = format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0',{port}))\ns.listen(128)\nwhile True:\n  c,_=s.accept()\n  c.close()\n"
        );
        let c = Command::new("ip")
            .args(["netns", "exec", &site.ns, "python3", "-c", &code])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed by this test");
        Listener(c)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vacsine agent ingest` inside the site's namespace.
fn ingest(site: &Site, data: &Path, file: &Path) -> Output {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &site.ns,
            BIN,
            "agent",
            "ingest",
            "--from",
            "opencanary",
        ])
        .arg(file)
        .arg("--data")
        .arg(data)
        .args(["--format", "json"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn canary(src: &str, i: usize) -> String {
    canary_at(src, i, &format!("2026-12-07 01:00:00.{i:06}"))
}

/// An OpenCanary SSH login attempt from `src` at `time` (`YYYY-MM-DD HH:MM:SS.ffffff`, UTC).
fn canary_at(src: &str, i: usize, time: &str) -> String {
    format!(
        r#"{{"dst_host":"","dst_port":2222,"local_time":"{time}","logdata":{{"USERNAME":"root"}},"logtype":4002,"node_id":"decoy-1","src_host":"{src}","src_port":{},"utc_time":"{time}"}}"#,
        40000 + i % 20000
    )
}

/// The elements of the site's ban sets, as nft lists them.
fn banned(site: &Site) -> String {
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &site.ns,
            "nft",
            "list",
            "table",
            "inet",
            "vacsine_decisions",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The addresses in the site's ban sets (their time left aside).
fn banned_addresses(site: &Site) -> Vec<String> {
    // `elements = { a timeout 1h expires …, b … }`, wrapped over lines by nft.
    let t = banned(site);
    let mut out = Vec::new();
    let mut rest = t.as_str();
    while let Some(k) = rest.find("elements = {") {
        rest = &rest[k + "elements = {".len()..];
        let end = rest.find('}').unwrap_or(rest.len());
        for item in rest[..end].split(',') {
            if let Some(addr) = item.split_whitespace().next() {
                out.push(addr.to_string());
            }
        }
        rest = &rest[end..];
    }
    out.sort();
    out
}

fn decisions(o: &Orch) -> Vec<Value> {
    o.json(&["decisions", "--format", "json"])
        .as_array()
        .unwrap()
        .clone()
}

/// Issue 16: an OpenCanary touch at site A while A is cut off from the orchestrator: A bans
/// the address at once (the attacker's next connection to A's service fails, observed from
/// the attacker); B, not told yet, still answers. Link restored: the decision and the event
/// reach the orchestrator once, B bans the address too, A does not act again. 1,000 hits
/// from one address give one decision; hostile event content is refused with its line and
/// changes nothing.
#[test]
fn issue16_a_decoy_touch_at_a_cut_off_site_bans_there_at_once_then_at_every_site_once() {
    if !net_tools(&["ip", "nft", "python3", "timeout"]) {
        return;
    }
    let _l = crate::site_lock();
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (Site::new("ra", 1), Site::new("rb", 2));
    let atk = Attacker::new(&[(&a, 1), (&b, 2)]);
    let (a_ip, b_ip) = (atk.links[0].clone(), atk.links[1].clone());
    let _web_a = Listener::start(&a, 8080);
    let _web_b = Listener::start(&b, 8080);
    let o = Orch::start(&d.path().join("orch"), "0.0.0.0:0", 30_000);
    let resp = write(d.path(), "ban.yaml", RESPONSE);
    let pushed = o.json(&["push", resp.to_str().unwrap(), "--format", "json"]);
    assert_eq!(pushed["entries"][0]["kind"], "Response", "{pushed}");
    let (da, db) = (d.path().join("agent-a"), d.path().join("agent-b"));
    let ag_a = a.agent(&o, "edge-a", &da);
    let mut ag_b = b.agent(&o, "edge-b", &db);
    for ag in [&ag_a, &ag_b] {
        wait_until(
            Duration::from_secs(30),
            "the bundle with the Response",
            || {
                ag.log()
                    .contains("Response/ban-decoy-touch@1")
                    .then_some(())
            },
        );
    }
    wait_until(
        Duration::from_secs(10),
        "the attacker reaching both sites",
        || (atk.connects(&a_ip, 8080) && atk.connects(&b_ip, 8080)).then_some(()),
    );

    // Cut off: A decides and bans alone.
    a.cut();
    let ev = write(
        d.path(),
        "touch.jsonl",
        &format!("{}\n", canary(&atk.src, 1)),
    );
    let t0 = Instant::now();
    let out = ingest(&a, &da, &ev);
    let took = t0.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["applied"].as_array().unwrap().len(), 1, "{rep}");
    assert!(
        banned(&a).contains(&atk.src),
        "not in A's set: {}",
        banned(&a)
    );
    assert!(!atk.connects(&a_ip, 8080), "the attacker still reaches A");
    assert!(atk.connects(&b_ip, 8080), "B banned before it could know");
    eprintln!(
        "event → ban in effect at cut-off A: {took:?} (the whole `vacsine agent ingest` process)"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(decisions(&o).is_empty(), "a decision crossed a cut link");

    // Link restored: uploaded once, fanned out to B, A does not act twice.
    a.restore();
    let dec = wait_until(
        Duration::from_secs(60),
        "the decision in effect at both sites",
        || {
            let ds = decisions(&o);
            (ds.len() == 1 && ds[0]["applied"].as_object().is_some_and(|m| m.len() == 2))
                .then(|| ds[0].clone())
        },
    );
    assert_eq!(dec["origin_site"], "edge-a", "{dec}");
    assert_eq!(dec["state"], "active", "{dec}");
    assert!(dec["mitigated_ms"]["edge-a"].as_i64().is_some(), "{dec}");
    wait_until(Duration::from_secs(10), "B dropping the attacker", || {
        (!atk.connects(&b_ip, 8080)).then_some(())
    });
    assert!(!atk.connects(&a_ip, 8080));
    assert!(
        !ag_a.log().contains("newly in effect here"),
        "A acted on its own decision again: {}",
        ag_a.log()
    );
    assert!(
        ag_b.log().contains("1 newly in effect here"),
        "{}",
        ag_b.log()
    );
    assert_eq!(banned(&a).matches(&atk.src).count(), 1, "{}", banned(&a));
    let evs = o.json(&["events", "--site", "edge-a", "--format", "json"]);
    assert_eq!(evs.as_array().unwrap().len(), 1, "{evs}");

    // B's node restarts (its table gone) and its agent with it: the active decision is put
    // back at the agent's start, before any poll.
    ag_b.kill9();
    sh(&format!(
        "ip netns exec {} nft delete table inet vacsine_decisions",
        b.ns
    ));
    assert!(atk.connects(&b_ip, 8080), "the table was not removed");
    let port = o.url.rsplit(':').next().unwrap().to_string();
    let ag_b = Agent::start_via(
        &b.via(),
        &format!("https://{}:{port}", b.host_ip),
        &o.pin,
        "unused-once-enrolled",
        "edge-b-1",
        &db,
    );
    wait_until(
        Duration::from_secs(20),
        "B's decisions re-applied at start",
        || {
            ag_b.log()
                .contains("decisions: active ones re-applied (1 element(s) added, 0 deleted)")
                .then_some(())
        },
    );
    assert!(!atk.connects(&b_ip, 8080), "B's ban was not re-applied");

    // 1,000 hits from one address: one decision; the others deduplicated.
    let second = atk.src.replace(".200.7", ".200.8");
    let mut lines = String::new();
    for i in 0..1000 {
        lines.push_str(&canary(&second, i + 10));
        lines.push('\n');
    }
    let many = write(d.path(), "many.jsonl", &lines);
    let out = ingest(&a, &da, &many);
    assert!(out.status.success(), "{}", text(&out));
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes = rep["outcomes"].as_array().unwrap();
    let matched = outcomes.iter().filter(|o| o["reason"] == "decided").count();
    let dedup = outcomes
        .iter()
        .filter(|o| o["reason"] == "deduplicated")
        .count();
    assert_eq!((matched, dedup), (1, 999), "{}", rep["outcomes"][0]);
    wait_until(
        Duration::from_secs(60),
        "1,001 events and 2 decisions, each once",
        || {
            let n = o
                .json(&["events", "--limit", "5000", "--format", "json"])
                .as_array()
                .unwrap()
                .len();
            (n == 1001 && decisions(&o).len() == 2).then_some(())
        },
    );

    // By hand: a ban at B only, then lifted; a bad address is refused with the place.
    let added = o.json(&[
        "decisions",
        "add",
        "--ip",
        "198.51.100.7",
        "--for",
        "2h",
        "--scope",
        "edge-b",
        "--format",
        "json",
    ]);
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(added["scope"], serde_json::json!(["edge-b"]), "{added}");
    wait_until(
        Duration::from_secs(20),
        "B banning the operator's address",
        || {
            banned_addresses(&b)
                .contains(&"198.51.100.7".to_string())
                .then_some(())
        },
    );
    assert!(!banned_addresses(&a).contains(&"198.51.100.7".to_string()));
    let del = o.json(&["decisions", "delete", &id, "--format", "json"]);
    assert_eq!(del["state"], "deleted", "{del}");
    wait_until(
        Duration::from_secs(20),
        "B lifting the operator's ban",
        || (!banned_addresses(&b).contains(&"198.51.100.7".to_string())).then_some(()),
    );
    assert!(
        banned_addresses(&b).contains(&atk.src),
        "other bans are kept"
    );
    for (ip, want) in [
        ("203.0.113.9; nft flush ruleset", "`ip`:"),
        ("127.0.0.1", "loopback"),
        ("0.0.0.0/0", "unspecified"),
    ] {
        let out = o.cli(&["decisions", "add", "--ip", ip, "--for", "1h"]);
        assert!(!out.status.success(), "{ip}: {}", text(&out));
        assert!(text(&out).contains(want), "{ip}: {}", text(&out));
    }
    // A ban on the orchestrator's own address (as B reaches it): B refuses it, says so, and
    // keeps its link.
    let orch_ip = b.host_ip.clone();
    let bad = o.json(&[
        "decisions",
        "add",
        "--ip",
        &orch_ip,
        "--for",
        "1h",
        "--scope",
        "edge-b",
        "--format",
        "json",
    ]);
    wait_until(
        Duration::from_secs(20),
        "B refusing a ban of the orchestrator",
        || {
            ag_b.log()
                .contains("from the orchestrator refused here")
                .then_some(())
        },
    );
    assert!(
        ag_b.log().contains("the orchestrator's address"),
        "{}",
        ag_b.log()
    );
    assert!(!banned_addresses(&b).contains(&orch_ip));
    o.json(&[
        "decisions",
        "delete",
        bad["id"].as_str().unwrap(),
        "--format",
        "json",
    ]);
    let active = o.json(&[
        "decisions",
        "--active",
        "--site",
        "edge-b",
        "--format",
        "json",
    ]);
    assert_eq!(active.as_array().unwrap().len(), 2, "{active}");

    // Hostile content: a located refusal, nothing changes.
    let before = banned_addresses(&a);
    assert_eq!(before.len(), 2, "{before:?}");
    let hostile = write(
        d.path(),
        "hostile.jsonl",
        &format!(
            "{}\n{}\n",
            canary("203.0.113.5; nft flush ruleset", 1),
            canary("$(reboot)", 2)
        ),
    );
    let out = ingest(&a, &da, &hostile);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    let errs: Vec<String> = rep["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("line 1") && errs[1].starts_with("line 2"),
        "{errs:?}"
    );
    assert_eq!(rep["events"], 0);
    assert_eq!(
        banned_addresses(&a),
        before,
        "hostile input changed the sets"
    );
    // Two decisions made at A and the operator's two (deleted): nothing new.
    assert_eq!(decisions(&o).len(), 4);
}

pub(crate) fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[i.min(v.len() - 1)]
}

fn now_text() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// Benchmark (`bash bench/response.sh`), not a test: time to mitigate. (1) Event at site A
/// while cut off → ban in effect there: `N` events from `N` addresses, one `vacsine agent
/// ingest` each, timed from the event's time (written just before the call) to the call's
/// return (the nft transaction committed), and as the store records it (event → applied).
/// (2) Link up: decision applied at A → in effect at B, from the orchestrator's record of
/// both applications. Prints a table.
#[test]
#[ignore = "benchmark: bash bench/response.sh"]
fn bench_issue16_time_to_mitigate() {
    if !net_tools(&["ip", "nft", "python3", "timeout"]) {
        return;
    }
    let n: usize = std::env::var("VACSINE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let _l = crate::site_lock();
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (Site::new("ra", 1), Site::new("rb", 2));
    let atk = Attacker::new(&[(&a, 1), (&b, 2)]);
    let net = atk.src.split('.').nth(1).unwrap().to_string();
    let o = Orch::start(&d.path().join("orch"), "0.0.0.0:0", 30_000);
    let resp = write(d.path(), "ban.yaml", RESPONSE);
    o.json(&["push", resp.to_str().unwrap(), "--format", "json"]);
    let (da, db) = (d.path().join("agent-a"), d.path().join("agent-b"));
    let ag_a = a.agent(&o, "edge-a", &da);
    let ag_b = b.agent(&o, "edge-b", &db);
    for ag in [&ag_a, &ag_b] {
        wait_until(Duration::from_secs(30), "the bundle", || {
            ag.log()
                .contains("Response/ban-decoy-touch@1")
                .then_some(())
        });
    }
    let run = |tag: u8| -> (Vec<f64>, Vec<f64>) {
        let (mut wall, mut inner) = (Vec::new(), Vec::new());
        for i in 0..n {
            let src = format!("10.{net}.{tag}.{}", i + 1);
            let f = write(d.path(), &format!("e{tag}-{i}.jsonl"), "");
            let line = canary_at(&src, i, &now_text());
            std::fs::write(&f, format!("{line}\n")).unwrap();
            let t0 = Instant::now();
            let out = ingest(&a, &da, &f);
            wall.push(t0.elapsed().as_secs_f64() * 1000.0);
            assert!(out.status.success(), "{}", text(&out));
            let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
            let ap = &rep["applied"][0];
            let ev =
                chrono::DateTime::parse_from_rfc3339(ap["event_at"].as_str().unwrap()).unwrap();
            let at =
                chrono::DateTime::parse_from_rfc3339(ap["applied_at"].as_str().unwrap()).unwrap();
            inner.push((at - ev).num_microseconds().unwrap() as f64 / 1000.0);
            assert!(banned(&a).contains(&src));
            std::thread::sleep(Duration::from_millis(100));
        }
        (wall, inner)
    };
    a.cut();
    let (mut wall, mut inner) = run(201);
    a.restore();
    let (mut wall_up, mut inner_up) = run(202);
    let ds = wait_until(
        Duration::from_secs(120),
        "every decision applied at both sites",
        || {
            let ds = decisions(&o);
            (ds.len() == 2 * n
                && ds
                    .iter()
                    .all(|x| x["applied"].as_object().is_some_and(|m| m.len() == 2)))
            .then_some(ds)
        },
    );
    let ms = |t: &Value| {
        chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap())
            .unwrap()
            .timestamp_millis() as f64
    };
    let mut fan: Vec<f64> = ds
        .iter()
        .filter(|x| {
            x["decision"]["action"]["net"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("10.{net}.202.")))
        })
        .map(|x| ms(&x["applied"]["edge-b"]) - ms(&x["applied"]["edge-a"]))
        .collect();
    println!("| time to mitigate, {n} events each (debug build) | p50 ms | p99 ms |");
    println!("|---|---|---|");
    for (what, v) in [
        (
            "event → ban in effect at A, cut off (whole `vacsine agent ingest` process)",
            &mut wall,
        ),
        (
            "event → applied at A, cut off (as recorded: event_at → applied_at)",
            &mut inner,
        ),
        (
            "event → ban in effect at A, link up (whole process)",
            &mut wall_up,
        ),
        ("event → applied at A, link up (as recorded)", &mut inner_up),
        (
            "decision applied at A → in effect at B (orchestrator's records)",
            &mut fan,
        ),
    ] {
        println!(
            "| {what} | {:.1} | {:.1} |",
            percentile(v, 50.0),
            percentile(v, 99.0)
        );
    }
}

/// Events in the site's response store (the store's `id` is unique: a line fed twice is
/// stored once).
fn stored_events(data: &Path) -> usize {
    let o = Command::new("sqlite3")
        .arg(data.join("responses.db"))
        .arg("select count(*) from events")
        .output()
        .unwrap();
    text(&o).trim().parse().unwrap_or(0)
}

/// `vacsine agent ingest --follow` in the site's namespace, its reports into `out`.
fn follow(site: &Site, data: &Path, file: &Path, out: &Path) -> Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &site.ns,
            BIN,
            "agent",
            "ingest",
            "--follow",
            "--from",
            "opencanary",
        ])
        .arg(file)
        .arg("--data")
        .arg(data)
        .args(["--format", "json"])
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Events reported fed by a follower (one JSON report per line of its output).
fn fed(out: &Path) -> usize {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|r| r["events"].as_u64().unwrap_or(0) as usize)
        .sum()
}

/// Issue 16 item 8: a followed OpenCanary log across a SIGKILL, rotation (rename + new file,
/// while stopped and while running), a partial last line and copytruncate: every line's event
/// is stored once, none is lost, and a restart at the end reads nothing again.
#[test]
fn issue16_a_followed_log_loses_and_doubles_no_line_across_kill_rotation_and_truncation() {
    if !net_tools(&["ip", "nft", "python3", "sqlite3"]) {
        return;
    }
    let _l = crate::site_lock();
    let d = tempfile::tempdir().unwrap();
    let a = Site::new("ta", 1);
    let o = Orch::start(&d.path().join("orch"), "0.0.0.0:0", 30_000);
    let resp = write(d.path(), "ban.yaml", RESPONSE);
    o.json(&["push", resp.to_str().unwrap(), "--format", "json"]);
    let da = d.path().join("agent-a");
    let ag = a.agent(&o, "edge-a", &da);
    wait_until(
        Duration::from_secs(30),
        "the bundle with the Response",
        || {
            ag.log()
                .contains("Response/ban-decoy-touch@1")
                .then_some(())
        },
    );
    let src = "192.0.2.77";
    let log = d.path().join("opencanary.log");
    let mut i = 0;
    let mut lines = |n: usize| {
        let mut s = String::new();
        for _ in 0..n {
            i += 1;
            s.push_str(&canary(src, i));
            s.push('\n');
        }
        s
    };
    let append = |p: &Path, s: &str| {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    };
    let expect = |n: usize, what: &str| {
        wait_until(Duration::from_secs(20), what, || {
            (stored_events(&da) == n).then_some(())
        });
    };

    append(&log, &format!("{}this is not an event\n", lines(5)));
    let out1 = d.path().join("follow-1.jsonl");
    let mut f1 = follow(&a, &da, &log, &out1);
    expect(5, "the first 5 lines stored");
    wait_until(Duration::from_secs(5), "the first report", || {
        std::fs::read_to_string(&out1)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&out1)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["offset"], 0, "{first}");
    let errors = first["errors"].as_array().unwrap();
    assert!(
        errors.len() == 1 && errors[0].as_str().unwrap().starts_with("line 6"),
        "the bad line refused with its line, the good ones stored: {first}"
    );
    // 3 lines and half of a fourth: the half waits for its newline.
    let fourth = lines(1);
    let (head, tail) = fourth.split_at(fourth.len() / 2);
    append(&log, &format!("{}{head}", lines(3)));
    expect(8, "8 lines stored");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(stored_events(&da), 8, "a partial line is not fed");
    assert_eq!(fed(&out1), 8, "each line fed once");

    // SIGKILL; meanwhile the line completes, 2 more, the log rotates, 4 in the new file.
    f1.kill().unwrap();
    f1.wait().unwrap();
    append(&log, &format!("{tail}{}", lines(2)));
    std::fs::rename(&log, d.path().join("opencanary.log.1")).unwrap();
    append(&log, &lines(4));
    let out2 = d.path().join("follow-2.jsonl");
    let mut f2 = follow(&a, &da, &log, &out2);
    expect(15, "the rotated file read to its end, then the new one");
    // Rotation while running: a last line into the old file, then rename + a new file.
    append(&log, &lines(1));
    std::fs::rename(&log, d.path().join("opencanary.log.1")).unwrap();
    // Its writer's last line, after the rename (it has not reopened the path yet), without
    // its newline: taken once the writer has moved on to the new file.
    append(&d.path().join("opencanary.log.1"), lines(1).trim_end());
    append(&log, &lines(2));
    expect(19, "rotation while running");
    // copytruncate: the file emptied in place, then 3 lines, longer than what was read.
    std::fs::copy(&log, d.path().join("opencanary.log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &lines(3));
    expect(22, "a truncated file read from its start");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(fed(&out2), 22 - 8, "each line fed once by the second run");
    f2.kill().unwrap();
    f2.wait().unwrap();

    // A restart reads nothing again.
    let out3 = d.path().join("follow-3.jsonl");
    let mut f3 = follow(&a, &da, &log, &out3);
    std::thread::sleep(Duration::from_millis(1500));
    f3.kill().unwrap();
    f3.wait().unwrap();
    assert_eq!(fed(&out3), 0, "nothing fed twice after a restart");
    assert_eq!(stored_events(&da), 22);
    let pos: Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(da.join("tail"))
                .unwrap()
                .flatten()
                .next()
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        pos["offset"].as_u64().unwrap(),
        std::fs::metadata(&log).unwrap().len(),
        "{pos}"
    );
}
