//! Issue 16: decisions are signed when they are made, so a row written into the
//! orchestrator's store by someone who can write the database is enforced nowhere. A ban
//! inserted by hand (unsigned, or copied from a signed one and altered) never reaches the
//! site's nft sets (observed from the attacker: its connection to the site's service still
//! succeeds) and is shown `unsigned`; a decision marked deleted by hand stays in effect; an
//! approval inserted by hand cannot be approved and nothing is decided; labels altered by
//! hand count as none. On SQLite, and on PostgreSQL when `VACSINE_TEST_PG` is set (always
//! in CI). Real orchestrator and agent processes; the site a namespace named from the pid.

use super::respond::{Attacker, Listener};
use super::tamper::Store;
use super::{net_tools, text, wait_until, Orch, Site, TestDb};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// The addresses in the site's ban sets, as nft lists them.
fn banned(site: &Site) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", &site.ns, "nft", "list", "table", "inet"])
        .arg("vacsine_decisions")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn decisions(o: &Orch) -> Vec<Value> {
    o.json(&["decisions", "--format", "json"])
        .as_array()
        .unwrap()
        .clone()
}

/// Ban `ip` by hand through the API (an operator's act: signed when made), and wait until it
/// is in the site's set.
fn ban_and_wait(o: &Orch, site: &Site, ip: &str) -> String {
    let v = o.json(&[
        "decisions",
        "add",
        "--ip",
        ip,
        "--for",
        "1h",
        "--format",
        "json",
    ]);
    let id = v["id"].as_str().unwrap().to_string();
    wait_until(
        Duration::from_secs(30),
        "the operator's ban at the site",
        || banned(site).contains(ip).then_some(()),
    );
    id
}

fn hand_written_rows_are_enforced_nowhere(o: &Orch, store: &Store, tag: &str) {
    let d = tempfile::tempdir().unwrap();
    let site = Site::new(tag, 1);
    let atk = Attacker::new(&[(&site, 1)]);
    let web = atk.links[0].clone();
    let _web = Listener::start(&site, 8080);
    let _ag = site.agent(o, "edge-f", &d.path().join("agent"));
    wait_until(
        Duration::from_secs(10),
        "the attacker reaching the site",
        || atk.connects(&web, 8080).then_some(()),
    );
    let net = atk.src.rsplit_once('.').unwrap().0.to_string();
    let (legit, later, last) = (
        format!("{net}.21"),
        format!("{net}.22"),
        format!("{net}.23"),
    );

    // A legitimate ban: signed when the operator made it, in effect at the site.
    let legit_id = ban_and_wait(o, &site, &legit);

    // Two bans of the attacker written into the store by hand: one a copy of the signed row
    // with the address changed (in its body and in its signed form), one with no signed form.
    assert_eq!(
        store.alter(&format!(
            "INSERT INTO decisions (id, body, scope, origin_site, event_ms, decided_ms, expires_ms, signed) \
             SELECT 'forged-altered', replace(body, '{legit}', '{a}'), scope, origin_site, event_ms, decided_ms, expires_ms, \
             replace(signed, '{legit}', '{a}') FROM decisions WHERE id = '{legit_id}'",
            a = atk.src
        )),
        1
    );
    assert_eq!(
        store.alter(&format!(
            "INSERT INTO decisions (id, body, scope, origin_site, event_ms, decided_ms, expires_ms) \
             SELECT 'forged-unsigned', replace(body, '{legit}', '{a}'), scope, origin_site, event_ms, decided_ms, expires_ms \
             FROM decisions WHERE id = '{legit_id}'",
            a = atk.src
        )),
        1
    );
    // The legitimate ban marked deleted by hand (no signed deletion).
    assert_eq!(
        store.alter(&format!(
            "UPDATE decisions SET deleted_ms = decided_ms WHERE id = '{legit_id}'"
        )),
        1
    );

    // A new legitimate decision: the site receives a new set, made while the rows above are
    // in the store.
    ban_and_wait(o, &site, &later);
    let set = banned(&site);
    assert!(
        !set.contains(&atk.src),
        "a ban written into the store by hand is enforced at the site: {set}"
    );
    assert!(
        atk.connects(&web, 8080),
        "the attacker no longer reaches the site's service"
    );
    assert!(
        set.contains(&legit),
        "a deletion written by hand removed the ban: {set}"
    );
    let ds = decisions(o);
    for id in ["forged-altered", "forged-unsigned"] {
        let f = ds
            .iter()
            .find(|x| x["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {ds:?}"));
        assert_eq!(f["state"], "unsigned", "{f}");
        assert!(f["refused"].as_str().is_some_and(|r| !r.is_empty()), "{f}");
    }
    let l = ds.iter().find(|x| x["id"] == legit_id.as_str()).unwrap();
    assert_eq!(l["state"], "active", "{l}");

    // The CrowdSec bouncer API serves the same: signed bans only.
    // (Its own test drives the real bouncer; here the listing is enough.)
    let active = o.json(&["decisions", "--active", "--format", "json"]);
    assert!(
        !active.to_string().contains(&atk.src),
        "a hand-written ban listed active: {active}"
    );

    // An approval written by hand (a quarantine of a node) cannot be approved; nothing is
    // decided.
    let held = serde_json::json!({"decision": {
        "id": "forged-q", "action": {"type": "quarantine", "node": "web-1"},
        "origin": {"response": "quarantine-on-touch", "event_id": "e"},
        "created_at": "2026-12-07T01:00:00Z"}});
    assert_eq!(
        store.alter(&format!(
            "INSERT INTO approvals (id, response, body, scope, site, event_ms, created_ms, expires_ms, state) \
             VALUES ('forged-q', 'quarantine-on-touch', '{held}', '[]', 'edge-f', NULL, 1, 4102444800000, 'awaiting')"
        )),
        1
    );
    let listed = o.json(&["approvals", "--format", "json"]);
    let q = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "forged-q")
        .unwrap_or_else(|| panic!("forged-q not listed: {listed}"));
    assert_eq!(q["state"], "unsigned", "{q}");
    let out = o.cli(&["approve", "forged-q"]);
    assert!(
        !out.status.success(),
        "a hand-written approval was approved: {}",
        text(&out)
    );
    assert!(text(&out).contains("refused"), "{}", text(&out));
    assert!(
        !decisions(o).iter().any(|x| x["id"] == "forged-q"),
        "a decision was made from a hand-written approval"
    );

    // Labels altered by hand count as none.
    o.json(&["site", "label", "edge-f", "tier=dmz", "--format", "json"]);
    assert_eq!(
        store.alter(
            "UPDATE site_labels SET labels = replace(labels, 'dmz', 'web') WHERE site = 'edge-f'"
        ),
        1
    );
    let sites = o.json(&["site", "list", "--format", "json"]);
    let s = sites
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "edge-f")
        .unwrap();
    assert!(
        s["labels"].as_object().is_none_or(|l| l.is_empty()),
        "labels altered by hand were taken: {s}"
    );

    // Still nothing of the above at the site after one more set.
    ban_and_wait(o, &site, &last);
    assert!(!banned(&site).contains(&atk.src));
    assert!(atk.connects(&web, 8080));
}

#[test]
fn issue16_decisions_written_into_the_sqlite_store_by_hand_are_enforced_nowhere() {
    if !net_tools(&["ip", "nft", "python3", "timeout", "sqlite3"]) {
        return;
    }
    let _l = crate::site_lock();
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "0.0.0.0:0", 30_000);
    let store = Store::Sqlite(o.data.join("orchestrator.db"));
    hand_written_rows_are_enforced_nowhere(&o, &store, "fs");
}

#[test]
fn issue16_decisions_written_into_the_postgres_store_by_hand_are_enforced_nowhere() {
    if !net_tools(&["ip", "nft", "python3", "timeout"]) {
        return;
    }
    let Some(db) = TestDb::create("issue16_forged_decisions_on_postgres") else {
        return;
    };
    let _l = crate::site_lock();
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start_on(&d.path().join("orch"), "0.0.0.0:0", 30_000, &db.url);
    let store = Store::Pg(db.url.clone());
    hand_written_rows_are_enforced_nowhere(&o, &store, "fp");
}
