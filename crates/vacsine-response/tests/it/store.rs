//! The agent store: idempotent events and decisions, outcomes recorded with their reason,
//! upload keys, retention, windows across a restart, mode 0600.

use std::os::unix::fs::PermissionsExt;

use chrono::TimeDelta;
use vacsine_response::store::UploadKind;
use vacsine_response::{decide, Decider, DecisionState, Store, Verdict, Windows};

use crate::common::{doc, hit, rule, t0, Cx, BAN_SPEC};

fn open() -> (tempfile::TempDir, std::path::PathBuf, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    let s = Store::open(&path).unwrap();
    (dir, path, s)
}

#[test]
fn file_is_private_and_in_wal_mode() {
    let (_d, path, _s) = open();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let c = rusqlite_mode(&path);
    assert_eq!(c, "wal");
}

fn rusqlite_mode(path: &std::path::Path) -> String {
    // Read the header: WAL mode sets bytes 18 and 19 of the file header to 2.
    let bytes = std::fs::read(path).unwrap();
    if bytes.len() > 19 && bytes[18] == 2 && bytes[19] == 2 {
        "wal".into()
    } else {
        format!("{:?}", bytes.get(18..20))
    }
}

#[test]
fn events_and_decisions_are_idempotent_and_outcomes_recorded() {
    let (_d, path, mut s) = open();
    let rules = [rule(&doc(
        "ban",
        &format!("{BAN_SPEC}  dedupe:\n    key: address\n    window: 10m\n"),
    ))];
    let cx = Cx::new();
    let mut w = Windows::default();
    let events: Vec<_> = (0..50).map(|i| hit(&["203.0.113.9"], i)).collect();
    assert_eq!(s.insert_events(&events, t0()).unwrap(), 50);
    // The same events again (a retry after a crash): nothing doubled.
    assert_eq!(s.insert_events(&events, t0()).unwrap(), 0);
    for e in &events {
        let out = decide(&rules, e, &cx.at(e.time, Decider::Site), &mut w);
        s.record(e, &out, e.time).unwrap();
        s.record(e, &out, e.time).unwrap();
    }
    let allowed = hit(&["192.0.2.10"], 0);
    let out = decide(&rules, &allowed, &cx.at(t0(), Decider::Site), &mut w);
    s.insert_events(std::slice::from_ref(&allowed), t0())
        .unwrap();
    s.record(&allowed, &out, t0()).unwrap();
    assert_eq!(s.counts().unwrap(), (51, 51, 1));
    assert_eq!(
        s.outcomes_of(&events[0].id).unwrap(),
        [(Some("ban".into()), "matched".into())]
    );
    assert_eq!(
        s.outcomes_of(&events[1].id).unwrap(),
        [(Some("ban".into()), "deduplicated".into())]
    );
    assert_eq!(
        s.outcomes_of(&allowed.id).unwrap(),
        [(Some("ban".into()), "allow_listed".into())]
    );

    // The decision, its times, and the state machine.
    let active = s.active(t0()).unwrap();
    assert_eq!(active.len(), 1);
    let id = active[0].id.clone();
    assert!(!s.insert_decision(&active[0], None).unwrap());
    let applied = t0() + TimeDelta::milliseconds(40);
    assert!(s.mark_applied(&id, applied).unwrap());
    assert!(!s
        .mark_applied(&id, applied + TimeDelta::seconds(1))
        .unwrap());
    s.mark_verified(&id, applied + TimeDelta::milliseconds(5))
        .unwrap();
    let d = s.decision(&id).unwrap().unwrap();
    assert_eq!(d.state, DecisionState::Active);
    assert_eq!(d.event_at, Some(events[0].time));
    assert_eq!(d.decided_at, t0());
    assert_eq!(d.applied_at, Some(applied));
    assert_eq!(d.verified_at, Some(applied + TimeDelta::milliseconds(5)));
    // Expiry after 4 h.
    assert_eq!(s.expire(t0() + TimeDelta::hours(3)).unwrap(), 0);
    assert_eq!(s.expire(t0() + TimeDelta::hours(4)).unwrap(), 1);
    assert!(s.active(t0() + TimeDelta::hours(4)).unwrap().is_empty());
    assert_eq!(
        s.decision(&id).unwrap().unwrap().state,
        DecisionState::Expired
    );

    // Windows survive a restart of the agent: the burst goes on deduplicated.
    s.save_windows(&w).unwrap();
    drop(s);
    let s = Store::open(&path).unwrap();
    let mut w2 = s.load_windows().unwrap();
    assert_eq!(w2, w);
    let e = hit(&["203.0.113.9"], 100);
    let out = decide(&rules, &e, &cx.at(e.time, Decider::Site), &mut w2);
    assert!(matches!(out[0].verdict, Verdict::Deduplicated { .. }));
}

#[test]
fn uploads_have_keys_and_retention_keeps_what_is_not_uploaded() {
    let (_d, _p, mut s) = open();
    let rules = [rule(&doc("ban", BAN_SPEC))];
    let cx = Cx::new();
    let events: Vec<_> = (0..10)
        .map(|i| hit(&[&format!("203.0.113.{i}")], i))
        .collect();
    s.insert_events(&events, t0()).unwrap();
    for e in &events {
        let out = decide(
            &rules,
            e,
            &cx.at(t0(), Decider::Site),
            &mut Windows::default(),
        );
        s.record(e, &out, t0()).unwrap();
    }
    let up = s.pending(1000).unwrap();
    let count = |k: UploadKind| up.iter().filter(|u| u.kind == k).count();
    assert_eq!(
        (
            count(UploadKind::Event),
            count(UploadKind::Outcome),
            count(UploadKind::Decision)
        ),
        (10, 10, 10)
    );
    let keys: std::collections::BTreeSet<_> = up.iter().map(|u| u.key.clone()).collect();
    assert_eq!(keys.len(), 30, "upload keys are unique");
    assert!(up
        .iter()
        .any(|u| u.key == format!("event:{}", events[0].id)));
    // Bounded pages.
    assert_eq!(s.pending(7).unwrap().len(), 7);
    // Acknowledge everything but the first event's row; a second ack changes nothing.
    let acked: Vec<String> = up
        .iter()
        .map(|u| u.key.clone())
        .filter(|k| *k != format!("event:{}", events[0].id))
        .collect();
    assert_eq!(s.mark_uploaded(&acked, t0()).unwrap(), 29);
    assert_eq!(s.mark_uploaded(&acked, t0()).unwrap(), 0);
    assert_eq!(s.pending(1000).unwrap().len(), 1);
    // A decision changed after its upload is sent again under a new key.
    let id = s.active(t0()).unwrap()[0].id.clone();
    s.mark_applied(&id, t0()).unwrap();
    let again = s.pending(1000).unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().any(|u| u.key == format!("decision:{id}:2")));
    // An ack of the old revision does not hide the new one.
    s.mark_uploaded(&[format!("decision:{id}:1")], t0())
        .unwrap();
    assert_eq!(s.pending(1000).unwrap().len(), 2);
    // Retention: uploaded rows older than the cutoff go; the unacknowledged event and every
    // active decision stay.
    let removed = s.retain(t0() + TimeDelta::seconds(1)).unwrap();
    assert_eq!(removed, 9 + 10);
    assert_eq!(s.counts().unwrap(), (1, 0, 10));
    s.expire(t0() + TimeDelta::hours(5)).unwrap();
    let keys: Vec<String> = s
        .pending(1000)
        .unwrap()
        .into_iter()
        .map(|u| u.key)
        .collect();
    s.mark_uploaded(&keys, t0() + TimeDelta::hours(5)).unwrap();
    s.retain(t0() + TimeDelta::hours(6)).unwrap();
    assert_eq!(s.counts().unwrap(), (0, 0, 0));
}

#[test]
fn hostile_content_is_stored_as_data_and_the_wal_is_private() {
    let (_d, path, mut s) = open();
    let rules = [rule(&doc("ban", BAN_SPEC))];
    let cx = Cx::new();
    let mut e = hit(&["203.0.113.66"], 0);
    e.summary = "x'); DROP TABLE events; -- $(reboot) `id` \u{0}".into();
    e.field("logdata.USERNAME", "root\"; rm -rf / #");
    let e = e.seal();
    let out = decide(
        &rules,
        &e,
        &cx.at(t0(), Decider::Site),
        &mut Windows::default(),
    );
    assert_eq!(s.ingest(&[(e.clone(), out.clone())], t0()).unwrap(), 1);
    assert_eq!(s.ingest(&[(e.clone(), out.clone())], t0()).unwrap(), 0);
    assert_eq!(s.counts().unwrap(), (1, 1, 1));
    let up = s.pending(10).unwrap();
    let ev: vacsine_events::Event = serde_json::from_str(&up[0].body).unwrap();
    assert_eq!(ev, e);
    let o: vacsine_response::Outcome = serde_json::from_str(&up[1].body).unwrap();
    assert_eq!(o, out[0]);
    for f in [
        path.clone(),
        path.with_extension("db-wal"),
        path.with_extension("db-shm"),
    ] {
        if let Ok(m) = std::fs::metadata(&f) {
            assert_eq!(
                m.permissions().mode() & 0o077,
                0,
                "{f:?} readable by others"
            );
        }
    }
    assert!(std::fs::metadata(path.with_extension("db-wal")).is_ok());
}

/// A quarantine carried out here is released once its decision is lifted (deleted or
/// expired), once; an active one and one never carried out here are not.
#[test]
fn a_lifted_quarantine_is_released_once() {
    use vacsine_response::{decision_id, Action, Decision, DecisionOrigin};
    let (_d, _path, mut s) = open();
    let q = |node: &str, expires: Option<chrono::DateTime<chrono::Utc>>| {
        let action = Action::Quarantine { node: node.into() };
        Decision {
            id: decision_id("q", node, &action),
            action,
            expires_at: expires,
            origin: DecisionOrigin {
                site: None,
                response: "q".into(),
                event_id: node.into(),
            },
            created_at: t0(),
        }
    };
    let (deleted, expiring, active, never_ran) = (
        q("web-1", None),
        q("web-2", Some(t0() + TimeDelta::minutes(5))),
        q("web-3", None),
        q("web-4", None),
    );
    for d in [&deleted, &expiring, &active, &never_ran] {
        s.insert_decision(d, None).unwrap();
    }
    for (d, run) in [(&deleted, "r1"), (&expiring, "r2"), (&active, "r3")] {
        s.record_quarantine_run(&d.id, run).unwrap();
    }
    assert!(s.lifted_quarantines(t0()).unwrap().is_empty());
    s.mark_deleted(&deleted.id, t0()).unwrap();
    s.mark_deleted(&never_ran.id, t0()).unwrap();
    let later = t0() + TimeDelta::minutes(10);
    let mut lifted: Vec<(String, String)> = s
        .lifted_quarantines(later)
        .unwrap()
        .into_iter()
        .map(|(d, r)| (d.id, r))
        .collect();
    lifted.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        lifted,
        vec![
            (deleted.id.clone(), "r1".into()),
            (expiring.id.clone(), "r2".into())
        ]
    );
    assert!(s.mark_released(&deleted.id, later).unwrap());
    assert!(
        !s.mark_released(&deleted.id, later).unwrap(),
        "released twice"
    );
    assert_eq!(s.lifted_quarantines(later).unwrap().len(), 1);
}
