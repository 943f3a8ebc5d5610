//! Files only their owner may read: keys, tokens, journals, stores, spools. This crate is the
//! one place that makes them, so the same rules hold at the orchestrator, at every agent and in
//! the CLI:
//!
//! - a folder is `0700`, a file `0600`, from the moment it exists (no window in which another
//!   user could open it);
//! - a file is replaced atomically ([`write_private`]): written beside it under a fresh name,
//!   synced, renamed over it, the folder synced, so a crash or a full disk leaves the old
//!   content or the new one, never a mix or an empty file, and two writers never share a
//!   temporary file;
//! - a file that must not be replaced once made (a key) is created the same way but never
//!   over an existing one ([`create_private`]);
//! - a SQLite database is opened only after it and its sidecars exist `0600`
//!   ([`sqlite::open`]); `clippy.toml` keeps `rusqlite::Connection::open` out of the rest of
//!   the workspace.

use std::fs::{DirBuilder, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub mod sqlite;

/// Mode of a private file.
pub const FILE_MODE: u32 = 0o600;
/// Mode of a private folder.
pub const DIR_MODE: u32 = 0o700;

/// A private file or database that could not be made or opened, naming it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// Create a folder private to its owner (`0700`) and its missing parents (also `0700`); an
/// existing folder at `dir` is narrowed to `0700`.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Write `bytes` to `path`, readable by its owner only (`0600`), replacing what was there
/// atomically (see the crate's documentation).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (tmp, _) = written_beside(path, bytes)?;
    persist(tmp, path)
}

/// Create `path` with `bytes`, readable by its owner only (`0600`), unless it exists: then
/// an error of kind [`io::ErrorKind::AlreadyExists`] and the file as it was. The file appears
/// whole or not at all, so two processes creating it at once agree on one content.
pub fn create_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (tmp, dir) = written_beside(path, bytes)?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    sync_dir(&dir)
}

/// A fresh private (`0600`) file in `dir`, named `.NAME.XXXXXX.tmp`, removed when dropped
/// unless [`persist`]ed: for content written piece by piece (an upload). The caller writes
/// and syncs it.
pub fn temp_in(dir: &Path, name: &str) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
}

/// Put `tmp` (from [`temp_in`] in `path`'s folder, written and synced) at `path`, replacing
/// what was there atomically, and make that durable.
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> io::Result<()> {
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(&folder_of(path))
}

/// The folder a file `path` is in (`.` for a bare name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `bytes` in a fresh `0600` file in `path`'s folder, synced to disk, and that folder.
fn written_beside(path: &Path, bytes: &[u8]) -> io::Result<(tempfile::NamedTempFile, PathBuf)> {
    let dir = folder_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = temp_in(&dir, &name)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    Ok((tmp, dir))
}

/// Make a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn private_dir_makes_and_narrows_folders() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("a/b");
        private_dir(&sub).unwrap();
        assert_eq!(mode(&d.path().join("a")), 0o700);
        assert_eq!(mode(&sub), 0o700);
        std::fs::set_permissions(&sub, Permissions::from_mode(0o755)).unwrap();
        private_dir(&sub).unwrap();
        assert_eq!(mode(&sub), 0o700);
    }

    #[test]
    fn write_private_replaces_a_file_whole_and_narrows_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token");
        std::fs::write(&p, b"old content, longer than the new").unwrap();
        std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(mode(&p), 0o600);
        assert!(leftovers(d.path()).is_empty(), "{:?}", leftovers(d.path()));
    }

    #[test]
    fn write_private_into_a_missing_folder_fails_and_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("missing/token");
        assert!(write_private(&p, b"x").is_err());
        assert!(!p.exists());
    }

    #[test]
    fn concurrent_writers_leave_one_whole_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 64 * 1024]).collect();
        std::thread::scope(|s| {
            for c in &contents {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_private(p, c).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&p).unwrap();
        assert!(contents.contains(&got), "a mix of writers' contents");
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn create_private_never_replaces_an_existing_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("key");
        create_private(&p, b"first").unwrap();
        assert_eq!(mode(&p), 0o600);
        let e = create_private(&p, b"second").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        assert!(leftovers(d.path()).is_empty());
    }
}
