//! Retention and query benchmark (issue 19 item 4), run by `bench/retention.sh`:
//!
//! * `fill DIR N`: an orchestrator store `DIR/orchestrator.db` with N ended runs of one site
//!   (two records each, 1 % autonomous), written straight into SQLite in one transaction.
//! * `queries DIR`: p50/p99 of the queries behind `GET /v1/status` and `GET /v1/runs`
//!   (through the `Store` trait), with this build's indexes and with them dropped, and the
//!   status query as it was before (`runs(1000)`).
//! * `agent DIR N`: an agent folder whose journal holds N ended runs of one record each
//!   (ended over the last 100 days, as 100,000 events would leave it) and whose outbox
//!   holds N acknowledged items; its size before and after one retention pass (defaults).
#![allow(clippy::disallowed_methods)]

use rusqlite::params;
use std::path::Path;
use std::time::Instant;
use vacsine_engine::retention::Policy;
use vacsine_orch::store::{RunQuery, SqliteStore, Store};

fn usage() -> ! {
    eprintln!("usage: retention fill DIR N | queries DIR | agent DIR N");
    std::process::exit(1)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.get(1).map(String::as_str) {
        Some("fill") if args.len() == 4 => fill(Path::new(&args[2]), args[3].parse()?),
        Some("queries") if args.len() == 3 => rt.block_on(queries(Path::new(&args[2]))),
        Some("agent") if args.len() == 4 => agent(Path::new(&args[2]), args[3].parse()?),
        _ => usage(),
    }
}

const DAY: i64 = 24 * 3600 * 1000;

fn fill(dir: &Path, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join("orchestrator.db");
    // The schema and indexes as the orchestrator makes them.
    drop(SqliteStore::open(&p)?);
    let mut c = rusqlite::Connection::open(&p)?;
    let tx = c.transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO sites (name, intake_hash, created_ms) VALUES ('bench', 'h', 0)",
        [],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO agents (id, site, name, public_key, version, enrolled_ms, last_seen_ms)
         VALUES ('agent-1', 'bench', 'bench-1', 'k', 't', 0, 0)",
        [],
    )?;
    let now = vacsine_orch::now_ms();
    let request = format!("{{\"workflow\":{{\"steps\":\"{}\"}}}}", "x".repeat(600));
    let record = format!("{{\"step_id\":\"one\",\"stdout\":\"{}\"}}", "y".repeat(300));
    for i in 0..n {
        let id = format!("run-{i:07}");
        // Spread over the last 60 days, oldest first.
        let at = now - 60 * DAY + (i as i64) * (60 * DAY / n.max(1) as i64);
        let workflow = if i % 100 == 0 {
            "bench-wf (autonomous)"
        } else {
            "bench-wf"
        };
        tx.execute(
            "INSERT INTO runs (id, site, workflow, request, status, agent_id, offers, created_ms,
               started_ms, finished_ms)
             VALUES (?1, 'bench', ?2, ?3, 'succeeded', 'agent-1', 1, ?4, ?4, ?5)",
            params![id, workflow, request, at, at + 1000],
        )?;
        for k in 0..2 {
            tx.execute(
                "INSERT INTO records (run_id, key, record, received_ms) VALUES (?1, ?2, ?3, ?4)",
                params![id, format!("{id}/{k}"), record, at + 500],
            )?;
        }
    }
    tx.commit()?;
    println!("filled {} with {n} runs", p.display());
    Ok(())
}

fn pct(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

async fn time<F, Fut>(n: usize, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    pct(v)
}

async fn measure(s: &SqliteStore, label: &str, n: usize) {
    let status = time(n, || async {
        s.last_autonomous(1000).await.unwrap();
        s.runs(50).await.unwrap();
        s.agents().await.unwrap();
        s.sites().await.unwrap();
    })
    .await;
    let before = time(n.min(20), || async {
        s.runs(1000).await.unwrap();
        s.agents().await.unwrap();
        s.sites().await.unwrap();
    })
    .await;
    let page = |site: Option<&str>| RunQuery {
        site: site.map(String::from),
        limit: 50,
        ..Default::default()
    };
    let list = time(n, || async {
        s.runs_page(&page(None)).await.unwrap();
    })
    .await;
    let by_site = time(n, || async {
        s.runs_page(&page(Some("bench"))).await.unwrap();
    })
    .await;
    let by_status = time(n, || async {
        s.runs_page(&RunQuery {
            status: Some("failed".into()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    })
    .await;
    for (what, (p50, p99)) in [
        ("status (this build's queries)", status),
        ("status (before: runs(1000))", before),
        ("runs, newest 50", list),
        ("runs ?site=, newest 50", by_site),
        ("runs ?status=failed (none)", by_status),
    ] {
        println!("{label:<18} {what:<32} p50 {p50:>8.2} ms  p99 {p99:>8.2} ms");
    }
}

async fn queries(dir: &Path) -> anyhow::Result<()> {
    let p = dir.join("orchestrator.db");
    let s = SqliteStore::open(&p)?;
    let n: i64 =
        rusqlite::Connection::open(&p)?.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))?;
    println!("{n} runs in {}", p.display());
    measure(&s, "with indexes", 100).await;
    let c = rusqlite::Connection::open(&p)?;
    c.execute_batch(
        "DROP INDEX runs_recent; DROP INDEX runs_site_recent; DROP INDEX runs_status_recent;",
    )?;
    drop(c);
    // Each query then reads the whole table: fewer samples.
    measure(&s, "without indexes", 20).await;
    drop(s);
    // Opening the store makes them again.
    drop(SqliteStore::open(&p)?);
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn agent(dir: &Path, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let jp = dir.join("journal.db");
    drop(vacsine_engine::Journal::open(&jp)?);
    drop(vacsine_agent::Outbox::open(&dir.join("agent.db"))?);
    let now = vacsine_orch::now_ms();
    {
        let mut c = rusqlite::Connection::open(&jp)?;
        let tx = c.transaction()?;
        let wf = format!("{{\"steps\":\"{}\"}}", "w".repeat(400));
        for i in 0..n {
            let id = format!("ev-{i:07}");
            let end = now - 100 * DAY + (i as i64) * (100 * DAY / n.max(1) as i64);
            let at = vacsine_orch::rfc3339(end);
            tx.execute(
                "INSERT INTO runs (id, workflow, workflow_json, inputs_json, target, labels_json,
                   status, started_at, finished_at)
                 VALUES (?1, 'block-ip', ?2, '{\"ip\":\"192.0.2.1\"}', 'local', '{}', 'succeeded', ?3, ?3)",
                params![id, wf, at],
            )?;
            tx.execute(
                "INSERT INTO step_records (run_id, step_id, attempt, executor, started_at,
                   finished_at, status, stdout, stderr, changed, messages_json, outputs_json)
                 VALUES (?1, 'block', 1, 'nftset', ?2, ?2, 'succeeded', ?3, '', 1, '[]', '{}')",
                params![id, at, "added 192.0.2.1 to the block set".repeat(4)],
            )?;
        }
        tx.commit()?;
    }
    {
        let mut c = rusqlite::Connection::open(dir.join("agent.db"))?;
        let tx = c.transaction()?;
        for i in 0..n {
            tx.execute(
                "INSERT INTO outbox (key, run_id, kind, body, sent_ms) VALUES (?1, ?2, 'record', ?3, ?4)",
                params![
                    format!("ev-{i:07}/block/1/-"),
                    format!("ev-{i:07}"),
                    "r".repeat(300),
                    now - 2 * DAY
                ],
            )?;
        }
        tx.commit()?;
    }
    let before = dir_size(dir);
    let t = Instant::now();
    let r = vacsine_agent::gc::agent_pass(dir, &Policy::default(), now, false)?;
    let took = t.elapsed();
    let after = dir_size(dir);
    println!(
        "agent folder, {n} ended runs of one record + {n} acknowledged outbox items: {} before, {} after one pass ({:.1} s); policy: {}",
        vacsine_engine::retention::human_bytes(before),
        vacsine_engine::retention::human_bytes(after),
        took.as_secs_f64(),
        Policy::default().describe()
    );
    println!(
        "  {}",
        vacsine_engine::retention::runs_line("journal", &r.journal, false)
    );
    println!(
        "  agent.db: {} acknowledged outbox item(s) removed, file {} smaller",
        r.agent_db.outbox_acknowledged_removed,
        vacsine_engine::retention::human_bytes(r.agent_db.reclaimed_bytes)
    );
    Ok(())
}
