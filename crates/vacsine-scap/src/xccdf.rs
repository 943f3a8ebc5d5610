//! XCCDF 1.2 processing: profile selection (select, refine-value, set-value, extends), CPE
//! applicability, rule outcomes from OVAL, and the roll-up per referenced control.

use crate::ds::{DataStream, PlatformTest, Profile, Reference, Rule};
use crate::oval::{Evaluator, OvalResult};
use crate::system::System;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Error,
    Unknown,
    NotApplicable,
    NotChecked,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Error => "error",
            Outcome::Unknown => "unknown",
            Outcome::NotApplicable => "notapplicable",
            Outcome::NotChecked => "notchecked",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleResult {
    pub id: String,
    pub title: String,
    pub severity: String,
    pub outcome: Outcome,
    /// Why: the definition's result and each test's result with what it collected, or the
    /// reason the rule was not checked / not applicable.
    pub evidence: Vec<String>,
    /// (family, control) pairs the rule references.
    pub controls: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ControlRollup {
    /// Controls all of whose rules pass.
    pub satisfied: usize,
    /// Controls with at least one failing rule.
    pub failed: usize,
    /// Controls with no failure but some rule not passing (error, notchecked…).
    pub incomplete: usize,
    /// Controls whose rules are all notapplicable.
    pub not_applicable: usize,
    /// control → outcomes of its rules (pass, fail…) counted.
    pub controls: BTreeMap<String, BTreeMap<Outcome, usize>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: String,
    pub profile: String,
    pub profile_title: String,
    pub rules: Vec<RuleResult>,
    pub summary: BTreeMap<Outcome, usize>,
    /// family (ANSSI, CIS Controls, NIST SP 800-53, PCI-DSS…) → roll-up.
    pub families: BTreeMap<String, ControlRollup>,
}

/// Options of an evaluation.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Treat SSG's `machine` platform (not a container) as applicable on containers.
    pub container_as_machine: bool,
}

/// The profile by id (its short form `anssi_np_nt28_high` is accepted too).
pub fn find_profile<'a>(ds: &'a DataStream, id: &str) -> Result<&'a Profile, String> {
    let ps = &ds.benchmark.profiles;
    ps.iter()
        .find(|p| p.id == id)
        .or_else(|| {
            ps.iter()
                .find(|p| p.id.ends_with(&format!("_profile_{id}")))
        })
        .ok_or_else(|| {
            format!(
                "profile `{id}` is not in {}; profiles: {}",
                ds.file,
                ps.iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The profile and the profiles it extends, base first.
fn chain<'a>(ds: &'a DataStream, p: &'a Profile) -> Vec<&'a Profile> {
    let mut out = vec![p];
    let mut cur = p;
    while let Some(parent) = cur.extends.as_deref() {
        match ds.benchmark.profiles.iter().find(|x| x.id == parent) {
            Some(x) if out.len() < 16 && !out.iter().any(|o| o.id == x.id) => {
                out.push(x);
                cur = x;
            }
            _ => break,
        }
    }
    out.reverse();
    out
}

/// Rules the profile selects, in document order: the rule selected and every group above
/// it selected (defaults overridden by the profile's `select`s).
pub fn selected_rules<'a>(ds: &'a DataStream, profile: &'a Profile) -> Vec<&'a Rule> {
    let mut sel: HashMap<&'a str, bool> = HashMap::new();
    for p in chain(ds, profile) {
        for (id, s) in &p.selects {
            sel.insert(id, *s);
        }
    }
    let b = &ds.benchmark;
    let group_on = |mut g: Option<&'a str>| -> bool {
        let mut hops = 0;
        while let Some(id) = g {
            let Some(grp) = b.groups.get(id) else {
                return true;
            };
            if !sel.get(id).copied().unwrap_or(grp.selected) {
                return false;
            }
            g = grp.parent.as_deref();
            hops += 1;
            if hops > 64 {
                break;
            }
        }
        true
    };
    b.rules
        .iter()
        .filter(|r| sel.get(r.id.as_str()).copied().unwrap_or(r.selected))
        .filter(|r| group_on(r.group.as_deref()))
        .collect()
}

/// Values as the profile sets them: value id → value.
pub fn profile_values(ds: &DataStream, profile: &Profile) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = ds
        .benchmark
        .values
        .iter()
        .filter_map(|(id, v)| v.default_value().map(|d| (id.clone(), d.to_string())))
        .collect();
    for p in chain(ds, profile) {
        for (id, selector) in &p.refine_values {
            if let Some(v) = ds
                .benchmark
                .values
                .get(id)
                .and_then(|v| v.selected(selector))
            {
                out.insert(id.clone(), v.into());
            }
        }
        for (id, v) in &p.set_values {
            out.insert(id.clone(), v.clone());
        }
    }
    out
}

/// The control family a reference belongs to, from its `href`.
pub fn family(href: &str) -> &'static str {
    let h = href.to_ascii_lowercase();
    let table: &[(&str, &str)] = &[
        ("ssi.gouv.fr", "ANSSI"),
        ("benchmarks.cisecurity.org", "CIS Benchmark"),
        ("cisecurity.org/controls", "CIS Controls"),
        ("800-53", "NIST SP 800-53"),
        ("800-171", "NIST SP 800-171"),
        ("cswp", "NIST CSF"),
        ("pcisecuritystandards", "PCI-DSS"),
        ("iso.org/standard/54534", "ISO 27001:2013"),
        ("cobit", "COBIT 5"),
        ("62443-3-3", "ISA 62443-3-3"),
        ("62443-2-1", "ISA 62443-2-1"),
        ("stigs/cci", "DISA CCI"),
        ("stigs/downloads", "DISA OS SRG"),
        ("nerc.com", "NERC CIP"),
        ("cfr-2007-title45", "HIPAA"),
        ("cjis", "CJIS"),
        ("niap", "NIAP OSPP"),
    ];
    table
        .iter()
        .find(|(k, _)| h.contains(k))
        .map(|(_, v)| *v)
        .unwrap_or("other")
}

fn controls_of(refs: &[Reference]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in refs {
        for c in r.text.split(',') {
            let c = c.trim();
            if !c.is_empty() {
                out.push((family(&r.href).to_string(), c.to_string()));
            }
        }
    }
    out
}

/// Evaluates a profile of a data stream on one system.
pub fn evaluate(
    ds: &DataStream,
    profile_id: &str,
    sys: &dyn System,
    opts: &Options,
) -> Result<Report, String> {
    let profile = find_profile(ds, profile_id)?;
    let rules = selected_rules(ds, profile);
    let values = profile_values(ds, profile);
    // External variables of every OVAL file, from the selected rules' exports.
    let mut externals: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
    for r in &rules {
        if let Some(c) = &r.check {
            for (var, value_id) in &c.exports {
                if let Some(v) = values.get(value_id) {
                    externals
                        .entry(c.href.clone())
                        .or_default()
                        .insert(var.clone(), vec![v.clone()]);
                }
            }
        }
    }
    let (mut dirs, mut walked) = (Vec::new(), Vec::new());
    for doc in ds.ovals.values() {
        let (d, w) = crate::oval::directories(doc);
        dirs.extend(d);
        walked.extend(w);
    }
    sys.prefetch_dirs(&[(dirs, 1), (walked, 3)]);
    let evaluators: HashMap<&str, Evaluator> = ds
        .ovals
        .iter()
        .map(|(name, doc)| {
            (
                name.as_str(),
                Evaluator::new(doc, sys, externals.get(name).cloned().unwrap_or_default()),
            )
        })
        .collect();
    let platform_cache: std::cell::RefCell<HashMap<String, (bool, String)>> = Default::default();
    let applicable = |idref: &str| -> (bool, String) {
        if let Some(c) = platform_cache.borrow().get(idref) {
            return c.clone();
        }
        let r = platform(ds, &evaluators, idref, opts);
        platform_cache.borrow_mut().insert(idref.into(), r.clone());
        r
    };
    let mut out = Vec::new();
    for r in rules {
        let mut evidence = Vec::new();
        // Applicability: the benchmark's, each group's up the tree, the rule's (any of a list).
        let mut lists: Vec<&[String]> = vec![&ds.benchmark.platforms, &r.platforms];
        let mut g = r.group.as_deref();
        let mut hops = 0;
        while let Some(id) = g {
            let Some(grp) = ds.benchmark.groups.get(id) else {
                break;
            };
            lists.push(&grp.platforms);
            g = grp.parent.as_deref();
            hops += 1;
            if hops > 64 {
                break;
            }
        }
        let mut na = None;
        for list in lists.iter().filter(|l| !l.is_empty()) {
            let results: Vec<(bool, String)> = list.iter().map(|p| applicable(p)).collect();
            if !results.iter().any(|(ok, _)| *ok) {
                na = Some(
                    results
                        .into_iter()
                        .map(|(_, why)| why)
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                break;
            }
        }
        let outcome = if let Some(why) = na {
            evidence.push(format!("not applicable: {why}"));
            Outcome::NotApplicable
        } else {
            match &r.check {
                None => {
                    evidence.push(if r.other_systems.is_empty() {
                        "the rule has no automated check".to_string()
                    } else {
                        format!("no OVAL check (only {})", r.other_systems.join(", "))
                    });
                    Outcome::NotChecked
                }
                Some(c) => match (&c.definition, evaluators.get(c.href.as_str())) {
                    (None, _) => {
                        evidence.push("check-content-ref without a definition name (whole OVAL file) is not supported".into());
                        Outcome::NotChecked
                    }
                    (_, None) => {
                        evidence.push(format!("OVAL file `{}` is not in the data stream", c.href));
                        Outcome::Error
                    }
                    (Some(def), Some(ev)) => {
                        let res = ev.definition(def);
                        let res = if c.negate { res.negate() } else { res };
                        evidence.push(format!("OVAL {def}: {}", res.as_str()));
                        for t in ev.traces(def) {
                            evidence.push(format!(
                                "{} {}: {} — {}",
                                t.id,
                                if t.comment.is_empty() {
                                    String::new()
                                } else {
                                    format!("({})", t.comment)
                                },
                                t.result.as_str(),
                                t.detail
                            ));
                        }
                        match res {
                            OvalResult::True => Outcome::Pass,
                            OvalResult::False => Outcome::Fail,
                            OvalResult::Error => Outcome::Error,
                            OvalResult::Unknown => Outcome::Unknown,
                            OvalResult::NotEvaluated => Outcome::NotChecked,
                            OvalResult::NotApplicable => Outcome::NotApplicable,
                        }
                    }
                },
            }
        };
        out.push(RuleResult {
            id: r.id.clone(),
            title: r.title.clone(),
            severity: r.severity.clone(),
            outcome,
            evidence,
            controls: controls_of(&r.references),
        });
    }
    let mut summary = BTreeMap::new();
    for r in &out {
        *summary.entry(r.outcome).or_insert(0) += 1;
    }
    Ok(Report {
        benchmark: ds.benchmark.id.clone(),
        profile: profile.id.clone(),
        profile_title: profile.title.clone(),
        families: rollup(&out),
        rules: out,
        summary,
    })
}

/// Roll-up of rule outcomes per referenced control, per family.
pub fn rollup(rules: &[RuleResult]) -> BTreeMap<String, ControlRollup> {
    let mut fams: BTreeMap<String, ControlRollup> = BTreeMap::new();
    for r in rules {
        for (f, c) in &r.controls {
            *fams
                .entry(f.clone())
                .or_default()
                .controls
                .entry(c.clone())
                .or_default()
                .entry(r.outcome)
                .or_insert(0) += 1;
        }
    }
    for f in fams.values_mut() {
        for counts in f.controls.values() {
            let n = |o| counts.get(&o).copied().unwrap_or(0);
            let total: usize = counts.values().sum();
            if n(Outcome::Fail) > 0 {
                f.failed += 1;
            } else if n(Outcome::NotApplicable) == total {
                f.not_applicable += 1;
            } else if n(Outcome::Pass) + n(Outcome::NotApplicable) == total {
                f.satisfied += 1;
            } else {
                f.incomplete += 1;
            }
        }
    }
    fams
}

/// Is a platform (`#machine` or a CPE name) applicable? With the reason when not.
fn platform(
    ds: &DataStream,
    evs: &HashMap<&str, Evaluator>,
    idref: &str,
    opts: &Options,
) -> (bool, String) {
    if let Some(id) = idref.strip_prefix('#') {
        match ds.platform_specs.get(id) {
            Some(t) => {
                let r = platform_test(ds, evs, t, opts, 0);
                (
                    r == OvalResult::True,
                    format!("platform `{id}` is {}", r.as_str()),
                )
            }
            None => (
                false,
                format!("platform `{id}` is not defined in the data stream"),
            ),
        }
    } else {
        let r = fact(ds, evs, idref, opts);
        (r == OvalResult::True, format!("{idref} is {}", r.as_str()))
    }
}

fn platform_test(
    ds: &DataStream,
    evs: &HashMap<&str, Evaluator>,
    t: &PlatformTest,
    opts: &Options,
    depth: usize,
) -> OvalResult {
    match t {
        PlatformTest::Fact(name) => fact(ds, evs, name, opts),
        PlatformTest::Logical {
            operator,
            negate,
            children,
        } => {
            if depth > 32 {
                return OvalResult::Error;
            }
            let rs: Vec<OvalResult> = children
                .iter()
                .map(|c| platform_test(ds, evs, c, opts, depth + 1))
                .collect();
            let r = crate::oval::combine(operator, &rs);
            if *negate {
                r.negate()
            } else {
                r
            }
        }
    }
}

fn fact(ds: &DataStream, evs: &HashMap<&str, Evaluator>, name: &str, opts: &Options) -> OvalResult {
    if opts.container_as_machine && name == "cpe:/a:machine" {
        return OvalResult::True;
    }
    match ds.cpe_items.get(name) {
        Some((href, def)) => match evs.get(href.as_str()) {
            Some(ev) => ev.definition(def),
            None => OvalResult::Error,
        },
        None => OvalResult::False,
    }
}
