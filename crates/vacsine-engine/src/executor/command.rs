//! `command` (argv, never a shell string), its alias `docker.exec`, and `script` (explicit).

use super::{check_typed, parse_args, ExecCtx, Executor, StepResult};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use vacsine_core::record::StepStatus;

fn zero() -> Vec<i32> {
    vec![0]
}

/// Arguments of `command` and `docker.exec`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CommandArgs {
    /// Program and its arguments, run directly on the node (never through a shell).
    argv: Vec<String>,
    /// Environment variables added for the process.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Text given on the process's standard input.
    #[serde(default)]
    stdin: Option<String>,
    /// Exit codes accepted as success (default `[0]`).
    #[serde(default = "zero")]
    expect_exit: Vec<i32>,
    /// Exit codes meaning "something changed" (default: any accepted exit code). For
    /// `pkill`, `[0]`: exit 1 (nothing to kill) is accepted and reports no change.
    #[serde(default)]
    changed_exit: Option<Vec<i32>>,
}

pub struct CommandExecutor {
    pub(crate) name: &'static str,
}

/// Turn a process result into a step result: status from the exit code.
fn finish(
    out: Result<vacsine_core::node::ExecOutput, vacsine_core::node::NodeError>,
    ctx: &ExecCtx,
    expect: &[i32],
) -> StepResult {
    match out {
        Err(e) => StepResult::failed(e.to_string()),
        Ok(out) if out.timed_out => StepResult::timed_out(ctx.timeout).with_exec(out),
        Ok(out) => {
            let code = out.exit_code;
            let mut r = StepResult::ok(false).with_exec(out);
            match code {
                Some(c) if expect.contains(&c) => {}
                Some(c) => {
                    r.status = StepStatus::Failed;
                    r.error = Some(format!("exit code {c}, expected one of {expect:?}"));
                }
                None => {
                    r.status = StepStatus::Failed;
                    r.error = Some("the process was killed by a signal".into());
                }
            }
            r
        }
    }
}

#[async_trait]
impl Executor for CommandExecutor {
    fn name(&self) -> &'static str {
        self.name
    }
    fn summary(&self) -> &'static str {
        if self.name == "docker.exec" {
            "Run a program in a container node (argv, never a shell); refused on other drivers."
        } else {
            "Run a program on the node (argv, never a shell); exit code checked against `expectExit`."
        }
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<CommandArgs>()
    }
    fn idempotent(&self) -> bool {
        false
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<CommandArgs>(self.name, args)?;
        if let Some(Value::Array(a)) = args.get("argv") {
            if a.is_empty() {
                return Err("`argv` must name a program".into());
            }
        }
        Ok(())
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        let a: CommandArgs = match parse_args(self.name, args) {
            Ok(a) => a,
            Err(e) => return StepResult::failed(e),
        };
        if a.argv.is_empty() {
            return StepResult::failed("`argv` must name a program");
        }
        let node = match ctx.node() {
            Ok(n) => n,
            Err(e) => return StepResult::failed(e),
        };
        if self.name == "docker.exec" && node.driver() != "docker" {
            return StepResult::failed(format!(
                "docker.exec runs in a container node, but node `{}` uses the {} driver (use `command`)",
                node.node().name,
                node.driver()
            ));
        }
        let env: Vec<(String, String)> = a.env.into_iter().collect();
        let out = node
            .exec(&a.argv, &env, a.stdin.map(String::into_bytes), ctx.timeout)
            .await;
        let mut r = finish(out, ctx, &a.expect_exit);
        // A command may change anything: report it as a change when it ran successfully,
        // unless `changedExit` says which exit codes mean a change.
        r.changed = r.status == StepStatus::Succeeded
            && match (&a.changed_exit, r.exit_code) {
                (Some(codes), Some(c)) => codes.contains(&c),
                _ => true,
            };
        r
    }
}

/// Arguments of `script`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ScriptArgs {
    /// Interpreter fed the script on stdin: a command line (split on spaces) or an argv list
    /// (default `/bin/sh`). Taken literally, never templated.
    #[serde(default)]
    interpreter: Option<Interpreter>,
    /// The script text, taken literally from the workflow file (never templated): data
    /// reaches it through `env` and the `VACSINE_SECRET_<NAME>` variables only.
    script: String,
    /// Environment variables added for the interpreter (templated values go here).
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Exit codes accepted as success (default `[0]`).
    #[serde(default = "zero")]
    expect_exit: Vec<i32>,
    /// Exit codes meaning "something changed" (default: any accepted exit code). A script
    /// that found nothing to do exits with an accepted code not listed here.
    #[serde(default)]
    changed_exit: Option<Vec<i32>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum Interpreter {
    Line(String),
    Argv(Vec<String>),
}

/// Runs a script given literally in the workflow file, fed on the interpreter's stdin. Data
/// reaches it only through environment variables: `with.script` is never templated.
pub struct ScriptExecutor;

#[async_trait]
impl Executor for ScriptExecutor {
    fn name(&self) -> &'static str {
        "script"
    }
    fn summary(&self) -> &'static str {
        "Run a script written in the workflow file, fed on the interpreter's stdin; data only through `env`."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<ScriptArgs>()
    }
    fn idempotent(&self) -> bool {
        false
    }
    fn literal_args(&self) -> &'static [&'static str] {
        &["script", "interpreter"]
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<ScriptArgs>("script", args)
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        let a: ScriptArgs = match parse_args("script", args) {
            Ok(a) => a,
            Err(e) => return StepResult::failed(e),
        };
        let argv: Vec<String> = match a.interpreter {
            None => vec!["/bin/sh".into()],
            Some(Interpreter::Line(l)) => l.split_whitespace().map(str::to_string).collect(),
            Some(Interpreter::Argv(v)) => v,
        };
        if argv.is_empty() {
            return StepResult::failed("`interpreter` is empty");
        }
        let node = match ctx.node() {
            Ok(n) => n,
            Err(e) => return StepResult::failed(e),
        };
        let mut env: Vec<(String, String)> = ctx.secret_env.clone();
        env.extend(a.env);
        let out = node
            .exec(&argv, &env, Some(a.script.into_bytes()), ctx.timeout)
            .await;
        let mut r = finish(out, ctx, &a.expect_exit);
        r.changed = r.status == StepStatus::Succeeded
            && match (&a.changed_exit, r.exit_code) {
                (Some(codes), Some(c)) => codes.contains(&c),
                _ => true,
            };
        r
    }
}
