//! Static checks of a workflow, before anything runs. Pure: no node, no journal.
//!
//! One validator: the structure (names, ids, `needs`, durations, input defaults, sub-workflow
//! calls) is checked by `vacsine_core::validate::validate_workflow_structure`; this module adds
//! what needs the executors (unknown `uses`, their arguments, templates and the variables they
//! use), so that each problem is reported once, at its own line.

use crate::engine::Catalog;
use crate::executor::{Registry, WORKFLOW_EXECUTOR};
use crate::template;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use vacsine_core::doc::{LoadError, Loc, SourceFile};
use vacsine_core::validate::{validate_workflow_structure, CatalogIndex, Problem};
use vacsine_core::workflow::{InputType, RunsOn, Step, Workflow};

/// One problem found in a workflow, located at the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkflowProblem {
    pub step: Option<String>,
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub help: Option<String>,
}

impl From<Problem> for WorkflowProblem {
    fn from(p: Problem) -> Self {
        WorkflowProblem {
            step: None,
            line: p.line,
            column: p.column,
            message: p.message,
            help: p.help,
        }
    }
}

impl WorkflowProblem {
    /// The problem as a diagnostic located in the workflow's file.
    pub fn into_error(self, source: &SourceFile) -> LoadError {
        let message = match &self.step {
            Some(s) if !self.message.contains(&format!("`{s}`")) => {
                format!("step `{s}`: {}", self.message)
            }
            _ => self.message,
        };
        LoadError::at(source, self.line, self.column, message, self.help)
    }
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
    registry: &'a Registry,
    problems: Vec<WorkflowProblem>,
    ids: BTreeSet<&'a str>,
    /// `needs` of each main step.
    needs: BTreeMap<&'a str, Vec<&'a str>>,
    /// Position of each main step in a topological order (None: the steps have a cycle).
    order: Option<BTreeMap<&'a str, usize>>,
}

impl<'a> Checker<'a> {
    /// Whether step `s` needs step `a`, directly or through other steps. Answered per
    /// reference (a direct need at once, otherwise a walk that skips steps ordered before
    /// `a`), so long chains cost neither quadratic time nor quadratic memory.
    fn depends_on(&self, s: &str, a: &str) -> bool {
        let Some(order) = &self.order else {
            return true;
        };
        let Some(&target) = order.get(a) else {
            return false;
        };
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut stack: Vec<&str> = vec![s];
        while let Some(n) = stack.pop() {
            for &d in self.needs.get(n).into_iter().flatten() {
                if d == a {
                    return true;
                }
                // A step ordered before `a` cannot depend on `a`.
                if order.get(d).is_some_and(|&p| p > target) && seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        false
    }

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
                    Some(id) if !rollback && !self.depends_on(s.id.as_str(), id) =>
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
        let exec = self.registry.get(&s.uses).cloned();
        if exec.is_none() && s.uses.value != WORKFLOW_EXECUTOR {
            self.push(
                sid,
                &s.uses,
                format!("unknown executor `{}`", s.uses.value),
                Some(format!("executors: {}", self.registry.names().join(", "))),
            );
        }
        if let Some(c) = &s.condition {
            let expr = template::sole_expression(c).unwrap_or(c);
            match template::expression_variables(expr) {
                Ok(v) => self.vars(s, c, "`if`", v, rollback, false),
                Err(e) => self.push(sid, c, format!("`if`: expression error: {e}"), Some("write a Jinja expression without braces, e.g. `inputs.enabled and steps.a.status == 'succeeded'`".into())),
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
        if let Some(e) = &exec {
            let args = Value::Object(s.with.clone().into_iter().collect());
            if let Err(m) = e.check_args(&args) {
                self.push(sid, &s.uses, m, None);
            } else {
                // Inputs used whole (`"{{ inputs.x }}"`) have a declared type: check the
                // arguments again with a value of that type in their place.
                let typed: serde_json::Map<String, Value> = s
                    .with
                    .iter()
                    .map(|(k, v)| {
                        let v = if literal.contains(&k.as_str()) {
                            v.clone()
                        } else {
                            self.typed_sample(v)
                        };
                        (k.clone(), v)
                    })
                    .collect();
                let typed = Value::Object(typed);
                if typed != args {
                    if let Err(m) = e.check_args(&typed) {
                        if m.contains("invalid type") {
                            self.push(
                                sid,
                                &s.uses,
                                format!("{m} (with the declared types of the inputs used)"),
                                Some("a whole `{{ inputs.x }}` keeps the input's type: pass a scalar where one argument is expected, or change the input's type".into()),
                            );
                        }
                    }
                }
            }
        }
        for (k, tpl) in &s.outputs {
            self.template(s, &s.id, &format!("output `{k}`"), tpl, rollback, true);
        }
    }

    /// `v` with every whole `{{ inputs.x }}` replaced by a value of the input's declared type
    /// (its default when it has one).
    fn typed_sample(&self, v: &Value) -> Value {
        match v {
            Value::String(t) => {
                let Some(name) = template::sole_expression(t)
                    .and_then(|e| e.strip_prefix("inputs."))
                    .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                else {
                    return v.clone();
                };
                let Some(spec) = self.w.spec.inputs.get(name) else {
                    return v.clone();
                };
                if let Some(d) = spec.default.as_ref().and_then(|d| spec.check(d).ok()) {
                    return d;
                }
                match spec.ty {
                    InputType::String => Value::from("x"),
                    InputType::Integer | InputType::Port => Value::from(1),
                    InputType::Number => Value::from(1.5),
                    InputType::Boolean => Value::Bool(true),
                    InputType::Array => Value::Array(vec![]),
                    InputType::Object => Value::Object(Default::default()),
                    InputType::Ip => Value::from("192.0.2.1"),
                    InputType::Cidr => Value::from("192.0.2.0/24"),
                }
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.typed_sample(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), self.typed_sample(x)))
                    .collect(),
            ),
            other => other.clone(),
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
    let index: CatalogIndex<'_> = catalog
        .names()
        .filter_map(|n| Some((n.to_string(), catalog.get(n)?)))
        .collect();
    let steps = &w.spec.steps;
    let mut c = Checker {
        w,
        registry,
        problems: validate_workflow_structure(w, &index)
            .into_iter()
            .map(WorkflowProblem::from)
            .collect(),
        ids: steps.iter().map(|s| s.id.as_str()).collect(),
        needs: steps
            .iter()
            .map(|s| (s.id.as_str(), s.needs.iter().map(|n| n.as_str()).collect()))
            .collect(),
        order: None,
    };
    // Without an order (a cycle, reported above), any reference between steps is accepted.
    if let Ok(order) = vacsine_core::dag::topo_order(steps) {
        let pos = order
            .iter()
            .enumerate()
            .filter_map(|(i, id)| c.ids.get(id.as_str()).map(|id| (*id, i)))
            .collect();
        c.order = Some(pos);
    }
    for s in steps {
        c.step(s, false);
    }
    for s in &w.spec.rollback {
        c.step(s, true);
    }
    c.problems.extend(crate::triggers::problems(w));
    c.problems
}

/// The ruleset one `firewall` step loads when its workflow runs with given inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallRuleset {
    /// The workflow the step belongs to (`parent > child` for a sub-workflow's step).
    pub workflow: String,
    /// The name of the workflow whose file holds the step (the last of `workflow`).
    pub defined_in: String,
    pub step: String,
    /// Where the step's `uses` is in its workflow's file.
    pub line: u64,
    pub column: u64,
    /// The nft script, or why the step's arguments make none (the step would fail).
    pub script: Result<String, String>,
}

/// How deep [`firewall_rulesets`] follows sub-workflow calls.
const MAX_SUBWORKFLOW_DEPTH: usize = 8;

/// The rulesets the `firewall` steps of `w` (and of the catalog workflows it calls) load when
/// it runs with `inputs` (checked against its declared inputs, defaults filled in), rendered
/// as the engine renders them. Only what the inputs decide is rendered: a step whose `if` or
/// arguments use anything else (earlier steps, the node, secrets, event data) is left out,
/// as is a step whose `if` is false. Inputs the workflow refuses give nothing (the run would
/// stop before any step); no inputs at all render the steps that need none. Pure: nft is not called (see [`crate::executor::nft_check`]).
pub fn firewall_rulesets(
    w: &Workflow,
    inputs: &serde_json::Map<String, Value>,
    catalog: &Catalog,
) -> Vec<FirewallRuleset> {
    let mut out = Vec::new();
    rulesets_into(w, &w.metadata.name.value, inputs, catalog, 0, &mut out);
    out
}

fn rulesets_into(
    w: &Workflow,
    path: &str,
    inputs: &serde_json::Map<String, Value>,
    catalog: &Catalog,
    depth: usize,
    out: &mut Vec<FirewallRuleset>,
) {
    let inputs = match vacsine_core::workflow::coerce_inputs(&w.spec.inputs, inputs) {
        Ok(i) => i,
        // No inputs given: what needs none (literal steps) is still rendered.
        Err(_) if inputs.is_empty() => Default::default(),
        Err(_) => return,
    };
    let ctx = serde_json::json!({ "inputs": inputs });
    for s in w.spec.steps.iter().chain(&w.spec.rollback) {
        if let Some(c) = &s.condition {
            match template::eval_condition(c, &ctx) {
                Ok(true) => {}
                // False, or decided by something other than the inputs.
                _ => continue,
            }
        }
        let args = Value::Object(s.with.clone().into_iter().collect());
        if s.uses.value == "firewall" {
            let Ok(rendered) = template::render_value(&args, &ctx) else {
                continue;
            };
            out.push(FirewallRuleset {
                workflow: path.to_string(),
                defined_in: w.metadata.name.value.clone(),
                step: s.id.value.clone(),
                line: s.uses.line,
                column: s.uses.column,
                script: crate::executor::rendered_ruleset(rendered),
            });
        } else if s.uses.value == WORKFLOW_EXECUTOR && depth < MAX_SUBWORKFLOW_DEPTH {
            let Ok(rendered) = template::render_value(&args, &ctx) else {
                continue;
            };
            let name = rendered.get("workflow").and_then(Value::as_str);
            let Some(sub) = name.and_then(|n| catalog.get(n)) else {
                continue;
            };
            let sub_inputs = match rendered.get("inputs") {
                Some(Value::Object(m)) => m.clone(),
                None => Default::default(),
                Some(_) => continue,
            };
            let sub_path = format!("{path} > {}", sub.metadata.name.value);
            rulesets_into(sub, &sub_path, &sub_inputs, catalog, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod ruleset_tests {
    use super::*;
    use crate::executor::{nft_check, NftCheck};

    fn workflow(yaml: &str) -> Workflow {
        let src = vacsine_core::doc::SourceFile::new("w.yaml", yaml);
        vacsine_core::doc::parse_as::<Workflow>(&src).unwrap()
    }

    const DENY: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata: {name: deny}
spec:
  inputs:
    allow_tcp: {type: array}
    verdict: {type: string, default: accept}
  steps:
    - id: policy
      if: inputs.allow_tcp | length > 0
      uses: firewall
      with:
        table: t
        chains: [{name: input, hook: input, priority: 0, policy: drop}]
        rules:
          - {chain: input, rule: "tcp dport { {{ inputs.allow_tcp | join(', ') }} } {{ inputs.verdict }}"}
    - id: deny-all
      if: inputs.allow_tcp | length == 0
      uses: firewall
      with:
        table: t
        chains: [{name: input, hook: input, priority: 0, policy: drop}]
    - id: later
      needs: [policy]
      if: steps.policy.changed
      uses: firewall
      with: {table: t2}
    - id: on-node
      uses: firewall
      with: {table: "t_{{ node.name }}"}
"#;

    fn inputs(v: serde_json::Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// Only what the inputs decide is rendered: the `if` picks the variant, a step that
    /// depends on another step or on the node is left out.
    #[test]
    fn renders_the_steps_the_inputs_decide() {
        let w = workflow(DENY);
        let cat = Catalog::new();
        let r = firewall_rulesets(
            &w,
            &inputs(serde_json::json!({"allow_tcp": [22, 80]})),
            &cat,
        );
        assert_eq!(r.len(), 1, "{r:#?}");
        assert_eq!(
            (r[0].step.as_str(), r[0].defined_in.as_str()),
            ("policy", "deny")
        );
        let s = r[0].script.as_ref().unwrap();
        assert!(
            s.ends_with("add rule inet t input tcp dport { 22, 80 } accept\n"),
            "{s}"
        );
        assert_eq!(r[0].line, 11);
        let r = firewall_rulesets(&w, &inputs(serde_json::json!({"allow_tcp": []})), &cat);
        assert_eq!(
            r.iter().map(|x| x.step.as_str()).collect::<Vec<_>>(),
            vec!["deny-all"]
        );
        // Inputs the workflow refuses: nothing (the run would stop first).
        let r = firewall_rulesets(&w, &inputs(serde_json::json!({"allow_tcp": "22"})), &cat);
        assert!(r.is_empty(), "{r:#?}");
        // A sub-workflow call is followed with its rendered inputs.
        let parent = workflow(
            "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata: {name: parent}\nspec:\n  inputs:\n    port: {type: port}\n  steps:\n    - id: call\n      uses: workflow\n      with: {workflow: deny, inputs: {allow_tcp: [\"{{ inputs.port }}\"], verdict: drop}}\n",
        );
        let mut cat = Catalog::new();
        cat.insert(w.clone());
        let r = firewall_rulesets(&parent, &inputs(serde_json::json!({"port": 443})), &cat);
        assert_eq!(r.len(), 1, "{r:#?}");
        assert_eq!(r[0].workflow, "parent > deny");
        assert!(r[0]
            .script
            .as_ref()
            .unwrap()
            .contains("tcp dport { 443 } drop"));
    }

    /// `nft -c` in a throw-away network namespace: a ruleset that cannot load is refused with
    /// nft's message; a good one passes; the host's ruleset is untouched either way.
    #[tokio::test]
    async fn nft_dry_run_refuses_what_cannot_load() {
        let w = workflow(DENY);
        let cat = Catalog::new();
        let bad = firewall_rulesets(
            &w,
            &inputs(serde_json::json!({"allow_tcp": [22], "verdict": "frobnicate"})),
            &cat,
        );
        let good = firewall_rulesets(&w, &inputs(serde_json::json!({"allow_tcp": [22]})), &cat);
        let tables = || async {
            use vacsine_core::node::NodeOps;
            let argv: Vec<String> = ["nft", "list", "tables"].map(String::from).to_vec();
            let o = crate::LocalNode::new("h")
                .exec(&argv, &[], None, std::time::Duration::from_secs(10))
                .await
                .unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let host_before = tables().await;
        match nft_check(bad[0].script.as_ref().unwrap()).await {
            NftCheck::Rejected(m) => {
                assert!(m.contains("frobnicate") && m.contains("Error"), "{m}")
            }
            NftCheck::Unchecked(why) | NftCheck::Unavailable(why) => {
                eprintln!("skipping: {why}");
                return;
            }
            NftCheck::Loads => panic!("an invalid ruleset passed"),
        }
        assert_eq!(
            nft_check(good[0].script.as_ref().unwrap()).await,
            NftCheck::Loads
        );
        assert_eq!(tables().await, host_before, "the host's tables changed");
        assert!(!host_before.contains("table inet t\n"), "{host_before}");
    }
}
