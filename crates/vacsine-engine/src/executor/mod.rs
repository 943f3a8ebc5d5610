//! Executors: the actions a step `uses`. Each parses its (already templated) arguments into a
//! typed struct with `deny_unknown_fields`, acts on the step's node through [`NodeOps`], and
//! reports `changed` where it can. Executors that change state return `undo` data captured
//! *before* the change, so the engine can restore the node.

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use vacsine_core::node::{ExecOutput, NodeOps, Site};
use vacsine_core::record::{rfc3339, Level, Message, StepStatus};

mod ansible;
mod command;
mod container;
mod file;
mod firewall;
mod http;
mod misc;
mod nftset;
mod scan;
mod wait;

pub use ansible::AnsibleExecutor;
pub use command::{CommandExecutor, ScriptExecutor};
pub use container::{check_image, ContainerExecutor};
pub use file::FileExecutor;
pub use firewall::{nft_check, rendered_ruleset, validate_rule, FirewallExecutor, NftCheck};
pub use http::HttpExecutor;
pub use misc::{QuarantineExecutor, SysctlExecutor};
pub use nftset::{decisions_listed, decisions_skeleton, NftSetExecutor};
pub use scan::{check_ports, check_targets, nmap_argv, open_ports, OpenPort, ScanExecutor};
pub use wait::WaitUntilExecutor;

/// What an executor sees of the run.
pub struct ExecCtx {
    pub run_id: String,
    pub step_id: String,
    /// Attempt number of the step (1, 2, … with `retry`; 1 for undo).
    pub attempt: u32,
    /// The node the step runs on (None for executors that need none, e.g. `http`).
    pub node: Option<Arc<dyn NodeOps>>,
    /// Deadline for the whole step; executors pass it to `NodeOps::exec`.
    pub timeout: Duration,
    /// Secrets as environment variables (`VACSINE_SECRET_<NAME>`), for the script executor.
    pub secret_env: Vec<(String, String)>,
    /// Observer of checks (for `wait-until`).
    pub observer: Option<Arc<dyn Site>>,
    /// Where prior state is journaled before a change (None: kept in memory only).
    pub undo_log: Option<UndoLog>,
}

/// Journals an attempt's undo data before the change it protects, so that a crash between the
/// change and the end of the step still leaves the true prior state to restore.
#[derive(Clone)]
pub struct UndoLog {
    pub(crate) journal: crate::Journal,
    pub(crate) run_id: String,
    pub(crate) record_seq: i64,
    pub(crate) step_id: String,
    pub(crate) node: Option<String>,
    pub(crate) executor: String,
    pub(crate) saved: Arc<std::sync::atomic::AtomicBool>,
}

impl UndoLog {
    pub(crate) fn saved(&self) -> bool {
        self.saved.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl ExecCtx {
    /// Journal the prior state before changing anything (replaces an earlier capture of the
    /// same attempt). Also return it as [`StepResult::undo`].
    pub fn save_undo(&self, data: &Value) -> Result<(), String> {
        let Some(log) = &self.undo_log else {
            return Ok(());
        };
        log.journal
            .save_undo(
                &log.run_id,
                log.record_seq,
                &log.step_id,
                log.node.as_deref(),
                &log.executor,
                data,
            )
            .map_err(|e| format!("cannot journal the prior state, nothing changed: {e}"))?;
        log.saved.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// The node, or an error naming the step.
    pub fn node(&self) -> Result<&Arc<dyn NodeOps>, String> {
        self.node
            .as_ref()
            .ok_or_else(|| format!("step `{}` needs a node and none was given", self.step_id))
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub changed: bool,
    pub messages: Vec<Message>,
    pub outputs: serde_json::Map<String, Value>,
    /// Prior state captured before changing anything; present only when `changed`.
    pub undo: Option<Value>,
    pub error: Option<String>,
    /// Set when the step ran elsewhere and this result reports it (a step of a run
    /// spanning sites): its start and duration there, recorded instead of the wait here.
    pub ran: Option<vacsine_core::record::Ran>,
}

impl StepResult {
    pub fn ok(changed: bool) -> Self {
        StepResult {
            status: StepStatus::Succeeded,
            exit_code: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            changed,
            messages: Vec::new(),
            outputs: Default::default(),
            undo: None,
            error: None,
            ran: None,
        }
    }
    pub fn failed(error: impl Into<String>) -> Self {
        StepResult {
            status: StepStatus::Failed,
            error: Some(error.into()),
            ..StepResult::ok(false)
        }
    }
    pub fn timed_out(after: Duration) -> Self {
        StepResult {
            status: StepStatus::TimedOut,
            error: Some(format!("timed out after {}", fmt_duration(after))),
            ..StepResult::ok(false)
        }
    }
    pub fn msg(mut self, level: Level, text: impl Into<String>) -> Self {
        self.push(level, text);
        self
    }
    pub fn push(&mut self, level: Level, text: impl Into<String>) {
        self.messages.push(message(level, text));
    }
    pub fn output(mut self, key: &str, v: impl Into<Value>) -> Self {
        self.outputs.insert(key.to_string(), v.into());
        self
    }
    /// Fill exit code and streams from a process result.
    pub fn with_exec(mut self, out: ExecOutput) -> Self {
        let streams = [
            ("stdout", out.stdout.len(), out.stdout_dropped),
            ("stderr", out.stderr.len(), out.stderr_dropped),
        ];
        for (name, kept, dropped) in streams.into_iter().filter(|s| s.2 > 0) {
            self.push(
                Level::Warn,
                format!(
                    "{name}: {dropped} bytes dropped past the first {kept} (output cap; the \
                     process ran to completion)"
                ),
            );
        }
        self.exit_code = out.exit_code;
        self.stdout = out.stdout;
        self.stderr = out.stderr;
        self
    }
}

pub(crate) fn message(level: Level, text: impl Into<String>) -> Message {
    Message {
        at: rfc3339(chrono::Utc::now()),
        level,
        text: text.into(),
    }
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// An action a step can use.
#[async_trait]
pub trait Executor: Send + Sync {
    /// The name in `uses:`.
    fn name(&self) -> &'static str;
    /// What the executor does, in one sentence (the executor reference).
    fn summary(&self) -> &'static str;
    /// JSON Schema of the step's `with:`, made from the executor's argument type (the
    /// workflow schema and the executor reference are generated from it: `crate::reference`).
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema;
    /// Outputs a successful attempt sets (`result.outputs.<name>`): name and meaning.
    fn outputs(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Whether re-running after a crash is safe (a step's `idempotent:` overrides this).
    fn idempotent(&self) -> bool;
    /// Whether the executor can report what it would change without changing it.
    fn supports_check_mode(&self) -> bool {
        false
    }
    /// Whether the step must run on a node.
    fn needs_node(&self) -> bool {
        true
    }
    /// Argument keys taken literally from the workflow file, never templated (script text).
    fn literal_args(&self) -> &'static [&'static str] {
        &[]
    }
    /// Static check of the arguments as written (templates not rendered yet).
    fn check_args(&self, args: &Value) -> Result<(), String>;
    /// Run one attempt.
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult;
    /// Restore the state captured in `undo` by an earlier `run`.
    async fn undo(&self, ctx: &ExecCtx, undo: Value) -> StepResult {
        let _ = (ctx, undo);
        StepResult::failed(format!("executor `{}` cannot undo", self.name()))
    }
}

/// Parse arguments strictly, with an error naming the executor.
pub fn parse_args<T: DeserializeOwned>(executor: &str, args: Value) -> Result<T, String> {
    crate::template::from_rendered(args)
        .map_err(|e| format!("invalid `with` for `{executor}`: {e}"))
}

/// Static check: parse if nothing is templated; otherwise only unknown/missing fields count.
pub(crate) fn check_typed<T: DeserializeOwned>(executor: &str, args: &Value) -> Result<(), String> {
    match crate::template::from_rendered::<T>(args.clone()) {
        Ok(_) => Ok(()),
        Err(e) => {
            let msg = e.to_string();
            let templated = contains_template(args);
            if !templated || msg.starts_with("unknown field") || msg.starts_with("missing field") {
                Err(format!("invalid `with` for `{executor}`: {msg}"))
            } else {
                Ok(())
            }
        }
    }
}

pub(crate) fn contains_template(v: &Value) -> bool {
    match v {
        Value::String(s) => crate::template::is_templated(s),
        Value::Array(a) => a.iter().any(contains_template),
        Value::Object(o) => o.values().any(contains_template),
        _ => false,
    }
}

/// The executors known to the engine, by name.
#[derive(Clone)]
pub struct Registry {
    map: BTreeMap<&'static str, Arc<dyn Executor>>,
}

/// Name of the sub-workflow executor (run by the engine itself).
pub const WORKFLOW_EXECUTOR: &str = "workflow";

/// The built-in executors (what an [`crate::Engine`] starts with; `workflow` is the
/// engine's own).
pub fn builtin() -> Vec<Arc<dyn Executor>> {
    vec![
        Arc::new(CommandExecutor { name: "command" }),
        Arc::new(CommandExecutor {
            name: "docker.exec",
        }),
        Arc::new(ScriptExecutor),
        Arc::new(FileExecutor),
        Arc::new(FirewallExecutor),
        Arc::new(NftSetExecutor),
        Arc::new(SysctlExecutor),
        Arc::new(QuarantineExecutor),
        Arc::new(WaitUntilExecutor),
        Arc::new(ScanExecutor),
        Arc::new(HttpExecutor::default()),
        Arc::new(ContainerExecutor::default()),
        Arc::new(AnsibleExecutor::default()),
    ]
}

impl Default for Registry {
    fn default() -> Self {
        let mut r = Registry {
            map: BTreeMap::new(),
        };
        for e in builtin() {
            r.register(e);
        }
        r
    }
}

impl Registry {
    pub fn register(&mut self, e: Arc<dyn Executor>) {
        self.map.insert(e.name(), e);
    }
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Executor>> {
        self.map.get(name)
    }
    /// The registered executors, by name.
    pub fn executors(&self) -> impl Iterator<Item = &Arc<dyn Executor>> {
        self.map.values()
    }
    /// Every executor name, including `workflow`.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.map.keys().copied().collect();
        v.push(WORKFLOW_EXECUTOR);
        v.sort();
        v
    }
}
