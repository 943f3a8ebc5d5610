//! Sandbox clone and teardown.
use crate::common::{demo_site, docker, images, start, target, unique, Cleanup};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use vacsine_core::doc::Loc;
use vacsine_core::node::{NodeOps, Observation, Site};
use vacsine_core::policy::{Check, HttpCheck};
use vacsine_docker::{sandbox, DockerSite, SANDBOX_LABEL};

#[tokio::test]
async fn clone_is_faithful_isolated_and_torn_down() {
    let Some(d) = docker().await else { return };
    images(&d).await;
    let (net, web, out, vol) = (
        unique("snet"),
        unique("sweb"),
        unique("sout"),
        unique("svol"),
    );
    let _c = Cleanup {
        containers: vec![web.clone(), out.clone()],
        networks: vec![net.clone()],
        volumes: vec![vol.clone()],
    };
    d.create_network(NetworkCreateRequest {
        name: net.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let body = |alias: &str, publish: bool, binds: Option<Vec<String>>| ContainerCreateBody {
        hostname: Some(alias.into()),
        exposed_ports: publish.then(|| HashMap::from([("80/tcp".to_string(), HashMap::new())])),
        host_config: Some(HostConfig {
            network_mode: Some(net.clone()),
            binds,
            port_bindings: publish.then(|| {
                HashMap::from([(
                    "80/tcp".to_string(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some("0".into()),
                    }]),
                )])
            }),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                net.clone(),
                EndpointSettings {
                    aliases: Some(vec![alias.to_string()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    start(
        &d,
        &web,
        "web",
        body("www", true, Some(vec![format!("{vol}:/data")])),
    )
    .await;
    start(&d, &out, "outside", body("probe", false, None)).await;
    let site = DockerSite::resolve(d.clone(), &target(&[&web], Some(&out)))
        .await
        .unwrap();
    let n = site.node_ops(&web).unwrap();
    n.write_file("/data/state.txt", b"volume state", 0o600, 0, 0)
        .await
        .unwrap();
    n.write_file("/srv/www/index.html", b"changed in target", 0o644, 0, 0)
        .await
        .unwrap();
    n.nft_apply("table inet vacsine_s { chain input { type filter hook input priority 0; policy accept; tcp dport 23 drop\n }\n}\n")
        .await
        .unwrap();

    let id = sandbox::new_id();
    let t0 = Instant::now();
    let (sbx, clone) = site.clone_sandbox(&id, |m| eprintln!("{m}")).await.unwrap();
    println!("clone of 2 containers: {:?}", t0.elapsed());

    // Same node names, resolved to clones.
    assert_eq!(
        clone
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .collect::<Vec<_>>(),
        vec![web.clone()]
    );
    let cn = clone.node_ops(&web).unwrap();
    let handle = cn.node().handle.clone();
    assert_ne!(handle, web);
    // Label, no published ports, internal networks.
    let info = d
        .inspect_container(
            &handle,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    assert_eq!(
        info.config
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap()
            .get(SANDBOX_LABEL),
        Some(&id)
    );
    assert_eq!(
        info.config.as_ref().unwrap().hostname.as_deref(),
        Some("www")
    );
    let ports = info
        .network_settings
        .as_ref()
        .unwrap()
        .ports
        .clone()
        .unwrap_or_default();
    assert!(
        ports
            .values()
            .all(|b| b.as_ref().is_none_or(|v| v.is_empty())),
        "{ports:?}"
    );
    let nets = cn.networks().await.unwrap();
    assert_eq!(nets.len(), 1);
    let ni = d
        .inspect_network(
            &nets[0],
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    assert_eq!(ni.internal, Some(true));
    // Same files, volume content, firewall tables.
    assert_eq!(
        cn.read_file("/srv/www/index.html")
            .await
            .unwrap()
            .unwrap()
            .content,
        b"changed in target"
    );
    let v = cn.read_file("/data/state.txt").await.unwrap().unwrap();
    assert_eq!(
        (v.content.as_slice(), v.mode),
        (&b"volume state"[..], 0o600)
    );
    let r = cn.nft_ruleset().await.unwrap();
    assert!(
        r.contains("table inet vacsine_s") && r.contains("tcp dport 23 drop"),
        "{r}"
    );
    // The same policy runs unchanged: http from the cloned vantage, by alias-free address.
    let h = Check::Http(HttpCheck {
        port: 80,
        path: "/".into(),
        from: Loc::new("outside".into()),
        status: 200,
        body_matches: None,
        timeout_ms: 2000,
    });
    match clone.observe(&web, &h).await {
        Observation::Http { status, body, .. } => {
            assert_eq!(status, Some(200));
            assert_eq!(body, "changed in target");
        }
        o => panic!("{o:?}"),
    }
    // Alias resolves in the sandbox network.
    let vo = clone.vantage_points()["outside"].clone();
    let o = vacsine_docker::DockerNode::new(
        d.clone(),
        vacsine_core::target::ResolvedNode {
            name: vo.clone(),
            roles: vec![],
            labels: Default::default(),
            handle: vo,
        },
    )
    .exec(
        &[
            "nc".into(),
            "-w".into(),
            "1".into(),
            "www".into(),
            "80".into(),
        ],
        &[],
        Some(vec![]),
        Duration::from_secs(4),
    )
    .await
    .unwrap();
    assert_eq!(
        o.exit_code,
        Some(0),
        "{:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The target is unaffected by changes in the sandbox.
    cn.write_file("/srv/www/index.html", b"sandbox only", 0o644, 0, 0)
        .await
        .unwrap();
    assert_eq!(
        n.read_file("/srv/www/index.html")
            .await
            .unwrap()
            .unwrap()
            .content,
        b"changed in target"
    );

    // A restart (persistence check) keeps files and loses what only the running node held
    // (the nft tables of its network namespace); the target is not restarted.
    let target_pid = vacsine_docker::DockerNode::new(d.clone(), n.node().clone())
        .pid()
        .await
        .unwrap();
    let clone_pid = vacsine_docker::DockerNode::new(d.clone(), cn.node().clone())
        .pid()
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut restarted = sbx.restart().await.unwrap();
    println!("restart of 2 clones: {:?}", t0.elapsed());
    restarted.sort();
    let mut expected = vec![handle.clone(), clone.vantage_points()["outside"].clone()];
    expected.sort();
    assert_eq!(restarted, expected);
    assert_ne!(
        vacsine_docker::DockerNode::new(d.clone(), cn.node().clone())
            .pid()
            .await
            .unwrap(),
        clone_pid,
        "the clone was not restarted"
    );
    assert_eq!(
        vacsine_docker::DockerNode::new(d.clone(), n.node().clone())
            .pid()
            .await
            .unwrap(),
        target_pid,
        "the target was restarted"
    );
    assert_eq!(
        cn.read_file("/srv/www/index.html")
            .await
            .unwrap()
            .unwrap()
            .content,
        b"sandbox only"
    );
    let r = cn.nft_ruleset().await.unwrap();
    assert!(!r.contains("vacsine_s"), "{r}");
    assert!(n.nft_ruleset().await.unwrap().contains("vacsine_s"));

    let listed = sandbox::list(&d).await.unwrap();
    let mine = listed.iter().find(|s| s.id == id).expect("listed");
    assert_eq!(
        (mine.containers, mine.networks, mine.volumes, mine.images),
        (2, 1, 1, 2)
    );

    let removed = sbx.teardown().await.unwrap();
    assert!(!removed.is_empty());
    assert!(sbx.teardown().await.unwrap().is_empty(), "idempotent");
    assert!(!sandbox::list(&d).await.unwrap().iter().any(|s| s.id == id));
}

/// Benchmark (not a test): clone time of the demo site.
/// `cargo test -p vacsine-docker --test it -- --ignored --nocapture bench_demo_clone`
#[tokio::test]
#[ignore]
async fn bench_demo_clone() {
    let Some(d) = docker().await else { return };
    let (_demo, site) = demo_site(&d).await;
    let id = sandbox::new_id();
    let t0 = Instant::now();
    let r = site.clone_sandbox(&id, |_| {}).await;
    let took = t0.elapsed();
    let t1 = Instant::now();
    let removed = sandbox::teardown(&d, &id).await.unwrap();
    println!(
        "demo site clone (5 containers): {took:?}; teardown of {} objects: {:?}",
        removed.len(),
        t1.elapsed()
    );
    r.unwrap();
}

/// Freezer state of the cgroup of process `pid`: `Some(true)` when frozen (or freezing).
fn frozen(pid: i64) -> Option<bool> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cg.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        if ctrl.split(',').any(|c| c == "freezer") {
            let s = std::fs::read_to_string(format!("/sys/fs/cgroup/freezer{path}/freezer.state"))
                .ok()?;
            return Some(s.trim() != "THAWED");
        }
        if ctrl.is_empty() {
            if let Ok(ev) = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cgroup.events")) {
                return Some(ev.lines().any(|l| l.trim() == "frozen 1"));
            }
        }
    }
    None
}

/// Issue 6: cloning must not pause the target. While the demo site is cloned, the web node's
/// cgroup freezer is sampled every millisecond and its HTTP service is probed in a loop from
/// the vantage point; no sample may be frozen and no probe may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue6_clone_never_pauses_the_target() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let Some(d) = docker().await else { return };
    let (_demo, site) = demo_site(&d).await;
    let pid = d
        .inspect_container(
            "vacsine-demo-web",
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap()
        .state
        .and_then(|s| s.pid)
        .unwrap();
    assert_eq!(
        frozen(pid),
        Some(false),
        "freezer state of the web node unreadable"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (samples, frozen_samples) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (stop, samples, frozen_samples) =
            (stop.clone(), samples.clone(), frozen_samples.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                samples.fetch_add(1, Ordering::Relaxed);
                if frozen(pid) == Some(true) {
                    frozen_samples.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let prober = {
        let (stop, site) = (stop.clone(), site.clone());
        tokio::spawn(async move {
            let h = Check::Http(HttpCheck {
                port: 80,
                path: "/".into(),
                from: Loc::new("outside".into()),
                status: 200,
                body_matches: None,
                timeout_ms: 10_000,
            });
            let (mut ok, mut failed, mut longest) = (0usize, Vec::new(), Duration::ZERO);
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match site.observe("web", &h).await {
                    Observation::Http {
                        status: Some(200), ..
                    } => {
                        ok += 1;
                        longest = longest.max(last.elapsed());
                        last = Instant::now();
                    }
                    o => failed.push(format!("{o:?}")),
                }
            }
            longest = longest.max(last.elapsed());
            (ok, failed, longest)
        })
    };
    let id = sandbox::new_id();
    let t0 = Instant::now();
    let r = site.clone_sandbox(&id, |_| {}).await;
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, longest) = prober.await.unwrap();
    sampler.join().unwrap();
    sandbox::teardown(&d, &id).await.unwrap();
    r.unwrap();
    println!(
        "clone of the demo site: {took:?}; {ok} HTTP probes from the vantage point, {} failed, longest gap between answers {longest:?}; {} freezer samples, {} frozen",
        failed.len(),
        samples.load(Ordering::Relaxed),
        frozen_samples.load(Ordering::Relaxed)
    );
    assert_eq!(
        frozen_samples.load(Ordering::Relaxed),
        0,
        "the target was frozen during the clone"
    );
    assert!(
        failed.is_empty(),
        "probes failed during the clone: {failed:?}"
    );
    assert!(ok > 0 && samples.load(Ordering::Relaxed) > 10);
}

/// Issue 6: a stopped node resolves as unavailable (its observations are errors with the
/// reason), and a sandbox of the site clones the others and keeps it unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue6_stopped_node_is_unavailable_not_fatal() {
    let Some(d) = docker().await else { return };
    let (_demo, _) = demo_site(&d).await;
    let out = std::process::Command::new("docker")
        .args(["stop", "-t", "1", "vacsine-demo-legacy"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let site = DockerSite::resolve(d.clone(), &vacsine_docker::demo::target())
        .await
        .expect("resolve with a stopped node");
    assert!(site.unavailable()["legacy"].contains("is not running"));
    let f =
        Check::File(serde_json::from_value(serde_json::json!({"path": "/etc/passwd"})).unwrap());
    match site.observe("legacy", &f).await {
        Observation::Error { message } => assert!(message.contains("vacsine-demo-legacy")),
        o => panic!("{o:?}"),
    }
    assert!(matches!(
        site.observe("web", &f).await,
        Observation::File { stat: Some(_), .. }
    ));
    let id = sandbox::new_id();
    let r = site.clone_sandbox(&id, |_| {}).await;
    let removed = sandbox::teardown(&d, &id).await.unwrap();
    let (_, clone) = r.unwrap();
    assert!(matches!(
        clone.observe("legacy", &f).await,
        Observation::Error { .. }
    ));
    assert_eq!(
        removed
            .iter()
            .filter(|o| o.starts_with("container"))
            .count(),
        4
    );
}

/// Issue 6: interrupting a clone at any moment (its future dropped, as on Ctrl-C) and then
/// tearing the sandbox down leaves no container, network, volume or image labelled for it,
/// even when a commit or a create was in flight. Cancel points: after the k-th progress
/// message (network, commits, creates, nft copies) plus a short delay, and fixed delays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue6_interrupted_clone_leaves_nothing() {
    let Some(d) = docker().await else { return };
    let (_demo, site) = demo_site(&d).await;
    let mut points: Vec<(usize, u64)> = [1, 2, 4, 6, 7, 9, 12].iter().map(|k| (*k, 20)).collect();
    points.extend([(0, 100), (0, 700)]);
    let mut leaks = Vec::new();
    for (k, ms) in points {
        let id = sandbox::new_id();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let interrupt = async {
            for _ in 0..k {
                if rx.recv().await.is_none() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
        };
        let finished = tokio::select! {
            r = site.clone_sandbox(&id, move |m| { let _ = tx.send(m.to_string()); }) => Some(r.is_ok()),
            _ = interrupt => None,
        };
        sandbox::teardown(&d, &id).await.unwrap();
        // Anything still in flight on the engine would land now.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let left = sandbox::list(&d).await.unwrap();
        if let Some(info) = left.iter().find(|s| s.id == id) {
            leaks.push(format!("cancel after {k} messages + {ms} ms: {info:?}"));
            let _ = sandbox::teardown(&d, &id).await;
        }
        println!("cancel after {k} messages + {ms} ms: clone finished first: {finished:?}");
    }
    assert!(leaks.is_empty(), "{leaks:#?}");
}
