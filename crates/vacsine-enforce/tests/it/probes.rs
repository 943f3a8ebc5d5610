//! Every probe on real containers: a requirement that passes, one that fails, one that is not
//! applicable (ComplianceAsCode "Automatus" style).
use crate::*;
use vacsine_core::Outcome;
use vacsine_enforce::check::check_site;

const PROBES: &str = r#"apiVersion: vacsine.io/v1
kind: Policy
metadata: {name: probes}
spec:
  requirements:
    - {id: port-pass, title: t, severity: low, nodes: {roles: [web]}, check: {port: {port: 80, from: outside, expect: open}}}
    - {id: port-fail, title: t, severity: low, nodes: {roles: [legacy]}, check: {port: {port: 23, from: outside, expect: closed}}}
    - {id: port-na, title: t, severity: low, nodes: {roles: [web]}, appliesWhen: {file: {path: /nonexistent}}, check: {port: {port: 80, from: outside, expect: open}}}
    - {id: http-pass, title: t, severity: low, nodes: {roles: [web]}, check: {http: {port: 80, from: outside, bodyMatches: Vacsine}}}
    - {id: http-fail, title: t, severity: low, nodes: {roles: [web]}, check: {http: {port: 80, path: /missing.html, from: outside}}}
    - {id: http-na, title: t, severity: low, nodes: {roles: [web]}, appliesWhen: {process: {name: apache2, running: true}}, check: {http: {port: 80, from: outside}}}
    - {id: file-pass, title: t, severity: low, nodes: {roles: [ssh]}, check: {file: {path: /etc/ssh/sshd_config, contains: '^Port 22$', owner: root}}}
    - {id: file-fail, title: t, severity: low, nodes: {roles: [ssh]}, check: {file: {path: /etc/shadow, maxMode: "0640"}}}
    - {id: file-na, title: t, severity: low, nodes: {roles: [web]}, appliesWhen: {file: {path: /etc/vsftpd.conf}}, check: {file: {path: /etc/vsftpd.conf}}}
    - {id: command-pass, title: t, severity: low, nodes: {roles: [web]}, check: {command: {argv: [cat, /srv/www/index.html], stdoutMatches: Vacsine}}}
    - {id: command-fail, title: t, severity: low, nodes: {roles: [web]}, check: {command: {argv: [ls, /nonexistent]}}}
    - {id: command-na, title: t, severity: low, nodes: {roles: [web]}, appliesWhen: {package: {name: telnetd, installed: true}}, check: {command: {argv: ["true"]}}}
    - {id: process-pass, title: t, severity: low, nodes: {roles: [web]}, check: {process: {name: nginx, running: true}}}
    - {id: process-fail, title: t, severity: low, nodes: {roles: [legacy]}, check: {process: {name: inetutils-inetd, running: false}}}
    - {id: process-na, title: t, severity: low, nodes: {roles: [web]}, appliesWhen: {user: {name: nobody-here, exists: true}}, check: {process: {name: nginx, running: true}}}
    - {id: package-pass, title: t, severity: low, nodes: {roles: [legacy]}, check: {package: {name: inetutils-inetd, installed: true, version: ">= 2:2.4"}}}
    - {id: package-fail, title: t, severity: low, nodes: {roles: [legacy]}, check: {package: {name: inetutils-telnetd, installed: false}}}
    - {id: package-na, title: t, severity: low, nodes: {roles: [web]}, appliesWhen: {file: {path: /etc/apk/world}}, check: {package: {name: busybox, installed: true}}}
    - {id: firewall-pass, title: t, severity: low, nodes: {roles: [web]}, check: {firewall: {notContains: ['dport 80 drop']}}}
    - {id: firewall-fail, title: t, severity: low, nodes: {roles: [gateway]}, check: {firewall: {defaultPolicy: {input: drop}}}}
    - {id: firewall-na, title: t, severity: low, nodes: {roles: [web]}, appliesWhen: {sysctl: {key: net.ipv4.ip_forward, value: "1"}}, check: {firewall: {defaultPolicy: {input: drop}}}}
    - {id: user-pass, title: t, severity: low, nodes: {roles: [ssh]}, check: {user: {name: root, exists: true, uid: 0}}}
    - {id: user-fail, title: t, severity: low, nodes: {roles: [ssh]}, check: {user: {name: guest, exists: true, shell: nologin}}}
    - {id: user-na, title: t, severity: low, nodes: {roles: [web]}, appliesWhen: {user: {name: guest, exists: true}}, check: {user: {name: guest, exists: true}}}
    - {id: sysctl-pass, title: t, severity: low, nodes: {roles: [web]}, check: {sysctl: {key: net.ipv4.ip_forward, value: "0"}}}
    - {id: sysctl-fail, title: t, severity: low, nodes: {roles: [gateway]}, check: {sysctl: {key: net.ipv4.ip_forward, value: "0"}}}
    - {id: sysctl-na, title: t, severity: low, nodes: {roles: [web]}, appliesWhen: {file: {path: /etc/vsftpd.conf}}, check: {sysctl: {key: net.ipv4.ip_forward, value: "0"}}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_passes_fails_and_is_not_applicable() {
    let Some(d) = docker().await else { return };
    let _g = SITE.lock().await;
    fresh_site(&d).await;
    let dir = tempfile::tempdir().unwrap();
    let inputs = inputs_with_policy(dir.path(), PROBES);
    let site = vacsine_docker::DockerSite::connect(&inputs.target.doc)
        .await
        .unwrap();
    let results = check_site(&inputs.policy.doc, &site).await;
    let mut wrong = Vec::new();
    for r in &results {
        let want = if r.requirement.ends_with("-pass") {
            Outcome::Pass
        } else if r.requirement.ends_with("-fail") {
            Outcome::Fail
        } else {
            Outcome::NotApplicable
        };
        if r.outcome != want {
            wrong.push(format!(
                "{} on {}: {} ({}; {})",
                r.requirement, r.node, r.outcome, r.observed, r.message
            ));
        }
    }
    assert_eq!(results.len(), 27, "{results:#?}");
    assert!(
        wrong.is_empty(),
        "unexpected outcomes:\n{}",
        wrong.join("\n")
    );
}

/// Issue 6: a stopped container and a missing one do not abort the check: their requirements
/// are `error` with the reason, the other nodes are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue6_check_goes_on_past_stopped_and_missing_nodes() {
    let Some(d) = docker().await else { return };
    let _g = SITE.lock().await;
    fresh_site(&d).await;
    let docker = |args: &'static [&'static str]| async move {
        let out = tokio::process::Command::new("docker")
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "docker {args:?}: {out:?}");
    };
    docker(&["stop", "-t", "1", "vacsine-demo-legacy"]).await;
    docker(&["rm", "-f", "vacsine-demo-ssh"]).await;
    let inputs = demo_inputs();
    let site = vacsine_docker::DockerSite::connect(&inputs.target.doc)
        .await
        .expect("a stopped or missing node must not abort the resolution");
    let results = check_site(&inputs.policy.doc, &site).await;
    for (node, why) in [("legacy", "is not running"), ("ssh", "does not exist")] {
        let rows: Vec<_> = results.iter().filter(|r| r.node == node).collect();
        assert!(!rows.is_empty(), "{node} not checked");
        for r in rows {
            assert_eq!(r.outcome, Outcome::Error, "{r:?}");
            assert!(r.message.contains(why), "{r:?}");
        }
    }
    let web: Vec<_> = results.iter().filter(|r| r.node == "web").collect();
    assert!(
        !web.is_empty() && web.iter().all(|r| r.outcome != Outcome::Error),
        "{web:#?}"
    );
    fresh_site(&d).await;
}
