//! The `vacsine` binary end to end: located errors and exit codes, the JSON contracts.
// Tests and benches set up and inspect their peers (docker, nft, the binary) directly.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod api;
mod enforce_site;
mod gc;
mod link;
mod nft_dry_run;
mod orchestrator;
mod scap;
mod scap_docs;
mod signals;
mod watch;

/// Tests that use the demo site (fixed container names) run one at a time.
static SITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn site_lock() -> std::sync::MutexGuard<'static, ()> {
    SITE.lock().unwrap_or_else(|e| e.into_inner())
}

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

/// `docker ARGS…`, which must succeed: its trimmed stdout.
fn docker(args: &[&str]) -> String {
    let o = Command::new("docker").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Output with miette's line wrapping undone (runs of spaces and `│` become one space).
fn flat(o: &Output) -> String {
    text(o)
        .split(|c: char| c.is_whitespace() || c == '│')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
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

/// Issue 18: a policy written against the earlier name of a shipped catalog input
/// (`disable-service`'s `services_file`, now `inetd_conf`) still validates, with a warning at
/// its file:line naming the new name; `--format json` lists it among the warnings.
#[test]
fn issue18_a_deprecated_catalog_input_name_validates_with_a_located_warning() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("old.yaml");
    std::fs::write(
        &f,
        format!(
            "apiVersion: vacsine.io/v1\nkind: Policy\nmetadata: {{name: old}}\nspec:\n  catalog: [{}]\n  requirements:\n    - id: no-telnet\n      title: telnetd does not run\n      severity: high\n      check: {{process: {{name: in.telnetd, running: false}}}}\n      fixes:\n        - uses: disable-service\n          with: {{service: in.telnetd, services_file: /etc/inetd.conf}}\n",
            root().join("catalog").display()
        ),
    )
    .unwrap();
    let o = vacsine(&["validate", f.to_str().unwrap()], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("warning: ")
            && t.contains("old.yaml:13:")
            && t.contains("input `services_file` of workflow `disable-service` is deprecated: it is now `inetd_conf`"),
        "{t}"
    );
    let o = vacsine(
        &["validate", f.to_str().unwrap(), "--format", "json"],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true, "{v}");
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap_or("").contains("now `inetd_conf`")),
        "{v}"
    );
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
    let _g = site_lock();
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
    let _g = site_lock();
    let dir = tempfile::tempdir().unwrap();
    let o = vacsine(&["demo", "up"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = vacsine(&["sandbox", "gc"], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(sandbox_objects(), "", "gc left objects");
    let child = Command::new(env!("CARGO_BIN_EXE_vacsine"))
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

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const RUN_OK: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata: {name: greet}
spec:
  inputs:
    who: {type: string}
  steps:
    - id: hello
      uses: command
      with: {argv: [echo, "hello {{ inputs.who }}"]}
    - id: after
      needs: [hello]
      uses: command
      with: {argv: ["true"]}
"#;

#[test]
fn run_records_steps_and_sets_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write(dir.path(), "wf.yaml", RUN_OK);
    let o = vacsine(
        &[
            "run",
            wf.to_str().unwrap(),
            "--input",
            "who=$(id); rm -rf /",
            "--format",
            "json",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["stdout"], "hello $(id); rm -rf /\n",
        "the input arrives literally"
    );
    for k in [
        "run_id",
        "step_id",
        "attempt",
        "node",
        "executor",
        "started_at",
        "finished_at",
        "duration_ms",
        "status",
        "messages",
    ] {
        assert!(lines[0].get(k).is_some(), "{k} missing");
    }
    let run_id = lines[0]["run_id"].as_str().unwrap().to_string();
    let o = vacsine(&["runs", "--format", "json"], dir.path());
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs[0]["id"], run_id.as_str());
    let o = vacsine(&["logs", &run_id], dir.path());
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).contains("hello#1"), "{}", text(&o));
    // Missing input: an error before anything runs.
    let o = vacsine(&["run", wf.to_str().unwrap()], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("who"), "{}", text(&o));
    // A failing step: exit 2.
    let bad = write(
        dir.path(),
        "fail.yaml",
        &RUN_OK.replace("argv: [\"true\"]", "argv: [\"false\"]"),
    );
    let o = vacsine(
        &["run", bad.to_str().unwrap(), "--input", "who=x"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // An unknown executor: located error, exit 1.
    let bad = write(
        dir.path(),
        "bad.yaml",
        &RUN_OK.replace(
            "uses: command\n      with: {argv: [\"true\"]}",
            "uses: comand\n      with: {argv: [\"true\"]}",
        ),
    );
    let o = vacsine(
        &["run", bad.to_str().unwrap(), "--input", "who=x"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("bad.yaml:13:"), "{}", text(&o));
}

const RUN_SLOW: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata: {name: slow}
spec:
  inputs:
    marker: {type: string}
  steps:
    - id: first
      uses: command
      with: {argv: [sh, -c, 'echo x >> "$0"', "{{ inputs.marker }}"]}
    - id: long
      needs: [first]
      uses: command
      with: {argv: [sleep, "30"]}
"#;

#[test]
fn kill_9_then_resume_does_not_rerun_finished_steps() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write(dir.path(), "slow.yaml", RUN_SLOW);
    let marker = dir.path().join("marker");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vacsine"))
        .args([
            "run",
            wf.to_str().unwrap(),
            "--input",
            &format!("marker={}", marker.display()),
        ])
        .current_dir(root())
        .env("VACSINE_HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Wait until `long` is journaled as running.
    let run_id = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached its long step"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        let o = vacsine(&["runs", "--format", "json"], dir.path());
        let Ok(runs) = serde_json::from_slice::<serde_json::Value>(&o.stdout) else {
            continue;
        };
        let Some(id) = runs[0]["id"].as_str() else {
            continue;
        };
        let o = vacsine(&["logs", id, "--format", "json"], dir.path());
        if String::from_utf8_lossy(&o.stdout).contains("\"step_id\":\"long\"") {
            break id.to_string();
        }
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let o = vacsine(&["run", "--resume", &run_id], dir.path());
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("interrupted"), "{t}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "x\n",
        "the finished step was re-run"
    );
    // Issue 7: the interrupted attempt has no measured duration: `—`, not `0ms`.
    let o = vacsine(&["logs", &run_id], dir.path());
    let t = text(&o);
    let line = t
        .lines()
        .find(|l| l.contains("long#") && l.contains("interrupted"))
        .unwrap_or_else(|| panic!("no interrupted record in\n{t}"));
    assert!(line.contains('—') && !line.contains(" 0ms"), "{line}");
}

/// The committed schemas (for editors: `# yaml-language-server: $schema=…`) match the code.
#[test]
fn committed_schemas_are_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["policy", "target", "workflow"] {
        let o = vacsine(&["schema", kind], dir.path());
        let committed =
            std::fs::read_to_string(root().join(format!("schemas/{kind}.schema.json"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            committed,
            "schemas/{kind}.schema.json is stale: regenerate with `vacsine schema {kind} > schemas/{kind}.schema.json`"
        );
    }
    let o = vacsine(&["schema", "executors"], dir.path());
    let committed = std::fs::read_to_string(root().join("docs/executors.md")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        committed,
        "docs/executors.md is stale: regenerate with `vacsine schema executors > docs/executors.md`"
    );
}

/// Issue 7: usage errors are errors (exit 1), not "a run failed" (2); report formats are
/// refused by the commands that print no report.
#[test]
fn issue7_usage_errors_exit_1() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let wf = write(dir.path(), "wf.yaml", RUN_OK);
    let wf = wf.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["run", wf, "--bogus"], "--bogus"),
        (&["run", wf, "-i"], "--input"),
        (&["run", wf, "-i", "who"], "NAME=VALUE"),
        (
            &["run", wf, "--format", "xml"],
            "expected `human` or `json`",
        ),
        (
            &["run", wf, "--format", "junit"],
            "report format of `check` and `enforce`",
        ),
        (
            &["runs", "--format", "sarif"],
            "report format of `check` and `enforce`",
        ),
        (
            &["logs", "x", "--format", "junit"],
            "report format of `check` and `enforce`",
        ),
        (&["validate", wf, "--format", "sarif"], "report format"),
        (&["runs", "--limit", "abc"], "--limit"),
        (&["run", wf, "--node", "x=y"], "role=ROLE"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, words) in cases {
        let o = vacsine(args, dir.path());
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
        assert!(t.contains(words), "{args:?}: `{words}` not in\n{t}");
    }
    // A non-UTF-8 input value.
    let o = Command::new(env!("CARGO_BIN_EXE_vacsine"))
        .args(["run", wf, "-i"])
        .arg(std::ffi::OsStr::from_bytes(b"who=\xff"))
        .env("VACSINE_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("UTF-8"), "{}", text(&o));
    for args in [&["--help"][..], &["run", "--help"], &["--version"]] {
        assert_eq!(vacsine(args, dir.path()).status.code(), Some(0), "{args:?}");
    }
}

/// Issue 15: `--help` documents every exit code CI pipelines rely on, and a command that ends
/// with each of the codes a test can cause here exits with it (0, 1, 2 above; 3 in
/// `submit_retry`; 130/143 in `signals`).
#[test]
fn issue15_help_lists_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["-h"]] {
        let o = vacsine(args, dir.path());
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        let t = flat(&o);
        for words in [
            "Exit codes: 0 verified or all pass",
            "1 error",
            "2 failures remain",
            "3 the orchestrator did not take a submission within --retry-for",
            "130 interrupted",
            "143 terminated",
        ] {
            assert!(t.contains(words), "{args:?}: `{words}` not in\n{t}");
        }
    }
}

const RUN_TYPED: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata: {name: typed}
spec:
  inputs:
    pattern: {type: string}
    port: {type: port}
    names: {type: array, default: []}
  steps:
    - id: show
      uses: command
      with:
        argv: [echo, "{{ inputs.pattern }}", "{{ inputs.port }}", "{{ inputs.names | length }}"]
        env: {PORT: "{{ inputs.port }}"}
"#;

/// Issue 7: command-line inputs are strings unless their declared type is a list or a map;
/// a typed input used whole as an argv/env element runs.
#[test]
fn issue7_command_line_inputs_follow_declared_types() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write(dir.path(), "typed.yaml", RUN_TYPED);
    let o = vacsine(
        &[
            "run",
            wf.to_str().unwrap(),
            "-i",
            "pattern=[0-9]+",
            "-i",
            "port=8080",
            "-i",
            r#"names=["a", "b"]"#,
            "--format",
            "json",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rec: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(rec["stdout"], "[0-9]+ 8080 2\n", "{rec}");
    let o = vacsine(
        &[
            "run",
            wf.to_str().unwrap(),
            "-i",
            "pattern={x}",
            "-i",
            "port=22",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Issue 7: a wrong or missing `--input` is shown at the input's declaration, with the value
/// given, once.
#[test]
fn issue7_input_errors_point_at_the_declaration() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write(dir.path(), "typed.yaml", RUN_TYPED);
    let wf = wf.to_str().unwrap();
    let o = vacsine(
        &["run", wf, "-i", "pattern=x", "-i", "port=ssh"],
        dir.path(),
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("typed.yaml:7:5"), "{t}");
    assert!(
        t.contains(r#"port="ssh""#) && t.contains("expected a port"),
        "{t}"
    );
    assert!(
        t.contains("port: {type: port}"),
        "no snippet of the declaration: {t}"
    );
    assert!(t.contains("1 problem found"), "{t}");
    let o = vacsine(&["run", wf, "-i", "names=[1"], dir.path());
    let t = flat(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    for want in [
        "typed.yaml:8:5",
        "expected a JSON array",
        "typed.yaml:6:5",
        "`pattern`",
    ] {
        assert!(t.contains(want), "`{want}` not in\n{t}");
    }
    assert!(t.contains("3 problems found"), "{t}");
    let o = vacsine(
        &["run", wf, "-i", "pattern=x", "-i", "port=1", "-i", "prot=2"],
        dir.path(),
    );
    let t = flat(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("declares no input `prot`"), "{t}");
}

const BAD_WORKFLOW: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata: {name: Bad_Name}
spec:
  inputs:
    port:
      type: port
      default: ssh
  steps:
    - id: a
      uses: command
      needs: [nope]
      timeout: 5 parsecs
      with: {argv: ["true"]}
    - id: a
      uses: command
      with: {argv: ["true"]}
"#;

/// Issue 7: one workflow validator: each problem once, at its own line, in `validate` and
/// in `run`.
#[test]
fn issue7_each_workflow_problem_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let wf = write(dir.path(), "bad.yaml", BAD_WORKFLOW);
    let wf = wf.to_str().unwrap();
    for args in [&["validate", wf][..], &["run", wf]] {
        let o = vacsine(args, dir.path());
        let t = flat(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
        for want in [
            "bad.yaml:3:18: invalid workflow name",
            "bad.yaml:8:16: default of input `port`",
            "bad.yaml:12:15: step `a` needs unknown step `nope`",
            "bad.yaml:13:16: step `a`: `timeout`",
            "bad.yaml:15:11: duplicate step id `a`",
            "5 problems found",
        ] {
            assert!(t.contains(want), "{args:?}: `{want}` not in\n{t}");
        }
    }
}

/// `--node` chooses where the steps that name no node run. Error paths are decided from the
/// target file (no Docker); the success path uses a `driver: local` target.
#[test]
fn run_node_option_chooses_where_steps_run() {
    let dir = tempfile::tempdir().unwrap();
    let t = "examples/edge-site/target.yaml";
    let q = "catalog/quarantine-node.yaml";
    let listing = "web (roles: web), gateway (roles: gateway)";
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", q, "--target", t],
            "--node NAME or --node role=ROLE",
        ),
        (
            &["run", q, "--target", t, "--node", "nope"],
            "no node `nope`",
        ),
        (&["run", q, "--target", t, "--node", "role=db"], "role `db`"),
        (
            &[
                "run", q, "--target", t, "--node", "web", "--node", "role=db",
            ],
            "role `db`",
        ),
    ];
    for (args, words) in cases {
        let o = vacsine(args, dir.path());
        let txt = flat(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {txt}");
        assert!(txt.contains(words), "{args:?}: `{words}` not in\n{txt}");
        assert!(
            txt.contains(listing),
            "{args:?}: nodes not listed in\n{txt}"
        );
    }
    let target = write(
        dir.path(),
        "here.yaml",
        "apiVersion: vacsine.io/v1\nkind: Target\nmetadata: {name: here}\nspec:\n  driver: local\n  nodes:\n    - {name: a, roles: [web]}\n    - {name: b, roles: [web]}\n    - {name: c, roles: [db]}\n",
    );
    let wf = write(
        dir.path(),
        "who.yaml",
        "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata: {name: who}\nspec:\n  steps:\n    - id: say\n      uses: command\n      with: {argv: [echo, \"{{ node.name }}\"]}\n",
    );
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            wf.to_str().unwrap(),
            "--target",
            target.to_str().unwrap(),
        ];
        args.extend(extra);
        args.extend(["--format", "json"]);
        let o = vacsine(&args, dir.path());
        let mut nodes: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                // Step records; an error is one `{"error": ...}` line instead.
                let v = serde_json::from_str::<serde_json::Value>(l).unwrap();
                v["stdout"].as_str().map(|s| s.trim().to_string())
            })
            .collect();
        nodes.sort();
        (o.status.code(), nodes, flat(&o))
    };
    let (code, nodes, t) = run(&["--node", "role=web"]);
    assert_eq!(
        (code, nodes),
        (Some(0), vec!["a".to_string(), "b".to_string()]),
        "{t}"
    );
    let (code, nodes, t) = run(&["--node", "c"]);
    assert_eq!((code, nodes), (Some(0), vec!["c".to_string()]), "{t}");
    let (code, nodes, t) = run(&["--node", "c", "--node", "role=web"]);
    assert_eq!(code, Some(0), "{t}");
    assert_eq!(nodes, ["a", "b", "c"]);
    let (code, _, t) = run(&[]);
    assert_eq!(code, Some(1), "{t}");
    assert!(
        t.contains("a (roles: web), b (roles: web), c (roles: db)"),
        "{t}"
    );
}

/// Issue 6: with `--format json`, an error before any result is one JSON object on stdout.
fn json_error(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(1), "{}", text(o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", text(o)));
    v["error"].clone()
}

#[test]
fn issue6_json_errors_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let (content, _, words) = BAD[0];
    let policy = write(dir.path(), "bad-policy.yaml", content);
    let target = root().join("examples/edge-site/target.yaml");
    for cmd in ["check", "plan", "enforce"] {
        let o = vacsine(
            &[
                cmd,
                "--policy",
                policy.to_str().unwrap(),
                "--target",
                target.to_str().unwrap(),
                "--format",
                "json",
            ],
            dir.path(),
        );
        let e = json_error(&o);
        assert!(
            e["file"].as_str().unwrap().ends_with("bad-policy.yaml"),
            "{cmd}: {e}"
        );
        assert_eq!(
            (e["line"].as_u64(), e["column"].as_u64()),
            (Some(8), Some(7)),
            "{cmd}: {e}"
        );
        assert!(e["message"].as_str().unwrap().contains(words), "{cmd}: {e}");
        // Human output is unchanged: the diagnostic on stderr, nothing on stdout.
        let o = vacsine(
            &[
                cmd,
                "--policy",
                policy.to_str().unwrap(),
                "--target",
                target.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(o.stdout.is_empty(), "{cmd}: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("bad-policy.yaml:8:7"));
    }
    // A workflow with a cycle, run with --format json.
    let (content, _, words) = BAD[3];
    let wf = write(dir.path(), "bad.yaml", content);
    let o = vacsine(
        &["run", wf.to_str().unwrap(), "--format", "json"],
        dir.path(),
    );
    // `run` prints JSON Lines: the error is one line of them.
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        1,
        "{}",
        text(&o)
    );
    let e = json_error(&o);
    assert!(e["file"].as_str().unwrap().ends_with("bad.yaml"), "{e}");
    assert_eq!(e["line"].as_u64(), Some(6), "{e}");
    assert!(e["column"].as_u64().is_some(), "{e}");
    assert!(e["message"].as_str().unwrap().contains(words), "{e}");
    // An error without a place (an unknown run) still comes as JSON, with its help.
    let e = json_error(&vacsine(
        &["logs", "no-such-run", "--format", "json"],
        dir.path(),
    ));
    assert!(
        e["message"].as_str().unwrap().contains("no-such-run"),
        "{e}"
    );
    assert!(e["help"].as_str().is_some(), "{e}");
}
