//! XCCDF 1.2 tailoring (`<xccdf:Tailoring>`, as SCAP Workbench and `autotailor` write it):
//! profiles that extend a data stream's profiles with `select`, `refine-value` and
//! `set-value`. The file may be a bare `Tailoring` document or a data stream collection with
//! a `Tailoring` component. [`apply`] adds its profiles to a [`DataStream`], where
//! `--profile <tailored id>` selects them like the stream's own.
//!
//! Unlike oscap (which skips them silently), ids the benchmark does not define are errors
//! naming the tailoring file's line: a typo must not silently drop a rule from an audit.

use crate::ds::{DataStream, Profile, ScapError};
use crate::xml::Lines;
use std::collections::HashSet;

const XCCDF12: &str = "http://checklists.nist.gov/xccdf/1.2";

/// A parsed tailoring file.
#[derive(Debug, Clone, PartialEq)]
pub struct Tailoring {
    /// The file, as named (`TestResult/tailoring-file/@href`).
    pub file: String,
    pub id: String,
    /// `version` text and its `@time` (now when absent).
    pub version: String,
    pub time: String,
    /// `benchmark/@id` when the tailoring names it, and its line.
    pub benchmark: Option<String>,
    benchmark_line: u32,
    /// The profiles, with the line each starts on.
    pub profiles: Vec<(Profile, u32)>,
    /// The `Tailoring` element as written, self-contained (for ARF).
    pub element: String,
    lines: Vec<(String, u32)>,
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn err(file: &str, line: u32, message: impl Into<String>) -> ScapError {
    ScapError::Content {
        file: file.into(),
        line,
        message: message.into(),
    }
}

/// Parses a tailoring file (`file` names it in errors). Checks its shape only; [`check`]
/// resolves its ids against a data stream.
pub fn parse(xml: &str, file: &str) -> Result<Tailoring, ScapError> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 1_000_000,
    };
    let doc = roxmltree::Document::parse_with_options(xml, opts).map_err(|e| {
        let p = e.pos();
        ScapError::Xml {
            file: file.into(),
            line: p.row,
            col: p.col,
            message: e.to_string(),
        }
    })?;
    let lines = Lines::new(xml);
    let line = |n: roxmltree::Node| lines.line(n.range().start);
    let root = doc.root_element();
    let Some(t) = root
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "Tailoring")
    else {
        return Err(err(
            file,
            line(root),
            "no <Tailoring> element: expected an XCCDF 1.2 tailoring file (as written by SCAP Workbench or autotailor), or a data stream collection with a Tailoring component",
        ));
    };
    if t.tag_name().namespace() != Some(XCCDF12) {
        return Err(err(
            file,
            line(t),
            format!(
                "<Tailoring> is in namespace `{}`; only XCCDF 1.2 (`{XCCDF12}`) tailoring is supported",
                t.tag_name().namespace().unwrap_or("")
            ),
        ));
    }
    let req = |n: roxmltree::Node, a: &str| -> Result<String, ScapError> {
        n.attribute(a).map(String::from).ok_or_else(|| {
            err(
                file,
                line(n),
                format!(
                    "<{}> has no `{a}` attribute (required by XCCDF 1.2)",
                    n.tag_name().name()
                ),
            )
        })
    };
    let text = |n: roxmltree::Node| -> String {
        n.descendants()
            .filter(|d| d.is_text())
            .filter_map(|d| d.text())
            .collect::<String>()
            .trim()
            .to_string()
    };
    let mut out = Tailoring {
        file: file.into(),
        id: req(t, "id")?,
        version: child(t, "version").map(text).unwrap_or_else(|| "1".into()),
        time: child(t, "version")
            .and_then(|v| v.attribute("time"))
            .map(String::from)
            .unwrap_or_else(|| {
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            }),
        benchmark: child(t, "benchmark").and_then(|b| b.attribute("id").map(String::from)),
        benchmark_line: child(t, "benchmark").map(line).unwrap_or(1),
        profiles: Vec::new(),
        element: crate::results::source_element(xml, t),
        lines: Vec::new(),
    };
    for p in t
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "Profile")
    {
        let mut prof = Profile {
            id: req(p, "id")?,
            title: child(p, "title").map(text).unwrap_or_default(),
            extends: p.attribute("extends").map(String::from),
            selects: vec![],
            refine_values: vec![],
            set_values: vec![],
        };
        for c in p.children().filter(|c| c.is_element()) {
            let l = line(c);
            match c.tag_name().name() {
                "select" => {
                    let id = req(c, "idref")?;
                    let on = match c.attribute("selected") {
                        Some("true") | Some("1") => true,
                        Some("false") | Some("0") => false,
                        other => {
                            return Err(err(
                                file,
                                l,
                                format!(
                                    "<select idref=\"{id}\"> needs selected=\"true\" or \"false\" (found {other:?})"
                                ),
                            ))
                        }
                    };
                    out.lines.push((format!("select {id}"), l));
                    prof.selects.push((id, on));
                }
                "refine-value" => {
                    let id = req(c, "idref")?;
                    let sel = c.attribute("selector").unwrap_or("").to_string();
                    out.lines.push((format!("refine-value {id} {sel}"), l));
                    prof.refine_values.push((id, sel));
                }
                "set-value" => {
                    let id = req(c, "idref")?;
                    out.lines.push((format!("set-value {id}"), l));
                    prof.set_values.push((id, text(c)));
                }
                "refine-rule" | "set-complex-value" => {
                    return Err(err(
                        file,
                        l,
                        format!(
                            "<{}> is not supported (only select, refine-value and set-value): remove it, or tailor with those",
                            c.tag_name().name()
                        ),
                    ))
                }
                _ => {}
            }
        }
        if prof.title.is_empty() {
            prof.title = prof.id.clone();
        }
        out.profiles.push((prof, line(p)));
    }
    if out.profiles.is_empty() {
        return Err(err(file, line(t), "the tailoring defines no <Profile>"));
    }
    Ok(out)
}

impl Tailoring {
    fn line_of(&self, key: &str, default: u32) -> u32 {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, l)| *l)
            .unwrap_or(default)
    }

    /// Checks every id against `ds` (and the profiles' extends chains) and adds the profiles
    /// to it; returns their ids.
    pub fn apply_to(&self, ds: &mut DataStream) -> Result<Vec<String>, ScapError> {
        let file = self.file.as_str();
        let b = &ds.benchmark;
        if let Some(id) = &self.benchmark {
            if *id != b.id {
                return Err(err(
                    file,
                    self.benchmark_line,
                    format!(
                        "the tailoring is for benchmark `{id}`, but {} holds `{}`",
                        ds.file, b.id
                    ),
                ));
            }
        }
        let rules: HashSet<&str> = b.rules.iter().map(|r| r.id.as_str()).collect();
        let ours: Vec<&str> = self.profiles.iter().map(|(p, _)| p.id.as_str()).collect();
        let short = |kind: &str, id: &str| -> String {
            let guess: Vec<&str> = match kind {
                "rule" => b
                    .rules
                    .iter()
                    .map(|r| r.id.as_str())
                    .chain(b.groups.keys().map(String::as_str))
                    .filter(|r| r.ends_with(&format!("_{id}")))
                    .collect(),
                _ => b
                    .values
                    .keys()
                    .map(String::as_str)
                    .filter(|r| r.ends_with(&format!("_{id}")))
                    .collect(),
            };
            match guess.first() {
                Some(g) => format!(" (did you mean `{g}`?)"),
                None => String::new(),
            }
        };
        for (i, (p, pl)) in self.profiles.iter().enumerate() {
            if b.profiles.iter().any(|x| x.id == p.id) || ours[..i].contains(&p.id.as_str()) {
                return Err(err(
                    file,
                    *pl,
                    format!(
                        "profile `{}` is already defined (in {} or earlier in this file): give the tailored profile its own id",
                        p.id, ds.file
                    ),
                ));
            }
            // The extends chain ends in the data stream's profiles, without a cycle.
            let mut seen = vec![p.id.as_str()];
            let mut cur = p.extends.as_deref();
            while let Some(parent) = cur {
                if seen.contains(&parent) {
                    return Err(err(
                        file,
                        *pl,
                        format!("profile `{}` extends itself through `{parent}`", p.id),
                    ));
                }
                seen.push(parent);
                if let Some((x, _)) = self.profiles.iter().find(|(x, _)| x.id == parent) {
                    cur = x.extends.as_deref();
                } else if b.profiles.iter().any(|x| x.id == parent) {
                    break;
                } else {
                    return Err(err(
                        file,
                        *pl,
                        format!(
                            "profile `{}` extends `{parent}`, which is not a profile of {} (profiles: {})",
                            p.id,
                            ds.file,
                            b.profiles.iter().map(|x| x.id.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            for (id, _) in &p.selects {
                if !rules.contains(id.as_str()) && !b.groups.contains_key(id) {
                    return Err(err(
                        file,
                        self.line_of(&format!("select {id}"), *pl),
                        format!(
                            "select: `{id}` is not a rule or group of benchmark `{}`{}",
                            b.id,
                            short("rule", id)
                        ),
                    ));
                }
            }
            for (id, sel) in &p.refine_values {
                let at = self.line_of(&format!("refine-value {id} {sel}"), *pl);
                let Some(v) = b.values.get(id) else {
                    return Err(err(
                        file,
                        at,
                        format!(
                            "refine-value: `{id}` is not a value of benchmark `{}`{}",
                            b.id,
                            short("value", id)
                        ),
                    ));
                };
                if v.selected(sel).is_none() {
                    return Err(err(
                        file,
                        at,
                        format!(
                            "refine-value: value `{id}` has no selector `{sel}` (selectors: {})",
                            v.values
                                .iter()
                                .map(|(s, _)| if s.is_empty() {
                                    "(default)"
                                } else {
                                    s.as_str()
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
            for (id, val) in &p.set_values {
                let at = self.line_of(&format!("set-value {id}"), *pl);
                let Some(v) = b.values.get(id) else {
                    return Err(err(
                        file,
                        at,
                        format!(
                            "set-value: `{id}` is not a value of benchmark `{}`{}",
                            b.id,
                            short("value", id)
                        ),
                    ));
                };
                if v.kind == "number" && val.trim().parse::<f64>().is_err() {
                    return Err(err(
                        file,
                        at,
                        format!("set-value: value `{id}` is a number, `{val}` is not"),
                    ));
                }
            }
        }
        let ids = self.profiles.iter().map(|(p, _)| p.id.clone()).collect();
        ds.benchmark
            .profiles
            .extend(self.profiles.iter().map(|(p, _)| p.clone()));
        Ok(ids)
    }
}

/// Parses tailoring `xml` (read from `file`) and adds its profiles to `ds`: returns the ids of
/// the profiles added. Errors name the file, the line and the id at fault.
pub fn apply(ds: &mut DataStream, xml: &str, file: &str) -> Result<Vec<String>, ScapError> {
    parse(xml, file)?.apply_to(ds)
}
