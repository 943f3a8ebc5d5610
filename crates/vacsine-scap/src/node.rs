//! [`System`] over a driver's [`NodeOps`]: files through `read_file`, kernel parameters through
//! `sysctl_get`, directory listings and `lstat` through the driver's `list_dir` / `list_tree` /
//! `lstat` (no program run in the node), or, for a driver without them, through one
//! `find -printf` per directory (argv only). Listings are cached for the evaluator's life, so
//! content is evaluated on any node a driver reaches. The evaluator is synchronous: run it on a blocking thread
//! (`tokio::task::spawn_blocking`), this type blocks on the runtime handle it was given.

use crate::system::{FileKind, Stat, System, Uname};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vacsine_core::node::{EntryKind, EntryStat, NodeError, NodeOps};

type Listing = Option<Vec<(String, Stat)>>;

pub struct NodeSystem {
    ops: Arc<dyn NodeOps>,
    rt: tokio::runtime::Handle,
    dirs: Mutex<HashMap<String, Result<Listing, String>>>,
    stats: Mutex<HashMap<String, Option<Stat>>>,
    /// The driver lists and stats natively (cleared at its first `Unsupported`).
    native: AtomicBool,
    /// Number of programs run in the node (for the figures).
    pub execs: std::sync::atomic::AtomicUsize,
}

const TIMEOUT: Duration = Duration::from_secs(30);

impl NodeSystem {
    pub fn new(ops: Arc<dyn NodeOps>, rt: tokio::runtime::Handle) -> NodeSystem {
        NodeSystem {
            ops,
            rt,
            dirs: Mutex::default(),
            stats: Mutex::default(),
            native: AtomicBool::new(true),
            execs: Default::default(),
        }
    }

    fn node(&self) -> String {
        self.ops.node().name.clone()
    }

    /// Entries of a directory with their `lstat`, by `find DIR -mindepth 1 -maxdepth 1`;
    /// `depth0` lists the path itself instead.
    fn find(&self, path: &str, depth0: bool) -> Result<Listing, String> {
        if !path.starts_with('/') {
            return Err(format!("path `{path}` is not absolute"));
        }
        let mut argv: Vec<String> = vec!["find".into(), "-H".into(), path.into()];
        if depth0 {
            argv.extend(["-maxdepth".into(), "0".into()]);
        } else {
            argv.extend(["-mindepth", "1", "-maxdepth", "1"].map(String::from));
        }
        argv.extend(["-printf".into(), "%P\\0%y\\0%m\\0%U\\0%G\\0%s\\0".into()]);
        self.execs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = self
            .rt
            .block_on(self.ops.exec(&argv, &[], None, TIMEOUT))
            .map_err(|e| format!("listing {path} on node {}: {e}", self.node()))?;
        if out.exit_code != Some(0) {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No such file") || err.contains("Not a directory") {
                return Ok(None);
            }
            return Err(format!(
                "listing {path} on node {}: find exited with {:?}: {}",
                self.node(),
                out.exit_code,
                err.trim()
            ));
        }
        let fields: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        let mut entries = Vec::new();
        for f in fields.chunks_exact(6) {
            entries.push((String::from_utf8_lossy(f[0]).into_owned(), parse_stat(f)));
        }
        Ok(Some(entries))
    }

    /// Whether to use the driver's own calls; `Unsupported` turns them off for good.
    fn native_ok<T>(&self, r: &Result<T, NodeError>) -> bool {
        if let Err(NodeError::Unsupported { .. }) = r {
            self.native.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The listing of `dir`: the driver's `list_dir`, else `find`.
    fn list_uncached(&self, dir: &str) -> Result<Listing, String> {
        if self.native.load(Ordering::Relaxed) {
            let r = self.rt.block_on(self.ops.list_dir(dir));
            if self.native_ok(&r) {
                return r
                    .map(convert_listing)
                    .map_err(|e| format!("listing {dir} on node {}: {e}", self.node()));
            }
        }
        self.find(dir, false)
    }

    fn cached(&self, dir: &str) -> Option<Result<Listing, String>> {
        self.dirs.lock().ok().and_then(|m| m.get(dir).cloned())
    }

    fn listing(&self, dir: &str) -> Result<Listing, String> {
        let dir = &norm(dir);
        if let Some(l) = self.cached(dir) {
            return l;
        }
        let l = self.list_uncached(dir);
        if let Ok(mut m) = self.dirs.lock() {
            m.insert(dir.into(), l.clone());
        }
        l
    }

    /// Caches the listings a prefetch `find` printed.
    fn cache_listing(&self, dirs: &[String], depth: usize, out: &vacsine_core::node::ExecOutput) {
        if out.timed_out || out.stdout_dropped > 0 {
            return;
        }
        let mut is_dir: HashMap<String, bool> = HashMap::new();
        let mut listed: HashMap<String, Vec<(String, Stat)>> = HashMap::new();
        let fields: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        for f in fields.chunks_exact(9) {
            let s = |i: usize| String::from_utf8_lossy(f[i]).into_owned();
            let d: usize = s(0).parse().unwrap_or(usize::MAX);
            let path = norm(&s(1));
            if d == 0 {
                is_dir.insert(path, f[4] == b"d");
                continue;
            }
            if f[4] == b"d" && d < depth {
                is_dir.insert(path, true);
            }
            listed
                .entry(norm(&s(2)))
                .or_default()
                .push((s(3), parse_stat(&[f[3], f[4], f[5], f[6], f[7], f[8]])));
        }
        if let Ok(mut m) = self.dirs.lock() {
            for d in dirs {
                if !is_dir.contains_key(d) {
                    m.insert(d.clone(), Ok(None));
                }
            }
            for (d, yes) in is_dir {
                let listing = yes.then(|| listed.remove(&d).unwrap_or_default());
                m.insert(d, Ok(listing));
            }
        }
    }
}

impl NodeSystem {
    /// Prefetch through the driver's `list_tree`, the groups concurrently; false when the
    /// driver has no such call (nothing cached then).
    fn prefetch_native(&self, groups: &[(Vec<String>, usize)]) -> bool {
        let mut runs = Vec::new();
        for (dirs, depth) in groups {
            let mut dirs: Vec<String> = dirs
                .iter()
                .filter(|d| d.starts_with('/'))
                .map(|d| norm(d))
                .collect();
            dirs.sort();
            dirs.dedup();
            if dirs.is_empty() || *depth == 0 {
                continue;
            }
            // `find -maxdepth N` lists directories down to N-1 levels below the start points.
            let levels = *depth;
            let ops = self.ops.clone();
            runs.push(
                self.rt
                    .spawn(async move { ops.list_tree(&dirs, levels).await }),
            );
        }
        let mut ok = true;
        for task in runs {
            let Ok(r) = self.rt.block_on(task) else {
                continue;
            };
            if !self.native_ok(&r) {
                ok = false;
                continue;
            }
            // Errors are left to the later calls.
            if let (Ok(listed), Ok(mut m)) = (r, self.dirs.lock()) {
                for (dir, listing) in listed {
                    m.entry(norm(&dir))
                        .or_insert_with(|| Ok(convert_listing(listing)));
                }
            }
        }
        ok
    }
}

impl System for NodeSystem {
    /// One `find` per group (directories, depth), the groups' programs run concurrently:
    /// each directory met above its depth is cached as listed (maybe empty); a start point
    /// that is not a directory or is missing is cached as `None`.
    fn prefetch_dirs(&self, groups: &[(Vec<String>, usize)]) {
        if self.native.load(Ordering::Relaxed) && self.prefetch_native(groups) {
            return;
        }
        let mut runs = Vec::new();
        for (dirs, depth) in groups {
            let mut dirs: Vec<String> = dirs
                .iter()
                .filter(|d| d.starts_with('/'))
                .map(|d| norm(d))
                .collect();
            dirs.sort();
            dirs.dedup();
            if dirs.is_empty() || *depth == 0 {
                continue;
            }
            let mut argv: Vec<String> = vec!["find".into(), "-H".into()];
            argv.extend(dirs.iter().cloned());
            argv.extend([
                "-mindepth".into(),
                "0".into(),
                "-maxdepth".into(),
                depth.to_string(),
            ]);
            argv.extend([
                "-printf".into(),
                "%d\\0%p\\0%h\\0%f\\0%y\\0%m\\0%U\\0%G\\0%s\\0".into(),
            ]);
            self.execs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ops = self.ops.clone();
            let task = self
                .rt
                .spawn(async move { ops.exec(&argv, &[], None, TIMEOUT).await });
            runs.push((dirs, *depth, task));
        }
        for (dirs, depth, task) in runs {
            if let Ok(Ok(out)) = self.rt.block_on(task) {
                self.cache_listing(&dirs, depth, &out);
            }
        }
    }

    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        self.rt
            .block_on(self.ops.read_file(path))
            .map(|f| f.map(|f| f.content))
            .map_err(|e| e.to_string())
    }

    fn list_dir(&self, path: &str) -> Result<Option<Vec<String>>, String> {
        Ok(self
            .listing(if path.trim_end_matches('/').is_empty() {
                "/"
            } else {
                path.trim_end_matches('/')
            })?
            .map(|l| l.into_iter().map(|(n, _)| n).collect()))
    }

    fn stat(&self, path: &str) -> Result<Option<Stat>, String> {
        let p = path.trim_end_matches('/');
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
        let dir = if dir.is_empty() { "/" } else { dir };
        // Natively: the parent's cached listing, else one `lstat` (cached).
        if self.native.load(Ordering::Relaxed) && (p.is_empty() || self.cached(dir).is_none()) {
            let key = norm(p);
            if let Some(s) = self.stats.lock().ok().and_then(|m| m.get(&key).cloned()) {
                return Ok(s);
            }
            let r = self.rt.block_on(self.ops.lstat(&key));
            if self.native_ok(&r) {
                let s = r
                    .map(|s| s.map(|s| convert(&s)))
                    .map_err(|e| format!("stat {key} on node {}: {e}", self.node()))?;
                if let Ok(mut m) = self.stats.lock() {
                    m.insert(key, s.clone());
                }
                return Ok(s);
            }
        }
        if p.is_empty() {
            return Ok(self
                .find("/", true)?
                .and_then(|l| l.into_iter().next())
                .map(|(_, s)| s));
        }
        Ok(self
            .listing(dir)?
            .and_then(|l| l.into_iter().find(|(n, _)| n == name).map(|(_, s)| s)))
    }

    fn sysctl(&self, key: &str) -> Result<Option<String>, String> {
        self.rt
            .block_on(self.ops.sysctl_get(key))
            .map_err(|e| e.to_string())
    }

    /// `systemctl show --property=P --value -- UNIT` in the node (argv only).
    fn unit_runtime_property(&self, unit: &str, property: &str) -> Result<String, String> {
        let argv: Vec<String> = vec![
            "systemctl".into(),
            "show".into(),
            format!("--property={property}"),
            "--value".into(),
            "--".into(),
            unit.into(),
        ];
        self.execs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = self
            .rt
            .block_on(self.ops.exec(&argv, &[], None, TIMEOUT))
            .map_err(|e| format!("systemctl show {unit} on node {}: {e}", self.node()))?;
        if out.exit_code != Some(0) {
            return Err(format!(
                "systemctl show {unit} on node {} exited with {:?}: {}",
                self.node(),
                out.exit_code,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn uname(&self) -> Result<Uname, String> {
        let get = |k: &str| -> Result<String, String> {
            Ok(self.sysctl(k)?.unwrap_or_default().trim().to_string())
        };
        // `kernel.arch` (Linux 6.1 and later) spares a program run in the node.
        let machine = match self.sysctl("kernel.arch").ok().flatten() {
            Some(m) if !m.trim().is_empty() => m.trim().to_string(),
            _ => {
                let argv = vec!["uname".to_string(), "-m".to_string()];
                self.execs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let m = self
                    .rt
                    .block_on(self.ops.exec(&argv, &[], None, TIMEOUT))
                    .map_err(|e| e.to_string())?;
                String::from_utf8_lossy(&m.stdout).trim().to_string()
            }
        };
        Ok(Uname {
            os_name: get("kernel.ostype")?,
            node_name: get("kernel.hostname")?,
            os_release: get("kernel.osrelease")?,
            os_version: get("kernel.version")?,
            machine,
        })
    }
}

/// (name, type, mode, uid, gid, size) fields of `find -printf` → [`Stat`].
fn parse_stat(f: &[&[u8]]) -> Stat {
    let s = |i: usize| String::from_utf8_lossy(f[i]).into_owned();
    Stat {
        kind: match f[1] {
            b"f" => FileKind::Regular,
            b"d" => FileKind::Directory,
            b"l" => FileKind::Symlink,
            _ => FileKind::Other,
        },
        mode: u32::from_str_radix(&s(2), 8).unwrap_or(0),
        uid: s(3).parse().unwrap_or(u32::MAX),
        gid: s(4).parse().unwrap_or(u32::MAX),
        size: s(5).parse().unwrap_or(0),
    }
}

/// A driver's `lstat` → [`Stat`].
fn convert(s: &EntryStat) -> Stat {
    Stat {
        kind: match s.kind {
            EntryKind::Regular => FileKind::Regular,
            EntryKind::Directory => FileKind::Directory,
            EntryKind::Symlink => FileKind::Symlink,
            EntryKind::Other => FileKind::Other,
        },
        mode: s.mode,
        uid: s.uid,
        gid: s.gid,
        size: s.size,
    }
}

fn convert_listing(l: vacsine_core::node::DirListing) -> Listing {
    l.map(|l| l.into_iter().map(|(n, s)| (n, convert(&s))).collect())
}

/// A path without trailing slashes; `/` for the root (and for find's empty `%h`).
fn norm(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.into()
    }
}
