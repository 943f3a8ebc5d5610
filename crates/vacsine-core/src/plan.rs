//! Remediation planning: failed requirements → fixes from the catalog (least disruptive
//! first) → one workflow DAG. Pure.

use crate::doc::Loc;
use crate::outcome::Outcome;
use crate::policy::{Check, Disruption, Fix, Policy, RequirementKind, Strategy};
use crate::target::ResolvedNode;
use crate::validate::CatalogIndex;
use crate::workflow::{RunsOn, Step, Workflow, WorkflowSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A requirement's outcome on one node, as checked before planning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub requirement: String,
    pub node: String,
    pub outcome: Outcome,
}

/// One fix the plan applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanItem {
    pub step: String,
    pub requirements: Vec<String>,
    pub node: String,
    pub workflow: String,
    pub inputs: serde_json::Map<String, serde_json::Value>,
    pub strategy: Strategy,
    pub disruption: Disruption,
    pub reboot: bool,
}

/// A failed requirement the plan cannot fix, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unfixable {
    pub requirement: String,
    pub node: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub items: Vec<PlanItem>,
    pub unfixable: Vec<Unfixable>,
    /// The remediation workflow: one `workflow` step per item, steps on the same node in
    /// sequence, nodes in parallel.
    pub workflow: Workflow,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn rank(f: &Fix) -> (Disruption, bool) {
    (f.disruption, f.reboot)
}

fn render(
    env: &minijinja::Environment<'_>,
    v: &serde_json::Value,
    ctx: &minijinja::Value,
) -> Result<serde_json::Value, String> {
    match v {
        serde_json::Value::String(s) if s.contains("{{") || s.contains("{%") => env
            .render_str(s, ctx)
            .map(serde_json::Value::String)
            .map_err(|e| format!("template `{s}`: {e}")),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| render(env, x, ctx))
            .collect::<Result<Vec<_>, _>>()
            .map(serde_json::Value::Array),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, x)| render(env, x, ctx).map(|r| (k.clone(), r)))
            .collect::<Result<serde_json::Map<_, _>, _>>()
            .map(serde_json::Value::Object),
        other => Ok(other.clone()),
    }
}

fn step_id(req: &str, node: &str) -> String {
    let raw = format!("{req}--{node}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// How the plan (and an imported SCAP rule's rationale) says a rule's content has no fix.
pub const NO_FIX_IN_CONTENT: &str = "no fix in the content";

/// Build the remediation plan for the failed security requirements in `findings`.
pub fn plan(
    policy: &Policy,
    target_name: &str,
    nodes: &[ResolvedNode],
    findings: &[Finding],
    catalog: &CatalogIndex<'_>,
) -> Plan {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let mut items: Vec<PlanItem> = Vec::new();
    let mut unfixable = Vec::new();
    // Policy order, then node order, for a stable plan.
    for req in &policy.spec.requirements {
        if req.kind != RequirementKind::Security {
            continue;
        }
        for node in nodes {
            let Some(f) = findings
                .iter()
                .find(|f| f.requirement == req.id.value && f.node == node.name)
            else {
                continue;
            };
            match f.outcome {
                Outcome::Fail => {}
                Outcome::Error | Outcome::Unknown => {
                    unfixable.push(Unfixable {
                        requirement: req.id.value.clone(),
                        node: node.name.clone(),
                        reason: format!(
                            "outcome is {}: fix the check before remediating",
                            f.outcome
                        ),
                    });
                    continue;
                }
                _ => continue,
            }
            let mut fixes: Vec<&Fix> = req
                .fixes
                .iter()
                .filter(|x| catalog.contains_key(&x.uses.value))
                .collect();
            fixes.sort_by_key(|x| rank(x));
            let Some(fix) = fixes.first() else {
                unfixable.push(Unfixable {
                    requirement: req.id.value.clone(),
                    node: node.name.clone(),
                    reason: if req.fixes.is_empty() && matches!(req.check, Check::Scap(_)) {
                        // An imported rule's rationale says why its content gave no fix.
                        match &req.rationale {
                            Some(r) if r.starts_with(NO_FIX_IN_CONTENT) => r.clone(),
                            _ => format!("{NO_FIX_IN_CONTENT}: the SCAP rule has neither Ansible tasks nor a usable shell script"),
                        }
                    } else if req.fixes.is_empty() {
                        "the requirement declares no fix".into()
                    } else {
                        "none of its fixes is in the catalog".into()
                    },
                });
                continue;
            };
            let ctx = minijinja::context! {
                node => minijinja::context!{ name => &node.name, roles => &node.roles, labels => &node.labels },
                target => minijinja::context!{ name => target_name },
                requirement => minijinja::context!{ id => &req.id.value, title => &req.title },
            };
            let mut inputs = serde_json::Map::new();
            let mut bad = None;
            for (k, v) in &fix.with {
                // A deprecated input name becomes the input's name (validation warned).
                let k = catalog
                    .get(&fix.uses.value)
                    .and_then(|w| crate::workflow::canonical_input(&w.spec.inputs, k))
                    .map_or(k.clone(), |c| c.0.to_string());
                match render(&env, &v.value, &ctx) {
                    Ok(r) => {
                        inputs.insert(k, r);
                    }
                    Err(e) => bad = Some(e),
                }
            }
            if let Some(e) = bad {
                unfixable.push(Unfixable {
                    requirement: req.id.value.clone(),
                    node: node.name.clone(),
                    reason: e,
                });
                continue;
            }
            // The same fix with the same inputs on the same node is applied once.
            if let Some(existing) = items
                .iter_mut()
                .find(|i| i.node == node.name && i.workflow == fix.uses.value && i.inputs == inputs)
            {
                existing.requirements.push(req.id.value.clone());
                continue;
            }
            items.push(PlanItem {
                step: step_id(&req.id.value, &node.name),
                requirements: vec![req.id.value.clone()],
                node: node.name.clone(),
                workflow: fix.uses.value.clone(),
                inputs,
                strategy: fix.strategy,
                disruption: fix.disruption,
                reboot: fix.reboot,
            });
        }
    }
    let mut last_on_node: BTreeMap<&str, &str> = BTreeMap::new();
    let mut steps = Vec::new();
    for i in &items {
        let needs = last_on_node
            .insert(i.node.as_str(), i.step.as_str())
            .map(|prev| vec![Loc::new(prev.to_string())])
            .unwrap_or_default();
        let mut with = BTreeMap::new();
        with.insert(
            "workflow".to_string(),
            serde_json::Value::String(i.workflow.clone()),
        );
        with.insert(
            "inputs".to_string(),
            serde_json::Value::Object(i.inputs.clone()),
        );
        steps.push(Step {
            id: Loc::new(i.step.clone()),
            name: Some(format!("fix {} on {}", i.requirements.join(", "), i.node)),
            uses: Loc::new("workflow".into()),
            with,
            needs,
            condition: None,
            retry: None,
            timeout: None,
            continue_on_error: false,
            runs_on: Some(RunsOn::Node(i.node.clone())),
            idempotent: None,
            outputs: BTreeMap::new(),
        });
    }
    let workflow = Workflow::new(
        &plan_workflow_name(&policy.metadata.name.value),
        Some(format!(
            "Remediation of policy {} on target {target_name}, deduced by vacsine plan",
            policy.metadata.name.value
        )),
        WorkflowSpec {
            steps,
            ..Default::default()
        },
    );
    Plan {
        items,
        unfixable,
        workflow,
    }
}

/// The plan's workflow name, `remediate-<policy>`, made a valid workflow name whatever the
/// policy's name (lowercased; other characters become `-`; cut to the longest name allowed).
pub fn plan_workflow_name(policy: &str) -> String {
    let mut name: String = format!("remediate-{policy}")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(crate::workflow::MAX_WORKFLOW_NAME);
    name
}
