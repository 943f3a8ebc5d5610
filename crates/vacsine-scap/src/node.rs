//! [`System`] over a driver's [`NodeOps`]: files through `read_file`, kernel parameters through
//! `sysctl_get`, directory listings and `lstat` through one `find -printf` per directory
//! (argv only; cached for the evaluator's life), so content is evaluated on any node a driver
//! reaches. The evaluator is synchronous: run it on a blocking thread
//! (`tokio::task::spawn_blocking`), this type blocks on the runtime handle it was given.

use crate::system::{FileKind, Stat, System, Uname};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vacsine_core::node::NodeOps;

type Listing = Option<Vec<(String, Stat)>>;

pub struct NodeSystem {
    ops: Arc<dyn NodeOps>,
    rt: tokio::runtime::Handle,
    dirs: Mutex<HashMap<String, Result<Listing, String>>>,
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

    fn listing(&self, dir: &str) -> Result<Listing, String> {
        let dir = &norm(dir);
        if let Ok(m) = self.dirs.lock() {
            if let Some(l) = m.get(dir) {
                return l.clone();
            }
        }
        let l = self.find(dir, false);
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

impl System for NodeSystem {
    /// One `find` per group (directories, depth), the groups' programs run concurrently:
    /// each directory met above its depth is cached as listed (maybe empty); a start point
    /// that is not a directory or is missing is cached as `None`.
    fn prefetch_dirs(&self, groups: &[(Vec<String>, usize)]) {
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
        if p.is_empty() {
            return Ok(self
                .find("/", true)?
                .and_then(|l| l.into_iter().next())
                .map(|(_, s)| s));
        }
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
        let dir = if dir.is_empty() { "/" } else { dir };
        Ok(self
            .listing(dir)?
            .and_then(|l| l.into_iter().find(|(n, _)| n == name).map(|(_, s)| s)))
    }

    fn sysctl(&self, key: &str) -> Result<Option<String>, String> {
        self.rt
            .block_on(self.ops.sysctl_get(key))
            .map_err(|e| e.to_string())
    }

    fn uname(&self) -> Result<Uname, String> {
        let get = |k: &str| -> Result<String, String> {
            Ok(self.sysctl(k)?.unwrap_or_default().trim().to_string())
        };
        let argv = vec!["uname".to_string(), "-m".to_string()];
        self.execs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let m = self
            .rt
            .block_on(self.ops.exec(&argv, &[], None, TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(Uname {
            os_name: get("kernel.ostype")?,
            node_name: get("kernel.hostname")?,
            os_release: get("kernel.osrelease")?,
            os_version: get("kernel.version")?,
            machine: String::from_utf8_lossy(&m.stdout).trim().to_string(),
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

/// A path without trailing slashes; `/` for the root (and for find's empty `%h`).
fn norm(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.into()
    }
}
