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
    let filters = label_filter(id);
    let mut sweep = Sweep::default();
    remove_containers(docker, &filters, &what, &mut sweep).await?;
    remove_networks(docker, &filters, &what, &mut sweep).await?;
    remove_volumes(docker, &filters, &what, &mut sweep).await?;
    remove_images(docker, &filters, &what, &mut sweep).await?;
    if sweep.errors.is_empty() {
        Ok(sweep.removed)
    } else {
        Err(DockerError::Sandbox {
            id: what,
            detail: format!(
                "teardown left objects behind: {} (run `vacsine sandbox gc` or remove them with docker)",
                sweep.errors.join("; ")
            ),
        })
    }
}

/// What a removal by label removed, and what it failed to remove.
#[derive(Default)]
struct Sweep {
    removed: Vec<String>,
    errors: Vec<String>,
}

impl Sweep {
    /// Note the result of one removal: `removed` on success, nothing if the object was
    /// already gone, else an error about `object`.
    fn note<T>(
        &mut self,
        result: Result<T, bollard::errors::Error>,
        removed: String,
        object: &str,
    ) {
        match result {
            Ok(_) => self.removed.push(removed),
            Err(e) if is_not_found(&e) => {}
            Err(e) => self.errors.push(format!("{object}: {e}")),
        }
    }
}

/// Remove the containers matching `filters` (with their anonymous volumes).
async fn remove_containers(
    docker: &Docker,
    filters: &HashMap<String, Vec<String>>,
    what: &str,
    sweep: &mut Sweep,
) -> Result<(), DockerError> {
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api("list containers of sandbox", what, e))?;
    for c in containers {
        let Some(cid) = c.id else { continue };
        let name = c
            .names
            .and_then(|n| n.first().cloned())
            .unwrap_or(cid.clone());
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let result = docker.remove_container(&cid, Some(opts)).await;
        let removed = format!("container {}", name.trim_start_matches('/'));
        sweep.note(result, removed, &format!("container {name}"));
    }
    Ok(())
}

/// Remove the networks matching `filters`.
async fn remove_networks(
    docker: &Docker,
    filters: &HashMap<String, Vec<String>>,
    what: &str,
    sweep: &mut Sweep,
) -> Result<(), DockerError> {
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        }))
        .await
        .map_err(|e| DockerError::api("list networks of sandbox", what, e))?;
    for n in networks {
        let Some(name) = n.name else { continue };
        let result = docker.remove_network(&name).await;
        sweep.note(
            result,
            format!("network {name}"),
            &format!("network {name}"),
        );
    }
    Ok(())
}

/// Remove the volumes matching `filters`.
async fn remove_volumes(
    docker: &Docker,
    filters: &HashMap<String, Vec<String>>,
    what: &str,
    sweep: &mut Sweep,
) -> Result<(), DockerError> {
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters.clone()),
        }))
        .await
        .map_err(|e| DockerError::api("list volumes of sandbox", what, e))?;
    for v in volumes.volumes.unwrap_or_default() {
        let result = docker
            .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
            .await;
        let object = format!("volume {}", v.name);
        sweep.note(result, object.clone(), &object);
    }
    Ok(())
}

/// Remove the images matching `filters` (the clones' committed filesystems).
async fn remove_images(
    docker: &Docker,
    filters: &HashMap<String, Vec<String>>,
    what: &str,
    sweep: &mut Sweep,
) -> Result<(), DockerError> {
    let images = docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api("list images of sandbox", what, e))?;
    for i in images {
        let opts = RemoveImageOptions {
            force: true,
            noprune: false,
        };
        let result = docker.remove_image(&i.id, Some(opts), None).await;
        let removed = format!(
            "image {}",
            i.repo_tags.first().cloned().unwrap_or(i.id.clone())
        );
        sweep.note(result, removed, &format!("image {}", i.id));
    }
    Ok(())
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

/// One container being cloned into sandbox `id`: the original as inspected, and the names of
/// what its clone is made of.
struct CloneJob<'a> {
    docker: &'a Docker,
    id: &'a str,
    info: &'a ContainerInspectResponse,
    /// The original's name (without Docker's leading `/`).
    name: String,
    /// The original's container id.
    cid: String,
    /// The clone's container name.
    clone: String,
    /// `vacsine.sandbox=<id>`, on every object the clone creates.
    label: HashMap<String, String>,
}

/// What a commit does not carry over: the contents of the original's mounts.
#[derive(Default)]
struct MountCopies {
    /// `volume:destination[:ro]` of every directory mount (a new labelled volume each).
    binds: Vec<String>,
    /// Tar archives of every mount, with the folder of the clone they unpack into.
    uploads: Vec<(String, Vec<u8>)>,
}

/// Clone one container into the sandbox; returns the clone's name.
async fn clone_container(
    docker: &Docker,
    id: &str,
    info: &ContainerInspectResponse,
    nets: &BTreeMap<String, String>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<String, DockerError> {
    let job = CloneJob::new(docker, id, info);
    progress(&format!("sandbox {id}: commit {}", job.name));
    let image = job.commit().await?;
    let mounts = job.copy_mounts().await?;
    let networks = clone_endpoints(info, nets, &job.cid, &job.name);
    let body = clone_config(info, id, &image, mounts.binds, networks.first());
    progress(&format!("sandbox {id}: create {}", job.clone));
    job.create(body).await?;
    job.connect(networks.iter().skip(1)).await?;
    job.upload(mounts.uploads).await?;
    job.start().await?;
    job.copy_firewall(progress).await?;
    Ok(job.clone)
}

impl<'a> CloneJob<'a> {
    /// The names of the clone of the container `info` describes.
    fn new(docker: &'a Docker, id: &'a str, info: &'a ContainerInspectResponse) -> Self {
        let name = info
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        CloneJob {
            docker,
            id,
            info,
            cid: info.id.clone().unwrap_or_default(),
            clone: container_name(id, &name),
            label: HashMap::from([(SANDBOX_LABEL.to_string(), id.to_string())]),
            name,
        }
    }

    /// Commit the original's filesystem to a labelled image of the sandbox, without pausing
    /// it; returns the image.
    async fn commit(&self) -> Result<String, DockerError> {
        let (id, name) = (self.id, &self.name);
        let image = format!("vacsine-sandbox/{id}:{}", sanitize(name));
        let (repo, tag) = image.split_once(':').unwrap_or((&image, "latest"));
        let (d, sbx, what) = (self.docker.clone(), self.label.clone(), name.clone());
        let commit = CommitContainerOptions {
            container: Some(self.cid.clone()),
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
        Ok(image)
    }

    /// Copy the contents of the original's volume and bind mounts (a commit does not carry
    /// them): directories become new labelled volumes, and every mount's content is kept to
    /// be uploaded into the clone.
    async fn copy_mounts(&self) -> Result<MountCopies, DockerError> {
        let mut copies = MountCopies::default();
        let mounts = self.info.mounts.clone().unwrap_or_default();
        for (i, m) in mounts.into_iter().enumerate() {
            let Some(dest) = m.destination.clone() else {
                continue;
            };
            if !matches!(
                m.typ,
                Some(MountPointTypeEnum::VOLUME) | Some(MountPointTypeEnum::BIND)
            ) {
                continue;
            }
            let tar = self.download(&dest).await?;
            if tar_is_dir(&tar) {
                let vol = format!("vsbx-{}-{}-{i}", self.id, sanitize(&self.name));
                self.create_volume(&vol).await?;
                let ro = if m.rw == Some(false) { ":ro" } else { "" };
                copies.binds.push(format!("{vol}:{dest}{ro}"));
            }
            copies.uploads.push((parent_dir(&dest), tar));
        }
        Ok(copies)
    }

    /// The tar archive of `path` in the original.
    async fn download(&self, path: &str) -> Result<Vec<u8>, DockerError> {
        let mut stream = self.docker.download_from_container(
            &self.cid,
            Some(DownloadFromContainerOptions { path: path.into() }),
        );
        let mut tar = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| DockerError::api("download", &format!("{}:{path}", self.name), e))?;
            tar.extend_from_slice(&chunk);
        }
        Ok(tar)
    }

    /// Create the labelled volume `vol` of the sandbox.
    async fn create_volume(&self, vol: &str) -> Result<(), DockerError> {
        let (d, what) = (self.docker.clone(), vol.to_string());
        let opts = VolumeCreateOptions {
            name: Some(vol.into()),
            labels: Some(self.label.clone()),
            ..Default::default()
        };
        creating(self.id, async move {
            d.create_volume(opts)
                .await
                .map_err(|e| DockerError::api("create volume", &what, e))
        })
        .await?;
        Ok(())
    }

    /// Create the clone's container from `body`.
    async fn create(&self, body: ContainerCreateBody) -> Result<(), DockerError> {
        let (d, what) = (self.docker.clone(), self.clone.clone());
        creating(self.id, async move {
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
        Ok(())
    }

    /// Connect the clone to its further networks (`(sandbox network, endpoint)`).
    async fn connect(
        &self,
        networks: impl Iterator<Item = &(String, EndpointSettings)>,
    ) -> Result<(), DockerError> {
        for (net, ep) in networks {
            self.docker
                .connect_network(
                    net,
                    NetworkConnectRequest {
                        container: Some(self.clone.clone()),
                        endpoint_config: Some(ep.clone()),
                    },
                )
                .await
                .map_err(|e| DockerError::api("connect to network", net, e))?;
        }
        Ok(())
    }

    /// Unpack the original's mount contents into the clone (before it starts).
    async fn upload(&self, uploads: Vec<(String, Vec<u8>)>) -> Result<(), DockerError> {
        let clone = &self.clone;
        for (parent, tar) in uploads {
            self.docker
                .upload_to_container(
                    clone,
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
        Ok(())
    }

    /// Start the clone.
    async fn start(&self) -> Result<(), DockerError> {
        self.docker
            .start_container(
                &self.clone,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| DockerError::api("start container", &self.clone, e))
    }

    /// Give the running clone the user nft tables of the original's network namespace.
    async fn copy_firewall(&self, progress: &(dyn Fn(&str) + Sync)) -> Result<(), DockerError> {
        let rn = |h: &str| ResolvedNode {
            name: h.into(),
            roles: vec![],
            labels: BTreeMap::new(),
            handle: h.into(),
        };
        let original = DockerNode::new(self.docker.clone(), rn(&self.name));
        let copy = DockerNode::new(self.docker.clone(), rn(&self.clone));
        let script = user_tables_script(&original).await?;
        if !script.trim().is_empty() {
            progress(&format!(
                "sandbox {}: copy nft ruleset of {}",
                self.id, self.name
            ));
            copy.apply_nft(&script).await?;
        }
        Ok(())
    }
}

/// Whether a tar archive (of a mount) holds a directory: its first entry is one.
fn tar_is_dir(tar: &[u8]) -> bool {
    tar::Archive::new(tar)
        .entries()
        .ok()
        .and_then(|mut e| e.next())
        .and_then(|e| e.ok())
        .is_some_and(|e| e.header().entry_type().is_dir())
}

/// The folder holding `path` (`/` for a top-level path), where its tar archive unpacks.
fn parent_dir(path: &str) -> String {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((p, _)) => p.to_string(),
    }
}

/// The clone's endpoint on each sandbox copy of the original's networks, sorted by original
/// network: the original's own aliases (not its id's) plus its name.
fn clone_endpoints(
    info: &ContainerInspectResponse,
    nets: &BTreeMap<String, String>,
    cid: &str,
    name: &str,
) -> Vec<(String, EndpointSettings)> {
    let mut ordered: Vec<(String, EndpointSettings)> = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(n, _)| nets.contains_key(n))
        .collect();
    ordered.sort_by(|a, b| a.0.cmp(&b.0));
    ordered
        .into_iter()
        .map(|(n, ep)| {
            let mut aliases = user_aliases(&ep, cid);
            if !aliases.iter().any(|a| a == name) {
                aliases.push(name.to_string());
            }
            let ep = EndpointSettings {
                aliases: Some(aliases),
                ..Default::default()
            };
            (nets[&n].clone(), ep)
        })
        .collect()
}

/// The clone's creation request: the original's configuration on `image`, labelled for
/// sandbox `id`, with the mount copies `binds`, attached to its `first` network (`none`
/// without one) and no published ports.
fn clone_config(
    info: &ContainerInspectResponse,
    id: &str,
    image: &str,
    binds: Vec<String>,
    first: Option<&(String, EndpointSettings)>,
) -> ContainerCreateBody {
    let cfg = info.config.clone().unwrap_or_default();
    let hc = info.host_config.clone().unwrap_or_default();
    let mut labels = cfg.labels.clone().unwrap_or_default();
    labels.insert(SANDBOX_LABEL.into(), id.into());
    ContainerCreateBody {
        image: Some(image.into()),
        hostname: cfg.hostname,
        domainname: cfg.domainname,
        user: cfg.user,
        env: cfg.env,
        cmd: cfg.cmd,
        entrypoint: cfg.entrypoint,
        working_dir: cfg.working_dir,
        labels: Some(labels),
        stop_signal: cfg.stop_signal,
        stop_timeout: cfg.stop_timeout,
        tty: cfg.tty,
        open_stdin: cfg.open_stdin,
        exposed_ports: cfg.exposed_ports,
        host_config: Some(HostConfig {
            binds: if binds.is_empty() { None } else { Some(binds) },
            network_mode: Some(
                first
                    .map(|(n, _)| n.clone())
                    .unwrap_or_else(|| "none".into()),
            ),
            sysctls: hc.sysctls,
            cap_add: hc.cap_add,
            cap_drop: hc.cap_drop,
            privileged: hc.privileged,
            security_opt: hc.security_opt,
            readonly_rootfs: hc.readonly_rootfs,
            tmpfs: hc.tmpfs,
            init: hc.init,
            extra_hosts: hc.extra_hosts,
            ulimits: hc.ulimits,
            // No published ports: the sandbox is reachable only on its internal networks.
            publish_all_ports: Some(false),
            ..Default::default()
        }),
        networking_config: first.map(|(n, ep)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(n.clone(), ep.clone())])),
        }),
        ..Default::default()
    }
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

    /// Clone the site into sandbox `id`: inspect its containers, create internal copies of
    /// their networks, clone the containers concurrently, and describe the cloned site.
    async fn clone_inner(
        &self,
        id: &str,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(Sandbox, DockerSite), DockerError> {
        let docker = self.docker().clone();
        let containers = self.containers_to_clone();
        let infos = inspect_all(&docker, &containers).await?;
        let nets = network_copies(id, &infos);
        create_networks(&docker, id, &nets, progress).await?;
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
        Ok((
            Sandbox {
                id: id.into(),
                docker,
            },
            self.cloned_site(id, &map, &nets),
        ))
    }

    /// The containers a sandbox clones: every available node's and every vantage point's.
    /// Stopped or missing nodes are not cloned: they stay unavailable in the sandbox too.
    fn containers_to_clone(&self) -> BTreeSet<String> {
        let mut containers: BTreeSet<String> = vacsine_core::node::Site::nodes(self)
            .into_iter()
            .filter(|n| !self.unavailable().contains_key(&n.name))
            .map(|n| n.handle)
            .collect();
        containers.extend(self.vantage_points().into_values());
        containers
    }

    /// This site with every container replaced by its clone (`clones`: original → clone)
    /// and its management network by its sandbox copy (`nets`).
    fn cloned_site(
        &self,
        id: &str,
        clones: &HashMap<String, String>,
        nets: &BTreeMap<String, String>,
    ) -> DockerSite {
        let nodes = vacsine_core::node::Site::nodes(self)
            .into_iter()
            .map(|mut n| {
                // An unavailable node gets the name its clone would have (no such container):
                // the sandbox must never reach the target's container.
                n.handle = clones
                    .get(&n.handle)
                    .cloned()
                    .unwrap_or_else(|| container_name(id, &n.handle));
                n
            })
            .collect();
        let vantage = self
            .vantage_points()
            .into_iter()
            .map(|(k, c)| (k, clones[&c].clone()))
            .collect();
        let mgmt = self
            .management_network()
            .map(|m| nets.get(m).cloned().unwrap_or_else(|| m.to_string()));
        DockerSite::from_parts(
            self.docker().clone(),
            nodes,
            vantage,
            mgmt,
            self.unavailable().clone(),
        )
    }
}

/// Inspect each of `containers`, in order.
async fn inspect_all(
    docker: &Docker,
    containers: &BTreeSet<String>,
) -> Result<Vec<ContainerInspectResponse>, DockerError> {
    let mut infos = Vec::new();
    for c in containers {
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
    Ok(infos)
}

/// The networks of the inspected containers (but `host` and `none`), each with the name of
/// its copy in sandbox `id`.
fn network_copies(id: &str, infos: &[ContainerInspectResponse]) -> BTreeMap<String, String> {
    let mut nets = BTreeMap::new();
    for info in infos {
        let names = info
            .network_settings
            .as_ref()
            .and_then(|s| s.networks.as_ref())
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        for n in names {
            if n != "host" && n != "none" {
                nets.insert(n.clone(), network_name(id, &n));
            }
        }
    }
    nets
}

/// Create the sandbox copies (`nets`: original → copy) as internal, labelled bridges.
async fn create_networks(
    docker: &Docker,
    id: &str,
    nets: &BTreeMap<String, String>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), DockerError> {
    for (orig, copy) in nets {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, NetworkSettings};

    fn inspected(networks: &[(&str, &[&str])]) -> ContainerInspectResponse {
        let endpoints = networks
            .iter()
            .map(|(n, aliases)| {
                let ep = EndpointSettings {
                    aliases: Some(aliases.iter().map(|a| a.to_string()).collect()),
                    ..Default::default()
                };
                (n.to_string(), ep)
            })
            .collect();
        ContainerInspectResponse {
            id: Some("0123456789abcdef0123".into()),
            name: Some("/web".into()),
            network_settings: Some(NetworkSettings {
                networks: Some(endpoints),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                hostname: Some("web".into()),
                labels: Some(HashMap::from([("role".to_string(), "web".to_string())])),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                publish_all_ports: Some(true),
                privileged: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn mount_parents() {
        assert_eq!(parent_dir("/srv/www"), "/srv");
        assert_eq!(parent_dir("/srv/www/"), "/srv");
        assert_eq!(parent_dir("/data"), "/");
        assert_eq!(parent_dir("data"), "/");
    }

    #[test]
    fn a_tar_of_a_folder_is_a_dir() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, "www/", std::io::empty())
            .expect("append");
        assert!(tar_is_dir(&b.into_inner().expect("tar")));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_cksum();
        b.append_data(&mut h, "f", &b"hi"[..]).expect("append");
        assert!(!tar_is_dir(&b.into_inner().expect("tar")));
        assert!(!tar_is_dir(b"not a tar"));
    }

    #[test]
    fn networks_are_copied_but_host_and_none() {
        let infos = [
            inspected(&[("lan", &[]), ("host", &[])]),
            inspected(&[("mgmt", &[]), ("none", &[])]),
        ];
        let nets = network_copies("sbx-1", &infos);
        assert_eq!(
            nets.into_iter().collect::<Vec<_>>(),
            [
                ("lan".to_string(), "vsbx-sbx-1-lan".to_string()),
                ("mgmt".to_string(), "vsbx-sbx-1-mgmt".to_string())
            ]
        );
    }

    #[test]
    fn the_clone_keeps_aliases_and_configuration_but_no_published_ports() {
        let info = inspected(&[("z", &["web", "0123456789ab"]), ("a", &["www"]), ("x", &[])]);
        let nets = BTreeMap::from([
            ("a".to_string(), "vsbx-s-a".to_string()),
            ("z".to_string(), "vsbx-s-z".to_string()),
        ]);
        let eps = clone_endpoints(&info, &nets, "0123456789abcdef0123", "web");
        let names: Vec<(&str, Vec<String>)> = eps
            .iter()
            .map(|(n, ep)| (n.as_str(), ep.aliases.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            names,
            [
                ("vsbx-s-a", vec!["www".to_string(), "web".to_string()]),
                ("vsbx-s-z", vec!["web".to_string()])
            ]
        );
        let body = clone_config(&info, "s", "img:1", vec![], eps.first());
        assert_eq!(body.image.as_deref(), Some("img:1"));
        assert_eq!(body.hostname.as_deref(), Some("web"));
        let labels = body.labels.unwrap_or_default();
        assert_eq!(labels.get(SANDBOX_LABEL).map(String::as_str), Some("s"));
        assert_eq!(labels.get("role").map(String::as_str), Some("web"));
        let hc = body.host_config.unwrap_or_default();
        assert_eq!(hc.publish_all_ports, Some(false));
        assert_eq!(hc.privileged, Some(true));
        assert_eq!(hc.binds, None);
        assert_eq!(hc.network_mode.as_deref(), Some("vsbx-s-a"));
        let endpoints = body
            .networking_config
            .and_then(|n| n.endpoints_config)
            .unwrap_or_default();
        assert_eq!(endpoints.keys().collect::<Vec<_>>(), ["vsbx-s-a"]);
        let alone = clone_config(&info, "s", "img:1", vec!["v:/d".into()], None);
        let hc = alone.host_config.unwrap_or_default();
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.binds, Some(vec!["v:/d".to_string()]));
        assert!(alone.networking_config.is_none());
    }
}
