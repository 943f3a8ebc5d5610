//! Issue 17, in process with a real SQLite store: what a site uploads is counted once for
//! `/metrics` and queued once for Loki (labels site/agent/level/kind, ids in the line).

use super::{prepare, Config, Srv};
use crate::store::AgentRow;
use std::sync::Arc;
use vacsine_contract::proto::{ResponseUpload, SiteDecision};
use vacsine_events::{Event, EventKind, Severity};
use vacsine_response::{decision_id, Action, Decision, DecisionOrigin};

async fn srv(dir: &std::path::Path) -> Arc<Srv> {
    let cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        listen_plain: None,
        tls_files: None,
        data: dir.join("orch"),
        lease_ttl_ms: 30_000,
        database: None,
        max_image_bytes: 1 << 20,
        max_connections_per_client: None,
        retention: Default::default(),
        metrics_listen: None,
        loki: Some(crate::loki::LokiConfig {
            url: "http://127.0.0.1:9".into(),
            buffer: 100,
            batch: 10,
            spool: dir.join("spool.jsonl"),
        }),
        taxii: Vec::new(),
        bouncer_listen: None,
    };
    prepare(&cfg).await.unwrap().srv
}

fn upload() -> ResponseUpload {
    let t = chrono::DateTime::from_timestamp_millis(1_796_000_000_000).unwrap();
    let mut e = Event::new(
        EventKind::Incident,
        "suricata",
        t,
        Severity::High,
        "scan from 203.0.113.7".into(),
    );
    e.id = e.content_id();
    let action = Action::Ban {
        net: "203.0.113.7".parse().unwrap(),
    };
    let d = Decision {
        id: decision_id("ban-scanners", &e.id, &action),
        action,
        expires_at: None,
        origin: DecisionOrigin {
            site: Some("edge".into()),
            response: "ban-scanners".into(),
            event_id: e.id.clone(),
        },
        created_at: t,
    };
    ResponseUpload {
        events: vec![e],
        decisions: vec![SiteDecision {
            decision: d,
            event_ms: Some(1_796_000_000_000),
            decided_ms: 1_796_000_000_040,
            applied_ms: Some(1_796_000_000_250),
        }],
    }
}

#[tokio::test]
async fn issue17_uploaded_events_and_decisions_are_counted_and_queued_for_loki_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = srv(dir.path()).await;
    s.store.create_site("edge", "h", 0).await.unwrap();
    let agent = AgentRow {
        id: "a1".into(),
        site: "edge".into(),
        name: "edge-1".into(),
        public_key: "k".into(),
        version: "t".into(),
        enrolled_ms: 0,
        last_seen_ms: 0,
        revoked_ms: None,
    };
    s.store.enroll_agent(&agent).await.unwrap();
    let up = upload();
    for _ in 0..2 {
        // The second upload is the same (an outbox retry): nothing counted nor queued again.
        s.responses_upload(&agent, &up).await.unwrap();
        let text = s.metrics.encode();
        for line in [
            "vacsine_events_total 1",
            "vacsine_decisions_total{origin=\"site\"} 1",
            "vacsine_decisions_applied_total 1",
            "vacsine_time_to_mitigate_seconds_count 1",
            "vacsine_time_to_mitigate_seconds_sum 0.25",
            "vacsine_loki_buffered 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
    // The lines as queued: in the spool file, in order, before any push.
    assert_eq!(s.loki.as_ref().unwrap().backlog(), 2);
    let spool = dir.path().join("spool.jsonl");
    let lines: Vec<crate::loki::Line> = std::fs::read_to_string(&spool)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let ev = &lines[0];
    assert_eq!(
        (
            ev.site.as_str(),
            ev.agent.as_str(),
            ev.level.as_str(),
            ev.kind.as_str()
        ),
        ("edge", "edge-1", "error", "event")
    );
    assert_eq!(ev.ts_ns, 1_796_000_000_000_000_000, "the event's own time");
    assert!(
        ev.line.contains(&up.events[0].id),
        "the event id is in the line"
    );
    let dl = &lines[1];
    assert_eq!(dl.kind, "decision");
    assert_eq!(
        dl.ts_ns, 1_796_000_000_040_000_000,
        "the decision's own time"
    );
    assert!(dl.line.contains(&up.decisions[0].decision.id));
}
