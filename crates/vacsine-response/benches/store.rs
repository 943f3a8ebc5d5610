//! End to end into the agent's store: OpenCanary JSON lines parsed (vacsine-events), decided
//! against a ban response with dedupe (vacsine-response), and written with their outcomes and
//! decisions to the SQLite store (WAL, batches of one transaction). Goal (issue 16):
//! ≥ 10,000 events/s.
//!
//! `cargo bench -p vacsine-response --bench store [-- EVENTS RUNS BATCH]` prints a table with
//! the median of RUNS runs (default 50,000 events, 5 runs, batches of 1,000), each into a fresh
//! store file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use vacsine_core::SourceFile;
use vacsine_events::{parse, Format};
use vacsine_response::{decide, load, AllowList, Context, Decider, EventOrigin, Store, Windows};

/// OpenCanary SSH login attempts: 1 address in 10 is new (so 1 event in 10 is a decision, the
/// rest deduplicated), every line distinct (time and port differ).
fn corpus(n: usize) -> Vec<u8> {
    let mut s = String::with_capacity(n * 420);
    for i in 0..n {
        let a = i / 10;
        let (b, c) = ((a >> 8) & 255, a & 255);
        s.push_str(&format!(
            r#"{{"dst_host": "192.0.2.10", "dst_port": 2222, "local_time": "2026-03-02 10:{:02}:{:02}.{:06}", "logdata": {{"PASSWORD": "hunter2", "USERNAME": "root"}}, "logtype": 4002, "node_id": "edge-a", "src_host": "198.51.{b}.{c}", "src_port": {}, "utc_time": "2026-03-02 10:{:02}:{:02}.{:06}"}}"#,
            (i / 60_000) % 60, (i / 1000) % 60, i % 1_000_000, 1024 + i % 60000,
            (i / 60_000) % 60, (i / 1000) % 60, i % 1_000_000
        ));
        s.push('\n');
    }
    s.into_bytes()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(50_000);
    let runs = args.get(1).copied().unwrap_or(5).max(1);
    let batch = args.get(2).copied().unwrap_or(1000).max(1);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/responses/ban-decoy-touch.yaml"
    ))
    .unwrap();
    let rule = load(&SourceFile::new("ban-decoy-touch.yaml", text)).unwrap();
    // The example is scoped to sites labelled decoys=yes.
    let labels: BTreeMap<String, String> = [("decoys".to_string(), "yes".to_string())].into();
    let allow = AllowList::default();
    let bytes = corpus(n);
    let mut rates = Vec::new();
    let mut shares = Vec::new();
    let mut last = (0, 0, 0);
    for _ in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("agent.db")).unwrap();
        let mut windows = Windows::default();
        let rules = [rule.clone()];
        let t = Instant::now();
        let parsed = parse(Format::OpenCanary, &bytes);
        let t_parse = t.elapsed().as_secs_f64();
        let mut t_decide = 0.0;
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors.first());
        let mut pending = Vec::with_capacity(batch);
        let mut new = 0;
        for e in parsed.events {
            let cx = Context {
                now: e.time,
                site: "edge-a",
                site_labels: &labels,
                decider: Decider::Site,
                allow: &allow,
                origin: EventOrigin::External,
            };
            let td = Instant::now();
            let out = decide(&rules, &e, &cx, &mut windows);
            t_decide += td.elapsed().as_secs_f64();
            pending.push((e, out));
            if pending.len() == batch {
                new += store.ingest(&pending, Utc::now()).unwrap();
                pending.clear();
            }
        }
        new += store.ingest(&pending, Utc::now()).unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(new, n);
        last = store.counts().unwrap();
        rates.push(n as f64 / secs);
        shares.push((t_parse / secs, t_decide / secs));
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = rates[rates.len() / 2];
    println!("| what | events | runs | batch | median events/s | min | max | goal |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| OpenCanary lines → parse → decide → SQLite store | {n} | {runs} | {batch} | {median:.0} | {:.0} | {:.0} | ≥ 10,000 ({:.1}×) |",
        rates[0],
        rates[rates.len() - 1],
        median / 10_000.0
    );
    let (p, d) = shares[shares.len() / 2];
    println!(
        "share of the time (run {}): parse {:.0}%, decide {:.0}%, store {:.0}%",
        shares.len() / 2 + 1,
        p * 100.0,
        d * 100.0,
        (1.0 - p - d) * 100.0
    );
    println!(
        "rows in the last store: {} events, {} outcomes, {} decisions",
        last.0, last.1, last.2
    );
}
