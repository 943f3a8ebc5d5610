//! The seam between the pure core and the drivers: what a driver observes for each probe, and
//! the operations executors need on a node. Implemented by `vacsine-docker` (containers) and by
//! the engine's local driver (the host itself).

use crate::policy::Check;
use crate::target::ResolvedNode;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Raw facts a driver gathered for one check on one node. Turned into an outcome by
/// [`crate::eval::evaluate`], which is pure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "probe", rename_all = "snake_case")]
pub enum Observation {
    Port {
        address: String,
        open: bool,
        detail: String,
    },
    Http {
        url: String,
        /// None: no HTTP answer (connection refused, timeout…).
        status: Option<u16>,
        body: String,
        detail: String,
    },
    File {
        path: String,
        /// None when the file does not exist.
        stat: Option<FileStat>,
        /// Content (bounded) when the check needs it and the file is a regular file.
        content: Option<String>,
    },
    Command {
        exit_code: Option<i32>,
        stdout: String,
        stderr: String,
    },
    Process {
        /// Names (`comm`) of every process running in the node.
        running: Vec<String>,
    },
    Package {
        /// Which database was read: `dpkg`, `apk`, or `none`.
        database: String,
        installed_version: Option<String>,
        /// Present but not fully installed: the package manager's state (dpkg
        /// `half-installed`, `unpacked`, `half-configured`). `None` when installed or absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        broken: Option<String>,
    },
    Firewall {
        /// `nft list ruleset` output of the node's network namespace.
        ruleset: String,
        /// hook name → policy of base chains (`input` → `drop`).
        base_policies: BTreeMap<String, Vec<String>>,
    },
    User {
        entry: Option<PasswdEntry>,
    },
    Sysctl {
        key: String,
        value: Option<String>,
    },
    Listening {
        /// Every listening socket of the node's network namespace (TCP and UDP, IPv4 and
        /// IPv6), whatever the check's port: the evidence names what is there.
        sockets: Vec<Listener>,
    },
    Ssh {
        /// `ip:port` connected to.
        address: String,
        /// The server's identification line (`SSH-2.0-OpenSSH_9.2p1 …`); None when no
        /// SSH server answered.
        banner: Option<String>,
        /// Methods the server offers to the user (from a `none` authentication request).
        /// None when not asked (no SSH session) or when `none` itself succeeded.
        methods: Option<Vec<String>>,
        /// Did the key log in? None when no key was tried.
        login: Option<bool>,
        /// Problems met on the way (connection refused, key exchange failed…).
        detail: String,
    },
    /// A SCAP rule evaluated on the node (`vacsine-scap`): its XCCDF result (`pass`, `fail`,
    /// `error`, `unknown`, `notapplicable`, `notchecked`) and the evaluator's evidence.
    Scap {
        rule: String,
        result: String,
        evidence: Vec<String>,
    },
    /// The driver could not observe: the outcome is `error`.
    Error {
        message: String,
    },
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Listener {
    pub protocol: crate::policy::Protocol,
    /// Bound address (`0.0.0.0`, `::`, `127.0.0.1`…); an IPv4-mapped IPv6 address is shown
    /// as IPv4.
    pub address: String,
    pub port: u16,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.address.contains(':') {
            write!(
                f,
                "{} [{}]:{}",
                self.protocol.as_str(),
                self.address,
                self.port
            )
        } else {
            write!(
                f,
                "{} {}:{}",
                self.protocol.as_str(),
                self.address,
                self.port
            )
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Permission bits (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Names resolved from the node's /etc/passwd and /etc/group, when known.
    pub owner: Option<String>,
    pub group: Option<String>,
    pub is_dir: bool,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// Result of running a program in a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// None when the process was killed (timeout) or the code is unknown.
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    /// Bytes written past the driver's read cap and dropped, per stream (the process was
    /// drained, not stopped: it ran to completion).
    #[serde(default)]
    pub stdout_dropped: u64,
    #[serde(default)]
    pub stderr_dropped: u64,
}

/// A file as read from a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileContent {
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What a path is, the final symbolic link not followed (`lstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Regular,
    Directory,
    Symlink,
    /// Device, FIFO, socket.
    Other,
}

/// `lstat` of a path as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryStat {
    pub kind: EntryKind,
    /// Permission bits (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// The link's target (read, not followed) when `kind` is [`EntryKind::Symlink`].
    pub link_target: Option<String>,
}

/// A directory's entries (name, `lstat`), or `None` when it is missing or not a directory.
pub type DirListing = Option<Vec<(String, EntryStat)>>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("node `{node}` not found: {detail}")]
    NotFound { node: String, detail: String },
    #[error("operation `{op}` is not supported by the {driver} driver")]
    Unsupported { op: String, driver: String },
    #[error("{op} on node `{node}` failed: {detail}")]
    Failed {
        node: String,
        op: String,
        detail: String,
    },
}

/// Operations executors run against one node. Arguments are data, never shell text.
#[async_trait]
pub trait NodeOps: Send + Sync {
    /// The node as resolved (name, roles, labels, driver handle).
    fn node(&self) -> &ResolvedNode;
    /// Driver name (`docker`, `local`) for messages.
    fn driver(&self) -> &'static str;
    /// Run `argv` in the node, with extra environment and optional stdin. The process (group)
    /// is killed at `timeout`.
    async fn exec(
        &self,
        argv: &[String],
        env: &[(String, String)],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<ExecOutput, NodeError>;
    /// Read a regular file; `Ok(None)` when it does not exist.
    async fn read_file(&self, path: &str) -> Result<Option<FileContent>, NodeError>;
    /// Write a file atomically (temp file + rename) with mode and ownership. A path that is a
    /// mount point (a bind-mounted file) is written in place instead (truncate, write, fsync),
    /// as renaming over it fails; a read-only mount is an error saying so.
    async fn write_file(
        &self,
        path: &str,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), NodeError>;
    /// Change permission bits of an existing path.
    async fn chmod(&self, path: &str, mode: u32) -> Result<(), NodeError>;
    /// The target of `path` when `path` itself is a symbolic link (read, not followed);
    /// `Ok(None)` when it is not a link or does not exist.
    async fn read_link(&self, path: &str) -> Result<Option<String>, NodeError> {
        let _ = path;
        Err(NodeError::Unsupported {
            op: "read_link".into(),
            driver: self.driver().into(),
        })
    }
    /// Make `path` a symbolic link to `target`, atomically replacing what is there.
    async fn symlink(&self, target: &str, path: &str) -> Result<(), NodeError> {
        let _ = (target, path);
        Err(NodeError::Unsupported {
            op: "symlink".into(),
            driver: self.driver().into(),
        })
    }
    /// `lstat` of `path` (a final symbolic link is described, not followed); `Ok(None)` when
    /// it does not exist. Drivers without it answer `Unsupported` (callers fall back to
    /// running programs in the node).
    async fn lstat(&self, path: &str) -> Result<Option<EntryStat>, NodeError> {
        let _ = path;
        Err(NodeError::Unsupported {
            op: "lstat".into(),
            driver: self.driver().into(),
        })
    }
    /// Entries of directory `path` (symbolic links in `path` followed, as `find -H` does),
    /// each with its `lstat`, sorted by name; `Ok(None)` when `path` is missing or not a
    /// directory. Drivers without it answer `Unsupported`.
    async fn list_dir(&self, path: &str) -> Result<DirListing, NodeError> {
        let _ = path;
        Err(NodeError::Unsupported {
            op: "list_dir".into(),
            driver: self.driver().into(),
        })
    }
    /// Listings of `dirs` and of their subdirectories (real directories, not links) down to
    /// `depth` levels: `depth` 1 lists only `dirs`. Each listed directory once, with its
    /// listing; a start point missing or not a directory comes with `None`. The default walks
    /// with [`NodeOps::list_dir`]; a driver that pays per call does it in one.
    async fn list_tree(
        &self,
        dirs: &[String],
        depth: usize,
    ) -> Result<Vec<(String, DirListing)>, NodeError> {
        let mut out = Vec::new();
        let mut level: Vec<String> = dirs.to_vec();
        for l in 0..depth {
            let mut next = Vec::new();
            for dir in level {
                let listing = self.list_dir(&dir).await?;
                if let Some(entries) = &listing {
                    if l + 1 < depth {
                        for (name, st) in entries {
                            if st.kind == EntryKind::Directory {
                                next.push(child_path(&dir, name));
                            }
                        }
                    }
                }
                out.push((dir, listing));
            }
            level = next;
        }
        Ok(out)
    }
    /// `nft list ruleset` of the node's network namespace.
    async fn nft_ruleset(&self) -> Result<String, NodeError>;
    /// Apply an nft script (`nft -f -`) atomically in the node's network namespace.
    async fn nft_apply(&self, script: &str) -> Result<(), NodeError>;
    /// Read a kernel parameter as the node sees it.
    async fn sysctl_get(&self, key: &str) -> Result<Option<String>, NodeError>;
    /// Set a kernel parameter in the node's namespaces (network parameters).
    async fn sysctl_set(&self, key: &str, value: &str) -> Result<(), NodeError>;
    /// Networks the node is attached to.
    async fn networks(&self) -> Result<Vec<String>, NodeError>;
    /// Disconnect from every network except `keep`; returns what was disconnected.
    async fn quarantine(&self, keep: Option<&str>) -> Result<Vec<String>, NodeError>;
    /// Reconnect networks removed by [`NodeOps::quarantine`].
    async fn release(&self, networks: &[String]) -> Result<(), NodeError>;
}

/// `dir/name`, without doubling the root's slash.
pub fn child_path(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// A resolved site: its nodes, and observation of checks on them.
#[async_trait]
pub trait Site: Send + Sync {
    fn nodes(&self) -> Vec<ResolvedNode>;
    fn node_ops(&self, name: &str) -> Option<std::sync::Arc<dyn NodeOps>>;
    /// Gather what `check` needs on node `node`. Never fails: problems are
    /// [`Observation::Error`].
    async fn observe(&self, node: &str, check: &Check) -> Observation;
}
