//! The `ssh` and `listening` probes against a real OpenSSH server (issue 6, "effective, not
//! just configured"): a configuration file changed without a reload is seen as such.
//!
//! The server runs the demo's Debian base image (`demo::debian_base_tag()`: OpenSSH among
//! Debian's packages), built locally with `debootstrap --variant=minbase` from the mirror the
//! host's apt is configured with, then `docker import`ed (the same recipe as the engine's
//! `vacsine-test/python:1`). It is built once per machine and kept, and shared with the demo.

use crate::common::{docker, target, unique, Cleanup};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{CreateContainerOptions, StartContainerOptions};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use vacsine_core::doc::Loc;
use vacsine_core::eval::evaluate;
use vacsine_core::node::{NodeOps, Observation, Site};
use vacsine_core::policy::*;
use vacsine_core::Outcome;
use vacsine_docker::DockerSite;

/// Build (once per machine) the OpenSSH image. Err: why it cannot be built.
fn openssh_image() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let image = vacsine_docker::demo::debian_base_tag();
            if let vacsine_docker::debian::Built::Now { suite, took } =
                vacsine_docker::debian::ensure_image(&image, vacsine_docker::demo::DEBIAN_PACKAGES)?
            {
                eprintln!(
                    "built {image} ({suite}, debootstrap minbase + the demo's packages) in {:.0} s",
                    took.as_secs_f64()
                );
            }
            Ok(())
        })
        .clone()
}

async fn run(d: &bollard::Docker, name: &str, net: &str, cmd: &[&str]) {
    d.create_container(
        Some(CreateContainerOptions {
            name: Some(name.into()),
            ..Default::default()
        }),
        ContainerCreateBody {
            image: Some(vacsine_docker::demo::debian_base_tag()),
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            host_config: Some(HostConfig {
                network_mode: Some(net.into()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    net.to_string(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("create {name}: {e}"));
    d.start_container(name, None::<StartContainerOptions>)
        .await
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
}

async fn sh(n: &dyn NodeOps, script: &str) -> String {
    let argv: Vec<String> = ["/bin/sh", "-c", script].map(String::from).to_vec();
    let o = n
        .exec(&argv, &[], None, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        o.exit_code,
        Some(0),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ssh_check(key: &str, login: SshLogin) -> Check {
    Check::Ssh(SshCheck {
        port: 22,
        from: Loc::new("outside".into()),
        user: "root".into(),
        key: Some(Loc::new(key.into())),
        expect: SshExpect {
            banner_matches: Some(Loc::new("^SSH-2\\.0-OpenSSH_".into())),
            login: Some(Loc::new(login)),
            methods_include: vec![Loc::new("publickey".into())],
            methods_exclude: vec![],
        },
        timeout_ms: 3000,
    })
}

fn login_of(o: &Observation) -> Option<bool> {
    match o {
        Observation::Ssh { login, .. } => *login,
        o => panic!("not an ssh observation: {o:?}"),
    }
}

/// Observe until `want` (sshd re-executes on SIGHUP: a moment without a listener).
async fn until_login(site: &DockerSite, node: &str, c: &Check, want: bool) -> Observation {
    let t = Instant::now();
    loop {
        let o = site.observe(node, c).await;
        if login_of(&o) == Some(want) || t.elapsed() > Duration::from_secs(10) {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running OpenSSH server (PID 1, its own master, as in a typical container) with
/// `PermitRootLogin yes` and an authorized key for root, and a vantage container on the same
/// network. None: skipped (no Docker, or the image cannot be built and it is not required).
struct SshdSite {
    _cleanup: Cleanup,
    _keydir: tempfile::TempDir,
    site: DockerSite,
    server: String,
    /// IP of the vantage container on the shared network.
    vantage_ip: String,
    key: String,
}

async fn sshd_site() -> Option<SshdSite> {
    let d = docker().await?;
    if let Err(why) = openssh_image() {
        assert!(
            std::env::var("VACSINE_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "VACSINE_REQUIRE_DOCKER=1 but {why}"
        );
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let (server, vantage, net) = (unique("sshd"), unique("sshv"), unique("sshnet"));
    let cleanup = Cleanup {
        containers: vec![server.clone(), vantage.clone()],
        networks: vec![net.clone()],
        volumes: vec![],
    };
    d.create_network(NetworkCreateRequest {
        name: net.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    run(
        &d,
        &server,
        &net,
        &[
            "/bin/sh",
            "-c",
            "mkdir -p /run/sshd && ssh-keygen -A >/dev/null && exec /usr/sbin/sshd -D -e",
        ],
    )
    .await;
    run(&d, &vantage, &net, &["sleep", "infinity"]).await;
    let site = DockerSite::resolve(d.clone(), &target(&[&server], Some(&vantage)))
        .await
        .unwrap();
    let n = site.node_ops(&server).unwrap();
    // A key pair made by the server's own ssh-keygen; root's authorized key; root login on.
    let private = sh(
        n.as_ref(),
        "ssh-keygen -q -t ed25519 -N '' -C vacsine-test -f /tmp/k && mkdir -p -m 700 /root/.ssh && cp /tmp/k.pub /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys && cat /tmp/k && rm /tmp/k /tmp/k.pub",
    )
    .await;
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("id_ed25519");
    std::fs::write(&key, private).unwrap();
    let key = key.to_string_lossy().into_owned();
    sh(
        n.as_ref(),
        "sed -i -E 's/^#?PermitRootLogin .*/PermitRootLogin yes/' /etc/ssh/sshd_config && grep -q '^PermitRootLogin yes' /etc/ssh/sshd_config && kill -HUP 1",
    )
    .await;
    let allowed = ssh_check(&key, SshLogin::Allowed);
    let o = until_login(&site, &server, &allowed, true).await;
    assert_eq!(login_of(&o), Some(true), "{o:?}");
    let vantage_ip = d
        .inspect_container(
            &vantage,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap()
        .network_settings
        .and_then(|s| s.networks)
        .and_then(|n| n.get(&net).and_then(|e| e.ip_address.clone()))
        .unwrap();
    Some(SshdSite {
        _cleanup: cleanup,
        _keydir: keydir,
        site,
        server,
        vantage_ip,
        key,
    })
}

#[tokio::test]
async fn ssh_probe_sees_the_running_config_not_the_file() {
    // Bind every field: the containers and the key live until the end of the test.
    let Some(SshdSite {
        _cleanup,
        _keydir,
        site,
        server,
        vantage_ip,
        key,
    }) = sshd_site().await
    else {
        return;
    };
    let n = site.node_ops(&server).unwrap();
    // The probe is made from the vantage point's network namespace, not from the host: the
    // server refuses every other source.
    n.nft_apply(&format!("table inet vt_only_vantage {{ chain input {{ type filter hook input priority 0; policy accept; tcp dport 22 ip saddr != {vantage_ip} reject with tcp reset\n }}\n}}\n"))
        .await
        .unwrap();
    let server_ip = site.node_address(&server, "outside").await.unwrap();
    let from_host = std::net::TcpStream::connect_timeout(
        &format!("{server_ip}:22").parse().unwrap(),
        Duration::from_secs(2),
    );
    assert!(
        from_host.is_err(),
        "the host must be refused: {from_host:?}"
    );

    let allowed = ssh_check(&key, SshLogin::Allowed);
    let denied = ssh_check(&key, SshLogin::Denied);
    let o = until_login(&site, &server, &allowed, true).await;
    let e = evaluate(&allowed, &o);
    assert_eq!(e.outcome, Outcome::Pass, "{e:?} from {o:?}");
    assert!(e.observed.contains("SSH-2.0-OpenSSH_"), "{e:?}");
    assert!(e.observed.contains("publickey"), "{e:?}");
    assert!(e.observed.contains("key login as root: allowed"), "{e:?}");

    // The file says no; sshd was not told: the behaviour is unchanged, and seen so.
    sh(
        n.as_ref(),
        "sed -i -E 's/^PermitRootLogin .*/PermitRootLogin no/' /etc/ssh/sshd_config && grep -q '^PermitRootLogin no' /etc/ssh/sshd_config",
    )
    .await;
    for _ in 0..3 {
        let o = site.observe(&server, &denied).await;
        let e = evaluate(&denied, &o);
        assert_eq!(e.outcome, Outcome::Fail, "{e:?}");
        assert!(e.message.contains("root logs in with the key"), "{e:?}");
    }

    // SIGHUP to the master: it re-reads the file, root is now refused.
    sh(n.as_ref(), "kill -HUP \"$(cat /run/sshd.pid)\"").await;
    let o = until_login(&site, &server, &denied, false).await;
    let e = evaluate(&denied, &o);
    assert_eq!(e.outcome, Outcome::Pass, "{e:?} from {o:?}");
    assert!(e.observed.contains("key login as root: denied"), "{e:?}");

    // A key the server does not know never logs in; a missing key file is an error naming it.
    let other = std::path::Path::new(&key).with_file_name("missing");
    let o = site
        .observe(
            &server,
            &ssh_check(&other.to_string_lossy(), SshLogin::Denied),
        )
        .await;
    match &o {
        Observation::Error { message } => assert!(message.contains("missing"), "{message}"),
        o => panic!("{o:?}"),
    }

    // listening: sshd on :22 (IPv4 and IPv6), nothing on :23.
    let listening = |port, expect| {
        Check::Listening(ListeningCheck {
            port,
            protocol: Protocol::Tcp,
            expect,
        })
    };
    let c22 = listening(22, Presence::Present);
    let t = Instant::now();
    let o = site.observe(&server, &c22).await;
    let listening_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let _ = site.observe(&server, &denied).await;
    eprintln!(
        "probe wall time: listening {listening_ms:.1} ms, ssh (connect, kex, none + publickey auth) {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let e = evaluate(&c22, &o);
    assert_eq!(e.outcome, Outcome::Pass, "{e:?}");
    assert!(e.observed.contains("tcp 0.0.0.0:22"), "{e:?}");
    let c23 = listening(23, Presence::Absent);
    assert_eq!(
        evaluate(&c23, &site.observe(&server, &c23).await).outcome,
        Outcome::Pass
    );

    // A firewall rule hides :22 from the network; the socket is still seen listening.
    n.nft_apply("table inet vt_hide { chain input { type filter hook input priority 0; policy accept; tcp dport 22 reject with tcp reset\n }\n}\n")
        .await
        .unwrap();
    let port = Check::Port(PortCheck {
        port: 22,
        from: Loc::new("outside".into()),
        expect: PortState::Closed,
        timeout_ms: 1000,
    });
    assert_eq!(
        evaluate(&port, &site.observe(&server, &port).await).outcome,
        Outcome::Pass
    );
    let gone = listening(22, Presence::Absent);
    let e = evaluate(&gone, &site.observe(&server, &gone).await);
    assert_eq!(e.outcome, Outcome::Fail, "{e:?}");
    assert!(
        e.message.contains("firewall rule does not remove it"),
        "{e:?}"
    );
    // And the ssh probe now finds no server, and says why.
    let o = site.observe(&server, &denied).await;
    let e = evaluate(&denied, &o);
    assert_eq!(e.outcome, Outcome::Fail, "{e:?}");
    assert!(e.observed.contains("no SSH server"), "{e:?}");
}

/// Run the shipped `harden-sshd` on `node` of `site`: (run status, changed, stdout of every step).
async fn harden_sshd(
    site: &DockerSite,
    node: &str,
    option: &str,
    value: &str,
) -> (vacsine_engine::RunStatus, bool, String) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog/harden-sshd.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let Ok(vacsine_core::Document::Workflow(w)) = vacsine_core::doc::load(
        &vacsine_core::SourceFile::new("harden-sshd.yaml", text.as_str()),
    ) else {
        panic!("catalog/harden-sshd.yaml does not load")
    };
    let mut cat = vacsine_engine::Catalog::new();
    cat.insert(w.clone());
    let engine = vacsine_engine::Engine::new(vacsine_engine::Journal::in_memory().unwrap(), cat);
    let mut req = vacsine_engine::RunRequest::new(w);
    req.inputs = serde_json::json!({"option": option, "value": value})
        .as_object()
        .unwrap()
        .clone();
    req.nodes
        .insert(node.to_string(), site.node_ops(node).unwrap());
    req.default_node = Some(node.to_string());
    let rep = engine.run(req).await.unwrap();
    let out: Vec<String> = rep
        .records
        .iter()
        .map(|r| {
            format!(
                "{}: {} {}",
                r.step_id,
                r.stdout.trim(),
                r.error.clone().unwrap_or_default()
            )
        })
        .collect();
    (rep.status, rep.changed, out.join("\n"))
}

/// Issue 6: the catalog's fix is effective — `sshd -t`, then the running sshd takes it — and
/// idempotent (a second run changes nothing and sends no signal).
#[tokio::test]
async fn harden_sshd_makes_the_running_sshd_take_the_config() {
    // Bind every field: the containers and the key live until the end of the test.
    let Some(SshdSite {
        _cleanup,
        _keydir,
        site,
        server,
        key,
        ..
    }) = sshd_site().await
    else {
        return;
    };
    let denied = ssh_check(&key, SshLogin::Denied);
    let (status, changed, out) = harden_sshd(&site, &server, "PermitRootLogin", "no").await;
    assert_eq!(status, vacsine_engine::RunStatus::Succeeded, "{out}");
    assert!(changed, "{out}");
    assert!(out.contains("is valid"), "{out}");
    assert!(
        out.contains("sent SIGHUP to the sshd master process (pid 1)"),
        "{out}"
    );
    let o = site.observe(&server, &denied).await;
    let e = evaluate(&denied, &o);
    assert_eq!(e.outcome, Outcome::Pass, "{e:?} from {o:?}\n{out}");

    let (status, changed, out) = harden_sshd(&site, &server, "PermitRootLogin", "no").await;
    assert_eq!(status, vacsine_engine::RunStatus::Succeeded, "{out}");
    assert!(!changed, "second run must change nothing: {out}");
    assert!(!out.contains("SIGHUP"), "{out}");

    // A value sshd refuses: `sshd -t` fails the run and the file is restored.
    let n = site.node_ops(&server).unwrap();
    let before = n.read_file("/etc/ssh/sshd_config").await.unwrap().unwrap();
    let (status, _, out) = harden_sshd(&site, &server, "MaxAuthTries", "lots").await;
    assert_ne!(status, vacsine_engine::RunStatus::Succeeded, "{out}");
    let after = n.read_file("/etc/ssh/sshd_config").await.unwrap().unwrap();
    assert_eq!(before.content, after.content, "{out}");
    // sshd still runs and still denies root.
    let e = evaluate(&denied, &site.observe(&server, &denied).await);
    assert_eq!(e.outcome, Outcome::Pass, "{e:?}");
}

/// On the busybox demo image (no sshd binary, no sshd running) the fix still applies, and
/// says there was nothing to check or reload.
#[tokio::test]
async fn harden_sshd_on_a_node_without_sshd_says_nothing_to_reload() {
    let Some(d) = docker().await else { return };
    crate::common::images(&d).await;
    let name = unique("nosshd");
    let _c = Cleanup {
        containers: vec![name.clone()],
        networks: vec![],
        volumes: vec![],
    };
    crate::common::start(&d, &name, "ssh", ContainerCreateBody::default()).await;
    let site = DockerSite::resolve(d.clone(), &target(&[&name], None))
        .await
        .unwrap();
    let (status, changed, out) = harden_sshd(&site, &name, "PermitRootLogin", "no").await;
    assert_eq!(status, vacsine_engine::RunStatus::Succeeded, "{out}");
    assert!(changed, "{out}");
    assert!(out.contains("no sshd binary in this node"), "{out}");
    assert!(
        out.contains("no running sshd in this node: nothing to reload"),
        "{out}"
    );
    let (status, changed, out) = harden_sshd(&site, &name, "PermitRootLogin", "no").await;
    assert_eq!(status, vacsine_engine::RunStatus::Succeeded, "{out}");
    assert!(!changed, "{out}");
}
