//! Private SQLite databases: the file and its `-wal` and `-shm` siblings hold run records,
//! undo data (previous file contents), queued events and keys' uses, so only their owner may
//! read them.
//!
//! SQLite creates the sidecar files with the mode of the database file, but a database created
//! by SQLite itself gets `0644` under the usual umask. [`prepare`] runs before SQLite opens the
//! database: it creates the three files `0600` (or narrows existing ones to `0600`), and the
//! parent directory `0700` if it has to create it.
//!
//! Threat model: another local user must not read them. Files are opened with `O_NOFOLLOW` and
//! changed through the open descriptor, so a symlink planted at one of the paths is refused
//! rather than followed, and the mode applies to the file that was checked.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, DIR_MODE, FILE_MODE};

/// Ensure `path` and its `-wal` and `-shm` siblings exist as regular files with mode `0600`
/// (created empty if absent; existing content is kept). A missing parent directory is created
/// with mode `0700`; an existing one is left as it is.
pub fn prepare(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(parent)?;
        }
    }
    for p in [
        path.to_path_buf(),
        sibling(path, "-wal"),
        sibling(path, "-shm"),
    ] {
        private_file(&p)?;
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

fn private_file(path: &Path) -> io::Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", path.display()),
        ));
    }
    if meta.permissions().mode() & 0o7777 != FILE_MODE {
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    }
    Ok(())
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
        for p in [&db, &sibling(&db, "-wal"), &sibling(&db, "-shm")] {
            assert_eq!(mode(p), 0o600, "{}", p.display());
            assert_eq!(std::fs::metadata(p).unwrap().len(), 0);
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
        assert_eq!(mode(&sibling(&db, "-shm")), 0o600);
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
        // Closed (SQLite removes the WAL), prepared again (empty sidecars), reopened: the
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
