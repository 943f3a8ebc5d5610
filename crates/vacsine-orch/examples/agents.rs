//! Benchmark: many simulated agents long-polling one orchestrator.
//!
//! Two roles, each its own process (so the orchestrator's memory is its own):
//!
//! * `agents serve DATA [POSTGRES_URL]`: an orchestrator on 127.0.0.1 (port chosen by the
//!   system), store SQLite in DATA or the PostgreSQL database given; writes
//!   DATA/operator.json like `vacsine orchestrator`.
//! * `agents drive DATA N ORCH_PID [SECONDS]`: makes a site, enrols N agents (each its own
//!   HPKE key and its own HTTPS connection, enrolled 64 at a time), keeps every one of them
//!   in a long poll (25 s, asked again as soon as answered), then samples the orchestrator
//!   process for SECONDS (default 30): resident memory (steady and peak), CPU, threads and
//!   sockets held.
//!
//! `bash bench/agents.sh N` runs both (release build).

use futures_util::stream::{self, StreamExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vacsine_contract::client::{AgentLink, OperatorClient};
use vacsine_contract::proto;
use vacsine_wire::{KeyPair, PublicKey};

fn usage() -> ! {
    eprintln!(
        "usage: agents serve DATA [POSTGRES_URL]\n       agents drive DATA N ORCH_PID [SECONDS]"
    );
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("serve") if args.len() >= 2 => rt.block_on(serve(&args[1], args.get(2).cloned())),
        Some("drive") if args.len() >= 4 => {
            let n: usize = args[2]
                .parse()
                .map_err(|_| anyhow::anyhow!("N: `{}` is not a number of agents", args[2]))?;
            let pid: u32 = args[3]
                .parse()
                .map_err(|_| anyhow::anyhow!("ORCH_PID: `{}` is not a process id", args[3]))?;
            let secs: u64 = match args.get(4) {
                Some(s) => s
                    .parse()
                    .map_err(|_| anyhow::anyhow!("SECONDS: `{s}` is not a number"))?,
                None => 30,
            };
            rt.block_on(drive(Path::new(&args[1]), n, pid, secs))
        }
        _ => usage(),
    }
}

async fn serve(data: &str, database: Option<String>) -> anyhow::Result<()> {
    vacsine_orch::server::serve(vacsine_orch::server::Config {
        listen: "127.0.0.1:0".parse()?,
        listen_plain: None,
        tls_files: None,
        data: PathBuf::from(data),
        lease_ttl_ms: 30_000,
        database,
        // No images in this benchmark.
        max_image_bytes: 1 << 20,
        // Every simulated agent comes from 127.0.0.1: no cap per client address.
        max_connections_per_client: Some(0),
        retention: Default::default(),
        metrics_listen: None,
        loki: None,
        taxii: Vec::new(),
        bouncer_listen: None,
    })
    .await
}

/// What /proc says of a process.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    /// utime + stime, clock ticks.
    cpu_ticks: u64,
    sockets: u64,
}

fn sample(pid: u32) -> anyhow::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    let cpu_ticks = ticks(11) + ticks(12);
    let mut sockets = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        if let Ok(t) = std::fs::read_link(e.path()) {
            if t.to_string_lossy().starts_with("socket:") {
                sockets += 1;
            }
        }
    }
    Ok(Sample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
        cpu_ticks,
        sockets,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn drive(data: &Path, n: usize, pid: u32, secs: u64) -> anyhow::Result<()> {
    let opp = data.join("operator.json");
    let op: proto::OperatorConfig = serde_json::from_slice(
        &std::fs::read(&opp).map_err(|e| anyhow::anyhow!("reading {}: {e}", opp.display()))?,
    )?;
    let before = sample(pid)?;
    let operator = OperatorClient::new(&op)?;
    let site = format!("bench{}", vacsine_orch::now_ms());
    let created: proto::SiteCreated = operator
        .post(
            proto::OP_SITES,
            &proto::CreateSite {
                name: site.clone(),
                labels: Default::default(),
            },
        )
        .await?;
    let hello = AgentLink::hello(&op.url, &op.pin).await?;
    let server = PublicKey::from_b64(&hello.server_key)?;

    let t0 = Instant::now();
    let intake = created.intake_key.clone();
    let links: Vec<(Arc<AgentLink>, String)> = stream::iter(0..n)
        .map(|i| {
            let (url, pin, server, intake) = (
                op.url.clone(),
                op.pin.clone(),
                server.clone(),
                intake.clone(),
            );
            async move {
                let keys = KeyPair::generate();
                let link = AgentLink::new(&url, &pin, keys.clone(), server)?;
                let name = format!("sim-{i:05}");
                let req = proto::EnrollRequest {
                    intake_key: intake,
                    name: name.clone(),
                    version: "bench".into(),
                };
                let env = link.seal(proto::ENROLL, &name, &req)?;
                let wrapped = proto::EnrollEnvelope {
                    public_key: keys.public().to_b64(),
                    envelope: env.clone(),
                };
                let r: proto::EnrollResponse =
                    link.send(proto::ENROLL, &name, &env, &wrapped).await?;
                anyhow::Ok((Arc::new(link), r.agent_id))
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let enrol_s = t0.elapsed().as_secs_f64();
    println!(
        "enrolled {n} agents in {enrol_s:.1} s ({:.0}/s)",
        n as f64 / enrol_s
    );

    let answered = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let polling = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    for (link, id) in links {
        let (answered, errors, polling, first_error) = (
            answered.clone(),
            errors.clone(),
            polling.clone(),
            first_error.clone(),
        );
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let req = proto::PollRequest::new(25_000);
                let call = link.call::<_, proto::PollResponse>(proto::POLL, &id, &req);
                if first {
                    polling.fetch_add(1, Ordering::Relaxed);
                    first = false;
                }
                match call.await {
                    Ok(_) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert_with(|| e.to_string());
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
    // Every agent's first poll held by the orchestrator: as many sockets as agents.
    let t1 = Instant::now();
    loop {
        let s = sample(pid)?;
        if s.sockets as usize >= n || t1.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = sample(pid)?;
    let a0 = answered.load(Ordering::Relaxed);
    let e0 = errors.load(Ordering::Relaxed);
    let w0 = Instant::now();
    let mut rss = Vec::new();
    let mut min_sockets = u64::MAX;
    let mut last = start;
    while w0.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = sample(pid)?;
        rss.push(last.rss_kib);
        min_sockets = min_sockets.min(last.sockets);
    }
    let window = w0.elapsed().as_secs_f64();
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (last.cpu_ticks - start.cpu_ticks) as f64 / hz / window * 100.0;
    let polls = answered.load(Ordering::Relaxed) - a0;
    let errs = errors.load(Ordering::Relaxed) - e0;
    let avg = rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64;
    println!("agents long-polling: {}", polling.load(Ordering::Relaxed));
    println!(
        "orchestrator before the agents: RSS {:.1} MiB, {} threads",
        mib(before.rss_kib),
        before.threads
    );
    println!(
        "orchestrator over {window:.0} s of {n} agents polling: sockets held {} (min {}), threads {}, RSS steady {:.1} MiB (max {:.1}), peak (VmHWM) {:.1} MiB, CPU {cpu:.1}% of one core",
        last.sockets,
        min_sockets,
        last.threads,
        mib(avg as u64),
        mib(rss.iter().copied().max().unwrap_or(0)),
        mib(last.hwm_kib),
    );
    println!(
        "polls answered in the window: {polls} ({:.0}/s), errors: {errs}{}",
        polls as f64 / window,
        first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    Ok(())
}
