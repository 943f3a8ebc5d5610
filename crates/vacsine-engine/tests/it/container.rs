//! The `container` executor with a real image built locally (FROM scratch + static busybox).

use crate::support::*;
use serde_json::json;
use std::process::Command;
use std::sync::OnceLock;
use vacsine_core::record::{Level, StepStatus};
use vacsine_engine::{RunRequest, RunStatus};

const IMAGE: &str = "vacsine-test/action:1";

const ACTION: &str = r#"#!/bin/busybox sh
read -r doc
case "$doc" in
  *'"fail"'*) echo "asked to fail" >&2; exit 3 ;;
  *'"sleep"'*) sleep 30 ;;
esac
printf '{"changed": false, "messages": ["hello from the action", {"level": "warn", "text": "careful"}], "outputs": {"doc": %s, "token": "%s"}}\n' "$doc" "$TOKEN"
"#;

/// Build the test image once; None (skip) when Docker or a static busybox is unavailable.
fn image() -> Option<&'static str> {
    static BUILT: OnceLock<bool> = OnceLock::new();
    let ok = *BUILT.get_or_init(|| {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| {
            std::path::Path::new(p).exists()
                && Command::new("file").arg(p).output().map(|o| String::from_utf8_lossy(&o.stdout).contains("statically")).unwrap_or(true)
        });
        let (Some(bb), true) = (busybox, have("docker")) else { return false };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::copy(bb, dir.path().join("bin/busybox")).unwrap();
        std::fs::write(dir.path().join("action.sh"), ACTION).unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY bin/busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY action.sh /action.sh\nRUN [\"/bin/busybox\", \"chmod\", \"755\", \"/action.sh\"]\nENTRYPOINT [\"/action.sh\"]\n",
        )
        .unwrap();
        Command::new("docker")
            .args(["build", "-q", "-t", IMAGE])
            .arg(dir.path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if !ok {
        assert!(
            std::env::var_os("VACSINE_REQUIRE_DOCKER").is_none(),
            "Docker required but the test image cannot be built"
        );
        eprintln!("SKIP: Docker or a static busybox unavailable");
    }
    ok.then_some(IMAGE)
}

#[tokio::test]
async fn container_action_json_in_json_out() {
    let Some(image) = image() else { return };
    let w = wf(
        "action",
        &format!(
            r#"
  inputs:
    ip: {{ type: ip }}
    mode: {{ type: string, default: ok }}
  steps:
    - id: act
      uses: container
      timeout: 2s
      with:
        image: {image}
        input: {{ ip: "{{{{ inputs.ip }}}}", mode: "{{{{ inputs.mode }}}}", list: [1, 2] }}
        env: {{ TOKEN: "t-{{{{ inputs.mode }}}}" }}
"#
        ),
    );
    let e = engine();
    let mk = |mode: &str| {
        let mut req = RunRequest::new(w.clone());
        req.inputs = inputs(json!({"ip": "192.0.2.7", "mode": mode}));
        req
    };
    let r = e.run(mk("ok")).await.unwrap();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    let rec = &recs(&r, "act")[0];
    assert!(!rec.changed);
    assert_eq!(
        rec.outputs["doc"]["input"],
        json!({"ip": "192.0.2.7", "mode": "ok", "list": [1, 2]})
    );
    assert_eq!(rec.outputs["doc"]["step_id"], json!("act"));
    assert_eq!(rec.outputs["token"], json!("t-ok"));
    assert_eq!(rec.messages[0].text, "hello from the action");
    assert_eq!(rec.messages[1].level, Level::Warn);

    let r = e.run(mk("fail")).await.unwrap();
    let rec = &recs(&r, "act")[0];
    assert_eq!(rec.status, StepStatus::Failed);
    assert_eq!(rec.exit_code, Some(3));
    assert_eq!(rec.stderr, "asked to fail\n");

    let r = e.run(mk("sleep")).await.unwrap();
    let rec = &recs(&r, "act")[0];
    assert_eq!(rec.status, StepStatus::TimedOut, "{rec:#?}");
    // The container was removed, not left running.
    let ps = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            "label=vacsine.action=1",
            "--filter",
            "ancestor=vacsine-test/action:1",
        ])
        .output()
        .unwrap();
    let mut left = String::from_utf8_lossy(&ps.stdout).trim().to_string();
    for _ in 0..20 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let ps = Command::new("docker")
            .args(["ps", "-aq", "--filter", "ancestor=vacsine-test/action:1"])
            .output()
            .unwrap();
        left = String::from_utf8_lossy(&ps.stdout).trim().to_string();
    }
    assert!(left.is_empty(), "containers left: {left}");
}
