//! Per-step overhead of the engine: N trivial `/bin/true` steps run one at a time, compared
//! with spawning `/bin/true` directly. Run with `cargo bench -p vacsine-engine --bench overhead`
//! (`VX_BENCH_STEPS`, `VX_BENCH_ROUNDS` to change the size; `VX_BENCH_CURVE=100,1000,10000` the
//! scaling sizes; `VX_BENCH_CURVE_MEMORY=1` the scaling with an in-memory journal). Prints a
//! table; asserts nothing.
//!
//! Also the peak memory of a run: the bench re-executes itself as a fresh child process
//! (`VX_BENCH_RSS_CHILD=<steps>`) that runs the workflow with a file journal, then reports its
//! own `VmHWM` (peak resident set, /proc/self/status); a child that only starts the runtime and
//! opens the journal gives the baseline.
// Tests and benches set up and inspect their peers (docker, nft, the binary) directly.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use vacsine_core::node::NodeOps;
use vacsine_core::workflow::Workflow;
use vacsine_core::SourceFile;
use vacsine_engine::{Catalog, Engine, Journal, LocalNode, RunRequest, RunStatus};

fn workflow(n: usize) -> Workflow {
    let mut text = String::from(
        "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: bench\nspec:\n  concurrency: 1\n  steps:\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "    - id: s{i}\n      uses: command\n      with: {{ argv: [/bin/true] }}\n"
        ));
    }
    vacsine_core::doc::parse_as(&SourceFile::new("bench.yaml", text)).expect("bench workflow")
}

/// A chain of `n` steps, each needing the previous one and reading its status through a
/// template (the case whose cost grew with the number of earlier steps).
fn chained(n: usize) -> Workflow {
    let mut text = String::from(
        "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: chain\nspec:\n  concurrency: 1\n  steps:\n    - id: s0\n      uses: command\n      with: { argv: [/bin/true] }\n",
    );
    for i in 1..n {
        text.push_str(&format!(
            "    - id: s{i}\n      uses: command\n      needs: [s{p}]\n      with: {{ argv: [/bin/true, \"{{{{ steps.s{p}.status }}}}\"] }}\n",
            p = i - 1
        ));
    }
    vacsine_core::doc::parse_as(&SourceFile::new("chain.yaml", text)).expect("chain workflow")
}

/// CPU time (user + system) this process has used so far, from /proc/self/stat (10 ms
/// resolution), excluding its children.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// Wall time of one run of `w` with a file journal.
async fn run_once(w: Workflow, journal: Journal) -> Duration {
    let n = w.spec.steps.len();
    let e = Engine::new(journal, Catalog::new());
    let node: Arc<dyn NodeOps> = Arc::new(LocalNode::new("local"));
    let mut req = RunRequest::new(w);
    req.nodes.insert("local".into(), node);
    let t = Instant::now();
    let r = e.run(req).await.expect("run");
    let el = t.elapsed();
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.message);
    assert_eq!(r.records.len(), n);
    el
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:>8.3} ms", d.as_secs_f64() * 1000.0)
}

async fn direct(n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        let st = tokio::process::Command::new("/bin/true")
            .status()
            .await
            .expect("spawn /bin/true");
        assert!(st.success());
    }
    t.elapsed() / n as u32
}

async fn engine(n: usize, journal: Journal) -> Duration {
    let e = Engine::new(journal, Catalog::new());
    let node: Arc<dyn NodeOps> = Arc::new(LocalNode::new("local"));
    let mut req = RunRequest::new(workflow(n));
    req.nodes.insert("local".into(), node);
    let t = Instant::now();
    let r = e.run(req).await.expect("run");
    let el = t.elapsed();
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(r.records.len(), n);
    el / n as u32
}

/// Wall time of `ansible-playbook` running `n` `/bin/true` command tasks on localhost.
fn ansible(n: usize, dir: &std::path::Path) -> Option<Duration> {
    let tasks: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"name": format!("t{i}"), "ansible.builtin.command": {"argv": ["/bin/true"]}}))
        .collect();
    let play = serde_json::json!([{"hosts": "all", "gather_facts": false, "tasks": tasks}]);
    let pb = dir.join(format!("pb{n}.json"));
    std::fs::write(&pb, play.to_string()).ok()?;
    let t = Instant::now();
    let st = std::process::Command::new("ansible-playbook")
        .args([
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            "ansible_python_interpreter={{ ansible_playbook_python }}",
        ])
        .arg(&pb)
        .env("ANSIBLE_LOCALHOST_WARNING", "0")
        .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    st.success().then(|| t.elapsed())
}

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// In the child: run `n` steps (none: only start the runtime and open the journal) with a
/// file journal, then print the peak RSS.
fn rss_child(n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(&dir.path().join("j.db")).expect("journal");
    if n > 0 {
        rt.block_on(run_once(chained(n), journal));
    }
    println!(
        "VmHWM {} VmRSS {}",
        status_kib("VmHWM").unwrap_or(0),
        status_kib("VmRSS").unwrap_or(0)
    );
}

/// Peak RSS (KiB) of a fresh process running `n` steps.
fn peak_rss(n: usize) -> Option<u64> {
    let out = std::process::Command::new(std::env::current_exe().ok()?)
        .env("VX_BENCH_RSS_CHILD", n.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("VmHWM "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> String {
    format!("{:>8.1} MiB", kib as f64 / 1024.0)
}

fn main() {
    if let Some(n) = std::env::var("VX_BENCH_RSS_CHILD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        rss_child(n);
        return;
    }
    let n: usize = std::env::var("VX_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rounds: usize = std::env::var("VX_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    // Fresh processes, before this one has done anything else.
    let curve: Vec<usize> = std::env::var("VX_BENCH_CURVE")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1_000, 10_000]);
    let mut sizes = vec![0, n];
    sizes.extend(curve.iter().copied().filter(|c| *c != n));
    let rss: Vec<(usize, Option<u64>)> = sizes.iter().map(|&k| (k, peak_rss(k))).collect();
    rt.block_on(async {
        let (mut d, mut mem, mut file) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..rounds {
            d.push(direct(n).await);
            mem.push(engine(n, Journal::in_memory().expect("journal")).await);
            let path = dir.path().join(format!("j{i}.db"));
            file.push(engine(n, Journal::open(&path).expect("journal")).await);
        }
        let (d, mem, file) = (median(d), median(mem), median(file));
        println!("\nper-step time, {n} sequential `/bin/true` steps, median of {rounds} rounds");
        println!("{:<44} {:>11} {:>11}", "", "per step", "overhead");
        println!("{:<44} {} {:>11}", "spawn /bin/true directly (baseline)", ms(d), "-");
        println!(
            "{:<44} {} {}",
            "engine, in-memory journal",
            ms(mem),
            ms(mem.saturating_sub(d))
        );
        println!(
            "{:<44} {} {}",
            "engine, file journal (WAL, synchronous=FULL)",
            ms(file),
            ms(file.saturating_sub(d))
        );
        let m = 20;
        let ans: Option<(Duration, Duration)> = (|| {
            let mut one = Vec::new();
            let mut many = Vec::new();
            for _ in 0..3 {
                one.push(ansible(1, dir.path())?);
                many.push(ansible(m, dir.path())?);
            }
            Some((median(one), median(many)))
        })();
        match ans {
            Some((one, many)) => {
                let per_task = many.saturating_sub(one) / (m as u32 - 1);
                println!(
                    "{:<44} {} {:>11}",
                    format!("ansible-playbook, marginal per task ({m} tasks)"),
                    ms(per_task),
                    "-"
                );
                println!(
                    "ratio: one Ansible task ≈ {:.0}× the engine's per-step time (file journal), {:.0}× (in-memory)",
                    per_task.as_secs_f64() / file.as_secs_f64(),
                    per_task.as_secs_f64() / mem.as_secs_f64()
                );
            }
            None => println!("ansible-playbook not available: no comparison (design §8 quotes ≈ 330 ms per task)"),
        }
    });
    // Scaling: a chain whose steps read the previous step through a template.
    // VX_BENCH_CURVE_MEMORY=1: the curve with an in-memory journal (engine cost without
    // the journal's fsyncs).
    let memory = std::env::var("VX_BENCH_CURVE_MEMORY").is_ok_and(|v| v == "1");
    println!(
        "\nscaling: chained steps reading `steps.<previous>.status`, {} journal, median of 3",
        if memory { "in-memory" } else { "file" }
    );
    println!(
        "{:<8} {:>9} {:>12} {:>14} {:>8} {:>16} {:>8}",
        "steps", "run", "per step", "over /bin/true", "vs 100", "engine CPU/step", "vs 100"
    );
    let base = rt.block_on(direct(200));
    let mut first: Option<(Duration, Duration)> = None;
    for &k in &curve {
        let mut times = Vec::new();
        let mut cpus = Vec::new();
        for i in 0..3 {
            let path = dir.path().join(format!("c{k}-{i}.db"));
            let c0 = cpu_time();
            let journal = if memory {
                Journal::in_memory()
            } else {
                Journal::open(&path)
            };
            times.push(rt.block_on(run_once(chained(k), journal.expect("journal"))));
            cpus.push(cpu_time().saturating_sub(c0));
        }
        let (t, cpu) = (median(times), median(cpus));
        let per = t / k as u32;
        let ratio = first.map(|f| t.as_secs_f64() / f.0.as_secs_f64());
        let cpu_ratio = first.map(|f| cpu.as_secs_f64() / f.1.as_secs_f64().max(0.01));
        first.get_or_insert((t, cpu));
        let x = |r: Option<f64>| r.map(|r| format!("{r:.1}×")).unwrap_or_else(|| "1×".into());
        println!(
            "{k:<8} {:>7.2} s {} {} {:>8} {} {:>8}",
            t.as_secs_f64(),
            ms(per),
            ms(per.saturating_sub(base)),
            x(ratio),
            ms(cpu / k as u32),
            x(cpu_ratio)
        );
    }
    println!("goals: 1,000 steps ≤ 11× the time of 100; ≤ 1 ms per-step overhead at 10,000");

    println!("\npeak resident memory (VmHWM) of a fresh process, file journal");
    for (k, kib) in rss {
        let what = if k == 0 {
            "runtime started, journal opened, no run".to_string()
        } else {
            format!("{k} chained `/bin/true` steps")
        };
        match kib {
            Some(kib) => println!("{what:<44} {}", mib(kib)),
            None => println!("{what:<44} (not measured: /proc unavailable)"),
        }
    }
    println!("goals: < 30 MiB for 100 steps, < 150 MiB for 10,000");
}
