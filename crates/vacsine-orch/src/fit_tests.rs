//! The orchestrator's own records go through [`vacsine_contract::fit`] into its store.

use serde_json::Value;
use vacsine_contract::fit::{stored_record, MAX_STORED_RECORD};
use vacsine_core::record::StepRecord;

fn record() -> StepRecord {
    let mut r = StepRecord::started(
        "run-1",
        "big",
        1,
        Some("site-a"),
        "command",
        "2026-01-01T00:00:00.000Z".into(),
    );
    r.status = vacsine_core::record::StepStatus::Succeeded;
    r.finished_at = Some(r.started_at.clone());
    r
}

/// Issue 19: the orchestrator's own record of a step with a huge output goes into the
/// store (a real one), cut and marked, and reads back as a step record.
#[tokio::test]
async fn a_huge_record_of_the_orchestrator_is_stored_cut_and_marked() {
    use crate::store::{status, RunRow, SqliteStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("o.db")).unwrap();
    store
        .create_run(&RunRow {
            id: "run-1".into(),
            site: "edge".into(),
            workflow: "w".into(),
            request: "{}".into(),
            status: status::RUNNING.into(),
            agent_id: Some("orchestrator".into()),
            lease_expires_ms: None,
            offers: 0,
            created_ms: 0,
            started_ms: Some(0),
            finished_ms: None,
            message: None,
            records: 0,
            site_outcome: None,
        })
        .await
        .unwrap();
    let mut r = record();
    r.outputs
        .insert("dump".into(), Value::String("x".repeat(64 << 20)));
    let body = stored_record(&r);
    assert!(body.len() <= MAX_STORED_RECORD);
    let st = store
        .add_records("run-1", "orchestrator", &[("big#1".into(), body)], 1)
        .await
        .unwrap();
    assert_eq!(st.stored, 1);
    let back = store.records("run-1", 0).await.unwrap();
    assert_eq!(back.len(), 1);
    let rec: StepRecord = serde_json::from_str(&back[0].1).unwrap();
    assert!(rec.outputs["dump"]
        .as_str()
        .unwrap()
        .ends_with("bytes cut by the vacsine orchestrator to fit the store's record limit; the whole text is in its journal of runs spanning sites (spanning.db)]"));
}
