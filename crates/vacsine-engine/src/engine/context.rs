//! What a run carries while it executes: the run context, the scope of one workflow level,
//! the typed view of finished steps, and the template context steps read.
//!
//! The template context is a lazy minijinja object: `steps.<id>` looks one step up in a
//! shared table instead of copying every earlier step into each step's context, so the cost
//! of templating does not grow with the number of steps already run.

use super::{CancelToken, NodeMap, ProgressEvent, ProgressFn};
use crate::EngineError;
use minijinja::value::{Enumerator, Object, ObjectRepr, Value as MjValue};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use vacsine_core::node::{NodeOps, Site};
use vacsine_core::record::{Masker, StepRecord, StepStatus};
use vacsine_core::workflow::Workflow;

pub(super) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One run in progress.
pub(super) struct RunCtx {
    pub run_id: String,
    pub nodes: NodeMap,
    /// `target` for templates.
    pub target: MjValue,
    /// Every secret value of the run (sub-workflows add theirs), for masking.
    pub secrets: Mutex<Vec<String>>,
    pub masker: RwLock<Arc<Masker>>,
    pub progress: Option<ProgressFn>,
    pub observer: Option<Arc<dyn Site>>,
    /// Journaled records of an earlier process, by step id (resume).
    pub prior: BTreeMap<String, Vec<(i64, StepRecord)>>,
    /// Set when the run must stop (interrupted step found on resume, cancellation).
    pub stop: Mutex<Option<String>>,
    pub cancel: CancelToken,
    /// Another process took the run over (its lease): this one must not finish the run.
    pub lease_lost: std::sync::atomic::AtomicBool,
    pub started: Instant,
}

impl RunCtx {
    pub fn new(
        run_id: String,
        nodes: NodeMap,
        target: &Value,
        secrets: Vec<String>,
        prior: BTreeMap<String, Vec<(i64, StepRecord)>>,
        cancel: CancelToken,
    ) -> Self {
        let masker = Arc::new(Masker::new(&secrets));
        RunCtx {
            run_id,
            nodes,
            target: MjValue::from_serialize(target),
            secrets: Mutex::new(secrets),
            masker: RwLock::new(masker),
            progress: None,
            observer: None,
            prior,
            stop: Mutex::new(None),
            cancel,
            lease_lost: Default::default(),
            started: Instant::now(),
        }
    }

    pub fn emit(&self, ev: ProgressEvent) {
        if let Some(p) = &self.progress {
            p(&ev);
        }
    }

    /// The masker over every secret known so far.
    pub fn masker(&self) -> Arc<Masker> {
        self.masker
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|_| Arc::new(Masker::new::<String>(&[])))
    }

    /// Add secrets (of a sub-workflow) to those masked.
    pub fn add_secrets(&self, values: Vec<String>) {
        if values.is_empty() {
            return;
        }
        if let Ok(mut all) = self.secrets.lock() {
            all.extend(values);
            if let Ok(mut m) = self.masker.write() {
                *m = Arc::new(Masker::new(&all));
            }
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.lock().map(|s| s.is_some()).unwrap_or(true)
    }

    pub fn set_stop(&self, why: String) {
        if let Ok(mut stop) = self.stop.lock() {
            stop.get_or_insert(why);
        }
    }

    pub fn stop_reason(&self) -> Option<String> {
        self.stop.lock().ok().and_then(|s| s.clone())
    }
}

/// `steps.<id>.nodes.<node>` as templates see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct NodeView {
    pub status: StepStatus,
    pub outputs: Map<String, Value>,
    pub changed: bool,
}

/// `steps.<id>` as templates see it: the step's status over all its nodes, the outputs of
/// (the last succeeded instance of) the step, whether anything changed, and each node's view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct StepView {
    pub status: StepStatus,
    pub outputs: Map<String, Value>,
    pub changed: bool,
    pub nodes: BTreeMap<String, NodeView>,
}

impl StepView {
    /// A step that ended without running.
    pub fn empty(status: StepStatus) -> Self {
        StepView {
            status,
            outputs: Map::new(),
            changed: false,
            nodes: BTreeMap::new(),
        }
    }

    /// Fold the per-node results of one step.
    pub fn from_nodes(results: &[NodeResult]) -> Self {
        let status = overall_status(results.iter().map(|r| r.status));
        let mut v = StepView::empty(status);
        for r in results {
            v.changed |= r.changed;
            if let Some(n) = &r.node {
                v.nodes.insert(
                    n.clone(),
                    NodeView {
                        status: r.status,
                        outputs: r.outputs.clone(),
                        changed: r.changed,
                    },
                );
            }
            if r.status == StepStatus::Succeeded || v.outputs.is_empty() {
                v.outputs = r.outputs.clone();
            }
        }
        v
    }

    /// From journaled records (resume, rollback): the last record of each node.
    pub fn from_records(recs: &[(i64, StepRecord)]) -> Self {
        let mut last: BTreeMap<Option<String>, &StepRecord> = BTreeMap::new();
        for (_, r) in recs {
            last.insert(r.node.clone(), r);
        }
        let results: Vec<NodeResult> = last
            .values()
            .map(|r| NodeResult {
                node: r.node.clone(),
                // A step undone by a rollback still counts as done for its dependants.
                status: if r.status == StepStatus::RolledBack {
                    StepStatus::Succeeded
                } else {
                    r.status
                },
                outputs: r.outputs.clone(),
                changed: r.changed,
            })
            .collect();
        let mut v = StepView::from_nodes(&results);
        for (n, r) in &last {
            if let Some(n) = n {
                if let Some(nv) = v.nodes.get_mut(n) {
                    nv.status = r.status;
                }
            }
        }
        v
    }
}

/// The status of a step over its nodes: the first that is not ok, else skipped when every
/// node skipped, else succeeded.
pub(super) fn overall_status(statuses: impl Iterator<Item = StepStatus> + Clone) -> StepStatus {
    statuses.clone().find(|st| !st.is_ok()).unwrap_or_else(|| {
        let mut all = statuses.peekable();
        if all.peek().is_some() && all.all(|s| s == StepStatus::Skipped) {
            StepStatus::Skipped
        } else {
            StepStatus::Succeeded
        }
    })
}

/// One step on one node.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NodeResult {
    pub node: Option<String>,
    pub status: StepStatus,
    pub outputs: Map<String, Value>,
    pub changed: bool,
}

impl NodeResult {
    pub fn new(node: Option<String>, status: StepStatus) -> Self {
        NodeResult {
            node,
            status,
            outputs: Map::new(),
            changed: false,
        }
    }
}

/// The finished steps of one workflow level, shared with every template context.
#[derive(Debug, Default)]
pub(super) struct StepTable {
    map: RwLock<HashMap<String, StepView>>,
}

impl StepTable {
    pub fn set(&self, id: &str, v: StepView) {
        if let Ok(mut m) = self.map.write() {
            m.insert(id.to_string(), v);
        }
    }
    pub fn get(&self, id: &str) -> Option<StepView> {
        self.map.read().ok().and_then(|m| m.get(id).cloned())
    }
    pub fn snapshot(&self) -> BTreeMap<String, StepView> {
        self.map
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
    pub fn copy_from(other: &StepTable) -> Self {
        StepTable {
            map: RwLock::new(other.map.read().map(|m| m.clone()).unwrap_or_default()),
        }
    }
}

#[derive(Debug)]
struct StepsObject(Arc<StepTable>);

impl Object for StepsObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        let view = self.0.get(key.as_str()?)?;
        Some(MjValue::from_serialize(&view))
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<String> = self
            .0
            .map
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        Enumerator::Values(keys.into_iter().map(MjValue::from).collect())
    }
}

/// The variables a template sees: `inputs`, `steps`, `target`, `secrets`, and, when set,
/// `event`, `node` and `result`.
#[derive(Debug)]
struct TemplateContext {
    inputs: MjValue,
    steps: MjValue,
    target: MjValue,
    secrets: MjValue,
    event: Option<MjValue>,
    node: Option<MjValue>,
    result: Option<MjValue>,
}

impl Object for TemplateContext {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        match key.as_str()? {
            "inputs" => Some(self.inputs.clone()),
            "steps" => Some(self.steps.clone()),
            "target" => Some(self.target.clone()),
            "secrets" => Some(self.secrets.clone()),
            "event" => self.event.clone(),
            "node" => self.node.clone(),
            "result" => self.result.clone(),
            _ => None,
        }
    }
    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys = vec!["inputs", "steps", "target", "secrets"];
        for (k, present) in [
            ("event", self.event.is_some()),
            ("node", self.node.is_some()),
            ("result", self.result.is_some()),
        ] {
            if present {
                keys.push(k);
            }
        }
        Enumerator::Values(keys.into_iter().map(MjValue::from).collect())
    }
}

/// One workflow level (the run's workflow, or a sub-workflow).
pub(super) struct Scope {
    /// Prefix of record step ids (`""`, or `"<step>/"` for a sub-workflow).
    pub prefix: String,
    pub inputs: Map<String, Value>,
    pub event: Value,
    pub secrets: Map<String, Value>,
    pub secret_env: Vec<(String, String)>,
    pub default_node: Option<String>,
    /// `steps.<id>` values for templates.
    pub steps: Arc<StepTable>,
    pub depth: usize,
    /// When the whole level must be done (a `workflow` step's `timeout`): steps not started
    /// by then are cancelled, running ones get at most the time left.
    pub deadline: Option<Instant>,
    // Template values built once per level.
    inputs_tpl: MjValue,
    secrets_tpl: MjValue,
    event_tpl: Option<MjValue>,
    steps_tpl: MjValue,
}

/// The data a [`Scope`] is built from.
pub(super) struct ScopeInit {
    pub prefix: String,
    pub inputs: Map<String, Value>,
    pub event: Value,
    pub secrets: LoadedSecrets,
    pub default_node: Option<String>,
    pub steps: StepTable,
    pub depth: usize,
    pub deadline: Option<Instant>,
}

impl Scope {
    pub fn new(i: ScopeInit) -> Self {
        let steps = Arc::new(i.steps);
        Scope {
            inputs_tpl: MjValue::from_serialize(&i.inputs),
            secrets_tpl: MjValue::from_serialize(&i.secrets.map),
            event_tpl: (!i.event.is_null()).then(|| MjValue::from_serialize(&i.event)),
            steps_tpl: MjValue::from_object(StepsObject(steps.clone())),
            prefix: i.prefix,
            inputs: i.inputs,
            event: i.event,
            secrets: i.secrets.map,
            secret_env: i.secrets.env,
            default_node: i.default_node,
            steps,
            depth: i.depth,
            deadline: i.deadline,
        }
    }

    /// The top level of a run (no prefix, no deadline).
    pub fn root(
        inputs: Map<String, Value>,
        event: Value,
        secrets: LoadedSecrets,
        default_node: Option<String>,
    ) -> Self {
        Scope::new(ScopeInit {
            prefix: String::new(),
            inputs,
            event,
            secrets,
            default_node,
            steps: StepTable::default(),
            depth: 0,
            deadline: None,
        })
    }

    /// The secrets of this level, as loaded.
    pub fn loaded_secrets(&self) -> LoadedSecrets {
        LoadedSecrets {
            map: self.secrets.clone(),
            env: self.secret_env.clone(),
            values: Vec::new(),
        }
    }

    /// The template context for a step (on `node`, when it has one).
    pub fn context(&self, run: &RunCtx, node: Option<&Arc<dyn NodeOps>>) -> MjValue {
        self.context_with(run, node, None)
    }

    /// The template context with `result` (a step's outputs are evaluated over it).
    pub fn context_with(
        &self,
        run: &RunCtx,
        node: Option<&Arc<dyn NodeOps>>,
        result: Option<&Value>,
    ) -> MjValue {
        let node = node.map(|n| {
            let r = n.node();
            MjValue::from_serialize(serde_json::json!({
                "name": r.name, "roles": r.roles, "labels": r.labels, "driver": n.driver()
            }))
        });
        MjValue::from_object(TemplateContext {
            inputs: self.inputs_tpl.clone(),
            steps: self.steps_tpl.clone(),
            target: run.target.clone(),
            secrets: self.secrets_tpl.clone(),
            event: self.event_tpl.clone(),
            node,
            result: result.map(MjValue::from_serialize),
        })
    }

    pub fn set_step(&self, id: &str, v: StepView) {
        self.steps.set(id, v);
    }
}

/// Secrets as templates see them (`secrets.<name>`), as script env, and raw values to mask.
#[derive(Debug, Clone, Default)]
pub(super) struct LoadedSecrets {
    pub map: Map<String, Value>,
    pub env: Vec<(String, String)>,
    pub values: Vec<String>,
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

/// Read the workflow's secrets from their sources (environment or files). Called again on
/// resume: secrets are never journaled, so a resumed run reads them where the first did.
pub(super) fn load_secrets(w: &Workflow) -> Result<LoadedSecrets, EngineError> {
    let mut out = LoadedSecrets::default();
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
        out.env.push((secret_env_name(name), value.clone()));
        out.map.insert(name.clone(), Value::String(value.clone()));
        out.values.push(value);
    }
    Ok(out)
}

/// Mask every string of a map's values.
pub(super) fn mask_map(m: &Map<String, Value>, masker: &Masker) -> Map<String, Value> {
    match masker.mask_json(&Value::Object(m.clone())) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
