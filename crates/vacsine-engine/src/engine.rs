//! Scheduling of workflow steps: DAG order with bounded concurrency, conditions, retries,
//! timeouts, fan-out over nodes, sub-workflows, journaling, resume and compensation.

use crate::executor::{
    message, ExecCtx, Executor, Registry, StepResult, UndoLog, WORKFLOW_EXECUTOR,
};
use crate::journal::{Journal, StoredRun};
use crate::template;
use crate::{validate, EngineError, RunStatus};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vacsine_core::dag::{self, State};
use vacsine_core::node::{NodeOps, Site};
use vacsine_core::record::{bound_stream, mask, rfc3339, Level, StepRecord, StepStatus};
use crate::inputs::coerce_inputs;
use vacsine_core::workflow::{parse_duration, RunsOn, Step, Workflow};

/// Nodes a run may use, by name.
pub type NodeMap = BTreeMap<String, Arc<dyn NodeOps>>;

/// Default deadline of a step without `timeout` (a `workflow` step without `timeout` has no
/// deadline of its own: its sub-run's steps have theirs; with `timeout`, the whole sub-run is
/// bounded).
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default number of steps run at once.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Deepest nesting of sub-workflows.
const MAX_DEPTH: usize = 8;

/// Workflows callable as sub-workflows, by `metadata.name`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    map: BTreeMap<String, Workflow>,
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, w: Workflow) {
        self.map.insert(w.metadata.name.value.clone(), w);
    }
    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.map.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl FromIterator<Workflow> for Catalog {
    fn from_iter<I: IntoIterator<Item = Workflow>>(iter: I) -> Self {
        let mut c = Catalog::new();
        for w in iter {
            c.insert(w);
        }
        c
    }
}

/// Live progress, for displays.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ProgressEvent {
    RunStarted {
        run_id: String,
        workflow: String,
    },
    StepStarted {
        run_id: String,
        step_id: String,
        node: Option<String>,
        attempt: u32,
    },
    StepFinished {
        run_id: String,
        step_id: String,
        node: Option<String>,
        attempt: u32,
        status: StepStatus,
        elapsed: Duration,
    },
    RunFinished {
        run_id: String,
        status: RunStatus,
        elapsed: Duration,
    },
}

pub type ProgressFn = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// What to run, where.
pub struct RunRequest {
    pub workflow: Workflow,
    /// Input values (strings are coerced to the declared types). Key `event`, if present and
    /// not a declared input, is the triggering event, available to templates as `event`.
    pub inputs: Map<String, Value>,
    pub nodes: NodeMap,
    /// Node for steps without `runsOn` (default: the only node, when there is exactly one).
    pub default_node: Option<String>,
    pub target_name: String,
    pub labels: BTreeMap<String, String>,
    pub progress: Option<ProgressFn>,
    /// Observer of checks on the site (needed by `wait-until`).
    pub observer: Option<Arc<dyn Site>>,
}

impl RunRequest {
    /// A request with no inputs, no nodes and no target labels.
    pub fn new(workflow: Workflow) -> Self {
        RunRequest {
            workflow,
            inputs: Map::new(),
            nodes: NodeMap::new(),
            default_node: None,
            target_name: String::new(),
            labels: BTreeMap::new(),
            progress: None,
            observer: None,
        }
    }
    /// Add a node under its own name.
    pub fn node(mut self, n: Arc<dyn NodeOps>) -> Self {
        self.nodes.insert(n.node().name.clone(), n);
        self
    }
    pub fn input(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.inputs.insert(k.into(), v.into());
        self
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub status: RunStatus,
    /// Every step record of the run, in the order they were started (secrets masked).
    pub records: Vec<StepRecord>,
    /// Whether any workflow step that stayed applied reported a change (undo and rollback
    /// records excluded).
    pub changed: bool,
    /// Outputs of each step that has some, by step id.
    pub outputs: Map<String, Value>,
    /// Why the run did not succeed, when it did not.
    pub message: Option<String>,
}

/// The engine. Cheap to share behind an `Arc`; runs are independent.
pub struct Engine {
    journal: Journal,
    catalog: Catalog,
    registry: Registry,
}

/// One run in progress.
struct RunCtx {
    run_id: String,
    nodes: NodeMap,
    target: Value,
    secrets: Mutex<Vec<String>>,
    progress: Option<ProgressFn>,
    observer: Option<Arc<dyn Site>>,
    /// Journaled records of an earlier process, by step id (resume).
    prior: BTreeMap<String, Vec<(i64, StepRecord)>>,
    /// Set when the run must stop (interrupted step found on resume).
    stop: Mutex<Option<String>>,
    started: Instant,
}

/// One workflow level (the run's workflow, or a sub-workflow).
struct Scope {
    /// Prefix of record step ids (`""`, or `"<step>/"` for a sub-workflow).
    prefix: String,
    inputs: Map<String, Value>,
    event: Value,
    secrets: Map<String, Value>,
    secret_env: Vec<(String, String)>,
    default_node: Option<String>,
    /// `steps.<id>` values for templates.
    steps: Mutex<Map<String, Value>>,
    depth: usize,
    /// When the whole level must be done (a `workflow` step's `timeout`): steps not started
    /// by then are cancelled, running ones get at most the time left.
    deadline: Option<Instant>,
}

impl Scope {
    /// The top level of a run (no prefix, no deadline).
    fn root(
        inputs: Map<String, Value>,
        event: Value,
        secrets: Map<String, Value>,
        secret_env: Vec<(String, String)>,
        default_node: Option<String>,
    ) -> Self {
        Scope {
            prefix: String::new(),
            inputs,
            event,
            secrets,
            secret_env,
            default_node,
            steps: Mutex::new(Map::new()),
            depth: 0,
            deadline: None,
        }
    }
}

impl Scope {
    fn context(&self, run: &RunCtx, node: Option<&Arc<dyn NodeOps>>) -> Value {
        let steps = self.steps.lock().map(|s| s.clone()).unwrap_or_default();
        let mut ctx = json!({
            "inputs": self.inputs,
            "steps": steps,
            "target": run.target,
            "secrets": self.secrets,
        });
        if !self.event.is_null() {
            ctx["event"] = self.event.clone();
        }
        if let Some(n) = node {
            let r = n.node();
            ctx["node"] =
                json!({"name": r.name, "roles": r.roles, "labels": r.labels, "driver": n.driver()});
        }
        ctx
    }

    fn set_step(&self, id: &str, v: Value) {
        if let Ok(mut s) = self.steps.lock() {
            s.insert(id.to_string(), v);
        }
    }
}

/// Result of one step over all its nodes.
struct StepOutcome {
    status: StepStatus,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

fn mask_value(v: &Value, secrets: &[String]) -> Value {
    match v {
        Value::String(s) => Value::String(mask(s, secrets)),
        Value::Array(a) => Value::Array(a.iter().map(|x| mask_value(x, secrets)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), mask_value(x, secrets)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn secret_env_name(name: &str) -> String {
    let up: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("VACSINE_SECRET_{up}")
}

/// Secrets as templates see them (`secrets.<name>`), as script env, and raw values to mask.
type LoadedSecrets = (Map<String, Value>, Vec<(String, String)>, Vec<String>);

/// Read the workflow's secrets from the environment or files.
fn load_secrets(w: &Workflow) -> Result<LoadedSecrets, EngineError> {
    let mut map = Map::new();
    let mut env = Vec::new();
    let mut values = Vec::new();
    for (name, spec) in &w.spec.secrets {
        let err = |m: String| EngineError::Secret {
            name: name.clone(),
            message: m,
        };
        let value = match (&spec.env, &spec.file) {
            (Some(var), _) if std::env::var_os(var).is_some() => std::env::var(var)
                .map_err(|_| err(format!("environment variable `{var}` is not UTF-8")))?,
            (_, Some(path)) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| err(format!("cannot read `{path}`: {e}")))?,
            (Some(var), None) => {
                return Err(err(format!("environment variable `{var}` is not set")))
            }
            (None, None) => return Err(err("give `env` or `file`".into())),
        };
        if value.is_empty() {
            return Err(err("the secret is empty".into()));
        }
        env.push((secret_env_name(name), value.clone()));
        map.insert(name.clone(), Value::String(value.clone()));
        values.push(value);
    }
    Ok((map, env, values))
}

fn now() -> String {
    rfc3339(chrono::Utc::now())
}

impl Engine {
    pub fn new(journal: Journal, catalog: Catalog) -> Self {
        Engine {
            journal,
            catalog,
            registry: Registry::default(),
        }
    }

    /// Replace or add an executor (extensions, tests).
    pub fn register(&mut self, e: Arc<dyn Executor>) {
        self.registry.register(e);
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Run a workflow to the end.
    pub async fn run(&self, req: RunRequest) -> Result<RunReport, EngineError> {
        let w = &req.workflow;
        let problems = validate::validate_with(w, &self.catalog, &self.registry);
        if !problems.is_empty() {
            return Err(EngineError::InvalidWorkflow {
                workflow: w.metadata.name.value.clone(),
                problems,
            });
        }
        let inputs = coerce_inputs(&w.spec.inputs, &req.inputs)
            .map_err(|(name, message)| EngineError::Input { name, message })?;
        let event = if w.spec.inputs.contains_key("event") {
            inputs.get("event").cloned().unwrap_or(Value::Null)
        } else {
            req.inputs.get("event").cloned().unwrap_or(Value::Null)
        };
        let (secret_map, secret_env, secret_values) = load_secrets(w)?;
        let default_node = self.default_node(w, &req.nodes, req.default_node.as_deref())?;

        let run_id = uuid::Uuid::new_v4().to_string();
        let mut journaled_inputs = inputs.clone();
        if !event.is_null() {
            journaled_inputs.insert("event".into(), event.clone());
        }
        let journaled_inputs = match mask_value(&Value::Object(journaled_inputs), &secret_values) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let workflow_json = serde_json::to_string(w).map_err(|e| EngineError::Corrupt {
            run_id: run_id.clone(),
            message: e.to_string(),
        })?;
        self.journal.create_run(
            &run_id,
            &w.metadata.name,
            &workflow_json,
            &journaled_inputs,
            &req.target_name,
            &req.labels,
            default_node.as_deref(),
            &now(),
        )?;
        let run = RunCtx {
            run_id,
            nodes: req.nodes,
            target: json!({"name": req.target_name, "labels": req.labels}),
            secrets: Mutex::new(secret_values),
            progress: req.progress,
            observer: req.observer,
            prior: BTreeMap::new(),
            stop: Mutex::new(None),
            started: Instant::now(),
        };
        let scope = Scope::root(inputs, event, secret_map, secret_env, default_node);
        run.emit(ProgressEvent::RunStarted {
            run_id: run.run_id.clone(),
            workflow: w.metadata.name.value.clone(),
        });
        self.drive(&run, &scope, w).await
    }

    /// Continue a run whose process died. Finished steps are not re-run (their outputs are
    /// restored); a step caught `running` is re-run only if idempotent, otherwise it is
    /// recorded `interrupted` and the run stops. A step whose process died between two
    /// attempts (last attempt failed, retry attempts left) goes on retrying at once, with the
    /// next attempt number, on the nodes where it failed. Journaled attempts count against
    /// `retry.attempts` (an idempotent step caught running always gets one more attempt).
    pub async fn resume(&self, run_id: &str, nodes: NodeMap) -> Result<RunReport, EngineError> {
        self.resume_with(run_id, nodes, None, None).await
    }

    /// [`Engine::resume`] with a progress callback and a site observer (for `wait-until`).
    pub async fn resume_with(
        &self,
        run_id: &str,
        nodes: NodeMap,
        progress: Option<ProgressFn>,
        observer: Option<Arc<dyn Site>>,
    ) -> Result<RunReport, EngineError> {
        let stored = self
            .journal
            .load_run(run_id)?
            .ok_or_else(|| EngineError::RunNotFound(run_id.into()))?;
        if stored.summary.status != RunStatus::Running {
            return Err(EngineError::InvalidState {
                run_id: run_id.into(),
                status: stored.summary.status,
                action: "resumed (only a run left `running` by a crash can be)",
            });
        }
        let (mut run, scope, w) = self.reopen(&stored, nodes)?;
        run.progress = progress;
        run.observer = observer;
        self.drive(&run, &scope, &w).await
    }

    /// Undo a finished run: restore what its changed steps captured (reverse completion
    /// order), then run its `rollback` steps (reverse declaration order) unless they already
    /// ran when the run failed.
    pub async fn rollback(&self, run_id: &str, nodes: NodeMap) -> Result<RunReport, EngineError> {
        let stored = self
            .journal
            .load_run(run_id)?
            .ok_or_else(|| EngineError::RunNotFound(run_id.into()))?;
        match stored.summary.status {
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Interrupted => {}
            RunStatus::RolledBack => return self.report(run_id, RunStatus::RolledBack, None),
            s @ RunStatus::Running => {
                return Err(EngineError::InvalidState {
                    run_id: run_id.into(),
                    status: s,
                    action: "rolled back while it runs (resume it first)",
                })
            }
        }
        let (run, scope, w) = self.reopen(&stored, nodes)?;
        // Template values of the finished steps, for the rollback steps.
        for (id, recs) in &run.prior {
            if !id.contains('/') && !id.contains(':') {
                scope.set_step(id, step_value_from_records(recs));
            }
        }
        let errors = self
            .compensate(&run, &scope, &w, !stored.compensated)
            .await?;
        let (status, msg) = if errors.is_empty() {
            (RunStatus::RolledBack, None)
        } else {
            (
                RunStatus::Failed,
                Some(format!("rollback incomplete: {}", errors.join("; "))),
            )
        };
        self.journal
            .set_run_status(run_id, status, Some(&now()), msg.as_deref())?;
        run.emit(ProgressEvent::RunFinished {
            run_id: run_id.into(),
            status,
            elapsed: run.started.elapsed(),
        });
        self.report(run_id, status, msg)
    }

    fn default_node(
        &self,
        w: &Workflow,
        nodes: &NodeMap,
        given: Option<&str>,
    ) -> Result<Option<String>, EngineError> {
        let available: Vec<String> = nodes.keys().cloned().collect();
        let default = match given {
            Some(n) if nodes.contains_key(n) => Some(n.to_string()),
            Some(n) => {
                return Err(EngineError::UnknownNode {
                    name: n.into(),
                    available,
                })
            }
            None if nodes.len() == 1 => nodes.keys().next().cloned(),
            None => None,
        };
        if default.is_none() {
            for s in w.spec.steps.iter().chain(&w.spec.rollback) {
                let needs = self
                    .registry
                    .get(&s.uses)
                    .map(|e| e.needs_node())
                    .unwrap_or(false);
                if needs && s.runs_on.is_none() {
                    return Err(EngineError::NoNode {
                        step: s.id.value.clone(),
                        executor: s.uses.value.clone(),
                        reason: if nodes.is_empty() {
                            "no node was given".into()
                        } else {
                            "several nodes were given and no default node".into()
                        },
                        available,
                    });
                }
            }
        }
        Ok(default)
    }

    /// Rebuild a run's context from the journal.
    fn reopen(
        &self,
        stored: &StoredRun,
        nodes: NodeMap,
    ) -> Result<(RunCtx, Scope, Workflow), EngineError> {
        let run_id = stored.summary.id.clone();
        let w: Workflow =
            serde_json::from_str(&stored.workflow_json).map_err(|e| EngineError::Corrupt {
                run_id: run_id.clone(),
                message: e.to_string(),
            })?;
        let (secret_map, secret_env, secret_values) = load_secrets(&w)?;
        let mut inputs = stored.inputs.clone();
        let event = if w.spec.inputs.contains_key("event") {
            inputs.get("event").cloned().unwrap_or(Value::Null)
        } else {
            inputs.remove("event").unwrap_or(Value::Null)
        };
        let default_node = match &stored.default_node {
            Some(n) if !nodes.contains_key(n) => {
                return Err(EngineError::UnknownNode {
                    name: n.clone(),
                    available: nodes.keys().cloned().collect(),
                })
            }
            other => other.clone(),
        };
        let mut prior: BTreeMap<String, Vec<(i64, StepRecord)>> = BTreeMap::new();
        for (seq, r) in self.journal.records_seq(&run_id)? {
            prior.entry(r.step_id.clone()).or_default().push((seq, r));
        }
        let run = RunCtx {
            run_id,
            nodes,
            target: json!({"name": stored.summary.target, "labels": stored.labels}),
            secrets: Mutex::new(secret_values),
            progress: None,
            observer: None,
            prior,
            stop: Mutex::new(None),
            started: Instant::now(),
        };
        let scope = Scope::root(inputs, event, secret_map, secret_env, default_node);
        Ok((run, scope, w))
    }

    /// Run the steps, compensate on failure, finish the run in the journal.
    async fn drive(
        &self,
        run: &RunCtx,
        scope: &Scope,
        w: &Workflow,
    ) -> Result<RunReport, EngineError> {
        let ok = self
            .execute_steps(run, scope, &w.spec.steps, w.spec.concurrency)
            .await;
        let stop = run.stop.lock().ok().and_then(|s| s.clone());
        let (status, message) = if let Some(why) = stop {
            (RunStatus::Interrupted, Some(why))
        } else if ok {
            (RunStatus::Succeeded, None)
        } else {
            let failed = self.failed_steps(&run.run_id)?;
            let mut msg = format!("step(s) failed: {}", failed.join(", "));
            let errors = self.compensate(run, scope, w, true).await?;
            if !errors.is_empty() {
                msg.push_str(&format!("; compensation incomplete: {}", errors.join("; ")));
            }
            (RunStatus::Failed, Some(msg))
        };
        self.journal
            .set_run_status(&run.run_id, status, Some(&now()), message.as_deref())?;
        run.emit(ProgressEvent::RunFinished {
            run_id: run.run_id.clone(),
            status,
            elapsed: run.started.elapsed(),
        });
        self.report(&run.run_id, status, message)
    }

    fn failed_steps(&self, run_id: &str) -> Result<Vec<String>, EngineError> {
        let mut last: BTreeMap<(String, Option<String>), StepStatus> = BTreeMap::new();
        for r in self.journal.records(run_id)? {
            last.insert((r.step_id.clone(), r.node.clone()), r.status);
        }
        let mut v: Vec<String> = last
            .into_iter()
            .filter(|(_, s)| matches!(s, StepStatus::Failed | StepStatus::TimedOut))
            .map(|((id, node), s)| match node {
                Some(n) => format!("{id} on {n} ({s})"),
                None => format!("{id} ({s})"),
            })
            .collect();
        v.dedup();
        Ok(v)
    }

    fn report(
        &self,
        run_id: &str,
        status: RunStatus,
        message: Option<String>,
    ) -> Result<RunReport, EngineError> {
        let records = self.journal.records(run_id)?;
        let changed = records.iter().any(|r| {
            r.changed && r.status == StepStatus::Succeeded && !is_compensation(&r.step_id)
        });
        let mut outputs = Map::new();
        for r in &records {
            if !r.outputs.is_empty() && r.status == StepStatus::Succeeded {
                outputs.insert(r.step_id.clone(), Value::Object(r.outputs.clone()));
            }
        }
        Ok(RunReport {
            run_id: run_id.into(),
            status,
            records,
            changed,
            outputs,
            message,
        })
    }

    /// Schedule `steps` as a DAG; true when no step failed (continue-on-error aside).
    fn execute_steps<'a>(
        &'a self,
        run: &'a RunCtx,
        scope: &'a Scope,
        steps: &'a [Step],
        concurrency: Option<usize>,
    ) -> BoxFut<'a, bool> {
        Box::pin(async move {
            let limit = concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1);
            // Every running instance of a step (one per node of a fan-out) holds a permit.
            let permits = tokio::sync::Semaphore::new(limit);
            let permits = &permits;
            let by_id: BTreeMap<&str, &Step> = steps.iter().map(|s| (s.id.as_str(), s)).collect();
            let mut states: BTreeMap<String, State> = steps
                .iter()
                .map(|s| (s.id.value.clone(), State::Pending))
                .collect();
            let mut ok = true;
            // Steps finished by an earlier process (resume).
            for s in steps {
                let full = format!("{}{}", scope.prefix, s.id.value);
                let Some(recs) = run.prior.get(&full) else {
                    continue;
                };
                match self.prior_state(run, s, &full, recs) {
                    PriorState::Done(status) => {
                        scope.set_step(&s.id, step_value_from_records(recs));
                        let good = status.is_ok() || s.continue_on_error;
                        ok &= good;
                        states.insert(
                            s.id.value.clone(),
                            if good { State::Ok } else { State::Blocked },
                        );
                    }
                    PriorState::Rerun => {}
                    PriorState::Stop => {
                        ok = false;
                        states.insert(s.id.value.clone(), State::Blocked);
                    }
                }
            }
            let mut running = FuturesUnordered::new();
            loop {
                let stopping = run.stop.lock().map(|s| s.is_some()).unwrap_or(true);
                let expired = scope.deadline.is_some_and(|d| Instant::now() >= d);
                if expired && !stopping {
                    for s in steps {
                        if states.get(s.id.as_str()) == Some(&State::Pending) {
                            self.record_status(
                                run,
                                scope,
                                s,
                                None,
                                StepStatus::Cancelled,
                                "cancelled: the timeout of the sub-workflow expired before the step started",
                            );
                            states.insert(s.id.value.clone(), State::Blocked);
                            ok = false;
                        }
                    }
                }
                let stopping = stopping || expired;
                let (start, skip) = dag::ready(steps, &states);
                if !skip.is_empty() && !stopping {
                    for id in skip {
                        let s = by_id[id.as_str()];
                        let failed: Vec<&str> = s
                            .needs
                            .iter()
                            .filter(|n| states.get(n.as_str()) == Some(&State::Blocked))
                            .map(|n| n.as_str())
                            .collect();
                        let why =
                            format!("skipped: needs {} which did not succeed", failed.join(", "));
                        self.record_skip(run, scope, s, None, &why);
                        states.insert(id, State::Blocked);
                    }
                    continue;
                }
                if !stopping {
                    for id in start {
                        if running.len() >= limit {
                            break;
                        }
                        let s = by_id[id.as_str()];
                        states.insert(id.clone(), State::Running);
                        running.push(async move {
                            (id, self.run_step(run, scope, s, Some(permits)).await)
                        });
                    }
                }
                let Some((id, outcome)) = running.next().await else {
                    break;
                };
                let s = by_id[id.as_str()];
                let good = outcome.status.is_ok() || s.continue_on_error;
                ok &= good;
                states.insert(id, if good { State::Ok } else { State::Blocked });
            }
            ok
        })
    }

    /// What an earlier process left for this step.
    fn prior_state(
        &self,
        run: &RunCtx,
        s: &Step,
        full_id: &str,
        recs: &[(i64, StepRecord)],
    ) -> PriorState {
        let mut last: BTreeMap<Option<String>, &(i64, StepRecord)> = BTreeMap::new();
        for r in recs {
            last.insert(r.1.node.clone(), r);
        }
        let stale: Vec<&(i64, StepRecord)> = last
            .values()
            .copied()
            .filter(|(_, r)| r.status == StepStatus::Running)
            .collect();
        if stale.is_empty() && retry_left(s, recs).is_some() {
            return PriorState::Rerun;
        }
        if stale.is_empty() {
            let status = last
                .values()
                .map(|(_, r)| r.status)
                .find(|st| !st.is_ok())
                .unwrap_or_else(|| {
                    if last.values().all(|(_, r)| r.status == StepStatus::Skipped) {
                        StepStatus::Skipped
                    } else {
                        StepStatus::Succeeded
                    }
                });
            return PriorState::Done(status);
        }
        let idempotent = s.idempotent.unwrap_or_else(|| {
            s.uses.value == WORKFLOW_EXECUTOR
                || self
                    .registry
                    .get(&s.uses)
                    .map(|e| e.idempotent())
                    .unwrap_or(false)
        });
        for (seq, r) in stale {
            let mut r = r.clone();
            let on = r
                .node
                .as_deref()
                .map(|n| format!(" on node `{n}`"))
                .unwrap_or_default();
            let why = if idempotent {
                format!(
                    "the run was interrupted (process crash or kill) while step `{full_id}` was running{on}; the step is idempotent, so it is run again"
                )
            } else {
                format!(
                    "the run was interrupted (process crash or kill) while step `{full_id}` ({}) was running{on}; the step is not idempotent, so it is not re-run automatically: check the node's state, then re-run the workflow, or mark the step `idempotent: true` if it is safe to repeat",
                    r.executor
                )
            };
            r.status = StepStatus::Interrupted;
            r.finished_at = Some(now());
            r.error = Some(why.clone());
            r.messages.push(message(Level::Error, why.clone()));
            if let Err(e) = self.journal.update_record(*seq, &r) {
                tracing::error!(error = %e, "journal update failed");
            }
            if !idempotent {
                if let Ok(mut stop) = run.stop.lock() {
                    stop.get_or_insert(why);
                }
            }
        }
        if idempotent {
            PriorState::Rerun
        } else {
            PriorState::Stop
        }
    }

    fn record_skip(&self, run: &RunCtx, scope: &Scope, s: &Step, node: Option<&str>, why: &str) {
        self.record_status(run, scope, s, node, StepStatus::Skipped, why);
    }

    /// Journal a step that ends without running (skipped, cancelled).
    fn record_status(
        &self,
        run: &RunCtx,
        scope: &Scope,
        s: &Step,
        node: Option<&str>,
        status: StepStatus,
        why: &str,
    ) {
        let t = now();
        let rec = StepRecord {
            run_id: run.run_id.clone(),
            step_id: format!("{}{}", scope.prefix, s.id.value),
            attempt: 1,
            node: node.map(str::to_string),
            executor: s.uses.value.clone(),
            started_at: t.clone(),
            finished_at: Some(t),
            duration_ms: Some(0),
            status,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            changed: false,
            messages: vec![message(
                if status == StepStatus::Skipped {
                    Level::Info
                } else {
                    Level::Warn
                },
                why,
            )],
            error: None,
            outputs: Map::new(),
        };
        if let Err(e) = self.journal.start_record(&rec) {
            tracing::error!(error = %e, "journal write failed");
        }
        if node.is_none() {
            scope.set_step(
                &s.id,
                json!({"status": status.as_str(), "outputs": {}, "changed": false, "nodes": {}}),
            );
        }
    }

    /// Resolve the nodes a step runs on.
    fn step_nodes(
        &self,
        run: &RunCtx,
        scope: &Scope,
        s: &Step,
    ) -> Result<Vec<Option<Arc<dyn NodeOps>>>, String> {
        let available = || run.nodes.keys().cloned().collect::<Vec<_>>().join(", ");
        let needs = s.uses.value == WORKFLOW_EXECUTOR
            || self
                .registry
                .get(&s.uses)
                .map(|e| e.needs_node())
                .unwrap_or(true);
        match &s.runs_on {
            None => match &scope.default_node {
                Some(n) => Ok(vec![Some(run.nodes.get(n).cloned().ok_or_else(|| {
                    format!("default node `{n}` is not among the nodes given ({})", available())
                })?)]),
                None if needs && s.uses.value != WORKFLOW_EXECUTOR => Err(format!(
                    "step `{}` ({}) needs a node: set `runsOn` or pass a default node (nodes given: {})",
                    s.id.value,
                    s.uses.value,
                    available()
                )),
                None => Ok(vec![None]),
            },
            Some(RunsOn::Node(tpl)) => {
                let ctx = scope.context(run, None);
                let name = match template::render_str(tpl, &ctx)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                run.nodes
                    .get(&name)
                    .cloned()
                    .map(|n| vec![Some(n)])
                    .ok_or_else(|| format!("runsOn: node `{name}` is not among the nodes given ({})", available()))
            }
            Some(RunsOn::Select(sel)) => {
                let v: Vec<Option<Arc<dyn NodeOps>>> = run
                    .nodes
                    .values()
                    .filter(|n| {
                        let r = n.node();
                        sel.matches(&r.name, &r.roles, &r.labels)
                    })
                    .map(|n| Some(n.clone()))
                    .collect();
                if v.is_empty() {
                    Err(format!("runsOn: the selector matched none of the nodes given ({})", available()))
                } else {
                    Ok(v)
                }
            }
        }
    }

    /// Run one step on each of its nodes (concurrently, each instance holding one of
    /// `permits` when given), with retries.
    async fn run_step(
        &self,
        run: &RunCtx,
        scope: &Scope,
        s: &Step,
        permits: Option<&tokio::sync::Semaphore>,
    ) -> StepOutcome {
        let full_id = format!("{}{}", scope.prefix, s.id.value);
        let attempt_base = run
            .prior
            .get(&full_id)
            .map(|r| r.iter().map(|(_, r)| r.attempt).max().unwrap_or(0))
            .unwrap_or(0);
        let nodes = match self.step_nodes(run, scope, s) {
            Ok(n) => n,
            Err(e) => {
                let r = self
                    .finish_failed(run, &full_id, s, None, attempt_base + 1, e)
                    .await;
                scope.set_step(
                    &s.id,
                    json!({"status": r.as_str(), "outputs": {}, "changed": false, "nodes": {}}),
                );
                return StepOutcome { status: r };
            }
        };
        let full_id = full_id.as_str();
        // Resumed between two attempts: nodes that had succeeded keep their result, the
        // others go on with their next attempt.
        let prior = run.prior.get(full_id);
        let keep = prior.and_then(|r| retry_left(s, r));
        let results: Vec<NodeResult> = futures_util::future::join_all(nodes.iter().map(|n| {
            let name = n.as_ref().map(|n| n.node().name.clone());
            let kept = keep
                .as_ref()
                .and_then(|k| k.get(&name))
                .filter(|r| r.status.is_ok())
                .map(|r| (name.clone(), r.status, r.outputs.clone(), r.changed));
            // Attempts are numbered per node.
            let base = prior
                .map(|r| {
                    r.iter()
                        .filter(|(_, x)| x.node == name)
                        .map(|(_, x)| x.attempt)
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0);
            async move {
                if let Some(k) = kept {
                    return k;
                }
                // Closed never: the semaphore lives as long as the scheduling loop.
                let _permit = match permits {
                    Some(p) => p.acquire().await.ok(),
                    None => None,
                };
                self.run_on_node(run, scope, s, full_id, n.as_ref(), base)
                    .await
            }
        }))
        .await;
        let status = results
            .iter()
            .map(|r| r.1)
            .find(|st| !st.is_ok())
            .unwrap_or_else(|| {
                if results.iter().all(|r| r.1 == StepStatus::Skipped) {
                    StepStatus::Skipped
                } else {
                    StepStatus::Succeeded
                }
            });
        let mut per_node = Map::new();
        let mut outputs = Map::new();
        let mut changed = false;
        for (n, st, out, ch) in &results {
            changed |= ch;
            if let Some(n) = n {
                per_node.insert(
                    n.clone(),
                    json!({"status": st.as_str(), "outputs": out, "changed": ch}),
                );
            }
            if *st == StepStatus::Succeeded || outputs.is_empty() {
                outputs = out.clone();
            }
        }
        scope.set_step(
            &s.id,
            json!({"status": status.as_str(), "outputs": outputs, "changed": changed, "nodes": per_node}),
        );
        StepOutcome { status }
    }

    /// Journal and report a step that failed before its executor could start.
    async fn finish_failed(
        &self,
        run: &RunCtx,
        full_id: &str,
        s: &Step,
        node: Option<&str>,
        attempt: u32,
        error: String,
    ) -> StepStatus {
        let t = now();
        let secrets = run.secret_values();
        let error = mask(&error, &secrets);
        let rec = StepRecord {
            run_id: run.run_id.clone(),
            step_id: full_id.into(),
            attempt,
            node: node.map(str::to_string),
            executor: s.uses.value.clone(),
            started_at: t.clone(),
            finished_at: Some(t),
            duration_ms: Some(0),
            status: StepStatus::Failed,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            changed: false,
            messages: vec![message(Level::Error, error.clone())],
            error: Some(error),
            outputs: Map::new(),
        };
        if let Err(e) = self.journal.start_record(&rec) {
            tracing::error!(error = %e, "journal write failed");
        }
        run.emit(ProgressEvent::StepFinished {
            run_id: run.run_id.clone(),
            step_id: full_id.into(),
            node: node.map(str::to_string),
            attempt,
            status: StepStatus::Failed,
            elapsed: Duration::ZERO,
        });
        StepStatus::Failed
    }

    /// Attempts of one step on one node: returns (node, status, outputs, changed).
    async fn run_on_node(
        &self,
        run: &RunCtx,
        scope: &Scope,
        s: &Step,
        full_id: &str,
        node: Option<&Arc<dyn NodeOps>>,
        attempt_base: u32,
    ) -> NodeResult {
        let node_name = node.map(|n| n.node().name.clone());
        let nn = node_name.as_deref();
        let fail = |e: String| async move {
            let st = self
                .finish_failed(run, full_id, s, nn, attempt_base + 1, e)
                .await;
            (nn.map(str::to_string), st, Map::new(), false)
        };
        if let Some(cond) = &s.condition {
            let ctx = scope.context(run, node);
            match template::eval_condition(cond, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    self.record_skip(
                        run,
                        scope,
                        s,
                        nn,
                        &format!("skipped: `if: {}` is false", cond.value),
                    );
                    return (node_name, StepStatus::Skipped, Map::new(), false);
                }
                Err(e) => return fail(format!("in `if: {}`: {e}", cond.value)).await,
            }
        }
        let timeout = match s.timeout.as_ref().map(|t| parse_duration(t)) {
            None => DEFAULT_STEP_TIMEOUT,
            Some(Ok(t)) => t,
            Some(Err(e)) => return fail(e).await,
        };
        let (attempts, backoff) = match &s.retry {
            None => (1, Duration::ZERO),
            Some(r) => match parse_duration(&r.backoff) {
                Ok(b) => (r.attempts.max(1), b),
                Err(e) => return fail(e).await,
            },
        };
        let executor = if s.uses.value == WORKFLOW_EXECUTOR {
            None
        } else {
            match self.registry.get(&s.uses) {
                Some(e) => Some(e.clone()),
                None => return fail(format!("unknown executor `{}`", s.uses.value)).await,
            }
        };
        let literal: &[&str] = executor.as_ref().map(|e| e.literal_args()).unwrap_or(&[]);
        // On resume, attempts already journaled count (a step caught running gets one more).
        let attempts = attempts.saturating_sub(attempt_base).max(1);
        let mut last = (StepStatus::Failed, Map::new(), false);
        for i in 1..=attempts {
            let attempt = attempt_base + i;
            // Inside a sub-workflow with a timeout, no attempt outlives its deadline.
            let left = scope
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                if i == 1 {
                    let why = "cancelled: the timeout of the sub-workflow expired before the step started";
                    self.record_status(run, scope, s, nn, StepStatus::Cancelled, why);
                    return (node_name, StepStatus::Cancelled, Map::new(), false);
                }
                break;
            }
            let timeout = left.map_or(timeout, |l| l.min(timeout));
            let ctx_json = scope.context(run, node);
            let mut args = Map::new();
            for (k, v) in &s.with {
                if literal.contains(&k.as_str()) {
                    args.insert(k.clone(), v.clone());
                    continue;
                }
                match template::render_value(v, &ctx_json) {
                    Ok(v) => {
                        args.insert(k.clone(), v);
                    }
                    Err(e) => {
                        let st = self
                            .finish_failed(
                                run,
                                full_id,
                                s,
                                nn,
                                attempt,
                                format!("in `with.{k}`: {e}"),
                            )
                            .await;
                        return (node_name, st, Map::new(), false);
                    }
                }
            }
            let started = chrono::Utc::now();
            let clock = Instant::now();
            let mut rec = StepRecord {
                run_id: run.run_id.clone(),
                step_id: full_id.into(),
                attempt,
                node: node_name.clone(),
                executor: s.uses.value.clone(),
                started_at: rfc3339(started),
                finished_at: None,
                duration_ms: None,
                status: StepStatus::Running,
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                changed: false,
                messages: Vec::new(),
                error: None,
                outputs: Map::new(),
            };
            let seq = match self.journal.start_record(&rec) {
                Ok(seq) => seq,
                Err(e) => {
                    // Never act without a journal entry.
                    tracing::error!(error = %e, "journal write failed");
                    return (node_name, StepStatus::Failed, Map::new(), false);
                }
            };
            run.emit(ProgressEvent::StepStarted {
                run_id: run.run_id.clone(),
                step_id: full_id.into(),
                node: node_name.clone(),
                attempt,
            });
            let undo_log = UndoLog {
                journal: self.journal.clone(),
                run_id: run.run_id.clone(),
                record_seq: seq,
                step_id: full_id.into(),
                node: node_name.clone(),
                executor: s.uses.value.clone(),
                saved: Default::default(),
            };
            let ectx = ExecCtx {
                run_id: run.run_id.clone(),
                step_id: full_id.into(),
                node: node.cloned(),
                timeout,
                secret_env: scope.secret_env.clone(),
                observer: run.observer.clone(),
                undo_log: Some(undo_log.clone()),
            };
            let args = Value::Object(args);
            let mut result = match &executor {
                Some(e) => {
                    // The executor enforces the deadline itself (killing processes); this
                    // outer bound catches executors that cannot.
                    match tokio::time::timeout(timeout + Duration::from_secs(5), e.run(&ectx, args))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => StepResult::timed_out(timeout),
                    }
                }
                None => {
                    // `timeout` bounds the whole sub-run (and so does an enclosing one).
                    let bound =
                        (s.timeout.is_some() || scope.deadline.is_some()).then_some(timeout);
                    self.run_subworkflow(run, scope, full_id, node, args, bound)
                        .await
                }
            };
            // Declared outputs, evaluated over the result.
            if result.status == StepStatus::Succeeded && !s.outputs.is_empty() {
                let mut ctx = scope.context(run, node);
                ctx["result"] = json!({
                    "status": result.status.as_str(),
                    "exit_code": result.exit_code,
                    "stdout": String::from_utf8_lossy(&result.stdout),
                    "stderr": String::from_utf8_lossy(&result.stderr),
                    "changed": result.changed,
                    "outputs": result.outputs,
                });
                for (k, tpl) in &s.outputs {
                    match template::render_str(tpl, &ctx) {
                        Ok(v) => {
                            result.outputs.insert(k.clone(), v);
                        }
                        Err(e) => {
                            result.status = StepStatus::Failed;
                            result.error = Some(format!("output `{k}`: {e}"));
                            break;
                        }
                    }
                }
            }
            let elapsed = clock.elapsed();
            let secrets = run.secret_values();
            let ms =
                |b: &[u8]| bound_stream(mask(&String::from_utf8_lossy(b), &secrets).as_bytes());
            rec.finished_at = Some(rfc3339(
                started + chrono::Duration::from_std(elapsed).unwrap_or_default(),
            ));
            rec.duration_ms = Some(elapsed.as_millis() as u64);
            rec.status = result.status;
            rec.exit_code = result.exit_code;
            rec.stdout = ms(&result.stdout);
            rec.stderr = ms(&result.stderr);
            rec.changed = result.changed;
            rec.messages = result
                .messages
                .iter()
                .map(|m| vacsine_core::record::Message {
                    text: mask(&m.text, &secrets),
                    ..m.clone()
                })
                .collect();
            if let Some(e) = &result.error {
                let e = mask(e, &secrets);
                rec.messages.push(message(Level::Error, e.clone()));
                rec.error = Some(e);
            }
            rec.outputs = match mask_value(&Value::Object(result.outputs.clone()), &secrets) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            // Undo data: journaled by the executor before its change, or returned with the
            // result; dropped when nothing changed after all.
            let undo = if undo_log.saved() {
                if !rec.changed {
                    if let Err(e) = self.journal.drop_undo(seq) {
                        tracing::error!(error = %e, "journal write failed");
                    }
                }
                None
            } else {
                result.undo.as_ref().filter(|_| rec.changed)
            };
            if let Err(e) = self.journal.finish_record(seq, &rec, undo) {
                tracing::error!(error = %e, "journal write failed");
            }
            run.emit(ProgressEvent::StepFinished {
                run_id: run.run_id.clone(),
                step_id: full_id.into(),
                node: node_name.clone(),
                attempt,
                status: rec.status,
                elapsed,
            });
            last = (rec.status, result.outputs, rec.changed);
            if rec.status == StepStatus::Succeeded || i == attempts {
                break;
            }
            let mut delay = backoff.saturating_mul(1u32 << (attempt - 1).min(16));
            if let Some(d) = scope.deadline {
                delay = delay.min(d.saturating_duration_since(Instant::now()));
            }
            tokio::time::sleep(delay).await;
        }
        (node_name, last.0, last.1, last.2)
    }

    /// The `workflow` executor: run a catalog workflow as part of this run, its records
    /// prefixed with `<step>/`, within `timeout` when given. A failed (or timed out) sub-run is
    /// compensated at once: its automatic undo, then its own `rollback` steps.
    fn run_subworkflow<'a>(
        &'a self,
        run: &'a RunCtx,
        scope: &'a Scope,
        full_id: &'a str,
        node: Option<&'a Arc<dyn NodeOps>>,
        args: Value,
        timeout: Option<Duration>,
    ) -> BoxFut<'a, StepResult> {
        Box::pin(async move {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct SubArgs {
                workflow: String,
                #[serde(default)]
                inputs: Map<String, Value>,
            }
            let a: SubArgs = match crate::executor::parse_args(WORKFLOW_EXECUTOR, args) {
                Ok(a) => a,
                Err(e) => return StepResult::failed(e),
            };
            if scope.depth + 1 > MAX_DEPTH {
                return StepResult::failed(format!(
                    "sub-workflows nested deeper than {MAX_DEPTH} levels (recursive workflow?)"
                ));
            }
            let Some(w) = self.catalog.get(&a.workflow) else {
                return StepResult::failed(format!(
                    "workflow `{}` is not in the catalog",
                    a.workflow
                ));
            };
            let inputs = match coerce_inputs(&w.spec.inputs, &a.inputs) {
                Ok(i) => i,
                Err((name, m)) => {
                    return StepResult::failed(format!(
                        "input `{name}` of workflow `{}`: {m}",
                        a.workflow
                    ))
                }
            };
            let (secrets, secret_env, values) = match load_secrets(w) {
                Ok(s) => s,
                Err(e) => return StepResult::failed(e.to_string()),
            };
            if let Ok(mut all) = run.secrets.lock() {
                all.extend(values);
            }
            let child = Scope {
                prefix: format!("{full_id}/"),
                inputs,
                event: scope.event.clone(),
                secrets,
                secret_env,
                default_node: node
                    .map(|n| n.node().name.clone())
                    .or_else(|| scope.default_node.clone()),
                steps: Mutex::new(Map::new()),
                depth: scope.depth + 1,
                deadline: timeout.map(|t| Instant::now() + t),
            };
            let ok = self
                .execute_steps(run, &child, &w.spec.steps, w.spec.concurrency)
                .await;
            let timed_out = !ok && child.deadline.is_some_and(|d| Instant::now() >= d);
            let steps = child.steps.lock().map(|s| s.clone()).unwrap_or_default();
            let mut r = match (ok, timeout) {
                (true, _) => StepResult::ok(false),
                (false, Some(t)) if timed_out => StepResult::timed_out(t),
                (false, _) => StepResult::failed(format!("sub-workflow `{}` failed", a.workflow)),
            };
            // A run stopped on resume (interrupted step) is not compensated here: the caller
            // decides, as for the top level.
            let stopping = run.stop.lock().map(|s| s.is_some()).unwrap_or(false);
            if !ok && !stopping {
                match self.compensate(run, &child, w, true).await {
                    Ok(errors) if errors.is_empty() => r.push(
                        Level::Info,
                        format!("sub-workflow `{}` compensated", a.workflow),
                    ),
                    Ok(errors) => r.push(
                        Level::Error,
                        format!(
                            "sub-workflow `{}`: compensation incomplete: {}",
                            a.workflow,
                            errors.join("; ")
                        ),
                    ),
                    Err(e) => r.push(
                        Level::Error,
                        format!("sub-workflow `{}`: compensation failed: {e}", a.workflow),
                    ),
                }
            }
            r.changed = steps.values().any(|v| v["changed"] == json!(true));
            for (id, v) in steps {
                if let Some(o) = v
                    .get("outputs")
                    .filter(|o| o.as_object().is_some_and(|m| !m.is_empty()))
                {
                    r.outputs.insert(id, o.clone());
                }
            }
            r.push(
                Level::Info,
                format!(
                    "sub-workflow `{}` {}",
                    a.workflow,
                    match (ok, timed_out) {
                        (true, _) => "succeeded",
                        (false, true) => "timed out",
                        (false, false) => "failed",
                    }
                ),
            );
            r
        })
    }

    /// Undo changed steps of `scope`'s level and below (reverse completion order), then run
    /// the `rollback` steps of `w` (reverse declaration order) when `with_steps`. Records are
    /// prefixed with the level's prefix (`undo:<id>`, `rollback:<id>`; `<step>/undo:<id>` in
    /// a sub-workflow). Changes made by compensation steps are never undone. Returns the
    /// errors met.
    async fn compensate(
        &self,
        run: &RunCtx,
        scope: &Scope,
        w: &Workflow,
        with_steps: bool,
    ) -> Result<Vec<String>, EngineError> {
        let mut errors = Vec::new();
        let prefix = scope.prefix.as_str();
        let mut entries = self.journal.pending_undo(&run.run_id)?;
        entries.retain(|e| e.step_id.starts_with(prefix) && !is_compensation(&e.step_id));
        entries.reverse();
        let originals: BTreeMap<i64, StepRecord> =
            self.journal.records_seq(&run.run_id)?.into_iter().collect();
        for e in entries {
            let id = format!("{prefix}undo:{}", &e.step_id[prefix.len()..]);
            let started = chrono::Utc::now();
            let clock = Instant::now();
            let mut rec = StepRecord {
                run_id: run.run_id.clone(),
                step_id: id.clone(),
                attempt: 1,
                node: e.node.clone(),
                executor: e.executor.clone(),
                started_at: rfc3339(started),
                finished_at: None,
                duration_ms: None,
                status: StepStatus::Running,
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                changed: false,
                messages: Vec::new(),
                error: None,
                outputs: Map::new(),
            };
            let seq = self.journal.start_record(&rec)?;
            run.emit(ProgressEvent::StepStarted {
                run_id: run.run_id.clone(),
                step_id: id.clone(),
                node: e.node.clone(),
                attempt: 1,
            });
            let node = e.node.as_ref().and_then(|n| run.nodes.get(n).cloned());
            let result = match (self.registry.get(&e.executor), &e.node, &node) {
                (None, _, _) => StepResult::failed(format!("unknown executor `{}`", e.executor)),
                (Some(_), Some(n), None) => StepResult::failed(format!(
                    "node `{n}` is not among the nodes given: cannot undo there"
                )),
                (Some(x), _, _) => {
                    let ctx = ExecCtx {
                        run_id: run.run_id.clone(),
                        step_id: id.clone(),
                        node,
                        timeout: Duration::from_secs(300),
                        secret_env: Vec::new(),
                        observer: run.observer.clone(),
                        undo_log: None,
                    };
                    x.undo(&ctx, e.data.clone()).await
                }
            };
            let secrets = run.secret_values();
            let elapsed = clock.elapsed();
            rec.finished_at = Some(rfc3339(
                started + chrono::Duration::from_std(elapsed).unwrap_or_default(),
            ));
            rec.duration_ms = Some(elapsed.as_millis() as u64);
            rec.status = result.status;
            rec.changed = result.changed;
            rec.stdout =
                bound_stream(mask(&String::from_utf8_lossy(&result.stdout), &secrets).as_bytes());
            rec.stderr =
                bound_stream(mask(&String::from_utf8_lossy(&result.stderr), &secrets).as_bytes());
            rec.messages = result.messages.clone();
            if let Some(err) = &result.error {
                let err = mask(err, &secrets);
                rec.messages.push(message(Level::Error, err.clone()));
                rec.error = Some(err.clone());
                errors.push(format!("{id}: {err}"));
            }
            self.journal.finish_record(seq, &rec, None)?;
            run.emit(ProgressEvent::StepFinished {
                run_id: run.run_id.clone(),
                step_id: id.clone(),
                node: e.node.clone(),
                attempt: 1,
                status: rec.status,
                elapsed,
            });
            if rec.status == StepStatus::Succeeded {
                let t = now();
                self.journal.mark_undone(e.seq, &t)?;
                if let Some(orig) = originals.get(&e.record_seq) {
                    let mut o = orig.clone();
                    o.status = StepStatus::RolledBack;
                    o.messages
                        .push(message(Level::Warn, format!("undone by `{id}` at {t}")));
                    self.journal.update_record(e.record_seq, &o)?;
                }
            }
        }
        if with_steps && !w.spec.rollback.is_empty() {
            let rb_scope = Scope {
                prefix: format!("{prefix}rollback:"),
                inputs: scope.inputs.clone(),
                event: scope.event.clone(),
                secrets: scope.secrets.clone(),
                secret_env: scope.secret_env.clone(),
                default_node: scope.default_node.clone(),
                steps: Mutex::new(scope.steps.lock().map(|s| s.clone()).unwrap_or_default()),
                depth: scope.depth,
                // Compensation always runs to its end.
                deadline: None,
            };
            for s in w.spec.rollback.iter().rev() {
                let out = self.run_step(run, &rb_scope, s, None).await;
                if !out.status.is_ok() && !s.continue_on_error {
                    errors.push(format!("rollback:{} {}", s.id.value, out.status));
                }
            }
        }
        if with_steps && scope.depth == 0 {
            self.journal.set_compensated(&run.run_id)?;
        }
        Ok(errors)
    }
}

/// On resume, for a step whose process died between two attempts (no attempt caught
/// running; every node's last attempt succeeded, was skipped, or failed with retry attempts
/// left; at least one failed): the last record per node. The step then goes on retrying.
fn retry_left(
    s: &Step,
    recs: &[(i64, StepRecord)],
) -> Option<BTreeMap<Option<String>, StepRecord>> {
    let attempts = s.retry.as_ref().map_or(1, |r| r.attempts.max(1));
    let mut last: BTreeMap<Option<String>, StepRecord> = BTreeMap::new();
    for (_, r) in recs {
        last.insert(r.node.clone(), r.clone());
    }
    let failed = |r: &StepRecord| matches!(r.status, StepStatus::Failed | StepStatus::TimedOut);
    let resumable = last.values().any(failed)
        && last
            .values()
            .all(|r| r.status.is_ok() || (failed(r) && r.attempt < attempts));
    resumable.then_some(last)
}

/// Whether a record id is an undo or rollback record (of the run or of a sub-workflow).
fn is_compensation(step_id: &str) -> bool {
    step_id
        .split('/')
        .any(|seg| seg.starts_with("undo:") || seg.starts_with("rollback:"))
}

/// One step on one node: (node, status, outputs, changed).
type NodeResult = (Option<String>, StepStatus, Map<String, Value>, bool);

enum PriorState {
    Done(StepStatus),
    Rerun,
    Stop,
}

/// `steps.<id>` for templates, from journaled records (resume, rollback).
fn step_value_from_records(recs: &[(i64, StepRecord)]) -> Value {
    let mut last: BTreeMap<Option<String>, &StepRecord> = BTreeMap::new();
    for (_, r) in recs {
        last.insert(r.node.clone(), r);
    }
    let mut per_node = Map::new();
    let mut outputs = Map::new();
    let mut status = StepStatus::Succeeded;
    let mut changed = false;
    let mut nodes: BTreeSet<String> = BTreeSet::new();
    for (n, r) in &last {
        changed |= r.changed;
        if !r.status.is_ok() && r.status != StepStatus::RolledBack {
            status = r.status;
        }
        if r.status == StepStatus::Succeeded || outputs.is_empty() {
            outputs = r.outputs.clone();
        }
        if let Some(n) = n {
            nodes.insert(n.clone());
            per_node.insert(
                n.clone(),
                json!({"status": r.status.as_str(), "outputs": r.outputs, "changed": r.changed}),
            );
        }
    }
    if last.values().all(|r| r.status == StepStatus::Skipped) {
        status = StepStatus::Skipped;
    }
    json!({"status": status.as_str(), "outputs": outputs, "changed": changed, "nodes": per_node})
}

impl RunCtx {
    fn emit(&self, ev: ProgressEvent) {
        if let Some(p) = &self.progress {
            p(&ev);
        }
    }
    fn secret_values(&self) -> Vec<String> {
        self.secrets.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
