//! The `ansible` executor against a container node: a real `ansible-playbook` reaches the
//! container through the shipped `vacsine_docker` connection plugin (`docker exec`).
//!
//! The container runs `vacsine-test/python:1`, a Debian rootfs with Python built locally with
//! `debootstrap --variant=minbase` from the mirror the host's apt is configured with, then
//! `docker import`ed. It is built once per machine (the image is kept); later runs reuse it.

use crate::support::*;
use async_trait::async_trait;
use serde_json::json;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use vacsine_core::node::{ExecOutput, FileContent, NodeError, NodeOps};
use vacsine_core::record::StepStatus;
use vacsine_core::target::ResolvedNode;
use vacsine_engine::{RunRequest, RunStatus};

const IMAGE: &str = "vacsine-test/python:1";

fn required() -> bool {
    std::env::var_os("VACSINE_REQUIRE_DOCKER").is_some_and(|v| v == "1")
}

fn skip(why: &str) -> Option<&'static str> {
    assert!(!required(), "VACSINE_REQUIRE_DOCKER=1 but {why}");
    eprintln!("SKIP: {why}");
    None
}

/// Build (once per machine) the image with Python; None (skip) when impossible.
fn python_image() -> Option<&'static str> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        if let vacsine_docker::debian::Built::Now { suite, took } =
            vacsine_docker::debian::ensure_image(IMAGE, &["python3"])?
        {
            eprintln!(
                "built {IMAGE} ({suite}, debootstrap minbase + python3) in {:.0} s",
                took.as_secs_f64()
            );
        }
        Ok(())
    });
    match r {
        Ok(()) => Some(IMAGE),
        Err(e) => skip(e),
    }
}

/// A running container, removed on drop.
struct Container(String);

impl Container {
    fn start(image: &str) -> Container {
        let name = format!("vacsine-ansible-{}", uniq());
        let out = Command::new("docker")
            .args(["run", "-d", "--name", &name, "--network", "none"])
            .args([
                "--label",
                "vacsine.test=ansible",
                image,
                "sleep",
                "infinity",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Container(name)
    }
    fn sh(&self, script: &str) -> String {
        let out = Command::new("docker")
            .args(["exec", &self.0, "/bin/sh", "-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The smallest node of the `docker` driver the executor needs: its name and handle.
struct ContainerNode(ResolvedNode);

#[async_trait]
impl NodeOps for ContainerNode {
    fn node(&self) -> &ResolvedNode {
        &self.0
    }
    fn driver(&self) -> &'static str {
        "docker"
    }
    async fn exec(
        &self,
        _: &[String],
        _: &[(String, String)],
        _: Option<Vec<u8>>,
        _: Duration,
    ) -> Result<ExecOutput, NodeError> {
        Err(unsupported("exec"))
    }
    async fn read_file(&self, _: &str) -> Result<Option<FileContent>, NodeError> {
        Err(unsupported("read_file"))
    }
    async fn write_file(&self, _: &str, _: &[u8], _: u32, _: u32, _: u32) -> Result<(), NodeError> {
        Err(unsupported("write_file"))
    }
    async fn chmod(&self, _: &str, _: u32) -> Result<(), NodeError> {
        Err(unsupported("chmod"))
    }
    async fn nft_ruleset(&self) -> Result<String, NodeError> {
        Err(unsupported("nft_ruleset"))
    }
    async fn nft_apply(&self, _: &str) -> Result<(), NodeError> {
        Err(unsupported("nft_apply"))
    }
    async fn sysctl_get(&self, _: &str) -> Result<Option<String>, NodeError> {
        Err(unsupported("sysctl_get"))
    }
    async fn sysctl_set(&self, _: &str, _: &str) -> Result<(), NodeError> {
        Err(unsupported("sysctl_set"))
    }
    async fn networks(&self) -> Result<Vec<String>, NodeError> {
        Err(unsupported("networks"))
    }
    async fn quarantine(&self, _: Option<&str>) -> Result<Vec<String>, NodeError> {
        Err(unsupported("quarantine"))
    }
    async fn release(&self, _: &[String]) -> Result<(), NodeError> {
        Err(unsupported("release"))
    }
}

fn unsupported(op: &str) -> NodeError {
    NodeError::Unsupported {
        op: op.into(),
        driver: "test container".into(),
    }
}

const SPEC: &str = r#"
  inputs:
    path: { type: string }
    line: { type: string }
    fetch: { type: string }
  steps:
    - id: play
      uses: ansible
      runsOn: box
      timeout: 180s
      with:
        vars: { target_path: "{{ inputs.path }}", wanted: "{{ inputs.line }}", fetch_dir: "{{ inputs.fetch }}" }
        tasks:
          - name: ensure the line
            ansible.builtin.lineinfile: { path: "{{ target_path }}", line: "{{ wanted }}", create: true, mode: "0640" }
          - name: copy a file in
            ansible.builtin.copy: { content: "copied {{ wanted }}\n", dest: "{{ target_path }}.copy" }
          - name: read it back
            ansible.builtin.command: { argv: [cat, "{{ target_path }}"] }
            register: got
            changed_when: false
          - name: fetch it
            ansible.builtin.fetch: { src: "{{ target_path }}", dest: "{{ fetch_dir }}/", flat: true }
"#;

#[tokio::test]
async fn ansible_changes_a_file_in_a_container_then_reports_no_change() {
    if !have("ansible-playbook") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "ansible-playbook required in CI"
        );
        eprintln!("SKIP: ansible-playbook not on PATH");
        return;
    }
    let Some(image) = python_image() else { return };
    let c = Container::start(image);
    c.sh("mkdir -p /etc/app && printf 'keep = 1\\n' > /etc/app/app.conf");
    let node: Arc<dyn NodeOps> = Arc::new(ContainerNode(ResolvedNode {
        name: "box".into(),
        roles: vec![],
        labels: Default::default(),
        handle: c.0.clone(),
    }));
    let fetched = tempfile::tempdir().unwrap();
    let line = "allow = 'a b' $(touch /tmp/pwned) {{ 7 * 7 }}";
    let e = engine();
    let mk = || {
        let mut req = RunRequest::new(wf("ansdock", SPEC));
        req.inputs = inputs(json!({
            "path": "/etc/app/app.conf",
            "line": line,
            "fetch": fetched.path().to_str().unwrap(),
        }));
        req.nodes = nodes(std::slice::from_ref(&node));
        req.target_name = "test".into();
        req
    };

    let t = Instant::now();
    let r = e.run(mk()).await.unwrap();
    let first = t.elapsed();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    let rec = &recs(&r, "play")[0];
    assert_eq!(rec.status, StepStatus::Succeeded);
    assert!(rec.changed, "{rec:#?}");
    let texts: Vec<&str> = rec.messages.iter().map(|m| m.text.as_str()).collect();
    for want in [
        "changed: ensure the line",
        "changed: copy a file in",
        "ok: read it back",
        "changed: fetch it",
    ] {
        assert!(
            texts.iter().any(|t| t.starts_with(want)),
            "{want}: {texts:?}"
        );
    }
    assert_eq!(rec.outputs["changed_tasks"], json!(3), "{rec:#?}");
    // Really changed inside the container (and only there), values kept literal.
    let want = format!("keep = 1\n{line}\n");
    assert_eq!(c.sh("cat /etc/app/app.conf"), want);
    assert_eq!(c.sh("stat -c %a /etc/app/app.conf"), "640\n");
    assert_eq!(
        c.sh("cat /etc/app/app.conf.copy"),
        format!("copied {line}\n")
    );
    assert_eq!(c.sh("test -e /tmp/pwned && echo yes || echo no"), "no\n");
    assert_eq!(
        std::fs::read_to_string(fetched.path().join("app.conf")).unwrap(),
        want
    );

    let t = Instant::now();
    let r2 = e.run(mk()).await.unwrap();
    let second = t.elapsed();
    assert_eq!(r2.status, RunStatus::Succeeded, "{r2:#?}");
    let rec2 = &recs(&r2, "play")[0];
    assert!(!rec2.changed, "{rec2:#?}");
    assert_eq!(rec2.outputs["changed_tasks"], json!(0));
    assert!(
        rec2.messages.iter().all(|m| m.text.starts_with("ok: ")),
        "{rec2:#?}"
    );
    assert_eq!(c.sh("cat /etc/app/app.conf"), want);
    eprintln!(
        "ansible on a container: first run {:.1} s, second run {:.1} s",
        first.as_secs_f64(),
        second.as_secs_f64()
    );
}

#[tokio::test]
async fn ansible_on_a_missing_container_fails_the_step() {
    if !have("ansible-playbook") {
        eprintln!("SKIP: ansible-playbook not on PATH");
        return;
    }
    if python_image().is_none() {
        return;
    }
    let node: Arc<dyn NodeOps> = Arc::new(ContainerNode(ResolvedNode {
        name: "box".into(),
        roles: vec![],
        labels: Default::default(),
        handle: format!("vacsine-absent-{}", uniq()),
    }));
    let mut req = RunRequest::new(wf(
        "ansgone",
        r#"
  steps:
    - id: play
      uses: ansible
      runsOn: box
      with:
        interpreter: /usr/bin/python3
        tasks:
          - name: touch
            ansible.builtin.file: { path: /tmp/x, state: touch }
"#,
    ));
    req.nodes = nodes(&[node]);
    let r = e_run(req).await;
    let rec = &recs(&r, "play")[0];
    assert_eq!(rec.status, StepStatus::Failed, "{rec:#?}");
    let err = rec.error.as_deref().unwrap();
    assert!(
        err.contains("task `touch` unreachable") && err.contains("No such container"),
        "{err}"
    );
}

async fn e_run(req: RunRequest) -> vacsine_engine::RunReport {
    engine().run(req).await.unwrap()
}
