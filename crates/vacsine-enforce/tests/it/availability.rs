//! Issue 6: the target's availability is measured during the whole enforce (its availability
//! guards probed in a loop from the vantage point). These tests run on a small site of their
//! own (uniquely named busybox containers on their own network: a web node and a vantage
//! point), never on the demo site, and remove it at the end (also when they fail).

use crate::*;
use std::process::Command as StdCommand;
use std::time::Duration;
use vacsine_enforce::inputs::load_inputs;
use vacsine_enforce::report::GuardAvailability;
use vacsine_enforce::{enforce, Verdict};

/// A web node (`<prefix>-web`, the demo web image without its start delay) and a vantage
/// point (`<prefix>-outside`) on network `<prefix>-lan`; removed on drop.
struct OwnSite {
    prefix: String,
    dir: tempfile::TempDir,
}

fn docker_cli(args: &[&str]) -> std::process::Output {
    StdCommand::new("docker").args(args).output().unwrap()
}

impl OwnSite {
    async fn up(d: &bollard_client::Docker) -> OwnSite {
        vacsine_docker::demo::images(d).await.expect("demo images");
        let prefix = format!(
            "h-avail-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let site = OwnSite {
            prefix: prefix.clone(),
            dir: tempfile::tempdir().unwrap(),
        };
        let net = format!("{prefix}-lan");
        let out = docker_cli(&["network", "create", &net]);
        assert!(out.status.success(), "{out:?}");
        for role in ["web", "outside"] {
            let name = format!("{prefix}-{role}");
            let image = vacsine_docker::demo::image_tag(role);
            let out = docker_cli(&[
                "run",
                "-d",
                "--name",
                &name,
                "--hostname",
                role,
                "--network",
                &net,
                "--network-alias",
                role,
                "--sysctl",
                "net.ipv4.ip_forward=0",
                &image,
            ]);
            assert!(out.status.success(), "{out:?}");
        }
        // The web server answers before the test starts.
        let outside = format!("{prefix}-outside");
        let mut up = false;
        for _ in 0..100 {
            if dexec(&outside, &["wget", "-q", "-O", "-", "http://web/"])
                .await
                .contains("Vacsine demo")
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "the web server of {prefix} did not answer");
        let target = format!(
            "apiVersion: vacsine.io/v1\nkind: Target\nmetadata: {{name: {prefix}}}\nspec:\n  driver: docker\n  managementNetwork: {net}\n  nodes:\n    - {{name: web, container: {prefix}-web, roles: [web]}}\n  vantagePoints:\n    - {{name: outside, container: {prefix}-outside}}\n"
        );
        std::fs::write(site.dir.path().join("target.yaml"), target).unwrap();
        std::fs::create_dir(site.dir.path().join("catalog")).unwrap();
        std::fs::write(site.dir.path().join("catalog/chmod.yaml"), CHMOD).unwrap();
        std::fs::write(
            site.dir.path().join("catalog/chmod-and-bounce.yaml"),
            CHMOD_AND_BOUNCE,
        )
        .unwrap();
        site
    }

    fn web(&self) -> String {
        format!("{}-web", self.prefix)
    }

    /// Inputs for a policy whose one fix is catalog workflow `fix`.
    fn inputs(&self, fix: &str) -> Inputs {
        let p = self.dir.path().join("policy.yaml");
        std::fs::write(&p, POLICY.replace("FIX", fix)).unwrap();
        load_inputs(&p, &self.dir.path().join("target.yaml"), &[])
            .unwrap_or_else(|e| panic!("{e:?}"))
    }
}

impl Drop for OwnSite {
    fn drop(&mut self) {
        for role in ["web", "outside"] {
            let _ = docker_cli(&["rm", "-f", "-v", &format!("{}-{role}", self.prefix)]);
        }
        let _ = docker_cli(&["network", "rm", &format!("{}-lan", self.prefix)]);
    }
}

const POLICY: &str = r#"apiVersion: vacsine.io/v1
kind: Policy
metadata: {name: availability-test}
spec:
  catalog: [catalog]
  requirements:
    - id: web-reachable
      title: The web service answers from outside
      kind: availability
      severity: high
      nodes: {roles: [web]}
      check: {http: {port: 80, path: /, from: outside, status: 200}}
    - id: webroot
      title: web root not world-writable
      severity: low
      nodes: {roles: [web]}
      check: {file: {path: /srv/www, maxMode: "0755"}}
      fixes:
        - {uses: FIX, with: {path: /srv/www, mode: "0755"}, disruption: low}
"#;

const CHMOD: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata: {name: chmod}
spec:
  inputs:
    path: {type: string}
    mode: {type: string}
  steps:
    - id: chmod
      uses: file
      with: {path: "{{ inputs.path }}", mode: "{{ inputs.mode }}"}
"#;

/// The same fix, then the web server is stopped for 1.5 s and started again (only when the
/// mode changed: the idempotence run does not bounce it).
const CHMOD_AND_BOUNCE: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata: {name: chmod-and-bounce}
spec:
  inputs:
    path: {type: string}
    mode: {type: string}
  steps:
    - id: chmod
      uses: file
      with: {path: "{{ inputs.path }}", mode: "{{ inputs.mode }}"}
    - id: bounce
      needs: [chmod]
      if: steps.chmod.changed
      uses: command
      with:
        argv: [sh, -c, "killall httpd; sleep 1.5; httpd -p 80 -h /srv/www"]
"#;

/// Objects of sandbox `id` still on the engine (other sandboxes may exist: other tests on
/// this machine run their own).
fn leftovers_of(id: Option<&str>) -> Vec<String> {
    let Some(id) = id else { return vec![] };
    let label = format!("label=vacsine.sandbox={id}");
    let mut v = Vec::new();
    for kind in [
        &["ps", "-aq"][..],
        &["network", "ls", "-q"],
        &["volume", "ls", "-q"],
        &["image", "ls", "-q"],
    ] {
        let mut args = kind.to_vec();
        args.extend(["--filter", &label]);
        let out = docker_cli(&args);
        v.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    v
}

fn web_guard(rep: &vacsine_enforce::Report) -> &GuardAvailability {
    let g = &rep.availability.guards;
    assert_eq!(g.len(), 1, "one guard on one node: {g:?}");
    assert_eq!(
        (g[0].requirement.as_str(), g[0].node.as_str()),
        ("web-reachable", "web")
    );
    &g[0]
}

/// An enforce that changes a file only: the guard is probed all along (also while the target
/// is cloned) and never fails. The verdict is as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue6_availability_measured_without_outage() {
    let Some(d) = docker().await else { return };
    // One test at a time (probe timing stays meaningful), and not beside the tests that
    // count or collect every sandbox object.
    let _g = crate::SITE.lock().await;
    let site = OwnSite::up(&d).await;
    let rep = enforce(&DockerDriver, &site.inputs("chmod"), &opts())
        .await
        .expect("enforce");
    let human = vacsine_enforce::report::enforce_human(&rep);
    eprintln!("{human}");
    assert_eq!(rep.verdict, Verdict::Verified, "{}", rep.summary);
    let g = web_guard(&rep);
    let secs = rep.availability.duration_ms as f64 / 1000.0;
    println!(
        "unchanged site: {} probes in {secs:.1}s, {} failed, longest outage {} ms",
        g.probes, g.failed, g.longest_outage_ms
    );
    // Every 250 ms during an enforce of several seconds.
    assert!(g.probes >= 8, "{g}");
    assert!(
        g.probes as f64 >= secs * 2.0,
        "fewer probes than one per 500 ms: {g}"
    );
    assert_eq!((g.failed, g.longest_outage_ms), (0, 0), "{g}");
    assert!(g.last_failure.is_none());
    // The target stayed available while it was cloned (it is never paused).
    let clone = g
        .phases
        .iter()
        .find(|p| p.phase == "clone sandbox")
        .unwrap_or_else(|| panic!("no probe during the clone: {g:?}"));
    assert!(clone.probes >= 1 && clone.failed == 0, "{clone:?}");
    // Probes are attributed to the phase they started in (short phases may have none).
    assert_eq!(
        g.phases.iter().map(|p| p.probes).sum::<u32>(),
        g.probes,
        "{g:?}"
    );
    assert!(
        human.contains(&format!(
            "web-reachable on web: {} probes, 0 failed, longest outage 0 ms",
            g.probes
        )),
        "{human}"
    );
    let v = serde_json::to_value(&rep).unwrap();
    assert_eq!(v["availability"]["guards"][0]["probes"], g.probes);
    assert_eq!(v["availability"]["guards"][0]["failed"], 0);
    assert_eq!(v["availability"]["interval_ms"], 250);
    assert!(
        leftovers_of(rep.sandbox.id.as_deref()).is_empty(),
        "sandbox objects left"
    );
}

/// The fix stops the web server for 1.5 s on the target: the failed probes and the outage are
/// reported, in the phase they happened in; the verdict logic is unchanged (the server is
/// back when the target is verified).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue6_availability_reports_an_outage_during_target_apply() {
    let Some(d) = docker().await else { return };
    // One test at a time (probe timing stays meaningful), and not beside the tests that
    // count or collect every sandbox object.
    let _g = crate::SITE.lock().await;
    let site = OwnSite::up(&d).await;
    let rep = enforce(&DockerDriver, &site.inputs("chmod-and-bounce"), &opts())
        .await
        .expect("enforce");
    let human = vacsine_enforce::report::enforce_human(&rep);
    eprintln!("{human}");
    assert_eq!(rep.verdict, Verdict::Verified, "{}", rep.summary);
    let g = web_guard(&rep);
    println!(
        "web stopped for 1.5 s: {} probes, {} failed, longest outage {} ms",
        g.probes, g.failed, g.longest_outage_ms
    );
    // 1.5 s down, probed every 250 ms: several failures, an outage of about 1.5 s (plus the
    // time to start the server, minus at most one interval).
    assert!(g.failed >= 3, "{g}");
    assert!(
        (1000..=6000).contains(&g.longest_outage_ms),
        "outage out of range: {g}"
    );
    let failed_in: Vec<&str> = g
        .phases
        .iter()
        .filter(|p| p.failed > 0)
        .map(|p| p.phase.as_str())
        .collect();
    assert_eq!(failed_in, vec!["apply to target"], "{g:?}");
    assert!(g.last_failure.is_some(), "{g:?}");
    assert!(
        human.contains(&format!(
            "web-reachable on web: {} probes, {} failed, longest outage {} ms",
            g.probes, g.failed, g.longest_outage_ms
        )) && human.contains("apply to target"),
        "{human}"
    );
    // The server is back: the last probes passed.
    let web = site.web();
    assert!(!dexec(&web, &["pidof", "httpd"]).await.trim().is_empty());
    assert!(
        leftovers_of(rep.sandbox.id.as_deref()).is_empty(),
        "sandbox objects left"
    );
}

/// New TCP connections to the web node's port 80, counted by an nft rule in its network
/// namespace (each http probe opens one).
async fn web_connections(web: &str) -> u64 {
    let rules = nft_list(web, false).await;
    counted(&rules).unwrap_or_else(|| panic!("no counter in {rules}"))
}

/// `packets N` of the counting rule.
fn counted(rules: &str) -> Option<u64> {
    let line = rules.lines().find(|l| l.contains("tcp dport 80"))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "packets" {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// When the enforce is abandoned (its future dropped, as on Ctrl-C), the probes stop with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue6_availability_probes_stop_when_enforce_is_dropped() {
    let Some(d) = docker().await else { return };
    // One test at a time (probe timing stays meaningful), and not beside the tests that
    // count or collect every sandbox object.
    let _g = crate::SITE.lock().await;
    let site = OwnSite::up(&d).await;
    let web = site.web();
    // Count new connections to port 80 in the web node's network namespace.
    let pid = docker_cli(&["inspect", "-f", "{{.State.Pid}}", &web]);
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    let out = StdCommand::new("nsenter")
        .args(["-t", &pid, "-n", "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(
                b"table inet avail_count {\n chain input {\n  type filter hook input priority -50; policy accept;\n  tcp dport 80 ct state new counter\n }\n}\n",
            )?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let before = web_connections(&web).await;
    let slot = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let mut o = opts();
    o.sandbox_slot = Some(slot.clone());
    // The enforce is held before its target apply (the sandbox has been cloned and checked
    // meanwhile, probes running), then dropped one second later.
    let reached = std::sync::Arc::new(tokio::sync::Notify::new());
    let at_hook = reached.clone();
    o.hook = Some(std::sync::Arc::new(move |p| {
        let at_hook = at_hook.clone();
        Box::pin(async move {
            if p == vacsine_enforce::HookPoint::BeforeTargetApply {
                at_hook.notify_one();
                std::future::pending::<()>().await;
            }
        })
    }));
    let inputs = site.inputs("chmod");
    // Boxed, so that `drop(run)` below drops the enforce itself.
    let mut run = Box::pin(enforce(&DockerDriver, &inputs, &o));
    tokio::select! {
        r = &mut run => panic!("the enforce ended before it could be dropped: {:?}", r.map(|r| r.verdict)),
        _ = async {
            reached.notified().await;
            tokio::time::sleep(Duration::from_millis(1000)).await;
        } => {}
    }
    drop(run);
    let at_drop = web_connections(&web).await;
    assert!(
        at_drop > before,
        "no probe while enforce ran ({before} → {at_drop})"
    );
    // Remove what the interrupted clone made, as the CLI's Ctrl-C handler does.
    let id = slot.lock().unwrap().clone();
    if let Some(id) = &id {
        use vacsine_core::driver::Driver;
        let mut quiet = 0;
        for _ in 0..20 {
            match DockerDriver.teardown(id).await {
                Ok(r) if r.is_empty() => quiet += 1,
                _ => quiet = 0,
            }
            if quiet >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let settled = web_connections(&web).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = web_connections(&web).await;
    assert_eq!(
        later, settled,
        "probes went on after the enforce was dropped ({settled} → {later})"
    );
    assert!(
        leftovers_of(id.as_deref()).is_empty(),
        "sandbox objects left"
    );
}
