//! Benchmark (not a test): sandbox clone, full enforce, check throughput, on the demo site,
//! against the cost of one `docker exec` measured in the same run.
//!
//!     cargo bench -p vacsine-enforce --bench site
//!
//! Prints medians and ratios (the machine is shared and noisy: absolute times vary).
// Tests and benches set up and inspect their peers (docker, nft, the binary) directly.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::time::{Duration, Instant};
use vacsine_core::node::Site;
use vacsine_enforce::check::check_site;
use vacsine_enforce::inputs::load_inputs;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let docker = vacsine_docker::connect().await.expect("Docker engine");
    vacsine_docker::demo::images(&docker).await.expect("images");
    vacsine_docker::demo::up(&docker).await.expect("demo up");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let inputs = load_inputs(
        &root.join("examples/edge-site/policy.yaml"),
        &root.join("examples/edge-site/target.yaml"),
        &[],
    )
    .expect("inputs");
    let site = vacsine_docker::DockerSite::connect(&inputs.target.doc)
        .await
        .expect("site");

    // Peer: one `docker exec <web> true`.
    let mut exec = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let s = tokio::process::Command::new("docker")
            .args(["exec", "vacsine-demo-web", "true"])
            .status()
            .await
            .expect("docker exec");
        assert!(s.success());
        exec.push(t.elapsed());
    }
    let exec = median(exec);

    // Checks: the whole policy on the whole site.
    let nodes = site.nodes().len();
    let mut checks = Vec::new();
    let mut count = 0;
    for _ in 0..runs {
        let t = Instant::now();
        count = check_site(&inputs.policy.doc, &site).await.len();
        checks.push(t.elapsed());
    }
    let check = median(checks);
    // Local checks only (no network probe waiting on a timeout): file, process, package…
    let mut local_policy = inputs.policy.doc.clone();
    local_policy
        .spec
        .requirements
        .retain(|r| r.check.vantage().is_none());
    let mut local = Vec::new();
    let mut local_count = 0;
    for _ in 0..runs {
        let t = Instant::now();
        local_count = check_site(&local_policy, &site).await.len();
        local.push(t.elapsed());
    }
    let local = median(local);
    let per_check = local / local_count.max(1) as u32;

    // Sandbox clone of the whole demo site, while the availability guards are probed from the
    // vantage point in a loop (every 100 ms): the target must stay up (no pause).
    let guards: Vec<_> = vacsine_enforce::check::selected(&inputs.policy.doc, &site)
        .into_iter()
        .filter(|(r, _)| r.kind == vacsine_core::policy::RequirementKind::Availability)
        .collect();
    let mut clones = Vec::new();
    let mut teardowns = Vec::new();
    let (mut guard_probes, mut guard_failed) = (0u32, 0u32);
    let mut longest_outage = Duration::ZERO;
    for _ in 0..runs {
        let id = vacsine_docker::sandbox::new_id();
        let done = std::sync::atomic::AtomicBool::new(false);
        let t = Instant::now();
        let probe_loop = async {
            let (mut probes, mut failed) = (0u32, 0u32);
            let mut down_since: Option<Instant> = None;
            let mut longest = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for (req, node) in &guards {
                    let r = vacsine_enforce::check::check_requirement(&site, req, node).await;
                    probes += 1;
                    if r.outcome == vacsine_core::Outcome::Pass {
                        if let Some(s) = down_since.take() {
                            longest = longest.max(s.elapsed());
                        }
                    } else {
                        failed += 1;
                        down_since.get_or_insert_with(Instant::now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Some(s) = down_since {
                longest = longest.max(s.elapsed());
            }
            (probes, failed, longest)
        };
        let clone = async {
            let r = site.clone_sandbox(&id, |_| {}).await.expect("clone");
            let took = t.elapsed();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (r, took)
        };
        let (((sbx, _s), took), (probes, failed, longest)) = tokio::join!(clone, probe_loop);
        clones.push(took);
        guard_probes += probes;
        guard_failed += failed;
        longest_outage = longest_outage.max(longest);
        let t = Instant::now();
        sbx.teardown().await.expect("teardown");
        teardowns.push(t.elapsed());
    }
    let clone = median(clones);
    let teardown = median(teardowns);

    // Full enforce on a fresh non-compliant site.
    let mut enforces = Vec::new();
    let (mut enforce_probes, mut enforce_failed, mut enforce_outage) = (0u32, 0u32, 0u64);
    for _ in 0..runs.min(3) {
        vacsine_docker::demo::up(&docker).await.expect("demo up");
        let t = Instant::now();
        let rep =
            vacsine_enforce::enforce(&vacsine_docker::DockerDriver, &inputs, &Default::default())
                .await
                .expect("enforce");
        enforces.push(t.elapsed());
        assert_eq!(
            rep.verdict,
            vacsine_enforce::Verdict::Verified,
            "{}",
            rep.summary
        );
        for g in &rep.availability.guards {
            enforce_probes += g.probes;
            enforce_failed += g.failed;
            enforce_outage = enforce_outage.max(g.longest_outage_ms);
        }
    }
    let enforce = median(enforces);

    println!("\nVacsine demo-site benchmark ({runs} runs, medians; {nodes} nodes)\n");
    println!("{:<52} {:>10}  vs peer / goal", "measure", "median");
    println!("{:<52} {:>8.1}ms  peer", "one `docker exec true`", ms(exec));
    println!(
        "{:<52} {:>8.1}ms  goal < 10000 ms",
        "clone the demo site into a sandbox",
        ms(clone)
    );
    println!(
        "{:<52} {:>8}    {guard_failed} failed of {guard_probes}; longest outage {:.0} ms (goal 0)",
        "guards probed during the clones",
        "",
        ms(longest_outage)
    );
    println!("{:<52} {:>8.1}ms", "tear the sandbox down", ms(teardown));
    println!(
        "{:<52} {:>8.1}ms  goal < 60000 ms",
        "full demo enforce (fresh site → verified)",
        ms(enforce)
    );
    println!(
        "{:<52} {:>8}    {enforce_failed} failed of {enforce_probes}; longest outage {enforce_outage} ms (goal 0)",
        "guards probed during the whole enforces",
        ""
    );
    println!(
        "{:<52} {:>8.1}ms  ({count} requirement×node checks)",
        "check the whole policy (incl. network probes)",
        ms(check)
    );
    println!(
        "{:<52} {:>8.2}ms  {:.1}× cheaper than one docker exec",
        "one local check (file/process/package/…)",
        ms(per_check),
        exec.as_secs_f64() / per_check.as_secs_f64().max(1e-9)
    );
    println!(
        "{:<52} {:>8.0}/s",
        "local checks per second per node",
        local_count as f64 / local.as_secs_f64() / nodes as f64
    );
    vacsine_docker::demo::down(&docker)
        .await
        .expect("demo down");
}
