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
//! Inline `tasks` are taken literally from the workflow file (their `{{ }}` belong to Ansible,
//! not to the engine). Data reaches the playbook only through `vars`, written as a vars file
//! with every string tagged `!unsafe`, so Ansible never evaluates a value as a template: an
//! attacker-controlled value stays data there too.

use super::{check_typed, parse_args, ExecCtx, Executor, StepResult};
use crate::local::LocalNode;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::os::unix::fs::PermissionsExt;
use vacsine_core::node::NodeOps;
use vacsine_core::record::{Level, StepStatus};

#[derive(Debug, Deserialize)]
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

/// The stdout callback: one JSON line per task result, then the stats.
const CALLBACK: &str = r#"import json
import sys

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "vacsine_jsonl"

    def _out(self, doc):
        sys.stdout.write(json.dumps(doc, default=str) + "\n")
        sys.stdout.flush()

    def _emit(self, status, result):
        r = result._result
        self._out({
            "status": status,
            "task": result._task.get_name(),
            "host": result._host.get_name(),
            "changed": bool(r.get("changed", False)),
            "msg": r.get("msg"),
            "rc": r.get("rc"),
        })

    def v2_runner_on_ok(self, result):
        self._emit("changed" if result._result.get("changed") else "ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._emit("ignored" if ignore_errors else "failed", result)

    def v2_runner_on_skipped(self, result):
        self._emit("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._emit("unreachable", result)

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed.keys())
        self._out({"stats": {h: stats.summarize(h) for h in hosts}})
"#;

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
    async fn play(&self, ctx: &ExecCtx, args: Value) -> Result<StepResult, String> {
        let a: AnsibleArgs = parse_args("ansible", args)?;
        let node = ctx.node()?;
        let target = match node.driver() {
            "local" if node.node().handle == "local" => Target::Local,
            "docker" => {
                check_container_name(&node.node().handle)?;
                Target::Docker(node.node().handle.clone())
            }
            other => {
                return Err(format!(
                    "the ansible executor manages the local host and container nodes; node `{}` uses the {other} driver",
                    node.node().name
                ))
            }
        };
        if let Some(i) = &a.interpreter {
            check_interpreter(i)?;
        }
        for k in a.vars.keys() {
            check_var_name(k)?;
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let p = dir.path();
        let write = |name: &str, text: &str| -> Result<String, String> {
            let path = p.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(path.to_string_lossy().into_owned())
        };
        std::fs::create_dir(p.join("callbacks")).map_err(|e| e.to_string())?;
        write("callbacks/vacsine_jsonl.py", CALLBACK)?;
        std::fs::create_dir(p.join("connections")).map_err(|e| e.to_string())?;
        write("connections/vacsine_docker.py", DOCKER_CONNECTION)?;
        let playbook = match (&a.playbook, &a.tasks) {
            (Some(pb), None) => pb.clone(),
            (None, Some(tasks)) => {
                let play = json!([{"hosts": "all", "gather_facts": false, "tasks": tasks}]);
                write("playbook.json", &play.to_string())?
            }
            _ => return Err("give either `playbook` or `tasks`".into()),
        };
        let mut vars = String::new();
        let mut argv: Vec<String> = vec!["ansible-playbook".into(), "-i".into()];
        match &target {
            Target::Local => {
                vars.push_str("ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n");
                argv.extend(["localhost,", "-c", "local"].map(String::from));
            }
            Target::Docker(container) => {
                // JSON is YAML; every value is checked above to hold no template.
                let host = json!({
                    "ansible_connection": "vacsine_docker",
                    "ansible_host": container,
                    "ansible_python_interpreter": a.interpreter.as_deref().unwrap_or("auto_silent"),
                });
                let inv = json!({"all": {"hosts": {container.as_str(): host}}});
                argv.push(write("inventory.yml", &inv.to_string())?);
            }
        }
        for (k, v) in &a.vars {
            vars.push_str(&format!("{k}: {}\n", unsafe_yaml(v)));
        }
        if vars.is_empty() {
            vars.push_str("{}\n");
        }
        let vars_path = write("vars.yml", &vars)?;
        argv.push("-e".into());
        argv.push(format!("@{vars_path}"));
        if a.check {
            argv.push("--check".into());
        }
        argv.push("--".into());
        argv.push(playbook);
        let env: Vec<(String, String)> = [
            (
                "ANSIBLE_CALLBACK_PLUGINS",
                p.join("callbacks").to_string_lossy().into_owned(),
            ),
            (
                "ANSIBLE_CONNECTION_PLUGINS",
                p.join("connections").to_string_lossy().into_owned(),
            ),
            ("ANSIBLE_STDOUT_CALLBACK", "vacsine_jsonl".into()),
            // Modules go to the node on stdin: one `docker exec` per task, no temp files.
            ("ANSIBLE_PIPELINING", "1".into()),
            ("ANSIBLE_LOCALHOST_WARNING", "0".into()),
            ("ANSIBLE_INVENTORY_UNPARSED_WARNING", "0".into()),
            ("ANSIBLE_NOCOLOR", "1".into()),
            ("ANSIBLE_RETRY_FILES_ENABLED", "0".into()),
            (
                "ANSIBLE_LOCAL_TEMP",
                p.join("tmp").to_string_lossy().into_owned(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let out = self
            .host
            .exec(&argv, &env, None, ctx.timeout)
            .await
            .map_err(|e| {
                format!("{e} (is ansible-core installed and `ansible-playbook` on PATH?)")
            })?;
        if out.timed_out {
            return Ok(StepResult::timed_out(ctx.timeout).with_exec(out));
        }
        let code = out.exit_code;
        let mut r = StepResult::ok(false);
        let mut tasks = 0u64;
        let mut changed_tasks = 0u64;
        let mut first_failure = None;
        let mut stats = Value::Null;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(doc) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(s) = doc.get("stats") {
                stats = s.clone();
                continue;
            }
            let status = doc["status"].as_str().unwrap_or("?");
            let task = doc["task"].as_str().unwrap_or("?");
            let msg = match &doc["msg"] {
                Value::Null => String::new(),
                Value::String(s) if s.is_empty() => String::new(),
                Value::String(s) => format!(": {s}"),
                other => format!(": {other}"),
            };
            tasks += 1;
            if doc["changed"] == json!(true) {
                changed_tasks += 1;
            }
            let level = match status {
                "failed" | "unreachable" => Level::Error,
                "ignored" => Level::Warn,
                _ => Level::Info,
            };
            if level == Level::Error && first_failure.is_none() {
                first_failure = Some(format!("task `{task}` {status}{msg}"));
            }
            r.push(level, format!("{status}: {task}{msg}"));
        }
        r.changed = changed_tasks > 0;
        r = r
            .output("tasks", tasks)
            .output("changed_tasks", changed_tasks)
            .output("stats", stats)
            .with_exec(out);
        if code != Some(0) {
            r.status = StepStatus::Failed;
            r.error = Some(match first_failure {
                Some(f) => format!("ansible-playbook exited with {code:?}: {f}"),
                None => format!(
                    "ansible-playbook exited with {code:?}: {}",
                    String::from_utf8_lossy(&r.stderr).trim()
                ),
            });
        }
        Ok(r)
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
}
