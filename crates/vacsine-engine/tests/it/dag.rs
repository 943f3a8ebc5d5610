//! Scheduling: order, concurrency, conditions, retries, timeouts, outputs, fan-out.

use crate::support::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vacsine_core::record::StepStatus;
use vacsine_engine::{ProgressEvent, RunRequest, RunStatus};

#[tokio::test]
async fn independent_steps_run_concurrently_and_dependants_wait() {
    let w = wf(
        "dag",
        r#"
  steps:
    - id: a
      uses: command
      with: { argv: [sleep, "0.3"] }
    - id: b
      uses: command
      with: { argv: [sleep, "0.3"] }
    - id: c
      uses: command
      needs: [a, b]
      with: { argv: ["true"] }
"#,
    );
    let r = run(w, json!({})).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    // Concurrency shown by the records, not by wall time (the machine may be loaded): each of
    // a and b started before the other finished.
    let (a, b) = (&recs(&r, "a")[0], &recs(&r, "b")[0]);
    assert!(
        a.started_at.as_str() < b.finished_at.as_deref().unwrap()
            && b.started_at.as_str() < a.finished_at.as_deref().unwrap(),
        "a and b did not overlap: {a:?} {b:?}"
    );
    let c = &recs(&r, "c")[0];
    for dep in ["a", "b"] {
        let d = &recs(&r, dep)[0];
        assert!(
            d.finished_at.as_deref().unwrap() <= c.started_at.as_str(),
            "{dep} finished after c started"
        );
    }
    assert_eq!(r.records.len(), 3);
}

#[tokio::test]
async fn concurrency_one_serialises() {
    let w = wf(
        "serial",
        r#"
  concurrency: 1
  steps:
    - id: a
      uses: command
      with: { argv: [sleep, "0.2"] }
    - id: b
      uses: command
      with: { argv: [sleep, "0.2"] }
"#,
    );
    let t = Instant::now();
    let r = run(w, json!({})).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert!(t.elapsed().as_millis() >= 400, "{:?}", t.elapsed());
}

/// Data-driven: (workflow spec, inputs, expected run status, expected per-step statuses).
#[tokio::test]
async fn conditions_failures_and_skips() {
    type Case<'a> = (
        &'a str,
        serde_json::Value,
        RunStatus,
        &'a [(&'a str, StepStatus)],
    );
    let cases: &[Case] = &[
        (
            r#"
  inputs:
    enabled: { type: boolean, default: false }
  steps:
    - id: guarded
      uses: command
      if: inputs.enabled
      with: { argv: ["true"] }
    - id: after
      uses: command
      needs: [guarded]
      with: { argv: ["true"] }
"#,
            json!({}),
            RunStatus::Succeeded,
            &[
                ("guarded", StepStatus::Skipped),
                ("after", StepStatus::Succeeded),
            ],
        ),
        (
            r#"
  inputs:
    enabled: { type: boolean, default: false }
  steps:
    - id: guarded
      uses: command
      if: inputs.enabled
      with: { argv: ["true"] }
"#,
            json!({"enabled": "true"}),
            RunStatus::Succeeded,
            &[("guarded", StepStatus::Succeeded)],
        ),
        (
            r#"
  steps:
    - id: bad
      uses: command
      with: { argv: ["false"] }
    - id: child
      uses: command
      needs: [bad]
      with: { argv: ["true"] }
    - id: grandchild
      uses: command
      needs: [child]
      with: { argv: ["true"] }
    - id: independent
      uses: command
      with: { argv: ["true"] }
"#,
            json!({}),
            RunStatus::Failed,
            &[
                ("bad", StepStatus::Failed),
                ("child", StepStatus::Skipped),
                ("grandchild", StepStatus::Skipped),
                ("independent", StepStatus::Succeeded),
            ],
        ),
        (
            r#"
  steps:
    - id: bad
      uses: command
      continueOnError: true
      with: { argv: ["false"] }
    - id: child
      uses: command
      needs: [bad]
      if: steps.bad.status == 'failed'
      with: { argv: ["true"] }
"#,
            json!({}),
            RunStatus::Succeeded,
            &[
                ("bad", StepStatus::Failed),
                ("child", StepStatus::Succeeded),
            ],
        ),
        (
            r#"
  steps:
    - id: exit3
      uses: command
      with: { argv: [sh, -c, "exit 3"], expectExit: [0, 3] }
"#,
            json!({}),
            RunStatus::Succeeded,
            &[("exit3", StepStatus::Succeeded)],
        ),
    ];
    for (i, (spec, inp, want, steps)) in cases.iter().enumerate() {
        let r = run(wf(&format!("case{i}"), spec), inp.clone()).await;
        assert_eq!(r.status, *want, "case {i}: {r:#?}");
        for (id, st) in *steps {
            assert_eq!(status(&r, id), *st, "case {i} step {id}: {r:#?}");
        }
    }
}

#[tokio::test]
async fn retry_then_success_and_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("n");
    let spec = |attempts: u32, succeed_at: u32| {
        format!(
            r#"
  inputs:
    counter: {{ type: string }}
  steps:
    - id: flaky
      uses: script
      retry: {{ attempts: {attempts}, backoff: 50ms }}
      with:
        env: {{ COUNTER: "{{{{ inputs.counter }}}}" }}
        script: |
          n=$(cat "$COUNTER" 2>/dev/null || echo 0)
          n=$((n+1))
          echo $n > "$COUNTER"
          echo "attempt $n"
          [ $n -ge {succeed_at} ]
"#
        )
    };
    let t = Instant::now();
    let r = run(
        wf("retry", &spec(3, 3)),
        json!({"counter": counter.to_str().unwrap()}),
    )
    .await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    let a = recs(&r, "flaky");
    assert_eq!(
        a.iter().map(|x| (x.attempt, x.status)).collect::<Vec<_>>(),
        vec![
            (1, StepStatus::Failed),
            (2, StepStatus::Failed),
            (3, StepStatus::Succeeded)
        ]
    );
    assert_eq!(a[2].stdout, "attempt 3\n");
    // Backoff doubles: 50ms + 100ms at least.
    assert!(t.elapsed().as_millis() >= 150);

    std::fs::remove_file(&counter).unwrap();
    let r = run(
        wf("retry2", &spec(2, 99)),
        json!({"counter": counter.to_str().unwrap()}),
    )
    .await;
    assert_eq!(r.status, RunStatus::Failed);
    let a = recs(&r, "flaky");
    assert_eq!(a.len(), 2);
    assert!(a
        .iter()
        .all(|x| x.status == StepStatus::Failed && x.exit_code == Some(1)));
    assert!(a[1].error.as_deref().unwrap().contains("exit code 1"));
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let w = wf(
        "timeout",
        r#"
  inputs:
    pidfile: { type: string }
  steps:
    - id: slow
      uses: command
      timeout: 500ms
      with:
        argv: [sh, -c, 'sleep 60 & echo $! > "$1"; wait', sh, "{{ inputs.pidfile }}"]
"#,
    );
    let t = Instant::now();
    let r = run(w, json!({"pidfile": pidfile.to_str().unwrap()})).await;
    assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    assert_eq!(r.status, RunStatus::Failed);
    let rec = &recs(&r, "slow")[0];
    assert_eq!(rec.status, StepStatus::TimedOut, "{rec:#?}");
    assert!(rec
        .error
        .as_deref()
        .unwrap()
        .contains("timed out after 500ms"));
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut gone = false;
    for _ in 0..50 {
        if process_gone(pid) {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(gone, "child sleep {pid} survived the timeout");
}

#[tokio::test]
async fn outputs_flow_between_steps() {
    let w = wf(
        "outputs",
        r#"
  inputs:
    who: { type: string, default: world }
  steps:
    - id: a
      uses: command
      with: { argv: [echo, "hello {{ inputs.who }}"] }
      outputs:
        greeting: "{{ result.stdout | trim }}"
        code: "{{ result.exit_code }}"
    - id: b
      uses: command
      needs: [a]
      with: { argv: [echo, "{{ steps.a.outputs.greeting }}/{{ steps.a.outputs.code }}/{{ steps.a.status }}"] }
"#,
    );
    let r = run(w, json!({"who": "vacsine"})).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    assert_eq!(stdout(&r, "b"), "hello vacsine/0/succeeded\n");
    assert_eq!(
        r.outputs["a"],
        json!({"greeting": "hello vacsine", "code": 0})
    );
}

#[tokio::test]
async fn fan_out_one_record_per_node() {
    let w = wf(
        "fanout",
        r#"
  steps:
    - id: hello
      uses: command
      runsOn: { roles: [web] }
      with: { argv: [echo, "{{ node.name }} {{ node.labels.zone }} {{ target.name }}"] }
    - id: one
      uses: command
      runsOn: "{{ 'db' }}"
      with: { argv: [echo, "{{ node.name }}"] }
"#,
    );
    let e = engine();
    let mut req = RunRequest::new(w);
    let mk = |n: &str, role: &str, zone: &str| -> Arc<dyn vacsine_core::node::NodeOps> {
        Arc::new(
            vacsine_engine::LocalNode::new(n)
                .with_roles(&[role])
                .with_label("zone", zone),
        )
    };
    req.nodes = nodes(&[
        mk("web1", "web", "a"),
        mk("web2", "web", "b"),
        mk("db", "db", "c"),
    ]);
    req.target_name = "site".into();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev2 = events.clone();
    req.progress = Some(Arc::new(move |e: &ProgressEvent| {
        ev2.lock().unwrap().push(e.clone())
    }));
    let r = e.run(req).await.unwrap();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    let mut got: Vec<(String, String)> = recs(&r, "hello")
        .iter()
        .map(|x| (x.node.clone().unwrap(), x.stdout.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("web1".to_string(), "web1 a site\n".to_string()),
            ("web2".to_string(), "web2 b site\n".to_string())
        ]
    );
    assert_eq!(stdout(&r, "one"), "db\n");
    let ev = events.lock().unwrap();
    let started = ev
        .iter()
        .filter(|e| matches!(e, ProgressEvent::StepStarted { .. }))
        .count();
    let finished = ev
        .iter()
        .filter(|e| matches!(e, ProgressEvent::StepFinished { .. }))
        .count();
    assert_eq!((started, finished), (3, 3));
    assert!(matches!(
        ev.last(),
        Some(ProgressEvent::RunFinished {
            status: RunStatus::Succeeded,
            ..
        })
    ));
}

#[tokio::test]
async fn node_is_required_and_explained() {
    let w = wf(
        "nonode",
        r#"
  steps:
    - id: a
      uses: command
      with: { argv: ["true"] }
"#,
    );
    let e = engine();
    let mut req = RunRequest::new(w.clone());
    req.nodes = nodes(&[local("n1"), local("n2")]);
    let err = e.run(req).await.unwrap_err().to_string();
    assert!(
        err.contains("step `a` (command) needs a node") && err.contains("n1, n2"),
        "{err}"
    );
    let err = e
        .run(RunRequest::new(w.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no node was given"), "{err}");
    let mut req = RunRequest::new(w);
    req.nodes = nodes(&[local("n1"), local("n2")]);
    req.default_node = Some("n2".into());
    let r = e.run(req).await.unwrap();
    assert_eq!(r.records[0].node.as_deref(), Some("n2"));
}

#[tokio::test]
async fn inputs_are_typed_and_validated_before_running() {
    let w = wf(
        "inputs",
        r#"
  inputs:
    port: { type: port }
    ip: { type: ip }
    mode: { type: string, enum: [fast, slow], default: fast }
  steps:
    - id: a
      uses: command
      with: { argv: [echo, "{{ inputs.port + 1 }} {{ inputs.ip }} {{ inputs.mode }}"] }
"#,
    );
    let cases = [
        (
            json!({"port": "22", "ip": "10.0.0.1"}),
            Ok("23 10.0.0.1 fast\n"),
        ),
        (
            json!({"port": 70000, "ip": "10.0.0.1"}),
            Err("input `port`: expected a port 1-65535"),
        ),
        (
            json!({"port": 22, "ip": "1.2.3.4; id"}),
            Err("input `ip`: expected an IP address"),
        ),
        (
            json!({"ip": "10.0.0.1"}),
            Err("input `port`: required (type port)"),
        ),
        (
            json!({"port": 22, "ip": "10.0.0.1", "mode": "turbo"}),
            Err("input `mode`: \"turbo\" is not one of"),
        ),
        (
            json!({"port": 22, "ip": "10.0.0.1", "extra": 1}),
            Err("input `extra`: not declared"),
        ),
    ];
    let e = engine();
    for (inp, want) in cases {
        let mut req = RunRequest::new(w.clone());
        req.inputs = inputs(inp.clone());
        req.nodes = nodes(&[local("l")]);
        match (e.run(req).await, want) {
            (Ok(r), Ok(out)) => assert_eq!(stdout(&r, "a"), out),
            (Err(err), Err(msg)) => assert!(err.to_string().contains(msg), "{inp}: {err}"),
            (got, want) => panic!("{inp}: got {:?}, want {want:?}", got.map(|r| r.status)),
        }
    }
    // Nothing ran for the refused requests.
    assert_eq!(e.journal().runs(100).unwrap().len(), 1);
}

/// The engine is shared across tasks (agents, orchestrator): its futures must be `Send`.
#[allow(dead_code)]
fn engine_futures_are_send(e: &vacsine_engine::Engine, req: RunRequest) {
    fn send<T: Send>(_: T) {}
    fn sync<T: Send + Sync>(_: &T) {}
    sync(e);
    send(e.run(req));
    send(e.resume("x", Default::default()));
    send(e.rollback("x", Default::default()));
}

/// Largest number of records whose [started_at, finished_at) intervals overlap.
fn max_overlap(rs: &[&vacsine_core::record::StepRecord]) -> usize {
    rs.iter()
        .map(|x| {
            rs.iter()
                .filter(|y| {
                    y.started_at <= x.started_at
                        && x.started_at.as_str() < y.finished_at.as_deref().unwrap()
                })
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Data-driven: (spec, nodes, expected records, most overlapping records allowed, at least
/// this many seen overlapping). Fanned-out instances count against `concurrency`.
#[tokio::test]
async fn fan_out_instances_count_against_concurrency() {
    type Case<'a> = (&'a str, usize, usize, usize, usize);
    let cases: &[Case] = &[
        (
            r#"
  concurrency: 2
  steps:
    - id: fan
      uses: command
      runsOn: { roles: [web] }
      with: { argv: [sleep, "0.3"] }
"#,
            4,
            4,
            2,
            2,
        ),
        (
            r#"
  concurrency: 3
  steps:
    - id: fan
      uses: command
      runsOn: { roles: [web] }
      with: { argv: [sleep, "0.3"] }
    - id: other
      uses: command
      with: { argv: [sleep, "0.3"] }
    - id: third
      uses: command
      with: { argv: [sleep, "0.3"] }
"#,
            4,
            6,
            3,
            2,
        ),
        (
            r#"
  concurrency: 1
  steps:
    - id: fan
      uses: command
      runsOn: { roles: [web] }
      with: { argv: [sleep, "0.1"] }
"#,
            3,
            3,
            1,
            1,
        ),
    ];
    for (i, (spec, n, count, most, least)) in cases.iter().enumerate() {
        let mut list: Vec<Arc<dyn vacsine_core::node::NodeOps>> = (0..*n)
            .map(|k| {
                Arc::new(vacsine_engine::LocalNode::new(format!("web{k}")).with_roles(&["web"]))
                    as Arc<dyn vacsine_core::node::NodeOps>
            })
            .collect();
        list.push(local("default"));
        let mut req = RunRequest::new(wf("fanlimit", spec));
        req.nodes = nodes(&list);
        req.default_node = Some("default".into());
        let r = engine().run(req).await.unwrap();
        assert_eq!(r.status, RunStatus::Succeeded, "case {i}: {r:#?}");
        let all: Vec<_> = r.records.iter().collect();
        assert_eq!(all.len(), *count, "case {i}: {r:#?}");
        let got = max_overlap(&all);
        assert!(
            got <= *most && got >= *least,
            "case {i}: {got} overlapping records, expected {least}..={most}: {all:#?}"
        );
    }
}
