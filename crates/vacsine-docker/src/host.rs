//! What the driver finds on the host itself, outside any container: the static busybox run
//! from a vantage point's network namespace (also copied into the demo images), and the
//! processes of a container's pid namespace as the host's `/proc` shows them.

use crate::error::DockerError;
use std::path::PathBuf;

/// The static busybox copied into the images and used for vantage-point probes:
/// `$VACSINE_BUSYBOX`, else `/bin/busybox` when it is statically linked (Debian package
/// `busybox-static`), else the copy [`provision_busybox`] unpacked into the cache. The path
/// returned may not exist yet.
pub fn host_busybox() -> PathBuf {
    if let Some(p) = std::env::var_os("VACSINE_BUSYBOX") {
        return PathBuf::from(p);
    }
    let system = PathBuf::from("/bin/busybox");
    if is_static_elf(&system) {
        return system;
    }
    cached_busybox()
}

fn cached_busybox() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("vacsine/busybox-static/bin/busybox")
}

/// True for an ELF executable without an interpreter (PT_INTERP): statically linked.
fn is_static_elf(path: &std::path::Path) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|x| u16::from_le_bytes([x[0], x[1]]) as usize)
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|x| x.try_into().ok())
            .map(|x: [u8; 8]| u64::from_le_bytes(x) as usize)
    };
    // 64-bit little-endian ELF only (the demo images are built for this host).
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        b.get(o..o + 4)
            .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != 3)
            .unwrap_or(false)
    })
}

/// Make a static busybox available without installing anything system-wide: download the
/// Debian package `busybox-static` with `apt-get download` and unpack it into the cache.
pub fn provision_busybox() -> Result<PathBuf, DockerError> {
    let have = host_busybox();
    if have.exists() {
        return Ok(have);
    }
    let target = cached_busybox();
    let missing = |why: String| DockerError::BusyboxMissing {
        path: format!(
            "{} ({why}; install the Debian package busybox-static or set VACSINE_BUSYBOX)",
            target.display()
        ),
    };
    let root = target
        .parent()
        .and_then(|p| p.parent())
        .ok_or_else(|| missing("no cache folder".into()))?
        .to_path_buf();
    let work = root.with_extension("download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| missing(e.to_string()))?;
    let run = |argv: &[&str]| -> Result<(), DockerError> {
        let out = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .current_dir(&work)
            .output()
            .map_err(|e| missing(format!("{}: {e}", argv[0])))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(missing(format!(
                "`{}` failed: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    };
    run(&["apt-get", "download", "busybox-static"])?;
    let deb = std::fs::read_dir(&work)
        .map_err(|e| missing(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| missing("apt-get download produced no package".into()))?;
    let unpack = work.join("root");
    run(&[
        "dpkg-deb",
        "-x",
        &deb.to_string_lossy(),
        &unpack.to_string_lossy(),
    ])?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&unpack, &root).map_err(|e| missing(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&work);
    if is_static_elf(&target) {
        Ok(target)
    } else {
        Err(missing(
            "the unpacked busybox is not a static executable".into(),
        ))
    }
}

/// `comm` of every host process in the pid namespace of `pid` (the container's init).
pub(crate) fn processes_in_pidns(pid: i64) -> std::io::Result<Vec<String>> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"))?;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let name = e.file_name();
        let Some(p) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{p}/ns/pid"))
            .ok()
            .as_ref()
            != Some(&ns)
        {
            continue;
        }
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{p}/comm")) {
            out.push(comm.trim_end().to_string());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_static_elf_is_static() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = dir.path().join("script");
        std::fs::write(&text, "#!/bin/sh\n").expect("write");
        assert!(!is_static_elf(&text));
        assert!(!is_static_elf(&dir.path().join("missing")));
        // A 64-bit little-endian ELF header with no program headers: no PT_INTERP.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let path = dir.path().join("elf");
        std::fs::write(&path, &elf).expect("write");
        assert!(is_static_elf(&path));
        // One program header of type PT_INTERP (3): dynamically linked.
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&3u32.to_le_bytes());
        elf.extend(ph);
        std::fs::write(&path, &elf).expect("write");
        assert!(!is_static_elf(&path));
    }

    #[test]
    fn this_process_is_in_its_own_pid_namespace() {
        let me = std::process::id() as i64;
        let procs = processes_in_pidns(me).expect("read /proc");
        assert!(!procs.is_empty());
        assert!(procs.windows(2).all(|w| w[0] <= w[1]));
    }
}
