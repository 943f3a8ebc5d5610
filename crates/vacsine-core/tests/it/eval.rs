use std::collections::BTreeMap;
use vacsine_core::doc::{parse_as, SourceFile};
use vacsine_core::eval::evaluate;
use vacsine_core::node::{FileStat, Observation, PasswdEntry};
use vacsine_core::policy::Check;
use vacsine_core::Outcome;

fn check(check_yaml: &str, obs: Observation, want: Outcome) {
    let c: Check = parse_as(&SourceFile::new("c.yaml", check_yaml)).unwrap();
    let e = evaluate(&c, &obs);
    assert_eq!(e.outcome, want, "{check_yaml} → {e:?}");
}

fn file(mode: u32, content: &str) -> Observation {
    Observation::File {
        path: "/etc/x".into(),
        stat: Some(FileStat {
            mode,
            uid: 0,
            gid: 0,
            owner: Some("root".into()),
            group: Some("root".into()),
            is_dir: false,
            size: 1,
        }),
        content: Some(content.into()),
    }
}

#[test]
fn port() {
    let o = |open| Observation::Port {
        address: "10.0.0.2".into(),
        open,
        detail: String::new(),
    };
    check(
        "port: {port: 23, from: out, expect: closed}",
        o(false),
        Outcome::Pass,
    );
    check(
        "port: {port: 23, from: out, expect: closed}",
        o(true),
        Outcome::Fail,
    );
    check(
        "port: {port: 80, from: out, expect: open}",
        o(true),
        Outcome::Pass,
    );
}

#[test]
fn http() {
    let o = |status: Option<u16>, body: &str| Observation::Http {
        url: "u".into(),
        status,
        body: body.into(),
        detail: String::new(),
    };
    check("http: {port: 80, from: o}", o(Some(200), ""), Outcome::Pass);
    check("http: {port: 80, from: o}", o(Some(500), ""), Outcome::Fail);
    check("http: {port: 80, from: o}", o(None, ""), Outcome::Fail);
    check(
        "http: {port: 80, from: o, bodyMatches: hello}",
        o(Some(200), "oh hello"),
        Outcome::Pass,
    );
    check(
        "http: {port: 80, from: o, bodyMatches: hello}",
        o(Some(200), "bye"),
        Outcome::Fail,
    );
}

#[test]
fn file_checks() {
    check(
        "file: {path: /etc/x, maxMode: '0640'}",
        file(0o640, ""),
        Outcome::Pass,
    );
    check(
        "file: {path: /etc/x, maxMode: '0640'}",
        file(0o644, ""),
        Outcome::Fail,
    );
    check(
        "file: {path: /etc/x, mode: '0600'}",
        file(0o600, ""),
        Outcome::Pass,
    );
    check(
        "file: {path: /etc/x, owner: root}",
        file(0o600, ""),
        Outcome::Pass,
    );
    check(
        "file: {path: /etc/x, owner: bob}",
        file(0o600, ""),
        Outcome::Fail,
    );
    check(
        "file: {path: /etc/x, contains: '^PermitRootLogin no$'}",
        file(0o600, "a\nPermitRootLogin no\n"),
        Outcome::Pass,
    );
    check(
        "file: {path: /etc/x, contains: '^PermitRootLogin no$'}",
        file(0o600, "PermitRootLogin yes\n"),
        Outcome::Fail,
    );
    check(
        "file: {path: /etc/x, notContains: 'yes'}",
        file(0o600, "PermitRootLogin yes\n"),
        Outcome::Fail,
    );
    let missing = Observation::File {
        path: "/x".into(),
        stat: None,
        content: None,
    };
    check("file: {path: /x}", missing.clone(), Outcome::Fail);
    check("file: {path: /x, exists: false}", missing, Outcome::Pass);
    check(
        "file: {path: /etc/x, exists: false}",
        file(0o600, ""),
        Outcome::Fail,
    );
}

#[test]
fn command_process_package_user_sysctl() {
    let cmd = |code, out: &str| Observation::Command {
        exit_code: Some(code),
        stdout: out.into(),
        stderr: String::new(),
    };
    check("command: {argv: [x]}", cmd(0, ""), Outcome::Pass);
    check("command: {argv: [x]}", cmd(1, ""), Outcome::Fail);
    check(
        "command: {argv: [x], stdoutNotMatches: '.'}",
        cmd(0, "/etc/bad\n"),
        Outcome::Fail,
    );
    check(
        "command: {argv: [x], stdoutMatches: ok}",
        cmd(0, "ok"),
        Outcome::Pass,
    );
    let procs = Observation::Process {
        running: vec!["sh".into(), "telnetd".into()],
    };
    check(
        "process: {name: telnetd, running: false}",
        procs.clone(),
        Outcome::Fail,
    );
    check(
        "process: {name: sshd, running: false}",
        procs.clone(),
        Outcome::Pass,
    );
    check("process: {name: sh, running: true}", procs, Outcome::Pass);
    let pkg = |v: Option<&str>| Observation::Package {
        database: "dpkg".into(),
        installed_version: v.map(Into::into),
        broken: None,
    };
    check(
        "package: {name: b, installed: true, version: '>= 1:1.30'}",
        pkg(Some("1:1.35.0-4")),
        Outcome::Pass,
    );
    check(
        "package: {name: b, installed: true, version: '>= 1:1.36'}",
        pkg(Some("1:1.35.0-4")),
        Outcome::Fail,
    );
    check(
        "package: {name: b, installed: false}",
        pkg(Some("1")),
        Outcome::Fail,
    );
    check(
        "package: {name: b, installed: false}",
        pkg(None),
        Outcome::Pass,
    );
    // Issue 6: present but half-configured is installed for a removal rule, broken for an
    // installation rule.
    let half = Observation::Package {
        database: "dpkg".into(),
        installed_version: Some("1".into()),
        broken: Some("half-configured".into()),
    };
    check(
        "package: {name: b, installed: false}",
        half.clone(),
        Outcome::Fail,
    );
    check("package: {name: b, installed: true}", half, Outcome::Fail);
    let user = Observation::User {
        entry: Some(PasswdEntry {
            name: "guest".into(),
            uid: 1000,
            gid: 1000,
            home: "/".into(),
            shell: "/bin/sh".into(),
        }),
    };
    check(
        "user: {name: guest, exists: true, shell: nologin}",
        user.clone(),
        Outcome::Fail,
    );
    check(
        "user: {name: guest, exists: true, uid: 1000}",
        user.clone(),
        Outcome::Pass,
    );
    check("user: {name: guest, exists: false}", user, Outcome::Fail);
    let sc = |v: Option<&str>| Observation::Sysctl {
        key: "k".into(),
        value: v.map(Into::into),
    };
    check(
        "sysctl: {key: k, value: '0'}",
        sc(Some("0\n")),
        Outcome::Pass,
    );
    check("sysctl: {key: k, value: '0'}", sc(Some("1")), Outcome::Fail);
    check("sysctl: {key: k, value: '0'}", sc(None), Outcome::Error);
}

#[test]
fn firewall() {
    let mut pol = BTreeMap::new();
    pol.insert("input".to_string(), vec!["drop".to_string()]);
    let fw = Observation::Firewall {
        ruleset: "table inet vacsine {\n tcp dport 23 drop\n}\n".into(),
        base_policies: pol,
    };
    check(
        "firewall: {defaultPolicy: {input: drop}}",
        fw.clone(),
        Outcome::Pass,
    );
    check(
        "firewall: {defaultPolicy: {forward: drop}}",
        fw.clone(),
        Outcome::Fail,
    );
    check(
        "firewall: {contains: ['dport 23 drop']}",
        fw.clone(),
        Outcome::Pass,
    );
    check(
        "firewall: {notContains: ['dport 23 drop']}",
        fw,
        Outcome::Fail,
    );
}

#[test]
fn errors_and_mismatches() {
    check(
        "port: {port: 1, from: o, expect: open}",
        Observation::Error {
            message: "no such container".into(),
        },
        Outcome::Error,
    );
    check(
        "port: {port: 1, from: o, expect: open}",
        Observation::Process { running: vec![] },
        Outcome::Error,
    );
}

#[test]
fn port_evidence_names_address_and_state_once() {
    let c: Check = parse_as(&SourceFile::new(
        "c.yaml",
        "port: {port: 23, from: out, expect: closed}",
    ))
    .unwrap();
    let o = Observation::Port {
        address: "10.0.0.2:23".into(),
        open: false,
        detail: String::new(),
    };
    assert_eq!(evaluate(&c, &o).observed, "10.0.0.2:23 closed");
}
