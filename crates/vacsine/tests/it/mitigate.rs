//! Benchmark (`bash bench/mitigate.sh`), not a test: event at a cut-off edge → the attacker's
//! packet dropped (issue 16), through the path a running site uses: a followed log
//! (`vacsine agent ingest --follow`, as the agent follows its decoys' logs). Each event is
//! a new attacker address; a prober in the attacker's namespace connects to the site's web
//! service every millisecond and reports the wall-clock time of the first SYN that is
//! dropped; the figure is that time minus the time the line was written.

use super::respond::Listener;
use super::{net_tools, sh, text, wait_until, Orch, Site};
use crate::write;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::cut_million::RESPONSE;

/// Reads `SRC IP PORT` lines; for each, waits until `SRC` reaches `IP:PORT`, says `ready`,
/// then connects every millisecond (50 ms timeout) and prints the wall-clock nanoseconds at
/// which the first attempt that fails started.
const PROBER: &str = r#"
import socket, sys, time
def attempt(src, ip, port, t):
    s = socket.socket()
    try:
        s.bind((src, 0)); s.settimeout(t); s.connect((ip, port)); return True
    except OSError:
        return False
    finally:
        s.close()
for line in sys.stdin:
    src, ip, port = line.split(); port = int(port)
    while not attempt(src, ip, port, 0.5):
        time.sleep(0.01)
    print("ready", flush=True)
    while True:
        t = time.time_ns()
        if not attempt(src, ip, port, 0.05):
            print(t, flush=True)
            break
        time.sleep(0.001)
"#;

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

#[test]
#[ignore = "benchmark: bash bench/mitigate.sh"]
fn bench_issue16_event_at_a_cut_off_edge_to_the_attackers_packet_dropped() {
    if !net_tools(&["ip", "nft", "python3"]) {
        return;
    }
    let n: usize = std::env::var("VACSINE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let _l = crate::site_lock();
    let d = tempfile::tempdir().unwrap();
    let a = Site::new("mt", 4);
    let id = std::process::id() % 10_000;
    let net = 20 + id % 200;
    // The attacker: a /24 of its own addresses (one per event), linked to the site.
    let ns = format!("vsn-matk-{id}");
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    let (a_ip, s_ip) = (format!("10.{net}.104.1"), format!("10.{net}.104.2"));
    sh(&format!(
        "ip netns add {ns} && ip -n {ns} link set lo up && ip -n {ns} addr add 10.{net}.220.1/24 dev lo && \
         ip link add vma{id} netns {ns} type veth peer name vms{id} netns {sns} && \
         ip -n {ns} addr add {a_ip}/30 dev vma{id} && ip -n {ns} link set vma{id} up && \
         ip -n {sns} addr add {s_ip}/30 dev vms{id} && ip -n {sns} link set vms{id} up && \
         ip -n {sns} route add 10.{net}.220.0/24 via {a_ip}",
        sns = a.ns
    ));
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _ns = Ns(ns.clone());
    let _web = Listener::start(&a, 8080);
    let o = Orch::start(&d.path().join("orch"), "0.0.0.0:0", 30_000);
    let resp = write(d.path(), "ban.yaml", RESPONSE);
    o.json(&["push", resp.to_str().unwrap(), "--format", "json"]);
    let data = d.path().join("agent-a");
    let ag = a.agent(&o, "edge-mt", &data);
    wait_until(Duration::from_secs(30), "the bundle", || {
        ag.log()
            .contains("Response/ban-decoy-touch@1")
            .then_some(())
    });
    a.cut();
    let log = d.path().join("canary.log");
    std::fs::write(&log, "").unwrap();
    let mut follower = Command::new("ip")
        .args(["netns", "exec", &a.ns])
        .arg(env!("CARGO_BIN_EXE_vacsine"))
        .args(["agent", "ingest", "--follow", "--from", "opencanary"])
        .arg(&log)
        .arg("--data")
        .arg(&data)
        .args(["--format", "json"])
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("VACSINE_BENCH_LOG") {
            Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
            None => Stdio::null(),
        })
        .spawn()
        .unwrap();
    let mut prober = Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-c", PROBER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = prober.stdin.take().unwrap();
    let mut from = BufReader::new(prober.stdout.take().unwrap());
    let mut ms = Vec::new();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for i in 0..n {
        let src = format!("10.{net}.220.{}", 10 + i);
        writeln!(to, "{src} {s_ip} 8080").unwrap();
        to.flush().unwrap();
        let mut l = String::new();
        from.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "ready", "prober: {l}");
        let t = chrono::Utc::now();
        let written = now_ns();
        let time = t.format("%Y-%m-%d %H:%M:%S%.6f");
        writeln!(
            f,
            r#"{{"dst_host":"","dst_port":2222,"local_time":"{time}","logdata":{{"USERNAME":"root"}},"logtype":4002,"node_id":"decoy-1","src_host":"{src}","src_port":{},"utc_time":"{time}"}}"#,
            40000 + i
        )
        .unwrap();
        f.flush().unwrap();
        l.clear();
        from.read_line(&mut l).unwrap();
        let dropped: i128 = l.trim().parse().unwrap_or_else(|_| panic!("prober: {l}"));
        ms.push((dropped - written) as f64 / 1e6);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(to);
    let _ = prober.kill();
    let _ = prober.wait();
    let _ = follower.kill();
    let _ = follower.wait();
    let banned = sh(&format!(
        "ip netns exec {} nft list table inet vacsine_decisions",
        a.ns
    ));
    assert!(banned.contains(&format!("10.{net}.220.10")), "{banned}");
    let _ = text;
    let p = |v: &mut Vec<f64>, q: f64| super::respond::percentile(v, q);
    println!(
        "| event written to a followed log at a cut-off site → attacker's SYN dropped, {n} events | p50 ms | p99 ms | max ms |"
    );
    println!("|---|---|---|---|");
    let max = ms.iter().cloned().fold(0.0, f64::max);
    println!(
        "| {} build | {:.1} | {:.1} | {:.1} |",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        p(&mut ms, 50.0),
        p(&mut ms, 99.0),
        max
    );
}
