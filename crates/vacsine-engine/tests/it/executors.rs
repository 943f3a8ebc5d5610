//! Executors beyond command/script/file/firewall: http, wait-until, workflow, sysctl.

use crate::support::*;
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use vacsine_core::node::{NodeOps, Observation, Site};
use vacsine_core::policy::Check;
use vacsine_core::record::StepStatus;
use vacsine_core::target::ResolvedNode;
use vacsine_engine::{Catalog, Engine, Journal, LocalNode, RunRequest, RunStatus};

/// A minimal HTTP/1.1 server answering every request with `status` and a JSON echo.
async fn http_server(status: u16) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len = text[..i]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= i + 4 + len {
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&got).to_string();
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                let first = head.lines().next().unwrap_or("");
                let auth = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-auth: "))
                    .unwrap_or("");
                let resp_body = json!({"line": first, "auth": auth, "body": body}).to_string();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{resp_body}",
                    resp_body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), h)
}

#[tokio::test]
async fn http_calls_an_api_with_json_and_checks_status() {
    let (url, h) = http_server(201).await;
    let w = wf(
        "http",
        r#"
  inputs:
    url: { type: string }
    ip: { type: ip }
  steps:
    - id: post
      uses: http
      with:
        method: POST
        url: "{{ inputs.url }}/block"
        headers: { x-auth: abc }
        json: { ip: "{{ inputs.ip }}", tags: [a, b] }
        expectStatus: [201]
      outputs:
        line: "{{ result.outputs.json.line }}"
    - id: wrong-status
      uses: http
      with: { url: "{{ inputs.url }}/x", expectStatus: [200] }
"#,
    );
    let e = engine();
    let mut req = RunRequest::new(w);
    req.inputs = inputs(json!({"url": url, "ip": "10.1.2.3"}));
    let r = e.run(req).await.unwrap();
    h.abort();
    let post = &recs(&r, "post")[0];
    assert_eq!(post.status, StepStatus::Succeeded, "{post:#?}");
    assert_eq!(post.node, None);
    assert_eq!(post.outputs["status"], json!(201));
    assert_eq!(post.outputs["line"], json!("POST /block HTTP/1.1"));
    assert_eq!(post.outputs["json"]["auth"], json!("abc"));
    let sent: serde_json::Value =
        serde_json::from_str(post.outputs["json"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"ip": "10.1.2.3", "tags": ["a", "b"]}));
    let wrong = &recs(&r, "wrong-status")[0];
    assert_eq!(wrong.status, StepStatus::Failed);
    assert_eq!(
        wrong.error.as_deref(),
        Some("HTTP status 201, expected [200]")
    );
}

/// A site observing files on local nodes (a real observation through NodeOps).
struct FileSite(Arc<dyn NodeOps>);

#[async_trait]
impl Site for FileSite {
    fn nodes(&self) -> Vec<ResolvedNode> {
        vec![self.0.node().clone()]
    }
    fn node_ops(&self, _name: &str) -> Option<Arc<dyn NodeOps>> {
        Some(self.0.clone())
    }
    async fn observe(&self, _node: &str, check: &Check) -> Observation {
        match check {
            Check::File(f) => match self.0.read_file(&f.path).await {
                Ok(c) => Observation::File {
                    path: f.path.clone(),
                    stat: c.as_ref().map(|c| vacsine_core::node::FileStat {
                        mode: c.mode,
                        uid: c.uid,
                        gid: c.gid,
                        owner: None,
                        group: None,
                        is_dir: false,
                        size: c.content.len() as u64,
                    }),
                    content: c.map(|c| String::from_utf8_lossy(&c.content).into_owned()),
                },
                Err(e) => Observation::Error {
                    message: e.to_string(),
                },
            },
            other => Observation::Error {
                message: format!("{} not observed here", other.probe()),
            },
        }
    }
}

#[tokio::test]
async fn wait_until_polls_a_check_until_it_passes() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let w = wf(
        "wait",
        &format!(
            r#"
  steps:
    - id: later
      uses: command
      with: {{ argv: [sh, -c, 'sleep 0.3; echo ok > "$1"', sh, "{}"] }}
    - id: wait
      uses: wait-until
      with:
        probe: {{ file: {{ path: "{}", contains: "^ok$" }} }}
        timeout: 5s
        interval: 50ms
    - id: never
      uses: wait-until
      with:
        probe: {{ file: {{ path: "{}/never" }} }}
        timeout: 200ms
        interval: 50ms
"#,
            flag.display(),
            flag.display(),
            dir.path().display()
        ),
    );
    let node: Arc<dyn NodeOps> = Arc::new(LocalNode::new("l"));
    let mut req = RunRequest::new(w);
    req.nodes = nodes(std::slice::from_ref(&node));
    req.observer = Some(Arc::new(FileSite(node)));
    let r = engine().run(req).await.unwrap();
    assert_eq!(status(&r, "wait"), StepStatus::Succeeded, "{r:#?}");
    assert!(recs(&r, "wait")[0].duration_ms.unwrap() >= 200);
    let never = &recs(&r, "never")[0];
    assert_eq!(never.status, StepStatus::Failed);
    assert!(
        never.error.as_deref().unwrap().contains("file probe still"),
        "{never:#?}"
    );
}

#[tokio::test]
async fn sub_workflow_runs_with_prefixed_records_and_typed_inputs() {
    let child = wf(
        "child",
        r#"
  inputs:
    port: { type: port }
  steps:
    - id: show
      uses: command
      with: { argv: [echo, "port {{ inputs.port + 0 }} on {{ node.name }}"] }
      outputs: { line: "{{ result.stdout | trim }}" }
    - id: fail
      uses: command
      needs: [show]
      with: { argv: ["{{ 'false' if inputs.port == 23 else 'true' }}"] }
"#,
    );
    let parent = wf(
        "parent",
        r#"
  inputs:
    p: { type: string }
  steps:
    - id: sub
      uses: workflow
      with: { workflow: child, inputs: { port: "{{ inputs.p }}" } }
    - id: use
      uses: command
      needs: [sub]
      with: { argv: [echo, "{{ steps.sub.outputs.show.line }}"] }
"#,
    );
    let e = Engine::new(
        Journal::in_memory().unwrap(),
        [child].into_iter().collect::<Catalog>(),
    );
    let r = run_on(&e, parent.clone(), json!({"p": "22"})).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    let ids: Vec<&str> = r.records.iter().map(|x| x.step_id.as_str()).collect();
    assert_eq!(ids, vec!["sub", "sub/show", "sub/fail", "use"]);
    assert_eq!(stdout(&r, "use"), "port 22 on local\n");

    let r = run_on(&e, parent.clone(), json!({"p": "23"})).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(status(&r, "sub/fail"), StepStatus::Failed);
    assert_eq!(status(&r, "sub"), StepStatus::Failed);
    assert_eq!(status(&r, "use"), StepStatus::Skipped);

    let r = run_on(&e, parent, json!({"p": "not-a-port"})).await;
    assert_eq!(status(&r, "sub"), StepStatus::Failed);
    assert!(recs(&r, "sub")[0]
        .error
        .as_deref()
        .unwrap()
        .contains("input `port` of workflow `child`: expected a port"));
}

#[tokio::test]
async fn sysctl_in_a_netns_changes_and_undoes() {
    if !have("ip") {
        eprintln!("SKIP: ip unavailable");
        return;
    }
    let ns = format!("vx-{}", uniq());
    if !std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    {
        eprintln!("SKIP: cannot create a network namespace");
        return;
    }
    let node: Arc<dyn NodeOps> = Arc::new(LocalNode::new("ns").in_netns(&ns));
    let before = node
        .sysctl_get("net.ipv4.ip_forward")
        .await
        .unwrap()
        .unwrap();
    let want = if before == "1" { "0" } else { "1" };
    let w = wf(
        "sysctl",
        &format!("  steps:\n    - id: fwd\n      uses: sysctl\n      with: {{ key: net.ipv4.ip_forward, value: \"{want}\" }}\n"),
    );
    let e = engine();
    let mut req = RunRequest::new(w.clone());
    req.nodes = nodes(std::slice::from_ref(&node));
    let r = e.run(req).await.unwrap();
    let mut req = RunRequest::new(w);
    req.nodes = nodes(std::slice::from_ref(&node));
    let r2 = e.run(req).await.unwrap();
    let after = node
        .sysctl_get("net.ipv4.ip_forward")
        .await
        .unwrap()
        .unwrap();
    e.rollback(&r.run_id, nodes(std::slice::from_ref(&node)))
        .await
        .unwrap();
    let restored = node
        .sysctl_get("net.ipv4.ip_forward")
        .await
        .unwrap()
        .unwrap();
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &ns])
        .status();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    assert!(r.changed && !r2.changed);
    assert_eq!(after, want);
    assert_eq!(restored, before);
}

#[tokio::test]
async fn docker_exec_refuses_a_non_container_node() {
    let w = wf(
        "dexec",
        r#"
  steps:
    - id: a
      uses: docker.exec
      with: { argv: ["true"] }
"#,
    );
    let r = run(w, json!({})).await;
    let rec = &recs(&r, "a")[0];
    assert_eq!(rec.status, StepStatus::Failed);
    assert!(
        rec.error
            .as_deref()
            .unwrap()
            .contains("uses the local driver"),
        "{rec:#?}"
    );
}
