//! The local host as a node: processes spawned with tokio in their own process group, files
//! through the filesystem, nftables through `nft`.
//!
//! A command's life is its main process's: on timeout its whole process group is killed
//! (SIGKILL); when the main process ends, whatever it left running in its group (a background
//! `sleep 300 &`) is ended too (SIGTERM, then SIGKILL after half a second), and the output read
//! so far is kept. Output past 8 MiB per stream is drained and dropped, never left unread (the
//! process would die of SIGPIPE halfway): [`ExecOutput`] counts the dropped bytes.
//!
//! A `LocalNode` can be bound to a named network namespace (`ip netns`): commands, `nft` and
//! `sysctl` then run inside it through `ip netns exec NAME`, files stay the host's.

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use vacsine_core::node::{
    DirListing, EntryKind, EntryStat, ExecOutput, FileContent, NodeError, NodeOps,
};
use vacsine_core::target::ResolvedNode;

/// Deadline for the node's own housekeeping commands (`nft`, `sysctl`).
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// Cap on the bytes read from a child's stream (records keep far less).
const READ_CAP: u64 = 8 * 1024 * 1024;
/// How long the streams are still read once the command's process group is gone.
const STREAM_GRACE: Duration = Duration::from_secs(2);
/// Between SIGTERM and SIGKILL to what a finished command left in its process group.
const GROUP_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct LocalNode {
    node: ResolvedNode,
    /// Prefix of every command (e.g. `ip netns exec NAME`).
    wrapper: Vec<String>,
    netns: Option<String>,
}

impl LocalNode {
    /// The host itself, under `name`.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        LocalNode {
            node: ResolvedNode {
                name: name.clone(),
                roles: Vec::new(),
                labels: BTreeMap::new(),
                handle: "local".into(),
            },
            wrapper: Vec::new(),
            netns: None,
        }
    }
    pub fn with_roles(mut self, roles: &[&str]) -> Self {
        self.node.roles = roles.iter().map(|r| r.to_string()).collect();
        self
    }
    pub fn with_label(mut self, k: &str, v: &str) -> Self {
        self.node.labels.insert(k.into(), v.into());
        self
    }
    /// Run commands, `nft` and `sysctl` inside network namespace `netns` (`ip netns exec`).
    pub fn in_netns(mut self, netns: &str) -> Self {
        self.wrapper = vec!["ip".into(), "netns".into(), "exec".into(), netns.into()];
        self.netns = Some(netns.into());
        self.node.handle = format!("netns:{netns}");
        self
    }

    fn failed(&self, op: &str, detail: impl Into<String>) -> NodeError {
        NodeError::Failed {
            node: self.node.name.clone(),
            op: op.into(),
            detail: detail.into(),
        }
    }

    async fn run_ok(
        &self,
        op: &str,
        argv: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, NodeError> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let out = self.exec(&argv, &[], stdin, OP_TIMEOUT).await?;
        if out.exit_code == Some(0) {
            Ok(out.stdout)
        } else {
            Err(self.failed(
                op,
                format!(
                    "{} exited with {:?}: {}",
                    argv.join(" "),
                    out.exit_code,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ))
        }
    }
}

/// One stream's output: the bytes kept (at most [`READ_CAP`]) and how many were dropped.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
}

/// Read a child's stream to its end, keeping the first [`READ_CAP`] bytes and counting the
/// rest: the stream is always drained, so a chatty process is never killed by SIGPIPE. Stops
/// early (keeping what was read) when `stop` fires.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    r: Option<R>,
    mut stop: watch::Receiver<bool>,
) -> Captured {
    let mut out = Captured::default();
    let Some(mut r) = r else { return out };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            res = r.read(&mut chunk) => match res {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        let room = (READ_CAP as usize).saturating_sub(out.kept.len());
        let keep = n.min(room);
        out.kept.extend_from_slice(&chunk[..keep]);
        out.dropped += (n - keep) as u64;
    }
    out
}

fn kill_group(pid: Option<u32>, sig: Signal) {
    if let Some(pid) = pid {
        // The child leads its own group (process_group(0)), so its pid is the group id.
        let _ = killpg(Pid::from_raw(pid as i32), sig);
    }
}

/// End what is left of a finished command's process group: SIGTERM, then SIGKILL if anything
/// is still there after [`GROUP_GRACE`]. Returns at once when the group is already empty.
async fn end_group(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    let pg = Pid::from_raw(pid as i32);
    if killpg(pg, Signal::SIGTERM).is_err() {
        return; // ESRCH: no process left in the group
    }
    let deadline = tokio::time::Instant::now() + GROUP_GRACE;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if killpg(pg, None).is_err() {
            return;
        }
    }
    let _ = killpg(pg, Signal::SIGKILL);
}

fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

#[async_trait]
impl NodeOps for LocalNode {
    fn node(&self) -> &ResolvedNode {
        &self.node
    }
    fn driver(&self) -> &'static str {
        "local"
    }

    async fn exec(
        &self,
        argv: &[String],
        env: &[(String, String)],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<ExecOutput, NodeError> {
        let full: Vec<&String> = self.wrapper.iter().chain(argv.iter()).collect();
        let Some((prog, args)) = full.split_first() else {
            return Err(self.failed("exec", "empty argv"));
        };
        // The local node is the executors' one way to spawn (clippy.toml).
        #[allow(clippy::disallowed_methods)]
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| self.failed("exec", format!("cannot start `{prog}`: {e}")))?;
        let pid = child.id();
        // Reachable by a cancelled run (signals are forwarded to the group).
        let _group = pid.map(|p| crate::procgroup::register(p as i32));
        let (stop, stop_rx) = watch::channel(false);
        let mut out_task = tokio::spawn(read_capped(child.stdout.take(), stop_rx.clone()));
        let mut err_task = tokio::spawn(read_capped(child.stderr.take(), stop_rx));
        if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = w.write_all(&data).await;
                let _ = w.shutdown().await;
            });
        }
        let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(s) => (s.ok(), false),
            Err(_) => {
                kill_group(pid, Signal::SIGKILL);
                (child.wait().await.ok(), true)
            }
        };
        // The main process has ended: so does the step. What it left running in its process
        // group is ended too (SIGTERM, then SIGKILL), and the output read so far is kept.
        end_group(pid).await;
        // The streams close once no process holds them. One that left the group (setsid) may
        // still hold them: reading stops after a grace delay, keeping what was read.
        let joined = tokio::time::timeout(STREAM_GRACE, async {
            ((&mut out_task).await, (&mut err_task).await)
        })
        .await;
        let mut left_open = false;
        let (out, err) = match joined {
            Ok((o, e)) => (o.unwrap_or_default(), e.unwrap_or_default()),
            Err(_) => {
                left_open = true;
                let _ = stop.send(true);
                (
                    out_task.await.unwrap_or_default(),
                    err_task.await.unwrap_or_default(),
                )
            }
        };
        let mut stderr = err.kept;
        if left_open {
            stderr.extend_from_slice(
                b"\n[vacsine: stopped reading output: a process outside the step's process group kept it open]",
            );
        }
        Ok(ExecOutput {
            exit_code: if timed_out {
                None
            } else {
                status.and_then(|s| s.code())
            },
            stdout: out.kept,
            stderr,
            timed_out,
            stdout_dropped: out.dropped,
            stderr_dropped: err.dropped,
        })
    }

    async fn read_file(&self, path: &str) -> Result<Option<FileContent>, NodeError> {
        let meta = match tokio::fs::metadata(path).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.failed("read_file", format!("{path}: {e}"))),
        };
        if !meta.is_file() {
            return Err(self.failed("read_file", format!("{path} is not a regular file")));
        }
        let content = tokio::fs::read(path)
            .await
            .map_err(|e| self.failed("read_file", format!("{path}: {e}")))?;
        Ok(Some(FileContent {
            content,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        }))
    }

    async fn write_file(
        &self,
        path: &str,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), NodeError> {
        let p = std::path::Path::new(path);
        if p.parent().is_none() {
            return Err(self.failed("write_file", format!("{path} has no parent directory")));
        }
        let (content, path2) = (content.to_vec(), p.to_path_buf());
        tokio::task::spawn_blocking(move || write_local(&path2, &content, mode, uid, gid))
            .await
            .map_err(|e| self.failed("write_file", e.to_string()))?
            .map_err(|e| self.failed("write_file", describe_write_error(path, &e)))
    }

    async fn read_link(&self, path: &str) -> Result<Option<String>, NodeError> {
        match tokio::fs::symlink_metadata(path).await {
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(_) => return Ok(None),
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(self.failed("read_link", format!("{path}: {e}"))),
        }
        let target = tokio::fs::read_link(path)
            .await
            .map_err(|e| self.failed("read_link", format!("{path}: {e}")))?;
        target
            .into_os_string()
            .into_string()
            .map(Some)
            .map_err(|t| {
                self.failed(
                    "read_link",
                    format!("{path}: link target {t:?} is not UTF-8"),
                )
            })
    }

    async fn lstat(&self, path: &str) -> Result<Option<EntryStat>, NodeError> {
        let p = path.to_string();
        tokio::task::spawn_blocking(move || local_lstat(std::path::Path::new(&p)))
            .await
            .map_err(|e| self.failed("lstat", e.to_string()))?
            .map_err(|e| self.failed("lstat", format!("{path}: {e}")))
    }

    async fn list_dir(&self, path: &str) -> Result<DirListing, NodeError> {
        let p = path.to_string();
        tokio::task::spawn_blocking(move || local_list_dir(&p))
            .await
            .map_err(|e| self.failed("list_dir", e.to_string()))?
            .map_err(|e| self.failed("list_dir", format!("{path}: {e}")))
    }

    async fn symlink(&self, target: &str, path: &str) -> Result<(), NodeError> {
        let tmp = temp_beside(std::path::Path::new(path))
            .ok_or_else(|| self.failed("symlink", format!("{path} has no parent directory")))?;
        let res = async {
            tokio::fs::symlink(target, &tmp).await?;
            tokio::fs::rename(&tmp, path).await
        }
        .await;
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.failed("symlink", describe_write_error(path, &e)));
        }
        Ok(())
    }

    async fn chmod(&self, path: &str, mode: u32) -> Result<(), NodeError> {
        tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(|e| self.failed("chmod", format!("{path}: {e}")))
    }

    async fn nft_ruleset(&self) -> Result<String, NodeError> {
        let out = self
            .run_ok("nft_ruleset", &["nft", "list", "ruleset"], None)
            .await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    async fn nft_apply(&self, script: &str) -> Result<(), NodeError> {
        self.run_ok(
            "nft_apply",
            &["nft", "-f", "-"],
            Some(script.as_bytes().to_vec()),
        )
        .await
        .map(|_| ())
    }

    async fn sysctl_get(&self, key: &str) -> Result<Option<String>, NodeError> {
        let path = sysctl_path(key);
        if self.netns.is_some() {
            let argv = vec!["cat".to_string(), path];
            let out = self.exec(&argv, &[], None, OP_TIMEOUT).await?;
            return Ok((out.exit_code == Some(0))
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()));
        }
        match tokio::fs::read_to_string(&path).await {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.failed("sysctl_get", format!("{key}: {e}"))),
        }
    }

    async fn sysctl_set(&self, key: &str, value: &str) -> Result<(), NodeError> {
        let path = sysctl_path(key);
        if self.netns.is_some() {
            self.run_ok(
                "sysctl_set",
                &["tee", &path],
                Some(value.as_bytes().to_vec()),
            )
            .await?;
            return Ok(());
        }
        tokio::fs::write(&path, value)
            .await
            .map_err(|e| self.failed("sysctl_set", format!("{key}: {e}")))
    }

    async fn networks(&self) -> Result<Vec<String>, NodeError> {
        Err(NodeError::Unsupported {
            op: "networks".into(),
            driver: "local".into(),
        })
    }

    async fn quarantine(&self, _keep: Option<&str>) -> Result<Vec<String>, NodeError> {
        Err(NodeError::Unsupported {
            op: "quarantine".into(),
            driver: "local".into(),
        })
    }

    async fn release(&self, _networks: &[String]) -> Result<(), NodeError> {
        Err(NodeError::Unsupported {
            op: "release".into(),
            driver: "local".into(),
        })
    }
}

/// `lstat` of a host path; `None` when it does not exist.
fn local_lstat(p: &std::path::Path) -> std::io::Result<Option<EntryStat>> {
    let m = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let ft = m.file_type();
    let kind = if ft.is_file() {
        EntryKind::Regular
    } else if ft.is_dir() {
        EntryKind::Directory
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    };
    let link_target = match kind {
        EntryKind::Symlink => match std::fs::read_link(p) {
            Ok(t) => Some(t.to_string_lossy().into_owned()),
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        },
        _ => None,
    };
    Ok(Some(EntryStat {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        link_target,
    }))
}

/// Entries of a host directory with their `lstat`, sorted; `None` when missing or not a
/// directory.
fn local_list_dir(path: &str) -> std::io::Result<DirListing> {
    let rd = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        // Not UTF-8: no path the evaluator builds can name it.
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(st) = local_lstat(&entry.path())? {
            out.push((name, st));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(out))
}

fn absent(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
        || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
}

/// A fresh temporary name in the directory of `p`.
fn temp_beside(p: &std::path::Path) -> Option<std::path::PathBuf> {
    let dir = p.parent()?;
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    Some(dir.join(format!(".{name}.vacsine-{}", uuid::Uuid::new_v4().simple())))
}

/// An I/O error of a write, worded for the user (a read-only mount says so).
fn describe_write_error(path: &str, e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) {
        format!(
            "{path} is on a read-only mount and cannot be written (remount it read-write, or \
             change the file where it is mounted from)"
        )
    } else {
        format!("{path}: {e}")
    }
}

/// Whether `path` (not followed) is the root of a mount, such as a bind-mounted file.
fn is_mount_point(path: &std::path::Path) -> std::io::Result<bool> {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags, CWD};
    let st = match statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    ) {
        Ok(st) => st,
        Err(e) if e == rustix::io::Errno::NOENT => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        return Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
    }
    // Older kernels: a different device than the parent directory's.
    let parent = path.parent().unwrap_or(std::path::Path::new("/"));
    let pst = statx(CWD, parent, AtFlags::empty(), StatxFlags::BASIC_STATS)?;
    Ok((st.stx_dev_major, st.stx_dev_minor) != (pst.stx_dev_major, pst.stx_dev_minor))
}

/// Write a file: a temporary file renamed over the path, or, when the path is a mount point
/// (which a rename cannot replace), the file itself truncated and rewritten in place.
fn write_local(
    path: &std::path::Path,
    content: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> std::io::Result<()> {
    use std::io::Write;
    if is_mount_point(path)? {
        return write_in_place(path, content, mode, uid, gid);
    }
    let tmp = temp_beside(path).ok_or_else(|| std::io::Error::other("no parent directory"))?;
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_compat(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        // Mounted over between the check and the rename.
        if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
            return write_in_place(path, content, mode, uid, gid);
        }
        return Err(e);
    }
    if let Some(d) = path.parent() {
        let _ = std::fs::File::open(d).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Truncate, write and fsync an existing file where it is (not atomic: used for mount points).
fn write_in_place(
    path: &std::path::Path,
    content: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    f.write_all(content)?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.sync_all()
}

/// `OpenOptions::mode` lives in an extension trait; named to read clearly above.
trait ModeCompat {
    fn mode_compat(&mut self, mode: u32) -> &mut Self;
}

impl ModeCompat for std::fs::OpenOptions {
    fn mode_compat(&mut self, mode: u32) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, mode)
    }
}

#[cfg(test)]
mod list_tests {
    use super::*;

    #[tokio::test]
    async fn list_dir_and_lstat_read_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("f"), "hello").unwrap();
        std::fs::set_permissions(d.join("f"), std::fs::Permissions::from_mode(0o2640)).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/deep"), "").unwrap();
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        std::os::unix::fs::symlink("sub", d.join("dl")).unwrap();
        let me = std::fs::metadata(d).unwrap();
        let n = LocalNode::new("host");
        let ds = d.to_str().unwrap();

        let l = n.list_dir(ds).await.unwrap().expect("a directory");
        let names: Vec<&str> = l.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["dl", "f", "l", "sub"]);
        let f = &l[1].1;
        assert_eq!(
            (f.kind, f.mode, f.uid, f.gid, f.size),
            (EntryKind::Regular, 0o2640, me.uid(), me.gid(), 5)
        );
        assert_eq!(l[3].1.kind, EntryKind::Directory);
        let link = n.lstat(&format!("{ds}/l")).await.unwrap().unwrap();
        assert_eq!(
            (link.kind, link.link_target.as_deref(), link.size),
            (EntryKind::Symlink, Some("f"), 1)
        );
        assert_eq!(l[2].1, link);
        // A link to a directory is followed when listed, as `find -H` does.
        let sub = n.list_dir(&format!("{ds}/dl")).await.unwrap().unwrap();
        assert_eq!(
            sub.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            ["deep"]
        );
        assert_eq!(n.lstat(&format!("{ds}/missing")).await.unwrap(), None);
        assert_eq!(n.list_dir(&format!("{ds}/f")).await.unwrap(), None);
        assert_eq!(n.list_dir(&format!("{ds}/missing")).await.unwrap(), None);
        // The default walk: real subdirectories only, not through the link.
        let tree = n.list_tree(&[ds.to_string()], 2).await.unwrap();
        let dirs: Vec<String> = tree.iter().map(|(d, _)| d.clone()).collect();
        assert_eq!(dirs, [ds.to_string(), format!("{ds}/sub")]);
    }
}
