//! One test suite for every store: SQLite always; PostgreSQL when `VACSINE_TEST_PG` names a
//! server (`postgres://USER@HOST:PORT/DB`), each test in a schema of its own, dropped when it
//! passes. Without it the PostgreSQL tests say they are skipped, unless `CI` is set: then they
//! fail, so CI cannot silently not run them.

use super::*;
use std::collections::HashSet;
use std::sync::Arc;

/// A fresh store, and a second handle on the same data (another replica for PostgreSQL; the
/// same handle for SQLite, which one process uses).
struct Fixture {
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
    pg: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("o.db")).unwrap());
    Fixture {
        b: a.clone(),
        a,
        pg: None,
        _dir: Some(dir),
    }
}

/// The PostgreSQL server for tests, or `None` (skipped) when none is given outside CI.
pub(super) fn test_pg_url(test: &str) -> Option<String> {
    match std::env::var("VACSINE_TEST_PG") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => panic!(
            "{test}: VACSINE_TEST_PG is not set and CI is: CI must run the PostgreSQL store tests (.ci/run starts a server and sets it)"
        ),
        _ => {
            eprintln!(
                "skipped {test} on PostgreSQL: set VACSINE_TEST_PG=postgres://USER@127.0.0.1:5432/DB to run it"
            );
            None
        }
    }
}

/// A schema name of its own for `test`.
pub(super) fn test_schema(test: &str) -> String {
    let tag: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(24)
        .collect();
    let rnd: String = vacsine_wire::random_bytes::<4>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t_{}_{rnd}", tag.to_ascii_lowercase())
}

pub(super) async fn drop_schema(url: &str, schema: &str) {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let h = tokio::spawn(conn);
    c.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
    drop(c);
    let _ = h.await;
}

async fn pg_fixture(test: &str) -> Option<Fixture> {
    let url = test_pg_url(test)?;
    let schema = test_schema(test);
    let a = PgStore::connect_schema(&url, &schema)
        .await
        .unwrap_or_else(|e| panic!("{test}: PostgreSQL at {}: {e}", mask_url(&url)));
    let b = PgStore::connect_schema(&url, &schema).await.unwrap();
    Some(Fixture {
        a: Arc::new(a),
        b: Arc::new(b),
        pg: Some((url, schema)),
        _dir: None,
    })
}

impl Fixture {
    async fn done(self) {
        if let Some((url, schema)) = &self.pg {
            drop(self.a);
            drop(self.b);
            drop_schema(url, schema).await;
        }
    }
}

/// Each test once per store: `sqlite::NAME` and `postgres::NAME`.
macro_rules! suite {
    ($($t:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $t() {
                    let f = super::sqlite_fixture();
                    super::$t(&f).await;
                    f.done().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $t() {
                    let Some(f) = super::pg_fixture(stringify!($t)).await else { return };
                    super::$t(&f).await;
                    f.done().await;
                }
            )*
        }
    };
}

suite!(
    leases_expire_into_reoffer_or_visible_failure,
    records_are_stored_once_per_key_and_only_from_the_runs_agent,
    revoking_a_site_revokes_its_agents_and_its_intake_key,
    enrolling_a_live_agent_name_twice_is_a_conflict_until_it_is_revoked,
    two_replicas_asking_at_once_never_lease_one_run_twice,
    sweeps_on_two_replicas_handle_each_expired_lease_once,
    records_follow_in_order_and_a_reader_resuming_misses_none,
    a_report_is_kept_only_from_the_agent_holding_the_run,
    a_runs_signed_job_is_kept_once_and_read_back_as_signed,
    a_push_makes_a_new_version_only_when_the_content_changed,
    a_run_driven_by_the_orchestrator_never_expires_and_queued_steps_can_be_cancelled,
    an_idempotency_key_is_claimed_once_and_keeps_its_first_answer,
    an_agents_outbox_report_replaces_the_one_before,
    retention_removes_exactly_the_planned_ended_runs_and_never_an_active_one,
    runs_are_listed_a_page_at_a_time_newest_first_with_filters,
    issue16_events_decisions_and_applications_are_kept_once,
    issue17_metric_counts_are_runs_by_status_and_agents_online,
    issue16_a_feed_position_is_kept_and_moved_across_replicas,
    issue16_an_approval_is_kept_once_settled_once_and_never_after_its_expiry,
    issue16_a_bouncer_name_is_kept_once_with_what_it_was_last_given,
    issue17_console_users_sessions_and_revocation_ending_sessions,
    issue17_an_assessment_is_kept_once_with_its_changes_as_history,
);

fn console_user(name: &str, role: &str, at: i64) -> UserRow {
    UserRow {
        name: name.into(),
        role: role.into(),
        token_hash: format!("sha256:{name}-{at}"),
        created_ms: at,
        revoked_ms: None,
    }
}

fn console_session(id: &str, user: &str, at: i64, ttl: i64) -> SessionRow {
    SessionRow {
        id_hash: format!("sha256:{id}"),
        user: user.into(),
        csrf: format!("csrf-{id}"),
        created_ms: at,
        expires_ms: at + ttl,
    }
}

async fn issue17_console_users_sessions_and_revocation_ending_sessions(f: &Fixture) {
    let (a, b) = (&*f.a, &*f.b);
    assert!(a
        .put_user(&console_user("alice", "operator", 1))
        .await
        .unwrap());
    assert!(a.put_user(&console_user("bob", "viewer", 2)).await.unwrap());
    // A live name is not taken twice (the first token stays valid).
    assert!(!b
        .put_user(&console_user("alice", "admin", 3))
        .await
        .unwrap());
    let users = b.users().await.unwrap();
    assert_eq!(
        users
            .iter()
            .map(|u| (u.name.as_str(), u.role.as_str()))
            .collect::<Vec<_>>(),
        [("alice", "operator"), ("bob", "viewer")]
    );
    let alice = b.user_by_token("sha256:alice-1").await.unwrap().unwrap();
    assert_eq!(alice.role, "operator");
    assert!(b.user_by_token("sha256:alice-3").await.unwrap().is_none());
    // Sessions: read from the other handle, expired ones not given.
    a.put_session(&console_session("s1", "alice", 10, 1000), 10)
        .await
        .unwrap();
    a.put_session(&console_session("s2", "alice", 10, 1000), 10)
        .await
        .unwrap();
    a.put_session(&console_session("s3", "bob", 10, 5), 10)
        .await
        .unwrap();
    let (s, u) = b.session("sha256:s1", 20).await.unwrap().unwrap();
    assert_eq!(
        (s.user.as_str(), s.csrf.as_str(), u.role.as_str()),
        ("alice", "csrf-s1", "operator")
    );
    assert!(
        b.session("sha256:s3", 15).await.unwrap().is_none(),
        "expired"
    );
    assert!(b.session("sha256:nope", 20).await.unwrap().is_none());
    // Logout ends one session.
    assert!(b.delete_session("sha256:s2").await.unwrap());
    assert!(!b.delete_session("sha256:s2").await.unwrap());
    assert!(a.session("sha256:s2", 20).await.unwrap().is_none());
    // Revoking a user ends every session of theirs, and their token.
    a.put_session(&console_session("s4", "alice", 30, 1000), 30)
        .await
        .unwrap();
    assert_eq!(b.revoke_user("alice", 40).await.unwrap(), Some(2));
    assert_eq!(
        b.revoke_user("alice", 41).await.unwrap(),
        None,
        "revoked already"
    );
    assert_eq!(b.revoke_user("carol", 41).await.unwrap(), None, "unknown");
    assert!(a.session("sha256:s1", 50).await.unwrap().is_none());
    assert!(a.session("sha256:s4", 50).await.unwrap().is_none());
    assert!(a.user_by_token("sha256:alice-1").await.unwrap().is_none());
    let revoked = a.users().await.unwrap();
    assert_eq!(revoked[0].revoked_ms, Some(40));
    // Bob's session is not touched... (expired here, so a fresh one).
    a.put_session(&console_session("s5", "bob", 60, 1000), 60)
        .await
        .unwrap();
    assert!(b.session("sha256:s5", 61).await.unwrap().is_some());
    // A revoked name may be given again: new role, new token; the old token stays refused.
    assert!(a
        .put_user(&console_user("alice", "viewer", 70))
        .await
        .unwrap());
    assert!(b.user_by_token("sha256:alice-1").await.unwrap().is_none());
    let again = b.user_by_token("sha256:alice-70").await.unwrap().unwrap();
    assert_eq!((again.role.as_str(), again.revoked_ms), ("viewer", None));
    // A session made for a user that is not there is refused by the store.
    assert!(a
        .put_session(&console_session("s6", "nobody", 80, 1000), 80)
        .await
        .is_err());
}

async fn issue17_metric_counts_are_runs_by_status_and_agents_online(f: &Fixture) {
    let s = f.a.as_ref();
    with_agents(s).await;
    s.enroll_agent(&agent("a3", "a3")).await.unwrap();
    s.touch_agent("a1", 5_000).await.unwrap();
    s.touch_agent("a3", 5_000).await.unwrap();
    s.revoke_agent("edge", "a3", 6_000).await.unwrap();
    ended_run(s, "e1", "edge", 10, 1, 20).await;
    for (i, id) in ["q1", "q2", "q3"].iter().enumerate() {
        s.create_run(&run(id, 30 + i as i64)).await.unwrap();
    }
    let c = s.metric_counts(4_000).await.unwrap();
    let mut runs = c.runs.clone();
    runs.sort();
    assert_eq!(
        runs,
        vec![
            (status::QUEUED.to_string(), 3),
            (status::SUCCEEDED.to_string(), 1)
        ]
    );
    // a1 seen since 4 s, a2 not, a3 revoked.
    assert_eq!((c.agents_online, c.agents), (1, 2));
}

async fn issue16_an_approval_is_kept_once_settled_once_and_never_after_its_expiry(f: &Fixture) {
    let (s, b) = (&*f.a, &*f.b);
    let row = |id: &str, expires_ms: i64| ApprovalRow {
        id: id.into(),
        response: "q".into(),
        body: "{}".into(),
        scope: "[]".into(),
        site: "edge-a".into(),
        event_ms: Some(1),
        created_ms: 2,
        expires_ms,
        state: "awaiting".into(),
        settled_ms: None,
        signed: Some(format!("signed-{id}")),
    };
    assert!(s.put_approval(&row("a1", 100)).await.unwrap());
    assert_eq!(
        b.approvals().await.unwrap()[0].signed.as_deref(),
        Some("signed-a1"),
        "the signed form is kept as given"
    );
    assert!(
        !b.put_approval(&row("a1", 100)).await.unwrap(),
        "kept twice"
    );
    assert!(s.put_approval(&row("a2", 100)).await.unwrap());
    assert!(s.put_approval(&row("a3", 50)).await.unwrap());
    // Two replicas settling at once: one wins, the state does not change after.
    let (x, y) = tokio::join!(
        s.settle_approval("a1", "approved", 10),
        b.settle_approval("a1", "denied", 10)
    );
    assert!(x.unwrap() ^ y.unwrap(), "settled twice or never");
    assert!(!s.settle_approval("a1", "denied", 11).await.unwrap());
    assert!(s.settle_approval("a2", "denied", 10).await.unwrap());
    // Past its expiry: never settled.
    assert!(!s.settle_approval("a3", "approved", 50).await.unwrap());
    let all = b.approvals().await.unwrap();
    let st: Vec<(&str, &str)> = all
        .iter()
        .map(|a| (a.id.as_str(), a.state.as_str()))
        .collect();
    assert_eq!(st.len(), 3);
    assert!(
        st.contains(&("a2", "denied")) && st.contains(&("a3", "awaiting")),
        "{st:?}"
    );
    assert!(all.iter().find(|a| a.id == "a1").unwrap().settled_ms == Some(10));
    // Labels: replaced as a whole, read from either replica.
    s.set_site_labels("edge-a", r#"{"tier":"dmz"}"#)
        .await
        .unwrap();
    b.set_site_labels("edge-a", r#"{"tier":"core"}"#)
        .await
        .unwrap();
    assert_eq!(
        s.site_labels().await.unwrap(),
        vec![("edge-a".to_string(), r#"{"tier":"core"}"#.to_string())]
    );
}

async fn with_agents(s: &dyn Store) {
    s.create_site("edge", "h1", 0).await.unwrap();
    for id in ["a1", "a2"] {
        s.enroll_agent(&agent(id, id)).await.unwrap();
    }
}

fn agent(id: &str, name: &str) -> AgentRow {
    AgentRow {
        id: id.into(),
        site: "edge".into(),
        name: name.into(),
        public_key: "k".into(),
        version: "t".into(),
        enrolled_ms: 0,
        last_seen_ms: 0,
        revoked_ms: None,
    }
}

fn run(id: &str, at: i64) -> RunRow {
    RunRow {
        id: id.into(),
        site: "edge".into(),
        workflow: "w".into(),
        request: "{}".into(),
        status: status::QUEUED.into(),
        agent_id: None,
        lease_expires_ms: None,
        offers: 0,
        created_ms: at,
        started_ms: None,
        finished_ms: None,
        message: None,
        records: 0,
        site_outcome: None,
    }
}

async fn leases_expire_into_reoffer_or_visible_failure(f: &Fixture) {
    let s = &*f.a;
    with_agents(s).await;
    s.create_run(&run("r1", 1)).await.unwrap();
    s.create_run(&run("r2", 2)).await.unwrap();
    // Oldest first, each to one agent.
    let l1 = s.lease_next("edge", "a1", 10, 100).await.unwrap().unwrap();
    let l2 = s.lease_next("edge", "a2", 10, 100).await.unwrap().unwrap();
    assert_eq!((l1.id.as_str(), l2.id.as_str()), ("r1", "r2"));
    assert!(s.lease_next("edge", "a1", 10, 100).await.unwrap().is_none());
    // r2 got a record; renewal keeps only the agent's own leases.
    let rec = vec![("k1".to_string(), "{}".to_string())];
    s.add_records("r2", "a2", &rec, 20).await.unwrap();
    assert_eq!(
        s.renew("a1", &["r1".into(), "r2".into()], 50, 100)
            .await
            .unwrap(),
        vec!["r1".to_string()]
    );
    // Nothing expires before its time.
    assert!(s.expire_leases(109).await.unwrap().is_empty());
    let e = s.expire_leases(111).await.unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].run_id.as_str(), e[0].now_status.as_str()),
        ("r2", "failed")
    );
    let r2 = s.run("r2").await.unwrap().unwrap();
    assert!(r2.message.as_deref().unwrap().contains("1 step record"));
    assert!(r2.finished_ms.is_some());
    assert_eq!(r2.site_outcome, None);
    // Issue 15: the agent, cut off past its lease, ends the run itself later: not taken, kept
    // beside the run's end (the first such end only; another agent's never).
    assert!(!s
        .finish_run("r2", "a1", "succeeded", Some("not mine"), 115)
        .await
        .unwrap());
    assert_eq!(s.run("r2").await.unwrap().unwrap().site_outcome, None);
    assert!(!s
        .finish_run("r2", "a2", "succeeded", Some("every step ran"), 120)
        .await
        .unwrap());
    assert!(!s
        .finish_run("r2", "a2", "failed", Some("again"), 130)
        .await
        .unwrap());
    let late = f.b.run("r2").await.unwrap().unwrap();
    assert_eq!(
        (late.status.as_str(), late.message.as_deref()),
        ("failed", r2.message.as_deref()),
        "the run's own end stands"
    );
    assert_eq!(
        late.site_outcome,
        Some(SiteOutcome {
            status: "succeeded".into(),
            message: Some("every step ran".into()),
            reported_ms: 120,
        })
    );
    let e = s.expire_leases(151).await.unwrap();
    assert_eq!(e[0].now_status, "queued", "r1 had no record: re-offered");
    let r1 = s.run("r1").await.unwrap().unwrap();
    assert_eq!((r1.status.as_str(), r1.agent_id), ("queued", None));
    // Re-offered at most MAX_OFFERS times, then failed.
    for n in 2..=MAX_OFFERS {
        let l = s.lease_next("edge", "a2", 200, 10).await.unwrap().unwrap();
        assert_eq!(l.offers, n);
        let e = s.expire_leases(211 + n).await.unwrap();
        let want = if n < MAX_OFFERS { "queued" } else { "failed" };
        assert_eq!(e[0].now_status, want);
        // A late finish by the agent that lost the lease is not taken.
        assert!(!s
            .finish_run("r1", "a2", "succeeded", None, 300)
            .await
            .unwrap());
    }
}

async fn records_are_stored_once_per_key_and_only_from_the_runs_agent(f: &Fixture) {
    let s = &*f.a;
    with_agents(s).await;
    s.create_run(&run("r1", 1)).await.unwrap();
    s.lease_next("edge", "a1", 10, 100).await.unwrap().unwrap();
    let recs = vec![
        ("x/1".to_string(), "{\"n\":1}".to_string()),
        ("y/1".to_string(), "{\"n\":2}".to_string()),
    ];
    let a = s.add_records("r1", "a1", &recs, 20).await.unwrap();
    let b = s.add_records("r1", "a1", &recs, 21).await.unwrap();
    assert_eq!(
        (a.stored, a.duplicates, b.stored, b.duplicates),
        (2, 0, 0, 2)
    );
    assert!(matches!(
        s.add_records("r1", "a2", &recs, 22).await,
        Err(StoreError::Forbidden(_))
    ));
    assert!(matches!(
        s.add_records("nope", "a1", &recs, 22).await,
        Err(StoreError::NotFound(_))
    ));
    let got = s.records("r1", 0).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(s.records("r1", got[0].0).await.unwrap().len(), 1);
    assert!(s
        .finish_run("r1", "a1", "succeeded", None, 30)
        .await
        .unwrap());
    assert_eq!(s.run("r1").await.unwrap().unwrap().records, 2);
}

async fn a_report_is_kept_only_from_the_agent_holding_the_run(f: &Fixture) {
    let s = &*f.a;
    with_agents(s).await;
    s.create_run(&run("r1", 1)).await.unwrap();
    assert!(
        !s.set_report("r1", "a1", "{}", 5).await.unwrap(),
        "queued: nobody holds it"
    );
    s.lease_next("edge", "a1", 10, 100).await.unwrap().unwrap();
    assert!(!s.set_report("r1", "a2", "{\"x\":0}", 11).await.unwrap());
    assert!(s.report("r1").await.unwrap().is_none());
    assert!(s.set_report("r1", "a1", "{\"x\":1}", 12).await.unwrap());
    // Sent again (an upload retried): the last one is kept, once; another replica sees it.
    assert!(s.set_report("r1", "a1", "{\"x\":2}", 13).await.unwrap());
    assert_eq!(
        f.b.report("r1").await.unwrap().as_deref(),
        Some("{\"x\":2}")
    );
    assert!(s
        .finish_run("r1", "a1", "succeeded", None, 20)
        .await
        .unwrap());
    assert!(
        !s.set_report("r1", "a1", "{\"x\":3}", 21).await.unwrap(),
        "finished: the report is final"
    );
    assert_eq!(s.report("r1").await.unwrap().as_deref(), Some("{\"x\":2}"));
    assert!(s.report("nope").await.unwrap().is_none());
}

async fn revoking_a_site_revokes_its_agents_and_its_intake_key(f: &Fixture) {
    let s = &*f.a;
    with_agents(s).await;
    assert!(s.site_by_intake("h1").await.unwrap().is_some());
    assert!(matches!(
        s.create_site("edge", "h2", 1).await,
        Err(StoreError::Conflict(_))
    ));
    s.revoke_site("edge", 5).await.unwrap();
    assert!(s.site_by_intake("h1").await.unwrap().is_none());
    for a in s.agents().await.unwrap() {
        assert_eq!(a.revoked_ms, Some(5));
    }
    assert!(matches!(
        s.revoke_agent("edge", "zz", 6).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn enrolling_a_live_agent_name_twice_is_a_conflict_until_it_is_revoked(f: &Fixture) {
    let s = &*f.a;
    with_agents(s).await;
    // Through the other replica too: the rule holds in the store, not in one process.
    let e = f.b.enroll_agent(&agent("a1-again", "a1")).await;
    assert!(
        matches!(&e, Err(StoreError::Conflict(m)) if m.contains("vacsine site revoke edge --agent a1")),
        "{e:?}"
    );
    s.revoke_agent("edge", "a1", 7).await.unwrap();
    f.b.enroll_agent(&agent("a1-again", "a1")).await.unwrap();
    let names: Vec<(String, Option<i64>)> = s
        .agents()
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.name == "a1")
        .map(|a| (a.id, a.revoked_ms))
        .collect();
    assert_eq!(
        names,
        [("a1".to_string(), Some(7)), ("a1-again".to_string(), None)]
    );
}

async fn two_replicas_asking_at_once_never_lease_one_run_twice(f: &Fixture) {
    with_agents(&*f.a).await;
    const RUNS: usize = 60;
    for i in 0..RUNS {
        f.a.create_run(&run(&format!("r{i:03}"), i as i64))
            .await
            .unwrap();
    }
    // Eight askers, half on each replica, each leasing until the queue is empty.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = if w % 2 == 0 { f.a.clone() } else { f.b.clone() };
        let agent = if w % 4 < 2 { "a1" } else { "a2" };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(r) = s.lease_next("edge", agent, 100, 1000).await.unwrap() {
                assert_eq!((r.status.as_str(), r.offers), ("running", 1));
                got.push(r.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), RUNS, "every run leased once: {all:?}");
    assert_eq!(distinct.len(), RUNS);
    for r in f.a.runs(RUNS + 5).await.unwrap() {
        assert_eq!(r.status, "running", "{r:?}");
    }
}

async fn sweeps_on_two_replicas_handle_each_expired_lease_once(f: &Fixture) {
    with_agents(&*f.a).await;
    const RUNS: usize = 40;
    for i in 0..RUNS {
        f.a.create_run(&run(&format!("r{i:03}"), i as i64))
            .await
            .unwrap();
        f.a.lease_next("edge", "a1", 10, 100)
            .await
            .unwrap()
            .unwrap();
    }
    let (x, y) = tokio::join!(
        {
            let s = f.a.clone();
            async move { s.expire_leases(500).await.unwrap() }
        },
        {
            let s = f.b.clone();
            async move { s.expire_leases(500).await.unwrap() }
        }
    );
    let ids: Vec<&String> = x.iter().chain(&y).map(|e| &e.run_id).collect();
    let distinct: HashSet<&&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (RUNS, RUNS), "{x:?} {y:?}");
    for r in f.a.runs(RUNS + 5).await.unwrap() {
        assert_eq!((r.status.as_str(), r.offers), ("queued", 1), "{r:?}");
    }
    assert!(f.b.expire_leases(600).await.unwrap().is_empty());
}

async fn records_follow_in_order_and_a_reader_resuming_misses_none(f: &Fixture) {
    with_agents(&*f.a).await;
    f.a.create_run(&run("r1", 1)).await.unwrap();
    f.a.lease_next("edge", "a1", 10, 100_000)
        .await
        .unwrap()
        .unwrap();
    // Uploads through both replicas while a reader follows with `after`.
    let writer = {
        let (a, b) = (f.a.clone(), f.b.clone());
        tokio::spawn(async move {
            for i in 0..50 {
                let s = if i % 2 == 0 { &a } else { &b };
                let recs = vec![(format!("s{i:02}"), format!("{{\"i\":{i}}}"))];
                s.add_records("r1", "a1", &recs, 20 + i).await.unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let mut after = 0;
    let t0 = std::time::Instant::now();
    while seen.len() < 50 {
        assert!(
            t0.elapsed().as_secs() < 30,
            "only {} records seen",
            seen.len()
        );
        for (seq, r) in f.b.records("r1", after).await.unwrap() {
            assert!(seq > after);
            after = seq;
            seen.push(r);
        }
    }
    writer.await.unwrap();
    let want: Vec<String> = (0..50).map(|i| format!("{{\"i\":{i}}}")).collect();
    assert_eq!(seen, want, "each once, in upload order");
    assert_eq!(f.a.run("r1").await.unwrap().unwrap().records, 50);
}

/// PostgreSQL only: what SQLite, used by one process, has no use for.
mod postgres_only {
    use super::*;
    use std::time::Duration;

    async fn wait_for(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Change>, want: Change) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while rx.recv().await != Some(want) {}
        })
        .await
        .unwrap_or_else(|_| panic!("no {want:?} wake-up within 5 s"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_is_woken_when_another_queues_work_or_records() {
        let Some(f) = pg_fixture("wake").await else {
            return;
        };
        with_agents(&*f.a).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let b = f.b.clone();
        let listener = tokio::spawn(async move {
            let send = move |c: Change| {
                let _ = tx.send(c);
            };
            b.listen(&send).await
        });
        // The wake-ups of a start (what changed while it was not listening).
        let mut first = vec![
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap(),
            rx.recv().await.unwrap(),
        ];
        first.sort_by_key(|c| *c == Change::Run);
        assert_eq!(first, [Change::Queue, Change::Run]);
        let next = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Change>| {
            let mut got = Vec::new();
            while let Ok(c) = rx.try_recv() {
                got.push(c);
            }
            got
        };
        // Nothing changed: nothing wakes.
        f.a.touch_agent("a1", 5).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(next(&mut rx), []);
        // Work queued on replica a wakes replica b's long polls.
        f.a.create_run(&run("r1", 1)).await.unwrap();
        wait_for(&mut rx, Change::Queue).await;
        f.a.lease_next("edge", "a1", 10, 100)
            .await
            .unwrap()
            .unwrap();
        wait_for(&mut rx, Change::Run).await;
        // A renewal is not news.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = next(&mut rx);
        f.a.renew("a1", &["r1".into()], 20, 100).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(next(&mut rx), []);
        let recs = vec![("k".to_string(), "{}".to_string())];
        f.a.add_records("r1", "a1", &recs, 30).await.unwrap();
        wait_for(&mut rx, Change::Run).await;
        // The same record again is not news; the run's end is.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = next(&mut rx);
        let again = f.a.add_records("r1", "a1", &recs, 31).await.unwrap();
        assert_eq!((again.stored, again.duplicates), (0, 1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(next(&mut rx), []);
        assert!(f
            .a
            .finish_run("r1", "a1", "succeeded", None, 35)
            .await
            .unwrap());
        wait_for(&mut rx, Change::Run).await;
        // A revocation wakes long polls (the revoked agent is refused at once).
        f.a.revoke_agent("edge", "a2", 40).await.unwrap();
        wait_for(&mut rx, Change::Queue).await;
        listener.abort();
        f.done().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_starting_together_migrate_once() {
        let Some(url) = test_pg_url("migrate") else {
            return;
        };
        let schema = test_schema("migrate");
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let (u, s) = (url.clone(), schema.clone());
                tokio::spawn(async move { PgStore::connect_schema(&u, &s).await })
            })
            .collect();
        let mut stores = Vec::new();
        for s in starts {
            stores.push(s.await.unwrap().expect("every replica starts"));
        }
        stores[0].create_site("edge", "h", 0).await.unwrap();
        assert_eq!(stores[3].sites().await.unwrap().len(), 1);
        // And again later: nothing to do.
        let again = PgStore::connect_schema(&url, &schema).await.unwrap();
        assert_eq!(again.sites().await.unwrap().len(), 1);
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let h = tokio::spawn(conn);
        let n: i64 = c
            .query_one(
                &format!("SELECT COUNT(*) FROM \"{schema}\".vacsine_migrations"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, pg::MIGRATION_COUNT as i64);
        drop(c);
        let _ = h.await;
        drop((stores, again));
        drop_schema(&url, &schema).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nonce_is_taken_once_across_replicas_until_its_time_is_over() {
        let Some(f) = pg_fixture("nonce").await else {
            return;
        };
        assert!(f.a.first_use("n1", 0, 1000).await.unwrap());
        assert!(!f.b.first_use("n1", 10, 1010).await.unwrap(), "a replay");
        assert!(!f.a.first_use("n1", 20, 1020).await.unwrap());
        assert!(f.b.first_use("n2", 20, 1020).await.unwrap());
        // The sweep forgets nonces past their time (their envelopes are stale by then)...
        f.a.expire_leases(1005).await.unwrap();
        assert!(f.a.first_use("n1", 1006, 2006).await.unwrap());
        assert!(!f.a.first_use("n2", 1006, 2006).await.unwrap());
        // ...and one past its time is taken again even before a sweep.
        assert!(f.b.first_use("n2", 1021, 2021).await.unwrap());
        f.done().await;
    }

    #[tokio::test]
    async fn a_bad_url_or_an_unreachable_server_is_a_clear_error_without_the_password() {
        let e = PgStore::connect("postgres://u:hunter2@127.0.0.1:1/db")
            .await
            .err()
            .expect("nothing listens on port 1");
        let m = e.to_string();
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.contains("PostgreSQL"), "{m}");
        let e = PgStore::connect("postgres://u:hunter2@h:notaport/db")
            .await
            .err()
            .unwrap();
        let m = e.to_string();
        assert!(!m.contains("hunter2") && m.contains("u:***@h"), "{m}");
        let e = PgStore::connect_schema("postgres://h/d", "Bad-Name")
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("lowercase"), "{e}");
    }
}

/// Benchmark, not a test (run on demand, asserts nothing): dispatch + confirm throughput, the
/// store's share of one orchestrated step (lease a run, add its record, finish it), on SQLite
/// and on PostgreSQL (when `VACSINE_TEST_PG` is set) in the same run, with 1, 8 and 32 agents
/// asking at once. Prints a table of medians over 3 rounds and the ratios.
///
/// `cargo test --workspace --lib -- --ignored --nocapture bench_dispatch_confirm`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on demand"]
async fn bench_dispatch_confirm() {
    const STEPS: usize = 1000;
    const ROUNDS: usize = 3;
    // Agents asking at once (an orchestrator serves many).
    const WORKERS: [usize; 3] = [1, 8, 32];
    /// `workers` agents, alternately on each replica (`a`, `b`), empty the queue.
    async fn round(f: &Fixture, round: usize, workers: usize) -> f64 {
        for i in 0..STEPS {
            f.a.create_run(&run(&format!("b{round}-{i:05}"), i as i64))
                .await
                .unwrap();
        }
        let t0 = std::time::Instant::now();
        let mut tasks = Vec::new();
        for w in 0..workers {
            let s = if w % 2 == 0 { f.a.clone() } else { f.b.clone() };
            let agent = if w % 2 == 0 { "a1" } else { "a2" };
            tasks.push(tokio::spawn(async move {
                while let Some(r) = s.lease_next("edge", agent, 10, 60_000).await.unwrap() {
                    let rec = vec![(
                        "step/1/local".to_string(),
                        r#"{"step_id":"step","status":"succeeded"}"#.to_string(),
                    )];
                    assert_eq!(
                        s.add_records(&r.id, agent, &rec, 11).await.unwrap().stored,
                        1
                    );
                    assert!(s
                        .finish_run(&r.id, agent, "succeeded", None, 12)
                        .await
                        .unwrap());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        STEPS as f64 / t0.elapsed().as_secs_f64()
    }
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
    let mut rows: Vec<(&str, usize, f64)> = Vec::new();
    for workers in WORKERS {
        let f = sqlite_fixture();
        with_agents(&*f.a).await;
        let mut v = Vec::new();
        for r in 0..ROUNDS {
            v.push(round(&f, r, workers).await);
        }
        rows.push(("sqlite", workers, median(v)));
        f.done().await;
        if let Some(f) = pg_fixture("bench").await {
            with_agents(&*f.a).await;
            let mut v = Vec::new();
            for r in 0..ROUNDS {
                v.push(round(&f, r, workers).await);
            }
            rows.push(("postgres", workers, median(v)));
            f.done().await;
        }
    }
    println!(
        "\ndispatch + confirm (lease, one record, finish), {STEPS} steps x {ROUNDS} rounds, median"
    );
    println!("{:<10} {:>8} {:>12}", "store", "workers", "steps/s");
    for (s, w, r) in &rows {
        println!("{s:<10} {w:>8} {r:>12.0}");
    }
    for workers in WORKERS {
        let get = |n: &str| {
            rows.iter()
                .find(|r| r.0 == n && r.1 == workers)
                .map(|r| r.2)
        };
        if let (Some(sq), Some(pg)) = (get("sqlite"), get("postgres")) {
            println!("postgres / sqlite with {workers} worker(s): {:.2}", pg / sq);
        }
    }
}

async fn a_runs_signed_job_is_kept_once_and_read_back_as_signed(f: &Fixture) {
    let (s, b) = (&*f.a, &*f.b);
    let j = super::SignedRow {
        payload: "{\"run_id\":\"r1\"}".into(),
        signature: "c2ln".into(),
        key_id: "0123456789abcdef".into(),
    };
    assert_eq!(s.signed_job("r1").await.unwrap(), None);
    s.put_signed_job("r1", &j, 1).await.unwrap();
    // Another replica reads what this one signed.
    assert_eq!(f.b.signed_job("r1").await.unwrap(), Some(j.clone()));
    let other = super::SignedRow {
        payload: "{}".into(),
        ..j.clone()
    };
    assert!(matches!(
        f.b.put_signed_job("r1", &other, 2).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.signed_job("r1").await.unwrap(), Some(j.clone()));
    // A run queued with its signed job: both there, leased with it.
    with_agents(s).await;
    s.create_signed_run(&run("r2", 5), &j, 5).await.unwrap();
    assert_eq!(b.signed_job("r2").await.unwrap(), Some(j.clone()));
    let leased = b.lease_next("edge", "a1", 6, 1000).await.unwrap().unwrap();
    assert_eq!(leased.id, "r2");
    // A run id that has a signed job already is refused whole: no unsigned run is queued.
    assert!(matches!(
        s.create_signed_run(&run("r1", 7), &j, 7).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(s.run("r1").await.unwrap().is_none());
}

async fn a_push_makes_a_new_version_only_when_the_content_changed(f: &Fixture) {
    let (s, b) = (&*f.a, &*f.b);
    let (r, made) = s
        .push_document("Workflow", "w", "sha:1", "{\"a\":1}", "sig-1", 10)
        .await
        .unwrap();
    assert_eq!((r.version, made), (1, true));
    // The same content again, from another replica: the same version.
    let (r, made) = b
        .push_document("Workflow", "w", "sha:1", "{\"a\":1}", "sig-other", 11)
        .await
        .unwrap();
    assert_eq!((r.version, r.pushed_ms, made), (1, 10, false));
    // The signature made at the first push is kept.
    assert_eq!(r.signature.as_deref(), Some("sig-1"));
    let (r, made) = s
        .push_document("Workflow", "w", "sha:2", "{\"a\":2}", "sig-2", 12)
        .await
        .unwrap();
    assert_eq!((r.version, made), (2, true));
    // Back to the first content: a new version still (versions only go forward).
    let (r, _) = b
        .push_document("Workflow", "w", "sha:1", "{\"a\":1}", "sig-3", 13)
        .await
        .unwrap();
    assert_eq!(r.version, 3);
    // Another kind with the same name is its own line.
    let (r, _) = s
        .push_document("Policy", "w", "sha:9", "{}", "sig-9", 14)
        .await
        .unwrap();
    assert_eq!(r.version, 1);
    let all = b.registry().await.unwrap();
    let v: Vec<(&str, i64)> = all.iter().map(|r| (r.kind.as_str(), r.version)).collect();
    assert_eq!(
        v,
        [
            ("Policy", 1),
            ("Workflow", 1),
            ("Workflow", 2),
            ("Workflow", 3)
        ]
    );
    let latest = s
        .registry_document("Workflow", "w", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((latest.version, latest.document.as_str()), (3, "{\"a\":1}"));
    assert_eq!(latest.signature.as_deref(), Some("sig-3"));
    let v2 = s
        .registry_document("Workflow", "w", Some(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v2.sha256, "sha:2");
    assert!(s
        .registry_document("Workflow", "w", Some(4))
        .await
        .unwrap()
        .is_none());
    assert!(s
        .registry_document("Workflow", "x", None)
        .await
        .unwrap()
        .is_none());
}

/// A run the orchestrator drives itself (spanning sites) is created `running` with no
/// lease: no sweep expires it, a restart does not give it a lease, its driver adds its
/// records and ends it. A one-step job still queued can be cancelled; a taken one cannot.
async fn a_run_driven_by_the_orchestrator_never_expires_and_queued_steps_can_be_cancelled(
    f: &Fixture,
) {
    let s = &*f.a;
    with_agents(s).await;
    let mut driven = run("span", 1);
    driven.status = status::RUNNING.into();
    driven.agent_id = Some("orchestrator".into());
    driven.started_ms = Some(1);
    s.create_run(&driven).await.unwrap();
    assert_eq!(s.extend_leases(10, 100).await.unwrap(), 0);
    assert!(s.expire_leases(i64::MAX / 2).await.unwrap().is_empty());
    let r = s.run("span").await.unwrap().unwrap();
    assert_eq!((r.status.as_str(), r.lease_expires_ms), ("running", None));
    let held: Vec<String> = s
        .running_held_by("orchestrator")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(held, ["span"]);
    assert_eq!(r.agent_id.as_deref(), Some("orchestrator"));
    assert_eq!(r.started_ms, Some(1));
    // Not offered to the site's agents.
    assert!(s
        .lease_next("edge", "a1", 20, 1000)
        .await
        .unwrap()
        .is_none());
    let st = s
        .add_records("span", "orchestrator", &[("k".into(), "{}".into())], 30)
        .await
        .unwrap();
    assert_eq!(st.stored, 1);
    // Queued one-step jobs: the one not taken is cancelled, the taken one is not.
    s.create_run(&run("step1", 40)).await.unwrap();
    s.create_run(&run("step2", 41)).await.unwrap();
    let leased = s.lease_next("edge", "a1", 50, 1000).await.unwrap().unwrap();
    assert_eq!(leased.id, "step1");
    assert!(!s.cancel_queued("step1", "late", 60).await.unwrap());
    assert!(s
        .cancel_queued("step2", "no agent took it", 60)
        .await
        .unwrap());
    let c = s.run("step2").await.unwrap().unwrap();
    assert_eq!(c.status, status::CANCELLED);
    assert_eq!(c.message.as_deref(), Some("no agent took it"));
    assert!(!s.cancel_queued("step2", "again", 61).await.unwrap());
    assert!(s
        .finish_run("span", "orchestrator", status::SUCCEEDED, None, 70)
        .await
        .unwrap());
}

/// Issue 19: one claim per key across replicas; the answer kept is read back by every
/// replica; a released claim may be made again; an answered key is not released; old keys
/// are forgotten.
async fn an_idempotency_key_is_claimed_once_and_keeps_its_first_answer(f: &Fixture) {
    let (a, b) = (&f.a, &f.b);
    let claims = futures_util::future::join_all((0..8).map(|i| {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            s.claim_idempotency_key("k1", "POST /v1/runs", 10, 0)
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(
        claims.iter().filter(|c| c.is_none()).count(),
        1,
        "{claims:?}"
    );
    for c in claims.iter().flatten() {
        assert_eq!(c.request, "POST /v1/runs");
        assert_eq!(c.answer, None, "under way");
    }
    a.answer_idempotency_key("k1", 201, r#"{"run_id":"r1"}"#)
        .await
        .unwrap();
    b.release_idempotency_key("k1").await.unwrap();
    let held = b
        .claim_idempotency_key("k1", "POST /v1/runs", 20, 0)
        .await
        .unwrap()
        .expect("answered keys stay");
    assert_eq!(held.answer, Some((201, r#"{"run_id":"r1"}"#.to_string())));
    assert_eq!(held.created_ms, 10);
    // Released: the next claim is a first claim.
    assert!(a
        .claim_idempotency_key("k2", "POST /v1/registry", 30, 0)
        .await
        .unwrap()
        .is_none());
    a.release_idempotency_key("k2").await.unwrap();
    assert!(b
        .claim_idempotency_key("k2", "POST /v1/registry", 31, 0)
        .await
        .unwrap()
        .is_none());
    // Keys older than the horizon are forgotten: k1 (10) goes, k2 (31) stays.
    assert!(a
        .claim_idempotency_key("k1", "POST /v1/runs", 40, 25)
        .await
        .unwrap()
        .is_none());
    assert!(a
        .claim_idempotency_key("k2", "POST /v1/registry", 41, 25)
        .await
        .unwrap()
        .is_some());
}

/// Issue 19: the last outbox report of each agent, as any replica reads it.
async fn an_agents_outbox_report_replaces_the_one_before(f: &Fixture) {
    assert!(f.a.agent_outboxes().await.unwrap().is_empty());
    f.a.set_agent_outbox("a1", r#"{"refused":1}"#, 1)
        .await
        .unwrap();
    f.a.set_agent_outbox("a2", r#"{"refused":0}"#, 1)
        .await
        .unwrap();
    f.b.set_agent_outbox("a1", r#"{"refused":3}"#, 2)
        .await
        .unwrap();
    let mut all = f.b.agent_outboxes().await.unwrap();
    all.sort();
    assert_eq!(
        all,
        vec![
            ("a1".to_string(), r#"{"refused":3}"#.to_string()),
            ("a2".to_string(), r#"{"refused":0}"#.to_string())
        ]
    );
}

const DAY: i64 = 24 * 3600 * 1000;

/// A run of `site` created at `at`, leased by a1, given `records`, ended at `end`.
async fn ended_run(s: &dyn Store, id: &str, site: &str, at: i64, records: usize, end: i64) {
    let mut r = run(id, at);
    r.site = site.into();
    s.create_run(&r).await.unwrap();
    let leased = s.lease_next(site, "a1", at, DAY).await.unwrap().unwrap();
    assert_eq!(leased.id, id);
    let recs: Vec<(String, String)> = (0..records)
        .map(|i| {
            (
                format!("k{i}"),
                format!("{{\"n\":{i},\"out\":\"{}\"}}", "x".repeat(100)),
            )
        })
        .collect();
    s.add_records(id, "a1", &recs, at).await.unwrap();
    assert!(s
        .finish_run(id, "a1", status::SUCCEEDED, None, end)
        .await
        .unwrap());
}

async fn retention_removes_exactly_the_planned_ended_runs_and_never_an_active_one(f: &Fixture) {
    use vacsine_engine::retention::{plan, Policy};
    let s = &*f.a;
    with_agents(s).await;
    s.create_site("far", "h2", 0).await.unwrap();
    let now = 100 * DAY;
    // Ended: three old ones at `edge`, one old one at `far` (its site's only run), one new.
    ended_run(s, "old1", "edge", 10 * DAY, 3, 11 * DAY).await;
    ended_run(s, "old2", "edge", 20 * DAY, 2, 21 * DAY).await;
    ended_run(s, "old3", "edge", 30 * DAY, 1, 31 * DAY).await;
    s.put_signed_job(
        "old1",
        &SignedRow {
            payload: "p".into(),
            signature: "s".into(),
            key_id: "k".into(),
        },
        10 * DAY,
    )
    .await
    .unwrap();
    ended_run(s, "far-old", "far", 5 * DAY, 1, 6 * DAY).await;
    ended_run(s, "new", "edge", 95 * DAY, 4, 96 * DAY).await;
    // Active, however old: queued, and leased (running).
    s.create_run(&run("queued-old", 1)).await.unwrap();
    let mut leased = run("running-old", 2);
    leased.site = "far".into();
    s.create_run(&leased).await.unwrap();
    assert_eq!(
        s.lease_next("far", "a2", 3, DAY)
            .await
            .unwrap()
            .map(|r| r.id),
        Some("running-old".into())
    );
    s.add_records("running-old", "a2", &[("k".into(), "{}".into())], 4)
        .await
        .unwrap();

    let mut cands = s.ended_runs().await.unwrap();
    cands.sort_by(|a, b| a.id.cmp(&b.id));
    let listed: Vec<(&str, &str, i64)> = cands
        .iter()
        .map(|c| (c.id.as_str(), c.group.as_str(), c.ended_ms))
        .collect();
    assert_eq!(
        listed,
        [
            ("far-old", "far", 6 * DAY),
            ("new", "edge", 96 * DAY),
            ("old1", "edge", 11 * DAY),
            ("old2", "edge", 21 * DAY),
            ("old3", "edge", 31 * DAY),
        ]
    );
    // Bytes: the job plus the records as stored, so more records weigh more.
    let bytes = |id: &str| cands.iter().find(|c| c.id == id).unwrap().bytes;
    assert!(bytes("old1") > bytes("old2") && bytes("old2") > bytes("old3"));
    assert!(bytes("old3") > 100, "{}", bytes("old3"));

    // 30 days, the newest 1 per site: old1..old3 go by age; far-old is its site's newest.
    let policy = Policy::from_flags(30, 0, 0, 1);
    let p = plan(&policy, &cands, now);
    assert_eq!(p.ids(), ["old1", "old2", "old3"]);
    // Asked to remove active runs and unknown ids too: only the ended ones go.
    let mut ids = p.ids();
    ids.extend(["queued-old", "running-old", "nope"].map(String::from));
    let removed = s.remove_runs(&ids).await.unwrap();
    assert_eq!((removed.runs, removed.records), (3, 6));
    for id in ["old1", "old2", "old3"] {
        assert!(s.run(id).await.unwrap().is_none(), "{id}");
        assert!(s.records(id, 0).await.unwrap().is_empty(), "{id}");
    }
    assert!(s.signed_job("old1").await.unwrap().is_none());
    for (id, st, n) in [
        ("far-old", "succeeded", 1),
        ("new", "succeeded", 4),
        ("queued-old", "queued", 0),
        ("running-old", "running", 1),
    ] {
        let r = s.run(id).await.unwrap().unwrap();
        assert_eq!((r.status.as_str(), r.records), (st, n), "{id}");
    }
    // The running run goes on: it renews, records and ends as before.
    assert_eq!(
        s.renew("a2", &["running-old".into()], 5, DAY)
            .await
            .unwrap(),
        ["running-old"]
    );
    // Nothing more to do with the same policy.
    let again = plan(&policy, &f.b.ended_runs().await.unwrap(), now);
    assert!(again.remove.is_empty(), "{again:?}");
    // A count of 1 without the per-site floor removes all but the newest ended run.
    let p = plan(
        &Policy::from_flags(0, 1, 0, 0),
        &s.ended_runs().await.unwrap(),
        now,
    );
    assert_eq!(p.ids(), ["far-old"]);
    assert_eq!(s.remove_runs(&p.ids()).await.unwrap().runs, 1);
    let left: Vec<String> = s
        .ended_runs()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, ["new"]);
}

async fn runs_are_listed_a_page_at_a_time_newest_first_with_filters(f: &Fixture) {
    let s = &*f.a;
    with_agents(s).await;
    // Seven runs; three share one creation time (insertion order breaks the tie).
    for (id, at, site) in [
        ("r1", 10, "edge"),
        ("r2", 20, "far"),
        ("r3", 30, "edge"),
        ("r4", 30, "far"),
        ("r5", 30, "edge"),
        ("r6", 40, "edge"),
        ("r7", 50, "far"),
    ] {
        let mut r = run(id, at);
        r.site = site.into();
        if id == "r6" {
            r.workflow = "edge-1 (autonomous)".into();
            r.agent_id = Some("a1".into());
            r.status = status::SUCCEEDED.into();
        }
        s.create_run(&r).await.unwrap();
    }
    let all: Vec<String> = s
        .runs(100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(all, ["r7", "r6", "r5", "r4", "r3", "r2", "r1"]);
    let pages = |q: RunQuery| async move {
        let mut out = Vec::new();
        let mut q = q;
        loop {
            let p = f.b.runs_page(&q).await.unwrap();
            out.push(p.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
            match p.next {
                Some(n) => {
                    assert_eq!(Cursor::decode(&n.encode()), Some(n));
                    q.before = Some(n)
                }
                None => break,
            }
            assert!(out.len() < 10, "{out:?}");
        }
        out
    };
    let q = |site: Option<&str>, st: Option<&str>, limit| RunQuery {
        site: site.map(String::from),
        status: st.map(String::from),
        limit,
        ..Default::default()
    };
    assert_eq!(
        pages(q(None, None, 3)).await,
        [vec!["r7", "r6", "r5"], vec!["r4", "r3", "r2"], vec!["r1"]]
    );
    // A last page exactly full says there is no more.
    assert_eq!(
        pages(q(None, None, 7)).await,
        [vec!["r7", "r6", "r5", "r4", "r3", "r2", "r1"]]
    );
    assert_eq!(
        pages(q(Some("edge"), None, 2)).await,
        [vec!["r6", "r5"], vec!["r3", "r1"]]
    );
    assert_eq!(
        pages(q(Some("far"), Some("queued"), 5)).await,
        [vec!["r7", "r4", "r2"]]
    );
    assert_eq!(pages(q(None, Some("succeeded"), 5)).await, [vec!["r6"]]);
    let wf = RunQuery {
        workflow: Some("w".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(f.a.runs_page(&wf).await.unwrap().runs.len(), 6);
    assert_eq!(Cursor::decode("12"), None);
    assert_eq!(Cursor::decode("a.1"), None);
    // The latest autonomous run of each agent, among the most recent runs only.
    assert_eq!(
        s.last_autonomous(1000).await.unwrap(),
        vec![("a1".to_string(), 40i64)]
    );
    assert!(s.last_autonomous(1).await.unwrap().is_empty());
}

/// Issue 16: an event, a decision and its application at a site are each kept once, whichever
/// replica gets them again (a retried upload); a deletion is kept once.
async fn issue16_events_decisions_and_applications_are_kept_once(f: &Fixture) {
    let (s, b) = (&*f.a, &*f.b);
    let evs = vec![
        ("e1".to_string(), "{}".to_string()),
        ("e2".to_string(), "{}".to_string()),
    ];
    assert_eq!(s.put_events("edge-a", &evs, 10).await.unwrap(), 2);
    assert_eq!(b.put_events("edge-a", &evs, 11).await.unwrap(), 0);
    assert_eq!(s.events(None, 10).await.unwrap().len(), 2);
    assert_eq!(s.events(Some("edge-b"), 10).await.unwrap().len(), 0);
    let d = DecisionRow {
        id: "d1".into(),
        body: "{}".into(),
        scope: "[]".into(),
        origin_site: Some("edge-a".into()),
        event_ms: Some(5),
        decided_ms: 6,
        expires_ms: Some(1_000),
        deleted_ms: None,
        applied: vec![],
        signed: Some("signed-d1".into()),
        deletion: Some("ignored at put".into()),
    };
    assert!(s.put_decision(&d).await.unwrap());
    assert!(!b.put_decision(&d).await.unwrap());
    assert!(s.decision_applied("d1", "edge-a", 7).await.unwrap());
    assert!(!b.decision_applied("d1", "edge-a", 9).await.unwrap());
    assert!(b.decision_applied("d1", "edge-b", 8).await.unwrap());
    let all = b.decisions().await.unwrap();
    assert_eq!(all.len(), 1);
    let mut applied = all[0].applied.clone();
    applied.sort();
    assert_eq!(applied, vec![("edge-a".into(), 7), ("edge-b".into(), 8)]);
    assert_eq!(all[0].signed.as_deref(), Some("signed-d1"));
    assert_eq!(
        all[0].deletion, None,
        "a deletion is only kept by delete_decision"
    );
    assert!(s.delete_decision("d1", 20, "deletion-1").await.unwrap());
    assert!(!b.delete_decision("d1", 21, "deletion-2").await.unwrap());
    assert!(!s.delete_decision("nope", 21, "deletion-3").await.unwrap());
    let d1 = &s.decisions().await.unwrap()[0];
    assert_eq!(d1.deleted_ms, Some(20));
    assert_eq!(d1.deletion.as_deref(), Some("deletion-1"));
}

async fn issue16_a_feed_position_is_kept_and_moved_across_replicas(f: &Fixture) {
    let (s, b) = (&*f.a, &*f.b);
    let feed = "https://intel.example/api1/collections/c1/";
    assert_eq!(s.feed_position(feed).await.unwrap(), None);
    s.set_feed_position(feed, "2026-12-07T01:00:00.000000Z", 10)
        .await
        .unwrap();
    assert_eq!(
        b.feed_position(feed).await.unwrap().as_deref(),
        Some("2026-12-07T01:00:00.000000Z")
    );
    b.set_feed_position(feed, "2026-12-07T02:00:00.000000Z", 11)
        .await
        .unwrap();
    assert_eq!(
        s.feed_position(feed).await.unwrap().as_deref(),
        Some("2026-12-07T02:00:00.000000Z")
    );
    assert_eq!(
        s.feed_position("https://other/collections/c2/")
            .await
            .unwrap(),
        None
    );
}

/// Issue 16 item 7: a bouncer's name is taken once (the other replica sees it), its last pull
/// and what it was given are kept, and a deleted bouncer is gone for every replica.
async fn issue16_a_bouncer_name_is_kept_once_with_what_it_was_last_given(f: &Fixture) {
    let (s, b) = (&*f.a, &*f.b);
    let row = BouncerRow {
        name: "fw-a".into(),
        key_hash: "sha256:aa".into(),
        site: Some("edge-a".into()),
        created_ms: 1,
        last_pull_ms: None,
        known: "{}".into(),
    };
    assert!(s.put_bouncer(&row).await.unwrap());
    assert!(!b.put_bouncer(&row).await.unwrap());
    let other = BouncerRow {
        name: "fw-b".into(),
        key_hash: "sha256:bb".into(),
        site: None,
        ..row.clone()
    };
    assert!(b.put_bouncer(&other).await.unwrap());
    s.bouncer_pulled("fw-a", r#"{"d1":["Ip","203.0.113.9"]}"#, 50)
        .await
        .unwrap();
    let all = b.bouncers().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].name, "fw-a");
    assert_eq!(all[0].last_pull_ms, Some(50));
    assert_eq!(all[0].known, r#"{"d1":["Ip","203.0.113.9"]}"#);
    assert_eq!(all[1].site, None);
    assert!(b.delete_bouncer("fw-a").await.unwrap());
    assert!(!s.delete_bouncer("fw-a").await.unwrap());
    assert_eq!(s.bouncers().await.unwrap().len(), 1);
}

fn assessment(key: &str, site: &str, at: i64, passing: i64, failing: i64) -> AssessmentRow {
    AssessmentRow {
        key: key.into(),
        site: site.into(),
        schedule: "baseline".into(),
        kind: "check".into(),
        at_ms: at,
        total: passing + failing,
        passing,
        failing,
        error: None,
    }
}

fn change(site: &str, item: &str, at: i64, outcome: &str) -> HistoryRow {
    HistoryRow {
        site: site.into(),
        schedule: "baseline".into(),
        kind: "check".into(),
        node: "web".into(),
        item: item.into(),
        since_ms: at,
        outcome: outcome.into(),
        evidence: format!("seen {outcome}"),
        title: Some("t".into()),
        refs: r#"{"anssi":["R30"]}"#.into(),
    }
}

async fn issue17_an_assessment_is_kept_once_with_its_changes_as_history(f: &Fixture) {
    let s = &*f.a;
    let first = [
        change("edge", "r1", 100, "pass"),
        change("edge", "r2", 100, "fail"),
    ];
    assert!(s
        .put_assessment(&assessment("k1", "edge", 100, 1, 1), &first)
        .await
        .unwrap());
    // Sent again (an upload retried, or through another replica): nothing kept twice.
    assert!(!f
        .b
        .put_assessment(&assessment("k1", "edge", 100, 1, 1), &first)
        .await
        .unwrap());
    // Unchanged: the assessment only.
    assert!(s
        .put_assessment(&assessment("k2", "edge", 200, 1, 1), &[])
        .await
        .unwrap());
    let drift = [change("edge", "r1", 300, "fail")];
    assert!(s
        .put_assessment(&assessment("k3", "edge", 300, 0, 2), &drift)
        .await
        .unwrap());
    assert!(s
        .put_assessment(
            &assessment("o1", "other", 300, 1, 0),
            &[change("other", "r1", 300, "pass")]
        )
        .await
        .unwrap());
    let a = s.assessments(Some("edge"), 0).await.unwrap();
    assert_eq!(
        a.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
        ["k1", "k2", "k3"]
    );
    assert_eq!(a[2].failing, 2);
    assert_eq!(s.assessments(Some("edge"), 150).await.unwrap().len(), 2);
    assert_eq!(s.assessments(None, 0).await.unwrap().len(), 4);
    let h = f.b.history(Some("edge")).await.unwrap();
    assert_eq!(
        h.iter()
            .map(|r| (r.item.as_str(), r.since_ms, r.outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            ("r1", 100, "pass"),
            ("r1", 300, "fail"),
            ("r2", 100, "fail")
        ]
    );
    assert_eq!(h[0].refs, r#"{"anssi":["R30"]}"#);
    assert_eq!(s.history(None).await.unwrap().len(), 4);
}

/// Benchmark, not a test (run on demand, asserts nothing): the posture history of
/// `VACSINE_BENCH_SITES` sites (default 100) each assessed every 15 minutes for a year — 100
/// results a site (50 requirements on 2 nodes), each changing about once a week — kept
/// through the store's own `put_assessment` (changes only, as agents upload them) in SQLite.
/// Prints the store's size (total and per site) and the time of the posture query of one site
/// over a year (daily trend) and of every site over 30 days.
///
/// `cargo test -p vacsine-orch --lib --release -- --ignored --nocapture bench_posture_history`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on demand"]
async fn bench_posture_history() {
    const YEAR_MS: i64 = 365 * 86_400_000;
    const EVERY_MS: i64 = 15 * 60_000;
    const ITEMS: usize = 100;
    let sites: usize = std::env::var("VACSINE_BENCH_SITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let t0 = std::time::Instant::now();
    let runs = (YEAR_MS / EVERY_MS) as usize;
    let mut tasks = Vec::new();
    for w in 0..16usize {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut changes_total = 0usize;
            for site in (w..sites).step_by(16) {
                let name = format!("site-{site:03}");
                // A cheap deterministic generator: item i changes about once a week.
                let mut state = [true; ITEMS];
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ site as u64;
                for run in 0..runs {
                    let at = run as i64 * EVERY_MS;
                    let mut changes = Vec::new();
                    for (i, pass) in state.iter_mut().enumerate() {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let flip = x % (7 * 96) == 0;
                        if flip {
                            *pass = !*pass;
                        }
                        if run == 0 || flip {
                            changes.push(HistoryRow {
                                site: name.clone(),
                                schedule: "edge-baseline".into(),
                                kind: "check".into(),
                                node: format!("node-{}", i % 2),
                                item: format!("requirement-{:02}", i / 2),
                                since_ms: at,
                                outcome: if *pass { "pass" } else { "fail" }.into(),
                                evidence: if *pass {
                                    "mode 0644".into()
                                } else {
                                    "mode 0666 (more than 0644)".into()
                                },
                                title: Some(format!("Requirement {}", i / 2)),
                                refs: format!(r#"{{"anssi-bp28":["R{}"]}}"#, i / 4),
                            });
                        }
                    }
                    let passing = state.iter().filter(|p| **p).count() as i64;
                    changes_total += changes.len();
                    let a = AssessmentRow {
                        key: format!("{name}/assess/edge-baseline/check/{at}"),
                        site: name.clone(),
                        schedule: "edge-baseline".into(),
                        kind: "check".into(),
                        at_ms: at,
                        total: ITEMS as i64,
                        passing,
                        failing: ITEMS as i64 - passing,
                        error: None,
                    };
                    s.put_assessment(&a, &changes).await.unwrap();
                }
            }
            changes_total
        }));
    }
    let mut changes = 0;
    for t in tasks {
        changes += t.await.unwrap();
    }
    let load = t0.elapsed();
    drop(store);
    // The WAL folded into the file, then its size.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        let _: (i64, i64, i64) = c
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    let store = SqliteStore::open(&path).unwrap();
    let now = YEAR_MS;
    let time = |n: usize, f: &dyn Fn() -> std::time::Duration| {
        let mut v: Vec<f64> = (0..n).map(|_| f().as_secs_f64() * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rt = tokio::runtime::Handle::current();
    let probe = format!("site-{:03}", sites / 2);
    let one_site_year = tokio::task::block_in_place(|| {
        time(5, &|| {
            let t = std::time::Instant::now();
            rt.block_on(async {
                let h = store.history(Some(&probe)).await.unwrap();
                let a = store.assessments(Some(&probe), 0).await.unwrap();
                let v = crate::posture::compute(
                    &crate::posture::Query {
                        framework: Some("anssi".into()),
                        since_ms: 0,
                        bucket_ms: 86_400_000,
                        now_ms: now,
                    },
                    &h,
                    &a,
                );
                assert_eq!(v.trend.len(), 365);
            });
            t.elapsed()
        })
    });
    let all_sites_month = tokio::task::block_in_place(|| {
        time(3, &|| {
            let t = std::time::Instant::now();
            rt.block_on(async {
                let h = store.history(None).await.unwrap();
                let a = store
                    .assessments(None, now - 30 * 86_400_000)
                    .await
                    .unwrap();
                let v = crate::posture::compute(
                    &crate::posture::Query {
                        framework: None,
                        since_ms: now - 30 * 86_400_000,
                        bucket_ms: 86_400_000,
                        now_ms: now,
                    },
                    &h,
                    &a,
                );
                assert_eq!(v.sites.len(), sites);
            });
            t.elapsed()
        })
    });
    println!(
        "\nposture history: {sites} site(s) x {runs} assessments (every 15 min for a year) x {ITEMS} results, SQLite"
    );
    println!("assessments kept        {}", sites * runs);
    println!("history rows (changes)  {changes}");
    println!("load through the store  {:.1} s", load.as_secs_f64());
    println!(
        "store size              {:.1} MB ({:.2} MB a site)",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / sites as f64
    );
    println!("posture of one site, 1 year, daily trend + ANSSI controls: {one_site_year:.1} ms (median of 5)");
    println!("posture of every site, 30 days, daily trend: {all_sites_month:.1} ms (median of 3)");
}
