//! Safe file access inside a container's root filesystem from the host.
//!
//! Every path is resolved with `openat2(2)` and `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`
//! relative to a directory fd on `/proc/<pid>/root`: absolute symlinks and `..` are clamped to
//! the container's root, exactly as the container itself would see them, so a symlink planted in
//! a container (`/etc/x -> /root/.ssh/id_rsa`, `../../../../etc/shadow`) can never reach a host
//! file, and `/proc/*/root`-style magic links are refused.
//!
//! These functions block: call them from `tokio::task::spawn_blocking`.

use rustix::fs::{self, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use vacsine_core::node::{child_path, DirListing, EntryKind, EntryStat};

/// What `stat` returns about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Other,
}

/// Bytes read from a file, and whether the file was longer (truncated).
pub(crate) type Bounded = (Vec<u8>, bool);

/// A directory fd on a container's root.
pub(crate) struct Root {
    fd: OwnedFd,
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

fn check_path(path: &str) -> io::Result<()> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path `{path}` must be absolute and contain no NUL byte"),
        ));
    }
    Ok(())
}

fn meta_of(fd: &OwnedFd) -> io::Result<Meta> {
    let st = fs::fstat(fd)?;
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        _ => Kind::Other,
    };
    Ok(Meta {
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        kind,
    })
}

fn absent(e: &rustix::io::Errno) -> bool {
    *e == rustix::io::Errno::NOENT || *e == rustix::io::Errno::NOTDIR
}

impl Root {
    /// Open `/proc/<pid>/root` of a running container's init process.
    pub fn open(pid: i64) -> io::Result<Root> {
        let fd = fs::open(
            format!("/proc/{pid}/root"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd })
    }

    fn resolve(&self, path: &str, flags: OFlags) -> io::Result<OwnedFd> {
        check_path(path)?;
        Ok(fs::openat2(
            &self.fd,
            path,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        )?)
    }

    /// Metadata of `path` (symlinks followed inside the root); `None` when it does not exist.
    pub fn stat(&self, path: &str) -> io::Result<Option<Meta>> {
        match self.resolve(path, OFlags::PATH) {
            Ok(fd) => Ok(Some(meta_of(&fd)?)),
            Err(e)
                if e.raw_os_error()
                    .is_some_and(|c| absent(&rustix::io::Errno::from_raw_os_error(c))) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Metadata and, for a regular file, its first `limit` bytes (the flag says whether the
    /// content was truncated). `None` when the path does not exist.
    pub fn read(&self, path: &str, limit: u64) -> io::Result<Option<(Meta, Option<Bounded>)>> {
        let fd = match self.resolve(path, OFlags::PATH) {
            Ok(fd) => fd,
            Err(e)
                if e.raw_os_error()
                    .is_some_and(|c| absent(&rustix::io::Errno::from_raw_os_error(c))) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let meta = meta_of(&fd)?;
        if meta.kind != Kind::File {
            return Ok(Some((meta, None)));
        }
        // Re-open the very inode we checked (no second path walk, no race with a swap).
        let file = fs::open(
            format!("/proc/self/fd/{}", fd.as_raw_fd()),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        let mut buf = Vec::new();
        std::fs::File::from(file)
            .take(limit + 1)
            .read_to_end(&mut buf)?;
        let truncated = buf.len() as u64 > limit;
        buf.truncate(limit as usize);
        Ok(Some((meta, Some((buf, truncated)))))
    }

    /// The directory holding `path` (resolved in the root) and the last component's name.
    fn parent_of<'p>(&self, path: &'p str) -> io::Result<(OwnedFd, &'p str)> {
        check_path(path)?;
        let (parent, base) = match path.trim_end_matches('/').rsplit_once('/') {
            Some((p, b)) => (if p.is_empty() { "/" } else { p }, b),
            None => ("/", path),
        };
        if base.is_empty() || base == "." || base == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{path}` does not name a file"),
            ));
        }
        Ok((
            self.resolve(parent, OFlags::PATH | OFlags::DIRECTORY)?,
            base,
        ))
    }

    /// Write `content` atomically: a temporary file in the same directory, then `rename`. A
    /// mount point (a bind-mounted file, such as `/etc/hosts`) cannot be renamed over: it is
    /// truncated and rewritten in place. A read-only mount is an error naming the path.
    pub fn write_atomic(
        &self,
        path: &str,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<()> {
        let (dir, base) = self.parent_of(path)?;
        let result = if is_mount_root(&dir, base)? {
            write_in_place(&dir, base, content, mode, uid, gid)
        } else {
            write_renamed(&dir, base, content, mode, uid, gid)
        };
        result.map_err(|e| describe_write_error(path, e))
    }

    /// The target of `path` when it is a symbolic link (not followed), else `None`.
    pub fn read_link(&self, path: &str) -> io::Result<Option<String>> {
        let (dir, base) = match self.parent_of(path) {
            Ok(x) => x,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match fs::readlinkat(&dir, base, Vec::new()) {
            Ok(t) => t.into_string().map(Some).map_err(|t| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{path}: link target {t:?} is not UTF-8"),
                )
            }),
            // EINVAL: not a link.
            Err(e) if e == rustix::io::Errno::INVAL || absent(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `lstat` of `path`: the directories on the way are resolved in the root, the last
    /// component is not followed. `None` when it does not exist.
    pub fn lstat(&self, path: &str) -> io::Result<Option<EntryStat>> {
        check_path(path)?;
        if path.trim_end_matches('/').is_empty() {
            let fd = self.resolve("/", OFlags::PATH | OFlags::DIRECTORY)?;
            return Ok(Some(entry_of(&fd, "", AtFlags::EMPTY_PATH)?));
        }
        let (dir, base) = match self.parent_of(path) {
            Ok(x) => x,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match entry_of(&dir, base, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Entries of the directory `path` (resolved in the root, links followed) with their
    /// `lstat`, sorted by name; `None` when it is missing or not a directory.
    pub fn list_dir(&self, path: &str) -> io::Result<DirListing> {
        let fd = match self.resolve(path, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(name) else {
                // Not UTF-8: no path the evaluator builds can name it.
                continue;
            };
            match entry_of(&fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => out.push((name.to_string(), st)),
                // Removed while listing.
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(out))
    }

    /// Listings of `dirs` and of their real subdirectories down to `depth` levels (see
    /// `NodeOps::list_tree`).
    pub fn list_tree(
        &self,
        dirs: &[String],
        depth: usize,
    ) -> io::Result<Vec<(String, DirListing)>> {
        let mut out = Vec::new();
        let mut level: Vec<String> = dirs.to_vec();
        for l in 0..depth {
            let mut next = Vec::new();
            for dir in level {
                let listing = self.list_dir(&dir)?;
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

    /// Make `path` a symbolic link to `target` (a temporary link renamed over the path).
    pub fn symlink(&self, target: &str, path: &str) -> io::Result<()> {
        let (dir, base) = self.parent_of(path)?;
        let tmp = format!(".{base}.vacsine-{}", uuid::Uuid::new_v4().simple());
        fs::symlinkat(target, &dir, tmp.as_str())?;
        let r = fs::renameat(&dir, tmp.as_str(), &dir, base);
        if r.is_err() {
            let _ = fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        }
        Ok(r?)
    }

    /// Change the permission bits of an existing path.
    pub fn chmod(&self, path: &str, mode: u32) -> io::Result<()> {
        let fd = self.resolve(path, OFlags::PATH)?;
        // fchmod needs a real fd: reopen the checked inode through /proc/self/fd (O_PATH fds
        // cannot be chmod-ed, and re-walking the path would race with a symlink swap).
        let kind = meta_of(&fd)?.kind;
        let flags = match kind {
            Kind::Dir => OFlags::RDONLY | OFlags::DIRECTORY,
            Kind::File => OFlags::RDONLY,
            Kind::Other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{path}` is neither a file nor a directory"),
                ))
            }
        };
        let real = fs::open(
            format!("/proc/self/fd/{}", fd.as_raw_fd()),
            flags | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        fs::fchmod(&real, Mode::from_raw_mode(mode & 0o7777))?;
        Ok(())
    }
}

/// `statat(dir, name, flags)` as an [`EntryStat`], with the link's target for a link.
fn entry_of(dir: &OwnedFd, name: &str, flags: AtFlags) -> io::Result<EntryStat> {
    let st = fs::statat(dir, name, flags)?;
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => EntryKind::Regular,
        FileType::Directory => EntryKind::Directory,
        FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::Other,
    };
    let link_target = if kind == EntryKind::Symlink {
        let t = fs::readlinkat(dir, name, Vec::new())?;
        Some(String::from_utf8_lossy(t.as_bytes()).into_owned())
    } else {
        None
    };
    Ok(EntryStat {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        link_target,
    })
}

fn is_absent(e: &io::Error) -> bool {
    e.raw_os_error()
        .is_some_and(|c| absent(&rustix::io::Errno::from_raw_os_error(c)))
}

/// Whether `base` in `dir` (not followed) is the root of a mount, such as a bind-mounted file.
fn is_mount_root(dir: &OwnedFd, base: &str) -> io::Result<bool> {
    use rustix::fs::{statx, StatxAttributes, StatxFlags};
    let st = match statx(
        dir,
        base,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS,
    ) {
        Ok(st) => st,
        Err(e) if absent(&e) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        return Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
    }
    // Older kernels: a different device than its directory's.
    let d = statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)?;
    Ok((st.stx_dev_major, st.stx_dev_minor) != (d.stx_dev_major, d.stx_dev_minor))
}

/// A temporary file in `dir`, then `rename` over `base`.
fn write_renamed(
    dir: &OwnedFd,
    base: &str,
    content: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    let tmp = format!(".{base}.vacsine-{}", uuid::Uuid::new_v4().simple());
    let fd = fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let result = (|| -> io::Result<()> {
        let mut f = std::fs::File::from(fd);
        f.write_all(content)?;
        set_owner_mode(&f, mode, uid, gid)?;
        fs::fsync(&f)?;
        fs::renameat(dir, tmp.as_str(), dir, base)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        // Mounted over between the check and the rename.
        if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) {
            return write_in_place(dir, base, content, mode, uid, gid);
        }
        return Err(e);
    }
    Ok(())
}

/// Truncate, write and fsync the existing file `base` in `dir` (not atomic: for mount points).
fn write_in_place(
    dir: &OwnedFd,
    base: &str,
    content: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    let fd = fs::openat(
        dir,
        base,
        OFlags::WRONLY | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let mut f = std::fs::File::from(fd);
    f.write_all(content)?;
    set_owner_mode(&f, mode, uid, gid)?;
    fs::fsync(&f)?;
    Ok(())
}

fn set_owner_mode(f: &std::fs::File, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    fs::fchown(
        f,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?;
    fs::fchmod(f, Mode::from_raw_mode(mode & 0o7777))?;
    Ok(())
}

/// A write error worded for the user: a read-only mount says so, naming the path.
fn describe_write_error(path: &str, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(rustix::io::Errno::ROFS.raw_os_error()) {
        io::Error::new(
            e.kind(),
            format!(
                "{path} is on a read-only mount and cannot be written (mount it read-write, or \
                 change the file where it is mounted from)"
            ),
        )
    } else {
        e
    }
}
