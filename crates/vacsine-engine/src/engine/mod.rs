//! The workflow engine: one run's lifecycle (`lifecycle`), DAG scheduling and fan-out
//! (`schedule`), one step attempt on one node (`attempt`), sub-workflows (`subworkflow`),
//! compensation (`compensate`), and what a run carries while it executes (`context`).

mod attempt;
mod compensate;
mod context;
mod lifecycle;
mod schedule;
mod subworkflow;

use crate::executor::{Executor, Registry};
use crate::journal::Journal;
use crate::RunStatus;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use vacsine_core::node::{NodeOps, Site};
use vacsine_core::record::{rfc3339, StepRecord, StepStatus};
use vacsine_core::workflow::Workflow;

/// Grace period between asking running steps to stop (SIGTERM to their process groups) and
/// killing them (SIGKILL) when a run is cancelled.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Asks a run to stop: the first [`CancelToken::cancel`] stops scheduling and asks running
/// steps to end (SIGTERM, then SIGKILL after [`CANCEL_GRACE`]); a second one kills them at
/// once. Either way every step is journaled and the run ends `cancelled`, resumable.
#[derive(Debug, Clone)]
pub struct CancelToken {
    level: Arc<tokio::sync::watch::Sender<u8>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken {
            level: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    /// Escalate: none → graceful → immediate.
    pub fn cancel(&self) {
        self.level.send_modify(|l| *l = (*l + 1).min(2));
    }
    /// Go straight to immediate.
    pub fn cancel_now(&self) {
        self.level.send_modify(|l| *l = 2);
    }
    pub fn is_cancelled(&self) -> bool {
        *self.level.borrow() >= 1
    }
    pub fn is_immediate(&self) -> bool {
        *self.level.borrow() >= 2
    }
    /// Resolves once the level reaches `at_least` (1: graceful, 2: immediate).
    pub async fn reached(&self, at_least: u8) {
        let mut rx = self.level.subscribe();
        let _ = rx.wait_for(|l| *l >= at_least).await;
    }
}

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
    /// Cancellation (signals).
    pub cancel: CancelToken,
    /// The run's id (default: a new UUID). A caller that keeps its own record of the run
    /// (the orchestrator) gives its id, so that a resume after a crash finds the run.
    pub run_id: Option<String>,
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
            cancel: CancelToken::default(),
            run_id: None,
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
}

/// Whether a record id is an undo or rollback record (of the run or of a sub-workflow).
fn is_compensation(step_id: &str) -> bool {
    step_id
        .split('/')
        .any(|seg| seg.starts_with("undo:") || seg.starts_with("rollback:"))
}
