//! Issue 16 item 8, decoys deployed by the agent: a real OpenCanary container (image built
//! here, no registry) in the site's network namespace, a real attacker namespace touching it,
//! the site banning the attacker at once (also while cut off), no event doubled or lost across
//! an agent restart, and nothing left once the decoy is no longer declared.
//!
//! The site is a container's network namespace (`ip netns attach`), as Docker can place a
//! decoy only in the host's namespace or a container's; its web service runs in it.

use super::{net_tools, sh, text, wait_until, Orch, Site};
use crate::write;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::respond::RESPONSE;

const DECOYS: &str = "apiVersion: vacsine.io/v1
kind: Decoys
spec:
  decoys:
    - name: canary
      services: {ssh: 2222}
";

const NO_DECOYS: &str = "apiVersion: vacsine.io/v1
kind: Decoys
spec:
  decoys: []
";

/// An attacker namespace with two addresses (`src`, `src2`) linked to the site.
struct Attacker {
    ns: String,
    src: String,
    src2: String,
    /// The site's address on the link.
    site_ip: String,
}

impl Attacker {
    fn new(site: &Site, id: u32, net: u32) -> Attacker {
        let ns = format!("vsn-datk-{id}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let (src, src2) = (format!("10.{net}.210.7"), format!("10.{net}.210.8"));
        let (atk_if, site_if) = (format!("vda{id}"), format!("vds{id}"));
        let (a_ip, s_ip) = (format!("10.{net}.105.1"), format!("10.{net}.105.2"));
        sh(&format!(
            "ip netns add {ns} && ip -n {ns} link set lo up && \
             ip -n {ns} addr add {src}/32 dev lo && ip -n {ns} addr add {src2}/32 dev lo && \
             ip link add {atk_if} netns {ns} type veth peer name {site_if} netns {sns} && \
             ip -n {ns} addr add {a_ip}/30 dev {atk_if} && ip -n {ns} link set {atk_if} up && \
             ip -n {sns} addr add {s_ip}/30 dev {site_if} && ip -n {sns} link set {site_if} up && \
             ip -n {sns} route add 10.{net}.210.0/24 via {a_ip} && \
             ip -n {ns} route add {s_ip}/32 dev {atk_if} src {src}",
            sns = site.ns
        ));
        Attacker {
            ns,
            src,
            src2,
            site_ip: s_ip,
        }
    }

    /// Whether a TCP connection from `src` to the site's `port` is accepted within 1 s
    /// (sending an SSH version line when it is).
    fn touch(&self, src: &str, port: u16) -> bool {
        let code = format!(
            "import socket,time\ns=socket.socket()\ns.settimeout(1)\ns.bind(('{src}',0))\ns.connect(('{}',{port}))\ns.sendall(b'SSH-2.0-probe\\r\\n')\ntime.sleep(0.2)\ns.close()\n",
            self.site_ip
        );
        Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "timeout", "2", "python3", "-c", &code,
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Containers removed at the end, whatever happens (the decoys before the site they join).
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for c in self.0.iter().rev() {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
    }
}

fn decoy_containers(owner_filter: &str) -> Vec<String> {
    sh(&format!(
        "docker ps -a --filter label=vacsine.decoy.owner={owner_filter} --format '{{{{.Names}}}}'"
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

/// Lines of the decoy's log that are events (not OpenCanary's own messages, type 1001).
fn event_lines(log_dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(log_dir) {
        for e in rd.flatten() {
            let t = std::fs::read_to_string(e.path()).unwrap_or_default();
            n += t
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["logtype"] != 1001)
                .count();
        }
    }
    n
}

fn stored_events(data: &Path) -> usize {
    let o = Command::new("sqlite3")
        .arg(data.join("responses.db"))
        .arg("select count(*) from events")
        .output()
        .unwrap();
    text(&o).trim().parse().unwrap_or(0)
}

#[test]
fn issue16_a_decoy_deployed_by_the_agent_bans_who_touches_it_once_and_leaves_nothing_when_removed()
{
    if !net_tools(&["ip", "nft", "python3", "timeout", "sqlite3"]) || !crate::docker_available() {
        return;
    }
    let _l = crate::site_lock();
    let image = vacsine_docker::decoy::ensure_image(&|m| eprintln!("decoy image: {m}"))
        .unwrap_or_else(|e| panic!("building the decoy image: {e}"));
    let id = std::process::id() % 10_000;
    let net = 20 + id % 200;
    let d = tempfile::tempdir().unwrap();
    let mut guard = Containers(vec![]);

    // The site: a container (its web service on 8080) whose namespace is named for `ip`, with
    // a link to the host where the orchestrator listens.
    let site_c = format!("vsn-dsite-{id}");
    let _ = Command::new("docker").args(["rm", "-f", &site_c]).output();
    sh(&format!(
        "docker run -d --name {site_c} --network none --entrypoint /opt/decoy/bin/python3 {image} -m http.server 8080"
    ));
    guard.0.push(site_c.clone());
    let pid = sh(&format!("docker inspect -f '{{{{.State.Pid}}}}' {site_c}"));
    let ns = format!("vsn-ds-{id}");
    let host_if = format!("vhds{id}");
    let (host_ip, ns_ip) = (format!("10.{net}.5.1"), format!("10.{net}.5.2"));
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    sh(&format!(
        "ip netns attach {ns} {pid} && ip link add {host_if} type veth peer name eth0 netns {ns} && \
         ip addr add {host_ip}/30 dev {host_if} && ip link set {host_if} up && \
         ip -n {ns} addr add {ns_ip}/30 dev eth0 && ip -n {ns} link set eth0 up && ip -n {ns} link set lo up"
    ));
    let site = Site {
        ns: ns.clone(),
        host_if,
        host_ip,
    };
    let atk = Attacker::new(&site, id, net);

    let o = Orch::start(&d.path().join("orch"), "0.0.0.0:0", 30_000);
    let resp = write(d.path(), "ban.yaml", RESPONSE);
    let pushed = o.json(&["push", resp.to_str().unwrap(), "--format", "json"]);
    assert_eq!(pushed["entries"][0]["kind"], "Response", "{pushed}");
    let decoys = write(d.path(), "decoys.yaml", DECOYS);
    let data = d.path().join("agent-d");
    let port = o.addr().rsplit(':').next().unwrap().to_string();
    let url = format!("https://{}:{port}", site.host_ip);
    let key = o.site("edge-d");
    let env_decoys = format!("VACSINE_DECOYS={}", decoys.display());
    let via = [
        "ip",
        "netns",
        "exec",
        ns.as_str(),
        "env",
        env_decoys.as_str(),
    ];
    let mut ag = super::Agent::start_via(&via, &url, &o.pin, &key, "edge-d-1", &data);
    let owner = sh(&format!(
        "printf %s \"$(realpath {})\" | sha256sum | cut -c1-12",
        data.display()
    ));
    wait_until(
        Duration::from_secs(300),
        "the decoy deployed by the agent",
        || ag.log().contains("decoys: canary deployed").then_some(()),
    );
    let decoy_c = decoy_containers(&owner);
    assert_eq!(decoy_c.len(), 1, "{decoy_c:?}\n{}", ag.log());
    guard.0.push(decoy_c[0].clone());
    // It shares the site's namespace (it listens on the site's address).
    let mode = sh(&format!(
        "docker inspect -f '{{{{.HostConfig.NetworkMode}}}}' {}",
        decoy_c[0]
    ));
    assert!(mode.starts_with("container:"), "{mode}");
    wait_until(
        Duration::from_secs(30),
        "the bundle with the Response",
        || {
            ag.log()
                .contains("Response/ban-decoy-touch@1")
                .then_some(())
        },
    );
    assert!(
        atk.touch(&atk.src, 8080),
        "the web service is not reachable"
    );

    // Cut off from the orchestrator: the touch is decided at the site alone.
    site.cut();
    let log_dir = data.join("decoys").join("canary");
    let mut touched = None;
    let t_wait = Instant::now();
    while touched.is_none() {
        assert!(
            t_wait.elapsed() < Duration::from_secs(60),
            "the decoy never listened: {}",
            ag.log()
        );
        if atk.touch(&atk.src, 2222) {
            touched = Some(Instant::now());
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let t0 = touched.unwrap();
    wait_until(
        Duration::from_secs(10),
        "the attacker dropped at the site's web service",
        || (!atk.touch(&atk.src, 8080)).then_some(()),
    );
    eprintln!(
        "decoy touch → attacker dropped at the web service: {:?} (observed from the attacker, 1 s probes)",
        t0.elapsed()
    );
    let first = event_lines(&log_dir);
    assert!(first >= 1, "no event line in the decoy's log");
    assert!(ag.log().contains("decoys: canary: "), "{}", ag.log());

    // The agent killed; a second attacker touches the decoy while it is down; the restarted
    // agent reads on from its saved position: the new line once, the old ones not again.
    ag.kill9();
    assert!(
        atk.touch(&atk.src2, 2222),
        "the decoy stopped with the agent"
    );
    ag = super::Agent::start_via(&via, &url, &o.pin, &key, "edge-d-1", &data);
    wait_until(
        Duration::from_secs(20),
        "the second attacker banned after the restart",
        || {
            let ruleset = sh(&format!(
                "ip netns exec {ns} nft list table inet vacsine_decisions"
            ));
            ruleset.contains(&atk.src2).then_some(())
        },
    );
    assert!(
        !ag.log().contains("canary deployed"),
        "the running decoy was deployed again: {}",
        ag.log()
    );
    let lines = event_lines(&log_dir);
    assert!(lines > first, "{lines} event lines, {first} before");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stored_events(&data), lines, "events at the site vs lines");
    // Uploaded once each when the link returns.
    site.restore();
    let evs = wait_until(
        Duration::from_secs(60),
        "every decoy event at the orchestrator",
        || {
            let e = o.json(&["events", "--site", "edge-d", "--format", "json"]);
            (e.as_array().unwrap().len() >= lines).then_some(e)
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let again = o.json(&["events", "--site", "edge-d", "--format", "json"]);
    assert_eq!(again.as_array().unwrap().len(), lines, "{evs}");
    assert!(again.to_string().contains(&atk.src2), "{again}");

    // No longer declared: removed by the agent (journaled), its log read to its end and its
    // files deleted; nothing listens on its port.
    std::fs::write(&decoys, NO_DECOYS).unwrap();
    wait_until(Duration::from_secs(30), "the decoy removed", || {
        ag.log()
            .contains("decoys: canary: removed, its log read to its end and deleted")
            .then_some(())
    });
    assert!(decoy_containers(&owner).is_empty());
    assert!(!log_dir.exists());
    assert!(!data.join("decoys").join("canary.conf").exists());
    let tail_files: Vec<_> = std::fs::read_dir(data.join("tail"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(tail_files.is_empty(), "positions left: {tail_files:?}");
    let listening = sh(&format!(
        "ip netns exec {ns} cat /proc/net/tcp /proc/net/tcp6"
    ));
    assert!(
        !listening.to_uppercase().contains(":08AE 00000000:0000 0A"),
        "port 2222 still listening: {listening}"
    );
    let journal = vacsine_engine::Journal::open(&data.join("journal.db")).unwrap();
    let runs: Vec<String> = journal
        .runs(50)
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {}", r.workflow, r.status))
        .collect();
    assert!(
        runs.iter().any(|r| r == "decoy-deploy succeeded")
            && runs.iter().any(|r| r == "decoy-remove succeeded"),
        "{runs:?}"
    );
    drop(ag);
}
