//! The STIX pattern subset: what is evaluated, and what is reported as not evaluable.

use vacsine_events::{Observable, Pattern};

fn o(s: &str) -> Observable {
    let (t, v) = s.split_once(':').unwrap();
    match t {
        "sha256" | "md5" | "sha1" => Observable::from_parts("hash", v, Some(t), None).unwrap(),
        _ => Observable::from_parts(t, v, None, None).unwrap(),
    }
}

#[test]
fn evaluable_patterns_match_the_observables_of_one_event() {
    // (pattern, observables of an event, matches)
    let cases: &[(&str, &[&str], bool)] = &[
        ("[ipv4-addr:value = '203.0.113.5']", &["ipv4:203.0.113.5"], true),
        ("[ipv4-addr:value = '203.0.113.5']", &["ipv4:203.0.113.6"], false),
        ("[ipv4-addr:value = '203.0.113.5/32']", &["ipv4:203.0.113.5"], true),
        ("[ipv6-addr:value = '2001:DB8::1']", &["ipv6:2001:db8::1"], true),
        ("[ipv4-addr:value ISSUBSET '198.51.100.0/24']", &["ipv4:198.51.100.77"], true),
        ("[ipv4-addr:value ISSUBSET '198.51.100.0/24']", &["cidr:198.51.100.128/25"], true),
        ("[ipv4-addr:value ISSUBSET '198.51.100.0/24']", &["ipv4:198.51.101.1"], false),
        ("[ipv6-addr:value ISSUBSET '2001:db8::/32']", &["ipv6:2001:db8:5::1"], true),
        ("[domain-name:value = 'EVIL.example']", &["domain:evil.example"], true),
        ("[url:value = 'http://evil.example/x']", &["url:http://evil.example/x"], true),
        ("[file:hashes.'SHA-256' = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08']", &["sha256:9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"], true),
        ("[file:hashes.MD5 = '098f6bcd4621d373cade4e832627b4f6' OR file:hashes.'SHA-1' = 'a94a8fe5ccb19ba61c4c0873d391e987982fbbd3']", &["sha1:a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"], true),
        // AND inside brackets: one object satisfies all; two different addresses cannot be one object.
        ("[ipv4-addr:value = '203.0.113.5' AND ipv4-addr:value = '203.0.113.6']", &["ipv4:203.0.113.5", "ipv4:203.0.113.6"], false),
        ("[ipv4-addr:value ISSUBSET '203.0.113.0/24' AND ipv4-addr:value = '203.0.113.6']", &["ipv4:203.0.113.6"], true),
        // AND between observation expressions: both observed in the event.
        ("[ipv4-addr:value = '203.0.113.5'] AND [domain-name:value = 'evil.example']", &["ipv4:203.0.113.5", "domain:evil.example"], true),
        ("[ipv4-addr:value = '203.0.113.5'] AND [domain-name:value = 'evil.example']", &["ipv4:203.0.113.5"], false),
        ("([ipv4-addr:value = '192.0.2.1'] OR [ipv4-addr:value = '192.0.2.2']) AND [url:value = 'https://a.example/']", &["ipv4:192.0.2.2", "url:https://a.example/"], true),
        ("[(ipv4-addr:value = '192.0.2.1' OR ipv4-addr:value = '192.0.2.2') AND ipv4-addr:value ISSUBSET '192.0.2.0/31']", &["ipv4:192.0.2.1"], true),
        ("[(ipv4-addr:value = '192.0.2.1' OR ipv4-addr:value = '192.0.2.2') AND ipv4-addr:value ISSUBSET '192.0.2.0/31']", &["ipv4:192.0.2.2"], false),
        // AND binds tighter than OR.
        ("[ipv4-addr:value = '192.0.2.9'] OR [ipv4-addr:value = '192.0.2.1'] AND [domain-name:value = 'x.example']", &["ipv4:192.0.2.9"], true),
        ("[ipv4-addr:value = '192.0.2.9'] OR [ipv4-addr:value = '192.0.2.1'] AND [domain-name:value = 'x.example']", &["ipv4:192.0.2.1"], false),
        ("[domain-name:value = 'it\\'s.example']", &[], false),
    ];
    for (pat, observed, want) in cases {
        let p = match Pattern::parse(pat) {
            Ok(p) => p,
            Err(e) if pat.contains("it\\'s") => {
                // A quote escaped inside a string is read as a quote (then refused as a domain name).
                assert!(e.to_string().contains("\"it's.example\""), "{e}");
                continue;
            }
            Err(e) => panic!("{pat}: {e}"),
        };
        let obs: Vec<Observable> = observed.iter().map(|s| o(s)).collect();
        assert_eq!(p.matches(&obs), *want, "{pat} over {observed:?}");
    }
}

#[test]
fn not_evaluable_constructs_are_reported_with_the_reason() {
    // (pattern, column, piece of the reason)
    let cases: &[(&str, usize, &str)] = &[
        ("[ipv4-addr:value = '192.0.2.1'] WITHIN 300 SECONDS", 33, "qualifier WITHIN"),
        ("[ipv4-addr:value = '192.0.2.1'] REPEATS 5 TIMES", 33, "qualifier REPEATS"),
        ("[ipv4-addr:value = '192.0.2.1'] START t'2026-01-01T00:00:00Z' STOP t'2026-02-01T00:00:00Z'", 33, "qualifier START"),
        ("[ipv4-addr:value = '192.0.2.1'] FOLLOWEDBY [ipv4-addr:value = '192.0.2.2']", 33, "FOLLOWEDBY"),
        ("[ipv4-addr:value != '192.0.2.1']", 18, "operator != is not evaluated"),
        ("[domain-name:value LIKE '%.example']", 20, "operator LIKE"),
        ("[url:value MATCHES '^https?://']", 12, "operator MATCHES"),
        ("[ipv4-addr:value IN ('192.0.2.1', '192.0.2.2')]", 18, "operator IN"),
        ("[ipv4-addr:value NOT = '192.0.2.1']", 18, "NOT is not evaluated"),
        ("[email-addr:value = 'a@example.com']", 2, "object path \"email-addr:value\" is not evaluated"),
        ("[file:name = 'x.exe']", 2, "object path \"file:name\""),
        ("[file:hashes.'SHA3-256' = 'aa']", 2, "object path"),
        ("[network-traffic:src_ref.value = '192.0.2.1']", 2, "object path"),
        ("[process:pid = 4]", 2, "object path"),
        ("[file:size = 4]", 2, "object path"),
        ("[ipv4-addr:value = 4]", 20, "constant \"4\" is not evaluated"),
        ("[domain-name:value ISSUBSET 'x.example']", 20, "ISSUBSET applies to addresses"),
        ("[ipv4-addr:value = '192.0.2.1' AND domain-name:value = 'x.example']", 2, "different object types"),
        ("[EXISTS file:name]", 2, "EXISTS"),
        ("[x509-certificate:extensions[0].value = 'a']", 29, "list index"),
    ];
    for (pat, col, piece) in cases {
        let e = Pattern::parse(pat).expect_err(pat);
        assert!(e.not_evaluable, "{pat}: {e}");
        assert_eq!(e.column, *col, "{pat}: {e}");
        assert!(e.to_string().contains(piece), "{pat}: {e}");
        assert!(e.to_string().starts_with("not evaluable at column"), "{e}");
    }
}

#[test]
fn invalid_patterns_are_located() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 1, "expected an observation expression"),
        (
            "ipv4-addr:value = '1.2.3.4'",
            1,
            "expected an observation expression '[...]'",
        ),
        (
            "[ipv4-addr:value = '192.0.2.1'",
            31,
            "expected ']' or AND/OR",
        ),
        ("[ipv4-addr:value = '192.0.2.1]", 20, "string not closed"),
        (
            "[ipv4-addr:value = '192.0.2.1'] OR",
            35,
            "found the end of the pattern",
        ),
        (
            "[ipv4-addr:value = '192.0.2.1'] XOR [ipv4-addr:value = '192.0.2.2']",
            33,
            "expected AND, OR or the end",
        ),
        (
            "[ipv4-addr:value = '999.0.2.1']",
            20,
            "\"999.0.2.1\" is not an IP address",
        ),
        (
            "[ipv4-addr:value = '2001:db8::1']",
            20,
            "not of this address family",
        ),
        (
            "[ipv4-addr:value ISSUBSET '10.0.0.1/8']",
            27,
            "host bits set",
        ),
        ("[file:hashes.MD5 = 'xyz']", 20, "expected 32 hex digits"),
        (
            "[ipv4-addr:value = '1.2.3.4' ; rm -rf /]",
            30,
            "unexpected character ';'",
        ),
        ("[ipv4-addr:value = 'a\\n']", 22, "bad escape"),
    ];
    for (pat, col, piece) in cases {
        let e = Pattern::parse(pat).expect_err(pat);
        assert!(!e.not_evaluable, "{pat}: {e}");
        assert!(e.to_string().contains(piece), "{pat}: {e}");
        assert_eq!(e.column, *col, "{pat}: {e}");
    }
}

#[test]
fn sufficient_observables_only_for_pure_alternatives() {
    let p = Pattern::parse("[ipv4-addr:value = '192.0.2.1' OR ipv4-addr:value = '192.0.2.1'] OR [ipv4-addr:value ISSUBSET '198.51.100.0/24']").unwrap();
    let got: Vec<String> = p
        .sufficient_observables()
        .unwrap()
        .iter()
        .map(|o| o.to_string())
        .collect();
    assert_eq!(got, ["ipv4:192.0.2.1", "cidr:198.51.100.0/24"]);
    let p = Pattern::parse("[ipv4-addr:value = '192.0.2.1'] AND [domain-name:value = 'a.example']")
        .unwrap();
    assert_eq!(p.sufficient_observables(), None);
}
