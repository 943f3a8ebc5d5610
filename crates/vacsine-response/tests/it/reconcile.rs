//! `reconcile` and `render_nft`: only the diff, never a flush; expired dropped; nft text from
//! parsed addresses only.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use vacsine_response::reconcile::{remaining_secs, ELEMENTS_PER_STATEMENT};
use vacsine_response::{
    reconcile, render_nft, Action, AppliedElement, BanSet, Decision, DecisionOrigin, Diff, Element,
    IpNet,
};

use crate::common::t0;

fn ban(net: &str, expires: Option<DateTime<Utc>>) -> Decision {
    let action = Action::Ban {
        net: net.parse().unwrap(),
    };
    Decision {
        id: vacsine_response::decision_id("r", "e", &action),
        action,
        expires_at: expires,
        origin: DecisionOrigin {
            site: Some("edge-a".into()),
            response: "r".into(),
            event_id: "e".into(),
        },
        created_at: t0(),
    }
}

fn applied(net: &str, left_secs: Option<u64>) -> AppliedElement {
    AppliedElement {
        net: net.parse().unwrap(),
        left: left_secs.map(Duration::from_secs),
    }
}

fn el(net: &str, t: Option<u64>) -> Element {
    Element {
        net: net.parse().unwrap(),
        timeout_secs: t,
    }
}

fn h(n: i64) -> Option<DateTime<Utc>> {
    Some(t0() + TimeDelta::hours(n))
}

#[test]
fn after_a_cut_only_the_diff() {
    // Active for the site once the link is back: A and B (already applied) and D (decided
    // elsewhere while the site was cut off); C was deleted meanwhile.
    let desired = [
        ban("203.0.113.1", h(3)),
        ban("2001:db8::7", h(1)),
        ban("198.51.100.0/24", h(2)),
    ];
    let have = [
        applied("203.0.113.1", Some(3 * 3600 - 1)),
        applied("2001:db8::7", Some(3600)),
        applied("203.0.113.3", Some(600)),
    ];
    let d = reconcile(&desired, &have, t0());
    assert_eq!(
        d,
        Diff {
            add: vec![el("198.51.100.0/24", Some(7200))],
            delete: vec!["203.0.113.3".parse().unwrap()]
        }
    );
    assert_eq!(
        render_nft(&d),
        "delete element inet vacsine_decisions ban4 { 203.0.113.3 }\n\
         add element inet vacsine_decisions ban4net { 198.51.100.0/24 timeout 7200s }\n"
    );
    // Applied exactly as desired: nothing to do (never a flush and reload).
    let have = [
        applied("203.0.113.1", Some(3 * 3600)),
        applied("2001:db8::7", Some(3600)),
        applied("198.51.100.0/24", Some(7200)),
    ];
    let d = reconcile(&desired, &have, t0());
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(render_nft(&d), "");
}

#[test]
fn expired_decisions_are_dropped_and_timeouts_rounded_up() {
    let now = t0();
    let ms = |n: i64| Some(now + TimeDelta::milliseconds(n));
    let desired = [
        ban("203.0.113.1", ms(1500)),  // 1.5 s → 2 s
        ban("203.0.113.2", ms(200)),   // 0.2 s → 1 s
        ban("203.0.113.3", ms(0)),     // expired now
        ban("203.0.113.4", ms(-5000)), // expired
        ban("203.0.113.5", None),      // no expiry
    ];
    let d = reconcile(&desired, &[], now);
    assert_eq!(
        d.add,
        vec![
            el("203.0.113.1", Some(2)),
            el("203.0.113.2", Some(1)),
            el("203.0.113.5", None)
        ]
    );
    assert_eq!(
        remaining_secs(now + TimeDelta::seconds(14400), now),
        Some(14400)
    );
    assert_eq!(remaining_secs(now, now), None);
    // An expired decision still listed with time left is deleted; one nft already dropped
    // (time left zero) is not touched.
    let have = [
        applied("203.0.113.4", Some(3)),
        applied("203.0.113.3", Some(0)),
    ];
    let d = reconcile(&desired, &have, now);
    assert_eq!(d.delete, vec!["203.0.113.4".parse::<IpNet>().unwrap()]);
}

#[test]
fn overlapping_decisions_and_extensions() {
    // Two decisions on one address: the later expiry wins.
    let desired = [ban("203.0.113.9", h(1)), ban("203.0.113.9", h(4))];
    let d = reconcile(&desired, &[], t0());
    assert_eq!(d.add, vec![el("203.0.113.9", Some(4 * 3600))]);
    // Applied with less time left than wanted: refreshed (delete then add, one script).
    let d = reconcile(&desired, &[applied("203.0.113.9", Some(600))], t0());
    assert_eq!(d.delete, vec!["203.0.113.9".parse::<IpNet>().unwrap()]);
    assert_eq!(d.add, vec![el("203.0.113.9", Some(4 * 3600))]);
    let script = render_nft(&d);
    assert!(
        script.find("delete").unwrap() < script.find("add").unwrap(),
        "{script}"
    );
    // A second or two of drift is not a refresh.
    let d = reconcile(
        &desired,
        &[applied("203.0.113.9", Some(4 * 3600 - 1))],
        t0(),
    );
    assert!(d.is_empty());
    // Quarantines are not set elements.
    let q = Decision {
        action: Action::Quarantine {
            node: "web-1".into(),
        },
        ..ban("203.0.113.1", None)
    };
    assert!(reconcile(&[q], &[], t0()).is_empty());
}

#[test]
fn sets_per_family_and_size() {
    let cases = [
        ("203.0.113.9", BanSet::Ban4, "ban4"),
        ("2001:db8::7", BanSet::Ban6, "ban6"),
        ("198.51.100.0/24", BanSet::Ban4Net, "ban4net"),
        ("2001:db8:1::/48", BanSet::Ban6Net, "ban6net"),
        ("203.0.113.9/32", BanSet::Ban4, "ban4"),
        ("2001:db8::7/128", BanSet::Ban6, "ban6"),
        ("::ffff:203.0.113.7", BanSet::Ban4, "ban4"),
        ("::ffff:198.51.100.0/120", BanSet::Ban4Net, "ban4net"),
    ];
    for (s, set, name) in cases {
        let n: IpNet = s.parse().unwrap();
        assert_eq!(BanSet::of(&n), set, "{s}");
        assert_eq!(set.as_str(), name);
    }
    // 100,000 active decisions onto an empty site: one script, chunked statements.
    let desired: Vec<Decision> = (0..100_000u32)
        .map(|i| {
            let a = std::net::Ipv4Addr::from(0x2800_0000u32 + i);
            ban(&a.to_string(), h(1))
        })
        .collect();
    let d = reconcile(&desired, &[], t0());
    assert_eq!(d.add.len(), 100_000);
    let script = render_nft(&d);
    assert_eq!(script.lines().count(), 100_000 / ELEMENTS_PER_STATEMENT);
}

#[test]
fn hostile_addresses_never_reach_nft_text() {
    let hostile = [
        "203.0.113.1 }; flush ruleset; add element inet vacsine_decisions ban4 { 1.2.3.4",
        "203.0.113.1\nflush ruleset",
        "203.0.113.1 timeout 1s",
        "$(reboot)",
        "203.0.113.1/24",
        "203.0.113.1/33",
        "2001:db8::/129",
        "::ffff:1.2.3.4%eth0",
        "203.0.113.1/",
        "",
        "1.2.3",
        "0x7f.1",
    ];
    for h in hostile {
        assert!(h.parse::<IpNet>().is_err(), "{h:?} parsed");
        assert!(
            serde_json::from_str::<IpNet>(&serde_json::to_string(h).unwrap()).is_err(),
            "{h:?}"
        );
    }
    // Whatever parses renders with digits, hex, `.`, `:`, `/` only in the element text.
    let nets = [
        "203.0.113.1",
        "2001:db8::abcd",
        "10.0.0.0/8",
        "fe80::/10",
        "::ffff:10.1.2.3",
    ];
    let d = Diff {
        add: nets.iter().map(|n| el(n, Some(5))).collect(),
        delete: nets.iter().map(|n| n.parse().unwrap()).collect(),
    };
    for line in render_nft(&d).lines() {
        let inner = line.split_once("{ ").unwrap().1.strip_suffix(" }").unwrap();
        for item in inner.split(", ") {
            let addr = item.split(' ').next().unwrap();
            assert!(
                addr.chars()
                    .all(|c| c.is_ascii_hexdigit() || ".:/".contains(c)),
                "{addr:?} in {line:?}"
            );
            let rest = &item[addr.len()..];
            assert!(rest.is_empty() || rest == " timeout 5s", "{item:?}");
        }
    }
}
