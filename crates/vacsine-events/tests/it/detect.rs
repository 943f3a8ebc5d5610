use crate::common::sample;
use vacsine_events::Format;

#[test]
fn each_sample_is_recognised_from_its_first_bytes() {
    for (name, want) in [
        ("eve.jsonl", Format::Eve),
        ("falco.jsonl", Format::Falco),
        ("opencanary.jsonl", Format::OpenCanary),
        ("cowrie.jsonl", Format::Cowrie),
        ("stix-bundle.json", Format::Stix),
        ("crowdsec-alerts.json", Format::CrowdSec),
        ("crowdsec-decisions.json", Format::CrowdSec),
        ("crowdsec-stream.json", Format::CrowdSec),
        ("nmap.xml", Format::Nmap),
    ] {
        let bytes = sample(name);
        assert_eq!(
            Format::detect(&bytes[..bytes.len().min(4096)]),
            Some(want),
            "{name}"
        );
    }
}

#[test]
fn unknown_inputs_are_not_guessed() {
    for input in [
        &b""[..],
        b"hello",
        b"<html></html>",
        b"{\"a\": 1}",
        b"\xff\xfe",
    ] {
        assert_eq!(
            Format::detect(input),
            None,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn format_names_round_trip() {
    for f in Format::ALL {
        assert_eq!(f.name().parse::<Format>(), Ok(f));
    }
    assert_eq!("suricata".parse::<Format>(), Ok(Format::Eve));
    let e = "syslog".parse::<Format>().unwrap_err();
    assert!(e.contains("expected one of eve, falco, stix"), "{e}");
}
