use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptions;
use bollard::Docker;
use std::collections::BTreeMap;
use tokio::sync::OnceCell;
use vacsine_core::doc::{Loc, Metadata};
use vacsine_core::target::{DriverKind, NodeSpec, Target, TargetSpec, VantagePoint};
use vacsine_docker::{demo, DockerSite};

/// The engine, or `None` (test skipped) when it is unreachable and not required.
pub async fn docker() -> Option<Docker> {
    let r = async {
        let d = vacsine_docker::connect().await?;
        d.ping()
            .await
            .map_err(|e| vacsine_docker::DockerError::Connect {
                detail: e.to_string(),
            })?;
        Ok::<_, vacsine_docker::DockerError>(d)
    }
    .await;
    match r {
        Ok(d) => Some(d),
        Err(e) if std::env::var("VACSINE_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("VACSINE_REQUIRE_DOCKER=1 but {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: no Docker Engine ({e}); set VACSINE_REQUIRE_DOCKER=1 to fail instead"
            );
            None
        }
    }
}

static IMAGES: OnceCell<()> = OnceCell::const_new();
/// Tests that use the demo site take turns (each brings it up fresh and down again).
static DEMO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Build the demo images once per test run.
pub async fn images(d: &Docker) {
    IMAGES
        .get_or_init(|| async {
            demo::images_busybox(d).await.expect("build demo images");
        })
        .await;
}

/// A fresh demo site, held exclusively until the guard drops; the site is removed then (also
/// on panic).
pub struct DemoGuard {
    _lock: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for DemoGuard {
    fn drop(&mut self) {
        let out = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", "label=vacsine.demo=1"])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", "-v", id])
                    .output();
            }
        }
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", demo::NETWORK])
            .output();
    }
}

/// Start a fresh demo site (tests must not modify it) and resolve it.
pub async fn demo_site(d: &Docker) -> (DemoGuard, DockerSite) {
    images(d).await;
    let lock = DEMO.lock().await;
    let guard = DemoGuard { _lock: lock };
    demo::up_busybox(d).await.expect("demo up");
    let site = DockerSite::resolve(d.clone(), &demo::target())
        .await
        .expect("resolve demo site");
    (guard, site)
}

pub fn unique(prefix: &str) -> String {
    format!(
        "vt-{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Removes containers / networks / volumes by name when dropped (sync, so it also runs on
/// panic).
#[derive(Default)]
pub struct Cleanup {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = std::process::Command::new("docker")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        for c in &self.containers {
            run(&["rm", "-f", "-v", c]);
        }
        for n in &self.networks {
            run(&["network", "rm", n]);
        }
        for v in &self.volumes {
            run(&["volume", "rm", "-f", v]);
        }
    }
}

/// Create and start a container from a demo image.
pub async fn start(d: &Docker, name: &str, role: &str, mut body: ContainerCreateBody) {
    body.image = Some(demo::image_tag(role));
    if body.host_config.is_none() {
        body.host_config = Some(HostConfig::default());
    }
    d.create_container(
        Some(CreateContainerOptions {
            name: Some(name.into()),
            ..Default::default()
        }),
        body,
    )
    .await
    .unwrap_or_else(|e| panic!("create {name}: {e}"));
    d.start_container(
        name,
        None::<bollard::query_parameters::StartContainerOptions>,
    )
    .await
    .unwrap_or_else(|e| panic!("start {name}: {e}"));
}

/// A target with one node per container (node name = container name) and an optional vantage.
pub fn target(nodes: &[&str], vantage: Option<&str>) -> Target {
    Target {
        api_version: "vacsine.io/v1".into(),
        kind: "Target".into(),
        metadata: Metadata {
            name: Loc::new("t".into()),
            version: None,
            description: None,
            labels: BTreeMap::new(),
        },
        spec: TargetSpec {
            driver: DriverKind::Docker,
            nodes: nodes
                .iter()
                .map(|c| NodeSpec {
                    name: None,
                    container: Some(Loc::new(c.to_string())),
                    selector: BTreeMap::new(),
                    roles: vec![],
                    labels: BTreeMap::new(),
                })
                .collect(),
            vantage_points: vantage
                .map(|v| {
                    vec![VantagePoint {
                        name: Loc::new("outside".into()),
                        container: Loc::new(v.into()),
                    }]
                })
                .unwrap_or_default(),
            management_network: None,
        },
    }
}
