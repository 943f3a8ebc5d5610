//! Debian images built locally from Debian's packages, for sites without an image registry:
//! `debootstrap --variant=minbase --include=<packages>` from the mirror the host's apt is
//! configured with, then `docker import`. An image is built once per machine and kept under
//! its tag; later calls find it and return at once.
//!
//! Blocking (it runs debootstrap, tar and the docker CLI): call it from a test set-up or
//! through `spawn_blocking`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The host's Debian main archive and release, from its apt configuration (one-line
/// `sources.list` entries and deb822 `.sources` files).
pub fn apt_mirror() -> Option<(String, String)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    let main_suite = |s: &str| !s.is_empty() && !s.contains('-') && !s.contains('/');
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let name = f.to_string_lossy();
        if name.ends_with(".list") {
            for l in text.lines() {
                let w: Vec<&str> = l
                    .split_whitespace()
                    .filter(|w| !w.starts_with('['))
                    .collect();
                if w.len() >= 3 && w[0] == "deb" && main_suite(w[2]) {
                    return Some((w[1].to_string(), w[2].to_string()));
                }
            }
        } else if name.ends_with(".sources") {
            for stanza in text.split("\n\n") {
                let field = |k: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(k))
                        .map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
                        .unwrap_or_default()
                };
                if !field("Types:").iter().any(|t| t == "deb") {
                    continue;
                }
                let (uris, suites) = (field("URIs:"), field("Suites:"));
                if let (Some(u), Some(s)) = (uris.first(), suites.iter().find(|s| main_suite(s))) {
                    return Some((u.clone(), s.clone()));
                }
            }
        }
    }
    None
}

/// How to run debootstrap: the host's, or one unpacked from Debian's package into the cache.
enum Debootstrap {
    Host,
    Unpacked(PathBuf),
}

impl Debootstrap {
    fn command(&self) -> Command {
        match self {
            Debootstrap::Host => Command::new("debootstrap"),
            Debootstrap::Unpacked(root) => {
                let mut c = Command::new(root.join("usr/sbin/debootstrap"));
                c.env("DEBOOTSTRAP_DIR", root.join("usr/share/debootstrap"));
                c
            }
        }
    }
}

fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("vacsine")
}

/// The host's debootstrap; else Debian's `debootstrap` package fetched with `apt-get
/// download` and unpacked into the cache (it is a shell script: nothing is installed).
fn debootstrap(progress: &(dyn Fn(&str) + Sync)) -> Result<Debootstrap, String> {
    if quiet_ok(Command::new("debootstrap").arg("--version")) {
        return Ok(Debootstrap::Host);
    }
    let root = cache_dir().join("debootstrap");
    if root.join("usr/sbin/debootstrap").is_file() {
        return Ok(Debootstrap::Unpacked(root));
    }
    progress("debootstrap is not installed: unpacking Debian's debootstrap package into the cache");
    let work = root.with_extension("download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd
            .current_dir(&work)
            .output()
            .map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(
        Command::new("apt-get").args(["download", "debootstrap"]),
        "apt-get download debootstrap",
    )?;
    let deb = std::fs::read_dir(&work)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download produced no package")?;
    let unpack = work.join("root");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpack),
        "dpkg-deb -x",
    )?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&unpack, &root).map_err(|e| format!("{}: {e}", root.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(Debootstrap::Unpacked(root))
}

/// What [`ensure_image`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Built {
    /// The image was there already.
    Present,
    /// Built now, from this suite, in this time.
    Now { suite: String, took: Duration },
}

/// Make sure the image `tag` exists: a Debian minbase rootfs with `packages`. Err: why it
/// cannot be built (Docker unreachable, no debootstrap, no mirror, a failed step with its
/// output).
pub fn ensure_image(tag: &str, packages: &[&str]) -> Result<Built, String> {
    ensure_image_with_progress(tag, packages, &|_| {})
}

/// [`ensure_image`], telling `progress` what debootstrap is doing (its `I:` lines: resolving,
/// retrieving, unpacking, configuring each package), for a first build that takes minutes.
pub fn ensure_image_with_progress(
    tag: &str,
    packages: &[&str],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Built, String> {
    if !quiet_ok(Command::new("docker").arg("info")) {
        return Err("Docker is unreachable".into());
    }
    if quiet_ok(Command::new("docker").args(["image", "inspect", tag])) {
        return Ok(Built::Present);
    }
    // One build at a time on this machine (tests and commands may ask at once): wait for the
    // lock, then look again, as another process may have built the image meanwhile.
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let lock_path = cache.join("debian-images.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        progress("another process is building a Debian image: waiting for it");
        lock.lock()
            .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    }
    if quiet_ok(Command::new("docker").args(["image", "inspect", tag])) {
        return Ok(Built::Present);
    }
    let debootstrap = debootstrap(progress).map_err(|why| {
        format!("`debootstrap` is needed to build {tag} ({why}; apt-get install debootstrap)")
    })?;
    let (mirror, suite) = apt_mirror().ok_or("no Debian mirror found in the apt configuration")?;
    let t = Instant::now();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("root");
    let mut cmd = debootstrap.command();
    cmd.arg("--variant=minbase");
    if !packages.is_empty() {
        cmd.arg(format!("--include={}", packages.join(",")));
    }
    cmd.arg(&suite)
        .arg(&root)
        .arg(&mirror)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    progress(&format!(
        "debootstrap {suite} ({} packages + minbase) for {tag}",
        packages.len()
    ));
    let mut child = cmd.spawn().map_err(|e| format!("debootstrap: {e}"))?;
    let stderr = child.stderr.take().ok_or("debootstrap has no stderr")?;
    // Keep the last lines for an error message; report the informative ones as they come.
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
        if let Some(info) = line.strip_prefix("I: ") {
            progress(info);
        }
        if tail.len() == 30 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().map_err(|e| format!("debootstrap: {e}"))?;
    if !status.success() {
        return Err(format!(
            "debootstrap failed ({status}):\n{}",
            Vec::from(tail).join("\n")
        ));
    }
    progress(&format!("importing the root file system as {tag}"));
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("tar: {e}"))?;
    let stdout = tar.stdout.take().ok_or("tar has no stdout")?;
    let import = Command::new("docker")
        .args(["import", "--change", "CMD [\"/bin/sh\"]", "-", tag])
        .stdin(stdout)
        .output()
        .map_err(|e| format!("docker import: {e}"))?;
    let tar_ok = tar.wait().map(|s| s.success()).unwrap_or(false);
    if !tar_ok || !import.status.success() {
        return Err(format!(
            "docker import failed: {}",
            String::from_utf8_lossy(&import.stderr)
        ));
    }
    Ok(Built::Now {
        suite,
        took: t.elapsed(),
    })
}
