//! `sysctl` and `quarantine`: small executors over [`vacsine_core::node::NodeOps`].

use super::{check_typed, parse_args, ExecCtx, Executor, StepResult};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use vacsine_core::record::Level;

/// Arguments of `sysctl`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SysctlArgs {
    /// Kernel parameter (`net.ipv4.ip_forward` or `net/ipv4/ip_forward`).
    key: String,
    /// Value to set (text or integer).
    value: ScalarArg,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum ScalarArg {
    Text(String),
    Int(i64),
}

impl ScalarArg {
    fn text(&self) -> String {
        match self {
            ScalarArg::Text(s) => s.clone(),
            ScalarArg::Int(n) => n.to_string(),
        }
    }
}

fn check_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 256
        && !key.contains("..")
        && !key.starts_with(['.', '/'])
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid sysctl key `{key}`"))
    }
}

/// Normalise whitespace the kernel uses between values (`4096\t16384`).
fn norm(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub struct SysctlExecutor;

#[async_trait]
impl Executor for SysctlExecutor {
    fn name(&self) -> &'static str {
        "sysctl"
    }
    fn summary(&self) -> &'static str {
        "Set a kernel parameter on the node (in its namespace); undo restores the prior value."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<SysctlArgs>()
    }
    fn idempotent(&self) -> bool {
        true
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<SysctlArgs>("sysctl", args)?;
        match args.get("key") {
            Some(Value::String(k)) if !crate::template::is_templated(k) => check_key(k),
            _ => Ok(()),
        }
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        let a: SysctlArgs = match parse_args("sysctl", args) {
            Ok(a) => a,
            Err(e) => return StepResult::failed(e),
        };
        if let Err(e) = check_key(&a.key) {
            return StepResult::failed(e);
        }
        let node = match ctx.node() {
            Ok(n) => n,
            Err(e) => return StepResult::failed(e),
        };
        let want = a.value.text();
        let old = match node.sysctl_get(&a.key).await {
            Ok(Some(v)) => v,
            Ok(None) => return StepResult::failed(format!("sysctl `{}` does not exist", a.key)),
            Err(e) => return StepResult::failed(e.to_string()),
        };
        if norm(&old) == norm(&want) {
            return StepResult::ok(false).msg(Level::Info, format!("{} = {old}", a.key));
        }
        let undo = json!({"key": a.key, "value": old});
        if let Err(e) = ctx.save_undo(&undo) {
            return StepResult::failed(e);
        }
        if let Err(e) = node.sysctl_set(&a.key, &want).await {
            return StepResult::failed(e.to_string());
        }
        let mut r = StepResult::ok(true).msg(Level::Info, format!("{}: {old} → {want}", a.key));
        r.undo = Some(undo);
        r
    }
    async fn undo(&self, ctx: &ExecCtx, undo: Value) -> StepResult {
        let node = match ctx.node() {
            Ok(n) => n,
            Err(e) => return StepResult::failed(e),
        };
        let (Some(k), Some(v)) = (undo["key"].as_str(), undo["value"].as_str()) else {
            return StepResult::failed("corrupt undo data");
        };
        match node.sysctl_set(k, v).await {
            Ok(()) => StepResult::ok(true).msg(Level::Info, format!("{k} restored to {v}")),
            Err(e) => StepResult::failed(e.to_string()),
        }
    }
}

/// Arguments of `quarantine`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct QuarantineArgs {
    /// Network kept (management).
    #[serde(default)]
    keep: Option<String>,
}

pub struct QuarantineExecutor;

#[async_trait]
impl Executor for QuarantineExecutor {
    fn name(&self) -> &'static str {
        "quarantine"
    }
    fn summary(&self) -> &'static str {
        "Disconnect the node from every network but the one kept for management; undo reconnects it."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<QuarantineArgs>()
    }
    fn outputs(&self) -> &'static [(&'static str, &'static str)] {
        &[("disconnected", "the networks the node was taken off")]
    }
    fn idempotent(&self) -> bool {
        true
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<QuarantineArgs>("quarantine", args)
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        let a: QuarantineArgs = match parse_args("quarantine", args) {
            Ok(a) => a,
            Err(e) => return StepResult::failed(e),
        };
        let node = match ctx.node() {
            Ok(n) => n,
            Err(e) => return StepResult::failed(e),
        };
        // Before: every network but the kept one may be cut.
        if let Ok(nets) = node.networks().await {
            let at_risk: Vec<&String> = nets
                .iter()
                .filter(|n| Some(n.as_str()) != a.keep.as_deref())
                .collect();
            if !at_risk.is_empty() {
                if let Err(e) = ctx.save_undo(&json!({"networks": at_risk})) {
                    return StepResult::failed(e);
                }
            }
        }
        match node.quarantine(a.keep.as_deref()).await {
            Ok(removed) => {
                if !removed.is_empty() {
                    let _ = ctx.save_undo(&json!({"networks": removed}));
                }
                let changed = !removed.is_empty();
                let mut r = StepResult::ok(changed)
                    .msg(
                        Level::Info,
                        if changed {
                            format!("disconnected from {}", removed.join(", "))
                        } else {
                            "already isolated".to_string()
                        },
                    )
                    .output("disconnected", json!(removed));
                if changed {
                    r.undo = Some(json!({"networks": removed}));
                }
                r
            }
            Err(e) => StepResult::failed(e.to_string()),
        }
    }
    async fn undo(&self, ctx: &ExecCtx, undo: Value) -> StepResult {
        let node = match ctx.node() {
            Ok(n) => n,
            Err(e) => return StepResult::failed(e),
        };
        let nets: Vec<String> =
            serde_json::from_value(undo["networks"].clone()).unwrap_or_default();
        match node.release(&nets).await {
            Ok(()) => {
                StepResult::ok(true).msg(Level::Info, format!("reconnected {}", nets.join(", ")))
            }
            Err(e) => StepResult::failed(e.to_string()),
        }
    }
}
