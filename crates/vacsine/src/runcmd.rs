//! `vacsine run`, `runs`, `logs`: job 2, applying a workflow with traceable step records.

use crate::cli::Format;
use crate::commands::{journal_path, print_diagnostics, EXIT_ERROR, EXIT_FAILURES, EXIT_OK};
use crate::progress::Progress;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use vacsine_core::doc::LoadError;
use vacsine_core::node::Site;
use vacsine_core::target::DriverKind;
use vacsine_enforce::inputs;
use vacsine_engine::{CancelToken, Engine, Journal, NodeMap, RunRequest, RunStatus};

fn parse_inputs(raw: &[String]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut m = serde_json::Map::new();
    for r in raw {
        let Some((k, v)) = r.split_once('=') else {
            return Err(format!("--input `{r}`: expected NAME=VALUE"));
        };
        // Values are strings; the workflow's typed inputs convert them (ports, booleans…).
        // A value that is a JSON array or object is taken as such.
        let val = match v.trim_start().chars().next() {
            Some('[') | Some('{') => {
                serde_json::from_str(v).map_err(|e| format!("--input `{k}`: invalid JSON: {e}"))?
            }
            _ => serde_json::Value::String(v.to_string()),
        };
        m.insert(k.to_string(), val);
    }
    Ok(m)
}

fn local_nodes() -> NodeMap {
    let mut m = NodeMap::new();
    m.insert(
        "local".into(),
        Arc::new(vacsine_engine::LocalNode::new("local")) as Arc<dyn vacsine_core::node::NodeOps>,
    );
    m
}

async fn nodes_for(
    target: Option<&PathBuf>,
) -> Result<(NodeMap, String, Option<Arc<dyn Site>>), i32> {
    let Some(t) = target else {
        return Ok((local_nodes(), "local".into(), None));
    };
    let t = inputs::load_target(t).map_err(|e| print_diagnostics(vec![e]))?;
    match t.doc.spec.driver {
        DriverKind::Local => Ok((local_nodes(), t.doc.metadata.name.value.clone(), None)),
        DriverKind::Docker => {
            let site = vacsine_docker::DockerSite::connect(&t.doc)
                .await
                .map_err(|e| {
                    eprintln!("error: {e}");
                    EXIT_ERROR
                })?;
            let mut m = NodeMap::new();
            for n in site.nodes() {
                if let Some(ops) = site.node_ops(&n.name) {
                    m.insert(n.name.clone(), ops);
                }
            }
            Ok((
                m,
                t.doc.metadata.name.value.clone(),
                Some(Arc::new(site) as Arc<dyn Site>),
            ))
        }
    }
}

pub async fn run(
    workflow: Option<PathBuf>,
    target: Option<PathBuf>,
    raw_inputs: Vec<String>,
    catalog: Vec<PathBuf>,
    resume: Option<String>,
    format: Format,
) -> miette::Result<i32> {
    let journal = Journal::open(&journal_path()?).map_err(|e| miette::miette!("{e}"))?;
    let mut cat_dirs = catalog;
    if cat_dirs.is_empty() && std::path::Path::new("catalog").is_dir() {
        cat_dirs.push(PathBuf::from("catalog"));
    }
    let (cat, problems) = inputs::catalog_for(None, &cat_dirs);
    if !problems.is_empty() {
        return Ok(print_diagnostics(problems));
    }
    let mut ecat_src = cat.clone();
    let progress = Progress::new(format != Format::Human);
    let p2 = progress.clone();
    let on_progress: Arc<dyn Fn(&vacsine_engine::ProgressEvent) + Send + Sync> =
        Arc::new(move |e| {
            if let Some(line) = describe(e) {
                p2.say(&line)
            }
        });
    let (nodes, target_name, observer) = match nodes_for(target.as_ref()).await {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let (cancel, signalled) = cancel_on_signals();
    let report = if let Some(run_id) = resume {
        let engine = Engine::new(journal, vacsine_enforce::engine_catalog(&ecat_src));
        engine
            .resume_cancellable(&run_id, nodes, Some(on_progress), observer, cancel)
            .await
    } else {
        let Some(wf_path) = workflow else {
            return Err(miette::miette!(
                help = "give a workflow file, or --resume RUN_ID",
                "nothing to run"
            ));
        };
        let wf = match inputs::load_workflow(&wf_path) {
            Ok(w) => w,
            Err(e) => return Ok(print_diagnostics(vec![e])),
        };
        ecat_src
            .workflows
            .entry(wf.doc.metadata.name.value.clone())
            .or_insert_with(|| wf.clone());
        let ecat = vacsine_enforce::engine_catalog(&ecat_src);
        let mut errs: Vec<LoadError> =
            vacsine_core::validate::validate_workflow_structure(&wf.doc, &ecat_src.index())
                .into_iter()
                .map(|p| p.into_error(&wf.source))
                .collect();
        errs.extend(
            vacsine_engine::validate_workflow(&wf.doc, &ecat)
                .into_iter()
                .map(|p| LoadError::at(&wf.source, p.line, p.column, p.message, p.help)),
        );
        if !errs.is_empty() {
            return Ok(print_diagnostics(errs));
        }
        let inputs = match parse_inputs(&raw_inputs) {
            Ok(i) => i,
            Err(e) => return Err(miette::miette!("{e}")),
        };
        let default_node = (nodes.len() == 1)
            .then(|| nodes.keys().next().cloned())
            .flatten();
        let engine = Engine::new(journal, ecat);
        engine
            .run(RunRequest {
                workflow: wf.doc,
                inputs,
                nodes,
                default_node,
                target_name,
                labels: Default::default(),
                progress: Some(on_progress),
                observer,
                cancel,
            })
            .await
    };
    progress.done();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{:?}", miette::miette!("{e}"));
            return Ok(EXIT_ERROR);
        }
    };
    match format {
        Format::Json => {
            let mut out = std::io::stdout().lock();
            for r in &report.records {
                let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
            }
        }
        _ => {
            print_records(&report.records);
            println!("run {} {}", report.run_id, report.status.as_str());
        }
    }
    Ok(match report.status {
        RunStatus::Succeeded => EXIT_OK,
        RunStatus::Cancelled => {
            eprintln!(
                "run {} cancelled: resume it with `vacsine run --resume {}`",
                report.run_id, report.run_id
            );
            signalled.load(std::sync::atomic::Ordering::SeqCst)
        }
        _ => EXIT_FAILURES,
    })
}

/// SIGINT and SIGTERM cancel the run: the first stops scheduling and asks running steps to
/// end (their process groups get SIGTERM, then SIGKILL after a grace period), a second one
/// kills them at once. Returns the token and the exit code to use (130 or 143).
fn cancel_on_signals() -> (CancelToken, Arc<std::sync::atomic::AtomicI32>) {
    use tokio::signal::unix::{signal, SignalKind};
    let cancel = CancelToken::new();
    let code = Arc::new(std::sync::atomic::AtomicI32::new(130));
    let (c, k) = (cancel.clone(), code.clone());
    let streams =
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
    match streams {
        Ok((mut int, mut term)) => {
            tokio::spawn(async move {
                loop {
                    let exit = tokio::select! {
                        Some(()) = int.recv() => 130,
                        Some(()) = term.recv() => 143,
                        else => break,
                    };
                    if !c.is_cancelled() {
                        k.store(exit, std::sync::atomic::Ordering::SeqCst);
                        eprintln!(
                            "signal received: stopping the run (running steps get {}s to end; signal again to kill them now)",
                            vacsine_engine::CANCEL_GRACE.as_secs()
                        );
                    } else {
                        eprintln!("second signal: killing running steps now");
                    }
                    c.cancel();
                }
            });
        }
        Err(e) => eprintln!(
            "warning: cannot watch for signals ({e}): Ctrl-C will not stop the run cleanly"
        ),
    }
    (cancel, code)
}

fn print_records(records: &[vacsine_core::record::StepRecord]) {
    let mut out = std::io::stdout().lock();
    for r in records {
        let _ = writeln!(
            out,
            "{}  {:<24} {:<10} {:<12} {:>7}ms  {}{}",
            r.started_at,
            format!("{}#{}", r.step_id, r.attempt),
            r.node.as_deref().unwrap_or("-"),
            r.status.as_str(),
            r.duration_ms.unwrap_or(0),
            r.executor,
            if r.changed { " (changed)" } else { "" }
        );
        for m in &r.messages {
            let _ = writeln!(out, "      {} {:?}: {}", m.at, m.level, m.text);
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "      error: {e}");
        }
    }
}

pub fn runs(limit: usize, format: Format) -> miette::Result<i32> {
    let journal = Journal::open(&journal_path()?).map_err(|e| miette::miette!("{e}"))?;
    let runs = journal.runs(limit).map_err(|e| miette::miette!("{e}"))?;
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return Ok(EXIT_OK);
    }
    if runs.is_empty() {
        println!("no runs yet");
    }
    if !runs.is_empty() {
        println!(
            "{:<38} {:<24} {:<16} {:<12} {:<28} DURATION",
            "RUN", "WORKFLOW", "TARGET", "STATUS", "STARTED"
        );
    }
    for r in &runs {
        let dur = r
            .finished_at
            .as_deref()
            .and_then(|f| {
                let a = chrono::DateTime::parse_from_rfc3339(&r.started_at).ok()?;
                let b = chrono::DateTime::parse_from_rfc3339(f).ok()?;
                Some(format!(
                    "{:.2}s",
                    (b - a).num_milliseconds() as f64 / 1000.0
                ))
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<38} {:<24} {:<16} {:<12} {:<28} {dur}",
            r.id,
            r.workflow,
            r.target,
            r.status.as_str(),
            r.started_at
        );
    }
    Ok(EXIT_OK)
}

pub fn logs(run_id: &str, format: Format) -> miette::Result<i32> {
    let journal = Journal::open(&journal_path()?).map_err(|e| miette::miette!("{e}"))?;
    let records = journal
        .records(run_id)
        .map_err(|e| miette::miette!("{e}"))?;
    if records.is_empty() {
        eprintln!("error: no step records for run `{run_id}`; `vacsine runs` lists the runs");
        return Ok(EXIT_ERROR);
    }
    if format == Format::Json {
        let mut out = std::io::stdout().lock();
        for r in &records {
            let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
        }
    } else {
        print_records(&records);
    }
    Ok(EXIT_OK)
}

fn describe(e: &vacsine_engine::ProgressEvent) -> Option<String> {
    use vacsine_engine::ProgressEvent as P;
    Some(match e {
        P::RunStarted { run_id, workflow } => format!("run {run_id} of {workflow} started"),
        P::StepStarted {
            step_id,
            node,
            attempt,
            ..
        } => {
            format!(
                "{step_id} on {} (attempt {attempt}) started",
                node.as_deref().unwrap_or("-")
            )
        }
        P::StepFinished {
            step_id,
            node,
            status,
            elapsed,
            ..
        } => format!(
            "{step_id} on {} {status} in {:.2}s",
            node.as_deref().unwrap_or("-"),
            elapsed.as_secs_f64()
        ),
        P::RunFinished {
            status, elapsed, ..
        } => format!("run {} in {:.2}s", status.as_str(), elapsed.as_secs_f64()),
        _ => return None,
    })
}
