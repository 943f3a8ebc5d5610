//! Each parser on samples written from its producer's documentation.

use crate::common::{check, sample, Want};
use vacsine_events::{parse, parse_with, Format, Options};

#[test]
fn suricata_eve_alerts_become_incidents_about_their_source() {
    let p = parse(Format::Eve, &sample("eve.jsonl"));
    check(
        &p,
        &[
            Want {
                kind: "incident",
                severity: "high",
                node: None,
                obs: &["ipv4:203.0.113.9"],
                summary: "UNION SELECT",
                time: "2026-03-02T09:15:01.123456+00:00",
            },
            Want {
                kind: "incident",
                severity: "low",
                node: None,
                obs: &["ipv6:2001:db8::7"],
                summary: "3way handshake",
                time: "2026-03-02T09:16:00.500+00:00",
            },
            // The rule named its source with `target`: the suspect is alert.source, not src_ip.
            Want {
                kind: "incident",
                severity: "medium",
                node: None,
                obs: &["ipv4:198.51.100.77"],
                summary: "LOCAL outbound",
                time: "2026-03-02T09:17:00+00:00",
            },
        ],
        &[],
    );
    assert_eq!(p.skipped, 2, "flow and stats records are not events");
    let e = &p.events[0];
    assert_eq!(e.fields["dest_ip"], "192.0.2.10");
    assert_eq!(e.fields["dest_port"], "80");
    assert_eq!(e.fields["src_port"], "51544");
    assert_eq!(e.fields["proto"], "TCP");
    assert_eq!(e.fields["signature_id"], "2024897");
    assert_eq!(e.fields["category"], "Web Application Attack");
}

#[test]
fn suricata_severity_follows_the_documented_scale() {
    for (n, want) in [(1, "high"), (2, "medium"), (3, "low"), (4, "info")] {
        let line = format!(
            r#"{{"timestamp":"2026-03-02T10:00:00Z","event_type":"alert","src_ip":"192.0.2.1","dest_ip":"192.0.2.2","alert":{{"signature":"s","severity":{n}}}}}"#
        );
        let p = parse(Format::Eve, line.as_bytes());
        assert_eq!(p.events[0].severity.as_str(), want, "severity {n}");
    }
}

#[test]
fn falco_events_are_incidents_about_the_remote_end() {
    let p = parse(Format::Falco, &sample("falco.jsonl"));
    check(
        &p,
        &[
            Want {
                kind: "incident",
                severity: "medium",
                node: Some("web-1"),
                obs: &["ipv4:198.51.100.23"],
                summary: "Outbound Connection to C2",
                time: "2026-03-02T10:20:05.408091526+00:00",
            },
            Want {
                kind: "incident",
                severity: "low",
                node: Some("db-1"),
                obs: &[],
                summary: "Terminal shell",
                time: "2026-03-02T10:21:00+00:00",
            },
            Want {
                kind: "incident",
                severity: "critical",
                node: Some("edge-a-host"),
                obs: &[],
                summary: "Read sensitive file",
                time: "2026-03-02T10:22:00+00:00",
            },
        ],
        &[],
    );
    let e = &p.events[0];
    assert_eq!(e.fields["fd.cip"], "172.17.0.2");
    assert_eq!(e.fields["container.id"], "3c4b2a1f0e9d");
    assert_eq!(e.fields["tags"], "network,mitre_command_and_control");
    // Shell metacharacters are kept as data, byte for byte.
    assert_eq!(
        p.events[1].fields["proc.cmdline"],
        "bash -c 'echo $(id); rm -rf / --no-preserve-root'"
    );
}

#[test]
fn falco_priorities_map_to_severities() {
    for (p, want) in [
        ("Emergency", "critical"),
        ("Alert", "critical"),
        ("Critical", "critical"),
        ("Error", "high"),
        ("Warning", "medium"),
        ("Notice", "low"),
        ("Informational", "info"),
        ("Debug", "info"),
    ] {
        let line = format!(
            r#"{{"rule":"r","priority":"{p}","time":"2026-03-02T10:00:00Z","output":"o"}}"#
        );
        let parsed = parse(Format::Falco, line.as_bytes());
        assert_eq!(parsed.events[0].severity.as_str(), want, "{p}");
    }
    let parsed = parse(
        Format::Falco,
        br#"{"rule":"r","priority":"Loud","time":"2026-03-02T10:00:00Z"}"#,
    );
    assert_eq!(parsed.errors[0].to_string(), "line 1: field `priority` is \"Loud\", expected one of Emergency, Alert, Critical, Error, Warning, Notice, Informational, Debug");
}

#[test]
fn opencanary_touches_are_indicators_and_daemon_messages_are_skipped() {
    let p = parse(Format::OpenCanary, &sample("opencanary.jsonl"));
    check(
        &p,
        &[
            Want {
                kind: "indicator",
                severity: "high",
                node: Some("opencanary-edge-a"),
                obs: &["ipv4:203.0.113.50"],
                summary: "SSH login attempt from 203.0.113.50 on port 2222",
                time: "2026-03-02T10:30:12.281259+00:00",
            },
            Want {
                kind: "indicator",
                severity: "high",
                node: Some("opencanary-edge-a"),
                obs: &["ipv6:2001:db8::66"],
                summary: "HTTP GET",
                time: "2026-03-02T10:31:00+00:00",
            },
            Want {
                kind: "indicator",
                severity: "high",
                node: Some("opencanary-edge-a"),
                obs: &["ipv4:203.0.113.51"],
                summary: "FTP login attempt",
                time: "2026-03-02T10:32:00+00:00",
            },
        ],
        &[],
    );
    assert_eq!(p.skipped, 1);
    let e = &p.events[0];
    assert_eq!(e.fields["logdata.PASSWORD"], "hunter2; rm -rf /");
    assert_eq!(e.fields["src_port"], "49635");
    assert_eq!(e.fields["dst_port"], "2222");
    assert_eq!(e.fields["logtype"], "4002");
}

#[test]
fn cowrie_sessions_become_indicators_with_downloads_as_observables() {
    let p = parse(Format::Cowrie, &sample("cowrie.jsonl"));
    let ip = "ipv4:203.0.113.77";
    check(
        &p,
        &[
            Want {
                kind: "indicator",
                severity: "medium",
                node: Some("decoy-a"),
                obs: &[ip],
                summary: "connection from 203.0.113.77",
                time: "2026-03-02T10:40:00+00:00",
            },
            Want {
                kind: "indicator",
                severity: "medium",
                node: Some("decoy-a"),
                obs: &[ip],
                summary: "failed login",
                time: "2026-03-02T10:40:01+00:00",
            },
            Want {
                kind: "indicator",
                severity: "high",
                node: Some("decoy-a"),
                obs: &[ip],
                summary: "successful login",
                time: "2026-03-02T10:40:02+00:00",
            },
            Want {
                kind: "indicator",
                severity: "high",
                node: Some("decoy-a"),
                obs: &[ip],
                summary: "command",
                time: "2026-03-02T10:40:03+00:00",
            },
            Want {
                kind: "indicator",
                severity: "high",
                node: Some("decoy-a"),
                obs: &[
                    ip,
                    "url:http://198.51.100.5/bot.sh",
                    "hash:sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                ],
                summary: "file download",
                time: "2026-03-02T10:40:04+00:00",
            },
        ],
        &[],
    );
    assert_eq!(p.skipped, 2, "client version and session closed");
    assert_eq!(p.events[0].fields["src_port"], "52310");
    assert_eq!(p.events[0].fields["session"], "6f1c3b2a9d0e");
    assert_eq!(p.events[2].fields["password"], "123456");
    assert!(p.events[3].fields["input"].contains("`id` $(uname -a)"));
}

#[test]
fn crowdsec_alerts_give_one_indicator_per_live_decision() {
    let p = parse(Format::CrowdSec, &sample("crowdsec-alerts.json"));
    check(
        &p,
        &[
            Want {
                kind: "indicator",
                severity: "high",
                node: Some("edge-a-agent"),
                obs: &["ipv4:203.0.113.90"],
                summary: "ban 203.0.113.90 (crowdsecurity/ssh-bf)",
                time: "2026-03-02T10:50:00+00:00",
            },
            Want {
                kind: "indicator",
                severity: "high",
                node: Some("edge-a-agent"),
                obs: &["cidr:198.51.100.0/24"],
                summary: "ban 198.51.100.0/24",
                time: "2026-03-02T10:51:00+00:00",
            },
        ],
        &[],
    );
    assert_eq!(p.skipped, 1, "the expired decision (-3m)");
    let e = &p.events[0];
    assert_eq!(e.fields["duration_seconds"], "14390");
    assert_eq!(e.fields["origin"], "crowdsec");
    assert_eq!(e.fields["decision_type"], "ban");
    assert_eq!(e.fields["alert_id"], "71");
    assert_eq!(p.events[1].fields["origin"], "cscli");
}

#[test]
fn crowdsec_decisions_take_their_time_from_until_or_from_the_caller() {
    let bytes = sample("crowdsec-decisions.json");
    let p = parse(Format::CrowdSec, &bytes);
    check(
        &p,
        &[Want {
            kind: "indicator",
            severity: "high",
            node: None,
            obs: &["ipv4:203.0.113.91"],
            summary: "ban 203.0.113.91",
            time: "2026-03-02T10:00:05+00:00",
        }],
        &[(1, "decision has no time")],
    );
    let received = "2026-03-02T12:00:00Z".parse().unwrap();
    let p = parse_with(
        Format::CrowdSec,
        &bytes,
        &Options {
            received: Some(received),
        },
    );
    assert_eq!(p.events.len(), 2, "{:?}", p.errors);
    assert_eq!(p.events[1].severity.as_str(), "medium", "captcha");
    assert_eq!(crate::common::obs(&p.events[1]), ["ipv6:2001:db8::bad"]);
    assert_eq!(p.events[1].time, received);
}

#[test]
fn crowdsec_stream_new_decisions_and_unsupported_scopes_reported() {
    let p = parse(Format::CrowdSec, &sample("crowdsec-stream.json"));
    check(
        &p,
        &[Want {
            kind: "indicator",
            severity: "high",
            node: None,
            obs: &["cidr:192.0.2.128/25"],
            summary: "lists:firehol_level1",
            time: "2026-03-02T12:00:00+00:00",
        }],
        &[(
            1,
            "decision scope \"Country\" is not evaluated (expected Ip or Range)",
        )],
    );
    assert_eq!(p.errors[0].kind, vacsine_events::ErrorKind::NotEvaluable);
    assert_eq!(p.skipped, 1, "deleted decisions");
}

#[test]
fn nmap_open_ports_become_exposure_events_per_host_and_port() {
    let p = parse(Format::Nmap, &sample("nmap.xml"));
    check(
        &p,
        &[
            Want {
                kind: "vulnerability",
                severity: "info",
                node: None,
                obs: &[
                    "ipv4:192.0.2.10",
                    "domain:web-1.edge-a.example",
                    "package:OpenSSH@9.2p1 Debian 2+deb12u3",
                ],
                summary: "22/tcp open on 192.0.2.10 (OpenSSH 9.2p1",
                time: "2026-03-02T10:20:01+00:00",
            },
            Want {
                kind: "vulnerability",
                severity: "info",
                node: None,
                obs: &[
                    "ipv4:192.0.2.10",
                    "domain:web-1.edge-a.example",
                    "package:nginx@1.22.1",
                ],
                summary: "80/tcp open",
                time: "2026-03-02T10:20:01+00:00",
            },
            Want {
                kind: "vulnerability",
                severity: "info",
                node: None,
                obs: &["ipv6:2001:db8::10"],
                summary: "53/udp open on 2001:db8::10 (domain)",
                time: "2026-03-02T10:20:02+00:00",
            },
        ],
        &[],
    );
    assert_eq!(p.skipped, 2, "the filtered port and the host that is down");
    let e = &p.events[0];
    assert_eq!(e.fields["port"], "22");
    assert_eq!(e.fields["protocol"], "tcp");
    assert_eq!(e.fields["service"], "ssh");
    assert_eq!(e.fields["extrainfo"], "protocol 2.0");
    assert_eq!(
        e.fields["cpe"],
        "cpe:/a:openbsd:openssh:9.2p1 cpe:/o:linux:linux_kernel"
    );
}

#[test]
fn nmap_bad_address_and_port_are_located() {
    let xml = "<?xml version=\"1.0\"?>\n<nmaprun start=\"1772446800\">\n<host><status state=\"up\"/>\n<address addr=\"not-an-ip\" addrtype=\"ipv4\"/>\n</host>\n<host><address addr=\"192.0.2.5\" addrtype=\"ipv4\"/><ports>\n<port protocol=\"tcp\" portid=\"99999\"><state state=\"open\"/></port>\n<port protocol=\"tcp\" portid=\"25\"><state state=\"open\"/></port>\n</ports></host>\n</nmaprun>\n";
    let p = parse(Format::Nmap, xml.as_bytes());
    check(
        &p,
        &[Want {
            kind: "vulnerability",
            severity: "info",
            node: None,
            obs: &["ipv4:192.0.2.5"],
            summary: "25/tcp open",
            time: "2026-03-02T10:20:00+00:00",
        }],
        &[
            (4, "\"not-an-ip\" is not an IP address"),
            (7, "portid=…> is \"99999\", expected a port"),
        ],
    );
}

#[test]
fn stix_bundle_indicators_evaluable_ones_become_events_others_are_reported() {
    let p = parse(Format::Stix, &sample("stix-bundle.json"));
    check(
        &p,
        &[
            Want {
                kind: "indicator",
                severity: "high",
                node: None,
                obs: &["ipv4:203.0.113.5", "ipv4:203.0.113.6", "ipv6:2001:db8::bad"],
                summary: "Scanner addresses",
                time: "2026-03-01T12:00:00+00:00",
            },
            Want {
                kind: "indicator",
                severity: "medium",
                node: None,
                obs: &["cidr:198.51.100.0/24"],
                summary: "Botnet network",
                time: "2026-03-01T12:00:00+00:00",
            },
            // AND: no single value is an indicator on its own.
            Want {
                kind: "indicator",
                severity: "low",
                node: None,
                obs: &[],
                summary: "Dropper",
                time: "2026-03-01T12:00:00+00:00",
            },
            Want {
                kind: "indicator",
                severity: "medium",
                node: None,
                obs: &[
                    "domain:evil.example",
                    "url:https://evil.example/payload?x=1",
                ],
                summary: "stix: [domain-name",
                time: "2026-03-01T12:00:00+00:00",
            },
        ],
        &[
            (66, "not evaluable at column 35: qualifier REPEATS"),
            (
                76,
                "pattern_type \"snort\" is not evaluated (expected stix)",
            ),
            (86, "\"203.0.113.300\" is not an IP address"),
        ],
    );
    assert_eq!(p.skipped, 3, "identity, relationship, revoked indicator");
    assert_eq!(
        p.events[0].fields["valid_until"],
        "2026-04-01T12:00:00+00:00"
    );
    assert_eq!(p.events[2].fields["pattern_conjunctive"], "true");
}

#[test]
fn stix_indicators_carry_their_compiled_pattern_and_validity() {
    use vacsine_events::Observable;
    let (inds, p) = vacsine_events::parse_indicators(&sample("stix-bundle.json"));
    assert_eq!(inds.len(), p.events.len());
    let dropper = &inds[2];
    let sha = Observable::hash(
        vacsine_events::HashAlgo::Sha256,
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    )
    .unwrap();
    let md5 = Observable::hash(
        vacsine_events::HashAlgo::Md5,
        "098f6bcd4621d373cade4e832627b4f6",
    )
    .unwrap();
    assert!(dropper.pattern.matches(&[sha.clone(), md5]));
    assert!(!dropper.pattern.matches(&[sha]));
    let scanners = &inds[0];
    assert!(scanners.is_valid_at("2026-03-15T00:00:00Z".parse().unwrap()));
    assert!(!scanners.is_valid_at("2026-04-01T12:00:00Z".parse().unwrap()));
    assert!(!scanners.is_valid_at("2026-02-01T00:00:00Z".parse().unwrap()));
}

#[test]
fn a_bad_line_never_drops_the_good_ones() {
    for (format, good) in [
        (
            Format::Eve,
            r#"{"timestamp":"2026-03-02T10:00:00Z","event_type":"alert","src_ip":"192.0.2.1","alert":{"signature":"s","severity":1}}"#,
        ),
        (
            Format::Falco,
            r#"{"rule":"r","priority":"Error","time":"2026-03-02T10:00:00Z"}"#,
        ),
        (
            Format::OpenCanary,
            r#"{"logtype":4000,"src_host":"192.0.2.1","utc_time":"2026-03-02 10:00:00.0"}"#,
        ),
        (
            Format::Cowrie,
            r#"{"eventid":"cowrie.session.connect","src_ip":"192.0.2.1","timestamp":"2026-03-02T10:00:00Z"}"#,
        ),
    ] {
        let text = format!("{good}\n{{\"not json\n\n{good}\n[1,2]\n{good}\n");
        let p = parse(format, text.as_bytes());
        assert_eq!(p.events.len(), 3, "{format}: {:?}", p.errors);
        let lines: Vec<usize> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 5], "{format}: {:?}", crate::common::errors(&p));
        assert!(
            p.errors[0].to_string().starts_with("line 2, column"),
            "{}",
            p.errors[0]
        );
    }
}

#[test]
fn reading_from_a_reader_gives_the_same_result_as_from_memory() {
    for (format, name) in [
        (Format::Eve, "eve.jsonl"),
        (Format::Falco, "falco.jsonl"),
        (Format::OpenCanary, "opencanary.jsonl"),
        (Format::Cowrie, "cowrie.jsonl"),
        (Format::Stix, "stix-bundle.json"),
        (Format::CrowdSec, "crowdsec-alerts.json"),
        (Format::Nmap, "nmap.xml"),
    ] {
        let bytes = sample(name);
        // A tiny buffer: lines cross buffer boundaries.
        let r = std::io::BufReader::with_capacity(7, &bytes[..]);
        let a = vacsine_events::parse_reader(format, r, &Options::default()).unwrap();
        let b = parse(format, &bytes);
        assert_eq!(a, b, "{name}");
        assert!(!a.events.is_empty());
    }
}

#[test]
fn the_same_record_read_twice_has_the_same_id_and_a_site_changes_it() {
    let a = parse(Format::Cowrie, &sample("cowrie.jsonl"));
    let b = parse(Format::Cowrie, &sample("cowrie.jsonl"));
    let ids =
        |p: &vacsine_events::Parsed| p.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    let mut uniq = ids(&a);
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), a.events.len(), "distinct records, distinct ids");
    let at = a.clone().at_site("edge-a");
    assert_eq!(at.events[0].site.as_deref(), Some("edge-a"));
    assert_ne!(at.events[0].id, a.events[0].id);
    assert_eq!(at.events[0].id, at.events[0].content_id());
}

#[test]
fn stix_errors_are_located_at_the_object_itself_not_at_a_reference_to_it() {
    let mut doc = String::from("{\"type\": \"bundle\", \"id\": \"bundle--1\", \"objects\": [\n");
    // A relationship naming the indicator comes first.
    doc.push_str("{\"type\": \"relationship\", \"id\": \"relationship--1\", \"source_ref\": \"indicator--bad\", \"target_ref\": \"malware--1\"},\n");
    for i in 0..2000 {
        doc.push_str(&format!("{{\"type\": \"indicator\", \"id\": \"indicator--{i}\", \"pattern\": \"[ipv4-addr:value = '10.0.{}.{}']\", \"pattern_type\": \"stix\", \"valid_from\": \"2026-03-01T00:00:00Z\"}},\n", i / 256, i % 256));
    }
    doc.push_str("{\"type\": \"indicator\",\n \"id\" :\n \"indicator--bad\", \"pattern\": \"[ipv4-addr:value = 'x']\", \"pattern_type\": \"stix\", \"valid_from\": \"2026-03-01T00:00:00Z\"}\n]}\n");
    let p = parse(Format::Stix, doc.as_bytes());
    assert_eq!(p.events.len(), 2000);
    assert_eq!(p.errors.len(), 1);
    assert_eq!(
        p.errors[0].line, 2005,
        "where its id is written: {}",
        p.errors[0]
    );
}

#[test]
fn document_formats_given_one_value_per_line_go_on_after_a_bad_line() {
    let text = concat!(
        r#"{"scope":"Ip","value":"203.0.113.1","type":"ban","until":"2026-03-02T12:00:00Z","duration":"1h"}"#,
        "\n",
        r#"{"scope":"Ip","value":"203.0.113.2","type":"ban",,}"#,
        "\n",
        r#"{"scope":"Ip","value":"203.0.113.3","type":"ban","until":"2026-03-02T12:00:00Z","duration":"1h"}"#,
        "\n",
    );
    let p = parse(Format::CrowdSec, text.as_bytes());
    assert_eq!(p.events.len(), 2, "{:?}", p.errors);
    assert_eq!(p.errors.len(), 1);
    assert_eq!(p.errors[0].line, 2, "{}", p.errors[0]);
    let stix = concat!(
        r#"{"type":"indicator","id":"indicator--1","pattern":"[ipv4-addr:value = '203.0.113.1']","pattern_type":"stix","valid_from":"2026-03-01T00:00:00Z"}"#,
        "\n",
        "{\"type\":\"indicator\",\n",
        r#"{"type":"indicator","id":"indicator--3","pattern":"[ipv4-addr:value = '203.0.113.3']","pattern_type":"stix","valid_from":"2026-03-01T00:00:00Z"}"#,
        "\n",
    );
    let p = parse(Format::Stix, stix.as_bytes());
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert_eq!(
        p.errors[0].line, 3,
        "the broken object is seen to end at the next line: {}",
        p.errors[0]
    );
    assert_eq!(p.events.len(), 1, "the first is kept");
}
