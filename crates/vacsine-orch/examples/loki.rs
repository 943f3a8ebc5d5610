//! Loki push benchmark (issue 17), run by `bench/observability.sh`: N step-record lines
//! (about 600 bytes each, as an agent's records are) queued while the receiver is down (the
//! backlog held in memory), then pushed to a push receiver on loopback (an HTTP server that
//! reads each request's JSON and counts its lines, as Loki's push API is documented; no
//! Loki server runs here). Prints the time until every line was accepted, the throughput,
//! and this process's resident memory (the orchestrator's pusher and buffer, in-process).
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vacsine_orch::loki::{Line, Loki, LokiConfig};
use vacsine_orch::metrics::Metrics;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let batch: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(vacsine_orch::loki::DEFAULT_BATCH);
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let rss0 = rss_kib("VmRSS:");
    let metrics = Arc::new(Metrics::new());
    let loki = Loki::open(
        vacsine_orch::loki::DEFAULT_BUFFER,
        &dir.path().join("spool"),
        metrics.clone(),
    )?;
    let stdout = "x".repeat(300);
    let t0 = Instant::now();
    for i in 0..n {
        let record = serde_json::json!({
            "run_id": format!("run-{:07}", i / 10), "step_id": format!("step-{}", i % 10),
            "attempt": 1, "executor": "command", "started_at": "2026-12-07T01:00:00Z",
            "status": "succeeded", "stdout": stdout, "duration_ms": 12,
        });
        loki.push([Line {
            site: format!("edge-{}", i % 10),
            agent: format!("edge-{}-1", i % 10),
            level: "info".into(),
            kind: "step_record".into(),
            ts_ns: 1_796_000_000_000_000_000 + i as i64,
            line: serde_json::json!({"run": format!("run-{:07}", i / 10), "key": format!("k{i}"), "record": record}).to_string(),
        }]);
    }
    let queued = t0.elapsed();
    let rss_backlog = rss_kib("VmRSS:");
    // Loki comes up.
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/loki/api/v1/push",
        axum::routing::post(move |body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let k: usize = v["streams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["values"].as_array().unwrap().len())
                    .sum();
                g.fetch_add(k as u64, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let cfg = LokiConfig {
        url: format!("http://{addr}"),
        buffer: vacsine_orch::loki::DEFAULT_BUFFER,
        batch,
        spool: dir.path().join("spool"),
    };
    let t1 = Instant::now();
    let task = tokio::spawn(loki.clone().run(cfg, stop));
    while got.load(Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pushed = t1.elapsed();
    let _ = stop_tx.send(true);
    let _ = task.await;
    println!("lines                 {n}");
    println!("batch                 {batch} lines/request");
    println!("queued in             {:.2?}", queued);
    println!("pushed in             {:.2?}", pushed);
    println!(
        "throughput            {:.0} lines/s",
        n as f64 / pushed.as_secs_f64()
    );
    println!("received              {}", got.load(Ordering::Relaxed));
    println!("RSS at start          {} MiB", rss0 / 1024);
    println!("RSS with the backlog  {} MiB", rss_backlog / 1024);
    println!("peak RSS (VmHWM)      {} MiB", rss_kib("VmHWM:") / 1024);
    Ok(())
}
