//! Sandboxes: isolated clones of a docker site (design §5 step 2), and their garbage
//! collection by label.
//!
//! Every object of sandbox `<id>` (containers, networks, volumes, images) carries the label
//! `vacsine.sandbox=<id>`, so [`teardown`] and [`gc`] find them without any state.
//!
//! Guaranteeing teardown: choose the id before cloning, then
//! ```text
//! let id = vacsine_docker::sandbox::new_id();
//! let result = tokio::select! {
//!     r = site.clone_sandbox(&id, |m| eprintln!("{m}")) => r,
//!     _ = tokio::signal::ctrl_c() => Err(/* interrupted */),
//! };
//! // ... use the sandbox ...
//! vacsine_docker::sandbox::teardown(site.docker(), &id).await; // idempotent, also after errors
//! ```
//! `clone_sandbox` itself tears down what it created when it fails.
//!
//! Interrupting a clone (dropping its future, e.g. on Ctrl-C) cannot stop a request the engine
//! already received: a `commit` in flight still creates its image. So every request that
//! creates a sandbox object runs in its own task, registered under the sandbox id, and
//! [`teardown`] (and [`gc`]) first wait for the ones still running before sweeping by label.

use crate::error::{is_not_found, DockerError};
use crate::node::{user_aliases, DockerNode};
use crate::site::DockerSite;
use crate::SANDBOX_LABEL;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig,
    MountPointTypeEnum, NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig,
    VolumeCreateOptions,
};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, DownloadFromContainerOptions,
    ListContainersOptions, ListImagesOptions, ListNetworksOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveImageOptions, RemoveVolumeOptions, UploadToContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;
use vacsine_core::target::ResolvedNode;

/// A created sandbox. Dropping it does not remove anything: call [`Sandbox::teardown`].
#[derive(Debug, Clone)]
pub struct Sandbox {
    id: String,
    docker: Docker,
}

/// A sandbox found on the engine, with how many objects carry its label.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SandboxInfo {
    pub id: String,
    pub containers: usize,
    pub networks: usize,
    pub volumes: usize,
    pub images: usize,
}

impl Sandbox {
    /// The sandbox id (value of the `vacsine.sandbox` label).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Remove every container, network, volume and image labelled with this sandbox's id.
    /// Idempotent; see [`teardown`].
    pub async fn teardown(&self) -> Result<Vec<String>, DockerError> {
        teardown(&self.docker, &self.id).await
    }

    /// Restart every container of this sandbox (`docker restart`, concurrently, a grace of
    /// [`RESTART_GRACE_S`] before SIGKILL) and wait until each runs again. What only the
    /// running container held (nft tables of its network namespace, runtime sysctls,
    /// processes) is lost; its files and its creation-time configuration stay. Returns the
    /// containers restarted, sorted.
    pub async fn restart(&self) -> Result<Vec<String>, DockerError> {
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(label_filter(Some(&self.id))),
                ..Default::default()
            }))
            .await
            .map_err(|e| DockerError::api("list containers of sandbox", &self.id, e))?;
        let names: Vec<String> = containers
            .into_iter()
            .filter_map(|c| {
                let name = c.names.and_then(|n| n.first().cloned()).or(c.id)?;
                Some(name.trim_start_matches('/').to_string())
            })
            .collect();
        let restarts = names.iter().map(|name| async move {
            self.docker
                .restart_container(
                    name,
                    Some(bollard::query_parameters::RestartContainerOptions {
                        t: Some(RESTART_GRACE_S),
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| DockerError::api("restart container", name, e))?;
            self.wait_running(name).await
        });
        futures_util::future::try_join_all(restarts).await?;
        let mut names = names;
        names.sort();
        Ok(names)
    }

    /// Wait (bounded by [`RESTART_WAIT`]) until container `name` is running with a pid.
    async fn wait_running(&self, name: &str) -> Result<(), DockerError> {
        let until = tokio::time::Instant::now() + RESTART_WAIT;
        loop {
            let st = self
                .docker
                .inspect_container(
                    name,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
                .map_err(|e| DockerError::api("inspect container", name, e))?
                .state;
            let running = st
                .as_ref()
                .is_some_and(|s| s.running == Some(true) && s.pid.unwrap_or(0) > 0);
            if running {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                let status = st
                    .and_then(|s| s.status)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into());
                return Err(DockerError::Sandbox {
                    id: self.id.clone(),
                    detail: format!(
                        "clone `{name}` does not run again {}s after its restart (status {status}); inspect it with `docker logs {name}` and keep the sandbox with --keep-sandbox",
                        RESTART_WAIT.as_secs()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Seconds a restarted clone gets to stop before SIGKILL (a container's PID 1 often ignores
/// SIGTERM; nothing in a clone needs a clean shutdown to be judged).
pub const RESTART_GRACE_S: i32 = 2;
/// How long a restarted clone may take to run again.
const RESTART_WAIT: Duration = Duration::from_secs(30);

/// Requests creating sandbox objects, by sandbox id (see the module docs).
static IN_FLIGHT: LazyLock<Mutex<HashMap<String, Vec<tokio::task::JoinHandle<()>>>>> =
    LazyLock::new(Default::default);

/// How long a teardown waits for creating requests still in flight.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(120);

/// Run `request` (which creates an object labelled for sandbox `id`) in its own task, so it
/// completes even if the caller is dropped, and is awaited by [`teardown`] before it sweeps.
async fn creating<R: Send + 'static>(
    id: &str,
    request: impl Future<Output = Result<R, DockerError>> + Send + 'static,
) -> Result<R, DockerError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let _ = tx.send(request.await);
    });
    {
        let mut m = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        let tasks = m.entry(id.to_string()).or_default();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
    rx.await.unwrap_or_else(|_| {
        Err(DockerError::Sandbox {
            id: id.into(),
            detail: "a docker request task ended without an answer".into(),
        })
    })
}

/// Wait (bounded) for the creating requests of sandbox `id` (`None`: of every sandbox).
async fn settle(id: Option<&str>) {
    let tasks: Vec<tokio::task::JoinHandle<()>> = {
        let mut m = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        match id {
            Some(id) => m.remove(id).unwrap_or_default(),
            None => m.drain().flat_map(|(_, v)| v).collect(),
        }
    };
    let _ = tokio::time::timeout(IN_FLIGHT_WAIT, futures_util::future::join_all(tasks)).await;
}

/// A fresh sandbox id (`sbx-` and 12 hex digits).
pub fn new_id() -> String {
    format!("sbx-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn check_id(id: &str) -> Result<(), DockerError> {
    let ok = !id.is_empty()
        && id.len() <= 40
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DockerError::Sandbox {
            id: id.into(),
            detail: "invalid id: use 1-40 characters [a-z0-9_-], starting with a letter or digit"
                .into(),
        })
    }
}

fn label_filter(value: Option<&str>) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![match value {
            Some(v) => format!("{SANDBOX_LABEL}={v}"),
            None => SANDBOX_LABEL.to_string(),
        }],
    )])
}

/// Remove every object carrying `vacsine.sandbox=<id>` (`None`: any value). Best effort: goes
/// on after a failure and reports all failures at the end.
async fn remove_labelled(docker: &Docker, id: Option<&str>) -> Result<Vec<String>, DockerError> {
    settle(id).await;
    let what = id.unwrap_or("*").to_string();
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(label_filter(id)),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api("list containers of sandbox", &what, e))?;
    for c in containers {
        let Some(cid) = c.id else { continue };
        let name = c
            .names
            .and_then(|n| n.first().cloned())
            .unwrap_or(cid.clone());
        match docker
            .remove_container(
                &cid,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => removed.push(format!("container {}", name.trim_start_matches('/'))),
            Err(e) if is_not_found(&e) => {}
            Err(e) => errors.push(format!("container {name}: {e}")),
        }
    }
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(label_filter(id)),
        }))
        .await
        .map_err(|e| DockerError::api("list networks of sandbox", &what, e))?;
    for n in networks {
        let Some(name) = n.name else { continue };
        match docker.remove_network(&name).await {
            Ok(()) => removed.push(format!("network {name}")),
            Err(e) if is_not_found(&e) => {}
            Err(e) => errors.push(format!("network {name}: {e}")),
        }
    }
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(label_filter(id)),
        }))
        .await
        .map_err(|e| DockerError::api("list volumes of sandbox", &what, e))?;
    for v in volumes.volumes.unwrap_or_default() {
        match docker
            .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Ok(()) => removed.push(format!("volume {}", v.name)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => errors.push(format!("volume {}: {e}", v.name)),
        }
    }
    let images = docker
        .list_images(Some(ListImagesOptions {
            filters: Some(label_filter(id)),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api("list images of sandbox", &what, e))?;
    for i in images {
        match docker
            .remove_image(
                &i.id,
                Some(RemoveImageOptions {
                    force: true,
                    noprune: false,
                }),
                None,
            )
            .await
        {
            Ok(_) => removed.push(format!(
                "image {}",
                i.repo_tags.first().cloned().unwrap_or(i.id.clone())
            )),
            Err(e) if is_not_found(&e) => {}
            Err(e) => errors.push(format!("image {}: {e}", i.id)),
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(DockerError::Sandbox {
            id: what,
            detail: format!(
                "teardown left objects behind: {} (run `vacsine sandbox gc` or remove them with docker)",
                errors.join("; ")
            ),
        })
    }
}

/// Remove every container, network, volume and image labelled `vacsine.sandbox=<id>`, after
/// waiting for this process's requests still creating such objects (an interrupted clone).
/// Idempotent (nothing left: `Ok(vec![])`); returns what was removed.
pub async fn teardown(docker: &Docker, id: &str) -> Result<Vec<String>, DockerError> {
    check_id(id)?;
    remove_labelled(docker, Some(id)).await
}

/// Garbage-collect every object carrying any `vacsine.sandbox` label (orphans of crashed
/// runs). Returns what was removed.
pub async fn gc(docker: &Docker) -> Result<Vec<String>, DockerError> {
    remove_labelled(docker, None).await
}

/// Sandboxes present on the engine with their object counts, sorted by id.
pub async fn list(docker: &Docker) -> Result<Vec<SandboxInfo>, DockerError> {
    let mut m: BTreeMap<String, SandboxInfo> = BTreeMap::new();
    let entry = |m: &mut BTreeMap<String, SandboxInfo>, id: &str| {
        m.entry(id.to_string()).or_insert_with(|| SandboxInfo {
            id: id.to_string(),
            containers: 0,
            networks: 0,
            volumes: 0,
            images: 0,
        });
    };
    let f = Some(label_filter(None));
    for c in docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: f.clone(),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api("list containers", SANDBOX_LABEL, e))?
    {
        if let Some(id) = c.labels.as_ref().and_then(|l| l.get(SANDBOX_LABEL)) {
            entry(&mut m, id);
            if let Some(i) = m.get_mut(id) {
                i.containers += 1;
            }
        }
    }
    for n in docker
        .list_networks(Some(ListNetworksOptions { filters: f.clone() }))
        .await
        .map_err(|e| DockerError::api("list networks", SANDBOX_LABEL, e))?
    {
        if let Some(id) = n.labels.as_ref().and_then(|l| l.get(SANDBOX_LABEL)) {
            entry(&mut m, id);
            if let Some(i) = m.get_mut(id) {
                i.networks += 1;
            }
        }
    }
    for v in docker
        .list_volumes(Some(ListVolumesOptions { filters: f.clone() }))
        .await
        .map_err(|e| DockerError::api("list volumes", SANDBOX_LABEL, e))?
        .volumes
        .unwrap_or_default()
    {
        if let Some(id) = v.labels.get(SANDBOX_LABEL) {
            entry(&mut m, id);
            if let Some(i) = m.get_mut(id) {
                i.volumes += 1;
            }
        }
    }
    for i in docker
        .list_images(Some(ListImagesOptions {
            filters: f.clone(),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api("list images", SANDBOX_LABEL, e))?
    {
        if let Some(id) = i.labels.get(SANDBOX_LABEL) {
            entry(&mut m, id);
            if let Some(x) = m.get_mut(id) {
                x.images += 1;
            }
        }
    }
    Ok(m.into_values().collect())
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Name of the sandbox copy of network `net`.
pub fn network_name(id: &str, net: &str) -> String {
    format!("vsbx-{id}-{net}")
}

/// Name of the sandbox copy of container `container`.
pub fn container_name(id: &str, container: &str) -> String {
    format!("vsbx-{id}-{}", sanitize(container))
}

/// nft script recreating the user tables of a ruleset (docker's embedded-DNS `ip nat` table,
/// which the engine manages per container, is left out).
async fn user_tables_script(node: &DockerNode) -> Result<String, DockerError> {
    let out = node
        .in_ns(&["-n"], &["nft", "list", "tables"], None)
        .await?;
    let out = crate::exec::check_ok(&["nft".into(), "list".into(), "tables".into()], out)?;
    let mut script = String::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 || f[0] != "table" {
            continue;
        }
        let argv = ["nft", "list", "table", f[1], f[2]];
        let t = node.in_ns(&["-n"], &argv, None).await?;
        let t = crate::exec::check_ok(&argv.map(String::from), t)?;
        let text = String::from_utf8_lossy(&t.stdout).into_owned();
        if f[1] == "ip" && f[2] == "nat" && text.contains("DOCKER_OUTPUT") {
            continue;
        }
        script.push_str(&format!(
            "table {} {}\ndelete table {} {}\n",
            f[1], f[2], f[1], f[2]
        ));
        script.push_str(&text);
        script.push('\n');
    }
    Ok(script)
}

/// Clone one container into the sandbox; returns the clone's name.
async fn clone_container(
    docker: &Docker,
    id: &str,
    info: &ContainerInspectResponse,
    nets: &BTreeMap<String, String>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<String, DockerError> {
    let name = info
        .name
        .clone()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    let cid = info.id.clone().unwrap_or_default();
    let clone = container_name(id, &name);
    let sbx_label = HashMap::from([(SANDBOX_LABEL.to_string(), id.to_string())]);
    let cfg = info.config.clone().unwrap_or_default();

    progress(&format!("sandbox {id}: commit {name}"));
    let image = format!("vacsine-sandbox/{id}:{}", sanitize(&name));
    let (repo, tag) = image.split_once(':').unwrap_or((&image, "latest"));
    let (d, sbx, what) = (docker.clone(), sbx_label.clone(), name.clone());
    let commit = CommitContainerOptions {
        container: Some(cid.clone()),
        repo: Some(repo.into()),
        tag: Some(tag.into()),
        // Never freeze the target: a commit without pausing copies the filesystem as it
        // is while the services go on answering (a file being written at that instant
        // may be copied half-written; the fidelity check compares the clone anyway).
        pause: false,
        comment: Some(format!("vacsine sandbox {id} of {name}")),
        ..Default::default()
    };
    creating(id, async move {
        d.commit_container(
            commit,
            bollard::models::ContainerConfig {
                labels: Some(sbx),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| DockerError::api("commit container", &what, e))
    })
    .await?;

    // Mounts: a commit does not carry them. Directories become new labelled volumes, single
    // files are uploaded into the clone's own filesystem.
    let mut binds = Vec::new();
    let mut uploads: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, m) in info
        .mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let Some(dest) = m.destination.clone() else {
            continue;
        };
        if !matches!(
            m.typ,
            Some(MountPointTypeEnum::VOLUME) | Some(MountPointTypeEnum::BIND)
        ) {
            continue;
        }
        let mut stream = docker.download_from_container(
            &cid,
            Some(DownloadFromContainerOptions { path: dest.clone() }),
        );
        let mut tar = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| DockerError::api("download", &format!("{name}:{dest}"), e))?;
            tar.extend_from_slice(&chunk);
        }
        let is_dir = tar::Archive::new(tar.as_slice())
            .entries()
            .ok()
            .and_then(|mut e| e.next())
            .and_then(|e| e.ok())
            .is_some_and(|e| e.header().entry_type().is_dir());
        let parent = match dest.trim_end_matches('/').rsplit_once('/') {
            Some(("", _)) | None => "/".to_string(),
            Some((p, _)) => p.to_string(),
        };
        if is_dir {
            let vol = format!("vsbx-{id}-{}-{i}", sanitize(&name));
            let (d, opts) = (
                docker.clone(),
                VolumeCreateOptions {
                    name: Some(vol.clone()),
                    labels: Some(sbx_label.clone()),
                    ..Default::default()
                },
            );
            let what = vol.clone();
            creating(id, async move {
                d.create_volume(opts)
                    .await
                    .map_err(|e| DockerError::api("create volume", &what, e))
            })
            .await?;
            let ro = if m.rw == Some(false) { ":ro" } else { "" };
            binds.push(format!("{vol}:{dest}{ro}"));
        }
        uploads.push((parent, tar));
    }

    let hc = info.host_config.clone().unwrap_or_default();
    let mut ordered: Vec<(String, EndpointSettings)> = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(n, _)| nets.contains_key(n))
        .collect();
    ordered.sort_by(|a, b| a.0.cmp(&b.0));
    let endpoint = |ep: &EndpointSettings| {
        let mut aliases = user_aliases(ep, &cid);
        if !aliases.contains(&name) {
            aliases.push(name.clone());
        }
        EndpointSettings {
            aliases: Some(aliases),
            ..Default::default()
        }
    };
    let mut labels = cfg.labels.clone().unwrap_or_default();
    labels.insert(SANDBOX_LABEL.into(), id.into());
    let first = ordered.first();
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        hostname: cfg.hostname.clone(),
        domainname: cfg.domainname.clone(),
        user: cfg.user.clone(),
        env: cfg.env.clone(),
        cmd: cfg.cmd.clone(),
        entrypoint: cfg.entrypoint.clone(),
        working_dir: cfg.working_dir.clone(),
        labels: Some(labels),
        stop_signal: cfg.stop_signal.clone(),
        stop_timeout: cfg.stop_timeout,
        tty: cfg.tty,
        open_stdin: cfg.open_stdin,
        exposed_ports: cfg.exposed_ports.clone(),
        host_config: Some(HostConfig {
            binds: if binds.is_empty() { None } else { Some(binds) },
            network_mode: Some(
                first
                    .map(|(n, _)| nets[n].clone())
                    .unwrap_or_else(|| "none".into()),
            ),
            sysctls: hc.sysctls.clone(),
            cap_add: hc.cap_add.clone(),
            cap_drop: hc.cap_drop.clone(),
            privileged: hc.privileged,
            security_opt: hc.security_opt.clone(),
            readonly_rootfs: hc.readonly_rootfs,
            tmpfs: hc.tmpfs.clone(),
            init: hc.init,
            extra_hosts: hc.extra_hosts.clone(),
            ulimits: hc.ulimits.clone(),
            // No published ports: the sandbox is reachable only on its internal networks.
            publish_all_ports: Some(false),
            ..Default::default()
        }),
        networking_config: first.map(|(n, ep)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(nets[n].clone(), endpoint(ep))])),
        }),
        ..Default::default()
    };
    progress(&format!("sandbox {id}: create {clone}"));
    let (d, what) = (docker.clone(), clone.clone());
    creating(id, async move {
        d.create_container(
            Some(CreateContainerOptions {
                name: Some(what.clone()),
                ..Default::default()
            }),
            body,
        )
        .await
        .map_err(|e| DockerError::api("create container", &what, e))
    })
    .await?;
    for (n, ep) in ordered.iter().skip(1) {
        docker
            .connect_network(
                &nets[n],
                NetworkConnectRequest {
                    container: Some(clone.clone()),
                    endpoint_config: Some(endpoint(ep)),
                },
            )
            .await
            .map_err(|e| DockerError::api("connect to network", &nets[n], e))?;
    }
    for (parent, tar) in uploads {
        docker
            .upload_to_container(
                &clone,
                Some(UploadToContainerOptions {
                    path: parent.clone(),
                    ..Default::default()
                }),
                bollard::body_full(tar.into()),
            )
            .await
            .map_err(|e| {
                DockerError::api("copy mount content into", &format!("{clone}:{parent}"), e)
            })?;
    }
    docker
        .start_container(
            &clone,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(|e| DockerError::api("start container", &clone, e))?;

    // Firewall state of the network namespace.
    let rn = |h: &str| ResolvedNode {
        name: h.into(),
        roles: vec![],
        labels: BTreeMap::new(),
        handle: h.into(),
    };
    let original = DockerNode::new(docker.clone(), rn(&name));
    let copy = DockerNode::new(docker.clone(), rn(&clone));
    let script = user_tables_script(&original).await?;
    if !script.trim().is_empty() {
        progress(&format!("sandbox {id}: copy nft ruleset of {name}"));
        copy.apply_nft(&script).await?;
    }
    Ok(clone)
}

impl DockerSite {
    /// Clone the site into sandbox `id` (see the [module docs](crate::sandbox)): every node
    /// and vantage container is committed to an image, recreated with the same configuration
    /// (no published ports) on internal copies of its networks with the same aliases, started,
    /// and given its original's nft tables and mount contents. Containers are cloned
    /// concurrently. The returned site resolves the same node and vantage names to the clones.
    /// On failure, everything already created is torn down before the error is returned.
    pub async fn clone_sandbox(
        &self,
        id: &str,
        progress: impl Fn(&str) + Sync,
    ) -> Result<(Sandbox, DockerSite), DockerError> {
        check_id(id)?;
        match self.clone_inner(id, &progress).await {
            Ok(r) => Ok(r),
            Err(e) => {
                progress(&format!("sandbox {id}: failed, tearing down"));
                let _ = teardown(self.docker(), id).await;
                Err(e)
            }
        }
    }

    async fn clone_inner(
        &self,
        id: &str,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(Sandbox, DockerSite), DockerError> {
        let docker = self.docker().clone();
        // Stopped or missing nodes are not cloned: they stay unavailable in the sandbox too.
        let mut containers: BTreeSet<String> = vacsine_core::node::Site::nodes(self)
            .into_iter()
            .filter(|n| !self.unavailable().contains_key(&n.name))
            .map(|n| n.handle)
            .collect();
        containers.extend(self.vantage_points().into_values());
        let mut infos = Vec::new();
        for c in &containers {
            let node = DockerNode::new(
                docker.clone(),
                ResolvedNode {
                    name: c.clone(),
                    roles: vec![],
                    labels: BTreeMap::new(),
                    handle: c.clone(),
                },
            );
            infos.push(node.inspect().await?);
        }
        let mut nets: BTreeMap<String, String> = BTreeMap::new();
        for info in &infos {
            for n in info
                .network_settings
                .as_ref()
                .and_then(|s| s.networks.as_ref())
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                if n != "host" && n != "none" {
                    nets.insert(n.clone(), network_name(id, &n));
                }
            }
        }
        for (orig, copy) in &nets {
            progress(&format!(
                "sandbox {id}: network {copy} (internal copy of {orig})"
            ));
            let (d, what) = (docker.clone(), copy.clone());
            let request = NetworkCreateRequest {
                name: copy.clone(),
                driver: Some("bridge".into()),
                internal: Some(true),
                labels: Some(HashMap::from([(SANDBOX_LABEL.to_string(), id.to_string())])),
                ..Default::default()
            };
            creating(id, async move {
                d.create_network(request)
                    .await
                    .map_err(|e| DockerError::api("create network", &what, e))
            })
            .await?;
        }
        let clones = futures_util::future::join_all(
            infos
                .iter()
                .map(|info| clone_container(&docker, id, info, &nets, progress)),
        )
        .await;
        let mut map: HashMap<String, String> = HashMap::new();
        for (c, r) in containers.iter().zip(clones) {
            map.insert(c.clone(), r?);
        }
        let nodes = vacsine_core::node::Site::nodes(self)
            .into_iter()
            .map(|mut n| {
                // An unavailable node gets the name its clone would have (no such container):
                // the sandbox must never reach the target's container.
                n.handle = map
                    .get(&n.handle)
                    .cloned()
                    .unwrap_or_else(|| container_name(id, &n.handle));
                n
            })
            .collect();
        let vantage = self
            .vantage_points()
            .into_iter()
            .map(|(k, c)| (k, map[&c].clone()))
            .collect();
        let mgmt = self
            .management_network()
            .map(|m| nets.get(m).cloned().unwrap_or_else(|| m.to_string()));
        Ok((
            Sandbox {
                id: id.into(),
                docker: docker.clone(),
            },
            DockerSite::from_parts(docker, nodes, vantage, mgmt, self.unavailable().clone()),
        ))
    }
}
