//! Private SQLite databases: the file and its `-wal` and `-shm` siblings hold run records,
//! undo data (previous file contents), queued events and keys' uses, so only their owner may
//! read them.
//!
//! SQLite creates the sidecar files with the mode of the database file, but a database created
//! by SQLite itself gets `0644` under the usual umask. [`prepare`] runs before SQLite opens the
//! database: it creates the database file `0600` (`O_CREAT | O_EXCL | O_NOFOLLOW`) when it is
//! absent, narrows an existing one and existing sidecars to `0600`, and creates the parent
//! directory `0700` if it has to; SQLite then makes the sidecars with the database's mode.
//!
//! An existing file is never opened here: closing any descriptor of a file drops every POSIX
//! lock the process holds on it, so opening and closing a database that another connection of
//! the same process has open would release that connection's locks and let another process
//! write under it (a corrupt database). Existing files are checked with `lstat` and narrowed by
//! path only when their mode is wrong.
//!
//! Threat model: another local user must not read them. A symlink planted at one of the paths
//! is refused (`lstat` for an existing path, `O_NOFOLLOW` for a new one), never followed.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, DIR_MODE, FILE_MODE};

/// Ensure `path` exists as a regular file with mode `0600` (created empty if absent; existing
/// content is kept) and that its `-wal` and `-shm` siblings, where they exist, are regular files
/// with mode `0600`. A missing parent directory is created with mode `0700`; an existing one is
/// left as it is.
pub fn prepare(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(parent)?;
        }
    }
    if !narrow_existing(path)? {
        match create_new(path) {
            Ok(()) => {}
            // Made by another process at the same moment: checked like an existing one.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                narrow_existing(path)?;
            }
            Err(e) => return Err(e),
        }
    }
    for p in [sibling(path, "-wal"), sibling(path, "-shm")] {
        narrow_existing(&p)?;
    }
    Ok(())
}

/// Open (or create) the SQLite database at `path` once [`prepare`]d: the one way Vacsine opens
/// a database file. Busy timeouts, journal mode and schema stay with the caller.
#[allow(clippy::disallowed_methods)] // the one place allowed to open a database file
pub fn open(path: &Path) -> Result<rusqlite::Connection, Error> {
    prepare(path).map_err(|source| Error::File {
        path: path.to_path_buf(),
        source,
    })?;
    rusqlite::Connection::open(path).map_err(|source| Error::Sqlite {
        path: path.to_path_buf(),
        source,
    })
}

/// `<path><suffix>`, as SQLite names its sidecar files.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// If `path` exists: refuse anything but a regular file, narrow its mode to `0600` if it is
/// wider (by path, never through a descriptor: see the module's documentation), and say
/// `true`. `false` when it does not exist.
fn narrow_existing(path: &Path) -> io::Result<bool> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(named(e)),
    };
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", path.display()),
        ));
    }
    if meta.permissions().mode() & 0o7777 != FILE_MODE {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
            .map_err(named)?;
    }
    Ok(true)
}

/// Create `path` empty with mode `0600`; an existing path (a file, a planted symlink) is an
/// error of kind `AlreadyExists`.
fn create_new(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests open databases behind the module's back
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_private_files_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state/sub/journal.db");
        prepare(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
        // Sidecars are SQLite's to make (with the database's mode): a `-wal` made here would
        // turn a database that does not use one into write-ahead logging.
        for p in [&sibling(&db, "-wal"), &sibling(&db, "-shm")] {
            assert!(!p.exists(), "{}", p.display());
        }
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        assert_eq!(mode(&dir.path().join("state/sub")), 0o700);
        // Idempotent.
        prepare(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
    }

    #[test]
    fn narrows_existing_files_and_keeps_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("journal.db");
        std::fs::write(&db, b"data").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let wal = sibling(&db, "-wal");
        std::fs::write(&wal, b"wal").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o666)).unwrap();
        let parent_mode = mode(dir.path());
        prepare(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&wal), 0o600);
        assert!(!sibling(&db, "-shm").exists());
        assert_eq!(std::fs::read(&db).unwrap(), b"data");
        assert_eq!(std::fs::read(&wal).unwrap(), b"wal");
        // An existing directory is not touched.
        assert_eq!(mode(dir.path()), parent_mode);
    }

    #[test]
    fn refuses_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"x").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let db = dir.path().join("journal.db");
        std::os::unix::fs::symlink(&victim, &db).unwrap();
        assert!(prepare(&db).is_err());
        assert_eq!(mode(&victim), 0o644);
    }

    #[test]
    fn open_makes_a_private_database_and_names_the_file_it_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("new/store.db");
        let c = open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        for p in [&db, &sibling(&db, "-wal"), &sibling(&db, "-shm")] {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let e = open(&link).unwrap_err().to_string();
        assert!(e.contains("link.db"), "{e}");
    }

    #[test]
    fn sqlite_opens_the_prepared_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("j.db");
        prepare(&db).unwrap();
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        for p in [&db, &sibling(&db, "-wal"), &sibling(&db, "-shm")] {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
        // Closed (SQLite removes the WAL), prepared again (no sidecars made), reopened: the
        // data is all there.
        drop(c);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("INSERT INTO t VALUES (2);").unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }
}
