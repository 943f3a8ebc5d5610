//! `vacsine scap`: SCAP source data streams (SSG content). `profiles` lists a stream's
//! profiles; `eval` evaluates a profile natively on every node of a target through its
//! driver (`vacsine_scap::node::NodeSystem`), one blocking thread per node.

use crate::cli::{Format, ScapAction, SimpleFormat};
use crate::commands::{print, print_json, print_json_line, EXIT_FAILURES, EXIT_OK};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use vacsine_scap::xccdf::{selected_rules, Outcome, Report};
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
) -> miette::Result<i32> {
    let format = match format {
        Format::Human => SimpleFormat::Human,
        Format::Json => SimpleFormat::Json,
        Format::Junit | Format::Sarif => {
            return Err(miette::miette!(
                "`check --scap` prints `human` or `json` for now (JUnit and SARIF are the policy report's formats)"
            ))
        }
    };
    scap(ScapAction::Eval {
        datastream,
        profile,
        target,
        node: None,
        container_as_machine,
        tailoring: docs.tailoring,
        results: docs.results,
        arf: docs.arf,
        format,
    })
    .await
}

pub async fn scap(action: ScapAction) -> miette::Result<i32> {
    match action {
        ScapAction::Profiles { datastream, format } => {
            let (ds, _) = load(&datastream)?;
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
            Ok(EXIT_OK)
        }
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
            // A tailoring's profiles are added before the profile is sliced (its bytes are
            // part of the cache key).
            let tailoring = match &tailoring {
                Some(path) => Some(crate::scapdocs::read_tailoring(path)?),
                None => None,
            };
            // The profile's slice of the stream, from the cache when this very file was
            // loaded before (`vacsine_scap::cache`).
            let (ds, info) = vacsine_scap::cache::load(
                &datastream,
                &profile,
                tailoring.as_ref().map(|(_, text)| text.as_bytes()),
                |ds| match &tailoring {
                    Some((t, _)) => t.apply_to(ds).map(|_| ()),
                    None => Ok(()),
                },
            )
            .map_err(|e| miette::miette!("{e}"))?;
            let tailoring = tailoring.map(|(t, _)| t);
            let parse_ms = info.load_ms;
            let cached = info.cached;
            if let Some(e) = &info.cache_error {
                tracing::debug!("SCAP cache: {e}");
            }
            // The result documents embed the stream as written: read (and located) once.
            let want_docs = results.is_some() || arf.is_some();
            let source_text = if want_docs {
                Some(crate::scapdocs::read_source(&datastream)?)
            } else {
                None
            };
            let source = match &source_text {
                Some(text) => Some(
                    vacsine_scap::results::Source::new(text, &ds.file)
                        .map_err(|e| miette::miette!("{e}"))?,
                ),
                None => None,
            };
            let target = match vacsine_enforce::inputs::load_target(&target) {
                Ok(t) => t,
                Err(e) => return Ok(crate::commands::print_diagnostics(vec![e])),
            };
            let site = crate::drivers::resolve(&target.doc)
                .await
                .map_err(|e| miette::miette!("{e}"))?;
            let mut names: Vec<String> =
                site.as_site().nodes().into_iter().map(|n| n.name).collect();
            if let Some(n) = &node {
                if !names.contains(n) {
                    return Err(miette::miette!(
                        "node `{n}` is not in target {}; nodes: {}",
                        target.path.display(),
                        names.join(", ")
                    ));
                }
                names = vec![n.clone()];
            }
            let ds = Arc::new(ds);
            let opts = vacsine_scap::Options {
                container_as_machine,
            };
            let mut tasks = Vec::new();
            for name in names {
                let Some(ops) = site.as_site().node_ops(&name) else {
                    return Err(miette::miette!(
                        "node `{name}` has no operations in its driver"
                    ));
                };
                let (ds, opts, profile) = (ds.clone(), opts.clone(), profile.clone());
                let node_name = name.clone();
                let rt = tokio::runtime::Handle::current();
                tasks.push((
                    name,
                    tokio::task::spawn_blocking(move || {
                        let sys = vacsine_scap::node::NodeSystem::new(ops, rt);
                        let t = Instant::now();
                        let start = chrono::Utc::now();
                        let r = vacsine_scap::evaluate(&ds, &profile, &sys, &opts);
                        let end = chrono::Utc::now();
                        let ms = t.elapsed().as_secs_f64() * 1000.0;
                        let execs = sys.execs.load(std::sync::atomic::Ordering::Relaxed);
                        let info =
                            want_docs.then(|| vacsine_scap::results::target_info(&node_name, &sys));
                        (r, ms, execs, (start, end, info))
                    }),
                ));
            }
            let mut code = EXIT_OK;
            let several = tasks.len() > 1;
            for (name, task) in tasks {
                let (r, ms, execs, (start, end, info)) = task
                    .await
                    .map_err(|e| miette::miette!("evaluation of node `{name}` stopped: {e}"))?;
                let rep = r.map_err(|e| miette::miette!("{e}"))?;
                let written = match (&source, info) {
                    (Some(src), Some(target)) => crate::scapdocs::write(
                        src,
                        &ds,
                        &vacsine_scap::results::Run {
                            report: &rep,
                            target,
                            start,
                            end,
                        },
                        tailoring.as_ref(),
                        results.as_deref(),
                        arf.as_deref(),
                        several,
                    )?,
                    _ => Vec::new(),
                };
                let failed = rep
                    .rules
                    .iter()
                    .any(|r| matches!(r.outcome, Outcome::Fail | Outcome::Error));
                if failed {
                    code = EXIT_FAILURES;
                }
                match format {
                    SimpleFormat::Json => {
                        let mut v = serde_json::json!({
                            "node": name, "report": rep,
                            "timing": {"load_ms": parse_ms, "cached": cached, "evaluate_ms": ms, "node_execs": execs},
                        });
                        for (kind, path) in &written {
                            v[*kind] = serde_json::json!(path.display().to_string());
                        }
                        print_json_line(&v)
                    }
                    SimpleFormat::Human => {
                        let mut s = human(&name, &rep, parse_ms, cached, ms, execs);
                        s.push_str(&crate::scapdocs::written_line(&written));
                        print(&s)
                    }
                }
            }
            Ok(code)
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
        s.push_str(&format!(
            "  {:<13} {:<7} {:<48} {}\n",
            r.outcome.as_str(),
            r.severity,
            short(&r.id),
            r.title
        ));
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
    }
    let summary: Vec<String> = rep
        .summary
        .iter()
        .map(|(o, n)| format!("{} {n}", o.as_str()))
        .collect();
    s.push_str(&format!("summary: {}\n", summary.join(", ")));
    s.push_str("controls (satisfied / failed / incomplete / not applicable):\n");
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
