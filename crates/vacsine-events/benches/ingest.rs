//! Event intake throughput: Suricata EVE lines parsed (and validated) then matched against a
//! few conditions, on one core. Goal (issue 16): ≥ 100,000 EVE lines/s per core.
//!
//! `cargo bench -p vacsine-events --bench ingest [-- LINES RUNS]` prints a table with the
//! median of RUNS runs (default 200,000 lines, 7 runs).

use std::time::{Duration, Instant};

use vacsine_events::{matches, parse, Condition, EventKind, Format, ObservableType, Severity};

/// EVE lines shaped like Suricata's: 3 alerts (with http metadata and flow counters) for each
/// flow record, distinct addresses and ports.
fn corpus(n: usize) -> Vec<u8> {
    let mut s = String::with_capacity(n * 900);
    for i in 0..n {
        let (a, b, c) = ((i >> 16) & 255, (i >> 8) & 255, i & 255);
        let ts = format!(
            "2026-03-02T10:{:02}:{:02}.{:06}+0100",
            (i / 60) % 60,
            i % 60,
            i % 1_000_000
        );
        if i % 4 == 3 {
            s.push_str(&format!(
                r#"{{"timestamp":"{ts}","flow_id":{},"in_iface":"eth0","event_type":"flow","src_ip":"10.{a}.{b}.{c}","src_port":{},"dest_ip":"192.0.2.10","dest_port":443,"proto":"TCP","app_proto":"tls","flow":{{"pkts_toserver":12,"pkts_toclient":10,"bytes_toserver":1834,"bytes_toclient":6120,"start":"{ts}","end":"{ts}","age":0,"state":"closed","reason":"timeout","alerted":false}},"tcp":{{"tcp_flags":"1b","syn":true,"fin":true,"psh":true,"ack":true,"state":"closed"}}}}"#,
                1_000_000_000_000u64 + i as u64,
                1024 + (i % 60000)
            ));
        } else {
            s.push_str(&format!(
                r#"{{"timestamp":"{ts}","flow_id":{},"in_iface":"eth0","event_type":"alert","src_ip":"203.{a}.{b}.{c}","src_port":{},"dest_ip":"192.0.2.10","dest_port":80,"proto":"TCP","community_id":"1:LQU9qZlK+B5F3KDmev6m5PMibrg=","alert":{{"action":"allowed","gid":1,"signature_id":{},"rev":3,"signature":"ET SCAN Suspicious inbound to mySQL port 3306 ({})","category":"Potentially Bad Traffic","severity":{},"metadata":{{"created_at":["2026_01_01"],"updated_at":["2026_02_01"]}}}},"http":{{"hostname":"www.example.com","url":"/index.php?id=1%20UNION%20SELECT","http_user_agent":"Mozilla/5.0 (X11; Linux x86_64)","http_method":"GET","protocol":"HTTP/1.1","status":200,"length":512}},"app_proto":"http","direction":"to_server","flow":{{"pkts_toserver":4,"pkts_toclient":3,"bytes_toserver":520,"bytes_toclient":1024,"start":"{ts}"}}}}"#,
                1_000_000_000_000u64 + i as u64,
                1024 + (i % 60000),
                2_010_000 + (i % 5000),
                i % 97,
                1 + (i % 3)
            ));
        }
        s.push('\n');
    }
    s.into_bytes()
}

/// Time this thread spent on a CPU (Linux schedstat), so that a busy machine does not count
/// the time other processes held the core. Zero where unavailable.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let lines: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(7);
    let input = corpus(lines);
    let conditions = [
        Condition {
            kind: Some(EventKind::Incident),
            min_severity: Some(Severity::High),
            ..Default::default()
        },
        Condition {
            observable: Some(ObservableType::Ipv4),
            source: Some("suricata".into()),
            ..Default::default()
        },
        Condition {
            observable: Some(ObservableType::Ipv6),
            ..Default::default()
        },
        Condition {
            kind: Some(EventKind::Indicator),
            ..Default::default()
        },
    ];

    let mut json_t = Vec::new();
    let mut parse_t = Vec::new();
    let mut total_t = Vec::new();
    let mut total_wall = Vec::new();
    let mut last = (0, 0, 0);
    for _ in 0..runs {
        // The floor: serde_json parsing each line into a value, nothing else.
        let c0 = cpu_time();
        let mut n = 0usize;
        for l in input.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            n += v.as_object().map_or(0, |o| o.len());
        }
        std::hint::black_box(n);
        json_t.push(cpu_time() - c0);

        let w0 = Instant::now();
        let c0 = cpu_time();
        let p = parse(Format::Eve, &input);
        let c1 = cpu_time();
        let m = matches(&p.events, &conditions);
        let c2 = cpu_time();
        total_wall.push(w0.elapsed());
        assert!(p.errors.is_empty(), "{:?}", &p.errors[..1]);
        parse_t.push(c1 - c0);
        total_t.push(c2 - c0);
        last = (p.events.len(), p.skipped, m.len());
        std::hint::black_box(m);
    }
    let (events, skipped, matched) = last;
    let rate = |d: Duration| lines as f64 / d.as_secs_f64();
    println!("vacsine-events ingest: {lines} EVE lines ({:.1} MB, {events} alerts, {skipped} flow records), {} conditions, {matched} matches, median of {runs} runs, one thread", input.len() as f64 / 1e6, conditions.len());
    println!(
        "{:<34} {:>12} {:>14} {:>10}",
        "phase", "median", "lines/s", "goal"
    );
    for (name, v, goal) in [
        ("serde_json Value only (floor), CPU", json_t, ""),
        ("parse + validate, CPU", parse_t, ""),
        ("parse + validate + match, CPU", total_t.clone(), "100000"),
        ("parse + validate + match, wall", total_wall, ""),
    ] {
        let m = median(v);
        println!(
            "{name:<34} {:>9.1} ms {:>14.0} {goal:>10}",
            m.as_secs_f64() * 1e3,
            rate(m)
        );
    }
    println!(
        "ratio to goal (CPU time of this thread): {:.2}x",
        rate(median(total_t)) / 100_000.0
    );
}
