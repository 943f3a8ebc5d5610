//! Cross-reference validation of loaded documents. Pure: every problem names the place
//! (line/column from the document) and the fix.

use crate::dag;
use crate::doc::{LoadError, Loc, SourceFile};
use crate::eval::parse_mode;
use crate::policy::{Check, Policy, SSH_METHODS};
use crate::target::Target;
use crate::version::Constraint;
use crate::workflow::{check_workflow_name, parse_duration, Step, Workflow};
use std::collections::{BTreeMap, BTreeSet};

/// One problem found by validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub help: Option<String>,
    /// A warning: reported at its place, but the document is valid (a deprecated name).
    pub warning: bool,
}

impl Problem {
    pub fn at<T>(loc: &Loc<T>, message: impl Into<String>, help: Option<&str>) -> Self {
        Problem {
            line: loc.line,
            column: loc.column,
            message: message.into(),
            help: help.map(str::to_string),
            warning: false,
        }
    }
    /// A warning at `loc`.
    pub fn warn_at<T>(loc: &Loc<T>, message: impl Into<String>, help: Option<&str>) -> Self {
        Problem {
            warning: true,
            ..Problem::at(loc, message, help)
        }
    }
    /// `problems` split into (errors, warnings).
    pub fn split(problems: Vec<Problem>) -> (Vec<Problem>, Vec<Problem>) {
        problems.into_iter().partition(|p| !p.warning)
    }
    pub fn into_error(self, source: &SourceFile) -> LoadError {
        LoadError::at(source, self.line, self.column, self.message, self.help)
    }
}

/// Workflows known by name (the remediation catalog).
pub type CatalogIndex<'a> = BTreeMap<String, &'a Workflow>;

fn regex_ok(p: &Loc<String>, out: &mut Vec<Problem>) {
    if let Err(e) = regex::Regex::new(&p.value) {
        let first = e
            .to_string()
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string();
        out.push(Problem::at(
            p,
            format!("invalid regular expression `{}`: {first}", p.value),
            Some("use Rust regex syntax (https://docs.rs/regex)"),
        ));
    }
}

fn mode_ok(p: &Loc<String>, out: &mut Vec<Problem>) {
    if let Err(e) = parse_mode(&p.value) {
        out.push(Problem::at(
            p,
            e,
            Some("write the mode as a quoted octal string, e.g. \"0644\""),
        ));
    }
}

/// Validate the probe arguments of a check.
pub fn check_check(c: &Check, out: &mut Vec<Problem>) {
    match c {
        Check::Port(_) => {}
        Check::Http(h) => {
            if let Some(p) = &h.body_matches {
                regex_ok(p, out)
            }
        }
        Check::File(f) => {
            for m in [&f.mode, &f.max_mode].into_iter().flatten() {
                mode_ok(m, out);
            }
            for r in [&f.contains, &f.not_contains].into_iter().flatten() {
                regex_ok(r, out);
            }
        }
        Check::Command(c) => {
            for r in [&c.stdout_matches, &c.stdout_not_matches]
                .into_iter()
                .flatten()
            {
                regex_ok(r, out);
            }
        }
        Check::Package(p) => {
            if let Some(v) = &p.version {
                if let Err(e) = Constraint::parse(v) {
                    out.push(Problem::at(v, e, None));
                }
            }
        }
        Check::Firewall(f) => {
            for r in f.contains.iter().chain(&f.not_contains) {
                regex_ok(r, out);
            }
        }
        Check::User(u) => {
            if let Some(s) = &u.shell {
                regex_ok(s, out)
            }
        }
        Check::Ssh(s) => {
            let e = &s.expect;
            if let Some(b) = &e.banner_matches {
                regex_ok(b, out);
            }
            for m in e.methods_include.iter().chain(&e.methods_exclude) {
                if !SSH_METHODS.contains(&m.value.as_str()) {
                    out.push(Problem::at(
                        m,
                        format!("unknown SSH authentication method `{}`", m.value),
                        Some(&format!("use one of: {}", SSH_METHODS.join(", "))),
                    ));
                }
            }
            if let (Some(l), None) = (&e.login, &s.key) {
                out.push(Problem::at(
                    l,
                    "`login` needs a private key to try",
                    Some("add `key: path/to/private-key` to the ssh check"),
                ));
            }
            if e.banner_matches.is_none()
                && e.login.is_none()
                && e.methods_include.is_empty()
                && e.methods_exclude.is_empty()
            {
                out.push(Problem::at(
                    &s.from,
                    "the ssh check expects nothing",
                    Some("give `expect` at least one of bannerMatches, login, methodsInclude, methodsExclude"),
                ));
            }
            if s.user.is_empty() || s.user.chars().any(|c| c.is_control() || c.is_whitespace()) {
                out.push(Problem::at(
                    &s.from,
                    format!("invalid SSH user name `{}`", s.user.escape_debug()),
                    Some("a user name has no spaces or control characters"),
                ));
            }
        }
        Check::Process(_) | Check::Sysctl(_) | Check::Listening(_) | Check::Scap(_) => {}
    }
}

/// Validate a policy on its own and against the catalog (and the target, when given).
pub fn validate_policy(
    p: &Policy,
    catalog: &CatalogIndex<'_>,
    target: Option<&Target>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    if p.spec.requirements.is_empty() {
        out.push(Problem::at(
            &p.metadata.name,
            "the policy has no requirements",
            Some("add at least one entry under spec.requirements"),
        ));
    }
    let mut seen = BTreeSet::new();
    for r in &p.spec.requirements {
        if !seen.insert(r.id.value.clone()) {
            out.push(Problem::at(
                &r.id,
                format!("duplicate requirement id `{}`", r.id.value),
                Some("requirement ids must be unique within a policy"),
            ));
        }
        if r.id.value.is_empty()
            || !r
                .id
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            out.push(Problem::at(
                &r.id,
                format!("invalid requirement id `{}`", r.id.value),
                Some("use letters, digits, `-`, `_` and `.`"),
            ));
        }
        check_check(&r.check, &mut out);
        if let Some(a) = &r.applies_when {
            check_check(a, &mut out);
        }
        if let Some(t) = target {
            let vantages: BTreeSet<&str> = t
                .spec
                .vantage_points
                .iter()
                .map(|v| v.name.value.as_str())
                .collect();
            for c in std::iter::once(&r.check).chain(r.applies_when.as_ref()) {
                if let Some(v) = c.vantage() {
                    if !vantages.contains(v.value.as_str()) {
                        out.push(Problem::at(v, format!("vantage point `{}` is not declared by target `{}`", v.value, t.metadata.name.value), Some("declare it under spec.vantagePoints of the target, or use one that is")));
                    }
                }
            }
            let roles: BTreeSet<&str> = t
                .spec
                .nodes
                .iter()
                .flat_map(|n| n.roles.iter().map(String::as_str))
                .collect();
            for role in &r.nodes.roles {
                if !roles.contains(role.value.as_str()) {
                    out.push(Problem::at(
                        role,
                        format!(
                            "no node of target `{}` has role `{}`",
                            t.metadata.name.value, role.value
                        ),
                        Some("fix the role name or give a node that role in the target"),
                    ));
                }
            }
        }
        for f in &r.fixes {
            let Some(w) = catalog.get(&f.uses.value) else {
                let known: Vec<&str> = catalog.keys().map(String::as_str).collect();
                out.push(Problem::at(
                    &f.uses,
                    format!(
                        "fix names workflow `{}`, which is not in the catalog",
                        f.uses.value
                    ),
                    Some(&format!(
                        "known workflows: {}",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    )),
                ));
                continue;
            };
            for (k, v) in &f.with {
                let spec = match crate::workflow::canonical_input(&w.spec.inputs, k) {
                    Some((new, true)) => {
                        out.push(Problem::warn_at(
                            v,
                            format!(
                                "input `{k}` of workflow `{}` is deprecated: it is now `{new}`",
                                f.uses.value
                            ),
                            Some(&format!("write `{new}:` instead of `{k}:`; the old name will be removed in a later version")),
                        ));
                        if f.with.contains_key(new) {
                            out.push(Problem::at(
                                v,
                                format!("input `{new}` of workflow `{}` is given twice (`{k}` is its deprecated name)", f.uses.value),
                                Some(&format!("keep `{new}:` only")),
                            ));
                        }
                        w.spec.inputs.get(new)
                    }
                    _ => w.spec.inputs.get(k),
                };
                match spec {
                    None => out.push(Problem::at(
                        v,
                        format!("workflow `{}` has no input `{k}`", f.uses.value),
                        Some(&format!(
                            "declared inputs: {}",
                            w.spec.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    )),
                    Some(spec) => {
                        if !is_templated(&v.value) {
                            if let Err(e) = spec.check(&v.value) {
                                out.push(Problem::at(
                                    v,
                                    format!("input `{k}` of workflow `{}`: {e}", f.uses.value),
                                    None,
                                ));
                            }
                        }
                    }
                }
            }
            for (k, spec) in &w.spec.inputs {
                let given = f.with.contains_key(k)
                    || spec.deprecated_names.iter().any(|d| f.with.contains_key(d));
                if spec.is_required() && !given {
                    out.push(Problem::at(
                        &f.uses,
                        format!(
                            "fix `{}` does not give required input `{k}` ({})",
                            f.uses.value,
                            spec.ty.as_str()
                        ),
                        Some("add it under `with:`"),
                    ));
                }
            }
        }
    }
    out
}

/// Validate a target on its own.
pub fn validate_target(t: &Target) -> Vec<Problem> {
    let mut out = Vec::new();
    if t.spec.nodes.is_empty() {
        out.push(Problem::at(
            &t.metadata.name,
            "the target has no nodes",
            Some("add at least one entry under spec.nodes"),
        ));
    }
    let mut names = BTreeSet::new();
    for n in &t.spec.nodes {
        match (&n.container, n.selector.is_empty()) {
            (None, true) if t.spec.driver == crate::target::DriverKind::Docker => {
                let at = n.name.clone().unwrap_or_else(|| t.metadata.name.clone());
                out.push(Problem::at(
                    &at,
                    "node has neither `container` nor `selector`",
                    Some("name the container, or select containers by labels"),
                ));
            }
            (Some(c), false) => out.push(Problem::at(
                c,
                "node has both `container` and `selector`",
                Some("keep one of them"),
            )),
            _ => {}
        }
        if let Some(name) = n.name.as_ref().or(n.container.as_ref()) {
            if !names.insert(name.value.clone()) {
                out.push(Problem::at(
                    name,
                    format!("duplicate node name `{}`", name.value),
                    None,
                ));
            }
        }
    }
    let mut vs = BTreeSet::new();
    for v in &t.spec.vantage_points {
        if !vs.insert(v.name.value.clone()) {
            out.push(Problem::at(
                &v.name,
                format!("duplicate vantage point `{}`", v.name.value),
                None,
            ));
        }
    }
    out
}

/// The one validation of a workflow's structure, every problem once, at its own place: the
/// name, step ids, `needs` (unknown, itself, cycles, in rollback steps), durations, retry,
/// `concurrency`, input defaults, and sub-workflow calls (the workflow exists, its inputs are
/// known, literal values have the declared types, required inputs are given).
///
/// What needs the executors (unknown `uses`, their arguments, templates) is checked by the
/// engine (`vacsine_engine::validate_workflow`), which runs this first.
pub fn validate_workflow_structure(w: &Workflow, catalog: &CatalogIndex<'_>) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Err(e) = check_workflow_name(&w.metadata.name) {
        out.push(Problem::at(
            &w.metadata.name,
            e,
            Some("rename it in metadata.name (and where it is called as a sub-workflow)"),
        ));
    }
    if w.spec.steps.is_empty() {
        out.push(Problem::at(
            &w.metadata.name,
            "the workflow has no steps",
            Some("add at least one entry under spec.steps"),
        ));
    }
    if w.spec.concurrency == Some(0) {
        out.push(Problem::at(
            &w.metadata.name,
            "`concurrency` must be at least 1",
            None,
        ));
    }
    for (name, spec) in &w.spec.inputs {
        if let Some(d) = &spec.default {
            if let Err(e) = spec.check(d) {
                let at = if d.line > 0 {
                    d.clone()
                } else {
                    Loc::at(d.value.clone(), spec.name.line, spec.name.column)
                };
                out.push(Problem::at(
                    &at,
                    format!("default of input `{name}`: {e}"),
                    Some("give a default of the declared type, or change `type`"),
                ));
            }
        }
    }
    for (rollback, steps) in [(false, &w.spec.steps), (true, &w.spec.rollback)] {
        let what = if rollback { "rollback step" } else { "step" };
        let mut ids = BTreeSet::new();
        for s in steps {
            if !ids.insert(s.id.value.as_str()) {
                out.push(Problem::at(
                    &s.id,
                    format!("duplicate {what} id `{}`", s.id.value),
                    Some("step ids must be unique within steps and within rollback"),
                ));
            }
            if s.id.value.is_empty()
                || !s
                    .id
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                out.push(Problem::at(&s.id, format!("invalid step id `{}`", s.id.value), Some("use letters, digits, `-` and `_` (ids are template variables: steps.<id>.outputs)")));
            }
        }
        for s in steps {
            step_structure(w, s, rollback, &ids, catalog, &mut out);
        }
    }
    // A step that needs itself is reported above, not again as a cycle.
    let without_self: Vec<Step> = w
        .spec
        .steps
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let id = s.id.value.clone();
            s.needs.retain(|n| n.value != id);
            s
        })
        .collect();
    if let Err(cycle) = dag::topo_order(&without_self) {
        let first = w.spec.steps.iter().find(|s| cycle.contains(&s.id.value));
        let msg = format!("`needs` forms a cycle between steps: {}", cycle.join(" → "));
        let help = Some("remove one of the `needs` in the cycle");
        match first {
            Some(s) => out.push(Problem::at(&s.id, msg, help)),
            None => out.push(Problem::at(&w.metadata.name, msg, help)),
        }
    }
    out
}

fn names<'x>(it: impl IntoIterator<Item = &'x str>) -> String {
    let v: Vec<&str> = it.into_iter().collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn step_structure(
    w: &Workflow,
    s: &Step,
    rollback: bool,
    ids: &BTreeSet<&str>,
    catalog: &CatalogIndex<'_>,
    out: &mut Vec<Problem>,
) {
    let sid = &s.id.value;
    if rollback {
        if let Some(n) = s.needs.first() {
            out.push(Problem::at(
                n,
                format!("rollback step `{sid}`: `needs` has no effect in rollback steps (they run in reverse declaration order)"),
                Some("remove `needs`"),
            ));
        }
    } else {
        for n in &s.needs {
            if n.value == *sid {
                out.push(Problem::at(
                    n,
                    format!("step `{sid}` needs itself"),
                    Some("remove it from `needs`"),
                ));
            } else if !ids.contains(n.value.as_str()) {
                out.push(Problem::at(
                    n,
                    format!("step `{sid}` needs unknown step `{}`", n.value),
                    Some(&format!("steps: {}", names(ids.iter().copied()))),
                ));
            }
        }
    }
    if let Some(t) = &s.timeout {
        if let Err(e) = parse_duration(t) {
            out.push(Problem::at(
                t,
                format!("step `{sid}`: `timeout`: {e}"),
                None,
            ));
        }
    }
    if let Some(r) = &s.retry {
        if r.attempts == 0 {
            out.push(Problem::at(
                &s.id,
                format!("step `{sid}`: `retry.attempts` must be at least 1"),
                None,
            ));
        }
        if let Err(e) = parse_duration(&r.backoff) {
            out.push(Problem::at(
                &s.id,
                format!("step `{sid}`: `retry.backoff`: {e}"),
                None,
            ));
        }
    }
    if s.uses.value == WORKFLOW_STEP {
        subworkflow(w, s, catalog, out);
    }
}

/// Executor name of a step that runs a sub-workflow.
pub const WORKFLOW_STEP: &str = "workflow";

fn is_templated(v: &serde_json::Value) -> bool {
    v.as_str()
        .is_some_and(|t| t.contains("{{") || t.contains("{%") || t.contains("{#"))
}

fn subworkflow(w: &Workflow, s: &Step, catalog: &CatalogIndex<'_>, out: &mut Vec<Problem>) {
    let sid = &s.id.value;
    let mut push = |m: String, h: Option<String>| {
        out.push(Problem::at(
            &s.uses,
            format!("step `{sid}`: {m}"),
            h.as_deref(),
        ))
    };
    for k in s.with.keys() {
        if k != "workflow" && k != "inputs" {
            push(
                format!("invalid `with` for `workflow`: unknown field `{k}`"),
                Some("a `workflow` step takes `workflow` and `inputs`".into()),
            );
        }
    }
    let name = match s.with.get("workflow") {
        Some(v) if is_templated(v) => return,
        Some(serde_json::Value::String(n)) => n,
        _ => {
            push(
                "`with.workflow` must name a catalog workflow".into(),
                Some("with: {workflow: <name>, inputs: {...}}".into()),
            );
            return;
        }
    };
    if *name == w.metadata.name.value {
        push(format!("workflow `{name}` calls itself"), None);
        return;
    }
    let Some(sub) = catalog.get(name) else {
        push(
            format!("workflow `{name}` is not in the catalog"),
            Some(format!(
                "catalog: {}",
                names(catalog.keys().map(String::as_str))
            )),
        );
        return;
    };
    let empty = serde_json::Map::new();
    let given = match s.with.get("inputs") {
        None => &empty,
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => {
            push("`with.inputs` must be a mapping".into(), None);
            return;
        }
    };
    // Templated values are only known at run time: check names, and literal values.
    for (k, v) in given {
        // A deprecated name is the input it was renamed to (mapped again at run time).
        let k = crate::workflow::canonical_input(&sub.spec.inputs, k).map_or(k.as_str(), |c| c.0);
        match sub.spec.inputs.get(k) {
            None => push(
                format!("workflow `{name}` has no input `{k}`"),
                Some(format!(
                    "its inputs: {}",
                    names(sub.spec.inputs.keys().map(String::as_str))
                )),
            ),
            Some(spec) if !is_templated(v) => {
                if let Err(m) = spec.check(v) {
                    push(format!("input `{k}` of workflow `{name}`: {m}"), None);
                }
            }
            Some(_) => {}
        }
    }
    for (k, spec) in &sub.spec.inputs {
        if !given.contains_key(k) && spec.is_required() {
            push(
                format!(
                    "workflow `{name}` requires input `{k}` ({})",
                    spec.ty.as_str()
                ),
                Some("add it under `with.inputs`".into()),
            );
        }
    }
}
