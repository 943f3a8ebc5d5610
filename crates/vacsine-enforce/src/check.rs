//! Checking a policy against a site: node selection, applicability, observation, evaluation.

use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;
use vacsine_core::eval::{evaluate, Evaluation};
use vacsine_core::node::{Observation, Site};
use vacsine_core::policy::{Check, Policy, Requirement, RequirementKind, ScapCheck, Severity};
use vacsine_core::Outcome;
use vacsine_scap::import::RuleResults;

/// Result of one requirement on one node (the `check --format json` contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub requirement: String,
    pub node: String,
    pub outcome: Outcome,
    pub observed: String,
    pub message: String,
    pub title: String,
    pub severity: Severity,
    pub kind: RequirementKind,
}

/// How many observations run at once against one site.
pub const CHECK_CONCURRENCY: usize = 16;

/// SCAP profile evaluations shared by the checks of one pass: one evaluation per
/// (data stream, profile, options, node), however many of its rules are checked.
#[derive(Default)]
pub struct ScapEvaluations {
    cells: Mutex<HashMap<(ScapCheckKey, String), Arc<ProfileCell>>>,
}

/// Data stream, profile, tailoring, `containerAsMachine`.
type ScapCheckKey = (String, String, Option<String>, bool);
/// One profile evaluation on one node, made once by the first check that needs it.
type ProfileCell = OnceCell<Result<RuleResults, String>>;

impl ScapEvaluations {
    async fn observe(&self, site: &dyn Site, node: &str, c: &ScapCheck) -> Observation {
        let key = (
            (
                c.datastream.clone(),
                c.profile.clone(),
                c.tailoring.clone(),
                c.container_as_machine,
            ),
            node.to_string(),
        );
        let cell = self
            .cells
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let results = cell
            .get_or_init(|| async {
                match site.node_ops(node) {
                    Some(ops) => vacsine_scap::import::evaluate_on(c, ops).await,
                    None => Err(format!("node `{node}` has no operations in its driver")),
                }
            })
            .await;
        vacsine_scap::import::observation(c, results)
    }
}

/// What `check` observes on `node`: SCAP rules through the shared evaluations, every other
/// probe through the driver.
async fn observe(
    site: &dyn Site,
    scap: &ScapEvaluations,
    node: &str,
    check: &Check,
) -> Observation {
    match check {
        Check::Scap(c) => scap.observe(site, node, c).await,
        _ => site.observe(node, check).await,
    }
}

async fn check_one(
    site: &dyn Site,
    scap: &ScapEvaluations,
    req: &Requirement,
    node: &str,
) -> Evaluation {
    if let Some(cond) = &req.applies_when {
        let e = evaluate(cond, &observe(site, scap, node, cond).await);
        match e.outcome {
            Outcome::Pass => {}
            Outcome::Fail => {
                return Evaluation {
                    outcome: Outcome::NotApplicable,
                    observed: e.observed,
                    message: format!("not applicable: {}", e.message),
                }
            }
            _ => {
                return Evaluation {
                    outcome: Outcome::Error,
                    observed: e.observed,
                    message: format!("applicability could not be decided: {}", e.message),
                }
            }
        }
    }
    evaluate(&req.check, &observe(site, scap, node, &req.check).await)
}

/// The (requirement, node) pairs `policy` checks on `site`: every requirement on every node
/// it selects, in policy order, then node order.
pub fn selected<'p>(policy: &'p Policy, site: &dyn Site) -> Vec<(&'p Requirement, String)> {
    let nodes = site.nodes();
    let mut work = Vec::new();
    for req in &policy.spec.requirements {
        for n in &nodes {
            if req.nodes.matches(&n.name, &n.roles, &n.labels) {
                work.push((req, n.name.clone()));
            }
        }
    }
    work
}

/// Check one requirement on one node (`appliesWhen` first), as [`check_site`] does for each
/// pair; the availability monitor of the enforce pipeline probes its guards with it.
pub async fn check_requirement(site: &dyn Site, req: &Requirement, node: &str) -> CheckResult {
    check_with(site, &ScapEvaluations::default(), req, node).await
}

async fn check_with(
    site: &dyn Site,
    scap: &ScapEvaluations,
    req: &Requirement,
    node: &str,
) -> CheckResult {
    let e = check_one(site, scap, req, node).await;
    CheckResult {
        requirement: req.id.value.clone(),
        node: node.to_string(),
        outcome: e.outcome,
        observed: e.observed,
        message: e.message,
        title: req.title.clone(),
        severity: req.severity,
        kind: req.kind,
    }
}

/// Check every requirement of `policy` on every node of `site` it selects. Results come in
/// policy order, then node order.
pub async fn check_site(policy: &Policy, site: &dyn Site) -> Vec<CheckResult> {
    let scap = &ScapEvaluations::default();
    stream::iter(selected(policy, site))
        .map(|(req, node)| async move { check_with(site, scap, req, &node).await })
        .buffered(CHECK_CONCURRENCY)
        .collect()
        .await
}

/// Findings for the planner.
pub fn findings(results: &[CheckResult]) -> Vec<vacsine_core::plan::Finding> {
    results
        .iter()
        .map(|r| vacsine_core::plan::Finding {
            requirement: r.requirement.clone(),
            node: r.node.clone(),
            outcome: r.outcome,
        })
        .collect()
}

/// Outcome of (requirement, node) in a result list.
pub fn outcome_of(results: &[CheckResult], req: &str, node: &str) -> Option<Outcome> {
    results
        .iter()
        .find(|r| r.requirement == req && r.node == node)
        .map(|r| r.outcome)
}
