//! The enforce pipeline (design §5): check the target, plan, clone into a sandbox, check its
//! fidelity, apply there twice (idempotence), gate, apply to the target, verify, roll back.

use crate::check::{check_site, findings, outcome_of, CheckResult};
use crate::inputs::Inputs;
use crate::report::*;
use futures_util::future::BoxFuture;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vacsine_core::driver::{Driver, DriverError};
use vacsine_core::node::Site;
use vacsine_core::plan::{plan, Plan};
use vacsine_core::policy::RequirementKind;
use vacsine_core::record::rfc3339;
use vacsine_core::Outcome;
use vacsine_engine::{Engine, Journal, NodeMap, RunReport, RunRequest, RunStatus};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnforceError {
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Engine(#[from] vacsine_engine::EngineError),
    #[error(transparent)]
    Journal(#[from] vacsine_engine::JournalError),
    #[error("node `{0}` of the plan is not part of the site")]
    UnknownNode(String),
}

/// Where the pipeline can be paused by a caller (tests use it to simulate drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    /// The sandbox verdict is in; the target is about to be changed.
    BeforeTargetApply,
}

pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;
pub type Hook = Arc<dyn Fn(HookPoint) -> BoxFuture<'static, ()> + Send + Sync>;

#[derive(Clone, Default)]
pub struct EnforceOptions {
    /// Keep the sandbox after the run (for inspection); `vacsine sandbox gc` removes it.
    pub keep_sandbox: bool,
    /// Go on when the sandbox is not faithful to the target, or when an availability guard
    /// fails before any change.
    pub force: bool,
    /// How long the sandbox may take to become faithful to the target (its services start
    /// after the clone); `None`: [`DEFAULT_FIDELITY_DEADLINE`].
    pub fidelity_deadline: Option<Duration>,
    /// Journal file for the runs (None: in memory).
    pub journal: Option<PathBuf>,
    pub progress: Option<Progress>,
    pub hook: Option<Hook>,
    /// Receives the sandbox id as soon as it exists, so a Ctrl-C handler can remove it.
    pub sandbox_slot: Option<Arc<Mutex<Option<String>>>>,
}

/// Default of [`EnforceOptions::fidelity_deadline`].
pub const DEFAULT_FIDELITY_DEADLINE: Duration = Duration::from_secs(20);
/// First pause between two fidelity checks; it doubles up to [`FIDELITY_MAX_BACKOFF`].
const FIDELITY_FIRST_BACKOFF: Duration = Duration::from_millis(250);
const FIDELITY_MAX_BACKOFF: Duration = Duration::from_secs(4);

struct Clock {
    start: Instant,
    started_at: String,
    phases: Vec<PhaseTiming>,
    steps: Vec<PhaseStep>,
    progress: Option<Progress>,
}

impl Clock {
    fn say(&self, msg: &str) {
        if let Some(p) = &self.progress {
            p(msg);
        }
        tracing::info!(target: "vacsine::enforce", "{msg}");
    }
    async fn phase<T>(&mut self, name: &str, fut: impl std::future::Future<Output = T>) -> T {
        self.say(name);
        let started_at = rfc3339(chrono::Utc::now());
        let t = Instant::now();
        let out = fut.await;
        self.phases.push(PhaseTiming {
            name: name.to_string(),
            started_at,
            duration_ms: t.elapsed().as_millis() as u64,
        });
        out
    }
    fn records(&mut self, phase: &str, run: &RunReport) {
        self.steps.extend(run.records.iter().map(|r| PhaseStep {
            phase: phase.to_string(),
            record: r.clone(),
        }));
    }
}

/// State gathered as the pipeline goes, turned into a report at any exit.
struct Findings {
    target_before: Vec<CheckResult>,
    sandbox_before: Vec<CheckResult>,
    sandbox_after: Vec<CheckResult>,
    target_after: Vec<CheckResult>,
}

fn node_map(site: &dyn Site, plan: &Plan) -> Result<NodeMap, EnforceError> {
    let mut map = NodeMap::new();
    for n in site.nodes() {
        if let Some(ops) = site.node_ops(&n.name) {
            map.insert(n.name.clone(), ops);
        }
    }
    for i in &plan.items {
        if !map.contains_key(&i.node) {
            return Err(EnforceError::UnknownNode(i.node.clone()));
        }
    }
    Ok(map)
}

/// Pairs the plan targets.
fn targeted(plan: &Plan) -> BTreeSet<(String, String)> {
    plan.items
        .iter()
        .flat_map(|i| i.requirements.iter().map(|r| (r.clone(), i.node.clone())))
        .collect()
}

/// The gate: every targeted requirement passes after, and nothing that passed before fails
/// now (availability guards included). Returns the reasons it does not hold.
pub fn gate(
    targeted: &BTreeSet<(String, String)>,
    before: &[CheckResult],
    after: &[CheckResult],
) -> Vec<String> {
    let mut problems = Vec::new();
    for (req, node) in targeted {
        let o = outcome_of(after, req, node).unwrap_or(Outcome::NotChecked);
        if o != Outcome::Pass {
            problems.push(format!("{req} on {node} is still {o}"));
        }
    }
    for b in before.iter().filter(|b| b.outcome == Outcome::Pass) {
        let o = outcome_of(after, &b.requirement, &b.node).unwrap_or(Outcome::NotChecked);
        if o != Outcome::Pass {
            let what = if b.kind == RequirementKind::Availability {
                "availability guard"
            } else {
                "requirement"
            };
            problems.push(format!(
                "regression: {what} {} on {} passed before, now {o}",
                b.requirement, b.node
            ));
        }
    }
    problems
}

/// Requirement/node pairs whose outcome differs between the target and the sandbox, each with
/// both observations (evidence).
pub fn differences(target: &[CheckResult], sandbox: &[CheckResult]) -> Vec<String> {
    target
        .iter()
        .filter_map(|t| {
            let s = sandbox
                .iter()
                .find(|s| s.requirement == t.requirement && s.node == t.node);
            let (so, sobs) = s
                .map(|s| (s.outcome, s.observed.as_str()))
                .unwrap_or((Outcome::NotChecked, "not checked"));
            (so != t.outcome).then(|| {
                format!(
                    "{} on {}: target {} (observed: {}), sandbox {so} (observed: {sobs})",
                    t.requirement, t.node, t.outcome, t.observed
                )
            })
        })
        .collect()
}

fn failed_step(run: &RunReport) -> String {
    use vacsine_core::record::StepStatus;
    let bad = |r: &&vacsine_core::record::StepRecord| {
        matches!(
            r.status,
            StepStatus::Failed
                | StepStatus::TimedOut
                | StepStatus::Interrupted
                | StepStatus::Cancelled
        )
    };
    // The innermost failing step (sub-workflow steps come after their parent) explains best.
    run.records
        .iter()
        .rev()
        .find(bad)
        .or_else(|| run.records.iter().find(|r| !r.status.is_ok()))
        .map(|r| {
            format!(
                "step {} on {} {}{}",
                r.step_id,
                r.node.as_deref().unwrap_or("-"),
                r.status,
                r.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_else(|| format!("run {}", run.status.as_str()))
}

/// Run the whole pipeline against the target of `inputs`, through `driver` (the one the
/// target's `driver:` names; the caller chooses it).
pub async fn enforce(
    driver: &dyn Driver,
    inputs: &Inputs,
    opts: &EnforceOptions,
) -> Result<Report, EnforceError> {
    let mut clock = Clock {
        start: Instant::now(),
        started_at: rfc3339(chrono::Utc::now()),
        phases: Vec::new(),
        steps: Vec::new(),
        progress: opts.progress.clone(),
    };
    let policy = &inputs.policy.doc;
    let target = &inputs.target.doc;
    let resolved = clock
        .phase("resolve target", driver.resolve(target))
        .await?;
    let site = resolved.as_site();
    let mut f = Findings {
        target_before: clock.phase("check target", check_site(policy, site)).await,
        sandbox_before: Vec::new(),
        sandbox_after: Vec::new(),
        target_after: Vec::new(),
    };
    let idx = inputs.catalog.index();
    let the_plan = clock
        .phase("plan", async {
            plan(
                policy,
                &target.metadata.name.value,
                &site.nodes(),
                &findings(&f.target_before),
                &idx,
            )
        })
        .await;
    let failing = f
        .target_before
        .iter()
        .filter(|r| r.kind == RequirementKind::Security && r.outcome.is_problem())
        .count();
    let guards_down: Vec<String> = f
        .target_before
        .iter()
        .filter(|r| r.kind == RequirementKind::Availability && r.outcome.is_problem())
        .map(|r| {
            format!(
                "{} on {} is {}: {}",
                r.requirement, r.node, r.outcome, r.message
            )
        })
        .collect();
    let mut sandbox = SandboxReport::default();
    if !guards_down.is_empty() && !opts.force {
        let course = Course::GuardsDown(guards_down);
        return Ok(build_report(inputs, clock, f, sandbox, &course, &the_plan));
    }
    if failing == 0 {
        return Ok(build_report(
            inputs,
            clock,
            f,
            sandbox,
            &Course::NothingToFix,
            &the_plan,
        ));
    }
    if the_plan.is_empty() {
        let course = Course::NothingFixable;
        return Ok(build_report(inputs, clock, f, sandbox, &course, &the_plan));
    }

    let journal = match &opts.journal {
        Some(p) => Journal::open(p)?,
        None => Journal::in_memory()?,
    };
    let engine = Engine::new(journal, crate::engine_catalog(&inputs.catalog));
    let sandbox_id = format!("sbx-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    if let Some(slot) = &opts.sandbox_slot {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(sandbox_id.clone());
    }
    sandbox.id = Some(sandbox_id.clone());
    let progress = opts.progress.clone();
    let say = move |m: &str| {
        if let Some(p) = &progress {
            p(m)
        }
    };
    let cloned = clock
        .phase("clone sandbox", resolved.clone_sandbox(&sandbox_id, &say))
        .await;
    let sbx = match cloned {
        Ok(x) => x,
        Err(e) => {
            // A partial clone may have left objects behind.
            let _ = driver.teardown(&sandbox_id).await;
            return Err(e.into());
        }
    };
    let course = in_sandbox(
        &mut clock,
        &mut f,
        &mut sandbox,
        inputs,
        opts,
        &engine,
        site,
        sbx.site.as_ref(),
        &the_plan,
    )
    .await;
    if opts.keep_sandbox {
        sandbox.kept = true;
    } else {
        clock.phase("remove sandbox", sbx.handle.teardown()).await?;
        if let Some(slot) = &opts.sandbox_slot {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
    let course = course?;
    Ok(build_report(inputs, clock, f, sandbox, &course, &the_plan))
}

/// Check the sandbox until it agrees with the target or `deadline` passes (exponential
/// backoff): the clones' services start after the clone, not all at once. Returns the last
/// differences (empty: faithful) and how many checks it took.
async fn wait_for_fidelity(
    progress: Option<Progress>,
    policy: &vacsine_core::policy::Policy,
    target_before: &[CheckResult],
    sbx_site: &dyn Site,
    deadline: Duration,
) -> (Vec<CheckResult>, Vec<String>, u32) {
    let until = Instant::now() + deadline;
    let mut backoff = FIDELITY_FIRST_BACKOFF;
    let mut checks = 0;
    loop {
        checks += 1;
        let seen = check_site(policy, sbx_site).await;
        let diff = differences(target_before, &seen);
        let left = until.saturating_duration_since(Instant::now());
        if diff.is_empty() || left.is_zero() {
            return (seen, diff, checks);
        }
        let pause = backoff.min(left);
        let msg = format!(
            "sandbox not faithful yet ({} differences, e.g. {}); checking again in {:.1}s",
            diff.len(),
            diff[0],
            pause.as_secs_f64()
        );
        tracing::info!(target: "vacsine::enforce", "{msg}");
        if let Some(p) = &progress {
            p(&msg);
        }
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(FIDELITY_MAX_BACKOFF);
    }
}

/// The target name a run on sandbox `sandbox_id` of `target` is journaled under.
fn sandbox_target_name(target: &str, sandbox_id: &str) -> String {
    format!("{target} (sandbox {sandbox_id})")
}

#[allow(clippy::too_many_arguments)]
async fn in_sandbox(
    clock: &mut Clock,
    f: &mut Findings,
    sandbox: &mut SandboxReport,
    inputs: &Inputs,
    opts: &EnforceOptions,
    engine: &Engine,
    site: &dyn Site,
    sbx_site: &dyn Site,
    the_plan: &Plan,
) -> Result<Course, EnforceError> {
    let policy = &inputs.policy.doc;
    let target = &inputs.target.doc;
    let deadline = opts.fidelity_deadline.unwrap_or(DEFAULT_FIDELITY_DEADLINE);
    let (seen, differences, checks) = clock
        .phase(
            "check sandbox fidelity",
            wait_for_fidelity(
                opts.progress.clone(),
                policy,
                &f.target_before,
                sbx_site,
                deadline,
            ),
        )
        .await;
    f.sandbox_before = seen;
    sandbox.faithful = Some(differences.is_empty());
    sandbox.differences = differences.clone();
    sandbox.fidelity_checks = checks;
    if !differences.is_empty() && !opts.force {
        return Ok(Course::NotFaithful(differences));
    }
    let target_name = &target.metadata.name.value;
    // Runs on the clones are journaled under a name of their own, so `vacsine runs` never
    // shows a sandbox application as if it had happened on the target.
    let sandbox_name = sandbox_target_name(target_name, sandbox.id.as_deref().unwrap_or("?"));
    let request = |nodes: NodeMap, name: &str| RunRequest {
        workflow: the_plan.workflow.clone(),
        inputs: Default::default(),
        nodes,
        default_node: None,
        target_name: name.to_string(),
        labels: target.metadata.labels.clone(),
        progress: None,
        observer: None,
        cancel: Default::default(),
    };
    let targeted = targeted(the_plan);

    let run = clock
        .phase(
            "apply to sandbox",
            engine.run(request(node_map(sbx_site, the_plan)?, &sandbox_name)),
        )
        .await?;
    clock.records("sandbox-apply", &run);
    if run.status != RunStatus::Succeeded {
        return Ok(Course::RejectedInSandbox(format!(
            "the remediation failed in the sandbox ({})",
            failed_step(&run)
        )));
    }
    f.sandbox_after = clock
        .phase("check sandbox", check_site(policy, sbx_site))
        .await;
    let again = clock
        .phase(
            "re-apply to sandbox (idempotence)",
            engine.run(request(node_map(sbx_site, the_plan)?, &sandbox_name)),
        )
        .await?;
    clock.records("sandbox-idempotence", &again);
    if again.status != RunStatus::Succeeded || again.changed {
        let what: Vec<String> = again
            .records
            .iter()
            .filter(|r| r.changed || !r.status.is_ok())
            .map(|r| format!("{} on {}", r.step_id, r.node.as_deref().unwrap_or("-")))
            .collect();
        return Ok(Course::RejectedInSandbox(format!(
            "the remediation is not idempotent: a second run changed {}",
            what.join(", ")
        )));
    }
    let problems = gate(&targeted, &f.sandbox_before, &f.sandbox_after);
    if !problems.is_empty() {
        return Ok(Course::RejectedInSandbox(format!(
            "the sandbox gate failed: {}",
            problems.join("; ")
        )));
    }

    if let Some(h) = &opts.hook {
        h(HookPoint::BeforeTargetApply).await;
    }
    let run = clock
        .phase(
            "apply to target",
            engine.run(request(node_map(site, the_plan)?, target_name)),
        )
        .await?;
    clock.records("target-apply", &run);
    let applied_ok = run.status == RunStatus::Succeeded;
    f.target_after = clock.phase("verify target", check_site(policy, site)).await;
    let problems = if applied_ok {
        gate(&targeted, &f.target_before, &f.target_after)
    } else {
        vec![failed_step(&run)]
    };
    if problems.is_empty() {
        return Ok(Course::Applied {
            fixes: the_plan.items.len(),
        });
    }
    // A failed run was already compensated by the engine; a succeeded one is undone here.
    if applied_ok {
        let rb = clock
            .phase(
                "roll back target",
                engine.rollback(&run.run_id, node_map(site, the_plan)?),
            )
            .await?;
        clock.records("rollback", &rb);
        if rb.status != RunStatus::RolledBack && rb.status != RunStatus::Succeeded {
            f.target_after = check_site(policy, site).await;
            return Ok(Course::RollbackIncomplete(format!(
                "{}; rollback: {}",
                problems.join("; "),
                failed_step(&rb)
            )));
        }
    }
    f.target_after = clock
        .phase("re-check target after rollback", check_site(policy, site))
        .await;
    Ok(Course::RolledBack(problems.join("; ")))
}

fn build_report(
    inputs: &Inputs,
    clock: Clock,
    f: Findings,
    sandbox: SandboxReport,
    course: &Course,
    plan: &Plan,
) -> Report {
    let get = |v: &[CheckResult], r: &CheckResult| {
        outcome_of(v, &r.requirement, &r.node).unwrap_or(Outcome::NotChecked)
    };
    let requirements = f
        .target_before
        .iter()
        .map(|r| {
            let last = [&f.target_after, &f.sandbox_after]
                .into_iter()
                .find_map(|v| {
                    v.iter()
                        .find(|x| x.requirement == r.requirement && x.node == r.node)
                })
                .unwrap_or(r);
            RequirementRow {
                id: r.requirement.clone(),
                node: r.node.clone(),
                title: r.title.clone(),
                severity: r.severity,
                kind: r.kind,
                target_before: r.outcome,
                sandbox_before: get(&f.sandbox_before, r),
                sandbox_after: get(&f.sandbox_after, r),
                target_after: get(&f.target_after, r),
                observed: last.observed.clone(),
                message: last.message.clone(),
            }
        })
        .collect();
    let requirements: Vec<RequirementRow> = requirements;
    let plan = PlanReport {
        items: plan.items.clone(),
        unfixable: plan.unfixable.clone(),
        workflow: plan.workflow.clone(),
    };
    let (verdict, summary, remaining) = decide(course, &requirements, Some(&plan));
    Report {
        verdict,
        summary,
        remaining,
        policy: inputs.policy.doc.metadata.name.value.clone(),
        target: inputs.target.doc.metadata.name.value.clone(),
        started_at: clock.started_at,
        duration_ms: clock.start.elapsed().as_millis() as u64,
        requirements,
        plan: Some(plan),
        steps: clock.steps,
        phases: clock.phases,
        sandbox,
    }
}

#[cfg(test)]
mod tests {
    use super::sandbox_target_name;

    /// Issue 6: sandbox runs were listed under the target's own name.
    #[test]
    fn issue6_sandbox_runs_are_named_after_their_sandbox() {
        let n = sandbox_target_name("edge-site", "sbx-0123456789ab");
        assert_eq!(n, "edge-site (sandbox sbx-0123456789ab)");
        assert_ne!(n, "edge-site");
    }
}
