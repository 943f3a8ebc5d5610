//! `wait-until`: poll a check on the step's node until it passes or the deadline passes.

use super::{check_typed, fmt_duration, parse_args, ExecCtx, Executor, StepResult};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant};
use vacsine_core::outcome::Outcome;
use vacsine_core::policy::Check;
use vacsine_core::record::{Level, StepStatus};
use vacsine_core::workflow::parse_duration;

/// Arguments of `wait-until`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WaitArgs {
    /// A check, as in a policy requirement (`port`, `http`, `file`, `listening`, …).
    probe: Check,
    /// How long to wait for it to pass (default `60s`).
    #[serde(default = "default_timeout")]
    timeout: String,
    /// Pause between two probes (default `1s`).
    #[serde(default = "default_interval")]
    interval: String,
}

fn default_timeout() -> String {
    "60s".into()
}
fn default_interval() -> String {
    "1s".into()
}

pub struct WaitUntilExecutor;

#[async_trait]
impl Executor for WaitUntilExecutor {
    fn name(&self) -> &'static str {
        "wait-until"
    }
    fn summary(&self) -> &'static str {
        "Probe a check on the node until it passes or the timeout passes."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<WaitArgs>()
    }
    fn outputs(&self) -> &'static [(&'static str, &'static str)] {
        &[("observed", "what the last probe saw")]
    }
    fn idempotent(&self) -> bool {
        true
    }
    fn supports_check_mode(&self) -> bool {
        true
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<WaitArgs>("wait-until", args)
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        let a: WaitArgs = match parse_args("wait-until", args) {
            Ok(a) => a,
            Err(e) => return StepResult::failed(e),
        };
        let (timeout, interval) = match (parse_duration(&a.timeout), parse_duration(&a.interval)) {
            (Ok(t), Ok(i)) => (t, i.max(Duration::from_millis(10))),
            (Err(e), _) | (_, Err(e)) => return StepResult::failed(e),
        };
        let Some(observer) = &ctx.observer else {
            return StepResult::failed(
                "wait-until needs an observer of the site (RunRequest.observer) and none was given",
            );
        };
        let node = match ctx.node() {
            Ok(n) => n.node().name.clone(),
            Err(e) => return StepResult::failed(e),
        };
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            polls += 1;
            let obs = observer.observe(&node, &a.probe).await;
            let ev = vacsine_core::eval::evaluate(&a.probe, &obs);
            if ev.outcome == Outcome::Pass {
                return StepResult::ok(false)
                    .msg(
                        Level::Info,
                        format!(
                            "{} probe passed after {} ({polls} polls): {}",
                            a.probe.probe(),
                            fmt_duration(start.elapsed()),
                            ev.observed
                        ),
                    )
                    .output("observed", ev.observed);
            }
            if start.elapsed() + interval > timeout {
                let mut r = StepResult::failed(format!(
                    "{} probe still {:?} after {} ({polls} polls): {} {}",
                    a.probe.probe(),
                    ev.outcome,
                    fmt_duration(start.elapsed()),
                    ev.observed,
                    ev.message
                ));
                r.status = StepStatus::Failed;
                return r;
            }
            tokio::time::sleep(interval).await;
        }
    }
}
