//! Shared helpers: parse a workflow from YAML, run it on a LocalNode.

use serde_json::{Map, Value};
use std::sync::Arc;
use vacsine_core::node::NodeOps;
use vacsine_core::record::{StepRecord, StepStatus};
use vacsine_core::workflow::Workflow;
use vacsine_core::SourceFile;
use vacsine_engine::{Catalog, Engine, Journal, LocalNode, NodeMap, RunReport, RunRequest};

/// A workflow from the body of its `spec` (indented by two spaces, as under `spec:`).
pub fn wf(name: &str, spec: &str) -> Workflow {
    let text = format!(
        "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n{spec}"
    );
    vacsine_core::doc::parse_as::<Workflow>(&SourceFile::new(format!("{name}.yaml"), text))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn local(name: &str) -> Arc<dyn NodeOps> {
    Arc::new(LocalNode::new(name))
}

pub fn nodes(list: &[Arc<dyn NodeOps>]) -> NodeMap {
    list.iter()
        .map(|n| (n.node().name.clone(), n.clone()))
        .collect()
}

pub fn inputs(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => panic!("inputs must be an object, got {other}"),
    }
}

pub fn engine() -> Engine {
    Engine::new(Journal::in_memory().unwrap(), Catalog::new())
}

/// Run `w` with `inputs` on one LocalNode named `local`, in-memory journal.
pub async fn run(w: Workflow, i: Value) -> RunReport {
    run_on(&engine(), w, i).await
}

pub async fn run_on(e: &Engine, w: Workflow, i: Value) -> RunReport {
    let mut req = RunRequest::new(w);
    req.inputs = inputs(i);
    req.nodes = nodes(&[local("local")]);
    req.target_name = "test".into();
    e.run(req)
        .await
        .unwrap_or_else(|e| panic!("run refused: {e}"))
}

/// Records of one step id, in order.
pub fn recs<'a>(r: &'a RunReport, id: &str) -> Vec<&'a StepRecord> {
    r.records.iter().filter(|x| x.step_id == id).collect()
}

pub fn status(r: &RunReport, id: &str) -> StepStatus {
    recs(r, id)
        .last()
        .unwrap_or_else(|| panic!("no record for `{id}` in {:#?}", r.records))
        .status
}

pub fn stdout(r: &RunReport, id: &str) -> String {
    recs(r, id)
        .last()
        .map(|x| x.stdout.clone())
        .unwrap_or_default()
}

pub fn uniq() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

/// Whether a process is gone (or a zombie waiting for its reaper).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.trim_start().starts_with('Z') || rest.trim_start().starts_with('X')
            })
            .unwrap_or(false),
    }
}

pub fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
