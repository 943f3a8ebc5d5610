//! Issue 6: an nft ruleset that cannot load is caught by `validate` and `plan` (a dry run with
//! `nft -c` in a throw-away network namespace), not in the sandbox.

use super::*;

/// A firewall fix whose verdict comes from an input: the rule whitelist lets any word
/// through, nft does not.
const OPEN_PORT: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata: {name: open-port}
spec:
  inputs:
    port: {type: port}
    action: {type: string, default: accept}
  steps:
    - id: allow
      uses: firewall
      with:
        table: vacsine_open
        chains: [{name: input, hook: input, priority: 0, policy: accept}]
        rules:
          - {chain: input, rule: "tcp dport {{ inputs.port }} {{ inputs.action }}"}
"#;

/// A catalog workflow whose rule is literal and cannot load.
const LITERAL_BAD: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata: {name: literal-bad}
spec:
  steps:
    - id: rules
      uses: firewall
      with:
        table: vacsine_literal
        chains: [{name: input, hook: input, priority: 0, policy: accept}]
        rules:
          - {chain: input, rule: "tcp dport 22 frobnicate"}
"#;

/// A policy for the nodes of role `legacy`: the firewall must drop by default (it does not on
/// a fresh node), fixed by `open-port` with `ACTION`.
const POLICY: &str = r#"apiVersion: vacsine.io/v1
kind: Policy
metadata: {name: nft-dry-run}
spec:
  catalog: [catalog]
  requirements:
    - id: legacy-default-drop
      title: legacy drops inbound by default
      severity: high
      nodes: {roles: [legacy]}
      check: {firewall: {defaultPolicy: {input: drop}}}
      fixes:
        - uses: open-port
          with: {port: 8080, action: ACTION}
"#;

fn nft_usable() -> bool {
    let ok = Command::new("unshare")
        .args(["-n", "nft", "list", "tables"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: nft cannot run in a network namespace here");
    }
    ok
}

fn setup(dir: &Path, action: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("catalog")).unwrap();
    write(&dir.join("catalog"), "open-port.yaml", OPEN_PORT);
    write(dir, "policy.yaml", &POLICY.replace("ACTION", action))
}

#[test]
fn issue6_validate_dry_runs_firewall_rulesets() {
    if !nft_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = setup(dir.path(), "frobnicate");
    let p = policy.display().to_string();
    let o = vacsine(&["validate", &p], dir.path());
    let t = flat(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    // Located at the fix's `uses` in the policy, naming requirement, fix, workflow step and
    // nft's own message.
    assert!(t.contains("policy.yaml:13:"), "{t}");
    for w in [
        "requirement `legacy-default-drop`, fix `open-port`",
        "workflow `open-port`, step `allow`",
        "does not load (`nft -c`)",
        "Error: syntax error",
        "frobnicate",
    ] {
        assert!(t.contains(w), "`{w}` missing: {t}");
    }
    // The same through JSON.
    let o = vacsine(&["validate", "--format", "json", &p], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["problems"][0]["line"], 13, "{v}");
    // A verdict nft knows passes.
    let policy = setup(dir.path(), "drop");
    let o = vacsine(&["validate", &policy.display().to_string()], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A catalog step that needs no input is checked as written, located in its own file.
    let lit = write(dir.path(), "literal-bad.yaml", LITERAL_BAD);
    let o = vacsine(&["validate", &lit.display().to_string()], dir.path());
    let t = flat(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("literal-bad.yaml:7:") && t.contains("workflow `literal-bad`, step `rules`"),
        "{t}"
    );
}

/// Without `nft` (hidden here by an empty `/usr/sbin` in a mount namespace of the test's
/// own), validate says the rulesets were not checked and goes on.
#[test]
fn issue6_validate_without_nft_warns_and_goes_on() {
    let hidden = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs none /usr/sbin && ! command -v nft")
        .output()
        .is_ok_and(|o| o.status.success());
    if !hidden || !Path::new("/usr/bin/unshare").exists() {
        eprintln!("skipping: cannot hide nft in a mount namespace here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = setup(dir.path(), "frobnicate");
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs none /usr/sbin && exec \"$0\" validate --format json \"$1\"")
        .arg(env!("CARGO_BIN_EXE_vacsine"))
        .arg(&policy)
        .env("VACSINE_HOME", dir.path())
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(v["valid"], true, "{v}");
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{v}");
    assert!(
        w[0].as_str().unwrap().contains("`nft` is not installed"),
        "{v}"
    );
}

/// The shipped catalog and the demo policy pass the dry run (every fix with literal inputs).
#[test]
fn issue6_shipped_catalog_passes_the_nft_dry_run() {
    if !nft_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = vacsine(
        &[
            "validate",
            "--format",
            "json",
            "examples/edge-site/policy.yaml",
            "--catalog",
            "catalog",
        ],
        dir.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
}

/// A site of uniquely named containers from the demo images (never the demo site itself),
/// one per demo role; removed on drop.
struct OwnSite {
    prefix: String,
}

impl OwnSite {
    const ROLES: [&'static str; 5] = ["web", "gateway", "legacy", "ssh", "outside"];

    fn up(dir: &Path) -> (OwnSite, PathBuf) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let d = vacsine_docker::connect().await.expect("docker");
            vacsine_docker::demo::images(&d).await.expect("demo images");
        });
        let prefix = format!("h-avail-nft-{}", std::process::id());
        let site = OwnSite {
            prefix: prefix.clone(),
        };
        let net = format!("{prefix}-lan");
        let ok = |o: Output| assert!(o.status.success(), "{o:?}");
        ok(Command::new("docker")
            .args(["network", "create", &net])
            .output()
            .unwrap());
        let mut nodes = String::new();
        for role in Self::ROLES {
            let name = format!("{prefix}-{role}");
            ok(Command::new("docker")
                .args(["run", "-d", "--name", &name, "--hostname", role])
                .args(["--network", &net, "--network-alias", role])
                .arg(vacsine_docker::demo::image_tag(role))
                .output()
                .unwrap());
            if role != "outside" {
                nodes.push_str(&format!(
                    "    - {{name: {role}, container: {name}, roles: [{role}]}}\n"
                ));
            }
        }
        let target = write(
            dir,
            "target.yaml",
            &format!(
                "apiVersion: vacsine.io/v1\nkind: Target\nmetadata: {{name: {prefix}}}\nspec:\n  driver: docker\n  nodes:\n{nodes}  vantagePoints:\n    - {{name: outside, container: {prefix}-outside}}\n"
            ),
        );
        (site, target)
    }
}

impl Drop for OwnSite {
    fn drop(&mut self) {
        for role in Self::ROLES {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", &format!("{}-{role}", self.prefix)])
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("{}-lan", self.prefix)])
            .output();
    }
}

#[test]
fn issue6_plan_refuses_a_ruleset_that_cannot_load() {
    if !docker_available() || !nft_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_site, target) = OwnSite::up(dir.path());
    let target = target.display().to_string();
    let policy = setup(dir.path(), "frobnicate");
    let o = vacsine(
        &[
            "plan",
            "--policy",
            &policy.display().to_string(),
            "--target",
            &target,
        ],
        dir.path(),
    );
    let t = flat(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    for w in [
        "policy.yaml:13:",
        "requirement `legacy-default-drop` on node `legacy`, fix `open-port`",
        "workflow `open-port`, step `allow`",
        "does not load (`nft -c`)",
        "frobnicate",
    ] {
        assert!(t.contains(w), "`{w}` missing: {t}");
    }
    assert!(
        o.stdout.is_empty(),
        "nothing may be printed but the error: {t}"
    );
    // The same fix with a verdict nft knows is planned.
    let policy = setup(dir.path(), "drop");
    let o = vacsine(
        &[
            "plan",
            "--policy",
            &policy.display().to_string(),
            "--target",
            &target,
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("open-port on legacy"));
    // The shipped catalog and the demo policy plan on a fresh copy of the demo site: every
    // firewall fix renders a ruleset that loads (exit 2: some requirements have no fix).
    let o = vacsine(
        &[
            "plan",
            "--policy",
            "examples/edge-site/policy.yaml",
            "--target",
            &target,
        ],
        dir.path(),
    );
    let t = text(&o);
    assert!(matches!(o.status.code(), Some(0) | Some(2)), "{t}");
    assert!(
        !t.contains("does not load") && !t.contains("warning"),
        "{t}"
    );
    for fix in ["block-port on legacy", "default-deny-inbound on gateway"] {
        assert!(t.contains(fix), "{fix} not planned: {t}");
    }
}
