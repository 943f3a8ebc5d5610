//! Observables: each type validated, the wire form tolerant, the content id stable.

use vacsine_events::{Cidr, Domain, Event, EventKind, HashAlgo, Observable, Severity};

#[test]
fn observables_are_validated_by_type() {
    let ok = |t: &str, v: &str, algo: Option<&str>| Observable::from_parts(t, v, algo, None);
    // (type, value, algo, Ok(display) or Err(piece of the reason))
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Result<&'a str, &'a str>);
    let cases: &[Case] = &[
        ("ipv4", "203.0.113.9", None, Ok("ipv4:203.0.113.9")),
        ("ipv4", "2001:db8::1", None, Err("not an IPv4 address")),
        (
            "ipv4",
            "203.0.113.9; rm -rf /",
            None,
            Err("not an IPv4 address"),
        ),
        ("ipv6", "2001:DB8::1", None, Ok("ipv6:2001:db8::1")),
        ("ip", "::ffff:192.0.2.1", None, Ok("ipv6:::ffff:192.0.2.1")),
        ("cidr", "10.0.0.0/8", None, Ok("cidr:10.0.0.0/8")),
        (
            "cidr",
            "10.0.0.1/8",
            None,
            Err("host bits set (expected the network address, 10.0.0.0/8)"),
        ),
        (
            "cidr",
            "10.0.0.0/33",
            None,
            Err("prefix /33 is longer than 32 bits"),
        ),
        ("cidr", "2001:db8::/32", None, Ok("cidr:2001:db8::/32")),
        ("cidr", "2001:db8::/129", None, Err("longer than 128 bits")),
        ("cidr", "10.0.0.0/+8", None, Err("not a prefix length")),
        ("domain", "Evil.Example.", None, Ok("domain:evil.example")),
        (
            "domain",
            "xn--bcher-kva.example",
            None,
            Ok("domain:xn--bcher-kva.example"),
        ),
        (
            "domain",
            "bücher.example",
            None,
            Err("not allowed in a domain name"),
        ),
        ("domain", "a..b", None, Err("must be 1 to 63 bytes")),
        ("domain", "-a.example", None, Err("starts or ends with '-'")),
        ("domain", "192.0.2.1", None, Err("is an IP address")),
        ("domain", "evil.example;id", None, Err("';' is not allowed")),
        (
            "url",
            "HTTPS://evil.example/a?b=c",
            None,
            Ok("url:https://evil.example/a?b=c"),
        ),
        (
            "url",
            "http://evil.example/a b",
            None,
            Err("whitespace and control characters"),
        ),
        ("url", "evil.example/a", None, Err("expected scheme://host")),
        ("url", "http:///path", None, Err("no host")),
        (
            "hash",
            "D41D8CD98F00B204E9800998ECF8427E",
            Some("MD5"),
            Ok("hash:md5:d41d8cd98f00b204e9800998ecf8427e"),
        ),
        (
            "hash",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            Some("SHA-1"),
            Ok("hash:sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        ),
        ("hash", "abc", Some("sha256"), Err("expected 64 hex digits")),
        (
            "hash",
            &"g".repeat(64),
            Some("sha256"),
            Err("expected 64 hex digits"),
        ),
        (
            "hash",
            "d41d8cd98f00b204e9800998ecf8427e",
            Some("crc32"),
            Err("not a hash algorithm"),
        ),
        (
            "hash",
            "d41d8cd98f00b204e9800998ecf8427e",
            None,
            Err("needs its algo"),
        ),
        ("cve", "cve-2024-3094", None, Ok("cve:CVE-2024-3094")),
        ("cve", "CVE-2021-44228", None, Ok("cve:CVE-2021-44228")),
        ("cve", "CVE-2024-123", None, Err("4 or more digits")),
        ("cve", "CVE-24-1234", None, Err("not a CVE identifier")),
        ("package", "openssl", None, Ok("package:openssl")),
        ("package", "", None, Err("package name")),
        (
            "mac",
            "00:11:22:33:44:55",
            None,
            Err("not an observable type"),
        ),
    ];
    for (t, v, algo, want) in cases {
        let got = ok(t, v, *algo);
        match (want, got) {
            (Ok(d), Ok(o)) => assert_eq!(o.to_string(), *d, "{t} {v}"),
            (Err(piece), Err(e)) => assert!(e.to_string().contains(piece), "{t} {v}: {e}"),
            (w, g) => panic!("{t} {v}: wanted {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn cidr_containment() {
    let net: Cidr = "198.51.100.0/24".parse().unwrap();
    assert!(net.contains("198.51.100.200".parse().unwrap()));
    assert!(!net.contains("198.51.101.1".parse().unwrap()));
    assert!(
        !net.contains("::ffff:198.51.100.1".parse().unwrap()),
        "never across families"
    );
    assert!(net.contains_cidr(&"198.51.100.128/25".parse().unwrap()));
    assert!(!net.contains_cidr(&"198.51.0.0/16".parse().unwrap()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("203.0.113.1".parse().unwrap()));
}

#[test]
fn the_wire_form_is_tolerant_and_validating() {
    let o: Vec<Observable> = serde_json::from_str(
        r#"[{"type":"ipv4","value":"203.0.113.9","extra":1},
            {"type":"hash","algo":"sha256","value":"9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"},
            {"type":"package","value":"openssl","version":"3.0.11-1~deb12u2"},
            {"type":"domain-name","value":"evil.example"}]"#,
    )
    .unwrap();
    assert_eq!(
        o[3],
        Observable::Domain(Domain::parse("evil.example").unwrap())
    );
    let back = serde_json::to_string(&o).unwrap();
    assert_eq!(
        back,
        r#"[{"type":"ipv4","value":"203.0.113.9"},{"type":"hash","value":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","algo":"sha256"},{"type":"package","value":"openssl","version":"3.0.11-1~deb12u2"},{"type":"domain","value":"evil.example"}]"#
    );
    let e =
        serde_json::from_str::<Observable>(r#"{"type":"ipv4","value":"$(reboot)"}"#).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"$(reboot)\" is not an IPv4 address"),
        "{e}"
    );
}

#[test]
fn events_round_trip_and_their_id_is_a_stable_content_hash() {
    let t = "2026-03-02T10:00:00.5Z".parse().unwrap();
    let mut e = Event::new(
        EventKind::Indicator,
        "cowrie",
        t,
        Severity::High,
        "s".into(),
    );
    e.observe(Observable::parse_ip("203.0.113.9").unwrap());
    e.observe(Observable::hash(HashAlgo::Md5, "d41d8cd98f00b204e9800998ecf8427e").unwrap());
    e.field("k", "v");
    let e = e.seal();
    // Fixed: a change to the canonical form would break idempotency keys already stored.
    assert_eq!(
        e.id,
        "d979e0772562d655bdf6be9ff29dcb1d7b548320cc2968a1f7def6274cc44910"
    );
    let json = serde_json::to_string(&e).unwrap();
    let back: Event = serde_json::from_str(&json).unwrap();
    assert_eq!(back, e);
    assert_eq!(back.content_id(), e.id);
    // Observable order does not change the id.
    let mut r = e.clone();
    r.observables.reverse();
    assert_eq!(r.content_id(), e.id);
    // Unknown fields tolerated, optional ones absent.
    let min: Event = serde_json::from_str(
        r#"{"id":"x","kind":"incident","source":"s","time":"2026-03-02T10:00:00+02:00","severity":"low","summary":"m","future":true}"#,
    )
    .unwrap();
    assert_eq!(min.time.to_rfc3339(), "2026-03-02T08:00:00+00:00");
    assert!(min.observables.is_empty());
    // Raw fields are bounded.
    let mut b = e.clone();
    for i in 0..100 {
        b.field(&format!("f{i}"), "x");
    }
    assert_eq!(b.fields.len(), vacsine_events::limits::MAX_FIELDS);
    assert!(!b.field(
        "k2",
        "x".repeat(vacsine_events::limits::MAX_FIELD_BYTES + 1)
    ));
}
