//! Retention applied to the orchestrator's store: one pass, with
//! [`vacsine_engine::retention::plan`] deciding which ended runs go. Run periodically by the
//! orchestrator ([`store_task`]) and on demand by `vacsine gc`. An agent's data folder has its
//! own pass (`vacsine_agent::gc`).

use crate::store::Store;
use serde::Serialize;
use vacsine_engine::retention::{self, runs_line, Policy, RunsPart, Schedule, FIRST_PASS_AFTER};

/// A pass over the orchestrator's store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    pub store: String,
    pub dry_run: bool,
    pub policy: Policy,
    pub runs: RunsPart,
}

/// Apply `policy` to the orchestrator's store at `now_ms` (with `dry_run`, only say what
/// would go).
pub async fn store_pass(
    store: &dyn Store,
    what: &str,
    policy: &Policy,
    now_ms: i64,
    dry_run: bool,
) -> anyhow::Result<StoreReport> {
    let cands = store.ended_runs().await?;
    let plan = retention::plan(policy, &cands, now_ms);
    let mut runs = RunsPart::from_plan(cands.len(), &plan);
    if !dry_run && !plan.remove.is_empty() {
        let r = store.remove_runs(&plan.ids()).await?;
        runs.removed = r.runs;
        runs.removed_records = r.records;
        runs.reclaimed_bytes = r.reclaimed_bytes;
    }
    Ok(StoreReport {
        store: what.to_string(),
        dry_run,
        policy: *policy,
        runs,
    })
}

/// The orchestrator's periodic pass: every `sched.every`, logged with its counts.
pub async fn store_task(store: std::sync::Arc<dyn Store>, sched: Schedule) {
    if sched.every.is_zero() {
        return;
    }
    tokio::time::sleep(FIRST_PASS_AFTER.min(sched.every)).await;
    loop {
        match store_pass(&*store, "store", &sched.policy, crate::now_ms(), false).await {
            Ok(r) if r.runs.removed > 0 || r.runs.over_limit_held => {
                tracing::info!("retention: {}", runs_line("runs", &r.runs, false))
            }
            Ok(r) => tracing::debug!("retention: {}", runs_line("runs", &r.runs, false)),
            Err(e) => tracing::warn!("retention: {e:#} (tried again in {:?})", sched.every),
        }
        tokio::time::sleep(sched.every).await;
    }
}
