//! End-to-end tests of check and enforce against the real demo site in Docker.
//! They share the demo containers, so they run one at a time (SITE lock).
// Tests and benches set up and inspect their peers (docker, nft, the binary) directly.
#![allow(clippy::disallowed_methods)]

mod availability;
mod enforce;
mod fleet;
mod probes;
mod scap_import;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;
pub use vacsine_docker::DockerDriver;
use vacsine_enforce::inputs::{load_inputs, Inputs};

pub static SITE: Mutex<()> = Mutex::const_new(());

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Docker client, or None (skip) when no engine runs and VACSINE_REQUIRE_DOCKER is unset.
pub async fn docker() -> Option<bollard_client::Docker> {
    match vacsine_docker::connect().await {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var("VACSINE_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
                panic!("Docker is required (VACSINE_REQUIRE_DOCKER=1) but unreachable: {e}");
            }
            eprintln!(
                "skipping: Docker unreachable ({e}); set VACSINE_REQUIRE_DOCKER=1 to fail instead"
            );
            None
        }
    }
}

pub mod bollard_client {
    pub use vacsine_docker::Docker;
}

/// Fresh demo site.
pub async fn fresh_site(d: &bollard_client::Docker) {
    vacsine_docker::demo::images(d).await.expect("demo images");
    vacsine_docker::demo::up(d).await.expect("demo up");
}

pub fn demo_inputs() -> Inputs {
    let r = root();
    load_inputs(
        &r.join("examples/edge-site/policy.yaml"),
        &r.join("examples/edge-site/target.yaml"),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
}

/// Inputs from a policy text written next to the demo target (catalog resolved from the repo).
pub fn inputs_with_policy(dir: &Path, policy: &str) -> Inputs {
    let p = dir.join("policy.yaml");
    let catalog = root().join("catalog");
    let text = policy.replace("CATALOG", &catalog.display().to_string());
    std::fs::write(&p, text).unwrap();
    load_inputs(&p, &root().join("examples/edge-site/target.yaml"), &[])
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// Sandbox objects left on the engine.
pub async fn sandbox_leftovers() -> Vec<String> {
    let out = tokio::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=vacsine.sandbox"])
        .output()
        .await
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    for kind in [["network", "ls"], ["volume", "ls"], ["image", "ls"]] {
        let out = tokio::process::Command::new("docker")
            .args([kind[0], kind[1], "-q", "--filter", "label=vacsine.sandbox"])
            .output()
            .await
            .unwrap();
        v.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    v
}

pub fn opts() -> vacsine_enforce::EnforceOptions {
    vacsine_enforce::EnforceOptions {
        progress: Some(Arc::new(|m: &str| eprintln!("  .. {m}"))),
        ..Default::default()
    }
}

/// `docker exec` for test set-up (argv, no shell interpolation of data).
pub async fn dexec(container: &str, argv: &[&str]) -> String {
    let out = tokio::process::Command::new("docker")
        .arg("exec")
        .arg(container)
        .args(argv)
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ruleset of a container's network namespace, as text.
pub async fn ruleset(container: &str) -> String {
    // `-s` (stateless): counters move with any traffic (a DNS lookup counts in Docker's nat
    // table) and are not part of the ruleset's meaning.
    nft_list(container, true).await
}

/// `nft list ruleset` in the container's network namespace, with counters unless `stateless`.
pub async fn nft_list(container: &str, stateless: bool) -> String {
    let pid = tokio::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", container])
        .output()
        .await
        .unwrap();
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    let mut args = vec!["-t", pid.as_str(), "-n", "nft"];
    if stateless {
        args.push("-s");
    }
    args.extend(["list", "ruleset"]);
    let out = tokio::process::Command::new("nsenter")
        .args(&args)
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
