//! `vacsine push FILE...`, `vacsine registry list` and `vacsine run NAME[@VERSION] --site S`:
//! the orchestrator's registry of versioned policies and workflows, as an operator uses it.

use crate::cli::{OperatorConn, SimpleFormat};
use crate::commands::{print_diagnostics, EXIT_OK};
use crate::orch::{client, err, follow_run, print_json};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use vacsine_core::doc::{Document, LoadError};
use vacsine_enforce::inputs;
use vacsine_orch::proto;

/// Every file parsed strictly (errors name file:line:column) before anything is pushed.
pub async fn push(
    files: Vec<PathBuf>,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<i32> {
    let mut docs = Vec::new();
    let mut problems: Vec<LoadError> = Vec::new();
    for f in &files {
        let l = match inputs::load_any(f) {
            Ok(l) => l,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let document = match &l.doc {
            Document::Workflow(w) => serde_json::to_value(w),
            Document::Policy(p) => serde_json::to_value(p),
            Document::Target(_) => {
                problems.push(LoadError::at(
                    &l.source,
                    1,
                    1,
                    "a Target is not pushed: the registry keeps policies and workflows",
                    Some("push Policy and Workflow files only".to_string()),
                ));
                continue;
            }
        }
        .map_err(err)?;
        docs.push(proto::PushDocument {
            kind: l.doc.kind().to_string(),
            name: l.doc.name().to_string(),
            document,
        });
    }
    if !problems.is_empty() {
        return Ok(print_diagnostics(problems));
    }
    let c = client(conn)?;
    let r: proto::RegistryList = c
        .post(proto::OP_REGISTRY, &proto::PushRequest { documents: docs })
        .await
        .map_err(err)?;
    if format == SimpleFormat::Json {
        print_json(&r);
    } else {
        for e in &r.entries {
            println!(
                "{:<8} {:<32} version {:<4} {}",
                e.kind,
                e.name,
                e.version,
                if e.created {
                    "pushed"
                } else {
                    "unchanged (already the latest version)"
                }
            );
        }
    }
    Ok(EXIT_OK)
}

pub async fn list(conn: &OperatorConn, format: SimpleFormat) -> miette::Result<i32> {
    let c = client(conn)?;
    let r: proto::RegistryList = c.get(proto::OP_REGISTRY).await.map_err(err)?;
    if format == SimpleFormat::Json {
        print_json(&r);
    } else {
        println!(
            "{:<8} {:<32} {:>7}  {:<26} SHA256",
            "KIND", "NAME", "VERSION", "PUSHED"
        );
        for e in &r.entries {
            println!(
                "{:<8} {:<32} {:>7}  {:<26} {}",
                e.kind, e.name, e.version, e.pushed, e.sha256
            );
        }
    }
    Ok(EXIT_OK)
}

/// `NAME` or `NAME@VERSION` of a pushed workflow, when `arg` is not a file here (a path with
/// a `/` or a YAML extension is always a file).
pub fn pushed_ref(arg: &Path) -> Option<(String, Option<i64>)> {
    if arg.exists() {
        return None;
    }
    let s = arg.to_str()?;
    if s.contains('/') || s.ends_with(".yaml") || s.ends_with(".yml") {
        return None;
    }
    let (name, version) = match s.split_once('@') {
        Some((n, v)) => (n, Some(v.parse::<i64>().ok().filter(|v| *v > 0)?)),
        None => (s, None),
    };
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then(|| (name.to_string(), version))
}

/// Run a pushed workflow at a site; inputs go as strings, typed by the engine at the site
/// from the workflow's declarations.
pub async fn run_pushed(
    name: String,
    version: Option<i64>,
    site: &str,
    raw_inputs: Vec<String>,
    detach: bool,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<i32> {
    let mut inputs = Map::new();
    for r in &raw_inputs {
        let (k, v) = r
            .split_once('=')
            .ok_or_else(|| miette::miette!("--input {r:?}: expected NAME=VALUE"))?;
        inputs.insert(k.to_string(), Value::String(v.to_string()));
    }
    let c = client(conn)?;
    let created: proto::RunCreated = c
        .post(
            proto::OP_REGISTRY_RUNS,
            &proto::RunPushed {
                name,
                version,
                site: site.to_string(),
                inputs,
            },
        )
        .await
        .map_err(err)?;
    follow_run(&c, created, site, detach, format).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_or_name_at_version_is_a_pushed_workflow_a_path_is_a_file() {
        let p = |s: &str| pushed_ref(Path::new(s));
        assert_eq!(p("harden-ssh"), Some(("harden-ssh".into(), None)));
        assert_eq!(p("harden-ssh@3"), Some(("harden-ssh".into(), Some(3))));
        assert_eq!(p("harden-ssh@0"), None);
        assert_eq!(p("harden-ssh@x"), None);
        assert_eq!(p("wf/harden.yaml"), None);
        assert_eq!(p("harden.yaml"), None);
        assert_eq!(p("a b"), None);
        assert_eq!(p("Cargo.toml"), None, "an existing file");
    }
}
