//! `vacsine scap`: SCAP source data streams (SSG content). `profiles` lists a stream's
//! profiles; `eval` evaluates a profile natively on every node of a target through its
//! driver (`vacsine_scap::node::NodeSystem`), one blocking thread per node.

use crate::cli::{Format, ScapAction, SimpleFormat};
use crate::exit::Exit;
use crate::output::{print, print_diagnostics, print_json, print_json_line};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use vacsine_scap::tailoring::Tailoring;
use vacsine_scap::xccdf::{selected_rules, Outcome, Report, RuleResult};
use vacsine_scap::DataStream;

fn load(path: &Path) -> miette::Result<(DataStream, f64)> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        miette::miette!(
            "{name}: cannot read the data stream: {e} (SSG content is in /usr/share/xml/scap/ssg/content/, from the ssg-debian package)"
        )
    })?;
    let t = Instant::now();
    let ds = vacsine_scap::parse(&text, &name).map_err(|e| miette::miette!("{e}"))?;
    Ok((ds, t.elapsed().as_secs_f64() * 1000.0))
}

/// The tailoring to apply and the result documents to write (`--tailoring`, `--results`,
/// `--arf`).
#[derive(Debug, Clone, Default)]
pub struct Documents {
    pub tailoring: Option<std::path::PathBuf>,
    pub results: Option<std::path::PathBuf>,
    pub arf: Option<std::path::PathBuf>,
}

/// `vacsine check --scap DS --profile ID --target T`: the same as `vacsine scap eval`.
pub async fn check_scap(
    datastream: std::path::PathBuf,
    profile: String,
    target: std::path::PathBuf,
    container_as_machine: bool,
    docs: Documents,
    format: Format,
) -> miette::Result<Exit> {
    let format = match format {
        Format::Human => SimpleFormat::Human,
        Format::Json => SimpleFormat::Json,
        Format::Junit | Format::Sarif => {
            return Err(miette::miette!(
                "`check --scap` prints `human` or `json` for now (JUnit and SARIF are the policy report's formats)"
            ))
        }
    };
    let at = EvalAt {
        target,
        node: None,
        container_as_machine,
    };
    eval(&datastream, &profile, &at, &docs, format).await
}

pub async fn scap(action: ScapAction) -> miette::Result<Exit> {
    match action {
        ScapAction::Profiles { datastream, format } => profiles(&datastream, format),
        ScapAction::Eval {
            datastream,
            profile,
            target,
            node,
            container_as_machine,
            tailoring,
            results,
            arf,
            format,
        } => {
            let docs = Documents {
                tailoring,
                results,
                arf,
            };
            let at = EvalAt {
                target,
                node,
                container_as_machine,
            };
            eval(&datastream, &profile, &at, &docs, format).await
        }
    }
}

/// `vacsine scap profiles DS`: the stream's profiles and how many rules each selects.
fn profiles(datastream: &Path, format: SimpleFormat) -> miette::Result<Exit> {
    let (ds, _) = load(datastream)?;
    let rows: Vec<serde_json::Value> = ds
        .benchmark
        .profiles
        .iter()
        .map(|p| {
            serde_json::json!({
                "id": p.id, "title": p.title,
                "rules": selected_rules(&ds, p).len(),
            })
        })
        .collect();
    match format {
        SimpleFormat::Json => print_json(&serde_json::json!({
            "benchmark": ds.benchmark.id, "title": ds.benchmark.title, "profiles": rows,
        })),
        SimpleFormat::Human => {
            let mut s = format!("{} ({})\n", ds.benchmark.title, ds.benchmark.id);
            for r in &rows {
                s.push_str(&format!(
                    "  {:<64} {:>4} rules  {}\n",
                    r["id"].as_str().unwrap_or(""),
                    r["rules"],
                    r["title"].as_str().unwrap_or("")
                ));
            }
            print(&s);
        }
    }
    Ok(Exit::Ok)
}

/// Where `scap eval` evaluates: the target file, one node of it (`--node`), and whether a
/// container is treated as a machine.
struct EvalAt {
    target: PathBuf,
    node: Option<String>,
    container_as_machine: bool,
}

/// The profile's slice of the stream, tailored, with how long it took to load.
struct Profile {
    ds: Arc<DataStream>,
    tailoring: Option<Tailoring>,
    load_ms: f64,
    cached: bool,
}

/// One node's evaluation, as its blocking thread returns it.
struct NodeEval {
    report: Result<Report, String>,
    ms: f64,
    execs: usize,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
    /// The node's identity for the result documents (only when some are written).
    info: Option<vacsine_scap::results::TargetInfo>,
}

/// `vacsine scap eval`: the profile on every node of the target (or `--node`), one blocking
/// thread per node; a report per node, the result documents asked for.
async fn eval(
    datastream: &Path,
    profile: &str,
    at: &EvalAt,
    docs: &Documents,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let p = load_profile(datastream, profile, docs.tailoring.as_deref())?;
    // The result documents embed the stream as written: read (and located) once.
    let want_docs = docs.results.is_some() || docs.arf.is_some();
    let source_text = if want_docs {
        Some(crate::scapdocs::read_source(datastream)?)
    } else {
        None
    };
    let source = match &source_text {
        Some(text) => Some(
            vacsine_scap::results::Source::new(text, &p.ds.file)
                .map_err(|e| miette::miette!("{e}"))?,
        ),
        None => None,
    };
    let target = match vacsine_enforce::inputs::load_target(&at.target) {
        Ok(t) => t,
        Err(e) => return Ok(print_diagnostics(vec![e])),
    };
    let site = crate::drivers::resolve(&target.doc)
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    let names = eval_nodes(site.as_site(), at.node.as_deref(), &target.path)?;
    let opts = vacsine_scap::Options {
        container_as_machine: at.container_as_machine,
    };
    let mut tasks = Vec::new();
    for name in names {
        let Some(ops) = site.as_site().node_ops(&name) else {
            return Err(miette::miette!(
                "node `{name}` has no operations in its driver"
            ));
        };
        let task = spawn_eval(ops, p.ds.clone(), profile, &opts, &name, want_docs);
        tasks.push((name, task));
    }
    let mut exit = Exit::Ok;
    let out = EvalOutput {
        source: source.as_ref(),
        docs,
        several: tasks.len() > 1,
        format,
    };
    for (name, task) in tasks {
        let done = task
            .await
            .map_err(|e| miette::miette!("evaluation of node `{name}` stopped: {e}"))?;
        if node_done(&name, done, &p, &out)? {
            exit = Exit::Failures;
        }
    }
    Ok(exit)
}

/// Where and how `scap eval` reports each node: the stream the result documents embed (when
/// some are asked for), their paths, whether there are several nodes, the format.
struct EvalOutput<'a> {
    source: Option<&'a vacsine_scap::results::Source<'a>>,
    docs: &'a Documents,
    several: bool,
    format: SimpleFormat,
}

/// One node's evaluation done: its result documents written, its report printed; whether a
/// rule failed (or could not be evaluated) there.
fn node_done(name: &str, done: NodeEval, p: &Profile, out: &EvalOutput) -> miette::Result<bool> {
    let rep = done.report.map_err(|e| miette::miette!("{e}"))?;
    let written = match (out.source, done.info) {
        (Some(src), Some(target)) => crate::scapdocs::write(
            src,
            &p.ds,
            &vacsine_scap::results::Run {
                report: &rep,
                target,
                start: done.start,
                end: done.end,
            },
            p.tailoring.as_ref(),
            out.docs.results.as_deref(),
            out.docs.arf.as_deref(),
            out.several,
        )?,
        _ => Vec::new(),
    };
    let failed = rep
        .rules
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Fail | Outcome::Error));
    let timing = Timing {
        load_ms: p.load_ms,
        cached: p.cached,
        evaluate_ms: done.ms,
        execs: done.execs,
    };
    print_node(name, &rep, &timing, &written, out.format);
    Ok(failed)
}

/// The profile's slice of the stream, from the cache when this very file was loaded before
/// (`vacsine_scap::cache`). A tailoring's profiles are added before the profile is sliced
/// (its bytes are part of the cache key).
fn load_profile(
    datastream: &Path,
    profile: &str,
    tailoring: Option<&Path>,
) -> miette::Result<Profile> {
    let tailoring = match tailoring {
        Some(path) => Some(crate::scapdocs::read_tailoring(path)?),
        None => None,
    };
    let (ds, info) = vacsine_scap::cache::load(
        datastream,
        profile,
        tailoring.as_ref().map(|(_, text)| text.as_bytes()),
        |ds| match &tailoring {
            Some((t, _)) => t.apply_to(ds).map(|_| ()),
            None => Ok(()),
        },
    )
    .map_err(|e| miette::miette!("{e}"))?;
    if let Some(e) = &info.cache_error {
        tracing::debug!("SCAP cache: {e}");
    }
    Ok(Profile {
        ds: Arc::new(ds),
        tailoring: tailoring.map(|(t, _)| t),
        load_ms: info.load_ms,
        cached: info.cached,
    })
}

/// The nodes to evaluate: every node of the site, or `--node` (which must be one of them).
fn eval_nodes(
    site: &dyn vacsine_core::node::Site,
    node: Option<&str>,
    target_path: &Path,
) -> miette::Result<Vec<String>> {
    let names: Vec<String> = site.nodes().into_iter().map(|n| n.name).collect();
    match node {
        None => Ok(names),
        Some(n) if names.iter().any(|x| x == n) => Ok(vec![n.to_string()]),
        Some(n) => Err(miette::miette!(
            "node `{n}` is not in target {}; nodes: {}",
            target_path.display(),
            names.join(", ")
        )),
    }
}

/// Evaluate the profile on one node in a blocking thread (the node's probes are blocking).
fn spawn_eval(
    ops: Arc<dyn vacsine_core::node::NodeOps>,
    ds: Arc<DataStream>,
    profile: &str,
    opts: &vacsine_scap::Options,
    name: &str,
    want_docs: bool,
) -> tokio::task::JoinHandle<NodeEval> {
    let (opts, profile, node_name) = (opts.clone(), profile.to_string(), name.to_string());
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let sys = vacsine_scap::node::NodeSystem::new(ops, rt);
        let t = Instant::now();
        let start = chrono::Utc::now();
        let report = vacsine_scap::evaluate(&ds, &profile, &sys, &opts);
        let end = chrono::Utc::now();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let execs = sys.execs.load(std::sync::atomic::Ordering::Relaxed);
        let info = want_docs.then(|| vacsine_scap::results::target_info(&node_name, &sys));
        NodeEval {
            report,
            ms,
            execs,
            start,
            end,
            info,
        }
    })
}

/// How long loading and evaluating took, printed with each node's report.
struct Timing {
    load_ms: f64,
    cached: bool,
    evaluate_ms: f64,
    execs: usize,
}

/// One node's report: a JSON line, or the human table and the documents written.
fn print_node(
    name: &str,
    rep: &Report,
    t: &Timing,
    written: &[(&'static str, PathBuf)],
    format: SimpleFormat,
) {
    match format {
        SimpleFormat::Json => {
            let mut v = serde_json::json!({
                "node": name, "report": rep,
                "timing": {"load_ms": t.load_ms, "cached": t.cached, "evaluate_ms": t.evaluate_ms, "node_execs": t.execs},
            });
            for (kind, path) in written {
                v[*kind] = serde_json::json!(path.display().to_string());
            }
            print_json_line(&v)
        }
        SimpleFormat::Human => {
            let mut s = human(name, rep, t.load_ms, t.cached, t.evaluate_ms, t.execs);
            s.push_str(&crate::scapdocs::written_line(written));
            print(&s)
        }
    }
}

fn short(id: &str) -> &str {
    id.rsplit_once("_rule_").map(|x| x.1).unwrap_or(id)
}

fn human(node: &str, rep: &Report, parse_ms: f64, cached: bool, ms: f64, execs: usize) -> String {
    let mut s = format!(
        "node {node}: {} ({}), {} rules\n",
        rep.profile_title,
        rep.profile,
        rep.rules.len()
    );
    for r in &rep.rules {
        s.push_str(&rule_text(r));
    }
    let summary: Vec<String> = rep
        .summary
        .iter()
        .map(|(o, n)| format!("{} {n}", o.as_str()))
        .collect();
    s.push_str(&format!("summary: {}\n", summary.join(", ")));
    s.push_str(&controls_text(rep));
    s.push_str(&format!(
        "{} in {parse_ms:.0} ms, evaluated in {ms:.0} ms ({execs} programs run in the node)\n",
        if cached {
            "profile loaded from the cache"
        } else {
            "data stream parsed"
        }
    ));
    s
}

/// One rule's line; under a rule that does not pass, up to five lines of its evidence, the
/// decisive ones first.
fn rule_text(r: &RuleResult) -> String {
    let mut s = format!(
        "  {:<13} {:<7} {:<48} {}\n",
        r.outcome.as_str(),
        r.severity,
        short(&r.id),
        r.title
    );
    if !matches!(r.outcome, Outcome::Pass) {
        // The decisive lines first: tests that were false, errors, not evaluated.
        let telling = |e: &&String| {
            [": false —", ": error —", ": not evaluated —"]
                .iter()
                .any(|k| e.contains(k))
        };
        let (first, rest) = r.evidence.split_at(r.evidence.len().min(1));
        let lines = first
            .iter()
            .chain(rest.iter().filter(telling))
            .chain(rest.iter().filter(|e| !telling(e)))
            .take(5);
        for e in lines {
            let e: String = e.chars().take(220).collect();
            s.push_str(&format!("                  {e}\n"));
        }
    }
    s
}

/// The controls per framework (satisfied, failed, incomplete, not applicable), with the
/// failed ones named for the frameworks people audit against.
fn controls_text(rep: &Report) -> String {
    let mut s = String::from("controls (satisfied / failed / incomplete / not applicable):\n");
    for (f, r) in &rep.families {
        s.push_str(&format!(
            "  {:<16} {:>4} / {:>4} / {:>4} / {:>4}\n",
            f, r.satisfied, r.failed, r.incomplete, r.not_applicable
        ));
        let failed: Vec<&str> = r
            .controls
            .iter()
            .filter(|(_, c)| c.contains_key(&Outcome::Fail))
            .map(|(k, _)| k.as_str())
            .take(12)
            .collect();
        if !failed.is_empty()
            && (f == "ANSSI" || f == "CIS Controls" || f == "NIST SP 800-53" || f == "PCI-DSS")
        {
            s.push_str(&format!(
                "                   failed: {}\n",
                failed.join(", ")
            ));
        }
    }
    s
}
