//! A verified subset (issue 18): the sandbox gate's problems, a rejection pinned on the plan
//! items it is about, and the plan without them. Pure.

use crate::check::{outcome_of, CheckResult};
use std::collections::BTreeSet;
use vacsine_core::plan::{Plan, PlanItem};
use vacsine_core::policy::RequirementKind;
use vacsine_core::record::StepRecord;
use vacsine_core::Outcome;

/// One reason the gate does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateProblem {
    /// A requirement the plan targets on a node does not pass after its fix.
    Unfixed {
        requirement: String,
        node: String,
        text: String,
    },
    /// A requirement (or availability guard) that passed before does not any more.
    Regression {
        requirement: String,
        node: String,
        text: String,
    },
}

impl GateProblem {
    pub fn text(&self) -> &str {
        match self {
            GateProblem::Unfixed { text, .. } | GateProblem::Regression { text, .. } => text,
        }
    }
}

/// The gate: every targeted requirement passes after, and nothing that passed before fails
/// now (availability guards included). Returns the reasons it does not hold.
pub fn gate(
    targeted: &BTreeSet<(String, String)>,
    before: &[CheckResult],
    after: &[CheckResult],
) -> Vec<String> {
    gate_problems(targeted, before, after)
        .into_iter()
        .map(|p| p.text().to_string())
        .collect()
}

/// [`gate`], each reason with the requirement and node it is about.
pub fn gate_problems(
    targeted: &BTreeSet<(String, String)>,
    before: &[CheckResult],
    after: &[CheckResult],
) -> Vec<GateProblem> {
    let mut problems = Vec::new();
    for (req, node) in targeted {
        let seen = after
            .iter()
            .find(|r| &r.requirement == req && &r.node == node);
        let text = match seen {
            Some(r) if r.outcome == Outcome::Pass => continue,
            Some(r) => format!(
                "{req} on {node} is still {}: its fix did not make it pass (observed: {})",
                r.outcome, r.observed
            ),
            None => format!("{req} on {node} is still {}", Outcome::NotChecked),
        };
        problems.push(GateProblem::Unfixed {
            requirement: req.clone(),
            node: node.clone(),
            text,
        });
    }
    for b in before.iter().filter(|b| b.outcome == Outcome::Pass) {
        let o = outcome_of(after, &b.requirement, &b.node).unwrap_or(Outcome::NotChecked);
        if o != Outcome::Pass {
            let what = if b.kind == RequirementKind::Availability {
                "availability guard"
            } else {
                "requirement"
            };
            problems.push(GateProblem::Regression {
                requirement: b.requirement.clone(),
                node: b.node.clone(),
                text: format!(
                    "regression: {what} {} on {} passed before, now {o}",
                    b.requirement, b.node
                ),
            });
        }
    }
    problems
}

/// Why a sandbox proof failed: the words of the rejection, and the plan items (by index) it
/// can be pinned on, each with why. `culprits` is None when the sandbox cannot tell which
/// fix is at fault (a regression on a node no fix touched, a failure outside any fix): then
/// nothing is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub why: String,
    pub culprits: Option<Vec<(usize, String)>>,
}

/// The plan step a step record belongs to (sub-workflow steps are `<step>/<child>`).
fn top_step(step_id: &str) -> &str {
    step_id.split('/').next().unwrap_or(step_id)
}

/// Plan items whose steps match `bad` in `records`, each with the innermost such record
/// (pure). None when a matching record belongs to no item.
pub fn culprits_of_records(
    items: &[PlanItem],
    records: &[StepRecord],
    bad: impl Fn(&StepRecord) -> bool,
    why: impl Fn(&StepRecord) -> String,
) -> Option<Vec<(usize, String)>> {
    let mut out: Vec<(usize, String)> = Vec::new();
    // Innermost first: sub-workflow records come after their parent's.
    for r in records.iter().rev().filter(|r| bad(r)) {
        let i = items.iter().position(|i| i.step == top_step(&r.step_id))?;
        if !out.iter().any(|(j, _)| *j == i) {
            out.push((i, why(r)));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    (!out.is_empty()).then_some(out)
}

/// The plan items a failed gate is pinned on (pure): an unfixed requirement on its fix; a
/// regression on every fix of its node (the sandbox cannot tell which of them broke it).
/// None when a problem is on a node no fix touched.
pub fn culprits_of_gate(
    items: &[PlanItem],
    problems: &[GateProblem],
) -> Option<Vec<(usize, String)>> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for p in problems {
        let hit: Vec<usize> = match p {
            GateProblem::Unfixed {
                requirement, node, ..
            } => items
                .iter()
                .enumerate()
                .filter(|(_, i)| &i.node == node && i.requirements.contains(requirement))
                .map(|(n, _)| n)
                .collect(),
            GateProblem::Regression { node, .. } => items
                .iter()
                .enumerate()
                .filter(|(_, i)| &i.node == node)
                .map(|(n, _)| n)
                .collect(),
        };
        if hit.is_empty() {
            return None;
        }
        for n in hit {
            match out.iter_mut().find(|(j, _)| *j == n) {
                Some((_, why)) => {
                    why.push_str("; ");
                    why.push_str(p.text());
                }
                None => out.push((n, p.text().to_string())),
            }
        }
    }
    out.sort_by_key(|(i, _)| *i);
    (!out.is_empty()).then_some(out)
}

/// The plan without the items in `drop` (pure): the other items unchanged, and its workflow
/// with their steps only, each node's steps chained again in plan order. The plan's items
/// do not depend on one another (it only orders the fixes of one node, one at a time); a
/// requirement fixed by a dropped item leaves with it.
pub fn subset_plan(plan: &Plan, drop: &BTreeSet<usize>) -> Plan {
    let items: Vec<PlanItem> = plan
        .items
        .iter()
        .enumerate()
        .filter(|(n, _)| !drop.contains(n))
        .map(|(_, i)| i.clone())
        .collect();
    let mut workflow = plan.workflow.clone();
    let mut last_on_node: std::collections::BTreeMap<String, String> = Default::default();
    let mut steps = Vec::new();
    for i in &items {
        let Some(step) = plan
            .workflow
            .spec
            .steps
            .iter()
            .find(|s| s.id.value == i.step)
        else {
            continue;
        };
        let mut step = step.clone();
        step.needs = last_on_node
            .insert(i.node.clone(), i.step.clone())
            .map(|prev| vec![vacsine_core::doc::Loc::new(prev)])
            .unwrap_or_default();
        steps.push(step);
    }
    workflow.spec.steps = steps;
    Plan {
        items,
        unfixable: plan.unfixable.clone(),
        workflow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vacsine_core::policy::{Disruption, Strategy};

    fn item(workflow: &str, node: &str, reqs: &[&str]) -> PlanItem {
        PlanItem {
            step: format!("fix-{workflow}"),
            requirements: reqs.iter().map(|r| r.to_string()).collect(),
            node: node.into(),
            workflow: workflow.into(),
            inputs: Default::default(),
            strategy: Strategy::Configure,
            disruption: Disruption::Low,
            reboot: false,
        }
    }

    fn plan_of(items: Vec<PlanItem>) -> Plan {
        let mut last: std::collections::BTreeMap<String, String> = Default::default();
        let steps: Vec<serde_json::Value> = items
            .iter()
            .map(|i| {
                let needs: Vec<String> = last
                    .insert(i.node.clone(), i.step.clone())
                    .into_iter()
                    .collect();
                serde_json::json!({"id": i.step, "uses": "workflow", "needs": needs,
                    "runsOn": i.node,
                    "with": {"workflow": i.workflow, "inputs": {}}})
            })
            .collect();
        Plan {
            items,
            unfixable: vec![],
            workflow: serde_json::from_value(serde_json::json!({
                "apiVersion": "vacsine.io/v1", "kind": "Workflow",
                "metadata": {"name": "remediate-p"}, "spec": {"steps": steps}
            }))
            .unwrap(),
        }
    }

    fn record(step: &str, status: vacsine_core::record::StepStatus, changed: bool) -> StepRecord {
        let mut r = StepRecord::started("run", step, 1, Some("a"), "script", String::new());
        r.status = status;
        r.changed = changed;
        r.error = Some(format!("{step} broke"));
        r
    }

    /// Issue 18: a rejection is pinned on the fixes it is about: an unfixed requirement on its
    /// fix, a regression on every fix of its node, a failed or non-idempotent step on the plan
    /// step it belongs to (sub-workflow steps included); when the sandbox cannot tell, on
    /// none (None: nothing is applied).
    #[test]
    fn issue18_rejections_are_pinned_on_their_fixes() {
        let items = vec![
            item("harden-sshd", "a", &["ssh-root"]),
            item("fix-permissions", "a", &["shadow"]),
            item("set-sysctl", "b", &["fwd"]),
        ];
        let unfixed = |r: &str, n: &str| GateProblem::Unfixed {
            requirement: r.into(),
            node: n.into(),
            text: format!("{r} on {n} is still fail"),
        };
        let regression = |r: &str, n: &str| GateProblem::Regression {
            requirement: r.into(),
            node: n.into(),
            text: format!("regression: {r} on {n}"),
        };
        assert_eq!(
            culprits_of_gate(&items, &[unfixed("ssh-root", "a")]),
            Some(vec![(0, "ssh-root on a is still fail".to_string())])
        );
        assert_eq!(
            culprits_of_gate(&items, &[regression("web-up", "b")]),
            Some(vec![(2, "regression: web-up on b".to_string())])
        );
        // Two problems on one fix: both named.
        let both =
            culprits_of_gate(&items, &[unfixed("fwd", "b"), regression("web-up", "b")]).unwrap();
        assert_eq!(both.len(), 1);
        assert!(both[0].1.contains("fwd on b") && both[0].1.contains("web-up on b"));
        // A regression on a node no fix touched: cannot tell.
        assert_eq!(culprits_of_gate(&items, &[regression("web-up", "c")]), None);
        assert_eq!(
            culprits_of_gate(&items, &[unfixed("ssh-root", "a"), regression("x", "c")]),
            None
        );

        use vacsine_core::record::StepStatus::*;
        let failed = |r: &StepRecord| matches!(r.status, Failed | TimedOut);
        let why = |r: &StepRecord| format!("{} {}", r.step_id, r.status);
        let records = vec![
            record("fix-harden-sshd", Failed, false),
            record("fix-harden-sshd/validate", Failed, false),
            record("fix-set-sysctl", Cancelled, false),
        ];
        assert_eq!(
            culprits_of_records(&items, &records, failed, why),
            Some(vec![(0, "fix-harden-sshd/validate failed".to_string())])
        );
        let records = vec![record("not-a-plan-step", Failed, false)];
        assert_eq!(culprits_of_records(&items, &records, failed, why), None);
        let records = vec![
            record("fix-fix-permissions", Succeeded, true),
            record("fix-fix-permissions/chmod", Succeeded, true),
        ];
        assert_eq!(
            culprits_of_records(&items, &records, |r| r.changed, why),
            Some(vec![(1, "fix-fix-permissions/chmod succeeded".to_string())])
        );
    }

    /// Issue 18: the subset keeps the other fixes and chains each node's steps again.
    #[test]
    fn issue18_subset_plan_rechains_each_node() {
        let p = plan_of(vec![
            item("w1", "a", &["r1"]),
            item("w2", "a", &["r2"]),
            item("w3", "a", &["r3"]),
            item("w4", "b", &["r4"]),
        ]);
        let sub = subset_plan(&p, &BTreeSet::from([1]));
        let got: Vec<(String, Vec<String>)> = sub
            .workflow
            .spec
            .steps
            .iter()
            .map(|s| {
                (
                    s.id.value.clone(),
                    s.needs.iter().map(|n| n.value.clone()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("fix-w1".to_string(), vec![]),
                ("fix-w3".to_string(), vec!["fix-w1".to_string()]),
                ("fix-w4".to_string(), vec![]),
            ]
        );
        assert_eq!(
            sub.items
                .iter()
                .map(|i| i.workflow.as_str())
                .collect::<Vec<_>>(),
            ["w1", "w3", "w4"]
        );
        // Dropping the first step of a node frees the next one.
        let sub = subset_plan(&p, &BTreeSet::from([0, 3]));
        assert_eq!(sub.workflow.spec.steps[0].id.value, "fix-w2");
        assert!(sub.workflow.spec.steps[0].needs.is_empty());
        assert_eq!(sub.workflow.spec.steps[1].needs[0].value, "fix-w2");
        assert_eq!(sub.workflow.spec.steps.len(), 2);
    }
}
