//! `vacsine enforce --site`: job 1 run by a site's agent. Orchestrator and agent are real
//! processes on loopback; the target is this test's own container (`es-<id>-node`, from the
//! project's busybox base image, never the demo containers) with a file whose mode breaks the
//! policy. The agent runs the whole pipeline there and the report comes back.

use crate::orchestrator::{run_records, Agent, Orch};
use crate::{docker, docker_available, root, text, write};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The test's container and network, removed whatever happens.
pub(crate) struct OwnNode {
    prefix: String,
}

impl OwnNode {
    pub(crate) fn node(&self) -> String {
        format!("{}-node", self.prefix)
    }
    fn network(&self) -> String {
        format!("{}-lan", self.prefix)
    }
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.node()])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network()])
            .output();
    }
}

pub(crate) fn start_node() -> OwnNode {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let d = vacsine_docker::connect().await.expect("docker");
        vacsine_docker::demo::images(&d).await.expect("demo images");
    });
    let n = OwnNode {
        prefix: format!(
            "es-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ),
    };
    docker(&["network", "create", &n.network()]);
    let image = vacsine_docker::demo::image_tag("base");
    docker(&[
        "run",
        "-d",
        "--name",
        &n.node(),
        "--network",
        &n.network(),
        "--network-alias",
        "node",
        &image,
    ]);
    // The finding: a secret anyone may read and write.
    docker(&[
        "exec",
        &n.node(),
        "sh",
        "-c",
        "echo s3cret > /etc/es-secret && chmod 0666 /etc/es-secret",
    ]);
    n
}

pub(crate) fn files(dir: &Path, n: &OwnNode) -> (String, String) {
    let target = write(
        dir,
        "target.yaml",
        &format!(
            "apiVersion: vacsine.io/v1\nkind: Target\nmetadata: {{name: {p}}}\nspec:\n  driver: docker\n  nodes:\n    - {{name: node, container: {c}, roles: [server]}}\n",
            p = n.prefix,
            c = n.node()
        ),
    );
    let policy = write(
        dir,
        "policy.yaml",
        &format!(
            r#"apiVersion: vacsine.io/v1
kind: Policy
metadata: {{name: site-secrets}}
spec:
  catalog: [{catalog}]
  requirements:
    - id: secret-mode
      title: The secret is not world readable
      severity: high
      nodes: {{roles: [server]}}
      check: {{file: {{path: /etc/es-secret, maxMode: "0640"}}}}
      fixes:
        - {{uses: fix-permissions, with: {{path: /etc/es-secret, mode: "0640"}}, strategy: configure, disruption: low}}
    - id: passwd-mode
      title: The user list is not writable by others
      severity: medium
      nodes: {{roles: [server]}}
      check: {{file: {{path: /etc/passwd, maxMode: "0644"}}}}
      fixes:
        - {{uses: fix-permissions, with: {{path: /etc/passwd, mode: "0644"}}}}
"#,
            catalog = root().join("catalog").display()
        ),
    );
    (
        policy.to_str().unwrap().to_string(),
        target.to_str().unwrap().to_string(),
    )
}

fn row<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row {id} in {report:#}"))
}

/// The identity of a step record: engine run, step, attempt, node. A record at the
/// orchestrator names the run the operator was given as `run_id` and the site's engine run
/// (sandbox, target, rollback) as `engine_run_id`; the report's records name the engine run.
fn record_id(r: &Value) -> (String, String, u64, String) {
    (
        r["engine_run_id"]
            .as_str()
            .or(r["run_id"].as_str())
            .unwrap()
            .to_string(),
        r["step_id"].as_str().unwrap().to_string(),
        r["attempt"].as_u64().unwrap(),
        r["node"].as_str().unwrap_or("-").to_string(),
    )
}

#[test]
fn enforce_at_a_site_runs_the_pipeline_there_and_brings_the_report_back() {
    if !docker_available() {
        return;
    }
    // Sandboxes are made while it runs: not beside the tests that count every sandbox object
    // on the engine (Ctrl-C, gc).
    let _g = crate::site_lock();
    let n = start_node();
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 5000);
    let key = o.site("edge-enf");
    let agent = Agent::start(&o, &key, "edge-enf-1", &d.path().join("agent"));
    let (policy, target) = files(d.path(), &n);

    // Bad inputs are refused here, before anything is queued.
    let nosite = o.cli(&[
        "enforce", "--site", "nope", "--policy", &policy, "--target", &target,
    ]);
    assert_eq!(nosite.status.code(), Some(1), "{}", text(&nosite));
    assert!(
        text(&nosite).contains("vacsine site create nope"),
        "{}",
        text(&nosite)
    );
    let bad = write(
        d.path(),
        "bad.yaml",
        &std::fs::read_to_string(&policy)
            .unwrap()
            .replace("severity: medium", "severty: medium"),
    );
    let invalid = o.cli(&[
        "enforce",
        "--site",
        "edge-enf",
        "--policy",
        bad.to_str().unwrap(),
        "--target",
        &target,
    ]);
    assert_eq!(invalid.status.code(), Some(1), "{}", text(&invalid));
    assert!(
        text(&invalid).contains("bad.yaml:16:") && text(&invalid).contains("severty"),
        "{}",
        text(&invalid)
    );
    assert_eq!(
        o.status()["runs"].as_array().unwrap().len(),
        0,
        "nothing queued"
    );

    // The pipeline at the site: fixed in the sandbox, then on the target, verified.
    let out = o.cli(&[
        "enforce", "--site", "edge-enf", "--policy", &policy, "--target", &target, "--format",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nagent:\n{}",
        text(&out),
        agent.log()
    );
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(report["verdict"], "verified", "{report:#}");
    assert_eq!(report["policy"], "site-secrets");
    let s = row(&report, "secret-mode");
    assert_eq!(
        (
            s["node"].as_str(),
            s["target_before"].as_str(),
            s["sandbox_after"].as_str(),
            s["target_after"].as_str()
        ),
        (Some("node"), Some("fail"), Some("pass"), Some("pass")),
        "{s:#}"
    );
    let p = row(&report, "passwd-mode");
    assert_eq!(
        (p["target_before"].as_str(), p["target_after"].as_str()),
        (Some("pass"), Some("pass")),
        "{p:#}"
    );
    // Progress went to stderr as the records arrived: the fix's step, by name.
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains("queued at site edge-enf") && progress.contains("chmod"),
        "{progress}"
    );

    // The target is really fixed.
    assert_eq!(
        docker(&["exec", &n.node(), "stat", "-c", "%a", "/etc/es-secret"]),
        "640"
    );
    // No sandbox left behind.
    let sbx = report["sandbox"]["id"].as_str().unwrap();
    assert_eq!(
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={}={sbx}", vacsine_docker::SANDBOX_LABEL),
        ]),
        "",
        "sandbox {sbx} left behind"
    );

    // The run: succeeded with its verdict, each step record once, the same as the report's.
    let runs = o.status()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(
        (
            run["status"].as_str(),
            run["message"].as_str(),
            run["workflow"].as_str()
        ),
        (
            Some("succeeded"),
            Some("verified"),
            Some("enforce/site-secrets")
        )
    );
    let id = run["id"].as_str().unwrap();
    let recs = run_records(&o, id);
    // Issue 15: one run id end to end: every record names the run the operator was given.
    assert!(recs.iter().all(|r| r["run_id"] == id), "{recs:#?}");
    let ids: Vec<_> = recs.iter().map(record_id).collect();
    let distinct: BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), distinct.len(), "a record arrived twice: {ids:?}");
    let in_report: BTreeSet<_> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(record_id)
        .collect();
    assert!(!in_report.is_empty());
    assert_eq!(
        distinct, in_report,
        "records at the orchestrator = report's"
    );
    // Sandbox twice (idempotence) and the target once: three runs of the fix.
    let chmods = recs
        .iter()
        .filter(|r| r["step_id"] == "secret-mode--node/chmod")
        .count();
    assert_eq!(chmods, 3, "{recs:#?}");
    assert_eq!(run["records"].as_u64(), Some(recs.len() as u64));

    // The report is kept with the run; logs still work.
    let logs = o.cli(&["logs", id]);
    assert!(logs.status.success(), "{}", text(&logs));
    assert!(
        text(&logs).contains("enforce/site-secrets") && text(&logs).contains("succeeded"),
        "{}",
        text(&logs)
    );
    let fetched = report_of(&o, id);
    assert_eq!(fetched["run"]["id"], id);
    assert_eq!(fetched["report"], report);

    // Again, human output: nothing left to do, same exit code as a local enforce.
    let again = o.cli(&[
        "enforce", "--site", "edge-enf", "--policy", &policy, "--target", &target,
    ]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let human = String::from_utf8_lossy(&again.stdout);
    assert!(
        human.contains("secret-mode") && human.contains("compliant"),
        "{human}"
    );

    a_rejected_fix_fails_the_run_with_its_verdict(&o, d.path(), &n, &target);
}

/// A fix that cannot work is rejected in the sandbox: the run fails with the verdict as its
/// message, the CLI exits 2 as a local enforce does, and the target is untouched.
fn a_rejected_fix_fails_the_run_with_its_verdict(o: &Orch, dir: &Path, n: &OwnNode, target: &str) {
    docker(&["exec", &n.node(), "chmod", "0666", "/etc/es-secret"]);
    let policy = write(
        dir,
        "wrong-fix.yaml",
        &format!(
            r#"apiVersion: vacsine.io/v1
kind: Policy
metadata: {{name: wrong-fix}}
spec:
  catalog: [{catalog}]
  requirements:
    - id: secret-mode
      title: The secret is not world readable
      severity: high
      nodes: {{roles: [server]}}
      check: {{file: {{path: /etc/es-secret, maxMode: "0640"}}}}
      fixes:
        - {{uses: fix-permissions, with: {{path: /etc/es-secret, mode: "0644"}}}}
"#,
            catalog = root().join("catalog").display()
        ),
    );
    let out = o.cli(&[
        "enforce",
        "--site",
        "edge-enf",
        "--policy",
        policy.to_str().unwrap(),
        "--target",
        target,
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(report["verdict"], "rejected_in_sandbox", "{report:#}");
    let run = o.status()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workflow"] == "enforce/wrong-fix")
        .cloned()
        .unwrap();
    assert_eq!(
        (run["status"].as_str(), run["message"].as_str()),
        (Some("failed"), Some("rejected_in_sandbox"))
    );
    assert_eq!(
        docker(&["exec", &n.node(), "stat", "-c", "%a", "/etc/es-secret"]),
        "666",
        "the target is untouched"
    );
}

/// `GET /v1/runs/{id}/report` as an operator.
fn report_of(o: &Orch, id: &str) -> Value {
    use vacsine_contract::client::OperatorClient;
    use vacsine_contract::proto;
    let cfg = proto::OperatorConfig {
        url: o.url.clone(),
        pin: o.pin.clone(),
        token: std::fs::read_to_string(o.data.join("operator.token"))
            .unwrap()
            .trim()
            .to_string(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = OperatorClient::new(&cfg).unwrap();
        c.get(&format!("{}/{id}/report", proto::OP_RUNS))
            .await
            .unwrap()
    })
}
