//! Decoy services (issue 16 item 8): a real OpenCanary (from the package registry) in an
//! image built here, with no image registry, and its containers run in the network
//! namespace of the agent that declares them, so a decoy listens on the site's own addresses
//! and sees each attacker's real address.
//!
//! Image: a Debian minbase root with Python ([`crate::debian`]), then OpenCanary and its
//! dependencies, pinned, installed by pip into `/opt/decoy` in a build container, committed
//! under a tag named by the SHA-256 of that recipe: a second call finds it and returns at
//! once; a changed recipe is a new tag.
//!
//! Network: a decoy shares the agent's network namespace: `host` when the agent runs in the
//! host's, `container:<id>` when the agent runs in a container's (what [`network_mode`]
//! finds). Docker cannot join an arbitrary namespace, so an agent in a namespace that is
//! neither gets a clear refusal.
//!
//! Containers: root inside, every capability dropped but `NET_BIND_SERVICE`,
//! `no-new-privileges`, read-only root file system, `/tmp` a tmpfs; the log folder (bind
//! mounted read-write) and the configuration file (read-only) are the only host paths it sees.
//! Labelled `vacsine.decoy=<name>`, `vacsine.decoy.owner=<owner>`, `vacsine.decoy.spec=<hash>`.

use crate::error::{is_not_found, DockerError};
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StartContainerOptions,
};
use bollard::Docker;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Label naming a decoy container's decoy.
pub const LABEL: &str = "vacsine.decoy";
/// Label naming the agent (data folder) that owns it.
pub const OWNER_LABEL: &str = "vacsine.decoy.owner";
/// Label holding the hash of what it was deployed from (a change redeploys it).
pub const SPEC_LABEL: &str = "vacsine.decoy.spec";

/// The base image: Debian minbase with Python (its tag names its package list).
const BASE_TAG: &str = "vacsine-decoy-base:py3-1";
const BASE_PACKAGES: &[&str] = &["python3", "python3-venv", "ca-certificates"];

/// OpenCanary and every dependency, pinned (the set CI installs in its own venv).
const OPENCANARY_REQUIREMENTS: &[&str] = &[
    "opencanary==0.9.10",
    "attrs==26.1.0",
    "Automat==25.4.16",
    "bcrypt==3.2.0",
    "cffi==2.1.1",
    "constantly==23.10.4",
    "cryptography==50.0.2",
    "hpfeeds==3.0.0",
    "hyperlink==21.0.0",
    "idna==3.21",
    "Incremental==24.11.0",
    "Jinja2==3.1.6",
    "MarkupSafe==3.0.4",
    "ntlmlib==0.72",
    "passlib==1.7.1",
    "pyasn1==0.6.4",
    "pyasn1_modules==0.4.2",
    "pycparser==3.12",
    "pyOpenSSL==26.4.0",
    "service-identity==21.1.0",
    "simplejson==3.16.0",
    "six==1.17.0",
    "Twisted==26.4.0",
    "typing_extensions==4.16.0",
    "zope.interface==7.2",
    "async-timeout==5.0.1",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "gitdb==4.0.12",
    "GitPython==3.2.1",
    "ordereddict==1.1",
    "packaging==26.4",
    "redis==7.4.0",
    "requests==2.33.0",
    "setuptools==83.0.0",
    "smmap==5.0.3",
    "urllib3==2.7.0",
];

/// Where the container writes its JSON log, and reads its configuration.
pub const LOG_DIR: &str = "/var/log/decoy";
pub const CONFIG_PATH: &str = "/etc/opencanaryd/opencanary.conf";
/// The log file's name in the log folder.
pub const LOG_FILE: &str = "opencanary.log";

/// The image's tag: the SHA-256 of its recipe (base, pinned requirements, entry point).
pub fn image_tag() -> String {
    let mut h = Sha256::new();
    h.update(BASE_TAG);
    for r in OPENCANARY_REQUIREMENTS {
        h.update(r);
        h.update([0]);
    }
    h.update(ENTRYPOINT.join(" "));
    format!(
        "vacsine-decoy-opencanary:{}",
        &format!("{:x}", h.finalize())[..16]
    )
}

const ENTRYPOINT: &[&str] = &[
    "/opt/decoy/bin/twistd",
    "-noy",
    "/opt/decoy/bin/opencanary.tac",
    "--pidfile=",
];

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Make sure the OpenCanary decoy image exists; returns its tag. Blocking (debootstrap, pip,
/// the docker CLI): call it through `spawn_blocking`. The first build takes minutes (a
/// Debian root, then pip from the package registry); later calls return at once.
pub fn ensure_image(progress: &(dyn Fn(&str) + Sync)) -> Result<String, String> {
    let tag = image_tag();
    if quiet_ok(Command::new("docker").args(["image", "inspect", &tag])) {
        return Ok(tag);
    }
    crate::debian::ensure_image_with_progress(BASE_TAG, BASE_PACKAGES, progress)?;
    // One build at a time (several agents or tests may ask at once).
    let lock_path = std::env::temp_dir().join("vacsine-decoy-image.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    if quiet_ok(Command::new("docker").args(["image", "inspect", &tag])) {
        return Ok(tag);
    }
    progress(&format!(
        "installing OpenCanary with pip into {tag} (from the package registry)"
    ));
    let builder = format!("vacsine-decoy-build-{}", std::process::id());
    let _ = quiet_ok(Command::new("docker").args(["rm", "-f", &builder]));
    let mut run = Command::new("docker");
    // The host's network (its resolver and route to the package registry) and its pip
    // configuration and trust store, as the host's own pip would use them.
    run.args(["run", "--name", &builder, "--network", "host"]);
    for f in ["/etc/pip.conf", "/etc/ssl/certs/ca-certificates.crt"] {
        if Path::new(f).is_file() {
            run.arg("-v").arg(format!("{f}:{f}:ro"));
        }
    }
    for (k, _) in std::env::vars() {
        let passed = matches!(
            k.as_str(),
            "PIP_INDEX_URL"
                | "PIP_EXTRA_INDEX_URL"
                | "PIP_TRUSTED_HOST"
                | "PIP_DEFAULT_TIMEOUT"
                | "HTTPS_PROXY"
                | "HTTP_PROXY"
                | "NO_PROXY"
                | "https_proxy"
                | "http_proxy"
                | "no_proxy"
        );
        if passed {
            run.args(["-e", &k]);
        }
    }
    run.args([
        BASE_TAG,
        "/bin/sh",
        "-c",
        "python3 -m venv /opt/decoy && exec /opt/decoy/bin/pip install --no-cache-dir --disable-pip-version-check \"$@\"",
        "sh",
    ]);
    run.args(OPENCANARY_REQUIREMENTS);
    let out = run.output().map_err(|e| format!("docker run: {e}"))?;
    if !out.status.success() {
        let _ = quiet_ok(Command::new("docker").args(["rm", "-f", &builder]));
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        return Err(format!(
            "installing OpenCanary with pip failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let entry = format!(
        "ENTRYPOINT [{}]",
        ENTRYPOINT
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let commit = Command::new("docker")
        .args(["commit", "--change", &entry, "--change", "CMD []"])
        .args(["--change", "WORKDIR /tmp", &builder, &tag])
        .output()
        .map_err(|e| format!("docker commit: {e}"))?;
    let _ = quiet_ok(Command::new("docker").args(["rm", "-f", &builder]));
    if !commit.status.success() {
        return Err(format!(
            "docker commit failed: {}",
            String::from_utf8_lossy(&commit.stderr).trim()
        ));
    }
    Ok(tag)
}

/// How a decoy container joins the network namespace this process runs in: `host`, or
/// `container:<id>` of the running container whose namespace it is.
pub async fn network_mode(docker: &Docker) -> Result<String, String> {
    let ours = netns_of("self").map_err(|e| format!("/proc/self/ns/net: {e}"))?;
    let list = docker
        .list_containers(None::<ListContainersOptions>)
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    for c in list {
        let Some(id) = c.id else { continue };
        let Ok(i) = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        else {
            continue;
        };
        let Some(pid) = i.state.and_then(|s| s.pid).filter(|p| *p > 0) else {
            continue;
        };
        // A decoy never joins another decoy (it would die with it).
        if i.config
            .and_then(|c| c.labels)
            .is_some_and(|l| l.contains_key(LABEL))
        {
            continue;
        }
        if netns_of(&pid.to_string()).ok() == Some(ours) {
            return Ok(format!("container:{id}"));
        }
    }
    if netns_of("1").ok() == Some(ours) {
        return Ok("host".into());
    }
    Err("this agent runs in a network namespace that is neither the host's nor a running container's: Docker cannot place a decoy in it (run the agent on the host, or in a container's namespace)".into())
}

fn netns_of(pid: &str) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/net"))?;
    Ok((m.dev(), m.ino()))
}

/// One decoy container to run.
#[derive(Debug, Clone)]
pub struct Deploy {
    /// The container's name (unique on this Docker host).
    pub container: String,
    /// The decoy's name (label).
    pub name: String,
    pub owner: String,
    /// Hash of the declaration (label).
    pub spec: String,
    pub image: String,
    pub network_mode: String,
    /// Host folder mounted at [`LOG_DIR`] and host file mounted at [`CONFIG_PATH`].
    pub log_dir: PathBuf,
    pub config: PathBuf,
}

/// Create and start the container (one of the same name is replaced).
pub async fn deploy(docker: &Docker, d: &Deploy) -> Result<String, DockerError> {
    remove(docker, &d.container).await?;
    let body = ContainerCreateBody {
        image: Some(d.image.clone()),
        labels: Some(HashMap::from([
            (LABEL.to_string(), d.name.clone()),
            (OWNER_LABEL.to_string(), d.owner.clone()),
            (SPEC_LABEL.to_string(), d.spec.clone()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some(d.network_mode.clone()),
            binds: Some(vec![
                format!("{}:{LOG_DIR}:rw", d.log_dir.display()),
                format!("{}:{CONFIG_PATH}:ro", d.config.display()),
            ]),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec!["NET_BIND_SERVICE".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([
                ("/tmp".to_string(), "rw,size=16m".to_string()),
                ("/var/tmp".to_string(), "rw,size=16m".to_string()),
            ])),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(d.container.clone()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(|e| DockerError::api("create container", &d.container, e))?;
    docker
        .start_container(&d.container, None::<StartContainerOptions>)
        .await
        .map_err(|e| DockerError::api("start container", &d.container, e))?;
    Ok(created.id)
}

/// Remove a decoy container (and its anonymous volumes); `false` when there was none.
pub async fn remove(docker: &Docker, container: &str) -> Result<bool, DockerError> {
    match docker
        .remove_container(
            container,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(DockerError::api("remove container", container, e)),
    }
}

/// A decoy container of an owner, as Docker lists it.
#[derive(Debug, Clone)]
pub struct Running {
    pub container: String,
    pub name: String,
    pub spec: String,
    pub running: bool,
}

/// Every decoy container of `owner` (running or not).
pub async fn list(docker: &Docker, owner: &str) -> Result<Vec<Running>, DockerError> {
    let filter = format!("{OWNER_LABEL}={owner}");
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), vec![filter.clone()])])),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api("list containers", &filter, e))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            Some(Running {
                container: c.names?.first()?.trim_start_matches('/').to_string(),
                name: labels.get(LABEL)?.clone(),
                spec: labels.get(SPEC_LABEL).cloned().unwrap_or_default(),
                running: c.state.is_some_and(|s| s.to_string() == "running"),
            })
        })
        .collect())
}
