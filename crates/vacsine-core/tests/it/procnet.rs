//! The socket-table parser and the `listening` / `ssh` probes: tables of data.

use vacsine_core::doc::{load, parse_as, Document, SourceFile};
use vacsine_core::eval::evaluate;
use vacsine_core::node::{Listener, Observation};
use vacsine_core::policy::{Check, Protocol};
use vacsine_core::procnet::parse_table;
use vacsine_core::validate::{check_check, Problem};
use vacsine_core::Outcome;

const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

fn l(protocol: Protocol, address: &str, port: u16) -> Listener {
    Listener {
        protocol,
        address: address.into(),
        port,
    }
}

/// `(table text after the header, protocol, ipv6, expected listeners)`.
fn parses(rows: &str, protocol: Protocol, ipv6: bool, want: &[Listener]) {
    let text = format!("{TCP_HEADER}{rows}");
    assert_eq!(
        parse_table(&text, protocol, ipv6).as_deref(),
        Ok(want),
        "{rows}"
    );
}

// The address words are in the host's byte order: these tables are those of a
// little-endian host (x86-64, aarch64), like the machines the tests run on.
#[cfg(target_endian = "little")]
#[test]
fn socket_tables() {
    use Protocol::*;
    // sshd on 0.0.0.0:22 listening; an established connection is not listed.
    parses(
        "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0\n   1: 0200110A:0016 0300110A:C350 01 00000000:00000000 02:00000A1D 00000000     0        0 1235 4 0000000000000000 20 4 29 10 -1\n",
        Tcp,
        false,
        &[l(Tcp, "0.0.0.0", 22)],
    );
    // Loopback-only listener: 127.0.0.1:8080.
    parses(
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n",
        Tcp,
        false,
        &[l(Tcp, "127.0.0.1", 8080)],
    );
    // A TIME_WAIT (06) and a SYN_SENT (02) socket: nothing listens.
    parses(
        "   0: 0200110A:0017 0300110A:C350 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0\n   1: 0200110A:9C40 0300110A:0016 02 00000000:00000000 01:00000064 00000002     0        0 9 2 0\n",
        Tcp,
        false,
        &[],
    );
    // IPv6: [::]:22, [::1]:25 and an IPv4-mapped 10.17.0.2:23.
    parses(
        "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0\n   1: 00000000000000000000000001000000:0019 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0\n   2: 0000000000000000FFFF00000200110A:0017 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0\n",
        Tcp,
        true,
        &[l(Tcp, "::", 22), l(Tcp, "::1", 25), l(Tcp, "10.17.0.2", 23)],
    );
    // A global IPv6 address, 2001:db8::1 on :443.
    parses(
        "   0: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0\n",
        Tcp,
        true,
        &[l(Tcp, "2001:db8::1", 443)],
    );
    // UDP: a bound unconnected socket (07, remote port 0) listens, a connected one does not.
    parses(
        "  123: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 7 2 0 0\n  124: 0200110A:A000 0800080A:0035 01 00000000:00000000 00:00000000 00000000     0        0 8 2 0 0\n",
        Udp,
        false,
        &[l(Udp, "0.0.0.0", 53)],
    );
    // Header only: nothing.
    parses("", Tcp, false, &[]);
}

#[test]
fn malformed_tables_are_errors_naming_the_line() {
    for (rows, ipv6, what) in [
        ("   0: 00000000:0016\n", false, "fewer than 4 fields"),
        ("   0: 00000000:0016 00000000:0000 ZZ\n", false, "bad state"),
        (
            "   0: 0000:0016 00000000:0000 0A\n",
            false,
            "bad local address",
        ),
        (
            "   0: 00000000:0016 00000000:0000 0A\n",
            true,
            "bad local address",
        ),
        (
            "   0: 00000000:XYZW 00000000:0000 0A\n",
            false,
            "bad local address",
        ),
        (
            "   0: 0000é000:0016 00000000:0000 0A\n",
            false,
            "bad local address",
        ),
    ] {
        let e = parse_table(&format!("{TCP_HEADER}{rows}"), Protocol::Tcp, ipv6).unwrap_err();
        assert!(e.contains("line 2") && e.contains(what), "{rows} → {e}");
    }
}

fn check(check_yaml: &str, obs: &Observation, want: Outcome, evidence: &str) {
    let c: Check = parse_as(&SourceFile::new("c.yaml", check_yaml)).unwrap();
    let e = evaluate(&c, obs);
    assert_eq!(e.outcome, want, "{check_yaml} → {e:?}");
    assert!(
        e.observed.contains(evidence) || e.message.contains(evidence),
        "{check_yaml}: `{evidence}` not in {e:?}"
    );
}

#[test]
fn listening() {
    use Protocol::*;
    let sockets = Observation::Listening {
        sockets: vec![
            l(Tcp, "0.0.0.0", 22),
            l(Tcp, "::", 22),
            l(Tcp, "0.0.0.0", 23),
            l(Udp, "0.0.0.0", 53),
        ],
    };
    let t = Outcome::Pass;
    let f = Outcome::Fail;
    check(
        "listening: {port: 23, expect: absent}",
        &sockets,
        f,
        "tcp 0.0.0.0:23",
    );
    check(
        "listening: {port: 22, protocol: tcp, expect: present}",
        &sockets,
        t,
        "tcp [::]:22",
    );
    check(
        "listening: {port: 80, expect: present}",
        &sockets,
        f,
        "listening: tcp 0.0.0.0:22",
    );
    check(
        "listening: {port: 80, expect: absent}",
        &sockets,
        t,
        "nothing listening on tcp port 80",
    );
    // The protocol matters: UDP 53 is not TCP 53.
    check("listening: {port: 53, expect: absent}", &sockets, t, "");
    check(
        "listening: {port: 53, protocol: udp, expect: present}",
        &sockets,
        t,
        "udp 0.0.0.0:53",
    );
    check(
        "listening: {port: 22, expect: present}",
        &Observation::Listening { sockets: vec![] },
        f,
        "listening: none",
    );
}

#[test]
fn listening_is_strict() {
    for bad in [
        "listening: {port: 23, expect: closed}",
        "listening: {port: 23, protocol: sctp, expect: absent}",
        "listening: {port: 23, expect: absent, from: outside}",
        "listening: {port: 70000, expect: absent}",
    ] {
        assert!(
            parse_as::<Check>(&SourceFile::new("c.yaml", bad)).is_err(),
            "{bad} was accepted"
        );
    }
}

fn ssh(banner: Option<&str>, methods: Option<&[&str]>, login: Option<bool>) -> Observation {
    Observation::Ssh {
        address: "10.0.0.5:22".into(),
        banner: banner.map(String::from),
        methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
        login,
        detail: if banner.is_none() {
            "connecting: Connection refused (os error 111)".into()
        } else {
            String::new()
        },
    }
}

#[test]
fn ssh_probe() {
    const B: &str = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3";
    let weak = ssh(Some(B), Some(&["publickey", "password"]), Some(true));
    let hard = ssh(Some(B), Some(&["publickey"]), Some(false));
    let deny = "ssh: {from: out, key: k, expect: {login: denied, methodsExclude: [password]}}";
    check(
        deny,
        &weak,
        Outcome::Fail,
        "methods for root: publickey,password",
    );
    check(
        deny,
        &weak,
        Outcome::Fail,
        "method password is offered to root",
    );
    check(deny, &hard, Outcome::Pass, "key login as root: denied");
    // Login alone: the methods may offer password, the key must not log in.
    check(
        "ssh: {from: out, key: k, expect: {login: denied}}",
        &ssh(Some(B), Some(&["publickey", "password"]), Some(true)),
        Outcome::Fail,
        "root logs in with the key from out",
    );
    check(
        "ssh: {from: out, key: k, user: admin, expect: {login: allowed, methodsInclude: [publickey]}}",
        &ssh(Some(B), Some(&["publickey"]), Some(true)),
        Outcome::Pass,
        "key login as admin: allowed",
    );
    check(
        "ssh: {from: out, expect: {bannerMatches: '^SSH-2\\.0-OpenSSH_'}}",
        &hard,
        Outcome::Pass,
        "OpenSSH_9.2p1",
    );
    check(
        "ssh: {from: out, expect: {bannerMatches: 'dropbear'}}",
        &hard,
        Outcome::Fail,
        "banner does not match",
    );
    // No server: fail, naming why.
    check(
        "ssh: {port: 2222, from: out, expect: {bannerMatches: SSH}}",
        &ssh(None, None, None),
        Outcome::Fail,
        "Connection refused",
    );
    // A server that answered but the login could not be tried: error, not a verdict.
    check(
        "ssh: {from: out, key: k, expect: {login: denied}}",
        &Observation::Ssh {
            address: "a:22".into(),
            banner: Some(B.into()),
            methods: None,
            login: None,
            detail: "SSH session: no common key exchange algorithm".into(),
        },
        Outcome::Error,
        "no common key exchange",
    );
}

fn problems(check_yaml: &str) -> Vec<Problem> {
    let c: Check = parse_as(&SourceFile::new("c.yaml", check_yaml)).unwrap();
    let mut out = Vec::new();
    check_check(&c, &mut out);
    out
}

#[test]
fn ssh_check_validation_is_located() {
    assert_eq!(
        problems("ssh: {from: out, key: k, expect: {login: denied, methodsExclude: [password]}}"),
        vec![]
    );
    let p = problems("ssh:\n  from: out\n  expect:\n    login: denied\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].line, p[0].column), (4, 12), "{p:?}");
    assert!(p[0].message.contains("needs a private key"), "{p:?}");
    let p = problems("ssh:\n  from: out\n  expect:\n    methodsExclude: [pasword]\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].line, 4, "{p:?}");
    assert!(p[0].message.contains("`pasword`"), "{p:?}");
    assert!(
        p[0].help.as_deref().unwrap_or("").contains("password"),
        "{p:?}"
    );
    let p = problems("ssh: {from: out, expect: {}}");
    assert!(p[0].message.contains("expects nothing"), "{p:?}");
    let p = problems("ssh: {from: out, expect: {bannerMatches: '('}}");
    assert!(p[0].message.contains("invalid regular expression"), "{p:?}");
    assert!(parse_as::<Check>(&SourceFile::new(
        "c.yaml",
        "ssh: {from: out, expect: {login: maybe}}"
    ))
    .is_err());
}

#[test]
fn relative_ssh_keys_are_relative_to_the_policy() {
    let text = "apiVersion: vacsine.io/v1
kind: Policy
metadata: {name: p}
spec:
  requirements:
    - id: a
      title: T
      severity: high
      check: {ssh: {from: o, key: keys/id, expect: {login: denied}}}
    - id: b
      title: T
      severity: high
      check: {ssh: {from: o, key: /abs/id, expect: {login: denied}}}
";
    let Ok(Document::Policy(mut p)) = load(&SourceFile::new("p.yaml", text)) else {
        panic!("policy does not load")
    };
    p.rebase_paths(std::path::Path::new("site"));
    let keys: Vec<String> = p
        .spec
        .requirements
        .iter()
        .map(|r| match &r.check {
            Check::Ssh(s) => s.key.as_ref().map(|k| k.value.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .collect();
    assert_eq!(keys, ["site/keys/id", "/abs/id"]);
}
