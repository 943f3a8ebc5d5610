use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, TimeZone, Utc};
use vacsine_core::SourceFile;
use vacsine_events::{Event, EventKind, Observable, Severity};
use vacsine_response::{load, AllowList, Context, Decider, EventOrigin, Rule};

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap()
}

pub fn rule(yaml: &str) -> Rule {
    match load(&SourceFile::new("test.yaml", yaml)) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// A Response document with `spec` lines given (indented by two spaces already).
pub fn doc(name: &str, spec: &str) -> String {
    format!("apiVersion: vacsine.io/v1\nkind: Response\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

pub const BAN_SPEC: &str =
    "  on:\n    events: [indicator]\n  decide:\n    ban:\n      for: 4h\n  mode: autonomous\n";

/// An indicator event from a decoy about these addresses/networks, at `t0() + secs`.
pub fn hit(addrs: &[&str], secs: i64) -> Event {
    let mut e = Event::new(
        EventKind::Indicator,
        "opencanary",
        t0() + chrono::TimeDelta::seconds(secs),
        Severity::High,
        "decoy touched".into(),
    );
    for a in addrs {
        e.observe(Observable::parse_ip_or_cidr(a).unwrap());
    }
    e.node = Some("web-1".into());
    e.seal()
}

pub struct Cx {
    pub labels: BTreeMap<String, String>,
    pub allow: AllowList,
}

impl Cx {
    pub fn new() -> Cx {
        Cx {
            labels: BTreeMap::new(),
            allow: AllowList {
                site_addresses: vec!["192.0.2.10".parse().unwrap()],
                orchestrator_addresses: vec!["2001:db8:ffff::1".parse::<IpAddr>().unwrap()],
                networks: vec!["10.20.0.0/16".parse().unwrap()],
                nodes: vec!["gateway".into()],
            },
        }
    }

    pub fn at(&self, now: DateTime<Utc>, decider: Decider) -> Context<'_> {
        Context {
            now,
            site: "edge-a",
            site_labels: &self.labels,
            decider,
            allow: &self.allow,
            origin: EventOrigin::External,
        }
    }
}
