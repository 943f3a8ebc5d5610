//! `decide`: one event, many responses, every outcome with its reason.

use chrono::TimeDelta;
use vacsine_events::{Event, EventKind, Observable, Severity};
use vacsine_response::decide::{DECISION_FIELD, VACSINE_SOURCE};
use vacsine_response::{
    decide, Action, Decider, EventOrigin, IpNet, Outcome, Rule, Target, Verdict, Windows,
};

use crate::common::{doc, hit, rule, t0, Cx, BAN_SPEC};

fn reasons(out: &[Outcome]) -> Vec<&'static str> {
    out.iter()
        .map(|o| vacsine_response::store::reason(&o.verdict))
        .collect()
}

fn decided_nets(out: &[Outcome]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match &o.verdict {
            Verdict::Decided { decision } => match &decision.action {
                Action::Ban { net } => Some(net.to_string()),
                Action::Quarantine { node } => Some(format!("node {node}")),
            },
            _ => None,
        })
        .collect()
}

fn ban_dedupe() -> Rule {
    rule(&doc(
        "ban-decoy",
        &format!("{BAN_SPEC}  dedupe:\n    key: address\n    window: 10m\n"),
    ))
}

#[test]
fn a_burst_of_1000_hits_from_one_address_gives_one_decision() {
    let rules = [ban_dedupe()];
    let cx = Cx::new();
    let mut w = Windows::default();
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..1000 {
        // Every hit is a distinct event (its time differs), all from one address.
        let e = hit(&["203.0.113.9"], i / 10);
        let c = cx.at(e.time, Decider::Site);
        for o in decide(&rules, &e, &c, &mut w) {
            *counts
                .entry(vacsine_response::store::reason(&o.verdict))
                .or_insert(0) += 1;
        }
    }
    assert_eq!(counts.get("matched"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("deduplicated"), Some(&999), "{counts:?}");
    // After the window, the address is decided again.
    let e = hit(&["203.0.113.9"], 601);
    let out = decide(&rules, &e, &cx.at(e.time, Decider::Site), &mut w);
    assert_eq!(reasons(&out), ["matched"]);
    // Another address is not held back by the first one's window.
    let e = hit(&["203.0.113.10"], 100);
    let out = decide(&rules, &e, &cx.at(e.time, Decider::Site), &mut w);
    assert_eq!(reasons(&out), ["matched"]);
}

#[test]
fn throttle_window_caps_decisions_per_key() {
    let rules = [rule(&doc(
        "ban-throttled",
        &format!("{BAN_SPEC}  throttle:\n    key: response\n    window: 1m\n    max: 3\n"),
    ))];
    let cx = Cx::new();
    let mut w = Windows::default();
    let mut got = Vec::new();
    for i in 0..5 {
        let e = hit(&[&format!("203.0.113.{}", 20 + i)], i);
        got.extend(reasons(&decide(
            &rules,
            &e,
            &cx.at(e.time, Decider::Site),
            &mut w,
        )));
    }
    assert_eq!(
        got,
        ["matched", "matched", "matched", "throttled", "throttled"]
    );
    let e = hit(&["203.0.113.30"], 4);
    let out = decide(&rules, &e, &cx.at(e.time, Decider::Site), &mut w);
    match &out[0].verdict {
        // The oldest of the three leaves the window at t0 + 60 s.
        Verdict::Throttled { until, .. } => assert_eq!(*until, t0() + TimeDelta::seconds(60)),
        v => panic!("{v:?}"),
    }
    // Once the first decision leaves the window, one more is allowed.
    let e = hit(&["203.0.113.31"], 60);
    let out = decide(&rules, &e, &cx.at(e.time, Decider::Site), &mut w);
    assert_eq!(reasons(&out), ["matched"]);
    let e = hit(&["203.0.113.32"], 60);
    let out = decide(&rules, &e, &cx.at(e.time, Decider::Site), &mut w);
    assert_eq!(reasons(&out), ["throttled"]);
    // Pruning keeps only live windows.
    w.prune(t0() + TimeDelta::hours(1), TimeDelta::minutes(1));
    assert!(w.throttle.is_empty());
}

#[test]
fn allow_listed_targets_are_refused_and_recorded() {
    let rules = [rule(&doc("ban", BAN_SPEC))];
    let cx = Cx::new();
    // (observable, expected reason, fragment of why)
    let cases = [
        ("192.0.2.10", "allow_listed", "site's own address"),
        ("192.0.2.0/24", "allow_listed", "site's own address"),
        ("2001:db8:ffff::1", "allow_listed", "orchestrator's address"),
        (
            "10.20.5.5",
            "allow_listed",
            "management network 10.20.0.0/16",
        ),
        ("10.0.0.0/8", "allow_listed", "management network"),
        ("10.20.7.0/24", "allow_listed", "management network"),
        ("127.0.0.1", "refused", "loopback"),
        ("::", "refused", "unspecified"),
        ("0.0.0.0/1", "allow_listed", "management network"),
        ("32.0.0.0/4", "refused", "too broad"),
        ("2001::/16", "allow_listed", "orchestrator"),
        ("2a00::/16", "refused", "too broad"),
        ("::ffff:192.0.2.10", "allow_listed", "site's own address"),
        ("10.21.0.1", "matched", ""),
    ];
    for (addr, want, frag) in cases {
        let e = hit(&[addr], 0);
        let out = decide(
            &rules,
            &e,
            &cx.at(t0(), Decider::Site),
            &mut Windows::default(),
        );
        assert_eq!(reasons(&out), [want], "{addr}");
        let why = match &out[0].verdict {
            Verdict::AllowListed { why } | Verdict::Refused { why } => why.clone(),
            _ => String::new(),
        };
        assert!(why.contains(frag), "{addr}: {why:?} lacks {frag:?}");
        assert_eq!(
            out[0].target,
            Some(Target::Net {
                net: addr.parse().unwrap()
            })
        );
    }
}

#[test]
fn ipv4_ipv6_and_cidr_bans() {
    let rules = [rule(&doc("ban", BAN_SPEC))];
    let cx = Cx::new();
    let e = hit(
        &[
            "203.0.113.9",
            "2001:db8::7",
            "198.51.100.0/24",
            "2001:db8:1::/48",
            "::ffff:203.0.113.7",
            "203.0.113.9/32",
        ],
        0,
    );
    let out = decide(
        &rules,
        &e,
        &cx.at(t0(), Decider::Site),
        &mut Windows::default(),
    );
    let mut nets = decided_nets(&out);
    nets.sort();
    assert_eq!(
        nets,
        [
            "198.51.100.0/24",
            "2001:db8:1::/48",
            "2001:db8::7",
            "203.0.113.7",
            "203.0.113.9"
        ]
    );
    for o in &out {
        let Verdict::Decided { decision } = &o.verdict else {
            panic!("{o:?}")
        };
        assert_eq!(decision.expires_at, Some(t0() + TimeDelta::hours(4)));
        assert_eq!(decision.origin.site.as_deref(), Some("edge-a"));
        assert_eq!(decision.origin.response, "ban");
        assert_eq!(decision.origin.event_id, e.id);
        assert_eq!(decision.created_at, t0());
    }
    let host: IpNet = "2001:db8::7".parse().unwrap();
    assert!(host.is_host() && !host.is_ipv4());
    // Only the types the response names are banned (an IPv4-mapped IPv6 observable is an
    // ipv6 observable, banned as the IPv4 address it is on the wire).
    let only_v6 = [rule(&doc(
        "ban6",
        "  on:\n    events: [indicator]\n  decide:\n    ban:\n      observables: [ipv6]\n      for: 1h\n  mode: autonomous\n",
    ))];
    let out = decide(
        &only_v6,
        &e,
        &cx.at(t0(), Decider::Site),
        &mut Windows::default(),
    );
    assert_eq!(decided_nets(&out), ["203.0.113.7", "2001:db8::7"]);
    // An event with no address: refused with the reason, nothing decided.
    let mut e = Event::new(
        EventKind::Indicator,
        "stix",
        t0(),
        Severity::High,
        "d".into(),
    );
    e.observe(Observable::from_parts("domain", "evil.example", None, None).unwrap());
    let out = decide(
        &rules,
        &e.seal(),
        &cx.at(t0(), Decider::Site),
        &mut Windows::default(),
    );
    assert_eq!(reasons(&out), ["refused"]);
}

#[test]
fn approval_required_waits_with_an_expiry() {
    let rules = [rule(&doc(
        "quarantine-on-incident",
        "  on:\n    events: [indicator]\n  decide:\n    quarantine: {}\n  mode: orchestrated\n  approval: required\n  approvalExpires: 30m\n",
    ))];
    let cx = Cx::new();
    let e = hit(&["203.0.113.9"], 0);
    // A site does not decide an orchestrated response.
    assert!(decide(
        &rules,
        &e,
        &cx.at(t0(), Decider::Site),
        &mut Windows::default()
    )
    .is_empty());
    let out = decide(
        &rules,
        &e,
        &cx.at(t0(), Decider::Orchestrator),
        &mut Windows::default(),
    );
    assert_eq!(reasons(&out), ["awaiting_approval"]);
    match &out[0].verdict {
        Verdict::AwaitingApproval {
            decision: Some(d),
            run: None,
            expires_at,
        } => {
            assert_eq!(*expires_at, t0() + TimeDelta::minutes(30));
            assert_eq!(
                d.action,
                Action::Quarantine {
                    node: "web-1".into()
                }
            );
            assert_eq!(d.origin.site, None);
        }
        v => panic!("{v:?}"),
    }
    // A node on the allow-list is never quarantined; an event without a node is refused.
    let mut e2 = hit(&["203.0.113.9"], 1);
    e2.node = Some("gateway".into());
    let out = decide(
        &rules,
        &e2.seal(),
        &cx.at(t0(), Decider::Orchestrator),
        &mut Windows::default(),
    );
    assert_eq!(reasons(&out), ["allow_listed"]);
    let mut e3 = hit(&["203.0.113.9"], 2);
    e3.node = None;
    let out = decide(
        &rules,
        &e3.seal(),
        &cx.at(t0(), Decider::Orchestrator),
        &mut Windows::default(),
    );
    assert_eq!(reasons(&out), ["refused"]);
}

#[test]
fn an_event_about_a_vacsine_decision_does_not_retrigger() {
    let rules = [rule(&doc("ban", BAN_SPEC))];
    let cx = Cx::new();
    // Vacsine's own event about a ban it applied, carrying the banned address.
    let mut e = Event::new(
        EventKind::Indicator,
        VACSINE_SOURCE,
        t0(),
        Severity::High,
        "ban applied".into(),
    );
    e.observe(Observable::parse_ip("203.0.113.9").unwrap());
    e.field(DECISION_FIELD, "abc123");
    let e = e.seal();
    let mut w = Windows::default();
    let out = decide(&rules, &e, &cx.at(t0(), Decider::Site), &mut w);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response, None);
    assert_eq!(
        out[0].verdict,
        Verdict::SelfOrigin {
            decision_id: Some("abc123".into())
        }
    );
    // The same holds when the caller knows the origin, whatever the event's source says.
    let e = hit(&["203.0.113.9"], 0);
    let mut c = cx.at(t0(), Decider::Site);
    c.origin = EventOrigin::Decision {
        decision_id: "d1".into(),
    };
    let out = decide(&rules, &e, &c, &mut w);
    assert_eq!(reasons(&out), ["self_origin"]);
    assert!(w.dedupe.is_empty() && w.throttle.is_empty());
}

#[test]
fn two_deciders_give_the_same_ids() {
    let rules = [ban_dedupe()];
    let cx = Cx::new();
    let e = hit(&["203.0.113.9", "2001:db8::7"], 0);
    let at_site = decide(
        &rules,
        &e,
        &cx.at(t0(), Decider::Site),
        &mut Windows::default(),
    );
    // The orchestrator decides later, with its own windows.
    let later = t0() + TimeDelta::seconds(3);
    let at_orch = decide(
        &rules,
        &e,
        &cx.at(later, Decider::Orchestrator),
        &mut Windows::default(),
    );
    let ids = |out: &[Outcome]| -> Vec<String> {
        out.iter()
            .filter_map(|o| match &o.verdict {
                Verdict::Decided { decision } => Some(decision.id.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(ids(&at_site).len(), 2);
    assert_eq!(ids(&at_site), ids(&at_orch));
    // A different event or response gives different ids.
    let e2 = hit(&["203.0.113.9", "2001:db8::7"], 1);
    let other = decide(
        &rules,
        &e2,
        &cx.at(t0(), Decider::Site),
        &mut Windows::default(),
    );
    assert_ne!(ids(&at_site), ids(&other));
    let renamed = [rule(&doc("ban-other", BAN_SPEC))];
    let other = decide(
        &renamed,
        &e,
        &cx.at(t0(), Decider::Site),
        &mut Windows::default(),
    );
    assert_ne!(ids(&at_site), ids(&other));
}

#[test]
fn conditions_and_scope() {
    let r = rule(&doc(
        "ssh-only",
        "  on:\n    events: [indicator, incident]\n    minSeverity: high\n    sources: [opencanary]\n    observables: [ipv4]\n    fields:\n      - field: logtype\n        oneOf: [\"4002\", \"4000\"]\n      - field: dst_port\n        equals: \"22\"\n  decide:\n    ban:\n      for: 1h\n  scope:\n    sites: [edge-a]\n    labels: {zone: dmz}\n  mode: autonomous\n",
    ));
    let mut cx = Cx::new();
    cx.labels.insert("zone".into(), "dmz".into());
    let ev = |sev: Severity, src: &str, logtype: &str, port: &str, addr: &str| {
        let mut e = Event::new(EventKind::Indicator, src, t0(), sev, "x".into());
        e.observe(Observable::parse_ip(addr).unwrap());
        e.field("logtype", logtype);
        e.field("dst_port", port);
        e.seal()
    };
    let n = |e: &Event, cx: &Cx| {
        decide(
            std::slice::from_ref(&r),
            e,
            &cx.at(t0(), Decider::Site),
            &mut Windows::default(),
        )
        .len()
    };
    assert_eq!(
        n(
            &ev(Severity::High, "opencanary", "4002", "22", "203.0.113.1"),
            &cx
        ),
        1
    );
    assert_eq!(
        n(
            &ev(
                Severity::Critical,
                "opencanary",
                "4000",
                "22",
                "203.0.113.1"
            ),
            &cx
        ),
        1
    );
    assert_eq!(
        n(
            &ev(Severity::Medium, "opencanary", "4002", "22", "203.0.113.1"),
            &cx
        ),
        0
    );
    assert_eq!(
        n(
            &ev(Severity::High, "cowrie", "4002", "22", "203.0.113.1"),
            &cx
        ),
        0
    );
    assert_eq!(
        n(
            &ev(Severity::High, "opencanary", "5000", "22", "203.0.113.1"),
            &cx
        ),
        0
    );
    assert_eq!(
        n(
            &ev(Severity::High, "opencanary", "4002", "2222", "203.0.113.1"),
            &cx
        ),
        0
    );
    assert_eq!(
        n(
            &ev(Severity::High, "opencanary", "4002", "22", "2001:db8::1"),
            &cx
        ),
        0
    );
    // Out of scope: a site without the label.
    let plain = Cx::new();
    assert_eq!(
        n(
            &ev(Severity::High, "opencanary", "4002", "22", "203.0.113.1"),
            &plain
        ),
        0
    );
}

#[test]
fn workflow_inputs_come_from_typed_observables_only() {
    let rules = [rule(&doc(
        "patch-cve",
        "  on:\n    events: [vulnerability]\n  decide:\n    workflow:\n      name: upgrade-package\n      inputs:\n        cve: {observable: cve}\n        node: {event: node}\n        mode: {value: safe}\n  mode: autonomous\n",
    ))];
    let cx = Cx::new();
    let mut e = Event::new(
        EventKind::Vulnerability,
        "nmap",
        t0(),
        Severity::High,
        "x".into(),
    );
    e.observe(Observable::from_parts("cve", "CVE-2024-3094", None, None).unwrap());
    // A hostile raw field is never an input: only typed parts are.
    e.field("product", "x; rm -rf / #");
    e.node = Some("web-1".into());
    let e = e.seal();
    let out = decide(
        &rules,
        &e,
        &cx.at(t0(), Decider::Site),
        &mut Windows::default(),
    );
    match &out[0].verdict {
        Verdict::Run { run } => {
            assert_eq!(run.workflow, "upgrade-package");
            assert_eq!(
                run.inputs.get("cve").map(String::as_str),
                Some("CVE-2024-3094")
            );
            assert_eq!(run.inputs.get("node").map(String::as_str), Some("web-1"));
            assert_eq!(run.inputs.get("mode").map(String::as_str), Some("safe"));
            assert_eq!(run.id.len(), 64);
        }
        v => panic!("{v:?}"),
    }
    let mut e2 = Event::new(
        EventKind::Vulnerability,
        "nmap",
        t0(),
        Severity::High,
        "no cve".into(),
    );
    e2.node = Some("web-1".into());
    let out = decide(
        &rules,
        &e2.seal(),
        &cx.at(t0(), Decider::Site),
        &mut Windows::default(),
    );
    match &out[0].verdict {
        Verdict::Refused { why } => assert!(why.contains("no cve observable"), "{why}"),
        v => panic!("{v:?}"),
    }
}
