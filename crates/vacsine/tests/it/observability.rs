//! Issue 17: a real `prometheus` server scrapes the orchestrator's `/metrics`; step records
//! reach a Loki push receiver (no Loki server can run here: a receiver in the test speaks
//! the documented push API) once each, after it was down and the orchestrator restarted.

use super::{submit, wait_until, workflow, Agent, Orch};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A loopback port free now (bound then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on `addr` over plain HTTP/1.0: status and body.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let status = r.split_whitespace().nth(1)?.parse().ok()?;
    let body = r.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

fn url_encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a PromQL instant query with one result, when it has one.
fn prom_value(prom: &str, query: &str) -> Option<f64> {
    let (st, body) = http_get(prom, &format!("/api/v1/query?query={}", url_encode(query)))?;
    if st != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_present() -> bool {
    let found = Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("VACSINE_REQUIRE_PROMETHEUS").is_none(),
            "VACSINE_REQUIRE_PROMETHEUS is set and `prometheus` is not installed (Debian package `prometheus`)"
        );
        eprintln!("skipped: `prometheus` is not installed (Debian package `prometheus`; set VACSINE_REQUIRE_PROMETHEUS=1 to require it)");
    }
    found
}

#[test]
fn prometheus_scrapes_runs_by_status_and_agents_online() {
    if !prometheus_present() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let o = Orch::start_with(
        &d.path().join("orch"),
        "127.0.0.1:0",
        3000,
        &["--metrics-listen", &metrics],
    );
    // Least privilege: nothing but /metrics on that listener.
    let (st, _) = http_get(&metrics, "/v1/runs").unwrap();
    assert_eq!(st, 404);
    let key = o.site("edge-p");
    o.site("edge-away");
    let _a = Agent::start(&o, &key, "edge-p-1", &d.path().join("agent"));
    let wf = workflow(d.path(), "prom", &[("one", "true"), ("two", "true")]);
    let ok: Vec<String> = (0..2).map(|_| submit(&o, &wf, "edge-p")).collect();
    let queued = submit(&o, &wf, "edge-away");
    wait_until(Duration::from_secs(60), "both runs succeeded", || {
        ok.iter()
            .all(|id| o.run(id)["status"] == "succeeded")
            .then_some(())
    });
    assert_eq!(o.run(&queued)["status"], "queued");

    let prom = format!("127.0.0.1:{}", free_port());
    let cfg = d.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: vacsine\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(d.path().join("prometheus.log")).unwrap();
    let _p = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                d.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let expect = [
        ("up{job=\"vacsine\"}", 1.0),
        ("vacsine_runs{status=\"succeeded\"}", 2.0),
        ("vacsine_runs{status=\"queued\"}", 1.0),
        ("vacsine_runs{status=\"failed\"}", 0.0),
        ("vacsine_agents_online", 1.0),
        ("vacsine_agents", 1.0),
        // Two runs of two steps: at least one record each with a duration.
        ("vacsine_step_duration_seconds_count >= bool 4", 1.0),
        ("vacsine_dispatch_latency_seconds_count >= bool 2", 1.0),
        (
            "sum(vacsine_http_requests_total{route=\"/v1/runs\"}) >= bool 3",
            1.0,
        ),
    ];
    wait_until(
        Duration::from_secs(60),
        "Prometheus scraping the expected series",
        || {
            let bad: Vec<String> = expect
                .iter()
                .filter_map(|(q, want)| {
                    let got = prom_value(&prom, q);
                    (got != Some(*want)).then(|| format!("{q}: {got:?} (want {want})"))
                })
                .collect();
            if !bad.is_empty() {
                eprintln!("not yet: {bad:?}");
            }
            bad.is_empty().then_some(())
        },
    );
    // No run id in any label.
    let (_, text) = http_get(&metrics, "/metrics").unwrap();
    for id in ok.iter().chain([&queued]) {
        assert!(!text.contains(id.as_str()), "run id {id} in /metrics");
    }
}

/// A Loki push receiver: answers 500 to its first request, 204 to the next; keeps the
/// bodies it accepted.
fn receiver(l: TcpListener, got: Arc<Mutex<Vec<Value>>>) {
    std::thread::spawn(move || {
        let mut first = true;
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                assert!(
                    line.starts_with("POST /loki/api/v1/push "),
                    "not a push: {line}"
                );
                let mut len = 0usize;
                let mut json = false;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim_end().to_ascii_lowercase();
                    if h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if h.starts_with("content-type:") && h.contains("application/json") {
                        json = true;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                assert!(json, "push without Content-Type: application/json");
                if first {
                    first = false;
                    let _ = s.write_all(
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\ndown",
                    );
                    continue;
                }
                got.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).expect("push body is JSON"));
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
            }
        }
    });
}

fn record_lines(got: &[Value]) -> Vec<(String, BTreeMap<String, String>, String)> {
    let mut out = vec![];
    for body in got {
        for s in body["streams"].as_array().unwrap() {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(s["stream"].clone()).unwrap();
            for v in s["values"].as_array().unwrap() {
                out.push((
                    v[0].as_str().unwrap().to_string(),
                    labels.clone(),
                    v[1].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

#[test]
fn loki_push_delivers_every_step_record_once_after_loki_was_down_and_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let loki = format!("http://127.0.0.1:{port}");
    let args = ["--loki-url", loki.as_str(), "--loki-batch", "2"];
    let data = d.path().join("orch");
    let mut o = Orch::start_with(&data, "127.0.0.1:0", 3000, &args);
    let key = o.site("edge-l");
    let _a = Agent::start(&o, &key, "edge-l-1", &d.path().join("agent"));
    let wf = workflow(
        d.path(),
        "loki",
        &[
            ("one", "echo one"),
            ("two", "echo two"),
            ("three", "echo three"),
        ],
    );
    let run = submit(&o, &wf, "edge-l");
    wait_until(Duration::from_secs(60), "the run succeeded", || {
        (o.run(&run)["status"] == "succeeded").then_some(())
    });
    let records = o.run(&run)["records"].as_i64().unwrap();
    assert!(records >= 3, "{records}");
    // Loki down all along, and the orchestrator killed (SIGKILL): the backlog is in the data
    // folder.
    o.kill9();
    let spool = std::fs::read_to_string(data.join("loki-spool.jsonl")).expect("spool written");
    assert_eq!(spool.lines().count() as i64, records, "{spool}");
    // Loki comes up (its first answer a 500), the orchestrator starts again.
    let got = Arc::new(Mutex::new(Vec::new()));
    receiver(TcpListener::bind(("127.0.0.1", port)).unwrap(), got.clone());
    let o = Orch::start_with(&data, "127.0.0.1:0", 3000, &args);
    let lines = wait_until(Duration::from_secs(30), "every record pushed", || {
        let l = record_lines(&got.lock().unwrap());
        (l.len() as i64 >= records).then_some(l)
    });
    std::thread::sleep(Duration::from_secs(2));
    let lines2 = record_lines(&got.lock().unwrap());
    assert_eq!(lines.len(), lines2.len(), "more lines arrived: doubled");
    let distinct: BTreeSet<(String, String)> = lines2
        .iter()
        .map(|(t, _, l)| (t.clone(), l.clone()))
        .collect();
    assert_eq!(
        distinct.len() as i64,
        records,
        "each record once: {lines2:?}"
    );
    for (ts, labels, line) in &lines2 {
        assert!(
            ts.parse::<i64>().unwrap() > 1_600_000_000_000_000_000,
            "{ts}"
        );
        let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(keys, ["agent", "kind", "level", "site"]);
        assert_eq!(labels["site"], "edge-l");
        assert_eq!(labels["agent"], "edge-l-1");
        assert_eq!(labels["kind"], "step_record");
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["run"], run.as_str(), "the run id is in the line");
        assert_eq!(v["record"]["run_id"], run.as_str());
    }
    // All pushed: the spool is emptied.
    wait_until(Duration::from_secs(10), "the spool emptied", || {
        (std::fs::read_to_string(data.join("loki-spool.jsonl")).unwrap() == "").then_some(())
    });
    drop(o);
}
