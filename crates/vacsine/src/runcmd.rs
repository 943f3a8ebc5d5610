//! `vacsine run`, `runs`, `logs`: job 2, applying a workflow with traceable step records.

use crate::cli::{NodeChoice, SimpleFormat};
use crate::commands::{journal_path, print_diagnostics, report_error, EXIT_FAILURES, EXIT_OK};
use crate::progress::Progress;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use vacsine_core::doc::{LoadError, Loc};
use vacsine_core::node::{NodeOps, Site};
use vacsine_core::policy::NodeSelector;
use vacsine_core::target::{DriverKind, Target};
use vacsine_core::workflow::{RunsOn, Step, Workflow};
use vacsine_enforce::inputs::{self, Loaded};
use vacsine_engine::executor::{Registry, WORKFLOW_EXECUTOR};
use vacsine_engine::{
    CancelToken, Engine, EngineError, Journal, LocalNode, NodeMap, RunRequest, RunStatus,
};

/// Input values given with `--input NAME=VALUE`, typed by the workflow's declarations: a
/// value is a string unless its input is declared `array` or `object` (then JSON); scalar types
/// (`port`, `boolean`…) are parsed by their type. A wrong or missing value is located at the
/// input's declaration in the workflow file.
pub(crate) fn inputs_from_command_line(
    wf: &Loaded<Workflow>,
    raw: &[String],
) -> Result<Map<String, Value>, Vec<LoadError>> {
    let w = &wf.doc;
    let decl = &w.spec.inputs;
    let at = |line: u64, column: u64, message: String, help: Option<String>| {
        LoadError::at(&wf.source, line, column, message, help)
    };
    let declared = || {
        let v: Vec<&str> = decl.keys().map(String::as_str).collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut errors = Vec::new();
    let mut given = Map::new();
    let mut seen = BTreeSet::new();
    for r in raw {
        let Some((name, value)) = r.split_once('=') else {
            errors.push(at(
                0,
                0,
                format!("--input {r:?}: expected NAME=VALUE"),
                Some(format!(
                    "inputs of workflow `{}`: {}",
                    w.metadata.name.value,
                    declared()
                )),
            ));
            continue;
        };
        if !seen.insert(name) {
            errors.push(at(0, 0, format!("--input {name} is given twice"), None));
            continue;
        }
        let v = match decl.get(name) {
            Some(spec) => match spec
                .ty
                .from_command_line(value)
                .and_then(|v| spec.check(&v))
            {
                Ok(v) => v,
                Err(e) => {
                    errors.push(at(
                        spec.name.line,
                        spec.name.column,
                        format!("--input {name}={value:?}: {e}"),
                        Some(format!(
                            "input `{name}` is declared here with type {}",
                            spec.ty.as_str()
                        )),
                    ));
                    continue;
                }
            },
            // The triggering event, when the workflow does not declare an input of that name.
            None if name == "event" => {
                serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()))
            }
            None => {
                errors.push(at(
                    w.metadata.name.line,
                    w.metadata.name.column,
                    format!(
                        "--input {name}: workflow `{}` declares no input `{name}`",
                        w.metadata.name.value
                    ),
                    Some(format!("declared inputs: {}", declared())),
                ));
                continue;
            }
        };
        given.insert(name.to_string(), v);
    }
    for (name, spec) in decl {
        if spec.is_required() && !seen.contains(name.as_str()) {
            errors.push(at(
                spec.name.line,
                spec.name.column,
                format!(
                    "input `{name}` ({}) is required and was not given",
                    spec.ty.as_str()
                ),
                Some(format!("pass --input {name}=VALUE")),
            ));
        }
    }
    if errors.is_empty() {
        Ok(given)
    } else {
        Err(errors)
    }
}

fn local_node(name: &str, roles: &[String], labels: &BTreeMap<String, String>) -> Arc<dyn NodeOps> {
    let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    let mut n = LocalNode::new(name).with_roles(&roles);
    for (k, v) in labels {
        n = n.with_label(k, v);
    }
    Arc::new(n)
}

/// Nodes of the run, the target's name and its observer. Without a target, this machine as
/// node `local`; a `driver: local` target names this machine once per declared node (with
/// its roles and labels).
async fn nodes_for(
    target: Option<&Loaded<Target>>,
) -> Result<(NodeMap, String, Option<Arc<dyn Site>>), i32> {
    let Some(t) = target else {
        let mut m = NodeMap::new();
        m.insert("local".into(), local_node("local", &[], &BTreeMap::new()));
        return Ok((m, "local".into(), None));
    };
    let name = t.doc.metadata.name.value.clone();
    match t.doc.spec.driver {
        DriverKind::Local => {
            let mut m = NodeMap::new();
            for n in &t.doc.spec.nodes {
                let id = n
                    .name
                    .as_ref()
                    .or(n.container.as_ref())
                    .map_or("local", |x| x.value.as_str());
                m.insert(id.to_string(), local_node(id, &n.roles, &n.labels));
            }
            Ok((m, name, None))
        }
        DriverKind::Docker => {
            let site = crate::drivers::resolve(&t.doc)
                .await
                .map_err(|e| report_error(miette::miette!("{e}")))?;
            let mut m = NodeMap::new();
            for n in site.nodes() {
                if let Some(ops) = site.node_ops(&n.name) {
                    m.insert(n.name.clone(), ops);
                }
            }
            Ok((m, name, Some(site.into_site())))
        }
    }
}

/// A node as `--node` sees it: its name and roles.
struct NodeInfo {
    name: String,
    roles: Vec<String>,
}

fn describe_nodes(nodes: &[NodeInfo]) -> String {
    if nodes.is_empty() {
        return "none".into();
    }
    nodes
        .iter()
        .map(|n| {
            if n.roles.is_empty() {
                n.name.clone()
            } else {
                format!("{} (roles: {})", n.name, n.roles.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The nodes chosen with `--node`, in the order of the target, each once.
fn select_nodes(
    nodes: &[NodeInfo],
    choices: &[NodeChoice],
    target: &str,
) -> Result<Vec<String>, String> {
    let mut chosen = BTreeSet::new();
    for c in choices {
        let hits: Vec<&str> = nodes
            .iter()
            .filter(|n| match c {
                NodeChoice::Name(x) => n.name == *x,
                NodeChoice::Role(r) => n.roles.contains(r),
            })
            .map(|n| n.name.as_str())
            .collect();
        if hits.is_empty() {
            let what = match c {
                NodeChoice::Name(x) => format!("target `{target}` has no node `{x}`"),
                NodeChoice::Role(r) => format!("no node of target `{target}` has role `{r}`"),
            };
            return Err(format!(
                "--node: {what}; its nodes: {}",
                describe_nodes(nodes)
            ));
        }
        chosen.extend(hits);
    }
    Ok(nodes
        .iter()
        .filter(|n| chosen.contains(n.name.as_str()))
        .map(|n| n.name.clone())
        .collect())
}

/// The nodes a target file declares, when every one is named there (a label selector's
/// nodes are only known once the driver resolves them).
fn declared_nodes(t: &Target) -> Option<Vec<NodeInfo>> {
    t.spec
        .nodes
        .iter()
        .map(|n| {
            let name = n.name.as_ref().or(n.container.as_ref());
            let name = match (name, t.spec.driver) {
                (Some(x), _) => x.value.clone(),
                (None, DriverKind::Local) => "local".into(),
                (None, DriverKind::Docker) => return None,
            };
            Some(NodeInfo {
                name,
                roles: n.roles.clone(),
            })
        })
        .collect()
}

/// Whether a step runs on a node and names none (`runsOn`).
fn unplaced(s: &Step, registry: &Registry) -> bool {
    s.runs_on.is_none()
        && (s.uses.value == WORKFLOW_EXECUTOR
            || registry.get(&s.uses).is_some_and(|e| e.needs_node()))
}

/// The error when steps name no node and the target has several: choose with `--node`.
fn no_node_error(step: &str, executor: &str, target: &str, nodes: &str) -> miette::Report {
    miette::miette!(
        help = format!(
            "choose where with --node NAME or --node role=ROLE (repeatable; steps fan out over several), or set `runsOn` on the step; nodes of `{target}`: {nodes}"
        ),
        "step `{step}` ({executor}) names no node (`runsOn`), and target `{target}` has several"
    )
}

/// Steps that name no node run on the chosen ones: one node becomes the default node; several
/// become a `runsOn` selector of those names on each such step, so the step fans out.
fn place_steps(w: &mut Workflow, chosen: &[String]) -> Option<String> {
    if let [one] = chosen {
        return Some(one.clone());
    }
    let registry = Registry::default();
    let selector = NodeSelector {
        names: chosen.iter().map(|n| Loc::new(n.clone())).collect(),
        ..Default::default()
    };
    for s in w.spec.steps.iter_mut().chain(w.spec.rollback.iter_mut()) {
        if unplaced(s, &registry) {
            s.runs_on = Some(RunsOn::Select(selector.clone()));
        }
    }
    None
}

/// What `vacsine run` does once its arguments are checked.
enum Job {
    Resume(String),
    Run(Box<Workflow>, Map<String, Value>),
}

pub async fn run(
    workflow: Option<PathBuf>,
    target: Option<PathBuf>,
    raw_inputs: Vec<String>,
    catalog: Vec<PathBuf>,
    node_choices: Vec<NodeChoice>,
    resume: Option<String>,
    format: SimpleFormat,
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
    let target = match target.as_deref().map(inputs::load_target).transpose() {
        Ok(t) => t,
        Err(e) => return Ok(print_diagnostics(vec![e])),
    };
    let target_label = target
        .as_ref()
        .map_or("local".to_string(), |t| t.doc.metadata.name.value.clone());
    // `--node` names checked against the target file before connecting to anything.
    if let Some(declared) = target.as_ref().and_then(|t| declared_nodes(&t.doc)) {
        if let Err(e) = select_nodes(&declared, &node_choices, &target_label) {
            return Ok(report_error(miette::miette!("{e}")));
        }
    }
    // The workflow and its inputs are checked before connecting to the target.
    let job = match (resume, workflow) {
        (Some(run_id), _) => Job::Resume(run_id),
        (None, None) => {
            return Err(miette::miette!(
                help = "give a workflow file, or --resume RUN_ID",
                "nothing to run"
            ))
        }
        (None, Some(wf_path)) => {
            let wf = match inputs::load_workflow(&wf_path) {
                Ok(w) => w,
                Err(e) => return Ok(print_diagnostics(vec![e])),
            };
            ecat_src
                .workflows
                .entry(wf.doc.metadata.name.value.clone())
                .or_insert_with(|| wf.clone());
            let ecat = vacsine_enforce::engine_catalog(&ecat_src);
            let errs: Vec<LoadError> = vacsine_engine::validate_workflow(&wf.doc, &ecat)
                .into_iter()
                .map(|p| p.into_error(&wf.source))
                .collect();
            if !errs.is_empty() {
                return Ok(print_diagnostics(errs));
            }
            let inputs = match inputs_from_command_line(&wf, &raw_inputs) {
                Ok(i) => i,
                Err(errs) => return Ok(print_diagnostics(errs)),
            };
            // Several nodes declared and none chosen: say so before connecting.
            let declared = target.as_ref().and_then(|t| declared_nodes(&t.doc));
            if let Some(d) = declared.filter(|d| d.len() > 1 && node_choices.is_empty()) {
                let registry = Registry::default();
                let w = &wf.doc.spec;
                if let Some(s) = w
                    .steps
                    .iter()
                    .chain(&w.rollback)
                    .find(|s| unplaced(s, &registry))
                {
                    let e = no_node_error(&s.id, &s.uses, &target_label, &describe_nodes(&d));
                    return Ok(report_error(e));
                }
            }
            Job::Run(Box::new(wf.doc), inputs)
        }
    };
    let engine = Engine::new(journal, vacsine_enforce::engine_catalog(&ecat_src));
    let (nodes, target_name, observer) = match nodes_for(target.as_ref()).await {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let progress = Progress::new(format != SimpleFormat::Human);
    let p2 = progress.clone();
    let on_progress: Arc<dyn Fn(&vacsine_engine::ProgressEvent) + Send + Sync> =
        Arc::new(move |e| {
            if let Some(line) = describe(e) {
                p2.say(&line)
            }
        });
    let (cancel, signalled) = cancel_on_signals();
    let report = match job {
        Job::Resume(run_id) => {
            engine
                .resume_cancellable(&run_id, nodes, Some(on_progress), observer, cancel)
                .await
        }
        Job::Run(mut workflow, inputs) => {
            let mut default_node = None;
            if !node_choices.is_empty() {
                let infos: Vec<NodeInfo> = nodes
                    .values()
                    .map(|n| NodeInfo {
                        name: n.node().name.clone(),
                        roles: n.node().roles.clone(),
                    })
                    .collect();
                match select_nodes(&infos, &node_choices, &target_label) {
                    Ok(chosen) => default_node = place_steps(&mut workflow, &chosen),
                    Err(e) => return Ok(report_error(miette::miette!("{e}"))),
                }
            }
            engine
                .run(RunRequest {
                    workflow: *workflow,
                    inputs,
                    nodes,
                    default_node,
                    target_name,
                    labels: Default::default(),
                    progress: Some(on_progress),
                    observer,
                    cancel,
                    run_id: None,
                })
                .await
        }
    };
    progress.done();
    let report = match report {
        Ok(r) => r,
        Err(EngineError::NoNode {
            step,
            executor,
            available,
            ..
        }) => {
            let nodes = if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            };
            let e = no_node_error(&step, &executor, &target_label, &nodes);
            return Ok(report_error(e));
        }
        Err(e) => return Ok(report_error(miette::miette!("{e}"))),
    };
    match format {
        SimpleFormat::Json => {
            let mut out = std::io::stdout().lock();
            for r in &report.records {
                let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
            }
        }
        SimpleFormat::Human => {
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
pub(crate) fn cancel_on_signals() -> (CancelToken, Arc<std::sync::atomic::AtomicI32>) {
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
            "{}  {:<24} {:<10} {:<12} {:>9}  {}{}",
            r.started_at,
            format!("{}#{}", r.step_id, r.attempt),
            r.node.as_deref().unwrap_or("-"),
            r.status.as_str(),
            duration(r),
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

/// A step record's measured duration, or `—` when none was measured (a step interrupted by a
/// crash: its end, journaled on resume, says when the crash was noticed, not how long it ran).
fn duration(r: &vacsine_core::record::StepRecord) -> String {
    r.duration_ms
        .map_or_else(|| "—".to_string(), |ms| format!("{ms}ms"))
}

pub fn runs(limit: usize, format: SimpleFormat) -> miette::Result<i32> {
    let journal = Journal::open(&journal_path()?).map_err(|e| miette::miette!("{e}"))?;
    let runs = journal.runs(limit).map_err(|e| miette::miette!("{e}"))?;
    if format == SimpleFormat::Json {
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

/// Whether this machine's journal has records of `run_id`.
pub fn has_local_records(run_id: &str) -> bool {
    journal_path()
        .ok()
        .filter(|p| p.exists())
        .and_then(|p| Journal::open(&p).ok())
        .and_then(|j| j.records(run_id).ok())
        .is_some_and(|r| !r.is_empty())
}

pub fn logs(run_id: &str, format: SimpleFormat) -> miette::Result<i32> {
    let journal = Journal::open(&journal_path()?).map_err(|e| miette::miette!("{e}"))?;
    let records = journal
        .records(run_id)
        .map_err(|e| miette::miette!("{e}"))?;
    if records.is_empty() {
        return Ok(report_error(miette::miette!(
            help = "`vacsine runs` lists the runs",
            "no step records for run `{run_id}`"
        )));
    }
    if format == SimpleFormat::Json {
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
