//! Runs spanning sites: a workflow whose steps name sites with `runsOn` is driven by the
//! orchestrator's own engine, where every site is a node. The engine keeps its meaning of
//! `needs`, `if`, `retry`, outputs, undo and `rollback`; only the execution of a step moves:
//! each built-in executor is wrapped in [`AtSite`], which hands the step (executor name and
//! rendered arguments) to a [`StepDispatcher`]. The orchestrator's dispatcher queues it as a
//! signed one-step job for that site's agents, waits for the agent's confirmation (the step's
//! outcome, sent with the job's end), and only then does the engine advance.
//!
//! The agent side is `vacsine-agent`'s `step_job.rs`, what crosses the wire `vacsine_contract::step`; the orchestrator side `server/spanning.rs`.

use async_trait::async_trait;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use vacsine_contract::proto::Job;
use vacsine_core::node::{ExecOutput, FileContent, NodeError, NodeOps};
use vacsine_core::target::ResolvedNode;
use vacsine_core::workflow::{RunsOn, Workflow};
use vacsine_engine::executor::{ExecCtx, Executor, StepResult};

pub use vacsine_contract::step::{outcome_of, result_of, MAX_STEP_MS};

/// Whether a workflow job is a run spanning sites: a step of the workflow (or of its
/// `rollback`) names where it runs with `runsOn`. Catalog workflows it calls do not decide
/// (the catalog's own `runsOn: {}`, "every node", would make every run span sites); inside a
/// run spanning sites they see every site as a node.
pub fn spans_sites(job: &Job) -> bool {
    let Job::Workflow(w) = job else {
        return false;
    };
    let spec = &w.workflow.spec;
    spec.steps
        .iter()
        .chain(spec.rollback.iter())
        .any(|s| s.runs_on.is_some())
}

/// Sites named literally by `runsOn` in `w` (templated names are resolved when the step
/// runs).
pub fn named_sites(w: &Workflow) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in w.spec.steps.iter().chain(w.spec.rollback.iter()) {
        match &s.runs_on {
            Some(RunsOn::Node(n)) if !n.contains("{{") => {
                out.insert(n.clone());
            }
            Some(RunsOn::Select(sel)) => {
                out.extend(sel.names.iter().map(|n| n.value.clone()));
            }
            _ => {}
        }
    }
    out
}

/// A site as a node of the orchestrator's engine: it has a name and nothing else, since
/// nothing runs on it here (every executor is an [`AtSite`]).
pub struct SiteNode {
    node: ResolvedNode,
}

impl SiteNode {
    pub fn new(site: &str) -> Self {
        SiteNode {
            node: ResolvedNode {
                name: site.to_string(),
                roles: vec!["site".into()],
                labels: BTreeMap::from([("site".to_string(), site.to_string())]),
                handle: site.to_string(),
            },
        }
    }
    fn remote(&self, op: &str) -> NodeError {
        NodeError::Unsupported {
            op: format!(
                "{op} (site `{}` is reached through its agent)",
                self.node.name
            ),
            driver: "site".into(),
        }
    }
}

#[async_trait]
impl NodeOps for SiteNode {
    fn node(&self) -> &ResolvedNode {
        &self.node
    }
    fn driver(&self) -> &'static str {
        "site"
    }
    async fn exec(
        &self,
        _argv: &[String],
        _env: &[(String, String)],
        _stdin: Option<Vec<u8>>,
        _timeout: Duration,
    ) -> Result<ExecOutput, NodeError> {
        Err(self.remote("exec"))
    }
    async fn read_file(&self, _path: &str) -> Result<Option<FileContent>, NodeError> {
        Err(self.remote("read_file"))
    }
    async fn write_file(
        &self,
        _path: &str,
        _content: &[u8],
        _mode: u32,
        _uid: u32,
        _gid: u32,
    ) -> Result<(), NodeError> {
        Err(self.remote("write_file"))
    }
    async fn chmod(&self, _path: &str, _mode: u32) -> Result<(), NodeError> {
        Err(self.remote("chmod"))
    }
    async fn nft_ruleset(&self) -> Result<String, NodeError> {
        Err(self.remote("nft_ruleset"))
    }
    async fn nft_apply(&self, _script: &str) -> Result<(), NodeError> {
        Err(self.remote("nft_apply"))
    }
    async fn sysctl_get(&self, _key: &str) -> Result<Option<String>, NodeError> {
        Err(self.remote("sysctl_get"))
    }
    async fn sysctl_set(&self, _key: &str, _value: &str) -> Result<(), NodeError> {
        Err(self.remote("sysctl_set"))
    }
    async fn networks(&self) -> Result<Vec<String>, NodeError> {
        Err(self.remote("networks"))
    }
    async fn quarantine(&self, _keep: Option<&str>) -> Result<Vec<String>, NodeError> {
        Err(self.remote("quarantine"))
    }
    async fn release(&self, _networks: &[String]) -> Result<(), NodeError> {
        Err(self.remote("release"))
    }
}

/// Runs a step at a site and returns what it did there.
#[async_trait]
pub trait StepDispatcher: Send + Sync {
    /// Run executor `executor` with `args` (or, with `undo`, its undo) for `ctx`'s step at
    /// `site`; the result once the site confirmed it.
    async fn dispatch(
        &self,
        site: &str,
        ctx: &ExecCtx,
        executor: &str,
        args: Value,
        undo: Option<Value>,
    ) -> StepResult;
}

/// An executor of the orchestrator's engine that runs its step at the step's site.
pub struct AtSite {
    inner: Arc<dyn Executor>,
    dispatcher: Arc<dyn StepDispatcher>,
    home: String,
}

impl AtSite {
    /// Every built-in executor, wrapped: register each on the engine that drives the run.
    pub fn all(dispatcher: Arc<dyn StepDispatcher>, home: &str) -> Vec<Arc<dyn Executor>> {
        vacsine_engine::executor::builtin()
            .into_iter()
            .map(|inner| {
                Arc::new(AtSite {
                    inner,
                    dispatcher: dispatcher.clone(),
                    home: home.to_string(),
                }) as Arc<dyn Executor>
            })
            .collect()
    }

    fn site<'a>(&'a self, ctx: &'a ExecCtx) -> &'a str {
        ctx.node
            .as_ref()
            .map(|n| n.node().name.as_str())
            .unwrap_or(&self.home)
    }
}

#[async_trait]
impl Executor for AtSite {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn summary(&self) -> &'static str {
        self.inner.summary()
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        self.inner.args_schema(g)
    }
    fn outputs(&self) -> &'static [(&'static str, &'static str)] {
        self.inner.outputs()
    }
    /// A dispatched step is confirmed at most once per attempt: after a crash of the
    /// orchestrator the dispatcher adopts the attempt that was under way instead of sending
    /// it again, so resuming it is safe whatever the executor.
    fn idempotent(&self) -> bool {
        true
    }
    fn supports_check_mode(&self) -> bool {
        false
    }
    fn needs_node(&self) -> bool {
        // Executors that need no node (`http`) run at the run's home site.
        true
    }
    fn literal_args(&self) -> &'static [&'static str] {
        self.inner.literal_args()
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        self.inner.check_args(args)
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        let site = self.site(ctx).to_string();
        self.dispatcher
            .dispatch(&site, ctx, self.inner.name(), args, None)
            .await
    }
    async fn undo(&self, ctx: &ExecCtx, undo: Value) -> StepResult {
        let site = self.site(ctx).to_string();
        self.dispatcher
            .dispatch(&site, ctx, self.inner.name(), Value::Null, Some(undo))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vacsine_contract::proto::StepOutcome;
    use vacsine_core::record::{Level, StepStatus};

    #[test]
    fn an_outcome_carries_what_the_engine_needs_back() {
        let mut r = StepResult::ok(true)
            .msg(Level::Info, "done")
            .output("port", 22);
        r.undo = Some(json!({"prior": "x"}));
        r.stdout = b"out".to_vec();
        let back = result_of(
            serde_json::from_value(serde_json::to_value(outcome_of(&r)).unwrap()).unwrap(),
        );
        assert_eq!(back.status, StepStatus::Succeeded);
        assert_eq!(back.outputs["port"], 22);
        assert_eq!(back.undo, Some(json!({"prior": "x"})));
        assert_eq!(back.stdout, b"out");
        assert_eq!(back.messages.len(), 1);
        // Undo data without a change is not sent; a failure without a message gets one.
        let mut f = StepResult::failed("boom");
        f.undo = Some(json!(1));
        let o = outcome_of(&f);
        assert_eq!(o.undo, None);
        let back = result_of(StepOutcome::new(StepStatus::TimedOut));
        assert_eq!(back.status, StepStatus::TimedOut);
        assert!(back.error.unwrap().contains("timed_out"));
        // A status this build does not know (a later agent's) reads as failed.
        let unknown = result_of(serde_json::from_value(json!({"status": "exploded"})).unwrap());
        assert_eq!(unknown.status, StepStatus::Failed);
    }

    #[test]
    fn a_job_spans_sites_when_a_step_names_where_it_runs() {
        let job = |spec: Value| {
            Job::workflow(
                serde_json::from_value(json!({"apiVersion": "vacsine.io/v1", "kind": "Workflow",
                    "metadata": {"name": "w"}, "spec": spec}))
                .unwrap(),
                vec![],
                Default::default(),
            )
        };
        assert!(!spans_sites(&job(
            json!({"steps": [{"id": "a", "uses": "command"}]})
        )));
        assert!(spans_sites(&job(
            json!({"steps": [{"id": "a", "uses": "command", "runsOn": "edge-b"}]})
        )));
        assert!(spans_sites(&job(
            json!({"steps": [], "rollback": [{"id": "r", "uses": "command", "runsOn": "edge-b"}]})
        )));
    }
}
