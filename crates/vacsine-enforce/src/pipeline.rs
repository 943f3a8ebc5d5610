//! The enforce pipeline (design §5): check the target, plan, clone into a sandbox, check its
//! fidelity, apply there twice (idempotence), gate, apply to the target, verify, roll back.

use crate::check::{check_requirement, check_site, findings, outcome_of, selected, CheckResult};
use crate::inputs::Inputs;
use crate::report::*;
pub use crate::subset::{
    culprits_of_gate, culprits_of_records, gate, gate_problems, subset_plan, GateProblem, Rejection,
};
use futures_util::future::BoxFuture;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vacsine_core::driver::{Driver, DriverError, ResolvedSite, SandboxHandle};
use vacsine_core::node::Site;
use vacsine_core::plan::{plan, Plan};
use vacsine_core::policy::{Requirement, RequirementKind};
use vacsine_core::record::rfc3339;
use vacsine_core::record::StepRecord;
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
    /// A fix that does not survive a restart of its sandbox clone is rejected (held back, or
    /// the whole remediation with `all_or_nothing`: `rejected_in_sandbox`); without it,
    /// non-persistence is a warning of the report.
    pub require_persistent: bool,
    /// Today's all-or-nothing gate: one fix rejected in the sandbox keeps every fix off the
    /// target (`rejected_in_sandbox`). Without it (the default), the fixes the sandbox can pin
    /// the rejection on are held back, the others proven again on a fresh sandbox without
    /// them, then applied and verified (`partially_verified`).
    pub all_or_nothing: bool,
    /// Journal file for the runs (None: in memory).
    pub journal: Option<PathBuf>,
    pub progress: Option<Progress>,
    pub hook: Option<Hook>,
    /// Receives the sandbox id as soon as it exists, so a Ctrl-C handler can remove it.
    pub sandbox_slot: Option<Arc<Mutex<Option<String>>>>,
    /// Receives the engine's events of every run the pipeline makes (sandbox and target), so
    /// a caller can forward each step record as soon as it is journaled (the site agent).
    pub steps: Option<vacsine_engine::ProgressFn>,
}

/// Sandbox proofs at most in one enforce: the whole plan, then subsets without the fixes the
/// previous proof rejected (each on a fresh clone of the target).
pub const MAX_SANDBOX_ROUNDS: u32 = 3;

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
    /// The phase running now (`after <phase>` between two), read by the availability
    /// monitor to attribute its probes.
    current: PhaseName,
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
        set_phase(&self.current, name.to_string());
        let started_at = rfc3339(chrono::Utc::now());
        let t = Instant::now();
        let out = fut.await;
        set_phase(&self.current, format!("after {name}"));
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
    /// Each fix and whether it survived a restart of its sandbox clone.
    fixes: Vec<FixPersistence>,
    warnings: Vec<String>,
    /// Fixes rejected in the sandbox and held back.
    held_back: Vec<HeldBack>,
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
///
/// From the moment the target is resolved until the report, every availability guard is
/// probed on the target in a loop ([`AVAILABILITY_INTERVAL`]); the report's `availability`
/// says how many probes failed and the longest outage per guard. The loop ends with the
/// pipeline on every path (an error, or the future dropped on Ctrl-C, aborts it).
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
        current: Arc::new(Mutex::new(String::new())),
    };
    let resolved = clock
        .phase("resolve target", driver.resolve(&inputs.target.doc))
        .await?;
    let guards: Vec<(Requirement, String)> = selected(&inputs.policy.doc, resolved.as_site())
        .into_iter()
        .filter(|(r, _)| r.kind == RequirementKind::Availability)
        .map(|(r, n)| (r.clone(), n))
        .collect();
    let monitor = AvailabilityMonitor::start(
        resolved.clone().into_site(),
        guards,
        clock.current.clone(),
        AVAILABILITY_INTERVAL,
        AVAILABILITY_PROBE_TIMEOUT,
    );
    // On an error the monitor is dropped here, which aborts its loop.
    let mut report = enforce_resolved(driver, inputs, opts, clock, resolved.as_ref()).await?;
    report.availability = monitor.finish().await;
    Ok(report)
}

/// What the runs of one enforce share once its target is resolved: the driver and the
/// resolved target, the inputs and options, and the engine every run goes through.
#[derive(Clone, Copy)]
struct Enforcing<'a> {
    driver: &'a dyn Driver,
    resolved: &'a dyn ResolvedSite,
    inputs: &'a Inputs,
    opts: &'a EnforceOptions,
    engine: &'a Engine,
}

/// The pipeline once the target is resolved.
async fn enforce_resolved(
    driver: &dyn Driver,
    inputs: &Inputs,
    opts: &EnforceOptions,
    mut clock: Clock,
    resolved: &dyn ResolvedSite,
) -> Result<Report, EnforceError> {
    let (mut f, the_plan) = check_and_plan(&mut clock, inputs, resolved.as_site()).await;
    let mut sandbox = SandboxReport::default();
    if let Some(course) = early_course(&f.target_before, the_plan.is_empty(), opts) {
        return Ok(build_report(inputs, clock, f, sandbox, &course, &the_plan));
    }
    let journal = match &opts.journal {
        Some(p) => Journal::open(p)?,
        None => Journal::in_memory()?,
    };
    let engine = Engine::new(journal, crate::engine_catalog(&inputs.catalog));
    let ctx = Enforcing {
        driver,
        resolved,
        inputs,
        opts,
        engine: &engine,
    };
    let course = prove_and_apply(ctx, &mut clock, &mut f, &mut sandbox, &the_plan).await?;
    Ok(build_report(inputs, clock, f, sandbox, &course, &the_plan))
}

/// Check the target and plan the fixes of what fails: the findings so far and the plan.
async fn check_and_plan(clock: &mut Clock, inputs: &Inputs, site: &dyn Site) -> (Findings, Plan) {
    let policy = &inputs.policy.doc;
    let target = &inputs.target.doc;
    let f = Findings {
        target_before: clock.phase("check target", check_site(policy, site)).await,
        sandbox_before: Vec::new(),
        sandbox_after: Vec::new(),
        target_after: Vec::new(),
        fixes: Vec::new(),
        warnings: Vec::new(),
        held_back: Vec::new(),
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
    (f, the_plan)
}

/// The course when the pipeline ends before any sandbox, given the target's checks and
/// whether the plan is empty: an availability guard is down (unless `--force`), nothing
/// fails, or nothing that fails can be fixed. `None`: go on to the sandbox.
fn early_course(
    target_before: &[CheckResult],
    plan_is_empty: bool,
    opts: &EnforceOptions,
) -> Option<Course> {
    let failing = target_before
        .iter()
        .filter(|r| r.kind == RequirementKind::Security && r.outcome.is_problem())
        .count();
    let guards_down: Vec<String> = target_before
        .iter()
        .filter(|r| r.kind == RequirementKind::Availability && r.outcome.is_problem())
        .map(|r| {
            format!(
                "{} on {} is {}: {}",
                r.requirement, r.node, r.outcome, r.message
            )
        })
        .collect();
    if !guards_down.is_empty() && !opts.force {
        Some(Course::GuardsDown(guards_down))
    } else if failing == 0 {
        Some(Course::NothingToFix)
    } else if plan_is_empty {
        Some(Course::NothingFixable)
    } else {
        None
    }
}

/// Prove the plan in a sandbox and apply what was proven to the target: the whole plan,
/// then (without --all-or-nothing) the fixes a rejection is not pinned on, on a fresh clone
/// of the target each time.
async fn prove_and_apply(
    ctx: Enforcing<'_>,
    clock: &mut Clock,
    f: &mut Findings,
    sandbox: &mut SandboxReport,
    the_plan: &Plan,
) -> Result<Course, EnforceError> {
    let mut current = the_plan.clone();
    let mut round = 1;
    loop {
        let rejection = match sandbox_round(ctx, clock, f, sandbox, &current, round).await? {
            Proof::Proven => return on_target(ctx, clock, f, &current).await,
            Proof::NotFaithful(d) => return Ok(Course::NotFaithful(d)),
            Proof::Rejected(r) => r,
        };
        if !goes_on(&rejection, ctx.opts, round, current.items.len()) {
            return Ok(Course::RejectedInSandbox(rejection.why));
        }
        current = hold_back(clock, f, &current, rejection);
        round += 1;
    }
}

/// Hold back the culprits of `rejection` (recorded in the findings) and return the plan of
/// the other fixes, to be proven again.
fn hold_back(clock: &Clock, f: &mut Findings, current: &Plan, rejection: Rejection) -> Plan {
    let culprits = rejection.culprits.unwrap_or_default();
    let drop: BTreeSet<usize> = culprits.iter().map(|(i, _)| *i).collect();
    for (i, why) in &culprits {
        let item = &current.items[*i];
        f.held_back.push(HeldBack {
            step: item.step.clone(),
            workflow: item.workflow.clone(),
            node: item.node.clone(),
            requirements: item.requirements.clone(),
            reason: why.clone(),
        });
    }
    let next = subset_plan(current, &drop);
    clock.say(&format!(
        "held back {} (rejected in the sandbox: {}); proving the {} other fixes again on a fresh sandbox",
        culprits
            .iter()
            .map(|(i, _)| format!("{} on {}", current.items[*i].workflow, current.items[*i].node))
            .collect::<Vec<_>>()
            .join(", "),
        rejection.why,
        next.items.len()
    ));
    next
}

/// Whether a rejection in sandbox round `round` of a plan of `items` fixes leads to another
/// round without its culprits: not with `--all-or-nothing`, not past [`MAX_SANDBOX_ROUNDS`],
/// not when the sandbox cannot tell which fixes are at fault, nor when they are all at fault.
fn goes_on(r: &Rejection, opts: &EnforceOptions, round: u32, items: usize) -> bool {
    !opts.all_or_nothing
        && round < MAX_SANDBOX_ROUNDS
        && r.culprits
            .as_ref()
            .is_some_and(|c| !c.is_empty() && c.len() < items)
}

/// What one sandbox proof of a plan found.
enum Proof {
    Proven,
    NotFaithful(Vec<String>),
    Rejected(Rejection),
}

/// One proof of `plan` on a fresh clone of the target: clone, prove, tear the clone down
/// (kept with `--keep-sandbox` when it is the last one). Phases and step records of rounds
/// after the first name their round.
async fn sandbox_round(
    ctx: Enforcing<'_>,
    clock: &mut Clock,
    f: &mut Findings,
    sandbox: &mut SandboxReport,
    plan: &Plan,
    round: u32,
) -> Result<Proof, EnforceError> {
    let opts = ctx.opts;
    let sandbox_id = format!("sbx-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    set_sandbox_slot(opts, Some(sandbox_id.clone()));
    sandbox.id = Some(sandbox_id.clone());
    let sbx = clone_sandbox(ctx, clock, &sandbox_id, round).await?;
    let proof = in_sandbox(&mut SandboxPass {
        ctx,
        clock,
        f,
        sandbox,
        site: sbx.site.as_ref(),
        handle: sbx.handle.as_ref(),
        plan,
        round,
    })
    .await;
    // Only the last sandbox is kept: a rejected round is followed by another one, or ends
    // the pipeline (then it is the last).
    let last =
        !matches!(&proof, Ok(Proof::Rejected(r)) if goes_on(r, opts, round, plan.items.len()));
    if opts.keep_sandbox && last {
        sandbox.kept = true;
    } else {
        clock
            .phase(&round_name("remove sandbox", round), sbx.handle.teardown())
            .await?;
        set_sandbox_slot(opts, None);
    }
    proof
}

/// Tell the caller's sandbox slot (if any) which sandbox exists now (`None`: none).
fn set_sandbox_slot(opts: &EnforceOptions, id: Option<String>) {
    if let Some(slot) = &opts.sandbox_slot {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = id;
    }
}

/// Clone the target into sandbox `sandbox_id` (phase of round `round`); a failed clone is
/// torn down, as it may have left objects behind.
async fn clone_sandbox(
    ctx: Enforcing<'_>,
    clock: &mut Clock,
    sandbox_id: &str,
    round: u32,
) -> Result<vacsine_core::driver::SandboxClone, EnforceError> {
    let progress = ctx.opts.progress.clone();
    let say = move |m: &str| {
        if let Some(p) = &progress {
            p(m)
        }
    };
    let cloned = clock
        .phase(
            &round_name("clone sandbox", round),
            ctx.resolved.clone_sandbox(sandbox_id, &say),
        )
        .await;
    match cloned {
        Ok(x) => Ok(x),
        Err(e) => {
            let _ = ctx.driver.teardown(sandbox_id).await;
            Err(e.into())
        }
    }
}

/// A phase or record name of sandbox round `round` (the first keeps the plain name).
fn round_name(name: &str, round: u32) -> String {
    if round <= 1 {
        name.to_string()
    } else {
        format!("{name} (round {round})")
    }
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

/// Restart every clone of the sandbox, then check it until every requirement the plan targets
/// passes again, or the clones are ready (what passed on the sandbox before any change and no
/// fix targets passes again) and two checks in a row agree, or `deadline` passes (backoff as
/// for fidelity: services take time to come back). Returns each fix's persistence and how
/// many checks it took.
async fn measure_persistence(
    progress: Option<Progress>,
    policy: &vacsine_core::policy::Policy,
    handle: &dyn SandboxHandle,
    sbx_site: &dyn Site,
    sandbox_before: &[CheckResult],
    plan: &Plan,
    deadline: Duration,
) -> Result<(Vec<FixPersistence>, u32), DriverError> {
    let restarted = handle.restart().await?;
    if let Some(p) = &progress {
        p(&format!(
            "sandbox {}: restarted {}",
            handle.id(),
            restarted.join(", ")
        ));
    }
    let targeted = targeted(plan);
    let readiness: Vec<&CheckResult> = sandbox_before
        .iter()
        .filter(|b| {
            b.outcome == Outcome::Pass
                && !targeted.contains(&(b.requirement.clone(), b.node.clone()))
        })
        .collect();
    let until = Instant::now() + deadline;
    let mut backoff = FIDELITY_FIRST_BACKOFF;
    let mut checks = 0;
    let mut previous: Option<Vec<Outcome>> = None;
    loop {
        checks += 1;
        let seen = check_site(policy, sbx_site).await;
        let now: Vec<Outcome> = targeted
            .iter()
            .map(|(r, n)| outcome_of(&seen, r, n).unwrap_or(Outcome::NotChecked))
            .collect();
        let all_pass = now.iter().all(|o| *o == Outcome::Pass);
        let ready = readiness
            .iter()
            .all(|b| outcome_of(&seen, &b.requirement, &b.node) == Some(Outcome::Pass));
        let settled = ready && previous.as_ref() == Some(&now);
        let left = until.saturating_duration_since(Instant::now());
        if all_pass || settled || left.is_zero() {
            return Ok((persistence(&plan.items, &seen), checks));
        }
        previous = Some(now);
        let pause = backoff.min(left);
        let msg = format!(
            "sandbox restarted, {}; checking again in {:.1}s",
            if ready {
                "its targeted requirements are not all back yet"
            } else {
                "its services are not all back yet"
            },
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

/// Each plan item's persistence given the checks after a restart (pure).
pub fn persistence(
    items: &[vacsine_core::plan::PlanItem],
    after_restart: &[CheckResult],
) -> Vec<FixPersistence> {
    items
        .iter()
        .map(|i| {
            let lost: Vec<String> = i
                .requirements
                .iter()
                .filter_map(|r| {
                    let found = after_restart
                        .iter()
                        .find(|x| &x.requirement == r && x.node == i.node);
                    match found {
                        Some(x) if x.outcome == Outcome::Pass => None,
                        Some(x) => Some(format!(
                            "{r} is {} after the restart (observed: {})",
                            x.outcome, x.observed
                        )),
                        None => Some(format!("{r} was not checked after the restart")),
                    }
                })
                .collect();
            FixPersistence {
                workflow: i.workflow.clone(),
                node: i.node.clone(),
                requirements: i.requirements.clone(),
                persistent: lost.is_empty(),
                lost,
            }
        })
        .collect()
}

/// The target name a run on sandbox `sandbox_id` of `target` is journaled under.
fn sandbox_target_name(target: &str, sandbox_id: &str) -> String {
    format!("{target} (sandbox {sandbox_id})")
}

/// A run request of the plan's workflow on `nodes`, journaled under `name`.
fn plan_request(
    inputs: &Inputs,
    opts: &EnforceOptions,
    plan: &Plan,
    nodes: NodeMap,
    name: &str,
) -> RunRequest {
    RunRequest {
        workflow: plan.workflow.clone(),
        inputs: Default::default(),
        nodes,
        default_node: None,
        target_name: name.to_string(),
        labels: inputs.target.doc.metadata.labels.clone(),
        progress: opts.steps.clone(),
        observer: None,
        cancel: Default::default(),
        run_id: None,
    }
}

/// One proof of a plan on one sandbox (round `round`), and the pipeline state it records
/// into.
struct SandboxPass<'a> {
    ctx: Enforcing<'a>,
    clock: &'a mut Clock,
    f: &'a mut Findings,
    sandbox: &'a mut SandboxReport,
    /// The cloned site.
    site: &'a dyn Site,
    handle: &'a dyn SandboxHandle,
    plan: &'a Plan,
    round: u32,
}

/// Prove the pass's plan on its sandbox: fidelity, apply, check, idempotence, gate,
/// persistence. A rejection says which fixes it is pinned on, when the sandbox can tell.
async fn in_sandbox(pass: &mut SandboxPass<'_>) -> Result<Proof, EnforceError> {
    if let Some(differences) = pass.check_fidelity().await {
        return Ok(Proof::NotFaithful(differences));
    }
    if let Some(r) = pass.apply().await? {
        return Ok(Proof::Rejected(r));
    }
    pass.f.sandbox_after = pass
        .clock
        .phase(
            &round_name("check sandbox", pass.round),
            check_site(&pass.ctx.inputs.policy.doc, pass.site),
        )
        .await;
    if let Some(r) = pass.reapply().await? {
        return Ok(Proof::Rejected(r));
    }
    if let Some(r) = pass.gate() {
        return Ok(Proof::Rejected(r));
    }
    pass.check_persistence().await
}

impl SandboxPass<'_> {
    /// How long the sandbox may take to become faithful, or to come back after a restart.
    fn deadline(&self) -> Duration {
        self.ctx
            .opts
            .fidelity_deadline
            .unwrap_or(DEFAULT_FIDELITY_DEADLINE)
    }

    /// Check the sandbox until it agrees with the target (recorded in the findings and the
    /// sandbox report); the differences when it does not and `--force` is not given.
    async fn check_fidelity(&mut self) -> Option<Vec<String>> {
        let (seen, differences, checks) = self
            .clock
            .phase(
                &round_name("check sandbox fidelity", self.round),
                wait_for_fidelity(
                    self.ctx.opts.progress.clone(),
                    &self.ctx.inputs.policy.doc,
                    &self.f.target_before,
                    self.site,
                    self.deadline(),
                ),
            )
            .await;
        self.f.sandbox_before = seen;
        self.f.sandbox_after = Vec::new();
        self.sandbox.faithful = Some(differences.is_empty());
        self.sandbox.differences = differences.clone();
        self.sandbox.fidelity_checks = checks;
        (!differences.is_empty() && !self.ctx.opts.force).then_some(differences)
    }

    /// Run the plan on the sandbox (phase `phase`, records `records`). Runs on the clones
    /// are journaled under a name of their own, so `vacsine runs` never shows a sandbox
    /// application as if it had happened on the target.
    async fn run(&mut self, phase: &str, records: &str) -> Result<RunReport, EnforceError> {
        let target_name = &self.ctx.inputs.target.doc.metadata.name.value;
        let sandbox_id = self.sandbox.id.as_deref().unwrap_or("?");
        let name = sandbox_target_name(target_name, sandbox_id);
        let request = plan_request(
            self.ctx.inputs,
            self.ctx.opts,
            self.plan,
            node_map(self.site, self.plan)?,
            &name,
        );
        let run = self
            .clock
            .phase(&round_name(phase, self.round), self.ctx.engine.run(request))
            .await?;
        self.clock.records(&round_name(records, self.round), &run);
        Ok(run)
    }

    /// Apply the plan to the sandbox; the rejection when the run fails.
    async fn apply(&mut self) -> Result<Option<Rejection>, EnforceError> {
        let run = self.run("apply to sandbox", "sandbox-apply").await?;
        Ok((run.status != RunStatus::Succeeded).then(|| failed_run(&self.plan.items, &run)))
    }

    /// Apply the plan a second time; the rejection when that run fails or changes anything
    /// (not idempotent).
    async fn reapply(&mut self) -> Result<Option<Rejection>, EnforceError> {
        let again = self
            .run("re-apply to sandbox (idempotence)", "sandbox-idempotence")
            .await?;
        Ok((again.status != RunStatus::Succeeded || again.changed)
            .then(|| not_idempotent(&self.plan.items, &again)))
    }

    /// The regression guard: the rejection when a targeted requirement does not pass on the
    /// sandbox after the run, or another one got worse.
    fn gate(&self) -> Option<Rejection> {
        let problems = gate_problems(
            &targeted(self.plan),
            &self.f.sandbox_before,
            &self.f.sandbox_after,
        );
        if problems.is_empty() {
            return None;
        }
        let texts: Vec<&str> = problems.iter().map(GateProblem::text).collect();
        Some(Rejection {
            why: format!("the sandbox gate failed: {}", texts.join("; ")),
            culprits: culprits_of_gate(&self.plan.items, &problems),
        })
    }

    /// Restart the sandbox and check which fixes survive (recorded in the findings): a
    /// rejection with `--require-persistent`, else a warning of the report.
    async fn check_persistence(&mut self) -> Result<Proof, EnforceError> {
        let (fixes, checks) = self
            .clock
            .phase(
                &round_name("restart sandbox and re-check (persistence)", self.round),
                measure_persistence(
                    self.ctx.opts.progress.clone(),
                    &self.ctx.inputs.policy.doc,
                    self.handle,
                    self.site,
                    &self.f.sandbox_before,
                    self.plan,
                    self.deadline(),
                ),
            )
            .await?;
        self.sandbox.restart_checks = checks;
        let lost: Vec<String> = fixes
            .iter()
            .filter(|x| !x.persistent)
            .map(|x| x.to_string())
            .collect();
        let culprits = not_persistent(&fixes);
        self.f.fixes = fixes;
        if lost.is_empty() {
            return Ok(Proof::Proven);
        }
        if self.ctx.opts.require_persistent {
            return Ok(Proof::Rejected(Rejection {
                why: format!(
                    "--require-persistent: fixes do not survive a restart of their sandbox clone: {}",
                    lost.join("; ")
                ),
                culprits: Some(culprits),
            }));
        }
        let w = format!(
            "fixes that do not survive a restart of their node (the target loses them when it restarts; --require-persistent rejects them): {}",
            lost.join("; ")
        );
        self.clock.say(&format!("warning: {w}"));
        self.f.warnings.push(w);
        Ok(Proof::Proven)
    }
}

/// The rejection of a plan whose run failed in the sandbox, pinned on the fixes whose steps
/// failed or timed out (each with the step's last words).
fn failed_run(items: &[vacsine_core::plan::PlanItem], run: &RunReport) -> Rejection {
    use vacsine_core::record::StepStatus;
    let culprits = culprits_of_records(
        items,
        &run.records,
        |r| matches!(r.status, StepStatus::Failed | StepStatus::TimedOut),
        |r| {
            // The step's last words say why better than its exit code.
            let said = r
                .stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| format!(" ({})", l.trim()))
                .unwrap_or_default();
            format!(
                "it failed in the sandbox: step {} {}{}{said}",
                r.step_id,
                r.status,
                r.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )
        },
    );
    Rejection {
        why: format!(
            "the remediation failed in the sandbox ({})",
            failed_step(run)
        ),
        culprits,
    }
}

/// The rejection of a plan whose second run changed something or did not succeed, pinned on
/// the fixes of those steps.
fn not_idempotent(items: &[vacsine_core::plan::PlanItem], again: &RunReport) -> Rejection {
    let bad = |r: &StepRecord| r.changed || !r.status.is_ok();
    let what: Vec<String> = again
        .records
        .iter()
        .filter(|r| bad(r))
        .map(|r| format!("{} on {}", r.step_id, r.node.as_deref().unwrap_or("-")))
        .collect();
    let culprits = culprits_of_records(items, &again.records, bad, |r| {
        format!(
            "it is not idempotent: a second run {} step {}",
            if r.status.is_ok() {
                "changed".to_string()
            } else {
                format!("ended {} at", r.status)
            },
            r.step_id
        )
    });
    Rejection {
        why: format!(
            "the remediation is not idempotent: a second run changed {}",
            what.join(", ")
        ),
        culprits,
    }
}

/// The fixes (by plan index: `persistence` gives one entry per plan item, in plan order) that
/// do not survive a restart, each with why, as `--require-persistent` rejects them.
fn not_persistent(fixes: &[FixPersistence]) -> Vec<(usize, String)> {
    fixes
        .iter()
        .enumerate()
        .filter(|(_, x)| !x.persistent)
        .map(|(i, x)| {
            (
                i,
                format!(
                    "--require-persistent: it does not survive a restart of its sandbox clone ({})",
                    x.lost.join("; ")
                ),
            )
        })
        .collect()
}

/// Apply the proven `the_plan` to the target, verify it there, and roll back exactly that
/// run when verification fails.
async fn on_target(
    ctx: Enforcing<'_>,
    clock: &mut Clock,
    f: &mut Findings,
    the_plan: &Plan,
) -> Result<Course, EnforceError> {
    let (inputs, opts, engine) = (ctx.inputs, ctx.opts, ctx.engine);
    let site = ctx.resolved.as_site();
    let policy = &inputs.policy.doc;
    let target_name = &inputs.target.doc.metadata.name.value;
    let targeted = targeted(the_plan);
    if let Some(h) = &opts.hook {
        h(HookPoint::BeforeTargetApply).await;
    }
    let run = clock
        .phase(
            "apply to target",
            engine.run(plan_request(
                inputs,
                opts,
                the_plan,
                node_map(site, the_plan)?,
                target_name,
            )),
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
        let fixes = the_plan.items.len();
        return Ok(if f.held_back.is_empty() {
            Course::Applied { fixes }
        } else {
            Course::PartiallyApplied { fixes }
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
        held_back: f.held_back.clone(),
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
        fixes: f.fixes,
        warnings: f.warnings,
        availability: AvailabilityReport::default(),
    }
}

/// Pause between the starts of two probes of one availability guard during enforce.
pub const AVAILABILITY_INTERVAL: Duration = Duration::from_millis(250);
/// Deadline of one availability probe; the check's own timeout (2 s by default for network
/// probes) usually ends a probe first.
pub const AVAILABILITY_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of the phase the pipeline is in, shared with the availability monitor.
type PhaseName = Arc<Mutex<String>>;

fn set_phase(p: &PhaseName, name: String) {
    *p.lock().unwrap_or_else(|e| e.into_inner()) = name;
}

/// Probes of one guard on one node, and its outages (pure bookkeeping).
#[derive(Debug, Default)]
pub struct GuardTally {
    probes: u32,
    failed: u32,
    longest: Duration,
    /// Start of the first failed probe of the current outage.
    outage_since: Option<Instant>,
    phases: Vec<PhaseAvailability>,
    last_failure: Option<String>,
}

impl GuardTally {
    /// One probe started at `at` during `phase`: passed (`failure` None) or failed with what
    /// it observed.
    pub fn record(&mut self, at: Instant, phase: &str, failure: Option<String>) {
        self.probes += 1;
        let i = match self.phases.iter().position(|p| p.phase == phase) {
            Some(i) => i,
            None => {
                self.phases.push(PhaseAvailability {
                    phase: phase.to_string(),
                    ..Default::default()
                });
                self.phases.len() - 1
            }
        };
        self.phases[i].probes += 1;
        match failure {
            None => {
                if let Some(since) = self.outage_since.take() {
                    self.longest = self.longest.max(at.saturating_duration_since(since));
                }
            }
            Some(what) => {
                self.failed += 1;
                self.phases[i].failed += 1;
                self.outage_since.get_or_insert(at);
                self.last_failure = Some(what);
            }
        }
    }
    /// The tally when the watch ends at `end` (an outage still going lasts until then).
    pub fn finish(mut self, end: Instant, requirement: &str, node: &str) -> GuardAvailability {
        if let Some(since) = self.outage_since.take() {
            self.longest = self.longest.max(end.saturating_duration_since(since));
        }
        GuardAvailability {
            requirement: requirement.to_string(),
            node: node.to_string(),
            probes: self.probes,
            failed: self.failed,
            longest_outage_ms: self.longest.as_millis() as u64,
            phases: self.phases,
            last_failure: self.last_failure,
        }
    }
}

/// A background task probing the target's availability guards until [`finish`] (or until it
/// is dropped, which aborts it).
///
/// [`finish`]: AvailabilityMonitor::finish
struct AvailabilityMonitor {
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<AvailabilityReport>>,
}

impl AvailabilityMonitor {
    fn start(
        site: Arc<dyn Site>,
        guards: Vec<(Requirement, String)>,
        phase: PhaseName,
        interval: Duration,
        probe_timeout: Duration,
    ) -> Self {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let loops = guards.iter().map(|(req, node)| {
                let site = site.clone();
                let phase = phase.clone();
                let mut stop = stop_rx.clone();
                async move {
                    let mut tally = GuardTally::default();
                    let mut next = tokio::time::Instant::now();
                    loop {
                        if *stop.borrow_and_update() {
                            break;
                        }
                        let at = Instant::now();
                        let during = phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let probe = tokio::time::timeout(
                            probe_timeout,
                            check_requirement(site.as_ref(), req, node),
                        );
                        // A probe still running when the watch ends is not counted.
                        let got = tokio::select! {
                            r = probe => r,
                            _ = stop.changed() => break,
                        };
                        let failure = match got {
                            Ok(r) if !r.outcome.is_problem() => None,
                            Ok(r) => Some(format!("{}: {} ({})", r.outcome, r.observed, r.message)),
                            Err(_) => Some(format!(
                                "no answer within {} ms",
                                probe_timeout.as_millis()
                            )),
                        };
                        if let Some(f) = &failure {
                            tracing::info!(target: "vacsine::enforce", "availability guard {} on {node} failed during {during}: {f}", req.id.value);
                        }
                        tally.record(at, &during, failure);
                        next += interval;
                        let now = tokio::time::Instant::now();
                        if next < now {
                            next = now;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep_until(next) => {}
                            _ = stop.changed() => break,
                        }
                    }
                    tally.finish(Instant::now(), &req.id.value, node)
                }
            });
            let guards = futures_util::future::join_all(loops).await;
            AvailabilityReport {
                interval_ms: interval.as_millis() as u64,
                probe_timeout_ms: probe_timeout.as_millis() as u64,
                duration_ms: started.elapsed().as_millis() as u64,
                guards,
            }
        });
        AvailabilityMonitor {
            stop,
            task: Some(task),
        }
    }

    /// Stop the probes and return what they measured.
    async fn finish(mut self) -> AvailabilityReport {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(t) => t.await.unwrap_or_default(),
            None => AvailabilityReport::default(),
        }
    }
}

impl Drop for AvailabilityMonitor {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vacsine_core::plan::PlanItem;
    use vacsine_core::policy::{Disruption, Severity, Strategy};

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
    fn seen(req: &str, node: &str, outcome: Outcome) -> CheckResult {
        CheckResult {
            requirement: req.into(),
            node: node.into(),
            outcome,
            observed: format!("{req} seen"),
            message: String::new(),
            title: req.into(),
            severity: Severity::High,
            kind: RequirementKind::Security,
        }
    }

    /// A fix is persistent when every requirement it targets on its node passes after the
    /// restart; the others are named with their outcome and observation.
    #[test]
    fn persistence_names_what_did_not_survive() {
        let items = [
            item("file-fix", "a", &["r1", "r2"]),
            item("nft-fix", "a", &["r3"]),
            item("same-req-other-node", "b", &["r1"]),
            item("unchecked", "a", &["r9"]),
        ];
        let after = [
            seen("r1", "a", Outcome::Pass),
            seen("r2", "a", Outcome::Pass),
            seen("r3", "a", Outcome::Fail),
            seen("r1", "b", Outcome::Error),
        ];
        let p = persistence(&items, &after);
        let got: Vec<(bool, Vec<String>)> =
            p.iter().map(|x| (x.persistent, x.lost.clone())).collect();
        assert_eq!(
            got,
            vec![
                (true, vec![]),
                (
                    false,
                    vec!["r3 is fail after the restart (observed: r3 seen)".to_string()]
                ),
                (
                    false,
                    vec!["r1 is error after the restart (observed: r1 seen)".to_string()]
                ),
                (
                    false,
                    vec!["r9 was not checked after the restart".to_string()]
                ),
            ]
        );
        assert!(p[1].to_string().contains("NOT persistent"));
    }

    /// Outages run from the first failed probe to the next passing one, or to the end of
    /// the watch; failures are attributed to the phase they happened in.
    #[test]
    fn guard_tally_measures_the_longest_outage() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let bad = || Some("fail: refused".to_string());
        let mut t = GuardTally::default();
        t.record(ms(0), "clone sandbox", None);
        t.record(ms(250), "clone sandbox", bad());
        t.record(ms(500), "apply to target", bad());
        t.record(ms(750), "apply to target", None); // outage of 500 ms
        t.record(ms(1000), "apply to target", bad());
        t.record(ms(1250), "verify target", None); // outage of 250 ms
        let g = t.finish(ms(1300), "web-up", "web");
        assert_eq!((g.probes, g.failed, g.longest_outage_ms), (6, 3, 500));
        assert_eq!(
            g.phases,
            vec![
                PhaseAvailability {
                    phase: "clone sandbox".into(),
                    probes: 2,
                    failed: 1
                },
                PhaseAvailability {
                    phase: "apply to target".into(),
                    probes: 3,
                    failed: 2
                },
                PhaseAvailability {
                    phase: "verify target".into(),
                    probes: 1,
                    failed: 0
                },
            ]
        );
        assert_eq!(g.last_failure.as_deref(), Some("fail: refused"));
        let shown = g.to_string();
        assert!(
            shown.starts_with("web-up on web: 6 probes, 3 failed, longest outage 500 ms"),
            "{shown}"
        );
        assert!(shown.contains("apply to target 2/3"), "{shown}");
        // Still down at the end: the outage lasts until the watch ends.
        let mut t = GuardTally::default();
        t.record(ms(0), "p", None);
        t.record(ms(100), "p", bad());
        let g = t.finish(ms(2100), "web-up", "web");
        assert_eq!((g.failed, g.longest_outage_ms), (1, 2000));
        // Never down.
        let mut t = GuardTally::default();
        for i in 0..10 {
            t.record(ms(i * 250), "p", None);
        }
        let g = t.finish(ms(3000), "web-up", "web");
        assert_eq!((g.probes, g.failed, g.longest_outage_ms), (10, 0, 0));
        assert!(g.last_failure.is_none());
    }

    /// Issue 6: sandbox runs were listed under the target's own name.
    #[test]
    fn issue6_sandbox_runs_are_named_after_their_sandbox() {
        let n = sandbox_target_name("edge-site", "sbx-0123456789ab");
        assert_eq!(n, "edge-site (sandbox sbx-0123456789ab)");
        assert_ne!(n, "edge-site");
    }

    /// Issue 18: another round only when the rejection names some (not all) fixes, without
    /// --all-or-nothing, within the round budget.
    #[test]
    fn issue18_another_round_only_for_a_pinned_partial_rejection() {
        let r = |c: Option<Vec<usize>>| Rejection {
            why: "w".into(),
            culprits: c.map(|v| v.into_iter().map(|i| (i, String::new())).collect()),
        };
        let o = EnforceOptions::default();
        assert!(goes_on(&r(Some(vec![0])), &o, 1, 3));
        assert!(!goes_on(&r(Some(vec![0, 1, 2])), &o, 1, 3));
        assert!(!goes_on(&r(None), &o, 1, 3));
        assert!(!goes_on(&r(Some(vec![])), &o, 1, 3));
        assert!(!goes_on(&r(Some(vec![0])), &o, MAX_SANDBOX_ROUNDS, 3));
        let aon = EnforceOptions {
            all_or_nothing: true,
            ..Default::default()
        };
        assert!(!goes_on(&r(Some(vec![0])), &aon, 1, 3));
    }

    /// Before any sandbox: a guard down stops the pipeline (unless --force), then nothing
    /// failing, then nothing fixable.
    #[test]
    fn early_course_guards_then_nothing_to_fix_then_nothing_fixable() {
        let guard = |o| CheckResult {
            kind: RequirementKind::Availability,
            message: "refused".into(),
            ..seen("web-up", "web", o)
        };
        let o = EnforceOptions::default();
        let force = EnforceOptions {
            force: true,
            ..Default::default()
        };
        let down = [guard(Outcome::Fail), seen("r1", "a", Outcome::Fail)];
        assert_eq!(
            early_course(&down, false, &o),
            Some(Course::GuardsDown(vec![
                "web-up on web is fail: refused".to_string()
            ]))
        );
        assert_eq!(early_course(&down, false, &force), None);
        assert_eq!(
            early_course(&down, true, &force),
            Some(Course::NothingFixable)
        );
        let fine = [guard(Outcome::Pass), seen("r1", "a", Outcome::Pass)];
        assert_eq!(early_course(&fine, true, &o), Some(Course::NothingToFix));
        let failing = [guard(Outcome::Pass), seen("r1", "a", Outcome::Fail)];
        assert_eq!(
            early_course(&failing, true, &o),
            Some(Course::NothingFixable)
        );
        assert_eq!(early_course(&failing, false, &o), None);
    }

    #[test]
    fn not_persistent_fixes_are_named_by_plan_index() {
        let items = [item("a-fix", "a", &["r1"]), item("b-fix", "b", &["r2"])];
        let fixes = persistence(&items, &[seen("r1", "a", Outcome::Pass)]);
        assert_eq!(
            not_persistent(&fixes),
            vec![(
                1,
                "--require-persistent: it does not survive a restart of its sandbox clone (r2 was not checked after the restart)".to_string()
            )]
        );
    }
}
