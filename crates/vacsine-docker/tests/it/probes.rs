//! Every probe on a demo container where the fact holds and one where it does not.

use crate::common::{demo_site, docker};
use vacsine_core::doc::Loc;
use vacsine_core::node::{Observation, Site};
use vacsine_core::policy::*;

fn file(path: &str, content: bool) -> Check {
    Check::File(FileCheck {
        path: path.into(),
        exists: true,
        mode: None,
        max_mode: None,
        owner: None,
        group: None,
        contains: content.then(|| Loc::new(".".into())),
        not_contains: None,
    })
}

fn port(p: u16) -> Check {
    Check::Port(PortCheck {
        port: p,
        from: Loc::new("outside".into()),
        expect: PortState::Open,
        timeout_ms: 2000,
    })
}

fn http(p: u16, path: &str) -> Check {
    Check::Http(HttpCheck {
        port: p,
        path: path.into(),
        from: Loc::new("outside".into()),
        status: 200,
        body_matches: None,
        timeout_ms: 2000,
    })
}

#[tokio::test]
async fn probes_on_demo_site() {
    let Some(d) = docker().await else { return };
    let (_demo, site) = demo_site(&d).await;
    let names: Vec<String> = site.nodes().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["web", "gateway", "legacy", "ssh"]);

    // port
    match site.observe("web", &port(80)).await {
        Observation::Port { open, .. } => assert!(open),
        o => panic!("{o:?}"),
    }
    match site.observe("legacy", &port(23)).await {
        Observation::Port { open, .. } => assert!(open),
        o => panic!("{o:?}"),
    }
    match site.observe("web", &port(23)).await {
        Observation::Port { open, detail, .. } => assert!(!open, "{detail}"),
        o => panic!("{o:?}"),
    }

    // http
    match site.observe("web", &http(80, "/")).await {
        Observation::Http { status, body, .. } => {
            assert_eq!(status, Some(200));
            assert!(body.contains("Vacsine demo edge site"), "{body}");
        }
        o => panic!("{o:?}"),
    }
    match site.observe("web", &http(80, "/missing.html")).await {
        Observation::Http { status, .. } => assert_eq!(status, Some(404)),
        o => panic!("{o:?}"),
    }
    match site.observe("gateway", &http(80, "/")).await {
        Observation::Http { status, detail, .. } => assert_eq!(status, None, "{detail}"),
        o => panic!("{o:?}"),
    }

    // file
    match site.observe("web", &file("/srv/www", false)).await {
        Observation::File { stat: Some(s), .. } => {
            assert!(s.is_dir);
            assert_eq!(s.mode, 0o777);
        }
        o => panic!("{o:?}"),
    }
    match site.observe("ssh", &file("/etc/shadow", false)).await {
        Observation::File { stat: Some(s), .. } => {
            assert_eq!(s.mode, 0o644);
            assert_eq!(s.owner.as_deref(), Some("root"));
            assert_eq!(s.group.as_deref(), Some("root"));
        }
        o => panic!("{o:?}"),
    }
    match site
        .observe("ssh", &file("/etc/ssh/sshd_config", true))
        .await
    {
        Observation::File {
            content: Some(c), ..
        } => {
            for l in [
                "PermitRootLogin yes",
                "PasswordAuthentication yes",
                "X11Forwarding yes",
            ] {
                assert!(c.contains(l), "{l}");
            }
        }
        o => panic!("{o:?}"),
    }
    match site
        .observe("web", &file("/etc/ssh/sshd_config", true))
        .await
    {
        Observation::File { stat, content, .. } => assert!(stat.is_none() && content.is_none()),
        o => panic!("{o:?}"),
    }

    // command
    let cmd = |argv: &[&str]| {
        Check::Command(CommandCheck {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            exit_code: 0,
            stdout_matches: None,
            stdout_not_matches: None,
            timeout_ms: 5000,
        })
    };
    match site
        .observe("web", &cmd(&["cat", "/srv/www/index.html"]))
        .await
    {
        Observation::Command {
            exit_code, stdout, ..
        } => {
            assert_eq!(exit_code, Some(0));
            assert!(stdout.contains("Vacsine demo edge site"));
        }
        o => panic!("{o:?}"),
    }
    match site.observe("web", &cmd(&["ls", "/nonexistent"])).await {
        Observation::Command {
            exit_code, stderr, ..
        } => {
            assert_ne!(exit_code, Some(0));
            assert!(!stderr.is_empty());
        }
        o => panic!("{o:?}"),
    }

    // process
    let proc_ = |n: &str| {
        Check::Process(ProcessCheck {
            name: n.into(),
            running: true,
        })
    };
    match site.observe("web", &proc_("httpd")).await {
        Observation::Process { running } => {
            assert!(running.contains(&"httpd".into()), "{running:?}")
        }
        o => panic!("{o:?}"),
    }
    match site.observe("gateway", &proc_("httpd")).await {
        Observation::Process { running } => {
            assert!(!running.contains(&"httpd".into()));
            assert!(running.contains(&"sh".into()), "{running:?}");
        }
        o => panic!("{o:?}"),
    }

    // package
    let pkg = |n: &str| {
        Check::Package(PackageCheck {
            name: n.into(),
            installed: true,
            version: None,
        })
    };
    assert_eq!(
        site.observe("legacy", &pkg("telnetd")).await,
        Observation::Package {
            database: "dpkg".into(),
            installed_version: Some("0.17-44".into()),
            broken: None
        }
    );
    assert_eq!(
        site.observe("legacy", &pkg("openssh-server")).await,
        Observation::Package {
            database: "dpkg".into(),
            installed_version: None,
            broken: None
        }
    );
    assert_eq!(
        site.observe("web", &pkg("telnetd")).await,
        Observation::Package {
            database: "none".into(),
            installed_version: None,
            broken: None
        }
    );

    // firewall: no user table on the gateway (only docker's embedded-DNS nat table)
    let fw = Check::Firewall(FirewallCheck {
        contains: vec![],
        not_contains: vec![],
        default_policy: Default::default(),
    });
    match site.observe("gateway", &fw).await {
        Observation::Firewall {
            ruleset,
            base_policies,
        } => {
            assert!(!ruleset.contains("table inet"), "{ruleset}");
            assert!(!base_policies.contains_key("input"), "{base_policies:?}");
        }
        o => panic!("{o:?}"),
    }

    // user
    let user = |n: &str| {
        Check::User(UserCheck {
            name: n.into(),
            exists: true,
            uid: None,
            shell: None,
        })
    };
    match site.observe("ssh", &user("guest")).await {
        Observation::User { entry: Some(e) } => {
            assert_eq!(e.shell, "/bin/sh");
            assert_eq!(e.uid, 1000);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(
        site.observe("web", &user("guest")).await,
        Observation::User { entry: None }
    );

    // sysctl
    let sc = |k: &str| {
        Check::Sysctl(SysctlCheck {
            key: k.into(),
            value: "1".into(),
        })
    };
    assert_eq!(
        site.observe("gateway", &sc("net.ipv4.ip_forward")).await,
        Observation::Sysctl {
            key: "net.ipv4.ip_forward".into(),
            value: Some("1".into())
        }
    );
    assert_eq!(
        site.observe("web", &sc("net.ipv4.ip_forward")).await,
        Observation::Sysctl {
            key: "net.ipv4.ip_forward".into(),
            value: Some("0".into())
        }
    );
    assert!(matches!(
        site.observe("web", &sc("net.ipv4.nope")).await,
        Observation::Sysctl { value: None, .. }
    ));
    assert!(matches!(
        site.observe("web", &sc("../../etc/passwd")).await,
        Observation::Error { .. }
    ));

    // unknown node → error observation, never a panic
    assert!(matches!(
        site.observe("nope", &sc("net.ipv4.ip_forward")).await,
        Observation::Error { .. }
    ));

    // demo::down removes the site and is idempotent.
    let removed = vacsine_docker::demo::down(&d).await.unwrap();
    assert_eq!(removed.len(), 5, "{removed:?}");
    assert!(vacsine_docker::demo::down(&d).await.unwrap().is_empty());
}

/// A missing container is not fatal to the site (issue 6): its node is unavailable, and every
/// observation of it is an error naming the container, the reason and the fix.
#[tokio::test]
async fn missing_container_is_a_clear_error() {
    let Some(d) = docker().await else { return };
    let t = crate::common::target(&["vt-does-not-exist-xyz"], None);
    let site = vacsine_docker::DockerSite::resolve(d, &t).await.unwrap();
    let check = Check::Sysctl(SysctlCheck {
        key: "net.ipv4.ip_forward".into(),
        value: "0".into(),
    });
    match site.observe("vt-does-not-exist-xyz", &check).await {
        Observation::Error { message: m } => assert!(
            m.contains("vt-does-not-exist-xyz")
                && m.contains("does not exist")
                && m.contains("docker start"),
            "{m}"
        ),
        o => panic!("{o:?}"),
    }
    assert!(site.unavailable().contains_key("vt-does-not-exist-xyz"));
}
