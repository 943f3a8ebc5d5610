//! `vacsine run`, `runs`, `logs`: job 2, applying a workflow with traceable step records.

use crate::cli::{NodeChoice, SimpleFormat};
use crate::exit::Exit;
use crate::output::{elapsed_text, print_diagnostics, print_records, report_error};
use crate::paths::journal_path;
use crate::progress::Progress;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
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
    let mut errors = Vec::new();
    let mut given = Map::new();
    let mut seen = BTreeSet::new();
    for r in raw {
        let Some((name, value)) = r.split_once('=') else {
            errors.push(LoadError::at(
                &wf.source,
                0,
                0,
                format!("--input {r:?}: expected NAME=VALUE"),
                Some(format!(
                    "inputs of workflow `{}`: {}",
                    w.metadata.name.value,
                    declared_inputs(w)
                )),
            ));
            continue;
        };
        if !seen.insert(name) {
            errors.push(LoadError::at(
                &wf.source,
                0,
                0,
                format!("--input {name} is given twice"),
                None,
            ));
            continue;
        }
        match input_value(wf, name, value) {
            Ok(v) => {
                given.insert(name.to_string(), v);
            }
            Err(e) => errors.push(e),
        }
    }
    errors.extend(missing_inputs(wf, &seen));
    if errors.is_empty() {
        Ok(given)
    } else {
        Err(errors)
    }
}

/// The names of the inputs `w` declares, comma-separated (`none` without any).
fn declared_inputs(w: &Workflow) -> String {
    let v: Vec<&str> = w.spec.inputs.keys().map(String::as_str).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

/// One `--input NAME=VALUE` typed and checked by its declaration; `event` may be given
/// without one (JSON when it parses, else a string). An error is located at the declaration.
fn input_value(wf: &Loaded<Workflow>, name: &str, value: &str) -> Result<Value, LoadError> {
    let w = &wf.doc;
    match w.spec.inputs.get(name) {
        Some(spec) => spec
            .ty
            .from_command_line(value)
            .and_then(|v| spec.check(&v))
            .map_err(|e| {
                LoadError::at(
                    &wf.source,
                    spec.name.line,
                    spec.name.column,
                    format!("--input {name}={value:?}: {e}"),
                    Some(format!(
                        "input `{name}` is declared here with type {}",
                        spec.ty.as_str()
                    )),
                )
            }),
        // The triggering event, when the workflow does not declare an input of that name.
        None if name == "event" => {
            Ok(serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string())))
        }
        None => Err(LoadError::at(
            &wf.source,
            w.metadata.name.line,
            w.metadata.name.column,
            format!(
                "--input {name}: workflow `{}` declares no input `{name}`",
                w.metadata.name.value
            ),
            Some(format!("declared inputs: {}", declared_inputs(w))),
        )),
    }
}

/// An error for each required input not among the names `seen`, located at its declaration.
fn missing_inputs(wf: &Loaded<Workflow>, seen: &BTreeSet<&str>) -> Vec<LoadError> {
    wf.doc
        .spec
        .inputs
        .iter()
        .filter(|(name, spec)| spec.is_required() && !seen.contains(name.as_str()))
        .map(|(name, spec)| {
            LoadError::at(
                &wf.source,
                spec.name.line,
                spec.name.column,
                format!(
                    "input `{name}` ({}) is required and was not given",
                    spec.ty.as_str()
                ),
                Some(format!("pass --input {name}=VALUE")),
            )
        })
        .collect()
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
) -> Result<(NodeMap, String, Option<Arc<dyn Site>>), Exit> {
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

/// The arguments of `vacsine run` without `--site`.
pub struct RunArgs {
    pub workflow: Option<PathBuf>,
    pub target: Option<PathBuf>,
    pub raw_inputs: Vec<String>,
    pub catalog: Vec<PathBuf>,
    pub node_choices: Vec<NodeChoice>,
    pub resume: Option<String>,
    pub format: SimpleFormat,
}

/// `vacsine run`: check everything that can be checked before touching a node (catalog,
/// target, `--node`, workflow, inputs), connect, run (or resume) with progress and signals,
/// then print the records and end with the run's status.
pub async fn run(args: RunArgs) -> miette::Result<Exit> {
    let journal = Journal::open(&journal_path()?).map_err(|e| miette::miette!("{e}"))?;
    let checked = match check_run(&args) {
        Ok(c) => c,
        Err(exit) => return Ok(exit),
    };
    let engine = Engine::new(journal, vacsine_enforce::engine_catalog(&checked.catalog));
    let (nodes, target_name, observer) = match nodes_for(checked.target.as_ref()).await {
        Ok(x) => x,
        Err(exit) => return Ok(exit),
    };
    let progress = Progress::new(args.format != SimpleFormat::Human);
    let p2 = progress.clone();
    let on_progress: Arc<dyn Fn(&vacsine_engine::ProgressEvent) + Send + Sync> =
        Arc::new(move |e| {
            if let Some(line) = describe(e) {
                p2.say(&line)
            }
        });
    let (cancel, terminated) = cancel_on_signals();
    let report = match checked.job {
        Job::Resume(run_id) => {
            engine
                .resume_cancellable(&run_id, nodes, Some(on_progress), observer, cancel)
                .await
        }
        Job::Run(mut workflow, inputs) => {
            let default_node =
                match place_chosen(&mut workflow, &nodes, &args.node_choices, &checked.label) {
                    Ok(n) => n,
                    Err(e) => return Ok(report_error(e)),
                };
            let request = RunRequest {
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
            };
            engine.run(request).await
        }
    };
    progress.done();
    let report = match report {
        Ok(r) => r,
        Err(e) => return Ok(report_error(engine_error(e, &checked.label))),
    };
    print_records(&report.records, args.format == SimpleFormat::Json);
    if args.format == SimpleFormat::Human {
        println!("run {} {}", report.run_id, report.status.as_str());
    }
    if report.status == RunStatus::Cancelled {
        eprintln!(
            "run {} cancelled: resume it with `vacsine run --resume {}`",
            report.run_id, report.run_id
        );
        return Ok(Exit::of_signal(
            terminated.load(std::sync::atomic::Ordering::SeqCst),
        ));
    }
    Ok(Exit::of_run(report.status))
}

/// A run whose arguments were checked: the job, the catalog it runs with, the target file and
/// its name (`local` without one).
struct CheckedRun {
    job: Job,
    catalog: inputs::Catalog,
    target: Option<Loaded<Target>>,
    label: String,
}

/// Check what `vacsine run` can check before connecting to anything: the catalog, the target
/// file, `--node` against the target's declared nodes, the workflow, its inputs. A problem
/// is printed; the error is its exit code.
fn check_run(args: &RunArgs) -> Result<CheckedRun, Exit> {
    let mut cat_dirs = args.catalog.clone();
    if cat_dirs.is_empty() && std::path::Path::new("catalog").is_dir() {
        cat_dirs.push(PathBuf::from("catalog"));
    }
    let (mut catalog, problems) = inputs::catalog_for(None, &cat_dirs);
    if !problems.is_empty() {
        return Err(print_diagnostics(problems));
    }
    let target = match args.target.as_deref().map(inputs::load_target).transpose() {
        Ok(t) => t,
        Err(e) => return Err(print_diagnostics(vec![e])),
    };
    let label = target
        .as_ref()
        .map_or("local".to_string(), |t| t.doc.metadata.name.value.clone());
    let declared = target.as_ref().and_then(|t| declared_nodes(&t.doc));
    // `--node` names checked against the target file before connecting to anything.
    if let Some(declared) = &declared {
        if let Err(e) = select_nodes(declared, &args.node_choices, &label) {
            return Err(report_error(miette::miette!("{e}")));
        }
    }
    // The workflow and its inputs are checked before connecting to the target.
    let job = match (args.resume.clone(), &args.workflow) {
        (Some(run_id), _) => Job::Resume(run_id),
        (None, None) => {
            return Err(report_error(miette::miette!(
                help = "give a workflow file, or --resume RUN_ID",
                "nothing to run"
            )))
        }
        (None, Some(wf_path)) => {
            let wf = inputs::load_workflow(wf_path).map_err(|e| print_diagnostics(vec![e]))?;
            catalog
                .workflows
                .entry(wf.doc.metadata.name.value.clone())
                .or_insert_with(|| wf.clone());
            let ecat = vacsine_enforce::engine_catalog(&catalog);
            let errs: Vec<LoadError> = vacsine_engine::validate_workflow(&wf.doc, &ecat)
                .into_iter()
                .map(|p| p.into_error(&wf.source))
                .collect();
            if !errs.is_empty() {
                return Err(print_diagnostics(errs));
            }
            let inputs =
                inputs_from_command_line(&wf, &args.raw_inputs).map_err(print_diagnostics)?;
            // Several nodes declared and none chosen: say so before connecting.
            if let Some(d) = declared.filter(|d| d.len() > 1 && args.node_choices.is_empty()) {
                if let Some(e) = first_unplaced(&wf.doc, &label, &d) {
                    return Err(report_error(e));
                }
            }
            Job::Run(Box::new(wf.doc), inputs)
        }
    };
    Ok(CheckedRun {
        job,
        catalog,
        target,
        label,
    })
}

/// The error for the first step that names no node, when the target has several.
fn first_unplaced(w: &Workflow, target: &str, declared: &[NodeInfo]) -> Option<miette::Report> {
    let registry = Registry::default();
    let spec = &w.spec;
    spec.steps
        .iter()
        .chain(&spec.rollback)
        .find(|s| unplaced(s, &registry))
        .map(|s| no_node_error(&s.id, &s.uses, target, &describe_nodes(declared)))
}

/// The steps that name no node placed on the nodes chosen with `--node` (none chosen: left
/// to the engine); the default node, when one was chosen.
fn place_chosen(
    workflow: &mut Workflow,
    nodes: &NodeMap,
    choices: &[NodeChoice],
    target: &str,
) -> miette::Result<Option<String>> {
    if choices.is_empty() {
        return Ok(None);
    }
    let infos: Vec<NodeInfo> = nodes
        .values()
        .map(|n| NodeInfo {
            name: n.node().name.clone(),
            roles: n.node().roles.clone(),
        })
        .collect();
    let chosen = select_nodes(&infos, choices, target).map_err(|e| miette::miette!("{e}"))?;
    Ok(place_steps(workflow, &chosen))
}

/// An engine error as the user sees it: a step without a node says how to choose one.
fn engine_error(e: EngineError, target: &str) -> miette::Report {
    match e {
        EngineError::NoNode {
            step,
            executor,
            available,
            ..
        } => {
            let nodes = if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            };
            no_node_error(&step, &executor, target, &nodes)
        }
        e => miette::miette!("{e}"),
    }
}

/// SIGINT and SIGTERM cancel the run: the first stops scheduling and asks running steps to
/// end (their process groups get SIGTERM, then SIGKILL after a grace period), a second one
/// kills them at once. Returns the token and whether the first signal was SIGTERM (for
/// [`Exit::of_signal`]).
pub(crate) fn cancel_on_signals() -> (CancelToken, Arc<std::sync::atomic::AtomicBool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let cancel = CancelToken::new();
    let code = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c, k) = (cancel.clone(), code.clone());
    let streams =
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
    match streams {
        Ok((mut int, mut term)) => {
            tokio::spawn(async move {
                loop {
                    let terminated = tokio::select! {
                        Some(()) = int.recv() => false,
                        Some(()) = term.recv() => true,
                        else => break,
                    };
                    if !c.is_cancelled() {
                        k.store(terminated, std::sync::atomic::Ordering::SeqCst);
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

pub fn runs(limit: usize, format: SimpleFormat) -> miette::Result<Exit> {
    let journal = Journal::open(&journal_path()?).map_err(|e| miette::miette!("{e}"))?;
    let runs = journal.runs(limit).map_err(|e| miette::miette!("{e}"))?;
    if format == SimpleFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return Ok(Exit::Ok);
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
        let dur = elapsed_text(&r.started_at, r.finished_at.as_deref());
        println!(
            "{:<38} {:<24} {:<16} {:<12} {:<28} {dur}",
            r.id,
            r.workflow,
            r.target,
            r.status.as_str(),
            r.started_at
        );
    }
    Ok(Exit::Ok)
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

pub fn logs(run_id: &str, format: SimpleFormat) -> miette::Result<Exit> {
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
    print_records(&records, format == SimpleFormat::Json);
    Ok(Exit::Ok)
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

#[cfg(test)]
mod tests {
    use super::*;

    const TYPED: &str = "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata: {name: typed}\nspec:\n  inputs:\n    pattern: {type: string}\n    port: {type: port}\n    names: {type: array, default: []}\n  steps:\n    - id: show\n      uses: command\n      with:\n        argv: [echo, \"{{ inputs.pattern }}\"]\n";

    fn typed() -> Loaded<Workflow> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typed.yaml");
        std::fs::write(&path, TYPED).unwrap();
        inputs::load_workflow(&path).unwrap()
    }

    fn raw(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_line_inputs_are_typed_by_their_declarations() {
        let wf = typed();
        assert_eq!(declared_inputs(&wf.doc), "names, pattern, port");
        let got = inputs_from_command_line(
            &wf,
            &raw(&[
                "pattern=[0-9]+",
                "port=8080",
                r#"names=["a"]"#,
                "event={\"x\": 1}",
            ]),
        )
        .unwrap();
        assert_eq!(got["pattern"], "[0-9]+");
        assert_eq!(got["port"], 8080);
        assert_eq!(got["names"], serde_json::json!(["a"]));
        assert_eq!(got["event"], serde_json::json!({"x": 1}));
    }

    #[test]
    fn each_wrong_or_missing_input_is_one_located_error() {
        let wf = typed();
        let errs = inputs_from_command_line(&wf, &raw(&["port=http", "nope=1", "bare", "nope=2"]))
            .unwrap_err();
        let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages.len(), 5, "{messages:?}");
        assert!(
            messages[0].starts_with("--input port=\"http\": "),
            "{messages:?}"
        );
        assert_eq!(
            messages[1..],
            [
                "--input nope: workflow `typed` declares no input `nope`",
                "--input \"bare\": expected NAME=VALUE",
                "--input nope is given twice",
                "input `pattern` (string) is required and was not given",
            ]
        );
        assert!(errs[0].line > 1 && errs[4].line > 1);
    }
}
