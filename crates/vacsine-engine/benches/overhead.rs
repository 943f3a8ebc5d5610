//! Per-step overhead of the engine: N trivial `/bin/true` steps run one at a time, compared
//! with spawning `/bin/true` directly. Run with `cargo bench -p vacsine-engine --bench overhead`
//! (`VX_BENCH_STEPS`, `VX_BENCH_ROUNDS` to change the size). Prints a table; asserts nothing.

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

fn main() {
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
}
