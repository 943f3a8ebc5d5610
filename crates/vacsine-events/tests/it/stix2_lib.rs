//! A bundle written by the real `stix2` Python library (OASIS's reference implementation),
//! read by our parser. Skipped with a message when python3 or stix2 is missing, unless
//! `VACSINE_REQUIRE_STIX2=1` (CI), then it fails.

use std::process::Command;

use vacsine_events::{parse, ErrorKind, Format};

const SCRIPT: &str = r#"
import stix2
common = dict(valid_from="2026-03-01T00:00:00Z", pattern_type="stix")
objs = [
    stix2.Indicator(name="ip one", pattern="[ipv4-addr:value = '203.0.113.11']", confidence=95, **common),
    stix2.Indicator(name="ip two", pattern="[ipv4-addr:value = '203.0.113.12']", **common),
    stix2.Indicator(name="ip three", pattern="[ipv6-addr:value = '2001:db8::13']", valid_until="2026-06-01T00:00:00Z", **common),
    stix2.Indicator(name="net", pattern="[ipv4-addr:value ISSUBSET '198.51.100.0/24']", **common),
    stix2.Indicator(name="file", pattern="[file:hashes.'SHA-256' = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08']", **common),
    stix2.Indicator(name="burst", pattern="[ipv4-addr:value = '203.0.113.14'] REPEATS 3 TIMES WITHIN 60 SECONDS", **common),
    stix2.Indicator(name="mail", pattern="[email-addr:value = 'a@example.com']", **common),
]
print(stix2.Bundle(objects=objs).serialize(pretty=True))
"#;

#[test]
fn a_bundle_written_with_the_stix2_library_is_read() {
    let python = std::env::var("VACSINE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python).args(["-c", SCRIPT]).output();
    let required = std::env::var("VACSINE_REQUIRE_STIX2").as_deref() == Ok("1");
    let bundle = match out {
        Ok(o) if o.status.success() => o.stdout,
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
                Err(e) => e.to_string(),
            };
            assert!(
                !required,
                "VACSINE_REQUIRE_STIX2=1 but {python} with stix2 failed: {why}"
            );
            eprintln!("SKIPPED: {python} with the stix2 library unavailable ({why}); `pip install stix2` or set VACSINE_PYTHON; VACSINE_REQUIRE_STIX2=1 fails instead");
            return;
        }
    };
    assert_eq!(Format::detect(&bundle), Some(Format::Stix));
    let p = parse(Format::Stix, &bundle);
    let got: Vec<(String, Vec<String>)> = p
        .events
        .iter()
        .map(|e| (e.fields["name"].clone(), crate::common::obs(e)))
        .collect();
    let want: Vec<(String, Vec<String>)> = [
        ("ip one", "ipv4:203.0.113.11"),
        ("ip two", "ipv4:203.0.113.12"),
        ("ip three", "ipv6:2001:db8::13"),
        ("net", "cidr:198.51.100.0/24"),
        (
            "file",
            "hash:sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
    ]
    .iter()
    .map(|(n, o)| (n.to_string(), vec![o.to_string()]))
    .collect();
    assert_eq!(got, want, "{:?}", p.errors);
    assert_eq!(p.events[0].severity.as_str(), "high", "confidence 95");
    assert!(p.events[2].fields.contains_key("valid_until"));
    let errs: Vec<String> = p.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(p.errors.len(), 2, "{errs:#?}");
    assert!(
        p.errors.iter().all(|e| e.kind == ErrorKind::NotEvaluable),
        "{errs:#?}"
    );
    assert!(errs[0].contains("qualifier REPEATS"), "{}", errs[0]);
    assert!(
        errs[1].contains("object path \"email-addr:value\" is not evaluated"),
        "{}",
        errs[1]
    );
    // Each refusal is at the line of its indicator's id in the pretty-printed bundle.
    let text = String::from_utf8(bundle).unwrap();
    for e in &p.errors {
        let line = text.lines().nth(e.line - 1).unwrap();
        assert!(
            line.contains("\"id\": \"indicator--"),
            "line {}: {line}",
            e.line
        );
    }
}
