//! The journal's side of retention (issue 19 item 4): it lists only ended runs, with what
//! they weigh, and removes only those, with their records and undo data; the file shrinks.

use crate::support::*;
use vacsine_engine::{reclaim_space, Catalog, Engine, Journal, RunRequest, RunStatus};

const SPEC: &str = r#"
  steps:
    - id: one
      uses: command
      with: { argv: [sh, -c, 'head -c 3000 /dev/zero | tr "\0" a'] }
    - id: two
      uses: command
      needs: [one]
      with: { argv: ["true"] }
"#;

#[tokio::test]
async fn only_ended_runs_are_listed_and_removed_with_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let j = Journal::open(&path).unwrap();
    let e = Engine::new(j.clone(), Catalog::new());
    let mut ids = Vec::new();
    for name in ["a", "a", "b", "c"] {
        let mut req = RunRequest::new(wf(name, SPEC));
        req.nodes = nodes(&[local("local")]);
        let r = e.run(req).await.unwrap();
        assert_eq!(r.status, RunStatus::Succeeded);
        ids.push(r.run_id);
    }
    // The last one as a crash leaves it: still `running`, no end.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "UPDATE runs SET status = 'running', finished_at = NULL WHERE id = ?1",
        [&ids[3]],
    )
    .unwrap();
    drop(c);

    let mut ended = j.ended_runs().unwrap();
    ended.sort_by(|x, y| x.id.cmp(&y.id));
    let mut want: Vec<(&str, &str)> = vec![(&ids[0], "a"), (&ids[1], "a"), (&ids[2], "b")];
    want.sort();
    let got: Vec<(&str, &str)> = ended
        .iter()
        .map(|r| (r.id.as_str(), r.workflow.as_str()))
        .collect();
    assert_eq!(got, want);
    for r in &ended {
        assert!(r.bytes > 3000, "{r:?}");
        assert!(chrono_like(&r.finished_at), "{r:?}");
    }

    // Asked to remove all four: the three ended go with their records; the running one stays.
    let (runs, records) = j.remove_runs(&ids).unwrap();
    assert_eq!((runs, records), (3, 6));
    for id in &ids[..3] {
        assert!(j.run(id).unwrap().is_none());
        assert!(j.records(id).unwrap().is_empty());
    }
    assert_eq!(j.run(&ids[3]).unwrap().unwrap().status, RunStatus::Running);
    assert_eq!(j.records(&ids[3]).unwrap().len(), 2);
    assert!(j.ended_runs().unwrap().is_empty());
    drop(e);
    drop(j);
    reclaim_space(&path).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let free: i64 = c
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .unwrap();
    assert_eq!(free, 0, "the freed pages are given back");
}

/// An RFC 3339 time, as the journal writes ends.
fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T')
}
