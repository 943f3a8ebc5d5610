//! Keeping a policy in effect on a target (`vacsine watch`). Fixes that live only in a
//! running node (nft tables and runtime sysctls of its network namespace) are lost when the
//! node restarts; `watch` follows the driver's node events and, when a node (re)starts,
//! re-applies the fixes the journal says were applied to it, through the same engine, then
//! re-checks the policy on that node and logs the latency from the start event.
//!
//! What was applied comes from the journal: every succeeded run of the plan's workflow
//! (`remediate-<policy>`, see [`plan_workflow_name`]) under the target's name — the target
//! application of `vacsine enforce` (sandbox runs carry their sandbox in their target name)
//! and the re-applications of `watch` itself, journaled the same way. Each of those runs keeps
//! its workflow: one `workflow` step per fix, with the catalog workflow, its inputs and its
//! node. The latest application of a catalog workflow on a node wins (new inputs replace old).
//!
//! [`Watcher::run`] follows the driver's node events and handles each start concurrently (one
//! re-application at a time per node); what it does is told through a [`LogSink`], one
//! [`LogLine`] per event. It runs inside a tokio `LocalSet` (checking a site is not a `Send`
//! future). The CLI chooses the driver, opens the journal, prints the lines and stops it on a
//! signal.

use crate::check::{check_site, CheckResult};
use crate::inputs::Inputs;
use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use vacsine_core::doc::Loc;
use vacsine_core::driver::{Driver, DriverError, NodeEvent, NodeEventKind};
use vacsine_core::node::{NodeOps, Observation, Site};
use vacsine_core::plan::plan_workflow_name;
use vacsine_core::policy::{Check, Policy};
use vacsine_core::record::{rfc3339, StepStatus};
use vacsine_core::target::ResolvedNode;
use vacsine_core::workflow::{RunsOn, Step, Workflow, WorkflowSpec};
use vacsine_core::Outcome;
use vacsine_engine::{CancelToken, Engine, Journal, NodeMap, RunRequest, RunStatus, RunSummary};

/// First pause between two re-checks of a restarted node; doubles up to 2 s.
const RECHECK_FIRST_BACKOFF: Duration = Duration::from_millis(100);
const RECHECK_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Identical re-checks in a row after which the node is taken as settled (its fixed
/// requirements pass, others may fail for reasons of their own).
const SETTLED_AFTER: usize = 3;

/// A fix applied to a node, as journaled: the plan's step (catalog workflow, inputs, node).
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedFix {
    /// The catalog workflow (`with.workflow` of the plan step).
    pub workflow: String,
    pub inputs: Map<String, Value>,
    /// The plan step as journaled.
    pub step: Step,
    /// The run that applied it last.
    pub run_id: String,
}

/// The fixes applied to `node`, from the journaled runs (oldest first) and their workflows
/// (pure). Only succeeded runs count (a failed run was compensated, a rolled back one undone);
/// the latest application of a catalog workflow replaces an earlier one, in the order of the
/// latest applications.
pub fn applied_fixes(runs: &[(RunSummary, Workflow)], node: &str) -> Vec<AppliedFix> {
    let mut out: Vec<AppliedFix> = Vec::new();
    for (run, w) in runs {
        if run.status != RunStatus::Succeeded {
            continue;
        }
        for s in &w.spec.steps {
            if s.uses.value != vacsine_engine::executor::WORKFLOW_EXECUTOR {
                continue;
            }
            if s.runs_on != Some(RunsOn::Node(node.to_string())) {
                continue;
            }
            let Some(Value::String(wf)) = s.with.get("workflow") else {
                continue;
            };
            let inputs = match s.with.get("inputs") {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
            out.retain(|f| &f.workflow != wf);
            out.push(AppliedFix {
                workflow: wf.clone(),
                inputs,
                step: s.clone(),
                run_id: run.id.clone(),
            });
        }
    }
    out
}

/// The workflow that re-applies `fixes` on their node, one after the other (step ids kept,
/// made unique), named like the plan so that the journal lists it with enforce's runs (pure).
pub fn reapply_workflow(name: &str, node: &str, fixes: &[AppliedFix]) -> Workflow {
    let mut steps: Vec<Step> = Vec::new();
    let mut ids = BTreeSet::new();
    for f in fixes {
        let mut s = f.step.clone();
        let base = s.id.value.clone();
        let mut id = base.clone();
        let mut n = 2;
        while !ids.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        s.id = Loc::new(id);
        s.needs = steps
            .last()
            .map(|p| vec![Loc::new(p.id.value.clone())])
            .unwrap_or_default();
        steps.push(s);
    }
    Workflow::new(
        name,
        Some(format!(
            "Re-application by vacsine watch of the fixes applied to node {node}, after it restarted"
        )),
        WorkflowSpec {
            steps,
            ..Default::default()
        },
    )
}

/// The requirements of `policy` checked on `node` whose fixes include one of `workflows`:
/// the ones the re-applied fixes are meant to hold (pure).
pub fn held_by(policy: &Policy, node: &ResolvedNode, workflows: &[&str]) -> BTreeSet<String> {
    policy
        .spec
        .requirements
        .iter()
        .filter(|r| r.nodes.matches(&node.name, &node.roles, &node.labels))
        .filter(|r| {
            r.fixes
                .iter()
                .any(|f| workflows.contains(&f.uses.value.as_str()))
        })
        .map(|r| r.id.value.clone())
        .collect()
}

/// A site reduced to one of its nodes, so a re-check observes only the node that restarted.
struct OneNode {
    site: Arc<dyn Site>,
    node: ResolvedNode,
}

#[async_trait]
impl Site for OneNode {
    fn nodes(&self) -> Vec<ResolvedNode> {
        vec![self.node.clone()]
    }
    fn node_ops(&self, name: &str) -> Option<Arc<dyn NodeOps>> {
        (name == self.node.name)
            .then(|| self.site.node_ops(name))
            .flatten()
    }
    async fn observe(&self, node: &str, check: &Check) -> Observation {
        self.site.observe(node, check).await
    }
}

/// Outcome of one requirement after a re-application.
#[derive(Debug, Clone, Serialize)]
pub struct RequirementOutcome {
    pub requirement: String,
    pub outcome: Outcome,
    pub observed: String,
    /// Whether a re-applied fix is meant to hold it.
    pub fixed_by_watch: bool,
}

/// One fix as re-applied.
#[derive(Debug, Clone, Serialize)]
pub struct FixLine {
    pub workflow: String,
    pub step: String,
    pub inputs: Map<String, Value>,
    /// The step's status in the re-application (`not_run` when the run stopped before it).
    pub status: String,
    /// Whether it changed the node (false: its state had survived the restart).
    pub changed: bool,
}

/// One line of the log (`--format json`: one JSON object per line).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogLine {
    /// The watch started following the target.
    Watching {
        target: String,
        policy: String,
        journal: String,
        /// Node → catalog workflows applied to it, as the journal says now.
        applied: BTreeMap<String, Vec<String>>,
    },
    /// A node (re)started, and what was done about it.
    NodeStarted(Box<StartLine>),
    /// A node was removed; the watch goes on (it may come back).
    NodeRemoved {
        node: String,
        container: String,
        event_time: String,
    },
    /// The event stream was lost; it reconnects from the last event seen.
    StreamError { message: String },
    /// The watch stopped: `SIGINT`, `SIGTERM` (exit 0), or the event stream cannot go on
    /// (exit 1).
    Stopped { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct StartLine {
    /// The node's name in the target (or the container when it is not a node any more).
    pub node: String,
    pub container: String,
    /// When the driver's platform saw the start (RFC 3339).
    pub event_time: String,
    /// `reapplied` (state back, held requirements pass), `not_in_effect` (re-applied but a
    /// held requirement still fails), `reapply_failed`, `nothing_to_reapply` (no fix was
    /// applied to the node), `error` (the node could not be reached or read).
    pub status: String,
    /// Start event → event received here (ms).
    pub detected_ms: Option<u64>,
    pub fixes: Vec<FixLine>,
    pub run_id: Option<String>,
    /// Start event → re-application finished, state back on the node (ms).
    pub latency_ms: Option<u64>,
    /// Start event → the requirements the fixes hold first seen passing (ms).
    pub verified_ms: Option<u64>,
    /// The policy's requirements on this node after the re-application.
    pub requirements: Vec<RequirementOutcome>,
    pub rechecks: u32,
    pub message: Option<String>,
}

fn ms_between(from: SystemTime, to: SystemTime) -> u64 {
    to.duration_since(from)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn time_text(t: SystemTime) -> String {
    rfc3339(chrono::DateTime::<chrono::Utc>::from(t))
}

/// Where a watch tells what it does: one call per line, whole (handlers run concurrently).
pub type LogSink = Arc<dyn Fn(&LogLine) + Send + Sync>;

/// Why [`Watcher::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The `stop` future ended (a signal): its reason was logged.
    Asked,
    /// The driver's event stream cannot go on.
    StreamEnded,
}

/// The catalog workflows applied to each node, as the journaled `runs` say (pure).
pub fn applied_by_node(runs: &[(RunSummary, Workflow)]) -> BTreeMap<String, Vec<String>> {
    let nodes: BTreeSet<String> = runs
        .iter()
        .flat_map(|(_, w)| w.spec.steps.iter())
        .filter_map(|s| match &s.runs_on {
            Some(RunsOn::Node(n)) => Some(n.clone()),
            _ => None,
        })
        .collect();
    let mut applied = BTreeMap::new();
    for n in nodes {
        let fixes = applied_fixes(runs, &n);
        if !fixes.is_empty() {
            applied.insert(n, fixes.into_iter().map(|f| f.workflow).collect());
        }
    }
    applied
}

impl Watcher {
    /// A watch of `inputs`' target through `driver`, re-applying with an engine on `journal`;
    /// a re-checked node is given `recheck_deadline` to settle.
    pub fn new(
        inputs: Inputs,
        driver: Arc<dyn Driver>,
        journal: Journal,
        recheck_deadline: Duration,
        log: LogSink,
    ) -> Arc<Self> {
        let workflow_name = plan_workflow_name(&inputs.policy.doc.metadata.name.value);
        let engine = Engine::new(journal.clone(), crate::engine_catalog(&inputs.catalog));
        Arc::new(Watcher {
            driver,
            journal,
            engine,
            workflow_name,
            recheck_deadline,
            cancel: CancelToken::new(),
            log,
            node_locks: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            inputs,
        })
    }

    /// Follow the target's node events until `stop` ends (its output is the reason logged)
    /// or the event stream cannot go on. Logs `watching` once subscribed (`journal` names the
    /// journal in it), one line per event, and `stopped`. Re-applications under way when it
    /// stops are cancelled (journaled `cancelled`, resumable) and awaited. Must run inside a
    /// `LocalSet`.
    pub async fn run(
        self: &Arc<Self>,
        journal: String,
        stop: impl Future<Output = &'static str>,
    ) -> Result<Stopped, DriverError> {
        let applied = match self.journaled_runs() {
            Ok(runs) => applied_by_node(&runs),
            Err(_) => BTreeMap::new(),
        };
        // Best effort (a node may be down now): which container is which node.
        if let Ok(site) = self.driver.resolve(&self.inputs.target.doc).await {
            self.remember(site.as_site());
        }
        // Subscribe before saying so: events from here on are delivered.
        let mut events = self.driver.node_events(&self.inputs.target.doc).await?;
        (self.log)(&LogLine::Watching {
            target: self.target_name().to_string(),
            policy: self.inputs.policy.doc.metadata.name.value.clone(),
            journal,
            applied,
        });
        tokio::pin!(stop);
        let mut tasks = tokio::task::JoinSet::new();
        let (stopped, reason) = loop {
            tokio::select! {
                reason = &mut stop => break (Stopped::Asked, reason),
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        let received = SystemTime::now();
                        match ev.kind {
                            NodeEventKind::Started => {
                                let me = self.clone();
                                tasks.spawn_local(async move { on_start(&me, ev, received).await });
                            }
                            NodeEventKind::Removed => {
                                let node = node_name_of(self, &ev.handle);
                                (self.log)(&LogLine::NodeRemoved {
                                    node,
                                    container: ev.handle.clone(),
                                    event_time: time_text(ev.at),
                                });
                            }
                            _ => {}
                        }
                    }
                    Some(Err(e)) => (self.log)(&LogLine::StreamError { message: e.to_string() }),
                    None => break (Stopped::StreamEnded, "end of the event stream"),
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        };
        self.cancel.cancel();
        let _ = tokio::time::timeout(
            vacsine_engine::CANCEL_GRACE + Duration::from_secs(2),
            async { while tasks.join_next().await.is_some() {} },
        )
        .await;
        (self.log)(&LogLine::Stopped {
            reason: reason.to_string(),
        });
        Ok(stopped)
    }
}

/// A watch of one target: what every event handler shares. Made by [`Watcher::new`], run
/// by [`Watcher::run`].
pub struct Watcher {
    inputs: Inputs,
    driver: Arc<dyn Driver>,
    journal: Journal,
    engine: Engine,
    /// `remediate-<policy>`.
    workflow_name: String,
    recheck_deadline: Duration,
    cancel: CancelToken,
    log: LogSink,
    /// One re-application at a time per node.
    node_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Container → node name, as last resolved (names removed containers in the log).
    known: Mutex<HashMap<String, String>>,
}

impl Watcher {
    fn target_name(&self) -> &str {
        &self.inputs.target.doc.metadata.name.value
    }

    /// The journaled runs of the plan on this target, with their workflows, oldest first.
    pub fn journaled_runs(&self) -> Result<Vec<(RunSummary, Workflow)>, String> {
        let runs = self
            .journal
            .runs_of(self.target_name(), &self.workflow_name)
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for r in runs {
            if r.status != RunStatus::Succeeded {
                continue;
            }
            let Some(json) = self
                .journal
                .run_workflow(&r.id)
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            let w: Workflow = serde_json::from_str(&json)
                .map_err(|e| format!("run {}: the journaled workflow cannot be read: {e}", r.id))?;
            out.push((r, w));
        }
        Ok(out)
    }

    fn remember(&self, site: &dyn Site) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for n in site.nodes() {
            known.insert(n.handle, n.name);
        }
    }

    fn node_lock(&self, node: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.node_locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(node.to_string()).or_default().clone()
    }
}

/// The node a container is in the target: as last resolved, else as the target names it
/// (`container:` nodes), else the container's own name.
fn node_name_of(ctx: &Watcher, handle: &str) -> String {
    let known = ctx.known.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = known.get(handle) {
        return n.clone();
    }
    ctx.inputs
        .target
        .doc
        .spec
        .nodes
        .iter()
        .find(|n| n.container.as_ref().is_some_and(|c| c.value == handle))
        .and_then(|n| n.name.as_ref().map(|x| x.value.clone()))
        .unwrap_or_else(|| handle.to_string())
}

async fn on_start(ctx: &Watcher, ev: NodeEvent, received: SystemTime) {
    let mut line = StartLine {
        node: node_name_of(ctx, &ev.handle),
        container: ev.handle.clone(),
        event_time: time_text(ev.at),
        status: "error".into(),
        detected_ms: Some(ms_between(ev.at, received)),
        fixes: Vec::new(),
        run_id: None,
        latency_ms: None,
        verified_ms: None,
        requirements: Vec::new(),
        rechecks: 0,
        message: None,
    };
    if let Err(e) = reapply(ctx, &ev, &mut line).await {
        line.status = "error".into();
        line.message = Some(e);
    }
    (ctx.log)(&LogLine::NodeStarted(Box::new(line)));
}

async fn reapply(ctx: &Watcher, ev: &NodeEvent, line: &mut StartLine) -> Result<(), String> {
    let site = ctx
        .driver
        .resolve(&ctx.inputs.target.doc)
        .await
        .map_err(|e| format!("cannot resolve the target: {e}"))?
        .into_site();
    ctx.remember(site.as_ref());
    let node = site
        .nodes()
        .into_iter()
        .find(|n| n.handle == ev.handle)
        .ok_or_else(|| {
            format!(
                "container `{}` is not a node of the target (any more)",
                ev.handle
            )
        })?;
    line.node = node.name.clone();
    let _guard = ctx.node_lock(&node.name).lock_owned().await;
    let fixes = applied_fixes(&ctx.journaled_runs()?, &node.name);
    if fixes.is_empty() {
        line.status = "nothing_to_reapply".into();
        return Ok(());
    }
    let ops = site
        .node_ops(&node.name)
        .ok_or_else(|| format!("node `{}` has no operations", node.name))?;
    let mut nodes = NodeMap::new();
    nodes.insert(node.name.clone(), ops);
    let workflow = reapply_workflow(&ctx.workflow_name, &node.name, &fixes);
    let req = RunRequest {
        workflow,
        inputs: Map::new(),
        nodes,
        default_node: None,
        target_name: ctx.target_name().to_string(),
        labels: ctx.inputs.target.doc.metadata.labels.clone(),
        progress: None,
        observer: Some(site.clone()),
        cancel: ctx.cancel.clone(),
        run_id: None,
    };
    let run = ctx
        .engine
        .run(req)
        .await
        .map_err(|e| format!("the re-application could not start: {e}"))?;
    let done = SystemTime::now();
    line.latency_ms = Some(ms_between(ev.at, done));
    line.run_id = Some(run.run_id.clone());
    line.fixes = fix_lines(&fixes, &run.records, &node.name);
    let workflows: Vec<&str> = fixes.iter().map(|f| f.workflow.as_str()).collect();
    let held = held_by(&ctx.inputs.policy.doc, &node, &workflows);
    let one = OneNode {
        site,
        node: node.clone(),
    };
    let (results, checks, verified) = recheck(
        &ctx.inputs.policy.doc,
        &one,
        &held,
        if run.status == RunStatus::Succeeded {
            ctx.recheck_deadline
        } else {
            Duration::ZERO
        },
    )
    .await;
    line.verified_ms = verified.map(|t| ms_between(ev.at, t));
    line.rechecks = checks;
    line.requirements = results
        .iter()
        .map(|r| RequirementOutcome {
            requirement: r.requirement.clone(),
            outcome: r.outcome,
            observed: r.observed.clone(),
            fixed_by_watch: held.contains(&r.requirement),
        })
        .collect();
    let held_pass = results
        .iter()
        .filter(|r| held.contains(&r.requirement))
        .all(|r| r.outcome == Outcome::Pass);
    if run.status != RunStatus::Succeeded {
        line.message = Some(format!(
            "run {} {}{}",
            run.run_id,
            run.status,
            run.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    line.status = start_status(run.status, held_pass).into();
    Ok(())
}

/// Each re-applied fix as its step ended on `node` in `records` (`not_run` when the run
/// stopped before it; `changed` only when it succeeded and changed the node).
fn fix_lines(
    fixes: &[AppliedFix],
    records: &[vacsine_core::record::StepRecord],
    node: &str,
) -> Vec<FixLine> {
    fixes
        .iter()
        .map(|f| {
            let rec = records
                .iter()
                .rev()
                .find(|r| r.step_id == f.step.id.value && r.node.as_deref() == Some(node));
            FixLine {
                workflow: f.workflow.clone(),
                step: f.step.id.value.clone(),
                inputs: f.inputs.clone(),
                status: rec
                    .map(|r| r.status.to_string())
                    .unwrap_or_else(|| "not_run".into()),
                changed: rec.is_some_and(|r| r.changed && r.status == StepStatus::Succeeded),
            }
        })
        .collect()
}

/// The status of a start line once the re-application ran (pure): `reapply_failed` when the
/// run did not succeed, `reapplied` when the held requirements pass, else `not_in_effect`.
fn start_status(run: RunStatus, held_pass: bool) -> &'static str {
    if run != RunStatus::Succeeded {
        "reapply_failed"
    } else if held_pass {
        "reapplied"
    } else {
        "not_in_effect"
    }
}

/// Check the node until every requirement passes, or the requirements the fixes hold pass and
/// [`SETTLED_AFTER`] checks in a row agree (services still starting make the others change),
/// or `deadline` passes. Returns the last results, how many checks ran, and when the held
/// requirements were first seen passing.
async fn recheck(
    policy: &Policy,
    site: &OneNode,
    held: &BTreeSet<String>,
    deadline: Duration,
) -> (Vec<CheckResult>, u32, Option<SystemTime>) {
    let until = Instant::now() + deadline;
    let mut backoff = RECHECK_FIRST_BACKOFF;
    let mut checks = 0;
    let mut verified = None;
    let mut same = 0;
    let mut previous: Option<Vec<Outcome>> = None;
    loop {
        checks += 1;
        let results = check_site(policy, site).await;
        let now: Vec<Outcome> = results.iter().map(|r| r.outcome).collect();
        let held_pass = results
            .iter()
            .filter(|r| held.contains(&r.requirement))
            .all(|r| r.outcome == Outcome::Pass);
        if held_pass && verified.is_none() {
            verified = Some(SystemTime::now());
        }
        same = if previous.as_ref() == Some(&now) {
            same + 1
        } else {
            1
        };
        previous = Some(now);
        let all_pass = results
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Pass | Outcome::NotApplicable));
        let left = until.saturating_duration_since(Instant::now());
        if all_pass || (held_pass && same >= SETTLED_AFTER) || left.is_zero() {
            return (results, checks, verified);
        }
        tokio::time::sleep(backoff.min(left)).await;
        backoff = (backoff * 2).min(RECHECK_MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, status: RunStatus) -> RunSummary {
        RunSummary {
            id: id.into(),
            workflow: "remediate-p".into(),
            target: "t".into(),
            status,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: None,
            message: None,
        }
    }

    fn plan_step(id: &str, node: &str, wf: &str, inputs: Value) -> Step {
        let mut with = BTreeMap::new();
        with.insert("workflow".to_string(), Value::String(wf.into()));
        with.insert("inputs".to_string(), inputs);
        Step {
            id: Loc::new(id.into()),
            name: None,
            uses: Loc::new("workflow".into()),
            with,
            needs: vec![],
            condition: None,
            retry: None,
            timeout: None,
            continue_on_error: false,
            runs_on: Some(RunsOn::Node(node.into())),
            idempotent: None,
            outputs: BTreeMap::new(),
        }
    }

    fn wf(steps: Vec<Step>) -> Workflow {
        Workflow::new(
            "remediate-p",
            None,
            WorkflowSpec {
                steps,
                ..Default::default()
            },
        )
    }

    /// A start line's status after a re-application, for each way the run can end.
    #[test]
    fn start_status_says_what_the_reapplication_left() {
        let cases = [
            (RunStatus::Succeeded, true, "reapplied"),
            (RunStatus::Succeeded, false, "not_in_effect"),
            (RunStatus::Failed, true, "reapply_failed"),
            (RunStatus::Cancelled, false, "reapply_failed"),
            (RunStatus::RolledBack, true, "reapply_failed"),
        ];
        for (run, held_pass, want) in cases {
            assert_eq!(start_status(run, held_pass), want, "{run:?} {held_pass}");
        }
    }

    /// Only succeeded runs count; the latest application of a catalog workflow on the node
    /// wins; other nodes' fixes are not this node's.
    #[test]
    fn applied_fixes_follow_the_journal() {
        let runs = vec![
            (
                run("r1", RunStatus::Succeeded),
                wf(vec![
                    plan_step(
                        "telnet--legacy",
                        "legacy",
                        "block-port",
                        serde_json::json!({"port": 23}),
                    ),
                    plan_step(
                        "fwd--legacy",
                        "legacy",
                        "set-sysctl",
                        serde_json::json!({"key": "net.ipv4.ip_forward", "value": "0"}),
                    ),
                    plan_step(
                        "telnet--web",
                        "web",
                        "block-port",
                        serde_json::json!({"port": 23}),
                    ),
                ]),
            ),
            (
                run("r2", RunStatus::RolledBack),
                wf(vec![plan_step(
                    "x--legacy",
                    "legacy",
                    "quarantine-node",
                    serde_json::json!({}),
                )]),
            ),
            (
                run("r3", RunStatus::Failed),
                wf(vec![plan_step(
                    "y--legacy",
                    "legacy",
                    "harden-sshd",
                    serde_json::json!({}),
                )]),
            ),
            (
                run("r4", RunStatus::Succeeded),
                wf(vec![plan_step(
                    "telnet--legacy",
                    "legacy",
                    "block-port",
                    serde_json::json!({"port": 2323}),
                )]),
            ),
        ];
        let got = applied_fixes(&runs, "legacy");
        let summary: Vec<(&str, &str, Value)> = got
            .iter()
            .map(|f| {
                (
                    f.workflow.as_str(),
                    f.run_id.as_str(),
                    Value::Object(f.inputs.clone()),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "set-sysctl",
                    "r1",
                    serde_json::json!({"key": "net.ipv4.ip_forward", "value": "0"})
                ),
                ("block-port", "r4", serde_json::json!({"port": 2323})),
            ]
        );
        assert_eq!(applied_fixes(&runs, "web").len(), 1);
        assert!(applied_fixes(&runs, "plain").is_empty());
    }

    /// The re-application runs the node's fixes in sequence, with unique ids, on that node.
    #[test]
    fn reapply_workflow_chains_the_fixes_and_validates() {
        let fixes: Vec<AppliedFix> = [
            ("block-port", serde_json::json!({"port": 23})),
            (
                "set-sysctl",
                serde_json::json!({"key": "net.ipv4.ip_forward", "value": "0"}),
            ),
            ("block-port", serde_json::json!({"port": 2323})),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (w, inputs))| AppliedFix {
            workflow: w.to_string(),
            inputs: Map::new(),
            step: plan_step("same--legacy", "legacy", w, inputs),
            run_id: format!("r{i}"),
        })
        .collect();
        let w = reapply_workflow("remediate-p", "legacy", &fixes);
        let ids: Vec<&str> = w.spec.steps.iter().map(|s| s.id.value.as_str()).collect();
        assert_eq!(ids, ["same--legacy", "same--legacy-2", "same--legacy-3"]);
        let needs: Vec<Vec<String>> = w
            .spec
            .steps
            .iter()
            .map(|s| s.needs.iter().map(|n| n.value.clone()).collect())
            .collect();
        assert_eq!(
            needs,
            vec![
                vec![],
                vec!["same--legacy".to_string()],
                vec!["same--legacy-2".to_string()]
            ]
        );
        assert!(w
            .spec
            .steps
            .iter()
            .all(|s| s.runs_on == Some(RunsOn::Node("legacy".into()))));
        // Valid for the engine, against the shipped catalog.
        let mut cat = crate::inputs::Catalog::default();
        let mut load_problems = Vec::new();
        cat.add_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog"),
            &mut load_problems,
        );
        assert!(load_problems.is_empty(), "{load_problems:?}");
        let problems = vacsine_engine::validate_workflow(&w, &crate::engine_catalog(&cat));
        assert!(problems.is_empty(), "{problems:?}");
    }
}
