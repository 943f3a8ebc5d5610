//! Static checks of a workflow, before anything runs. Pure: no node, no journal.

use crate::engine::Catalog;
use crate::executor::{Registry, WORKFLOW_EXECUTOR};
use crate::inputs::coerce_inputs;
use crate::template;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use vacsine_core::doc::Loc;
use vacsine_core::workflow::{parse_duration, RunsOn, Step, Workflow};

/// One problem found in a workflow, located at the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkflowProblem {
    pub step: Option<String>,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub help: Option<String>,
}

impl std::fmt::Display for WorkflowProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        }
        if let Some(s) = &self.step {
            write!(f, "step `{s}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.help {
            write!(f, " (help: {h})")?;
        }
        Ok(())
    }
}

pub(crate) fn format_problems(p: &[WorkflowProblem]) -> String {
    p.iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every statically detectable problem of `w`.
pub fn validate_workflow(w: &Workflow, catalog: &Catalog) -> Vec<WorkflowProblem> {
    validate_with(w, catalog, &Registry::default())
}

const ROOTS: &[&str] = &["inputs", "steps", "node", "target", "event", "secrets"];
const GLOBALS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "lipsum",
    "cycler",
    "joiner",
    "debug",
];
const STEP_FIELDS: &[&str] = &["status", "outputs", "changed", "nodes"];

struct Checker<'a> {
    w: &'a Workflow,
    catalog: &'a Catalog,
    registry: &'a Registry,
    problems: Vec<WorkflowProblem>,
    ids: BTreeSet<&'a str>,
    /// Transitive dependencies of each main step.
    ancestors: BTreeMap<&'a str, BTreeSet<&'a str>>,
}

impl<'a> Checker<'a> {
    fn push<T>(&mut self, step: Option<&str>, at: &Loc<T>, message: String, help: Option<String>) {
        self.problems.push(WorkflowProblem {
            step: step.map(str::to_string),
            line: at.line,
            column: at.column,
            message,
            help,
        });
    }

    /// Check the free variables of a template or expression.
    fn vars(
        &mut self,
        s: &Step,
        at: &Loc<String>,
        what: &str,
        vars: Vec<String>,
        rollback: bool,
        result_ok: bool,
    ) {
        for v in vars {
            let parts: Vec<&str> = v.split('.').collect();
            let root = parts[0];
            let msg = match root {
                "inputs" => parts.get(1).and_then(|name| {
                    (!self.w.spec.inputs.contains_key(*name)).then(|| {
                        (
                            format!("{what} uses `inputs.{name}`, which is not a declared input"),
                            Some(format!(
                                "declare it under `spec.inputs` (declared: {})",
                                names(self.w.spec.inputs.keys())
                            )),
                        )
                    })
                }),
                "secrets" => parts.get(1).and_then(|name| {
                    (!self.w.spec.secrets.contains_key(*name)).then(|| {
                        (
                            format!("{what} uses `secrets.{name}`, which is not a declared secret"),
                            Some(format!(
                                "declare it under `spec.secrets` (declared: {})",
                                names(self.w.spec.secrets.keys())
                            )),
                        )
                    })
                }),
                "steps" => match parts.get(1) {
                    None => None,
                    Some(id) if !self.ids.contains(id) => Some((
                        format!("{what} uses `steps.{id}`, but there is no step `{id}`"),
                        Some(format!("steps: {}", names(self.ids.iter()))),
                    )),
                    Some(id) if *id == s.id.as_str() && !rollback => Some((
                        format!("{what} refers to its own step `{id}`"),
                        Some("use `result` in `outputs` to read this step's result".into()),
                    )),
                    Some(id)
                        if !rollback
                            && !self
                                .ancestors
                                .get(s.id.as_str())
                                .is_some_and(|a| a.contains(id)) =>
                    {
                        Some((
                            format!("{what} uses `steps.{id}`, but step `{}` does not need `{id}` (directly or indirectly), so it may not have run yet", s.id.value),
                            Some(format!("add `{id}` to `needs`")),
                        ))
                    }
                    Some(_) => parts.get(2).and_then(|f| {
                        (!STEP_FIELDS.contains(f)).then(|| {
                            (
                                format!("{what} uses `{v}`: a step has no field `{f}`"),
                                Some(format!("fields: {}", STEP_FIELDS.join(", "))),
                            )
                        })
                    }),
                },
                "result" if result_ok => None,
                r if ROOTS.contains(&r) || GLOBALS.contains(&r) => None,
                r => Some((
                    format!("{what} uses `{r}`, which is not defined"),
                    Some(format!(
                        "available: {}{}",
                        ROOTS.join(", "),
                        if result_ok { ", result" } else { "" }
                    )),
                )),
            };
            if let Some((m, h)) = msg {
                self.push(Some(&s.id), at, m, h);
            }
        }
    }

    fn template(
        &mut self,
        s: &Step,
        at: &Loc<String>,
        what: &str,
        text: &str,
        rollback: bool,
        result_ok: bool,
    ) {
        if !template::is_templated(text) {
            return;
        }
        match template::template_variables(text) {
            Ok(v) => self.vars(s, at, what, v, rollback, result_ok),
            Err(e) => self.push(
                Some(&s.id),
                at,
                format!("{what}: template error: {e}"),
                None,
            ),
        }
    }

    fn value(&mut self, s: &Step, at: &Loc<String>, what: &str, v: &Value, rollback: bool) {
        match v {
            Value::String(t) => self.template(s, at, what, t, rollback, false),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    self.value(s, at, &format!("{what}[{i}]"), x, rollback);
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    self.value(s, at, &format!("{what}.{k}"), x, rollback);
                }
            }
            _ => {}
        }
    }

    fn step(&mut self, s: &'a Step, rollback: bool) {
        let sid = Some(s.id.as_str());
        if s.id.is_empty()
            || !s
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.push(sid, &s.id, format!("invalid step id `{}`", s.id.value), Some("use letters, digits, `_` and `-` (`_` keeps it usable as `steps.<id>` in templates)".into()));
        }
        let exec = self.registry.get(&s.uses).cloned();
        if exec.is_none() && s.uses.value != WORKFLOW_EXECUTOR {
            self.push(
                sid,
                &s.uses,
                format!("unknown executor `{}`", s.uses.value),
                Some(format!("executors: {}", self.registry.names().join(", "))),
            );
        }
        if rollback && !s.needs.is_empty() {
            self.push(
                sid,
                &s.needs[0],
                "`needs` has no effect in rollback steps (they run in reverse declaration order)"
                    .into(),
                Some("remove `needs`".into()),
            );
        }
        if !rollback {
            for n in &s.needs {
                if !self.ids.contains(n.as_str()) {
                    self.push(
                        sid,
                        n,
                        format!("needs unknown step `{}`", n.value),
                        Some(format!("steps: {}", names(self.ids.iter()))),
                    );
                } else if n.value == s.id.value {
                    self.push(sid, n, "a step cannot need itself".into(), None);
                }
            }
        }
        if let Some(c) = &s.condition {
            let expr = template::sole_expression(c).unwrap_or(c);
            match template::expression_variables(expr) {
                Ok(v) => self.vars(s, c, "`if`", v, rollback, false),
                Err(e) => self.push(sid, c, format!("`if`: expression error: {e}"), Some("write a Jinja expression without braces, e.g. `inputs.enabled and steps.a.status == 'succeeded'`".into())),
            }
        }
        if let Some(t) = &s.timeout {
            if let Err(e) = parse_duration(t) {
                self.push(sid, t, e, None);
            }
        }
        if let Some(r) = &s.retry {
            if r.attempts == 0 {
                self.push(
                    sid,
                    &s.id,
                    "`retry.attempts` must be at least 1".into(),
                    None,
                );
            }
            if let Err(e) = parse_duration(&r.backoff) {
                self.push(sid, &s.id, format!("`retry.backoff`: {e}"), None);
            }
        }
        if let Some(RunsOn::Node(n)) = &s.runs_on {
            let at = s.id.clone();
            self.template(s, &at, "`runsOn`", n, rollback, false);
        }
        let literal: &[&str] = exec.as_ref().map(|e| e.literal_args()).unwrap_or(&[]);
        for (k, v) in &s.with {
            if !literal.contains(&k.as_str()) {
                self.value(s, &s.uses, &format!("`with.{k}`"), v, rollback);
            }
        }
        let args = Value::Object(s.with.clone().into_iter().collect());
        if let Some(e) = &exec {
            if let Err(m) = e.check_args(&args) {
                self.push(sid, &s.uses, m, None);
            }
        }
        if s.uses.value == WORKFLOW_EXECUTOR {
            self.subworkflow(s, &args);
        }
        for (k, tpl) in &s.outputs {
            self.template(s, &s.id, &format!("output `{k}`"), tpl, rollback, true);
        }
    }

    fn subworkflow(&mut self, s: &Step, args: &Value) {
        let sid = Some(s.id.as_str());
        let Some(obj) = args.as_object() else { return };
        for k in obj.keys() {
            if k != "workflow" && k != "inputs" {
                self.push(sid, &s.uses, format!("invalid `with` for `workflow`: unknown field `{k}`, expected `workflow` or `inputs`"), None);
            }
        }
        let name = match obj.get("workflow") {
            Some(Value::String(n)) if !template::is_templated(n) => n,
            Some(Value::String(_)) => return,
            _ => {
                self.push(
                    sid,
                    &s.uses,
                    "`with.workflow` must name a catalog workflow".into(),
                    None,
                );
                return;
            }
        };
        if name == &self.w.metadata.name.value {
            self.push(
                sid,
                &s.uses,
                format!("workflow `{name}` calls itself"),
                None,
            );
            return;
        }
        let Some(sub) = self.catalog.get(name) else {
            self.push(
                sid,
                &s.uses,
                format!("workflow `{name}` is not in the catalog"),
                Some(format!("catalog: {}", names(self.catalog.names()))),
            );
            return;
        };
        let given = match obj.get("inputs") {
            None => serde_json::Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                self.push(sid, &s.uses, "`with.inputs` must be a mapping".into(), None);
                return;
            }
        };
        // Templated values are only known at run time: check names, and literal values' types.
        let mut literal = serde_json::Map::new();
        for (k, v) in &given {
            let templated = matches!(v, Value::String(t) if template::is_templated(t));
            match sub.spec.inputs.get(k) {
                None => self.push(
                    sid,
                    &s.uses,
                    format!("workflow `{name}` has no input `{k}`"),
                    Some(format!("its inputs: {}", names(sub.spec.inputs.keys()))),
                ),
                Some(spec) if !templated => {
                    if let Err(m) = spec.ty.coerce(v) {
                        self.push(
                            sid,
                            &s.uses,
                            format!("input `{k}` of workflow `{name}`: {m}"),
                            None,
                        );
                    } else {
                        literal.insert(k.clone(), v.clone());
                    }
                }
                Some(_) => {
                    literal.insert(k.clone(), Value::Null);
                }
            }
        }
        for (k, spec) in &sub.spec.inputs {
            if !given.contains_key(k) && spec.default.is_none() && spec.required.unwrap_or(true) {
                self.push(
                    sid,
                    &s.uses,
                    format!(
                        "workflow `{name}` requires input `{k}` ({})",
                        spec.ty.as_str()
                    ),
                    None,
                );
            }
        }
        // Enum checks of literal values.
        let decl: BTreeMap<_, _> = sub
            .spec
            .inputs
            .iter()
            .filter(|(k, _)| matches!(literal.get(*k), Some(v) if !v.is_null()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let lit: serde_json::Map<String, Value> =
            literal.into_iter().filter(|(_, v)| !v.is_null()).collect();
        if let Err((k, m)) = coerce_inputs(&decl, &lit) {
            self.push(
                sid,
                &s.uses,
                format!("input `{k}` of workflow `{name}`: {m}"),
                None,
            );
        }
    }
}

fn names<'x, I: IntoIterator<Item = S>, S: AsRef<str> + 'x>(it: I) -> String {
    let v: Vec<String> = it.into_iter().map(|s| s.as_ref().to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

pub(crate) fn validate_with(
    w: &Workflow,
    catalog: &Catalog,
    registry: &Registry,
) -> Vec<WorkflowProblem> {
    let steps = &w.spec.steps;
    let mut c = Checker {
        w,
        catalog,
        registry,
        problems: Vec::new(),
        ids: steps.iter().map(|s| s.id.as_str()).collect(),
        ancestors: BTreeMap::new(),
    };
    if steps.is_empty() {
        c.push(
            None,
            &w.metadata.name,
            "the workflow has no steps".into(),
            None,
        );
    }
    if w.spec.concurrency == Some(0) {
        c.push(
            None,
            &w.metadata.name,
            "`concurrency` must be at least 1".into(),
            None,
        );
    }
    for (list, what) in [(&w.spec.steps, "step"), (&w.spec.rollback, "rollback step")] {
        let mut seen = BTreeSet::new();
        for s in list {
            if !seen.insert(s.id.as_str()) {
                c.push(
                    Some(&s.id),
                    &s.id,
                    format!("duplicate {what} id `{}`", s.id.value),
                    None,
                );
            }
        }
    }
    for (name, spec) in &w.spec.inputs {
        if let Some(d) = &spec.default {
            if let Err(m) = spec.ty.coerce(d) {
                c.push(
                    None,
                    &w.metadata.name,
                    format!("default of input `{name}`: {m}"),
                    None,
                );
            }
        }
    }
    match vacsine_core::dag::topo_order(steps) {
        Ok(_) => {
            // Transitive dependencies.
            let by_id: BTreeMap<&str, &Step> = steps.iter().map(|s| (s.id.as_str(), s)).collect();
            for s in steps {
                let mut seen = BTreeSet::new();
                let mut stack: Vec<&str> = s.needs.iter().map(|n| n.as_str()).collect();
                while let Some(n) = stack.pop() {
                    if seen.insert(n) {
                        if let Some(d) = by_id.get(n) {
                            stack.extend(d.needs.iter().map(|x| x.as_str()));
                        }
                    }
                }
                c.ancestors.insert(s.id.as_str(), seen);
            }
        }
        Err(cycle) => {
            let first = steps.iter().find(|s| cycle.contains(&s.id.value));
            let at = first.map(|s| s.id.clone()).unwrap_or_default();
            c.push(
                first.map(|s| s.id.as_str()),
                &at,
                format!("steps form a cycle through `needs`: {}", cycle.join(" → ")),
                Some("remove one of the `needs` in the cycle".into()),
            );
            // Without an order, accept any reference between steps.
            let all: BTreeSet<&str> = c.ids.clone();
            for s in steps {
                c.ancestors.insert(s.id.as_str(), all.clone());
            }
        }
    }
    for s in steps {
        c.step(s, false);
    }
    for s in &w.spec.rollback {
        c.step(s, true);
    }
    c.problems
}
