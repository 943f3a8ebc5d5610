use crate::common::sample;
use vacsine_events::{
    matches, parse, Condition, EventKind, Format, Match, ObservableType, Severity,
};

#[test]
fn conditions_select_events_by_kind_severity_observable_and_source() {
    let mut events = parse(Format::Cowrie, &sample("cowrie.jsonl")).events;
    events.extend(parse(Format::Nmap, &sample("nmap.xml")).events);
    let conds = [
        // 0: anything high from a decoy
        Condition {
            min_severity: Some(Severity::High),
            source: Some("cowrie".into()),
            ..Default::default()
        },
        // 1: events with a hash
        Condition {
            observable: Some(ObservableType::Hash),
            ..Default::default()
        },
        // 2: exposures on IPv6 hosts
        Condition {
            kind: Some(EventKind::Vulnerability),
            observable: Some(ObservableType::Ipv6),
            ..Default::default()
        },
        // 3: nothing: no critical events
        Condition {
            min_severity: Some(Severity::Critical),
            ..Default::default()
        },
    ];
    let m = matches(&events, &conds);
    let m: Vec<(usize, usize)> = m
        .iter()
        .map(|Match { event, condition }| (*event, *condition))
        .collect();
    assert_eq!(m, [(2, 0), (3, 0), (4, 0), (4, 1), (7, 2)]);
}

#[test]
fn conditions_are_strict_user_input() {
    let c: Condition =
        serde_json::from_str(r#"{"kind":"indicator","min_severity":"high","observable":"ipv4"}"#)
            .unwrap();
    assert_eq!(c.kind, Some(EventKind::Indicator));
    assert!(serde_json::from_str::<Condition>(r#"{"knd":"indicator"}"#).is_err());
}
