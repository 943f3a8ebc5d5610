//! systemd units for OVAL's `systemdunitdependency` and `systemdunitproperty` objects, read
//! from the node's unit files through [`System`]'s primitives (no D-Bus, so it works on a
//! container, a cloned sandbox or an image as well as on a booted machine).
//!
//! - Unit files are looked up in systemd's system search path, first match wins; drop-ins
//!   (`<unit>.d/*.conf`) are applied in file-name order; an empty unit file or a link to
//!   `/dev/null` is *masked*.
//! - A unit's dependencies are what its `Requires=`, `Requisite=`, `Wants=` and `BindsTo=`
//!   name (unit file and drop-ins) and the links in its `.wants/` and `.requires/` folders,
//!   followed transitively, as systemd's dependency properties are followed by
//!   `systemctl list-dependencies`.
//! - Properties: `LoadState` (`loaded`, `masked`, `not-found`), `UnitFileState` (`enabled`
//!   when a `.wants/`/`.requires/` folder under `/etc` links to it, `masked`, `static` without
//!   an `[Install]` section, else `disabled`), `Id`, `FragmentPath`, and the dependency
//!   properties. `ActiveState`/`SubState` are runtime facts: when systemd does not run on the
//!   node (no `/run/systemd/system`, as `sd_booted()` checks) every unit is `inactive`/`dead`;
//!   when it runs they come from [`System::unit_runtime_property`] (`systemctl show` for a
//!   driver) and an unreachable manager is an error, never a guess. Other properties are
//!   `notchecked`.

use crate::system::{FileKind, System};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// systemd's system unit search path, in precedence order.
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/run/systemd/generator.late",
];

const SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".target",
    ".mount",
    ".automount",
    ".timer",
    ".path",
    ".slice",
    ".scope",
    ".swap",
    ".device",
];

/// Dependency properties followed for `systemdunitdependency`.
pub const DEPENDENCY_KEYS: &[&str] = &["Requires", "Requisite", "Wants", "BindsTo"];

/// A unit as its files describe it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unit {
    pub name: String,
    /// The unit file used (`FragmentPath`); None: not found.
    pub path: Option<String>,
    pub masked: bool,
    /// `Section.Key` → values, unit file then drop-ins (an empty assignment resets).
    pub settings: BTreeMap<String, Vec<String>>,
    pub has_install: bool,
}

/// Whether systemd runs on the system (`/run/systemd/system` is a directory).
pub fn systemd_running(sys: &dyn System) -> Result<bool, String> {
    Ok(matches!(
        sys.stat("/run/systemd/system")?,
        Some(s) if s.kind == FileKind::Directory
    ))
}

fn is_unit_name(n: &str) -> bool {
    SUFFIXES.iter().any(|s| n.ends_with(s) && n.len() > s.len())
}

/// Names of every unit with a file in the search path (sorted).
pub fn unit_names(sys: &dyn System) -> Result<Vec<String>, String> {
    let mut out = BTreeSet::new();
    for d in UNIT_DIRS {
        for n in sys.list_dir(d)?.unwrap_or_default() {
            if is_unit_name(&n) {
                out.insert(n);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Parses unit-file text into `settings` (sections `Unit`, `Install`, `Service`, …).
fn parse_into(text: &str, unit: &mut Unit) {
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        // Continuation lines end with a backslash.
        let line = raw.trim();
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let full = if pending.is_empty() {
            line.to_string()
        } else {
            let mut p = std::mem::take(&mut pending);
            p.push_str(line);
            p
        };
        let l = full.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') && l.ends_with(']') {
            section = l[1..l.len() - 1].trim().to_string();
            if section == "Install" {
                unit.has_install = true;
            }
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let key = format!("{section}.{}", k.trim());
        let v = v.trim();
        let entry = unit.settings.entry(key).or_default();
        if v.is_empty() {
            entry.clear();
        } else {
            entry.extend(v.split_whitespace().map(String::from));
        }
    }
}

/// The unit `name` from its files.
pub fn load_unit(sys: &dyn System, name: &str) -> Result<Unit, String> {
    let mut unit = Unit {
        name: name.to_string(),
        ..Default::default()
    };
    for d in UNIT_DIRS {
        let path = format!("{d}/{name}");
        let Some(st) = sys.stat(&path)? else {
            continue;
        };
        if st.kind == FileKind::Directory {
            continue;
        }
        unit.path = Some(path.clone());
        let content = match sys.read_file(&path) {
            Ok(c) => c,
            // A link to /dev/null (a character device) reads as "not a regular file".
            Err(_) if st.kind == FileKind::Symlink => Some(Vec::new()),
            Err(e) => return Err(e),
        };
        match content {
            None => {
                // A dangling link: systemd ignores it.
                unit.path = None;
                continue;
            }
            Some(c) if c.iter().all(|b| b.is_ascii_whitespace()) => {
                unit.masked = true;
                return Ok(unit);
            }
            Some(c) => parse_into(&String::from_utf8_lossy(&c), &mut unit),
        }
        break;
    }
    if unit.path.is_none() {
        return Ok(unit);
    }
    // Drop-ins: by file name, the first folder in precedence order holding that name wins.
    let mut dropins: BTreeMap<String, String> = BTreeMap::new();
    for d in UNIT_DIRS {
        let dir = format!("{d}/{name}.d");
        for f in sys.list_dir(&dir)?.unwrap_or_default() {
            if f.ends_with(".conf") {
                dropins.entry(f.clone()).or_insert(format!("{dir}/{f}"));
            }
        }
    }
    for path in dropins.values() {
        if let Some(c) = sys.read_file(path).unwrap_or(None) {
            parse_into(&String::from_utf8_lossy(&c), &mut unit);
        }
    }
    Ok(unit)
}

/// The units `name` depends on directly: its dependency settings and the links in its
/// `.wants/` and `.requires/` folders.
pub fn direct_dependencies(sys: &dyn System, name: &str) -> Result<Vec<String>, String> {
    let unit = load_unit(sys, name)?;
    let mut out = BTreeSet::new();
    if !unit.masked {
        for k in DEPENDENCY_KEYS {
            for v in unit
                .settings
                .get(&format!("Unit.{k}"))
                .into_iter()
                .flatten()
            {
                out.insert(v.clone());
            }
        }
    }
    for d in UNIT_DIRS {
        for suffix in ["wants", "requires"] {
            for n in sys
                .list_dir(&format!("{d}/{name}.{suffix}"))?
                .unwrap_or_default()
            {
                if is_unit_name(&n) {
                    out.insert(n);
                }
            }
        }
    }
    out.remove(name);
    Ok(out.into_iter().collect())
}

/// Every unit `name` depends on, transitively (not itself), sorted.
pub fn all_dependencies(sys: &dyn System, name: &str) -> Result<Vec<String>, String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut todo: VecDeque<String> = VecDeque::from([name.to_string()]);
    while let Some(u) = todo.pop_front() {
        if seen.len() > 4096 {
            return Err(format!(
                "the dependencies of {name} exceed 4096 units: the unit files loop or are not systemd's"
            ));
        }
        for d in direct_dependencies(sys, &u)? {
            if d != name && seen.insert(d.clone()) {
                todo.push_back(d);
            }
        }
    }
    Ok(seen.into_iter().collect())
}

/// `UnitFileState` from the files.
fn unit_file_state(sys: &dyn System, unit: &Unit) -> Result<&'static str, String> {
    if unit.masked {
        return Ok("masked");
    }
    if unit.path.is_none() {
        return Ok("");
    }
    // Enabled: some `.wants/` or `.requires/` folder under /etc links to it.
    for d in ["/etc/systemd/system"] {
        for entry in sys.list_dir(d)?.unwrap_or_default() {
            if entry.ends_with(".wants") || entry.ends_with(".requires") {
                let folder = format!("{d}/{entry}");
                if sys
                    .list_dir(&folder)?
                    .unwrap_or_default()
                    .iter()
                    .any(|n| n == &unit.name)
                {
                    return Ok("enabled");
                }
            }
        }
    }
    Ok(if unit.has_install {
        "disabled"
    } else {
        "static"
    })
}

/// The values of property `prop` of unit `name`; None: the property is not one Vacsine
/// derives (the caller reports it `notchecked`).
pub fn property(sys: &dyn System, name: &str, prop: &str) -> Result<Option<Vec<String>>, String> {
    let unit = load_unit(sys, name)?;
    let one = |s: &str| Ok(Some(vec![s.to_string()]));
    match prop {
        "Id" => one(name),
        "LoadState" => one(if unit.masked {
            "masked"
        } else if unit.path.is_some() {
            "loaded"
        } else {
            "not-found"
        }),
        "FragmentPath" => one(unit.path.as_deref().unwrap_or("")),
        "UnitFileState" => one(unit_file_state(sys, &unit)?),
        "ActiveState" | "SubState" => {
            if systemd_running(sys)? {
                return sys.unit_runtime_property(name, prop).map(|v| Some(vec![v]));
            }
            one(if prop == "ActiveState" {
                "inactive"
            } else {
                "dead"
            })
        }
        p if DEPENDENCY_KEYS.contains(&p) => {
            let mut v: Vec<String> = unit
                .settings
                .get(&format!("Unit.{p}"))
                .cloned()
                .unwrap_or_default();
            let folder = match p {
                "Wants" => Some("wants"),
                "Requires" => Some("requires"),
                _ => None,
            };
            if let Some(f) = folder {
                for d in UNIT_DIRS {
                    v.extend(
                        sys.list_dir(&format!("{d}/{name}.{f}"))?
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|n| is_unit_name(n)),
                    );
                }
            }
            v.sort();
            v.dedup();
            Ok(Some(v))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::MemSystem;

    fn node() -> MemSystem {
        let mut m = MemSystem::new();
        m.file(
            "/lib/systemd/system/multi-user.target",
            "[Unit]\nDescription=Multi-User\nRequires=basic.target\nConflicts=rescue.service\n",
        )
        .file(
            "/lib/systemd/system/basic.target",
            "[Unit]\nRequires=sysinit.target\nWants=sockets.target\n",
        )
        .file("/lib/systemd/system/sysinit.target", "[Unit]\n")
        .file("/lib/systemd/system/sockets.target", "[Unit]\n")
        .file(
            "/lib/systemd/system/cron.service",
            "[Unit]\nDescription=cron\n[Service]\nExecStart=/usr/sbin/cron -f\n[Install]\nWantedBy=multi-user.target\n",
        )
        .file(
            "/lib/systemd/system/auditd.service",
            "[Unit]\nDescription=audit\n[Install]\nWantedBy=multi-user.target\n",
        )
        .file(
            "/lib/systemd/system/rsync.service",
            "[Unit]\nWants=network-online.target \\\n  time-sync.target\n[Install]\nWantedBy=multi-user.target\n",
        )
        .file("/lib/systemd/system/network-online.target", "[Unit]\n")
        .file("/lib/systemd/system/dbus.socket", "[Unit]\n")
        .symlink(
            "/etc/systemd/system/multi-user.target.wants/cron.service",
            "/lib/systemd/system/cron.service",
        )
        .symlink(
            "/lib/systemd/system/sockets.target.wants/dbus.socket",
            "../dbus.socket",
        )
        .file("/etc/systemd/system/rsync.service", "")
        .file(
            "/etc/systemd/system/multi-user.target.d/10-extra.conf",
            "[Unit]\nWants=rsync.service\n",
        );
        m
    }

    #[test]
    fn dependencies_follow_settings_links_and_dropins_transitively() {
        let m = node();
        let deps = all_dependencies(&m, "multi-user.target").unwrap();
        assert_eq!(
            deps,
            [
                "basic.target",
                "cron.service",
                "dbus.socket",
                "rsync.service",
                "sockets.target",
                "sysinit.target"
            ]
        );
        // Conflicts= is not a dependency; auditd is installed but not enabled.
        assert!(!deps
            .iter()
            .any(|d| d == "rescue.service" || d == "auditd.service"));
        // rsync is masked (empty file in /etc): its own Wants= are not followed.
        assert!(!deps.iter().any(|d| d == "network-online.target"));
    }

    #[test]
    fn properties_from_files_and_runtime_when_systemd_is_not_running() {
        let m = node();
        let p = |u: &str, k: &str| property(&m, u, k).unwrap();
        assert_eq!(
            p("cron.service", "UnitFileState"),
            Some(vec!["enabled".into()])
        );
        assert_eq!(
            p("auditd.service", "UnitFileState"),
            Some(vec!["disabled".into()])
        );
        assert_eq!(
            p("basic.target", "UnitFileState"),
            Some(vec!["static".into()])
        );
        assert_eq!(
            p("rsync.service", "UnitFileState"),
            Some(vec!["masked".into()])
        );
        assert_eq!(p("rsync.service", "LoadState"), Some(vec!["masked".into()]));
        assert_eq!(
            p("nope.service", "LoadState"),
            Some(vec!["not-found".into()])
        );
        assert_eq!(
            p("cron.service", "ActiveState"),
            Some(vec!["inactive".into()])
        );
        assert_eq!(p("cron.service", "SubState"), Some(vec!["dead".into()]));
        assert_eq!(
            p("cron.service", "FragmentPath"),
            Some(vec!["/lib/systemd/system/cron.service".into()])
        );
        assert_eq!(p("cron.service", "MemoryCurrent"), None);
        assert_eq!(
            p("basic.target", "Wants"),
            Some(vec!["sockets.target".into()])
        );
        assert_eq!(
            p("sockets.target", "Wants"),
            Some(vec!["dbus.socket".into()])
        );
        assert!(unit_names(&m)
            .unwrap()
            .contains(&"auditd.service".to_string()));
    }

    #[test]
    fn runtime_state_is_asked_when_systemd_runs_and_an_error_is_not_a_guess() {
        let mut m = node();
        m.dir("/run/systemd/system", 0o755);
        let e = property(&m, "cron.service", "ActiveState").unwrap_err();
        assert!(e.contains("not available"), "{e}");
    }
}
