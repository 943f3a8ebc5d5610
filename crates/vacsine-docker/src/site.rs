//! [`DockerSite`]: a target resolved to containers, and observation of every probe.

use crate::error::{is_not_found, DockerError};
use crate::exec::{docker_exec, host_tool, nsenter};
use crate::fsroot::Kind;
use crate::host::{host_busybox, processes_in_pidns};
use crate::node::DockerNode;
use crate::SANDBOX_LABEL;
use async_trait::async_trait;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use bollard::Docker;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use vacsine_core::node::{FileStat, NodeOps, Observation, Site};
use vacsine_core::parse;
use vacsine_core::policy::{Check, FileCheck, Protocol, SshCheck};
use vacsine_core::procnet;
use vacsine_core::target::{DriverKind, ResolvedNode, Target};

/// Content read for file checks is bounded to this many bytes.
pub const CONTENT_LIMIT: u64 = 1 << 20;
/// Output kept from network probes.
const PROBE_OUTPUT_LIMIT: usize = 1 << 20;

/// A target resolved to running containers: nodes and vantage points.
#[derive(Clone)]
pub struct DockerSite {
    docker: Docker,
    nodes: Vec<Arc<DockerNode>>,
    vantage: BTreeMap<String, Arc<DockerNode>>,
    management_network: Option<String>,
    /// Nodes whose container is stopped or missing → why. Their observations are errors with
    /// this reason; the other nodes are checked as usual.
    unavailable: BTreeMap<String, String>,
}

impl std::fmt::Debug for DockerSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerSite")
            .field("nodes", &self.nodes)
            .field("vantage", &self.vantage)
            .finish()
    }
}

fn trim_name(n: &str) -> String {
    n.trim_start_matches('/').to_string()
}

impl DockerSite {
    /// Connect to the local engine and resolve `target` (see [`DockerSite::resolve`]).
    pub async fn connect(target: &Target) -> Result<DockerSite, DockerError> {
        let docker = crate::connect().await?;
        Self::resolve(docker, target).await
    }

    /// Resolve every node spec (by `container` name, or by label `selector`: every running
    /// container carrying all the labels, sandbox clones excluded) and every vantage point.
    /// Node name: the spec's `name`, else the container name (a selector matching several
    /// containers names each node after its container). A node named by `container` that is
    /// stopped or missing stays in the site as unavailable (see [`DockerSite::unavailable`]):
    /// its checks report an error with the reason, the other nodes are checked.
    pub async fn resolve(docker: Docker, target: &Target) -> Result<DockerSite, DockerError> {
        if target.spec.driver != DriverKind::Docker {
            return Err(DockerError::InvalidTarget {
                detail: format!(
                    "target `{}` uses driver {:?}: the docker driver needs `driver: docker`",
                    target.metadata.name.value, target.spec.driver
                ),
            });
        }
        let mut nodes: Vec<Arc<DockerNode>> = Vec::new();
        let mut unavailable = BTreeMap::new();
        for spec in &target.spec.nodes {
            let mut missing = None;
            let containers: Vec<String> = match (&spec.container, spec.selector.is_empty()) {
                (Some(c), true) => match running_container(&docker, &c.value).await {
                    Ok(name) => vec![name],
                    Err(e @ DockerError::ContainerNotFound { .. }) => {
                        missing = Some(e.to_string());
                        vec![c.value.clone()]
                    }
                    Err(e) => return Err(e),
                },
                (None, false) => {
                    let filters: HashMap<String, Vec<String>> = HashMap::from([(
                        "label".to_string(),
                        spec.selector
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect(),
                    )]);
                    let list = docker
                        .list_containers(Some(ListContainersOptions {
                            filters: Some(filters),
                            ..Default::default()
                        }))
                        .await
                        .map_err(|e| DockerError::api("list containers", "selector", e))?;
                    let want_sandbox = spec.selector.contains_key(SANDBOX_LABEL);
                    let mut names: Vec<String> = list
                        .into_iter()
                        .filter(|c| {
                            want_sandbox
                                || !c
                                    .labels
                                    .as_ref()
                                    .is_some_and(|l| l.contains_key(SANDBOX_LABEL))
                        })
                        .filter_map(|c| c.names.and_then(|n| n.first().map(|n| trim_name(n))))
                        .collect();
                    names.sort();
                    if names.is_empty() {
                        return Err(DockerError::SelectorEmpty {
                            selector: format!("{:?}", spec.selector),
                        });
                    }
                    names
                }
                _ => {
                    return Err(DockerError::InvalidTarget {
                        detail: "each node needs exactly one of `container:` or `selector:`".into(),
                    })
                }
            };
            let single = containers.len() == 1;
            for c in containers {
                let name = match (&spec.name, single) {
                    (Some(n), true) => n.value.clone(),
                    _ => c.clone(),
                };
                if nodes.iter().any(|n| n.node().name == name) {
                    return Err(DockerError::DuplicateNode { name });
                }
                if let Some(why) = &missing {
                    unavailable.insert(name.clone(), why.clone());
                }
                nodes.push(Arc::new(DockerNode::new(
                    docker.clone(),
                    ResolvedNode {
                        name,
                        roles: spec.roles.clone(),
                        labels: spec.labels.clone(),
                        handle: c,
                    },
                )));
            }
        }
        let mut vantage = BTreeMap::new();
        for v in &target.spec.vantage_points {
            let c = running_container(&docker, &v.container.value).await?;
            vantage.insert(
                v.name.value.clone(),
                Arc::new(DockerNode::new(
                    docker.clone(),
                    ResolvedNode {
                        name: v.name.value.clone(),
                        roles: vec![],
                        labels: BTreeMap::new(),
                        handle: c,
                    },
                )),
            );
        }
        Ok(DockerSite {
            docker,
            nodes,
            vantage,
            management_network: target.spec.management_network.clone(),
            unavailable,
        })
    }

    pub(crate) fn from_parts(
        docker: Docker,
        nodes: Vec<ResolvedNode>,
        vantage: BTreeMap<String, String>,
        management_network: Option<String>,
        unavailable: BTreeMap<String, String>,
    ) -> Self {
        DockerSite {
            nodes: nodes
                .into_iter()
                .map(|n| Arc::new(DockerNode::new(docker.clone(), n)))
                .collect(),
            vantage: vantage
                .into_iter()
                .map(|(name, c)| {
                    (
                        name.clone(),
                        Arc::new(DockerNode::new(
                            docker.clone(),
                            ResolvedNode {
                                name,
                                roles: vec![],
                                labels: BTreeMap::new(),
                                handle: c,
                            },
                        )),
                    )
                })
                .collect(),
            docker,
            management_network,
            unavailable,
        }
    }

    /// Nodes whose container is stopped or missing, with the reason (node name → reason).
    pub fn unavailable(&self) -> &BTreeMap<String, String> {
        &self.unavailable
    }

    /// The engine connection.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Vantage point name → container name.
    pub fn vantage_points(&self) -> BTreeMap<String, String> {
        self.vantage
            .iter()
            .map(|(k, v)| (k.clone(), v.container().to_string()))
            .collect()
    }

    /// The management network kept by quarantine (from the target).
    pub fn management_network(&self) -> Option<&str> {
        self.management_network.as_deref()
    }

    /// The node named `name`, as a container handle.
    pub fn docker_node(&self, name: &str) -> Option<Arc<DockerNode>> {
        self.nodes.iter().find(|n| n.node().name == name).cloned()
    }

    /// The vantage point named `name`, as a container handle (a scan runs there).
    pub fn vantage_node(&self, name: &str) -> Option<Arc<DockerNode>> {
        self.vantage.get(name).cloned()
    }

    /// Address of `node` for network probes from vantage point `vantage`: its IP on a network
    /// it shares with the vantage container (the first such network by name).
    pub async fn node_address(&self, node: &str, vantage: &str) -> Result<String, DockerError> {
        let n = self
            .docker_node(node)
            .ok_or_else(|| DockerError::InvalidTarget {
                detail: format!("no node `{node}` in this site"),
            })?;
        let v = self
            .vantage
            .get(vantage)
            .ok_or_else(|| DockerError::InvalidTarget {
                detail: format!(
                    "no vantage point `{vantage}`: declare it under the target's `vantagePoints:`"
                ),
            })?;
        let ni = n.inspect().await?;
        let vi = v.inspect().await?;
        if ni.id.is_some() && ni.id == vi.id {
            return Ok("127.0.0.1".into());
        }
        let nn = ni
            .network_settings
            .and_then(|s| s.networks)
            .unwrap_or_default();
        let vn = vi
            .network_settings
            .and_then(|s| s.networks)
            .unwrap_or_default();
        let mut shared: Vec<&String> = nn.keys().filter(|k| vn.contains_key(*k)).collect();
        shared.sort();
        for net in shared {
            if let Some(ip) = nn[net].ip_address.clone().filter(|s| !s.is_empty()) {
                return Ok(ip);
            }
        }
        Err(DockerError::InvalidTarget {
            detail: format!(
                "node `{node}` (container `{}`) shares no network with vantage point `{vantage}` (container `{}`): connect both to a common network",
                n.container(),
                v.container()
            ),
        })
    }

    /// Run a busybox applet from the vantage point's network namespace: the host's static
    /// busybox under `nsenter -n` when present (fast), else `docker exec` in the vantage
    /// container (which must then have the applet).
    async fn run_from_vantage(
        &self,
        vantage: &str,
        applet_argv: &[String],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<vacsine_core::node::ExecOutput, DockerError> {
        let v = self
            .vantage
            .get(vantage)
            .ok_or_else(|| DockerError::InvalidTarget {
                detail: format!(
                    "no vantage point `{vantage}`: declare it under the target's `vantagePoints:`"
                ),
            })?;
        let busybox = host_busybox();
        if busybox.exists() {
            let pid = v.pid().await?;
            let bb = busybox.to_string_lossy().into_owned();
            let mut argv: Vec<&str> = vec![&bb];
            argv.extend(applet_argv.iter().map(String::as_str));
            let full = nsenter(pid, &["-n"], &argv);
            host_tool(&full, stdin.as_deref(), timeout).await
        } else {
            docker_exec(
                &self.docker,
                v.container(),
                applet_argv,
                &[],
                stdin,
                timeout,
            )
            .await
        }
    }

    async fn observe_port(&self, node: &str, c: &vacsine_core::policy::PortCheck) -> Observation {
        let ip = match self.node_address(node, &c.from.value).await {
            Ok(ip) => ip,
            Err(e) => return err(e),
        };
        let secs = c.timeout_ms.div_ceil(1000).max(1);
        let argv: Vec<String> = ["nc", "-w", &secs.to_string(), &ip, &c.port.to_string()]
            .map(String::from)
            .to_vec();
        let out = match self
            .run_from_vantage(
                &c.from.value,
                &argv,
                Some(Vec::new()),
                Duration::from_secs(secs + 1),
            )
            .await
        {
            Ok(o) => o,
            Err(e) => return err(e),
        };
        let address = format!("{ip}:{}", c.port);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let refused = [
            "can't connect",
            "refused",
            "timed out",
            "unreachable",
            "No route",
        ]
        .iter()
        .any(|s| stderr.contains(s));
        if out.timed_out {
            Observation::Port {
                address,
                open: true,
                detail: "connected; the service sent nothing before the probe timeout".into(),
            }
        } else if refused || (out.exit_code != Some(0) && out.stdout.is_empty()) {
            Observation::Port {
                address,
                open: false,
                detail: if stderr.is_empty() {
                    format!("nc exit {:?}", out.exit_code)
                } else {
                    stderr
                },
            }
        } else {
            Observation::Port {
                address,
                open: true,
                detail: "TCP connection accepted".into(),
            }
        }
    }

    async fn observe_http(&self, node: &str, c: &vacsine_core::policy::HttpCheck) -> Observation {
        if !c.path.starts_with('/')
            || c.path
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            return Observation::Error {
                message: format!(
                    "invalid HTTP path `{}`: it must start with / and contain no whitespace",
                    c.path
                ),
            };
        }
        let ip = match self.node_address(node, &c.from.value).await {
            Ok(ip) => ip,
            Err(e) => return err(e),
        };
        let url = format!("http://{ip}:{}{}", c.port, c.path);
        let secs = c.timeout_ms.div_ceil(1000).max(1);
        // A plain HTTP/1.0 request through nc: the exact status and body, any status code.
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {ip}:{}\r\nUser-Agent: vacsine-probe\r\nConnection: close\r\n\r\n",
            c.path, c.port
        );
        let argv: Vec<String> = ["nc", "-w", &secs.to_string(), &ip, &c.port.to_string()]
            .map(String::from)
            .to_vec();
        let out = match self
            .run_from_vantage(
                &c.from.value,
                &argv,
                Some(request.into_bytes()),
                Duration::from_millis(c.timeout_ms.max(1000) + 1000),
            )
            .await
        {
            Ok(o) => o,
            Err(e) => return err(e),
        };
        let mut raw = out.stdout;
        raw.truncate(PROBE_OUTPUT_LIMIT);
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = match text
            .split_once("\r\n\r\n")
            .or_else(|| text.split_once("\n\n"))
        {
            Some((h, b)) => (h.to_string(), b.to_string()),
            None => (text.to_string(), String::new()),
        };
        let status = head.lines().next().and_then(|l| {
            let mut it = l.split_whitespace();
            let proto = it.next()?;
            if !proto.starts_with("HTTP/") {
                return None;
            }
            it.next()?.parse::<u16>().ok()
        });
        let detail = match status {
            Some(_) => head.lines().next().unwrap_or_default().trim().to_string(),
            None if out.timed_out => "no HTTP answer before the timeout".into(),
            None => {
                let e = String::from_utf8_lossy(&out.stderr).trim().to_string();
                if e.is_empty() {
                    "connection closed without an HTTP answer".into()
                } else {
                    e
                }
            }
        };
        Observation::Http {
            url,
            status,
            body: if status.is_some() {
                body
            } else {
                String::new()
            },
            detail,
        }
    }

    async fn observe_file(&self, n: &DockerNode, c: &FileCheck) -> Observation {
        let path = c.path.clone();
        let want_content = c.contains.is_some() || c.not_contains.is_some();
        let r = n
            .with_root(move |root| {
                let main = if want_content {
                    root.read(&path, CONTENT_LIMIT)?
                        .map(|(m, c)| (m, c.map(|(b, _)| b)))
                } else {
                    root.stat(&path)?.map(|m| (m, None))
                };
                let Some((meta, content)) = main else {
                    return Ok(None);
                };
                let passwd = read_small(root, "/etc/passwd");
                let group = read_small(root, "/etc/group");
                Ok(Some((meta, content, passwd, group)))
            })
            .await;
        match r {
            Err(e) => err(e),
            Ok(None) => Observation::File {
                path: c.path.clone(),
                stat: None,
                content: None,
            },
            Ok(Some((meta, content, passwd, group))) => {
                let owner = parse::passwd(&passwd)
                    .into_iter()
                    .find(|p| p.uid == meta.uid)
                    .map(|p| p.name);
                let group = parse::groups(&group).remove(&meta.gid);
                Observation::File {
                    path: c.path.clone(),
                    stat: Some(FileStat {
                        mode: meta.mode,
                        uid: meta.uid,
                        gid: meta.gid,
                        owner,
                        group,
                        is_dir: meta.kind == Kind::Dir,
                        size: meta.size,
                    }),
                    content: content.map(|b| String::from_utf8_lossy(&b).into_owned()),
                }
            }
        }
    }

    async fn observe_package(&self, n: &DockerNode, name: &str) -> Observation {
        let r = n
            .with_root(|root| {
                if let Some((_, Some((b, _)))) = root.read("/var/lib/dpkg/status", 64 << 20)? {
                    return Ok(("dpkg", String::from_utf8_lossy(&b).into_owned()));
                }
                if let Some((_, Some((b, _)))) = root.read("/lib/apk/db/installed", 64 << 20)? {
                    return Ok(("apk", String::from_utf8_lossy(&b).into_owned()));
                }
                Ok(("none", String::new()))
            })
            .await;
        match r {
            Err(e) => err(e),
            Ok((db, text)) => {
                let (installed_version, broken) = match db {
                    "dpkg" => match parse::dpkg_package(&text, name) {
                        Some((v, b)) => (Some(v), b),
                        None => (None, None),
                    },
                    "apk" => (parse::apk_installed(&text, name), None),
                    _ => (None, None),
                };
                Observation::Package {
                    database: db.into(),
                    installed_version,
                    broken,
                }
            }
        }
    }

    async fn observe_process(&self, n: &DockerNode) -> Observation {
        let pid = match n.pid().await {
            Ok(p) => p,
            Err(e) => return err(e),
        };
        match tokio::task::spawn_blocking(move || processes_in_pidns(pid)).await {
            Ok(Ok(running)) => Observation::Process { running },
            Ok(Err(e)) => Observation::Error {
                message: format!("listing processes of container `{}`: {e}", n.container()),
            },
            Err(e) => Observation::Error {
                message: e.to_string(),
            },
        }
    }

    /// Listening sockets of the node's network namespace, read from the host through the
    /// socket tables of its init process (`/proc/<pid>/net/*` is that namespace's view), so
    /// no tool is needed in the node and a firewall rule cannot hide a socket.
    async fn observe_listening(&self, n: &DockerNode) -> Observation {
        let pid = match n.pid().await {
            Ok(p) => p,
            Err(e) => return err(e),
        };
        let r = tokio::task::spawn_blocking(move || {
            let mut sockets = Vec::new();
            for (file, protocol, ipv6) in [
                ("tcp", Protocol::Tcp, false),
                ("tcp6", Protocol::Tcp, true),
                ("udp", Protocol::Udp, false),
                ("udp6", Protocol::Udp, true),
            ] {
                let path = format!("/proc/{pid}/net/{file}");
                let text = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    // No IPv6 in this namespace (or kernel): no table, no socket.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && ipv6 => continue,
                    Err(e) => return Err(format!("reading {path}: {e}")),
                };
                sockets.extend(procnet::parse_table(&text, protocol, ipv6)?);
            }
            sockets.sort();
            sockets.dedup();
            Ok(sockets)
        })
        .await;
        match r {
            Ok(Ok(sockets)) => Observation::Listening { sockets },
            Ok(Err(e)) => Observation::Error {
                message: format!("listening sockets of container `{}`: {e}", n.container()),
            },
            Err(e) => Observation::Error {
                message: e.to_string(),
            },
        }
    }

    /// An SSH client session from the vantage point's network namespace (see `ssh.rs`).
    async fn observe_ssh(&self, node: &str, c: &SshCheck) -> Observation {
        let ip = match self.node_address(node, &c.from.value).await {
            Ok(ip) => ip,
            Err(e) => return err(e),
        };
        let Some(v) = self.vantage.get(&c.from.value) else {
            return Observation::Error {
                message: format!(
                    "no vantage point `{}`: declare it under the target's `vantagePoints:`",
                    c.from.value
                ),
            };
        };
        let pid = match v.pid().await {
            Ok(p) => p,
            Err(e) => return err(e),
        };
        let key = match &c.key {
            None => None,
            Some(path) => match crate::ssh::load_key(&path.value).await {
                Ok(k) => Some(k),
                Err(message) => return Observation::Error { message },
            },
        };
        crate::ssh::probe(pid, &ip, c, key).await
    }

    async fn observe_firewall(&self, n: &DockerNode) -> Observation {
        let ruleset = match n.ruleset().await {
            Ok(r) => r,
            Err(e) => return err(e),
        };
        let argv = ["nft", "-j", "list", "ruleset"];
        let out = match n.in_ns(&["-n"], &argv, None).await {
            Ok(o) if o.exit_code == Some(0) => o,
            Ok(o) => {
                return Observation::Error {
                    message: format!(
                        "nft -j list ruleset in `{}`: {}",
                        n.container(),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                }
            }
            Err(e) => return err(e),
        };
        // Docker's own tables (its embedded DNS's `ip nat`) are no finding of the policy's.
        let json = String::from_utf8_lossy(&out.stdout);
        match parse::nft_docker_tables(&json).and_then(|docker| {
            Ok((
                parse::nft_without_tables(&ruleset, &docker),
                parse::nft_base_policies(&json)?,
            ))
        }) {
            Ok((ruleset, base_policies)) => Observation::Firewall {
                ruleset,
                base_policies,
            },
            Err(message) => Observation::Error { message },
        }
    }
}

fn err(e: DockerError) -> Observation {
    Observation::Error {
        message: e.to_string(),
    }
}

fn read_small(root: &crate::fsroot::Root, path: &str) -> String {
    match root.read(path, CONTENT_LIMIT) {
        Ok(Some((_, Some((b, _))))) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    }
}

async fn running_container(docker: &Docker, name: &str) -> Result<String, DockerError> {
    match docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => {
            if info.state.and_then(|s| s.running) != Some(true) {
                return Err(DockerError::ContainerNotFound {
                    container: name.into(),
                    detail: "exists but is not running".into(),
                });
            }
            Ok(info
                .name
                .map(|n| trim_name(&n))
                .unwrap_or_else(|| name.into()))
        }
        Err(e) if is_not_found(&e) => Err(DockerError::ContainerNotFound {
            container: name.into(),
            detail: "does not exist".into(),
        }),
        Err(e) => Err(DockerError::api("inspect container", name, e)),
    }
}

#[async_trait]
impl Site for DockerSite {
    fn nodes(&self) -> Vec<ResolvedNode> {
        self.nodes.iter().map(|n| n.node().clone()).collect()
    }

    fn node_ops(&self, name: &str) -> Option<Arc<dyn NodeOps>> {
        self.docker_node(name).map(|n| n as Arc<dyn NodeOps>)
    }

    async fn observe(&self, node: &str, check: &Check) -> Observation {
        let Some(n) = self.docker_node(node) else {
            return Observation::Error {
                message: format!("no node `{node}` in this site"),
            };
        };
        if let Some(why) = self.unavailable.get(node) {
            return Observation::Error {
                message: why.clone(),
            };
        }
        match check {
            Check::Port(c) => self.observe_port(node, c).await,
            Check::Http(c) => self.observe_http(node, c).await,
            Check::File(c) => self.observe_file(&n, c).await,
            Check::Command(c) => {
                if c.argv.is_empty() {
                    return Observation::Error {
                        message: "command check with an empty argv".into(),
                    };
                }
                match docker_exec(
                    &self.docker,
                    n.container(),
                    &c.argv,
                    &[],
                    None,
                    Duration::from_millis(c.timeout_ms),
                )
                .await
                {
                    Ok(o) => Observation::Command {
                        exit_code: o.exit_code,
                        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                        stderr: if o.timed_out {
                            format!(
                                "timed out after {} ms; {}",
                                c.timeout_ms,
                                String::from_utf8_lossy(&o.stderr)
                            )
                        } else {
                            String::from_utf8_lossy(&o.stderr).into_owned()
                        },
                    },
                    Err(e) => err(e),
                }
            }
            Check::Process(_) => self.observe_process(&n).await,
            Check::Package(c) => self.observe_package(&n, &c.name).await,
            Check::Firewall(_) => self.observe_firewall(&n).await,
            Check::User(c) => {
                let r = n
                    .with_root(|root| Ok(read_small(root, "/etc/passwd")))
                    .await;
                match r {
                    Err(e) => err(e),
                    Ok(text) => Observation::User {
                        entry: parse::passwd(&text).into_iter().find(|p| p.name == c.name),
                    },
                }
            }
            Check::Listening(_) => self.observe_listening(&n).await,
            // Evaluated by the check layer (vacsine-scap over this node's NodeOps).
            Check::Scap(_) => Observation::Error {
                message: "a scap check is evaluated by the check layer, not observed by the driver"
                    .into(),
            },
            Check::Ssh(c) => self.observe_ssh(node, c).await,
            Check::Sysctl(c) => match n.sysctl(&c.key).await {
                Ok(value) => Observation::Sysctl {
                    key: c.key.clone(),
                    value,
                },
                Err(e) => err(e),
            },
        }
    }
}
