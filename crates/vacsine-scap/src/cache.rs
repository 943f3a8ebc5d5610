//! A profile's slice of a data stream, and a cache of it.
//!
//! A SCAP data stream holds every profile's rules and every OVAL definition (SSG Debian 11:
//! 6 MB, 1 000+ rules, 2 000+ OVAL tests) while a profile needs a fraction of them. [`prune`]
//! keeps what one profile can reach: its rules, and the OVAL definitions, tests, objects,
//! states and variables reachable from their checks and from the CPE platforms. Evaluating
//! the slice gives the same results as evaluating the whole stream (the pruned parts are
//! never read), and the evaluator's directory prefetch covers only the directories the
//! profile's objects name.
//!
//! [`load`] keeps slices in a cache folder (`$XDG_CACHE_HOME/vacsine/scap`, else
//! `~/.cache/vacsine/scap`; `VACSINE_SCAP_CACHE=off` turns it off, any other value is the
//! folder): an entry is keyed by the stream's canonical path, device, inode, size,
//! modification and change times (the change time cannot be set back by a user), the
//! profile, the tailoring's bytes and this crate's version, so an edited or replaced stream
//! is parsed again. Entries are written to a temporary file then renamed (a reader never sees
//! half an entry), folder 0700 and files 0600; an entry that does not decode is ignored and
//! rewritten.

use crate::ds::{DataStream, OvalDoc, ScapError};
use crate::xccdf::{find_profile, selected_rules};
use crate::xml::Elem;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `oval:<namespace>:<def|tst|obj|ste|var>:<n>`.
fn is_oval_id(s: &str) -> bool {
    let mut parts = s.split(':');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("oval"), Some(ns), Some("def" | "tst" | "obj" | "ste" | "var"), Some(n), None)
            if !ns.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    )
}

/// Every OVAL id an element names (in references such as `test_ref`, `object_ref`,
/// `var_ref`, `definition_ref`, and in texts such as `object_reference` and `filter`).
fn referenced(e: &Elem, out: &mut Vec<String>) {
    for (_, v) in &e.attrs {
        if is_oval_id(v) {
            out.push(v.clone());
        }
    }
    let t = e.text.trim();
    if is_oval_id(t) {
        out.push(t.to_string());
    }
    for c in &e.children {
        referenced(c, out);
    }
}

type ById = HashMap<String, Elem>;

/// The part of `doc` reachable from `roots` (definition ids).
fn closure(doc: &OvalDoc, roots: impl IntoIterator<Item = String>) -> OvalDoc {
    let mut out = OvalDoc::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let maps: [(&ById, &mut ById); 5] = [
            (&doc.definitions, &mut out.definitions),
            (&doc.tests, &mut out.tests),
            (&doc.objects, &mut out.objects),
            (&doc.states, &mut out.states),
            (&doc.variables, &mut out.variables),
        ];
        for (from, to) in maps {
            if let Some(e) = from.get(&id) {
                let mut refs = Vec::new();
                referenced(e, &mut refs);
                todo.extend(refs.into_iter().filter(|r| !seen.contains(r)));
                to.insert(id.clone(), e.clone());
            }
        }
    }
    out
}

/// The slice of `ds` that profile `profile_id` reaches: its selected rules (with the
/// profiles, groups and values, which are small, kept whole) and the OVAL content reachable
/// from their checks and from the CPE dictionary.
pub fn prune(ds: &DataStream, profile_id: &str) -> Result<DataStream, String> {
    let profile = find_profile(ds, profile_id)?;
    let keep: HashSet<&str> = selected_rules(ds, profile)
        .into_iter()
        .map(|r| r.id.as_str())
        .collect();
    let rules: Vec<_> = ds
        .benchmark
        .rules
        .iter()
        .filter(|r| keep.contains(r.id.as_str()))
        .cloned()
        .collect();
    let mut roots: HashMap<&str, Vec<String>> = HashMap::new();
    for r in &rules {
        if let Some(c) = &r.check {
            if let Some(def) = &c.definition {
                roots.entry(c.href.as_str()).or_default().push(def.clone());
            }
        }
    }
    for (file, def) in ds.cpe_items.values() {
        roots.entry(file.as_str()).or_default().push(def.clone());
    }
    let ovals = ds
        .ovals
        .iter()
        .map(|(name, doc)| {
            let r = roots.get(name.as_str()).cloned().unwrap_or_default();
            (name.clone(), closure(doc, r))
        })
        .collect();
    let mut benchmark = ds.benchmark.clone();
    benchmark.rules = rules;
    Ok(DataStream {
        file: ds.file.clone(),
        benchmark,
        ovals,
        cpe_items: ds.cpe_items.clone(),
        platform_specs: ds.platform_specs.clone(),
    })
}

/// How a [`load`] went, for the figures.
#[derive(Debug, Clone, Serialize)]
pub struct LoadInfo {
    /// The slice came from the cache (no XML parsed).
    pub cached: bool,
    /// Time to read and parse the stream (or read the cache entry), ms.
    pub load_ms: f64,
    /// Rules in the slice.
    pub rules: usize,
    /// The cache entry used or written, if any.
    pub entry: Option<PathBuf>,
    /// Why the slice could not be cached (the evaluation goes on without).
    pub cache_error: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    ds: DataStream,
}

/// The cache folder from the environment (see the module's documentation); None: off.
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os("VACSINE_SCAP_CACHE") {
        Some(v) if v == "off" || v == "0" || v.is_empty() => return None,
        Some(v) => return Some(PathBuf::from(v)),
        None => {}
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("vacsine").join("scap"))
}

/// The key of (stream file, profile, tailoring): None when the file cannot be stat'ed.
fn key_of(path: &Path, profile: &str, tailoring: Option<&[u8]>) -> Option<(String, String)> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let canon = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&canon).ok()?;
    let mut key = format!(
        "v{} {} dev={} ino={} size={} mtime={}.{} ctime={}.{} profile={}",
        env!("CARGO_PKG_VERSION"),
        canon.display(),
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        profile,
    );
    // The tailoring is small: its bytes are part of the key, compared verbatim on reading.
    if let Some(t) = tailoring {
        key.push_str(" tailoring=");
        key.push_str(&String::from_utf8_lossy(t));
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    Some((key, format!("{:016x}", h.finish())))
}

fn entry_path(dir: &Path, hash: &str) -> PathBuf {
    dir.join(format!("{hash}.json"))
}

fn read_entry(path: &Path, key: &str) -> Option<DataStream> {
    let bytes = std::fs::read(path).ok()?;
    let e: Entry = serde_json::from_slice(&bytes).ok()?;
    (e.key == key).then_some(e.ds)
}

fn write_entry(dir: &Path, path: &Path, key: &str, ds: &DataStream) -> std::io::Result<()> {
    vacsine_private::private_dir(dir)?;
    let e = Entry {
        key: key.to_string(),
        ds: ds.clone(),
    };
    let bytes = serde_json::to_vec(&e).map_err(std::io::Error::other)?;
    vacsine_private::write_private(path, &bytes)
}

/// Reads the stream at `path` for `profile`: the cached slice when the cache holds one for
/// this very file, else the stream parsed, `prepare`d (a tailoring applied, say), pruned and
/// cached. `tailoring` is the bytes `prepare` depends on (part of the key).
pub fn load(
    path: &Path,
    profile: &str,
    tailoring: Option<&[u8]>,
    prepare: impl FnOnce(&mut DataStream) -> Result<(), ScapError>,
) -> Result<(DataStream, LoadInfo), ScapError> {
    load_in(default_dir(), path, profile, tailoring, prepare)
}

/// [`load`] with the cache in `dir` (None: no cache).
pub fn load_in(
    dir: Option<PathBuf>,
    path: &Path,
    profile: &str,
    tailoring: Option<&[u8]>,
    prepare: impl FnOnce(&mut DataStream) -> Result<(), ScapError>,
) -> Result<(DataStream, LoadInfo), ScapError> {
    let t = Instant::now();
    let name = path.display().to_string();
    let key = key_of(path, profile, tailoring);
    if let (Some(dir), Some((key, hash))) = (&dir, &key) {
        let p = entry_path(dir, hash);
        if let Some(ds) = read_entry(&p, key) {
            let rules = ds.benchmark.rules.len();
            return Ok((
                ds,
                LoadInfo {
                    cached: true,
                    load_ms: t.elapsed().as_secs_f64() * 1000.0,
                    rules,
                    entry: Some(p),
                    cache_error: None,
                },
            ));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| ScapError::File {
        file: name.clone(),
        message: format!(
            "cannot read the data stream: {e} (SSG content is in /usr/share/xml/scap/ssg/content/, from the ssg-debian package)"
        ),
    })?;
    let mut full = crate::ds::parse(&text, &name)?;
    drop(text);
    prepare(&mut full)?;
    let ds = prune(&full, profile).map_err(|message| ScapError::File {
        file: name.clone(),
        message,
    })?;
    drop(full);
    let (mut entry, mut cache_error) = (None, None);
    if let (Some(dir), Some((key, hash))) = (&dir, &key) {
        let p = entry_path(dir, hash);
        match write_entry(dir, &p, key, &ds) {
            Ok(()) => entry = Some(p),
            Err(e) => cache_error = Some(format!("cannot write {}: {e}", p.display())),
        }
    }
    let rules = ds.benchmark.rules.len();
    Ok((
        ds,
        LoadInfo {
            cached: false,
            load_ms: t.elapsed().as_secs_f64() * 1000.0,
            rules,
            entry,
            cache_error,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oval_ids_are_recognised_and_nothing_else() {
        for (s, yes) in [
            ("oval:ssg-sshd_disable_root_login:def:1", true),
            ("oval:x:tst:12", true),
            ("oval:x:obj:3", true),
            ("oval:x:ste:3", true),
            ("oval:x:var:3", true),
            ("oval:x:foo:3", false),
            ("oval:x:def:", false),
            ("oval::def:1", false),
            ("oval:x:def:1:2", false),
            ("/etc/ssh/sshd_config", false),
            ("ovalx:def:1", false),
        ] {
            assert_eq!(is_oval_id(s), yes, "{s}");
        }
    }

    fn el(name: &str, attrs: &[(&str, &str)], text: &str, children: Vec<Elem>) -> Elem {
        let mut e = Elem::new(name).with_text(text);
        for (k, v) in attrs {
            e = e.with_attr(k, v);
        }
        for c in children {
            e = e.with_child(c);
        }
        e
    }

    #[test]
    fn closure_follows_every_kind_of_reference_and_drops_the_rest() {
        let mut doc = OvalDoc::default();
        doc.definitions.insert(
            "oval:t:def:1".into(),
            el(
                "definition",
                &[("id", "oval:t:def:1")],
                "",
                vec![el(
                    "criteria",
                    &[],
                    "",
                    vec![
                        el("criterion", &[("test_ref", "oval:t:tst:1")], "", vec![]),
                        el(
                            "extend_definition",
                            &[("definition_ref", "oval:t:def:2")],
                            "",
                            vec![],
                        ),
                    ],
                )],
            ),
        );
        doc.definitions.insert(
            "oval:t:def:2".into(),
            el("definition", &[("id", "oval:t:def:2")], "", vec![]),
        );
        doc.definitions.insert(
            "oval:t:def:9".into(),
            el("definition", &[("id", "oval:t:def:9")], "", vec![]),
        );
        doc.tests.insert(
            "oval:t:tst:1".into(),
            el(
                "textfilecontent54_test",
                &[("id", "oval:t:tst:1")],
                "",
                vec![
                    el("object", &[("object_ref", "oval:t:obj:1")], "", vec![]),
                    el("state", &[("state_ref", "oval:t:ste:1")], "", vec![]),
                ],
            ),
        );
        doc.objects.insert(
            "oval:t:obj:1".into(),
            el(
                "textfilecontent54_object",
                &[("id", "oval:t:obj:1")],
                "",
                vec![
                    el(
                        "set",
                        &[],
                        "",
                        vec![
                            el("object_reference", &[], "oval:t:obj:2", vec![]),
                            el("filter", &[("action", "exclude")], "oval:t:ste:2", vec![]),
                        ],
                    ),
                    el("pattern", &[("var_ref", "oval:t:var:1")], "", vec![]),
                ],
            ),
        );
        for id in ["oval:t:obj:2", "oval:t:obj:9"] {
            doc.objects
                .insert(id.into(), el("x", &[("id", id)], "", vec![]));
        }
        for id in ["oval:t:ste:1", "oval:t:ste:2", "oval:t:ste:9"] {
            doc.states
                .insert(id.into(), el("x", &[("id", id)], "", vec![]));
        }
        for id in ["oval:t:var:1", "oval:t:var:9"] {
            doc.variables
                .insert(id.into(), el("x", &[("id", id)], "", vec![]));
        }
        let c = closure(&doc, ["oval:t:def:1".to_string()]);
        let mut ids: Vec<&String> = c
            .definitions
            .keys()
            .chain(c.tests.keys())
            .chain(c.objects.keys())
            .chain(c.states.keys())
            .chain(c.variables.keys())
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            [
                "oval:t:def:1",
                "oval:t:def:2",
                "oval:t:obj:1",
                "oval:t:obj:2",
                "oval:t:ste:1",
                "oval:t:ste:2",
                "oval:t:tst:1",
                "oval:t:var:1"
            ]
        );
    }
}
