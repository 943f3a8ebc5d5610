//! [`DockerNode`]: the node operations of one container.

use crate::error::{is_not_found, DockerError};
use crate::exec::{check_ok, docker_exec, host_tool, nsenter};
use crate::fsroot::{Kind, Root};
use async_trait::async_trait;
use bollard::models::{
    ContainerInspectResponse, EndpointIpamConfig, EndpointSettings, NetworkConnectRequest,
    NetworkDisconnectRequest,
};
use bollard::Docker;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use vacsine_core::node::{DirListing, EntryStat, ExecOutput, FileContent, NodeError, NodeOps};
use vacsine_core::parse;
use vacsine_core::target::ResolvedNode;

/// Largest file `read_file` returns.
pub const READ_LIMIT: u64 = 16 << 20;
/// Time allowed to host tools (nsenter, nft).
pub(crate) const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Endpoint settings of networks a quarantine removed, per container id, so that `release`
/// reconnects with the same aliases and addresses (kept for the life of the process).
fn quarantined() -> &'static Mutex<HashMap<String, HashMap<String, EndpointSettings>>> {
    static Q: OnceLock<Mutex<HashMap<String, HashMap<String, EndpointSettings>>>> = OnceLock::new();
    Q.get_or_init(Default::default)
}

/// One container seen as a node. Cheap to clone; every call inspects the container, so a
/// restarted container (new pid) is followed.
#[derive(Clone)]
pub struct DockerNode {
    docker: Docker,
    node: ResolvedNode,
}

impl std::fmt::Debug for DockerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerNode")
            .field("node", &self.node)
            .finish()
    }
}

impl DockerNode {
    /// A node whose `handle` is the container name (or id).
    pub fn new(docker: Docker, node: ResolvedNode) -> Self {
        Self { docker, node }
    }

    /// The container name (or id).
    pub fn container(&self) -> &str {
        &self.node.handle
    }

    /// Inspect the container.
    pub async fn inspect(&self) -> Result<ContainerInspectResponse, DockerError> {
        self.docker
            .inspect_container(
                self.container(),
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    DockerError::ContainerNotFound {
                        container: self.container().into(),
                        detail: "does not exist".into(),
                    }
                } else {
                    DockerError::api("inspect container", self.container(), e)
                }
            })
    }

    /// Host pid of the container's init process (the container must be running).
    pub async fn pid(&self) -> Result<i64, DockerError> {
        let info = self.inspect().await?;
        match info
            .state
            .and_then(|s| if s.running == Some(true) { s.pid } else { None })
        {
            Some(pid) if pid > 0 => Ok(pid),
            _ => Err(DockerError::ContainerNotFound {
                container: self.container().into(),
                detail: "is not running".into(),
            }),
        }
    }

    /// Run `f` on the container's root filesystem in a blocking thread.
    pub(crate) async fn with_root<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Root) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, DockerError> {
        let pid = self.pid().await?;
        let name = self.container().to_string();
        tokio::task::spawn_blocking(move || {
            let root = Root::open(pid)
                .map_err(|e| DockerError::io(format!("open /proc/{pid}/root of `{name}`"), e))?;
            f(&root).map_err(|e| DockerError::io(format!("in container `{name}`"), e))
        })
        .await
        .map_err(|e| DockerError::Tool {
            tool: "blocking task".into(),
            detail: e.to_string(),
        })?
    }

    /// Run a host tool in the container's namespaces (`nsenter -t PID <ns> -- argv`).
    pub(crate) async fn in_ns(
        &self,
        ns: &[&str],
        argv: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, DockerError> {
        let pid = self.pid().await?;
        let full = nsenter(pid, ns, argv);
        host_tool(&full, stdin, TOOL_TIMEOUT).await
    }

    /// `nft list ruleset` in the container's network namespace.
    pub async fn ruleset(&self) -> Result<String, DockerError> {
        let argv = ["nft", "list", "ruleset"];
        let out = self.in_ns(&["-n"], &argv, None).await?;
        let out = check_ok(&argv.map(String::from), out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Apply an nft script atomically (`nft -f -`) in the container's network namespace.
    pub async fn apply_nft(&self, script: &str) -> Result<(), DockerError> {
        let argv = ["nft", "-f", "-"];
        let out = self.in_ns(&["-n"], &argv, Some(script.as_bytes())).await?;
        check_ok(&argv.map(String::from), out).map(|_| ())
    }

    /// Value of a kernel parameter as the container sees it (read in its net/uts/ipc
    /// namespaces, where the namespaced parameters live).
    pub async fn sysctl(&self, key: &str) -> Result<Option<String>, DockerError> {
        let path =
            parse::sysctl_path(key).map_err(|detail| DockerError::InvalidTarget { detail })?;
        let out = self
            .in_ns(&["-n", "-u", "-i"], &["cat", &path], None)
            .await?;
        if out.exit_code == Some(0) {
            return Ok(Some(
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            ));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file") {
            return Ok(None);
        }
        Err(DockerError::Tool {
            tool: format!("cat {path}"),
            detail: err.trim().to_string(),
        })
    }

    /// Networks the container is attached to, with their endpoint settings.
    pub async fn endpoints(&self) -> Result<HashMap<String, EndpointSettings>, DockerError> {
        let info = self.inspect().await?;
        Ok(info
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default())
    }

    fn failed(&self, op: &str, e: impl std::fmt::Display) -> NodeError {
        NodeError::Failed {
            node: self.node.name.clone(),
            op: op.into(),
            detail: e.to_string(),
        }
    }
}

/// Aliases worth restoring: drop the short container id docker adds by itself.
pub(crate) fn user_aliases(ep: &EndpointSettings, container_id: &str) -> Vec<String> {
    ep.aliases
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| !(a.len() >= 12 && container_id.starts_with(a.as_str())))
        .collect()
}

#[async_trait]
impl NodeOps for DockerNode {
    fn node(&self) -> &ResolvedNode {
        &self.node
    }

    fn driver(&self) -> &'static str {
        "docker"
    }

    async fn exec(
        &self,
        argv: &[String],
        env: &[(String, String)],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<ExecOutput, NodeError> {
        docker_exec(&self.docker, self.container(), argv, env, stdin, timeout)
            .await
            .map_err(|e| self.failed("exec", e))
    }

    async fn read_file(&self, path: &str) -> Result<Option<FileContent>, NodeError> {
        let p = path.to_string();
        let r = self
            .with_root(move |root| root.read(&p, READ_LIMIT))
            .await
            .map_err(|e| self.failed("read_file", e))?;
        match r {
            None => Ok(None),
            Some((meta, Some((content, false)))) => Ok(Some(FileContent {
                content,
                mode: meta.mode,
                uid: meta.uid,
                gid: meta.gid,
            })),
            Some((_, Some((_, true)))) => Err(self.failed(
                "read_file",
                format!("{path} is larger than {READ_LIMIT} bytes"),
            )),
            Some((meta, None)) => Err(self.failed(
                "read_file",
                format!(
                    "{path} is not a regular file ({})",
                    if meta.kind == Kind::Dir {
                        "a directory"
                    } else {
                        "a special file"
                    }
                ),
            )),
        }
    }

    async fn write_file(
        &self,
        path: &str,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), NodeError> {
        let p = path.to_string();
        let c = content.to_vec();
        self.with_root(move |root| root.write_atomic(&p, &c, mode, uid, gid))
            .await
            .map_err(|e| self.failed("write_file", e))
    }

    async fn read_link(&self, path: &str) -> Result<Option<String>, NodeError> {
        let p = path.to_string();
        self.with_root(move |root| root.read_link(&p))
            .await
            .map_err(|e| self.failed("read_link", e))
    }

    async fn lstat(&self, path: &str) -> Result<Option<EntryStat>, NodeError> {
        let p = path.to_string();
        self.with_root(move |root| root.lstat(&p))
            .await
            .map_err(|e| self.failed("lstat", e))
    }

    async fn list_dir(&self, path: &str) -> Result<DirListing, NodeError> {
        let p = path.to_string();
        self.with_root(move |root| root.list_dir(&p))
            .await
            .map_err(|e| self.failed("list_dir", e))
    }

    async fn list_tree(
        &self,
        dirs: &[String],
        depth: usize,
    ) -> Result<Vec<(String, DirListing)>, NodeError> {
        let d = dirs.to_vec();
        self.with_root(move |root| root.list_tree(&d, depth))
            .await
            .map_err(|e| self.failed("list_tree", e))
    }

    async fn symlink(&self, target: &str, path: &str) -> Result<(), NodeError> {
        let (t, p) = (target.to_string(), path.to_string());
        self.with_root(move |root| root.symlink(&t, &p))
            .await
            .map_err(|e| self.failed("symlink", e))
    }

    async fn chmod(&self, path: &str, mode: u32) -> Result<(), NodeError> {
        let p = path.to_string();
        self.with_root(move |root| root.chmod(&p, mode))
            .await
            .map_err(|e| self.failed("chmod", e))
    }

    async fn nft_ruleset(&self) -> Result<String, NodeError> {
        self.ruleset()
            .await
            .map_err(|e| self.failed("nft_ruleset", e))
    }

    async fn nft_apply(&self, script: &str) -> Result<(), NodeError> {
        self.apply_nft(script)
            .await
            .map_err(|e| self.failed("nft_apply", e))
    }

    async fn sysctl_get(&self, key: &str) -> Result<Option<String>, NodeError> {
        self.sysctl(key)
            .await
            .map_err(|e| self.failed("sysctl_get", e))
    }

    async fn sysctl_set(&self, key: &str, value: &str) -> Result<(), NodeError> {
        let path = parse::sysctl_path(key).map_err(|e| self.failed("sysctl_set", e))?;
        if value.contains('\n') {
            return Err(self.failed("sysctl_set", "value must be a single line"));
        }
        let argv = ["tee", path.as_str()];
        let data = format!("{value}\n");
        let out = self
            .in_ns(&["-n", "-u", "-i"], &argv, Some(data.as_bytes()))
            .await
            .map_err(|e| self.failed("sysctl_set", e))?;
        check_ok(&argv.map(String::from), out)
            .map(|_| ())
            .map_err(|e| self.failed("sysctl_set", e))
    }

    async fn networks(&self) -> Result<Vec<String>, NodeError> {
        let mut v: Vec<String> = self
            .endpoints()
            .await
            .map_err(|e| self.failed("networks", e))?
            .into_keys()
            .collect();
        v.sort();
        Ok(v)
    }

    async fn quarantine(&self, keep: Option<&str>) -> Result<Vec<String>, NodeError> {
        let info = self
            .inspect()
            .await
            .map_err(|e| self.failed("quarantine", e))?;
        let id = info.id.clone().unwrap_or_default();
        let eps = info
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        let mut cut = Vec::new();
        for (net, ep) in eps {
            if Some(net.as_str()) == keep {
                continue;
            }
            quarantined()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(id.clone())
                .or_default()
                .insert(net.clone(), ep);
            self.docker
                .disconnect_network(
                    &net,
                    NetworkDisconnectRequest {
                        container: Some(id.clone()),
                        force: Some(true),
                    },
                )
                .await
                .map_err(|e| {
                    self.failed(
                        "quarantine",
                        DockerError::api("disconnect from network", &net, e),
                    )
                })?;
            cut.push(net);
        }
        cut.sort();
        Ok(cut)
    }

    async fn release(&self, networks: &[String]) -> Result<(), NodeError> {
        let info = self
            .inspect()
            .await
            .map_err(|e| self.failed("release", e))?;
        let id = info.id.clone().unwrap_or_default();
        let attached = info
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        for net in networks {
            if attached.contains_key(net) {
                continue;
            }
            let saved = quarantined()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&id)
                .and_then(|m| m.remove(net));
            let aliases = saved.as_ref().map(|ep| user_aliases(ep, &id));
            let ip = saved.as_ref().and_then(|ep| {
                ep.ipam_config
                    .as_ref()
                    .and_then(|c| c.ipv4_address.clone())
                    .filter(|s| !s.is_empty())
                    .or_else(|| ep.ip_address.clone().filter(|s| !s.is_empty()))
            });
            let connect = |with_ip: bool| NetworkConnectRequest {
                container: Some(id.clone()),
                endpoint_config: Some(EndpointSettings {
                    aliases: aliases.clone(),
                    ipam_config: if with_ip {
                        ip.clone().map(|ip| EndpointIpamConfig {
                            ipv4_address: Some(ip),
                            ..Default::default()
                        })
                    } else {
                        None
                    },
                    ..Default::default()
                }),
            };
            // The same address when the network allows it (user-configured subnet), else any.
            let first = self
                .docker
                .connect_network(net, connect(ip.is_some()))
                .await;
            if first.is_err() {
                self.docker
                    .connect_network(net, connect(false))
                    .await
                    .map_err(|e| {
                        self.failed("release", DockerError::api("connect to network", net, e))
                    })?;
            }
        }
        Ok(())
    }
}
