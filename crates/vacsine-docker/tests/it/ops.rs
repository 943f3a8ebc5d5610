//! Node operations on private containers.

use crate::common::{docker, images, start, target, unique, Cleanup};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use vacsine_core::doc::Loc;
use vacsine_core::node::{NodeOps, Observation, Site};
use vacsine_core::policy::{Check, FileCheck, FirewallCheck};
use vacsine_docker::DockerSite;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

async fn one(prefix: &str) -> Option<(bollard::Docker, Cleanup, String, DockerSite)> {
    let d = docker().await?;
    images(&d).await;
    let name = unique(prefix);
    let cleanup = Cleanup {
        containers: vec![name.clone()],
        networks: vec![],
        volumes: vec![],
    };
    start(&d, &name, "base", ContainerCreateBody::default()).await;
    let site = DockerSite::resolve(d.clone(), &target(&[&name], None))
        .await
        .unwrap();
    Some((d, cleanup, name, site))
}

#[tokio::test]
async fn symlink_escape_is_refused() {
    let Some((_d, _c, name, site)) = one("symlink").await else {
        return;
    };
    let n = site.node_ops(&name).unwrap();
    let secret = format!("/tmp/vacsine-host-secret-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(&secret, "HOST SECRET").unwrap();
    let hostdir = tempfile::tempdir().unwrap();
    let hd = hostdir.path().to_str().unwrap().to_string();
    let t = Duration::from_secs(5);
    for argv in [
        s(&["ln", "-s", &secret, "/etc/leak-abs"]),
        s(&[
            "ln",
            "-s",
            &format!("../../../../../..{secret}"),
            "/etc/leak-rel",
        ]),
        s(&[
            "ln",
            "-s",
            &format!("/proc/1/root{secret}"),
            "/etc/leak-magic",
        ]),
        s(&["ln", "-s", &hd, "/etc/leak-dir"]),
    ] {
        let o = n.exec(&argv, &[], None, t).await.unwrap();
        assert_eq!(o.exit_code, Some(0), "{argv:?}");
    }
    for p in ["/etc/leak-abs", "/etc/leak-rel", "/etc/leak-magic"] {
        // read_file: absent inside the container's root, or refused — never the host file.
        match n.read_file(p).await {
            Ok(None) | Err(_) => {}
            Ok(Some(c)) => panic!("{p} leaked {:?}", String::from_utf8_lossy(&c.content)),
        }
        let obs = site
            .observe(
                &name,
                &Check::File(FileCheck {
                    path: p.into(),
                    exists: true,
                    mode: None,
                    max_mode: None,
                    owner: None,
                    group: None,
                    contains: Some(Loc::new("SECRET".into())),
                    not_contains: None,
                }),
            )
            .await;
        assert!(
            matches!(
                obs,
                Observation::File { stat: None, .. } | Observation::Error { .. }
            ),
            "{p}: {obs:?}"
        );
    }
    // Writing through a symlinked directory lands inside the container, not on the host.
    n.write_file("/etc/leak-dir/planted", b"x", 0o644, 0, 0)
        .await
        .ok();
    assert!(!hostdir.path().join("planted").exists());
    // Writing over a symlink replaces the link, the host file is untouched.
    n.write_file("/etc/leak-abs", b"overwritten", 0o644, 0, 0)
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "HOST SECRET");
    let _ = std::fs::remove_file(&secret);
}

#[tokio::test]
async fn exec_env_stdin_and_timeout_kill() {
    let Some((_d, _c, name, site)) = one("exec").await else {
        return;
    };
    let n = site.node_ops(&name).unwrap();
    let o = n
        .exec(
            &s(&["sh", "-c", "echo \"$FOO\"; cat"]),
            &[("FOO".into(), "bar baz".into())],
            Some(b"from stdin".to_vec()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(o.exit_code, Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "bar baz\nfrom stdin");
    let o = n
        .exec(
            &s(&["sh", "-c", "exit 3"]),
            &[],
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(o.exit_code, Some(3));

    let t0 = Instant::now();
    let o = n
        .exec(&s(&["sleep", "47"]), &[], None, Duration::from_millis(800))
        .await
        .unwrap();
    assert!(o.timed_out);
    assert_eq!(o.exit_code, None);
    assert!(t0.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ps = n
        .exec(&s(&["ps", "-o", "args"]), &[], None, Duration::from_secs(5))
        .await
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.contains("sleep 47"), "not killed: {ps}");
}

#[tokio::test]
async fn files_roundtrip_atomic_write_and_chmod() {
    let Some((_d, _c, name, site)) = one("files").await else {
        return;
    };
    let n = site.node_ops(&name).unwrap();
    assert_eq!(n.read_file("/etc/nothing-here").await.unwrap(), None);
    n.write_file(
        "/etc/demo/services",
        b"httpd -p 8080 -h /tmp\n",
        0o640,
        0,
        65534,
    )
    .await
    .unwrap();
    let f = n.read_file("/etc/demo/services").await.unwrap().unwrap();
    assert_eq!(f.content, b"httpd -p 8080 -h /tmp\n");
    assert_eq!((f.mode, f.uid, f.gid), (0o640, 0, 65534));
    n.chmod("/etc/demo/services", 0o600).await.unwrap();
    assert_eq!(
        n.read_file("/etc/demo/services")
            .await
            .unwrap()
            .unwrap()
            .mode,
        0o600
    );
    n.chmod("/tmp", 0o755).await.unwrap();
    assert!(
        n.read_file("/tmp").await.is_err(),
        "a directory is not a regular file"
    );
    // No temporary file left behind.
    let ls = n
        .exec(
            &s(&["ls", "-a", "/etc/demo"]),
            &[],
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&ls.stdout).contains("vacsine"));
    assert!(n.write_file("relative", b"", 0o644, 0, 0).await.is_err());
}

#[tokio::test]
async fn nft_apply_ruleset_roundtrip_and_sysctl_set() {
    let Some((_d, _c, name, site)) = one("nft").await else {
        return;
    };
    let n = site.node_ops(&name).unwrap();
    n.nft_apply("table inet vacsine_t {\n chain input {\n  type filter hook input priority 0; policy drop;\n  tcp dport 22 accept\n }\n}\n")
        .await
        .unwrap();
    let r = n.nft_ruleset().await.unwrap();
    assert!(
        r.contains("table inet vacsine_t") && r.contains("tcp dport 22 accept"),
        "{r}"
    );
    match site
        .observe(
            &name,
            &Check::Firewall(FirewallCheck {
                contains: vec![],
                not_contains: vec![],
                default_policy: Default::default(),
            }),
        )
        .await
    {
        Observation::Firewall { base_policies, .. } => {
            assert_eq!(base_policies.get("input"), Some(&vec!["drop".to_string()]))
        }
        o => panic!("{o:?}"),
    }
    assert!(n.nft_apply("this is not nft").await.is_err());
    // The host's ruleset is untouched.
    let host = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("vacsine_t"));

    n.sysctl_set("net.ipv4.ip_forward", "0").await.unwrap();
    assert_eq!(
        n.sysctl_get("net.ipv4.ip_forward")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    n.sysctl_set("net.ipv4.ip_forward", "1").await.unwrap();
    assert_eq!(
        n.sysctl_get("net.ipv4.ip_forward")
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    assert!(n.sysctl_set("net/../../x", "1").await.is_err());
}

#[tokio::test]
async fn quarantine_and_release_keep_aliases() {
    let Some(d) = docker().await else { return };
    images(&d).await;
    let (net, mgmt, name, peer) = (
        unique("qnet"),
        unique("qmgmt"),
        unique("q"),
        unique("qpeer"),
    );
    let _c = Cleanup {
        containers: vec![name.clone(), peer.clone()],
        networks: vec![net.clone(), mgmt.clone()],
        volumes: vec![],
    };
    for n in [&net, &mgmt] {
        d.create_network(NetworkCreateRequest {
            name: n.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let on = |alias: Option<&str>| ContainerCreateBody {
        host_config: Some(HostConfig {
            network_mode: Some(net.clone()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                net.clone(),
                EndpointSettings {
                    aliases: alias.map(|a| vec![a.to_string()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    start(&d, &name, "web", on(Some("webalias"))).await;
    start(&d, &peer, "base", on(None)).await;
    d.connect_network(
        &mgmt,
        bollard::models::NetworkConnectRequest {
            container: Some(name.clone()),
            endpoint_config: None,
        },
    )
    .await
    .unwrap();
    let site = DockerSite::resolve(d.clone(), &target(&[&name], None))
        .await
        .unwrap();
    let n = site.node_ops(&name).unwrap();
    let reach = || async {
        let n2 = vacsine_docker::DockerNode::new(
            d.clone(),
            vacsine_core::target::ResolvedNode {
                name: peer.clone(),
                roles: vec![],
                labels: Default::default(),
                handle: peer.clone(),
            },
        );
        n2.exec(
            &s(&["nc", "-w", "1", "webalias", "80"]),
            &[],
            Some(vec![]),
            Duration::from_secs(4),
        )
        .await
        .unwrap()
        .exit_code
            == Some(0)
    };
    assert!(reach().await);
    let cut = n.quarantine(Some(&mgmt)).await.unwrap();
    assert_eq!(cut, vec![net.clone()]);
    assert_eq!(n.networks().await.unwrap(), vec![mgmt.clone()]);
    assert!(!reach().await);
    n.release(&cut).await.unwrap();
    let mut want = vec![net.clone(), mgmt.clone()];
    want.sort();
    assert_eq!(n.networks().await.unwrap(), want);
    assert!(reach().await, "alias webalias restored");
}

/// Benchmark (not a test): one file check through /proc/PID/root vs one `docker exec cat`.
/// `cargo test -p vacsine-docker --test it -- --ignored --nocapture bench_file_read`
#[tokio::test]
#[ignore]
async fn bench_file_read() {
    let Some((_d, _c, name, site)) = one("bench").await else {
        return;
    };
    let n = site.node_ops(&name).unwrap();
    let check = Check::File(FileCheck {
        path: "/etc/passwd".into(),
        exists: true,
        mode: None,
        max_mode: None,
        owner: None,
        group: None,
        contains: Some(Loc::new("root".into())),
        not_contains: None,
    });
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let o = site.observe(&name, &check).await;
        a.push(t.elapsed());
        assert!(matches!(o, Observation::File { stat: Some(_), .. }));
        let t = Instant::now();
        let o = n
            .exec(
                &s(&["cat", "/etc/passwd"]),
                &[],
                None,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        b.push(t.elapsed());
        assert_eq!(o.exit_code, Some(0));
    }
    a.sort();
    b.sort();
    println!(
        "file check, median of 20: /proc/PID/root {:?}  docker exec cat {:?}  ratio {:.1}x",
        a[10],
        b[10],
        b[10].as_secs_f64() / a[10].as_secs_f64()
    );
}

/// Issue 7 on a container node: symbolic links are read and recreated as links (inside the
/// container's root), and a bind-mounted file is written in place (renaming over it fails);
/// a read-only bind mount gives an error naming the path.
#[tokio::test]
async fn issue_7_links_and_bind_mounted_files() {
    let Some(d) = docker().await else { return };
    images(&d).await;
    let name = unique("mounts");
    let _cleanup = Cleanup {
        containers: vec![name.clone()],
        networks: vec![],
        volumes: vec![],
    };
    let hostdir = tempfile::tempdir().unwrap();
    let ro = hostdir.path().join("ro.conf");
    std::fs::write(&ro, "ro\n").unwrap();
    let body = ContainerCreateBody {
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/etc/ro.conf:ro", ro.display())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    start(&d, &name, "base", body).await;
    let site = DockerSite::resolve(d.clone(), &target(&[&name], None))
        .await
        .unwrap();
    let n = site.node_ops(&name).unwrap();
    let t = Duration::from_secs(5);

    n.write_file("/etc/real.conf", b"a\n", 0o644, 0, 0)
        .await
        .unwrap();
    let ln = n
        .exec(
            &s(&["ln", "-s", "real.conf", "/etc/link.conf"]),
            &[],
            None,
            t,
        )
        .await
        .unwrap();
    assert_eq!(ln.exit_code, Some(0), "{ln:?}");
    assert_eq!(
        n.read_link("/etc/link.conf").await.unwrap().as_deref(),
        Some("real.conf")
    );
    assert_eq!(n.read_link("/etc/real.conf").await.unwrap(), None);
    assert_eq!(n.read_link("/etc/nothing/here").await.unwrap(), None);
    // A regular file replaced by a link, atomically; the link resolves inside the root.
    n.write_file("/etc/other.conf", b"x\n", 0o644, 0, 0)
        .await
        .unwrap();
    n.symlink("/etc/real.conf", "/etc/other.conf")
        .await
        .unwrap();
    assert_eq!(
        n.read_link("/etc/other.conf").await.unwrap().as_deref(),
        Some("/etc/real.conf")
    );
    assert_eq!(
        n.read_file("/etc/other.conf")
            .await
            .unwrap()
            .unwrap()
            .content,
        b"a\n"
    );

    // Docker bind-mounts /etc/hosts into every container.
    let before = n.read_file("/etc/hosts").await.unwrap().unwrap();
    let mut new = before.content.clone();
    new.extend_from_slice(b"10.9.9.9 issue7\n");
    n.write_file("/etc/hosts", &new, before.mode, before.uid, before.gid)
        .await
        .unwrap();
    assert_eq!(
        n.read_file("/etc/hosts").await.unwrap().unwrap().content,
        new
    );
    let mounts = n
        .exec(&s(&["cat", "/proc/self/mountinfo"]), &[], None, t)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&mounts.stdout).contains(" /etc/hosts "),
        "/etc/hosts is no longer a mount point"
    );

    let err = n
        .write_file("/etc/ro.conf", b"changed\n", 0o644, 0, 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/etc/ro.conf is on a read-only mount"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&ro).unwrap(), "ro\n");
}

/// Issue 6: on a user-defined network Docker's embedded DNS installs an `ip nat` table in the
/// container's netns; the firewall observation leaves it out and still shows a table of ours.
#[tokio::test]
async fn issue6_firewall_observation_ignores_docker_dns_nat_table() {
    let Some(d) = docker().await else { return };
    images(&d).await;
    let (net, name) = (unique("dnsnet"), unique("dns"));
    let _c = Cleanup {
        containers: vec![name.clone()],
        networks: vec![net.clone()],
        volumes: vec![],
    };
    d.create_network(NetworkCreateRequest {
        name: net.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let body = ContainerCreateBody {
        host_config: Some(HostConfig {
            network_mode: Some(net.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    start(&d, &name, "base", body).await;
    let site = DockerSite::resolve(d.clone(), &target(&[&name], None))
        .await
        .unwrap();
    let n = site.node_ops(&name).unwrap();
    // The table is there (Docker installs it before the container starts)...
    let raw = n.nft_ruleset().await.unwrap();
    assert!(
        raw.contains("table ip nat") && raw.contains("DOCKER_OUTPUT"),
        "{raw}"
    );
    let fw = Check::Firewall(FirewallCheck {
        contains: vec![],
        not_contains: vec![],
        default_policy: Default::default(),
    });
    // ...but not in what the probe reports.
    match site.observe(&name, &fw).await {
        Observation::Firewall {
            ruleset,
            base_policies,
        } => {
            assert!(!ruleset.contains("table ip nat"), "{ruleset}");
            assert!(base_policies.is_empty(), "{base_policies:?}");
        }
        o => panic!("{o:?}"),
    }
    n.nft_apply("table inet vacsine_t {\n chain input {\n  type filter hook input priority 0; policy drop;\n }\n}\n")
        .await
        .unwrap();
    match site.observe(&name, &fw).await {
        Observation::Firewall {
            ruleset,
            base_policies,
        } => {
            assert!(ruleset.contains("table inet vacsine_t"), "{ruleset}");
            assert!(!ruleset.contains("table ip nat"), "{ruleset}");
            assert_eq!(base_policies.len(), 1, "{base_policies:?}");
            assert_eq!(base_policies.get("input"), Some(&vec!["drop".to_string()]));
        }
        o => panic!("{o:?}"),
    }
}

/// `list_dir`, `list_tree` and `lstat` read the container's root from the host: they see its
/// files as `stat` in the container does, and a symbolic link never leads them out of it.
#[tokio::test]
async fn list_dir_and_lstat_agree_with_stat_and_stay_in_root() {
    use vacsine_core::node::EntryKind;
    let Some((_d, _c, name, site)) = one("lsdir").await else {
        return;
    };
    let n = site.node_ops(&name).unwrap();
    let hostdir = tempfile::tempdir().unwrap();
    std::fs::write(hostdir.path().join("HOSTFILE"), "host").unwrap();
    let hd = hostdir.path().to_str().unwrap().to_string();
    let t = Duration::from_secs(10);
    let script = "set -e; mkdir -p /srv/t/d/e; printf hello > /srv/t/f; chmod 2640 /srv/t/f; \
                  chown 12:34 /srv/t/f; ln -s f /srv/t/l; ln -s \"$1\" /srv/t/esc; \
                  ln -s \"../../../../../..$1\" /srv/t/rel; mkfifo /srv/t/p; \
                  touch /srv/t/d/e/deep";
    let o = n
        .exec(&s(&["sh", "-c", script, "sh", &hd]), &[], None, t)
        .await
        .unwrap();
    assert_eq!(
        o.exit_code,
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let listing = n.list_dir("/srv/t").await.unwrap().expect("a directory");
    let names: Vec<&str> = listing.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["d", "esc", "f", "l", "p", "rel"]);
    // Every entry as `stat` (not following links) prints it in the container.
    let mut argv = s(&["stat", "-c", "%n|%F|%a|%u|%g|%s"]);
    argv.extend(names.iter().map(|x| format!("/srv/t/{x}")));
    let o = n.exec(&argv, &[], None, t).await.unwrap();
    assert_eq!(
        o.exit_code,
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), listing.len(), "{printed}");
    for ((entry, st), line) in listing.iter().zip(&lines) {
        let kind = match st.kind {
            EntryKind::Regular => "regular file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symbolic link",
            EntryKind::Other => "fifo",
        };
        let mine = format!(
            "/srv/t/{entry}|{kind}|{:o}|{}|{}|{}",
            st.mode, st.uid, st.gid, st.size
        );
        assert_eq!(&mine, line);
        assert_eq!(
            n.lstat(&format!("/srv/t/{entry}")).await.unwrap().as_ref(),
            Some(st)
        );
    }
    let f = &listing[2].1;
    assert_eq!(
        (f.kind, f.mode, f.uid, f.gid, f.size),
        (EntryKind::Regular, 0o2640, 12, 34, 5)
    );
    let l = n.lstat("/srv/t/l").await.unwrap().unwrap();
    assert_eq!(
        (l.kind, l.link_target.as_deref()),
        (EntryKind::Symlink, Some("f"))
    );
    assert_eq!(listing[1].1.link_target.as_deref(), Some(hd.as_str()));
    assert_eq!(
        n.lstat("/").await.unwrap().unwrap().kind,
        EntryKind::Directory
    );
    assert_eq!(n.lstat("/srv/t/missing").await.unwrap(), None);
    assert_eq!(n.lstat("/srv/t/f/below").await.unwrap(), None);
    assert_eq!(n.list_dir("/srv/t/f").await.unwrap(), None);
    assert_eq!(n.list_dir("/srv/missing").await.unwrap(), None);
    // A link to a directory inside the root is followed, as `find -H` does.
    n.exec(&s(&["ln", "-s", "/srv/t/d", "/srv/dl"]), &[], None, t)
        .await
        .unwrap();
    let dl = n.list_dir("/srv/dl").await.unwrap().unwrap();
    assert_eq!(dl.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["e"]);

    // Links to the host directory resolve inside the container's root, where it is absent.
    for p in ["/srv/t/esc", "/srv/t/rel"] {
        match n.list_dir(p).await {
            Ok(None) | Err(_) => {}
            Ok(Some(l)) => panic!("{p} listed the host directory: {l:?}"),
        }
        match n.lstat(&format!("{p}/HOSTFILE")).await {
            Ok(None) | Err(_) => {}
            Ok(Some(s)) => panic!("{p}/HOSTFILE seen on the host: {s:?}"),
        }
    }
    // The walk lists real subdirectories only, down to its depth, never through a link.
    let tree = n.list_tree(&s(&["/srv/t", "/srv/none"]), 2).await.unwrap();
    let dirs: Vec<&str> = tree.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(dirs, ["/srv/t", "/srv/none", "/srv/t/d"]);
    assert_eq!(tree[1].1, None);
    assert_eq!(
        tree[2]
            .1
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.0.as_str())
            .collect::<Vec<_>>(),
        ["e"]
    );
    let deeper = n.list_tree(&s(&["/srv/t"]), 3).await.unwrap();
    assert!(deeper
        .iter()
        .any(|(d, l)| d == "/srv/t/d/e" && l.as_ref().unwrap().iter().any(|e| e.0 == "deep")));
    assert!(!format!("{deeper:?}").contains("HOSTFILE"));
}
