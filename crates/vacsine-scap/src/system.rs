//! The primitives the OVAL evaluator reads a system through, and an in-memory system for tests.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Other,
}

impl FileKind {
    /// The OVAL `type` entity of a file item.
    pub fn oval_name(&self) -> &'static str {
        match self {
            FileKind::Regular => "regular",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symbolic link",
            FileKind::Other => "other",
        }
    }
}

/// What `lstat` says about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub kind: FileKind,
    /// Permission bits (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uname {
    pub os_name: String,
    pub node_name: String,
    pub os_release: String,
    pub os_version: String,
    pub machine: String,
}

/// Read-only primitives over one system. Errors are messages naming what failed.
pub trait System {
    /// Content of a regular file (following symbolic links); `Ok(None)` when absent.
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, String>;
    /// Entry names of a directory; `Ok(None)` when absent or not a directory.
    fn list_dir(&self, path: &str) -> Result<Option<Vec<String>>, String>;
    /// `lstat` of a path; `Ok(None)` when absent.
    fn stat(&self, path: &str) -> Result<Option<Stat>, String>;
    /// A kernel parameter as the running system sees it (`net.ipv4.ip_forward`).
    fn sysctl(&self, key: &str) -> Result<Option<String>, String>;
    fn uname(&self) -> Result<Uname, String>;
    /// A unit's runtime property (`ActiveState`, `SubState`) from the running service
    /// manager; only asked when systemd runs on the system.
    fn unit_runtime_property(&self, unit: &str, property: &str) -> Result<String, String> {
        Err(format!(
            "the {property} of {unit} is not available: systemd runs on the system but its runtime state cannot be asked through this driver"
        ))
    }
    /// A hint: these groups of directories (each with its subdirectories down to its depth)
    /// are about to be listed; a driver that pays per call lists them all at once. Errors are
    /// left to the later calls.
    fn prefetch_dirs(&self, groups: &[(Vec<String>, usize)]) {
        let _ = groups;
    }
}

/// An in-memory system: files, directories, symbolic links, sysctls and uname.
#[derive(Debug, Clone, Default)]
pub struct MemSystem {
    pub entries: BTreeMap<String, (Stat, Vec<u8>)>,
    pub sysctls: BTreeMap<String, String>,
    pub uname: Uname,
}

impl MemSystem {
    pub fn new() -> MemSystem {
        let mut m = MemSystem::default();
        m.dir("/", 0o755);
        m.uname = Uname {
            os_name: "Linux".into(),
            node_name: "mem".into(),
            os_release: "6.1.0-test".into(),
            os_version: "#1 SMP".into(),
            machine: "x86_64".into(),
        };
        m
    }
    fn parents(&mut self, path: &str) {
        let mut p = String::new();
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            p.push('/');
            p.push_str(part);
            if !self.entries.contains_key(&p) {
                self.dir(&p.clone(), 0o755);
            }
        }
    }
    pub fn file(&mut self, path: &str, content: &str) -> &mut Self {
        self.file_with(path, content, 0o644, 0, 0)
    }
    pub fn file_with(
        &mut self,
        path: &str,
        content: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> &mut Self {
        self.parents(path);
        self.entries.insert(
            path.into(),
            (
                Stat {
                    kind: FileKind::Regular,
                    mode,
                    uid,
                    gid,
                    size: content.len() as u64,
                },
                content.as_bytes().to_vec(),
            ),
        );
        self
    }
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.parents(path);
        self.entries.insert(
            path.into(),
            (
                Stat {
                    kind: FileKind::Directory,
                    mode,
                    uid: 0,
                    gid: 0,
                    size: 4096,
                },
                vec![],
            ),
        );
        self
    }
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.parents(path);
        self.entries.insert(
            path.into(),
            (
                Stat {
                    kind: FileKind::Symlink,
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                    size: target.len() as u64,
                },
                target.as_bytes().to_vec(),
            ),
        );
        self
    }
    pub fn sysctl_value(&mut self, key: &str, value: &str) -> &mut Self {
        self.sysctls.insert(key.into(), value.into());
        self
    }
    fn resolve(&self, path: &str) -> Option<&(Stat, Vec<u8>)> {
        let mut p = path.to_string();
        for _ in 0..16 {
            let e = self.entries.get(&p)?;
            if e.0.kind != FileKind::Symlink {
                return Some(e);
            }
            let t = String::from_utf8_lossy(&e.1).to_string();
            p = if t.starts_with('/') {
                t
            } else {
                format!("{}/{}", p.rsplit_once('/').map(|x| x.0).unwrap_or(""), t)
            };
        }
        None
    }
}

impl System for MemSystem {
    /// Like the drivers: a directory or a special file is an error, not "absent".
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        match self.resolve(path) {
            None => Ok(None),
            Some((st, content)) if st.kind == FileKind::Regular => Ok(Some(content.clone())),
            Some(_) => Err(format!("{path} is not a regular file")),
        }
    }
    fn list_dir(&self, path: &str) -> Result<Option<Vec<String>>, String> {
        match self.resolve(path) {
            Some(e) if e.0.kind == FileKind::Directory => {}
            _ => return Ok(None),
        }
        let prefix = if path == "/" {
            "/".to_string()
        } else {
            format!("{}/", path.trim_end_matches('/'))
        };
        Ok(Some(
            self.entries
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                .map(String::from)
                .collect(),
        ))
    }
    fn stat(&self, path: &str) -> Result<Option<Stat>, String> {
        Ok(self.entries.get(path).map(|e| e.0.clone()))
    }
    fn sysctl(&self, key: &str) -> Result<Option<String>, String> {
        Ok(self.sysctls.get(key).cloned())
    }
    fn uname(&self) -> Result<Uname, String> {
        Ok(self.uname.clone())
    }
}
