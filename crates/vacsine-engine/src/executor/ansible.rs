//! `ansible`: runs a real `ansible-playbook` against the step's node and turns each task result
//! into a message of the step record.
//!
//! Nodes: the local host (`local` driver, connection `local`), or a container (`docker` driver,
//! its handle is the container name) through the `vacsine_docker` connection plugin shipped here
//! (`vacsine_docker.py`: `docker exec` with argv lists, files streamed through `docker exec -i`),
//! written with the callback plugin to a private temporary directory for each step. The
//! container needs `/bin/sh`, `cat` and Python; the interpreter is discovered
//! (`auto_silent`) unless `interpreter` says where it is.
//!
//! Per-task records: the shipped notification callback (`vacsine_events.py`) writes one JSON
//! line per event (task start, start on a host, result, loop item, stats) with wall-clock times
//! to a file of the temporary directory; the playbook's own output (Ansible's default stdout
//! callback) stays the record's stdout. Each task and loop item becomes a message stamped with
//! its real start time, with host, duration, status, the skip reason, the loop item and a diff
//! summary (`diff: true`), and an entry of the `results` output. A failed or timed-out play
//! names the tasks that had already changed something: Ansible keeps those changes and the
//! engine has no undo data for them.
//!
//! Inline `tasks` are taken literally from the workflow file (their `{{ }}` belong to Ansible,
//! not to the engine). Data reaches the playbook only through `vars`, written as a vars file
//! with every string tagged `!unsafe`, so Ansible never evaluates a value as a template: an
//! attacker-controlled value stays data there too.

use super::{check_typed, fmt_duration, parse_args, ExecCtx, Executor, StepResult};
use crate::local::LocalNode;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;
use vacsine_core::node::{ExecOutput, NodeOps};
use vacsine_core::record::{rfc3339, Level, Message, StepStatus};

/// Arguments of `ansible`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AnsibleArgs {
    /// Path of a playbook on the engine host.
    #[serde(default)]
    playbook: Option<String>,
    /// Inline tasks (a play on the node is built around them). Never templated.
    #[serde(default)]
    tasks: Option<Vec<Value>>,
    /// Variables (templated by the engine, then passed to Ansible as unsafe data).
    #[serde(default)]
    vars: Map<String, Value>,
    /// Run with `--check` (report what would change, change nothing).
    #[serde(default)]
    check: bool,
    /// Run with `--diff`: each task's message summarises what its diff touched.
    #[serde(default)]
    diff: bool,
    /// Python interpreter in a container node (default: discovered).
    #[serde(default)]
    interpreter: Option<String>,
}

/// The connection plugin for container nodes.
const DOCKER_CONNECTION: &str = include_str!("vacsine_docker.py");

/// Container names and ids as Docker accepts them: nothing Ansible or a shell could interpret.
fn check_container_name(n: &str) -> Result<(), String> {
    let ok = n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.len() <= 253
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid container name `{n}`"))
    }
}

fn check_interpreter(p: &str) -> Result<(), String> {
    let ok = p.starts_with('/')
        && p.len() <= 256
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid interpreter `{p}` (an absolute path of letters, digits, `_.-/`)"
        ))
    }
}

/// Where the play runs.
enum Target {
    Local,
    /// A container, by name.
    Docker(String),
}

/// The notification callback: one JSON line per event (task start, per-host start, result,
/// loop item, stats) with wall-clock times, written to the file named by [`EVENTS_ENV`].
const EVENTS_CALLBACK: &str = include_str!("vacsine_events.py");
/// Environment variable naming the events file (not stdout: the playbook's own output stays
/// in the record's stdout, separate).
const EVENTS_ENV: &str = "VACSINE_ANSIBLE_EVENTS";

fn check_var_name(k: &str) -> Result<(), String> {
    let ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with("ansible_");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid Ansible variable name `{k}` (letters, digits, `_`; `ansible_*` is reserved)"
        ))
    }
}

/// YAML (flow style) of a value with every string tagged `!unsafe`.
fn unsafe_yaml(v: &Value) -> String {
    match v {
        Value::String(s) => format!("!unsafe {}", Value::String(s.clone())),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(unsafe_yaml).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, x)| format!("{}: {}", Value::String(k.clone()), unsafe_yaml(x)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

pub struct AnsibleExecutor {
    host: LocalNode,
}

impl Default for AnsibleExecutor {
    fn default() -> Self {
        AnsibleExecutor {
            host: LocalNode::new("ansible-controller"),
        }
    }
}

#[async_trait]
impl Executor for AnsibleExecutor {
    fn name(&self) -> &'static str {
        "ansible"
    }
    fn summary(&self) -> &'static str {
        "Run an Ansible playbook (or inline tasks) on the node with the real ansible-playbook; each task becomes a message."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<AnsibleArgs>()
    }
    fn outputs(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("tasks", "number of tasks run"),
            ("changed_tasks", "number of tasks that changed something"),
            (
                "results",
                "one record per task and host: task, host, status, changed, message",
            ),
            ("stats", "ansible-playbook's own per-host counts"),
        ]
    }
    fn idempotent(&self) -> bool {
        false
    }
    fn supports_check_mode(&self) -> bool {
        true
    }
    fn literal_args(&self) -> &'static [&'static str] {
        &["tasks"]
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<AnsibleArgs>("ansible", args)?;
        match (args.get("playbook"), args.get("tasks")) {
            (Some(_), Some(_)) => return Err("give either `playbook` or `tasks`, not both".into()),
            (None, None) => return Err("give `playbook` or `tasks`".into()),
            _ => {}
        }
        if let Some(Value::Object(vars)) = args.get("vars") {
            for k in vars.keys() {
                check_var_name(k)?;
            }
        }
        if let Some(Value::String(i)) = args.get("interpreter") {
            if !crate::template::is_templated(i) {
                check_interpreter(i)?;
            }
        }
        Ok(())
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        match self.play(ctx, args).await {
            Ok(r) => r,
            Err(e) => StepResult::failed(e),
        }
    }
}

impl AnsibleExecutor {
    /// Run one play: check the arguments, prepare its private directory, run
    /// `ansible-playbook` there, and turn its events and exit into the step result.
    async fn play(&self, ctx: &ExecCtx, args: Value) -> Result<StepResult, String> {
        let a: AnsibleArgs = parse_args("ansible", args)?;
        let target = target_of(ctx.node()?.as_ref())?;
        if let Some(i) = &a.interpreter {
            check_interpreter(i)?;
        }
        for k in a.vars.keys() {
            check_var_name(k)?;
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let files = prepare_files(dir.path(), &a, &target)?;
        let argv = command_line(&files, a.check, a.diff);
        let events_path = dir.path().join("events.jsonl");
        let env = play_env(dir.path(), &events_path);
        let out = self
            .host
            .exec(&argv, &env, None, ctx.timeout)
            .await
            .map_err(|e| {
                format!("{e} (is ansible-core installed and `ansible-playbook` on PATH?)")
            })?;
        let play = Play::from_events(&read_events(&events_path).await?);
        Ok(step_result(out, &play, a.check, ctx.timeout))
    }
}

/// Where the play of a step on `node` runs: the local host, or a container of the docker
/// driver (its handle checked to be a plain container name).
fn target_of(node: &dyn NodeOps) -> Result<Target, String> {
    match node.driver() {
        "local" if node.node().handle == "local" => Ok(Target::Local),
        "docker" => {
            check_container_name(&node.node().handle)?;
            Ok(Target::Docker(node.node().handle.clone()))
        }
        other => Err(format!(
            "the ansible executor manages the local host and container nodes; node `{}` uses the {other} driver",
            node.node().name
        )),
    }
}

/// The files of one play in its private directory.
struct PlayFiles {
    /// The playbook: the user's path, or the play written around the inline tasks.
    playbook: String,
    /// The inventory file of a container node; `None` for the local host.
    inventory: Option<String>,
    /// The vars file (`-e @vars`).
    vars: String,
}

/// Write `text` to `dir/name`, readable by the owner only; returns its path.
fn write_private(dir: &Path, name: &str, text: &str) -> Result<String, String> {
    let path = dir.join(name);
    // 0600 from its first byte: the vars file carries the step's (unmasked) values.
    vacsine_private::write_private(&path, text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.to_string_lossy().into_owned())
}

/// Write into `dir` the callback and connection plugins, the play of inline tasks, the
/// inventory of a container node and the vars file.
fn prepare_files(dir: &Path, a: &AnsibleArgs, target: &Target) -> Result<PlayFiles, String> {
    std::fs::create_dir(dir.join("callbacks")).map_err(|e| e.to_string())?;
    write_private(dir, "callbacks/vacsine_events.py", EVENTS_CALLBACK)?;
    std::fs::create_dir(dir.join("connections")).map_err(|e| e.to_string())?;
    write_private(dir, "connections/vacsine_docker.py", DOCKER_CONNECTION)?;
    let playbook = match (&a.playbook, &a.tasks) {
        (Some(pb), None) => pb.clone(),
        (None, Some(tasks)) => {
            let play = json!([{"hosts": "all", "gather_facts": false, "tasks": tasks}]);
            write_private(dir, "playbook.json", &play.to_string())?
        }
        _ => return Err("give either `playbook` or `tasks`".into()),
    };
    let inventory = match target {
        Target::Local => None,
        Target::Docker(container) => {
            let inv = inventory(container, a.interpreter.as_deref());
            Some(write_private(dir, "inventory.yml", &inv.to_string())?)
        }
    };
    let vars = write_private(dir, "vars.yml", &vars_yaml(target, &a.vars))?;
    Ok(PlayFiles {
        playbook,
        inventory,
        vars,
    })
}

/// The inventory of a container node: the one host, reached through the `vacsine_docker`
/// connection (JSON is YAML; every value is checked to hold no template).
fn inventory(container: &str, interpreter: Option<&str>) -> Value {
    let host = json!({
        "ansible_connection": "vacsine_docker",
        "ansible_host": container,
        "ansible_python_interpreter": interpreter.unwrap_or("auto_silent"),
    });
    json!({"all": {"hosts": {container: host}}})
}

/// The vars file: the step's `vars` with every string `!unsafe` (and, on the local host,
/// the controller's own Python as interpreter).
fn vars_yaml(target: &Target, vars: &Map<String, Value>) -> String {
    let mut text = String::new();
    if let Target::Local = target {
        text.push_str("ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n");
    }
    for (k, v) in vars {
        text.push_str(&format!("{k}: {}\n", unsafe_yaml(v)));
    }
    if text.is_empty() {
        text.push_str("{}\n");
    }
    text
}

/// The `ansible-playbook` command line of a play.
fn command_line(files: &PlayFiles, check: bool, diff: bool) -> Vec<String> {
    let mut argv: Vec<String> = vec!["ansible-playbook".into(), "-i".into()];
    match &files.inventory {
        None => argv.extend(["localhost,", "-c", "local"].map(String::from)),
        Some(inv) => argv.push(inv.clone()),
    }
    argv.push("-e".into());
    argv.push(format!("@{}", files.vars));
    if check {
        argv.push("--check".into());
    }
    if diff {
        argv.push("--diff".into());
    }
    argv.push("--".into());
    argv.push(files.playbook.clone());
    argv
}

/// The environment of `ansible-playbook`: the plugins of `dir`, the events callback writing
/// to `events`, pipelining, no colours, no retry files, temporary files under `dir`.
fn play_env(dir: &Path, events: &Path) -> Vec<(String, String)> {
    [
        (
            "ANSIBLE_CALLBACK_PLUGINS",
            dir.join("callbacks").to_string_lossy().into_owned(),
        ),
        (
            "ANSIBLE_CONNECTION_PLUGINS",
            dir.join("connections").to_string_lossy().into_owned(),
        ),
        // The playbook's usual output goes to stdout; the events to their own file.
        ("ANSIBLE_STDOUT_CALLBACK", "ansible.builtin.default".into()),
        ("ANSIBLE_CALLBACKS_ENABLED", "vacsine_events".into()),
        (EVENTS_ENV, events.to_string_lossy().into_owned()),
        // Modules go to the node on stdin: one `docker exec` per task, no temp files.
        ("ANSIBLE_PIPELINING", "1".into()),
        ("ANSIBLE_LOCALHOST_WARNING", "0".into()),
        ("ANSIBLE_INVENTORY_UNPARSED_WARNING", "0".into()),
        ("ANSIBLE_NOCOLOR", "1".into()),
        ("ANSIBLE_RETRY_FILES_ENABLED", "0".into()),
        (
            "ANSIBLE_LOCAL_TEMP",
            dir.join("tmp").to_string_lossy().into_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The events file as the callback wrote it while the play went (read also after a timeout,
/// to tell what had changed by then); empty if ansible-playbook stopped before loading
/// plugins.
async fn read_events(path: &Path) -> Result<String, String> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The step result of a play that ended with `out`: its tasks as messages and outputs; a
/// failure or timeout names why and the changes Ansible kept (not in check mode).
fn step_result(out: ExecOutput, play: &Play, check: bool, timeout: Duration) -> StepResult {
    let kept = if check { None } else { play.kept_changes() };
    let mut r = if out.timed_out {
        StepResult::timed_out(timeout)
    } else {
        StepResult::ok(false)
    };
    r.messages = play.messages();
    r.changed = play.changed();
    let code = out.exit_code;
    let failed = !out.timed_out && code != Some(0);
    r = r
        .output("tasks", play.tasks())
        .output("changed_tasks", play.changed_tasks())
        .output(
            "results",
            serde_json::to_value(&play.records).unwrap_or_default(),
        )
        .output("stats", play.stats.clone())
        .with_exec(out);
    if failed {
        let exit = match code {
            Some(c) => format!("exited with {c}"),
            None => "was killed by a signal".into(),
        };
        let why = play
            .first_failure()
            .unwrap_or_else(|| ansible_error(&r.stderr, &r.stdout));
        let mut error = format!("ansible-playbook {exit}: {why}");
        if let Some(k) = &kept {
            error.push_str("; ");
            error.push_str(k);
        }
        r.status = StepStatus::Failed;
        r.error = Some(error);
    }
    if failed || r.status == StepStatus::TimedOut {
        if let Some(k) = kept {
            if r.status == StepStatus::TimedOut {
                if let Some(e) = &mut r.error {
                    e.push_str("; ");
                    e.push_str(&k);
                }
            }
            r.push(Level::Warn, k);
        }
    }
    r
}

/// Ansible's own error when no task failed (bad playbook, missing file): its stderr, else the
/// last line of its stdout.
fn ansible_error(stderr: &[u8], stdout: &[u8]) -> String {
    let err = String::from_utf8_lossy(stderr).trim().to_string();
    if err.is_empty() {
        let out = String::from_utf8_lossy(stdout);
        out.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output")
            .trim()
            .to_string()
    } else {
        err
    }
}

/// Most loop items listed per task and host (the task's own record still counts them all).
const MAX_ITEMS_LISTED: usize = 50;

/// One line of the events file written by `vacsine_events.py` (a wire format: unknown events
/// and fields are ignored).
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    TaskStart {
        at: f64,
        uuid: String,
    },
    HostStart {
        at: f64,
        uuid: String,
        host: String,
    },
    Result(TaskEvent),
    Item(TaskEvent),
    Stats {
        #[serde(default)]
        stats: Value,
    },
    #[serde(other)]
    Other,
}

/// A task's (or a loop item's) result on one host.
#[derive(Debug, Deserialize)]
struct TaskEvent {
    at: f64,
    task: String,
    uuid: String,
    host: String,
    status: TaskStatus,
    #[serde(default)]
    changed: bool,
    #[serde(default)]
    msg: Option<Value>,
    #[serde(default)]
    skip_reason: Option<String>,
    #[serde(default)]
    false_condition: Option<Value>,
    #[serde(default)]
    item: Option<Value>,
    #[serde(default)]
    diff: Vec<DiffSummary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TaskStatus {
    Ok,
    Changed,
    Skipped,
    Failed,
    /// Failed with `ignore_errors`.
    Ignored,
    Unreachable,
    #[serde(other)]
    Unknown,
}

impl TaskStatus {
    fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Ok => "ok",
            TaskStatus::Changed => "changed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Failed => "failed",
            TaskStatus::Ignored => "ignored",
            TaskStatus::Unreachable => "unreachable",
            TaskStatus::Unknown => "unknown",
        }
    }
    fn level(self) -> Level {
        match self {
            TaskStatus::Failed | TaskStatus::Unreachable => Level::Error,
            TaskStatus::Ignored => Level::Warn,
            _ => Level::Info,
        }
    }
}

/// What a diff touched: its header (usually a path) and line counts, never the content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DiffSummary {
    #[serde(default)]
    header: String,
    #[serde(default)]
    added: u64,
    #[serde(default)]
    removed: u64,
}

/// One task (or loop item) on one host, as the step record reports it.
#[derive(Debug, Clone, Serialize)]
struct TaskRecord {
    task: String,
    host: String,
    status: TaskStatus,
    changed: bool,
    /// When the task started on the host (a loop item: when the previous item ended).
    started_at: String,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skip_reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    diff: Vec<DiffSummary>,
    /// Loop items of this task on this host not listed (beyond [`MAX_ITEMS_LISTED`]).
    #[serde(skip_serializing_if = "is_zero")]
    items_not_listed: u64,
    #[serde(skip)]
    start_us: i64,
    #[serde(skip)]
    is_item: bool,
    #[serde(skip)]
    key: (String, String),
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The per-task records of one playbook run, from its events.
#[derive(Debug, Default)]
struct Play {
    /// Tasks and loop items by start time (a task before its items).
    records: Vec<TaskRecord>,
    stats: Value,
}

/// Wall-clock seconds (as Python's `time.time()`) to microseconds; `None` if absurd.
fn micros(at: f64) -> Option<i64> {
    let us = (at * 1e6).round();
    (0.0..9e15).contains(&us).then_some(us as i64)
}

/// A JSON value as a short label: strings as they are, others compact, cut at 200 characters.
fn label(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

impl Play {
    fn from_events(text: &str) -> Play {
        use std::collections::HashMap;
        let mut play = Play::default();
        let mut task_start: HashMap<String, i64> = HashMap::new();
        let mut host_start: HashMap<(String, String), i64> = HashMap::new();
        // End of the last item of a loop task on a host: the next item's start.
        let mut item_clock: HashMap<(String, String), i64> = HashMap::new();
        let mut items_seen: HashMap<(String, String), usize> = HashMap::new();
        for line in text.lines() {
            let Ok(ev) = serde_json::from_str::<Event>(line) else {
                continue;
            };
            let (e, is_item) = match ev {
                Event::TaskStart { at, uuid } => {
                    if let Some(t) = micros(at) {
                        task_start.insert(uuid, t);
                    }
                    continue;
                }
                Event::HostStart { at, uuid, host } => {
                    let key = (uuid, host);
                    item_clock.remove(&key);
                    items_seen.remove(&key);
                    if let Some(t) = micros(at) {
                        host_start.insert(key, t);
                    }
                    continue;
                }
                Event::Stats { stats } => {
                    play.stats = stats;
                    continue;
                }
                Event::Other => continue,
                Event::Item(e) => (e, true),
                Event::Result(e) => (e, false),
            };
            let key = (e.uuid.clone(), e.host.clone());
            let end = micros(e.at);
            let task_start = host_start
                .get(&key)
                .or_else(|| task_start.get(&e.uuid))
                .copied();
            let start = if is_item {
                item_clock.get(&key).copied().or(task_start)
            } else {
                task_start
            };
            let (start, end) = match (start, end) {
                (Some(s), Some(e)) => (s.min(e), e),
                (None, Some(e)) => (e, e),
                (Some(s), None) => (s, s),
                (None, None) => {
                    let now = chrono::Utc::now().timestamp_micros();
                    (now, now)
                }
            };
            let mut items_not_listed = 0;
            if is_item {
                item_clock.insert(key.clone(), end);
                let n = items_seen.entry(key.clone()).or_default();
                *n += 1;
                if *n > MAX_ITEMS_LISTED {
                    continue;
                }
            } else {
                items_not_listed = items_seen
                    .get(&key)
                    .map_or(0, |n| n.saturating_sub(MAX_ITEMS_LISTED) as u64);
            }
            play.records.push(TaskRecord::new(
                e,
                key,
                start,
                end,
                is_item,
                items_not_listed,
            ));
        }
        // A loop task's own record comes after its items in the events; list it first.
        play.records.sort_by_key(|r| (r.start_us, r.is_item));
        play
    }

    /// The task results (one per task and host; loop items not counted).
    fn task_records(&self) -> impl Iterator<Item = &TaskRecord> {
        self.records.iter().filter(|r| !r.is_item)
    }

    fn tasks(&self) -> u64 {
        self.task_records().count() as u64
    }

    fn changed_tasks(&self) -> u64 {
        self.task_records().filter(|r| r.changed).count() as u64
    }

    fn changed(&self) -> bool {
        self.records.iter().any(|r| r.changed)
    }

    fn messages(&self) -> Vec<Message> {
        self.records
            .iter()
            .map(|r| Message {
                at: r.started_at.clone(),
                level: r.status.level(),
                text: r.text(),
            })
            .collect()
    }

    /// The first failure, for the step's error: a failed loop item says which item.
    fn first_failure(&self) -> Option<String> {
        let mut failures: Vec<&TaskRecord> = self
            .records
            .iter()
            .filter(|r| r.status.level() == Level::Error)
            .collect();
        // By end time: the item that failed, before its task's summary.
        failures.sort_by_key(|r| (r.start_us + (r.duration_ms * 1000) as i64, !r.is_item));
        let f = failures.first()?;
        let mut s = format!("task `{}` {}", f.task, f.status.as_str());
        if let Some(m) = &f.msg {
            s.push_str(": ");
            s.push_str(m);
        }
        if let Some(i) = &f.item {
            s.push_str(&format!(" [item={}]", label(i)));
        }
        s.push_str(&format!(" (on {})", f.host));
        Some(s)
    }

    /// The tasks that changed something, for a failed or timed-out play: Ansible does not undo
    /// them and neither can the engine.
    fn kept_changes(&self) -> Option<String> {
        let hosts: std::collections::BTreeSet<&str> =
            self.records.iter().map(|r| r.host.as_str()).collect();
        let names: Vec<String> = self
            .task_records()
            .filter(|r| r.changed)
            .map(|t| {
                let mut s = format!("`{}`", t.task);
                if hosts.len() > 1 {
                    s.push_str(&format!(" on {}", t.host));
                }
                let items: Vec<String> = self
                    .records
                    .iter()
                    .filter(|i| i.is_item && i.changed && i.key == t.key)
                    .filter_map(|i| i.item.as_ref().map(label))
                    .collect();
                if !items.is_empty() {
                    s.push_str(&format!(" (items {})", items.join(", ")));
                }
                s
            })
            .collect();
        (!names.is_empty()).then(|| {
            format!(
                "earlier changes kept, no automatic undo: {}",
                names.join(", ")
            )
        })
    }
}

impl TaskRecord {
    fn new(
        e: TaskEvent,
        key: (String, String),
        start_us: i64,
        end_us: i64,
        is_item: bool,
        items_not_listed: u64,
    ) -> TaskRecord {
        let started = chrono::DateTime::from_timestamp_micros(start_us).unwrap_or_default();
        let msg = match e.msg {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        };
        let skip_reason = match (e.skip_reason, e.false_condition) {
            (Some(r), Some(c)) => Some(format!("{r} (when: {})", label(&c))),
            (Some(r), None) => Some(r),
            (None, Some(c)) => Some(format!("false condition: {}", label(&c))),
            (None, None) => None,
        };
        TaskRecord {
            task: e.task,
            host: e.host,
            status: e.status,
            changed: e.changed,
            started_at: rfc3339(started),
            duration_ms: u64::try_from((end_us - start_us) / 1000).unwrap_or(0),
            item: e.item,
            msg,
            skip_reason,
            diff: e.diff,
            items_not_listed,
            start_us,
            is_item,
            key,
        }
    }

    /// `changed: name [item=x] (host, 1.2s): reason or message — diff /etc/x +1 -0`
    fn text(&self) -> String {
        let mut s = format!("{}: {}", self.status.as_str(), self.task);
        if let Some(i) = &self.item {
            s.push_str(&format!(" [item={}]", label(i)));
        }
        s.push_str(&format!(
            " ({}, {})",
            self.host,
            fmt_duration(std::time::Duration::from_millis(self.duration_ms))
        ));
        if let Some(r) = self.skip_reason.as_ref().or(self.msg.as_ref()) {
            s.push_str(": ");
            s.push_str(r);
        }
        if self.items_not_listed > 0 {
            s.push_str(&format!(
                " ({} more items not listed)",
                self.items_not_listed
            ));
        }
        if !self.diff.is_empty() {
            let d: Vec<String> = self
                .diff
                .iter()
                .map(|d| {
                    let h = if d.header.is_empty() {
                        "diff"
                    } else {
                        &d.header
                    };
                    format!("{h} +{} -{}", d.added, d.removed)
                })
                .collect();
            s.push_str(" — diff ");
            s.push_str(&d.join(", "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_are_unsafe_yaml() {
        assert_eq!(
            unsafe_yaml(&json!({"a": ["{{ x }}", 1, true, null], "b\"": {"c": "d"}})),
            r#"{"a": [!unsafe "{{ x }}", 1, true, null], "b\"": {"c": !unsafe "d"}}"#
        );
        assert!(check_var_name("ansible_become").is_err());
        assert!(check_var_name("line-1").is_err());
        assert!(check_var_name("line_1").is_ok());
    }

    #[test]
    fn command_line_local_and_container() {
        let mut files = PlayFiles {
            playbook: "/p/site.yml".into(),
            inventory: None,
            vars: "/d/vars.yml".into(),
        };
        assert_eq!(
            command_line(&files, false, false),
            [
                "ansible-playbook",
                "-i",
                "localhost,",
                "-c",
                "local",
                "-e",
                "@/d/vars.yml",
                "--",
                "/p/site.yml"
            ]
        );
        files.inventory = Some("/d/inventory.yml".into());
        assert_eq!(
            command_line(&files, true, true),
            [
                "ansible-playbook",
                "-i",
                "/d/inventory.yml",
                "-e",
                "@/d/vars.yml",
                "--check",
                "--diff",
                "--",
                "/p/site.yml"
            ]
        );
    }

    #[test]
    fn vars_file_and_inventory() {
        let vars = json!({"x": "{{ y }}"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            vars_yaml(&Target::Local, &vars),
            "ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\nx: !unsafe \"{{ y }}\"\n"
        );
        assert_eq!(vars_yaml(&Target::Docker("c".into()), &Map::new()), "{}\n");
        assert_eq!(
            inventory("web", None),
            json!({"all": {"hosts": {"web": {
                "ansible_connection": "vacsine_docker",
                "ansible_host": "web",
                "ansible_python_interpreter": "auto_silent",
            }}}})
        );
    }

    #[test]
    fn ansible_error_prefers_stderr_then_last_stdout_line() {
        assert_eq!(ansible_error(b" bad playbook\n", b"x"), "bad playbook");
        assert_eq!(ansible_error(b"", b"one\n two \n\n"), "two");
        assert_eq!(ansible_error(b"", b""), "no output");
    }

    /// Events as the callback wrote them for: a changed task, a skipped one, a loop over three
    /// items, a failing one; then a line cut by a kill.
    const EVENTS: &str = r#"{"event": "task_start", "at": 100.0, "task": "write", "uuid": "u4", "v": 1}
{"event": "host_start", "at": 100.001, "task": "write", "uuid": "u4", "host": "h", "v": 1}
{"event": "result", "at": 102.0, "task": "write", "uuid": "u4", "host": "h", "status": "changed", "changed": true, "diff": [{"header": "/tmp/out", "added": 1, "removed": 0}], "v": 1}
not json
{"event": "task_start", "at": 102.1, "task": "only with flag", "uuid": "u5", "v": 1}
{"event": "host_start", "at": 102.2, "task": "only with flag", "uuid": "u5", "host": "h", "v": 1}
{"event": "result", "at": 102.3, "task": "only with flag", "uuid": "u5", "host": "h", "status": "skipped", "changed": false, "skip_reason": "Conditional result was False", "false_condition": "flag", "v": 1}
{"event": "task_start", "at": 103.0, "task": "loop", "uuid": "u6", "v": 1}
{"event": "host_start", "at": 103.0, "task": "loop", "uuid": "u6", "host": "h", "v": 1}
{"event": "item", "at": 103.5, "task": "loop", "uuid": "u6", "host": "h", "status": "changed", "changed": true, "msg": "", "rc": 0, "item": "a", "v": 1}
{"event": "item", "at": 104.0, "task": "loop", "uuid": "u6", "host": "h", "status": "ok", "changed": false, "item": {"k": 1}, "v": 1}
{"event": "item", "at": 104.25, "task": "loop", "uuid": "u6", "host": "h", "status": "changed", "changed": true, "item": "c", "v": 1}
{"event": "result", "at": 104.3, "task": "loop", "uuid": "u6", "host": "h", "status": "changed", "changed": true, "msg": "All items completed", "v": 1}
{"event": "future_event", "at": 104.4}
{"event": "task_start", "at": 105.0, "task": "boom", "uuid": "u7", "v": 1}
{"event": "result", "at": 105.5, "task": "boom", "uuid": "u7", "host": "h", "status": "failed", "changed": false, "msg": "on purpose", "v": 1}
{"event": "stats", "at": 106, "stats": {"h": {"ok": 2, "failures": 1}}, "v": 1}
{"event": "result", "at": 107, "task": "cut"#;

    #[test]
    fn events_become_task_records() {
        let p = Play::from_events(EVENTS);
        let texts: Vec<String> = p.messages().into_iter().map(|m| m.text).collect();
        assert_eq!(
            texts,
            [
                "changed: write (h, 2.0s) — diff /tmp/out +1 -0",
                "skipped: only with flag (h, 100ms): Conditional result was False (when: flag)",
                "changed: loop (h, 1.3s): All items completed",
                "changed: loop [item=a] (h, 500ms)",
                r#"ok: loop [item={"k":1}] (h, 500ms)"#,
                "changed: loop [item=c] (h, 250ms)",
                // No start on the host: the task's start.
                "failed: boom (h, 500ms): on purpose",
            ]
        );
        let at: Vec<String> = p.messages().into_iter().map(|m| m.at).collect();
        assert_eq!(at[0], "1970-01-01T00:01:40.001000Z");
        assert_eq!(at[3], "1970-01-01T00:01:43.000000Z");
        assert_eq!(at[4], "1970-01-01T00:01:43.500000Z");
        assert_eq!(p.messages()[6].level, Level::Error);
        assert_eq!((p.tasks(), p.changed_tasks()), (4, 2));
        assert!(p.changed());
        assert_eq!(p.stats["h"]["failures"], json!(1));
        assert_eq!(
            p.first_failure().unwrap(),
            "task `boom` failed: on purpose (on h)"
        );
        assert_eq!(
            p.kept_changes().unwrap(),
            "earlier changes kept, no automatic undo: `write`, `loop` (items a, c)"
        );
        let rec = serde_json::to_value(&p.records[1]).unwrap();
        assert_eq!(
            rec,
            json!({"task": "only with flag", "host": "h", "status": "skipped", "changed": false,
                   "started_at": "1970-01-01T00:01:42.200000Z", "duration_ms": 100,
                   "skip_reason": "Conditional result was False (when: flag)"})
        );
    }

    #[test]
    fn no_events_no_records() {
        let p = Play::from_events("");
        assert!(p.messages().is_empty() && !p.changed());
        assert!(p.kept_changes().is_none() && p.first_failure().is_none());
    }

    #[test]
    fn long_loops_are_listed_in_part() {
        let mut ev = String::from(
            r#"{"event": "host_start", "at": 1.0, "task": "l", "uuid": "u", "host": "h"}"#,
        );
        for i in 0..(MAX_ITEMS_LISTED + 7) {
            ev.push_str(&format!(
                "\n{{\"event\": \"item\", \"at\": 2.0, \"task\": \"l\", \"uuid\": \"u\", \"host\": \"h\", \"status\": \"ok\", \"item\": {i}}}"
            ));
        }
        ev.push_str(
            r#"
{"event": "result", "at": 3.0, "task": "l", "uuid": "u", "host": "h", "status": "ok"}"#,
        );
        let p = Play::from_events(&ev);
        assert_eq!(p.records.len(), MAX_ITEMS_LISTED + 1);
        assert_eq!(
            p.records[0].text(),
            "ok: l (h, 2.0s) (7 more items not listed)"
        );
    }
}
