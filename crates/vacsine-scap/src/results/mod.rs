//! Result documents of an evaluation, for the SCAP tools that already read them: an XCCDF 1.2
//! results document (the source `Benchmark` with a `TestResult` added, as `oscap xccdf eval
//! --results` writes it) and an ARF 1.1 asset report collection (the source data stream as the
//! report request, the node as an asset, the `TestResult` as a report, as `oscap
//! --results-arf` writes it; `oscap xccdf generate report` renders both, Foreman's OpenSCAP
//! plugin consumes ARF).
//!
//! Pure: the caller gathers the node's identity ([`target_info`], over [`System`]) and the
//! times, and writes the strings returned where it wants.

mod source;
mod writer;

pub(crate) use source::element_text as source_element;
pub use source::Source;
pub use writer::clean;

use crate::ds::{DataStream, Rule};
use crate::system::System;
use crate::tailoring::Tailoring;
use crate::xccdf::{find_profile, profile_values, Outcome, Report};
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::{BTreeMap, HashMap};
use writer::Xml;

const XCCDF12: &str = "http://checklists.nist.gov/xccdf/1.2";
const OVAL_DEFS: &str = "http://oval.mitre.org/XMLSchema/oval-definitions-5";
/// Evidence lines kept per rule in the documents (the JSON report has them all), and the
/// characters kept of each.
const MAX_MESSAGES: usize = 40;
const MAX_MESSAGE_CHARS: usize = 2000;

/// What identifies the evaluated node, as far as it could be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetInfo {
    /// The node's name in the target (`TestResult/target`).
    pub name: String,
    /// The node's host name (`kernel.hostname`).
    pub hostname: Option<String>,
    /// IPv4 and IPv6 addresses, loopback excepted.
    pub addresses: Vec<std::net::IpAddr>,
    /// MAC addresses of its interfaces, loopback excepted.
    pub macs: Vec<String>,
}

/// Reads the node's host name, addresses and MACs through the evaluator's primitives. What
/// cannot be read is left out (these are identification facts, not results).
pub fn target_info(name: &str, sys: &dyn System) -> TargetInfo {
    let mut t = TargetInfo {
        name: name.into(),
        ..Default::default()
    };
    t.hostname = sys
        .sysctl("kernel.hostname")
        .ok()
        .flatten()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    let read = |p: &str| {
        sys.read_file(p)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    // PID 1's view: the node's network namespace (`/proc/net` is `/proc/self/net`, the
    // reader's). `fib_trie` lists each local IPv4 address above a `/32 host LOCAL` line.
    let trie = read("/proc/1/net/fib_trie");
    let mut prev: Option<&str> = None;
    for l in trie.lines() {
        if l.trim() == "/32 host LOCAL" {
            if let Some(ip) = prev.and_then(|p| p.trim().trim_start_matches("|-- ").parse().ok()) {
                push_ip(&mut t.addresses, ip);
            }
        }
        prev = Some(l);
    }
    for l in read("/proc/1/net/if_inet6").lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 6 && f[0].len() == 32 {
            if let Ok(n) = u128::from_str_radix(f[0], 16) {
                push_ip(&mut t.addresses, std::net::IpAddr::V6(n.into()));
            }
        }
    }
    if let Ok(Some(ifaces)) = sys.list_dir("/sys/class/net") {
        for i in ifaces.iter().filter(|i| *i != "lo") {
            let mac = read(&format!("/sys/class/net/{i}/address"))
                .trim()
                .to_string();
            if is_mac(&mac) && mac != "00:00:00:00:00:00" && !t.macs.contains(&mac) {
                t.macs.push(mac);
            }
        }
    }
    t
}

fn push_ip(v: &mut Vec<std::net::IpAddr>, ip: std::net::IpAddr) {
    if !ip.is_loopback() && !v.contains(&ip) {
        v.push(ip);
    }
}

fn is_mac(s: &str) -> bool {
    s.len() == 17
        && s.split(':').count() == 6
        && s.split(':')
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// ARF's `hostname-type`: `[\w\-]+(\.[\w\-]+)*`.
fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        })
}

/// One evaluation of a profile on one node.
pub struct Run<'a> {
    pub report: &'a Report,
    pub target: TargetInfo,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The XCCDF result keyword of an outcome.
pub fn result_keyword(o: Outcome) -> &'static str {
    o.as_str()
}

/// The XCCDF 1.2 default scoring model (`urn:xccdf:scoring:default`, specification §7.3.2):
/// a rule scores 100 when it passes and 0 when it fails, errs or is unknown, and does not
/// count when not applicable, not checked or not selected; a group (and the benchmark) scores
/// the weighted mean of its children that count. `weights` default to 1.
pub fn default_score(
    ds: &DataStream,
    weights: &HashMap<String, f64>,
    outcomes: &HashMap<&str, Outcome>,
) -> f64 {
    let w = |id: &str| weights.get(id).copied().unwrap_or(1.0);
    let b = &ds.benchmark;
    // (Σ score×weight, Σ weight) per group (`None`: the benchmark), accumulated bottom-up.
    let mut acc: HashMap<Option<&str>, (f64, f64)> = HashMap::new();
    fn add<'a>(acc: &mut HashMap<Option<&'a str>, (f64, f64)>, g: Option<&'a str>, s: f64, w: f64) {
        let e = acc.entry(g).or_default();
        e.0 += s * w;
        e.1 += w;
    }
    for r in &b.rules {
        let Some(o) = outcomes.get(r.id.as_str()) else {
            continue;
        };
        let score = match o {
            Outcome::Pass => 100.0,
            Outcome::Fail | Outcome::Error | Outcome::Unknown => 0.0,
            Outcome::NotApplicable | Outcome::NotChecked => continue,
        };
        add(&mut acc, r.group.as_deref(), score, w(&r.id));
    }
    // Fold groups into their parents, deepest first.
    let depth = |g: &str| {
        let (mut g, mut d) = (Some(g), 0);
        while let Some(id) = g {
            g = b.groups.get(id).and_then(|x| x.parent.as_deref());
            d += 1;
            if d > 64 {
                break;
            }
        }
        d
    };
    let mut groups: Vec<&str> = b.groups.keys().map(String::as_str).collect();
    groups.sort_by_key(|g| std::cmp::Reverse(depth(g)));
    for g in groups {
        let Some((s, wsum)) = acc.get(&Some(g)).copied() else {
            continue;
        };
        if wsum <= 0.0 {
            continue;
        }
        let parent = b.groups.get(g).and_then(|x| x.parent.as_deref());
        add(&mut acc, parent, s / wsum, w(g));
    }
    match acc.get(&None) {
        Some((s, wsum)) if *wsum > 0.0 => s / wsum,
        _ => 0.0,
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// An NCName-safe form of a node name for ids and file names.
pub fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `TestResult` id of a run.
pub fn test_result_id(run: &Run) -> String {
    format!(
        "xccdf_io.vacsine_testresult_{}_{}",
        id_part(&run.report.profile),
        id_part(&run.target.name)
    )
}

/// Writes the `TestResult` element, with its own default namespace declaration (the
/// Benchmark it goes into may use a prefix); `in_arf`: its benchmark is named by the report
/// request's component, as oscap does, else by the stream's file.
fn test_result(
    x: &mut Xml,
    src: &Source,
    ds: &DataStream,
    run: &Run,
    tailoring: Option<&Tailoring>,
    in_arf: bool,
) {
    let rep = run.report;
    let id = test_result_id(run);
    let (start, end) = (time(&run.start), time(&run.end));
    let system = format!("cpe:/a:vacsine:vacsine:{}", env!("CARGO_PKG_VERSION"));
    let mut attrs = vec![
        ("id", id.as_str()),
        ("start-time", start.as_str()),
        ("end-time", end.as_str()),
        ("version", src.version.as_str()),
        ("test-system", system.as_str()),
    ];
    attrs.insert(0, ("xmlns", XCCDF12));
    x.start("TestResult", &attrs);
    let href = match (in_arf, &src.bench_component) {
        (true, Some(c)) => c.as_str(),
        _ => src.file.as_str(),
    };
    x.empty("benchmark", &[("href", href), ("id", &ds.benchmark.id)]);
    if let Some(t) = tailoring {
        x.empty(
            "tailoring-file",
            &[
                ("href", &t.file),
                ("id", &t.id),
                ("version", &t.version),
                ("time", &t.time),
            ],
        );
    }
    x.leaf("title", &[], "Vacsine Scan Result");
    x.empty("profile", &[("idref", &rep.profile)]);
    x.leaf("target", &[], &run.target.name);
    for a in &run.target.addresses {
        x.leaf("target-address", &[], &a.to_string());
    }
    for m in &run.target.macs {
        x.leaf("target-address", &[], m);
    }
    x.start("target-facts", &[]);
    let mut facts: Vec<(&str, String)> = vec![
        ("urn:xccdf:fact:scanner:name", "Vacsine".into()),
        (
            "urn:xccdf:fact:scanner:version",
            env!("CARGO_PKG_VERSION").into(),
        ),
    ];
    if let Some(h) = &run.target.hostname {
        facts.push(("urn:xccdf:fact:asset:identifier:host_name", h.clone()));
    }
    for a in &run.target.addresses {
        let k = if a.is_ipv4() {
            "urn:xccdf:fact:asset:identifier:ipv4"
        } else {
            "urn:xccdf:fact:asset:identifier:ipv6"
        };
        facts.push((k, a.to_string()));
    }
    for m in &run.target.macs {
        facts.push(("urn:xccdf:fact:asset:identifier:mac", m.clone()));
    }
    for (k, v) in &facts {
        x.leaf("fact", &[("name", k), ("type", "string")], v);
    }
    x.end("target-facts");
    let rules: HashMap<&str, &Rule> = ds
        .benchmark
        .rules
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();
    // The values the evaluated checks were given.
    if let Ok(profile) = find_profile(ds, &rep.profile) {
        let values = profile_values(ds, profile);
        let used: BTreeMap<&str, &str> = rep
            .rules
            .iter()
            .filter_map(|r| rules.get(r.id.as_str()))
            .filter_map(|r| r.check.as_ref())
            .flat_map(|c| c.exports.iter())
            .filter_map(|(_, v)| values.get(v).map(|val| (v.as_str(), val.as_str())))
            .collect();
        for (id, v) in used {
            x.leaf("set-value", &[("idref", id)], v);
        }
    }
    for r in &rep.rules {
        let rule = rules.get(r.id.as_str());
        let weight = format!("{:.6}", src.weights.get(&r.id).copied().unwrap_or(1.0));
        x.start(
            "rule-result",
            &[
                ("idref", &r.id),
                ("role", "full"),
                ("time", &end),
                ("severity", &r.severity),
                ("weight", &weight),
            ],
        );
        x.leaf("result", &[], result_keyword(r.outcome));
        for (system, v) in rule.map(|r| r.idents.as_slice()).unwrap_or_default() {
            x.leaf("ident", &[("system", system)], v);
        }
        for e in r.evidence.iter().take(MAX_MESSAGES) {
            let e: String = e.chars().take(MAX_MESSAGE_CHARS).collect();
            x.leaf("message", &[("severity", "info")], &e);
        }
        if let Some(c) = rule.and_then(|r| r.check.as_ref()) {
            let negate = if c.negate { "true" } else { "false" };
            let mut attrs = vec![("system", OVAL_DEFS)];
            if c.negate {
                attrs.push(("negate", negate));
            }
            x.start("check", &attrs);
            for (name, value) in &c.exports {
                x.empty(
                    "check-export",
                    &[("export-name", name), ("value-id", value)],
                );
            }
            match &c.definition {
                Some(d) => x.empty("check-content-ref", &[("name", d), ("href", &c.href)]),
                None => x.empty("check-content-ref", &[("href", &c.href)]),
            }
            x.end("check");
        }
        x.end("rule-result");
    }
    let outcomes: HashMap<&str, Outcome> = rep
        .rules
        .iter()
        .map(|r| (r.id.as_str(), r.outcome))
        .collect();
    let score = default_score(ds, &src.weights, &outcomes);
    x.leaf(
        "score",
        &[
            ("system", "urn:xccdf:scoring:default"),
            ("maximum", "100.000000"),
        ],
        &format!("{score:.6}"),
    );
    x.end("TestResult");
}

/// The XCCDF 1.2 results document of a run: the source `Benchmark` as written, with the
/// run's `TestResult` as its last item (as `oscap xccdf eval --results` writes it).
pub fn xccdf_document(
    src: &Source,
    ds: &DataStream,
    run: &Run,
    tailoring: Option<&Tailoring>,
) -> String {
    let mut x = Xml::new();
    test_result(&mut x, src, ds, run, tailoring, false);
    let tr = x.finish();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n",
        src.benchmark_with(&format!("\n{tr}\n"))
    )
}

/// The ARF 1.1 document of a run: the source data stream (with the tailoring as a checklist
/// component, if any) as report request `collection1`, the node as asset `asset0`, the
/// `TestResult` as report `xccdf1`, related by `createdFor` and `isAbout`.
pub fn arf_document(
    src: &Source,
    ds: &DataStream,
    run: &Run,
    tailoring: Option<&Tailoring>,
) -> String {
    let mut x = Xml::new();
    x.start(
        "arf:asset-report-collection",
        &[
            (
                "xmlns:arf",
                "http://scap.nist.gov/schema/asset-reporting-format/1.1",
            ),
            (
                "xmlns:core",
                "http://scap.nist.gov/schema/reporting-core/1.1",
            ),
            (
                "xmlns:ai",
                "http://scap.nist.gov/schema/asset-identification/1.1",
            ),
        ],
    );
    x.start(
        "core:relationships",
        &[(
            "xmlns:arfvocab",
            "http://scap.nist.gov/specifications/arf/vocabulary/relationships/1.0#",
        )],
    );
    for (kind, object) in [
        ("arfvocab:createdFor", "collection1"),
        ("arfvocab:isAbout", "asset0"),
    ] {
        x.start(
            "core:relationship",
            &[("type", kind), ("subject", "xccdf1")],
        );
        x.leaf("core:ref", &[], object);
        x.end("core:relationship");
    }
    x.end("core:relationships");
    x.start("arf:report-requests", &[]);
    x.start("arf:report-request", &[("id", "collection1")]);
    x.start("arf:content", &[]);
    let (cref, comp) = match tailoring {
        Some(t) if src.is_collection() => tailoring_component(t, run),
        _ => (String::new(), String::new()),
    };
    x.raw(&src.root_with(&cref, &comp));
    x.end("arf:content");
    x.end("arf:report-request");
    x.end("arf:report-requests");
    x.start("arf:assets", &[]);
    x.start("arf:asset", &[("id", "asset0")]);
    x.start("ai:computing-device", &[]);
    let t = &run.target;
    if !t.addresses.is_empty() || !t.macs.is_empty() {
        x.start("ai:connections", &[]);
        for a in &t.addresses {
            x.start("ai:connection", &[]);
            x.start("ai:ip-address", &[]);
            x.leaf(
                if a.is_ipv4() { "ai:ip-v4" } else { "ai:ip-v6" },
                &[],
                &a.to_string(),
            );
            x.end("ai:ip-address");
            x.end("ai:connection");
        }
        for m in &t.macs {
            x.start("ai:connection", &[]);
            x.leaf("ai:mac-address", &[], m);
            x.end("ai:connection");
        }
        x.end("ai:connections");
    }
    if let Some(h) = t.hostname.as_deref().filter(|h| is_hostname(h)) {
        x.leaf("ai:hostname", &[], h);
    }
    x.end("ai:computing-device");
    x.end("arf:asset");
    x.end("arf:assets");
    x.start("arf:reports", &[]);
    x.start("arf:report", &[("id", "xccdf1")]);
    x.start("arf:content", &[]);
    test_result(&mut x, src, ds, run, tailoring, true);
    x.end("arf:content");
    x.end("arf:report");
    x.end("arf:reports");
    x.end("arf:asset-report-collection");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n",
        x.finish()
    )
}

/// The tailoring as a data stream component and its checklist reference (each declares the
/// namespaces it uses, so it reads the same whatever prefixes the stream chose).
fn tailoring_component(t: &Tailoring, run: &Run) -> (String, String) {
    let comp_id = "scap_io.vacsine_comp_tailoring";
    let mut r = Xml::new();
    r.empty(
        "ds:component-ref",
        &[
            ("xmlns:ds", "http://scap.nist.gov/schema/scap/source/1.2"),
            ("xmlns:xlink", "http://www.w3.org/1999/xlink"),
            ("id", "scap_io.vacsine_cref_tailoring"),
            ("xlink:href", &format!("#{comp_id}")),
        ],
    );
    let mut c = Xml::new();
    c.start(
        "ds:component",
        &[
            ("xmlns:ds", "http://scap.nist.gov/schema/scap/source/1.2"),
            ("id", comp_id),
            (
                "timestamp",
                &run.start.format("%Y-%m-%dT%H:%M:%S").to_string(),
            ),
        ],
    );
    c.raw(&t.element);
    c.end("ds:component");
    (r.finish(), c.finish())
}
