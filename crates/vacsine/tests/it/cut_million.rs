//! Benchmark (`bash bench/cut_million.sh`), not a test: store and forward across a cut
//! (issue 16 item 5). A site in a network namespace, its link to the orchestrator cut at the
//! network level; `N` Suricata EVE alerts (1,000,000 by default, each distinct) fed at the
//! site with `vacsine agent ingest` while the link is down; the cut held `CUT_S` seconds in
//! all; the link restored; the orchestrator's store counted until it holds them all: none
//! lost (count = N), none doubled (distinct ids = rows = N, still so a while later). Prints
//! the ingest rate, the upload time and the agent's disk use.

use super::{net_tools, sh, text, wait_until, Orch, Site};
use crate::write;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Bans without dedupe: every event is decided on its own (the benchmarks measure that path).
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
  approval: none
"#;

/// Lines per `vacsine agent ingest` call (about 30 MB, under its 64 MiB input limit).
const CHUNK: usize = 100_000;

fn du(p: &Path) -> u64 {
    sh(&format!("du -sb {} | cut -f1", p.display()))
        .parse()
        .unwrap_or(0)
}

/// Rows of the orchestrator's events (this bench's site is the only one), counted on the
/// index: cheap enough to ask every 2 s while the upload runs.
fn orch_rows(orch_data: &Path) -> u64 {
    let o = Command::new("sqlite3")
        .arg(orch_data.join("orchestrator.db"))
        .arg("select count(*) from response_events")
        .output()
        .unwrap();
    text(&o).trim().parse().unwrap_or(0)
}

/// (rows, distinct ids) of the site's events in the orchestrator's store (reads every row).
fn orch_events(orch_data: &Path, site: &str) -> (u64, u64) {
    let o = Command::new("sqlite3")
        .arg(orch_data.join("orchestrator.db"))
        .arg(format!(
            "select count(*), count(distinct id) from response_events where site = '{site}'"
        ))
        .output()
        .unwrap();
    let t = text(&o);
    let mut it = t.trim().split('|').map(|x| x.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

#[test]
#[ignore = "benchmark: bash bench/cut_million.sh"]
fn bench_issue16_a_million_events_across_a_cut_none_lost_none_doubled() {
    if !net_tools(&["ip", "sqlite3", "du"]) {
        return;
    }
    let env = |k: &str, d: u64| -> u64 {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("VACSINE_BENCH_EVENTS", 1_000_000) as usize;
    let cut_s = env("VACSINE_BENCH_CUT_S", 600);
    let _l = crate::site_lock();
    let d = tempfile::tempdir().unwrap();
    let a = Site::new("cm", 3);
    let orch_data = d.path().join("orch");
    let o = Orch::start(&orch_data, "0.0.0.0:0", 30_000);
    let resp = write(d.path(), "ban.yaml", RESPONSE);
    o.json(&["push", resp.to_str().unwrap(), "--format", "json"]);
    let data = d.path().join("agent-a");
    let ag = a.agent(&o, "edge-cm", &data);
    wait_until(Duration::from_secs(30), "the bundle", || {
        ag.log()
            .contains("Response/ban-decoy-touch@1")
            .then_some(())
    });
    let before = du(&data);

    a.cut();
    let cut_at = Instant::now();
    let mut ingest_time = Duration::ZERO;
    let mut fed = 0usize;
    let file = d.path().join("chunk.jsonl");
    while fed < n {
        let take = CHUNK.min(n - fed);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in fed..fed + take {
            writeln!(
                f,
                r#"{{"timestamp":"2026-12-07T01:00:00.000000+0000","flow_id":{i},"event_type":"alert","src_ip":"198.18.{}.{}","src_port":{},"dest_ip":"192.0.2.1","dest_port":80,"proto":"TCP","alert":{{"signature_id":2000001,"signature":"bench probe","severity":2}}}}"#,
                (i >> 8) & 0xff,
                i & 0xff,
                1024 + i % 60000
            )
            .unwrap();
        }
        f.flush().unwrap();
        drop(f);
        let t0 = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", &a.ns])
            .arg(env!("CARGO_BIN_EXE_vacsine"))
            .args(["agent", "ingest", "--from", "eve"])
            .arg(&file)
            .arg("--data")
            .arg(&data)
            .args(["--format", "json"])
            .output()
            .unwrap();
        ingest_time += t0.elapsed();
        assert!(out.status.success(), "{}", text(&out));
        let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            rep["new_events"],
            take,
            "{}",
            &text(&out)[..2000.min(text(&out).len())]
        );
        fed += take;
        eprintln!(
            "fed {fed} events ({:.0}/s so far)",
            fed as f64 / ingest_time.as_secs_f64()
        );
    }
    let held = du(&data);
    assert_eq!(orch_rows(&orch_data), 0, "events crossed the cut");
    let wait = Duration::from_secs(cut_s).saturating_sub(cut_at.elapsed());
    eprintln!("holding the cut {wait:?} more");
    std::thread::sleep(wait);
    let cut_for = cut_at.elapsed();
    assert_eq!(orch_rows(&orch_data), 0, "events crossed the cut");

    a.restore();
    let up = Instant::now();
    let mut last = 0;
    wait_until(
        Duration::from_secs(3600),
        "every event at the orchestrator",
        || {
            let rows = orch_rows(&orch_data);
            let step = (n as u64 / 10).max(1);
            if rows / step != last / step {
                eprintln!("{rows} at the orchestrator after {:?}", up.elapsed());
            }
            last = rows;
            std::thread::sleep(Duration::from_secs(2));
            (rows as usize >= n).then_some(())
        },
    );
    let upload = up.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let (rows, distinct) = orch_events(&orch_data, "edge-cm");
    assert_eq!(rows as usize, n, "lost or doubled");
    assert_eq!(distinct, rows, "doubled");
    let status = Command::new(env!("CARGO_BIN_EXE_vacsine"))
        .args(["agent", "status", "--format", "json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["pending"], 0, "{st}");
    let after = du(&data);
    if std::env::var("VACSINE_BENCH_LOG").is_ok() {
        eprintln!("{}", ag.log());
    }
    println!("| store and forward across a cut, {n} EVE events | figure |");
    println!("|---|---|");
    println!(
        "| cut held (network level) | {:.0} s |",
        cut_for.as_secs_f64()
    );
    println!(
        "| ingest at the cut-off site ({} `vacsine agent ingest` calls of {CHUNK}) | {:.0} events/s ({:.1} s) |",
        n.div_ceil(CHUNK),
        n as f64 / ingest_time.as_secs_f64(),
        ingest_time.as_secs_f64()
    );
    println!(
        "| upload after the link returned, until the orchestrator held all | {:.1} s ({:.0} events/s) |",
        upload.as_secs_f64(),
        n as f64 / upload.as_secs_f64()
    );
    println!("| at the orchestrator: rows / distinct ids | {rows} / {distinct} |");
    println!(
        "| agent data folder: before / holding them / after upload | {} / {} / {} |",
        mib(before),
        mib(held),
        mib(after)
    );
}
