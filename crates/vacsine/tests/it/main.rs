//! The `vacsine` binary end to end: located errors and exit codes, the JSON contracts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vacsine(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vacsine"))
        .args(args)
        .current_dir(root())
        .env("VACSINE_HOME", home)
        .env("NO_COLOR", "1")
        .output()
        .expect("run vacsine")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn docker_available() -> bool {
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("VACSINE_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
        panic!("Docker is required (VACSINE_REQUIRE_DOCKER=1) but unreachable");
    }
    if !ok {
        eprintln!("skipping: Docker unreachable");
    }
    ok
}

/// (file content, expected line:column prefix, expected words)
const BAD: &[(&str, &str, &str)] = &[
    (
        "apiVersion: vacsine.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  requirements:\n    - id: r\n      title: t\n      severty: low\n",
        ":8:7:",
        "unknown field `severty`",
    ),
    (
        "apiVersion: vacsine.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  requirements:\n    - id: r\n      title: t\n      severity: low\n      check: {file: {path: /x, contains: '(('}}\n",
        ":9:",
        "invalid regular expression",
    ),
    (
        "apiVersion: vacsine.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  requirements:\n    - id: r\n      title: t\n      severity: low\n      check: {process: {name: x, running: false}}\n      fixes: [{uses: no-such-workflow}]\n",
        ":10:",
        "not in the catalog",
    ),
    (
        "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  steps:\n    - {id: a, uses: command, with: {argv: [\"true\"]}, needs: [b]}\n    - {id: b, uses: command, with: {argv: [\"true\"]}, needs: [a]}\n",
        ":6:",
        "cycle",
    ),
    (
        "apiVersion: vacsine.io/v1\nkind: Target\nmetadata: {name: t}\nspec:\n  driver: dockr\n  nodes: []\n",
        ":5:",
        "dockr",
    ),
    (
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
        ":",
        "",
    ),
];

#[test]
fn validate_reports_located_errors_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (content, at, words)) in BAD.iter().enumerate() {
        let f = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&f, content).unwrap();
        let o = vacsine(&["validate", f.to_str().unwrap()], dir.path());
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "case {i}: {t}");
        assert!(
            t.contains(&format!("bad{i}.yaml{at}")),
            "case {i}: no location {at} in\n{t}"
        );
        assert!(t.contains(words), "case {i}: `{words}` not in\n{t}");
        assert!(!t.contains("panicked"), "case {i}: {t}");
    }
}

#[test]
fn shipped_files_validate() {
    let dir = tempfile::tempdir().unwrap();
    let o = vacsine(
        &[
            "validate",
            "examples/edge-site/policy.yaml",
            "examples/edge-site/target.yaml",
            "--catalog",
            "catalog",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = vacsine(
        &[
            "validate",
            "--format",
            "json",
            "examples/edge-site/policy.yaml",
        ],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
}

#[test]
fn enforce_with_bad_input_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("policy.yaml");
    std::fs::write(&bad, BAD[0].0).unwrap();
    let report = dir.path().join("r.json");
    let o = vacsine(
        &[
            "enforce",
            "--policy",
            bad.to_str().unwrap(),
            "--target",
            "examples/edge-site/target.yaml",
            "--report",
            report.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!report.exists(), "a report was written for bad input");
    let o = vacsine(
        &[
            "enforce",
            "--policy",
            "missing.yaml",
            "--target",
            "examples/edge-site/target.yaml",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("missing.yaml"), "{}", text(&o));
}

#[test]
fn schema_is_json_schema() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["policy", "target", "workflow"] {
        let o = vacsine(&["schema", kind], dir.path());
        assert_eq!(o.status.code(), Some(0));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["properties"]["spec"].is_object(), "{kind}: {v}");
    }
}

#[test]
fn check_json_contract_and_exit_code_on_demo_site() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = vacsine(&["demo", "up"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = vacsine(
        &[
            "check",
            "--policy",
            "examples/edge-site/policy.yaml",
            "--target",
            "examples/edge-site/target.yaml",
            "--format",
            "json",
        ],
        dir.path(),
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "failures remain on a fresh site: {}",
        text(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let results = v["results"].as_array().unwrap();
    assert!(results.len() >= 8);
    for r in results {
        for k in ["requirement", "node", "outcome", "observed", "message"] {
            assert!(r.get(k).is_some(), "{k} missing in {r}");
        }
    }
    assert!(results.iter().filter(|r| r["outcome"] == "fail").count() >= 3);
    let o = vacsine(
        &[
            "check",
            "--policy",
            "examples/edge-site/policy.yaml",
            "--target",
            "examples/edge-site/target.yaml",
            "--format",
            "sarif",
        ],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let o = vacsine(
        &[
            "check",
            "--policy",
            "examples/edge-site/policy.yaml",
            "--target",
            "examples/edge-site/target.yaml",
            "--format",
            "junit",
        ],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("<testsuite "));
    let o = vacsine(
        &[
            "plan",
            "--policy",
            "examples/edge-site/policy.yaml",
            "--target",
            "examples/edge-site/target.yaml",
        ],
        dir.path(),
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("kind: Workflow"),
        "{}",
        text(&o)
    );
    let o = vacsine(&["demo", "down"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Sandbox objects carrying the label, as listed by the docker CLI.
fn sandbox_objects() -> String {
    let mut all = String::new();
    for args in [
        vec!["ps", "-aq", "--filter", "label=vacsine.sandbox"],
        vec!["network", "ls", "-q", "--filter", "label=vacsine.sandbox"],
        vec!["volume", "ls", "-q", "--filter", "label=vacsine.sandbox"],
        vec!["images", "-q", "--filter", "label=vacsine.sandbox"],
    ] {
        let o = Command::new("docker").args(&args).output().unwrap();
        all.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    all.trim().to_string()
}

#[test]
fn ctrl_c_during_enforce_removes_the_sandbox() {
    if !docker_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = vacsine(&["demo", "up"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = vacsine(&["sandbox", "gc"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(sandbox_objects(), "", "gc left objects");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vacsine"))
        .args([
            "enforce",
            "--policy",
            "examples/edge-site/policy.yaml",
            "--target",
            "examples/edge-site/target.yaml",
        ])
        .current_dir(root())
        .env("VACSINE_HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the sandbox exists, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sandbox_objects().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no sandbox appeared");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("removing sandbox"));
    assert_eq!(sandbox_objects(), "", "sandbox objects left after Ctrl-C");
    vacsine(&["demo", "down"], dir.path());
}
