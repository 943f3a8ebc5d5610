//! Checking a policy against a site: node selection, applicability, observation, evaluation.

use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use vacsine_core::eval::{evaluate, Evaluation};
use vacsine_core::node::Site;
use vacsine_core::policy::{Policy, Requirement, RequirementKind, Severity};
use vacsine_core::Outcome;

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

async fn check_one(site: &dyn Site, req: &Requirement, node: &str) -> Evaluation {
    if let Some(cond) = &req.applies_when {
        let e = evaluate(cond, &site.observe(node, cond).await);
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
    evaluate(&req.check, &site.observe(node, &req.check).await)
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
    let e = check_one(site, req, node).await;
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
    stream::iter(selected(policy, site))
        .map(|(req, node)| async move { check_requirement(site, req, &node).await })
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
