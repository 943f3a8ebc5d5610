//! `container`: an action packaged as a Docker image (as Sekoia/Cortex do). The step's input
//! is written as one JSON document on the container's stdin; the container prints one JSON
//! object on stdout: `{"outputs": {..}, "changed": bool, "messages": [..]}` (without an
//! `outputs` key, the whole object is the outputs). Runs on the engine host's Docker, with no
//! network unless asked, and is removed when done or killed at the deadline.

use super::{check_typed, parse_args, ExecCtx, Executor, StepResult};
use crate::local::LocalNode;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use vacsine_core::node::NodeOps;
use vacsine_core::record::{Level, StepStatus};

/// Arguments of `container`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ContainerArgs {
    /// Image to run (a reference pinned by digest, or a local tag); checked before the run.
    image: String,
    /// JSON document given on stdin (as `input`, with `node`, `run_id` and `step_id`).
    #[serde(default)]
    input: Value,
    /// Environment variables for the container.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Docker network to attach (default: none).
    #[serde(default)]
    network: Option<String>,
}

/// An image reference as the `container` executor accepts it (also an image ID
/// `sha256:…`): 1 to 256 letters, digits, `.`, `_`, `-`, `/`, `:`, `@`, not starting with `-`.
pub fn check_image(image: &str) -> Result<(), String> {
    let ok = !image.is_empty()
        && image.len() <= 256
        && !image.starts_with('-')
        && image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid image reference `{image}`"))
    }
}

fn check_network(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && !n.starts_with('-')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid network name `{n}`"))
    }
}

pub struct ContainerExecutor {
    host: LocalNode,
    /// When set (the site agent), only these images run: the name a step gives → the ID of
    /// the image loaded for it (what `docker run` is given, so another local image tagged
    /// with the same name is never run).
    allow: Option<BTreeMap<String, String>>,
}

impl Default for ContainerExecutor {
    fn default() -> Self {
        ContainerExecutor {
            host: LocalNode::new("docker-host"),
            allow: None,
        }
    }
}

impl ContainerExecutor {
    /// An executor that runs only the images of `allow` (name → loaded image ID); a step
    /// naming any other image fails.
    pub fn allowing(allow: BTreeMap<String, String>) -> Self {
        ContainerExecutor {
            allow: Some(allow),
            ..Default::default()
        }
    }

    /// The image `docker run` is given for the step's `image`, or why it may not run.
    fn resolve(&self, image: &str) -> Result<String, String> {
        let Some(allow) = &self.allow else {
            return Ok(image.to_string());
        };
        match allow.get(image) {
            Some(id) => {
                check_image(id)?;
                Ok(id.clone())
            }
            None => Err(format!(
                "image `{image}` is not listed in the signed job (listed: {}): an agent runs only the action images the orchestrator distributed with the job; `vacsine push image {image}` then submit the run again",
                if allow.is_empty() {
                    "none".to_string()
                } else {
                    allow.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            )),
        }
    }
}

fn parse_level(s: &str) -> Level {
    match s {
        "warn" | "warning" => Level::Warn,
        "error" => Level::Error,
        _ => Level::Info,
    }
}

#[async_trait]
impl Executor for ContainerExecutor {
    fn name(&self) -> &'static str {
        "container"
    }
    fn summary(&self) -> &'static str {
        "Run an action packaged as a Docker image on the engine host: input as JSON on stdin, outputs as JSON on stdout."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<ContainerArgs>()
    }
    fn outputs(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "*",
            "whatever the container prints under `outputs` (or its whole JSON object)",
        )]
    }
    fn idempotent(&self) -> bool {
        false
    }
    fn needs_node(&self) -> bool {
        false
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<ContainerArgs>("container", args)?;
        if let Some(Value::String(i)) = args.get("image") {
            if !crate::template::is_templated(i) {
                check_image(i)?;
            }
        }
        Ok(())
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        let a: ContainerArgs = match parse_args("container", args) {
            Ok(a) => a,
            Err(e) => return StepResult::failed(e),
        };
        if let Err(e) = check_image(&a.image) {
            return StepResult::failed(e);
        }
        let image = match self.resolve(&a.image) {
            Ok(i) => i,
            Err(e) => return StepResult::failed(e),
        };
        let network = a.network.clone().unwrap_or_else(|| "none".into());
        if let Err(e) = check_network(&network) {
            return StepResult::failed(e);
        }
        let name = format!("vacsine-action-{}", uuid::Uuid::new_v4().simple());
        let mut argv: Vec<String> = [
            "docker",
            "run",
            "--rm",
            "-i",
            "--name",
            &name,
            "--network",
            &network,
            "--label",
            "vacsine.action=1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for k in a.env.keys() {
            if k.is_empty() || k.contains('=') {
                return StepResult::failed(format!("invalid environment variable name `{k}`"));
            }
            argv.push("--env".into());
            // `--env NAME` takes the value from the docker client's environment: the value
            // never appears on a command line.
            argv.push(k.clone());
        }
        argv.push("--".into());
        argv.push(image);
        let doc = json!({
            "input": a.input,
            "node": ctx.node.as_ref().map(|n| n.node().name.clone()),
            "run_id": ctx.run_id,
            "step_id": ctx.step_id,
        });
        let env: Vec<(String, String)> = a.env.into_iter().collect();
        let out = self
            .host
            .exec(&argv, &env, Some(doc.to_string().into_bytes()), ctx.timeout)
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => return StepResult::failed(e.to_string()),
        };
        if out.timed_out {
            let rm: Vec<String> = ["docker", "rm", "-f", &name]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let _ = self
                .host
                .exec(&rm, &[], None, Duration::from_secs(30))
                .await;
            return StepResult::timed_out(ctx.timeout).with_exec(out);
        }
        let code = out.exit_code;
        let parsed: Result<Value, _> = serde_json::from_slice(&out.stdout);
        let mut r = StepResult::ok(true).with_exec(out);
        if code != Some(0) {
            r.status = StepStatus::Failed;
            r.changed = false;
            r.error = Some(format!("the action exited with {code:?}"));
            return r;
        }
        match parsed {
            Ok(Value::Object(mut m)) => {
                if let Some(Value::Bool(c)) = m.remove("changed") {
                    r.changed = c;
                }
                if let Some(Value::Array(msgs)) = m.remove("messages") {
                    for msg in msgs {
                        match msg {
                            Value::String(t) => r.push(Level::Info, t),
                            Value::Object(o) => r.push(
                                parse_level(
                                    o.get("level").and_then(Value::as_str).unwrap_or("info"),
                                ),
                                o.get("text")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                                    .to_string(),
                            ),
                            other => r.push(Level::Info, other.to_string()),
                        }
                    }
                }
                r.outputs = match m.remove("outputs") {
                    Some(Value::Object(o)) => o,
                    Some(other) => {
                        let mut o = serde_json::Map::new();
                        o.insert("outputs".into(), other);
                        o
                    }
                    None => m,
                };
                r
            }
            _ => {
                r.status = StepStatus::Failed;
                r.changed = false;
                r.error = Some("the action did not print a JSON object on stdout".into());
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allow_list_maps_listed_names_to_their_ids_and_refuses_others() {
        assert_eq!(
            ContainerExecutor::default().resolve("any/image:1").unwrap(),
            "any/image:1",
            "no allow-list: the name as given"
        );
        let id = format!("sha256:{}", "a".repeat(64));
        let e = ContainerExecutor::allowing(BTreeMap::from([("act:1".into(), id.clone())]));
        assert_eq!(e.resolve("act:1").unwrap(), id);
        let err = e.resolve("act:2").unwrap_err();
        assert!(
            err.contains("`act:2` is not listed") && err.contains("listed: act:1"),
            "{err}"
        );
        assert!(err.contains("vacsine push image act:2"), "{err}");
        let err = ContainerExecutor::allowing(BTreeMap::new())
            .resolve("x")
            .unwrap_err();
        assert!(err.contains("listed: none"), "{err}");
    }
}
