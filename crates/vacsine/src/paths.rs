//! Where the CLI keeps its files (`$VACSINE_HOME`, the journal) and how it writes one.

use std::path::{Path, PathBuf};

/// Where Vacsine keeps its journal: `$VACSINE_HOME`, else `$XDG_DATA_HOME/vacsine`, else
/// `~/.local/share/vacsine`.
pub fn data_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("VACSINE_HOME") {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("vacsine");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/vacsine"),
        None => PathBuf::from(".vacsine"),
    }
}

pub fn journal_path() -> miette::Result<PathBuf> {
    let d = data_dir();
    std::fs::create_dir_all(&d).map_err(|e| {
        miette::miette!(
            help = "set VACSINE_HOME to a writable folder",
            "cannot create data folder {}: {e}",
            d.display()
        )
    })?;
    Ok(d.join("journal.db"))
}

/// Write a file through a temporary sibling and a rename: never half-written.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> miette::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            miette::miette!("cannot write {}: {e}", path.display())
        })
}
