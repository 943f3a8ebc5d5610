//! Command implementations. Every command returns its exit code; errors are rendered here.

use crate::cli::*;
use crate::progress::Progress;
use miette::Report as Diag;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vacsine_core::doc::{Document, LoadError};
use vacsine_core::driver::{DriverError, DriverErrorKind, ResolvedSite};
use vacsine_enforce::check::check_site;
use vacsine_enforce::inputs::{self, load_inputs, Inputs};
use vacsine_enforce::report;

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_FAILURES: i32 = 2;
/// The orchestrator did not take a submission within `--retry-for` (unreachable or
/// unavailable all along).
pub const EXIT_UNREACHABLE: i32 = 3;

/// Exit code of a command line clap refused: usage errors are errors (1), not "failures
/// remain" (clap's own default, 2); `--help` and `--version` succeed.
pub fn usage_exit_code(e: &clap::Error) -> i32 {
    if e.use_stderr() {
        EXIT_ERROR
    } else {
        EXIT_OK
    }
}

/// Whether errors are printed as JSON on stdout (`--format json`, `sarif`) rather than as
/// human diagnostics on stderr. Decided once, in [`dispatch`], from the command's format.
static JSON_ERRORS: AtomicBool = AtomicBool::new(false);

/// Whether a command line asks for machine-readable output, so its errors must be too.
fn wants_json_errors(cmd: &Command) -> bool {
    let machine = |f: &Format| matches!(f, Format::Json | Format::Sarif);
    let simple = |f: &SimpleFormat| *f == SimpleFormat::Json;
    match cmd {
        Command::Demo { format, .. }
        | Command::Check { format, .. }
        | Command::Enforce { format, .. } => machine(format),
        Command::Plan { format, .. }
        | Command::Validate { format, .. }
        | Command::Sandbox { format, .. }
        | Command::Run { format, .. }
        | Command::Runs { format, .. }
        | Command::Logs { format, .. }
        | Command::Watch { format, .. } => simple(format),
        Command::Scap { action } => match action {
            ScapAction::Profiles { format, .. } | ScapAction::Eval { format, .. } => simple(format),
        },
        Command::Site { format, .. }
        | Command::Status { format, .. }
        | Command::Push { format, .. }
        | Command::Registry { format, .. }
        | Command::Decisions { format, .. }
        | Command::Bouncer { format, .. }
        | Command::Events { format, .. }
        | Command::Approvals { format, .. }
        | Command::Approve { format, .. }
        | Command::Deny { format, .. }
        | Command::Pin { format, .. }
        | Command::Gc { format, .. } => simple(format),
        Command::Schema { .. } | Command::Orchestrator { .. } | Command::Agent { .. } => false,
    }
}

pub async fn dispatch(cli: Cli) -> i32 {
    JSON_ERRORS.store(wants_json_errors(&cli.command), Ordering::Relaxed);
    let r = match cli.command {
        Command::Demo {
            action,
            format,
            report,
        } => demo(action, format, &report).await,
        Command::Validate {
            files,
            catalog,
            format,
        } => Ok(validate(&files, &catalog, format).await),
        Command::Check { io, format } => match (io.scap, io.profile, io.policy) {
            (Some(datastream), Some(profile), _) => {
                crate::scapcmd::check_scap(
                    datastream,
                    profile,
                    io.target,
                    io.container_as_machine,
                    crate::scapcmd::Documents {
                        tailoring: io.tailoring,
                        results: io.results,
                        arf: io.arf,
                    },
                    format,
                )
                .await
            }
            (_, _, policy) => {
                let io = PolicyTarget {
                    policy: policy.unwrap_or_default(),
                    target: io.target,
                    catalog: io.catalog,
                };
                check(&io, format).await
            }
        },
        Command::Scap { action } => crate::scapcmd::scap(action).await,
        Command::Plan { io, format } => plan(&io, format).await,
        Command::Enforce {
            io,
            report,
            format,
            force,
            require_persistent,
            site: Some(site),
            detach,
            conn,
            ..
        } => {
            let at = crate::siteenforce::AtSite {
                site,
                detach,
                force,
                require_persistent,
            };
            crate::siteenforce::enforce_at_site(&io, &at, report.as_deref(), format, &conn).await
        }
        Command::Enforce {
            io,
            report,
            format,
            keep_sandbox,
            force,
            require_persistent,
            all_or_nothing,
            ..
        } => {
            let flags = EnforceFlags {
                keep_sandbox,
                force,
                require_persistent,
                all_or_nothing,
            };
            enforce(&io, report.as_deref(), format, flags).await
        }
        Command::Sandbox { action, format } => sandbox(action, format).await,
        Command::Schema { kind } => schema(kind),
        Command::Pin { cert, format } => pin(&cert, format),
        Command::Run {
            workflow,
            inputs,
            catalog,
            format,
            site: Some(site),
            detach,
            conn,
            ..
        } => {
            crate::orch::run_at_site(workflow, &site, inputs, catalog, detach, &conn, format).await
        }
        Command::Run {
            workflow,
            target,
            inputs,
            catalog,
            nodes,
            resume,
            format,
            ..
        } => crate::runcmd::run(workflow, target, inputs, catalog, nodes, resume, format).await,
        Command::Runs {
            limit,
            site,
            all_sites,
            status,
            before,
            conn,
            format,
        } => {
            if site.is_some() || all_sites {
                crate::orch::runs(&conn, site, status, before, limit, format).await
            } else if status.is_some() || before.is_some() {
                Err(miette::miette!(
                    help = "add --site SITE or --all-sites",
                    "--status and --before page through the orchestrator's runs"
                ))
            } else {
                crate::runcmd::runs(limit, format)
            }
        }
        Command::Logs {
            run_id,
            conn,
            format,
        } => {
            if crate::runcmd::has_local_records(&run_id) {
                crate::runcmd::logs(&run_id, format)
            } else if conn.url.is_some() || conn.data.join("operator.json").exists() {
                crate::orch::logs(&conn, &run_id, format).await
            } else {
                crate::runcmd::logs(&run_id, format)
            }
        }
        Command::Watch {
            io,
            format,
            recheck_timeout,
        } => {
            crate::watch::watch(&io, format, std::time::Duration::from_secs(recheck_timeout)).await
        }
        Command::Orchestrator {
            listen,
            listen_plain,
            tls_cert,
            tls_key,
            data,
            lease_ttl_ms,
            database,
            max_image_mb,
            max_connections_per_client,
            retention,
            metrics_listen,
            loki_url,
            loki_buffer,
            loki_batch,
            taxii,
            bouncer_listen,
        } => match taxii.feeds() {
            Err(e) => Err(miette::miette!("{e:#}")),
            Ok(taxii) => {
                let loki = loki_url.map(|url| vacsine_orch::loki::LokiConfig {
                    url,
                    buffer: loki_buffer,
                    batch: loki_batch,
                    spool: data.join(vacsine_orch::loki::SPOOL),
                });
                crate::orch::orchestrator(crate::orch::OrchestratorArgs {
                    listen,
                    listen_plain,
                    tls_files: tls_cert.zip(tls_key),
                    data,
                    lease_ttl_ms,
                    database,
                    max_image_bytes: max_image_mb.saturating_mul(1 << 20),
                    max_connections_per_client,
                    retention: retention.schedule(),
                    metrics_listen,
                    loki,
                    taxii,
                    bouncer_listen,
                })
                .await
            }
        },
        Command::Agent {
            action:
                Some(crate::cli::AgentAction::Run {
                    workflow,
                    inputs,
                    format,
                }),
            data,
            ..
        } => crate::orch::agent_run(&workflow, &inputs, format, &data).await,
        Command::Agent {
            action:
                Some(crate::cli::AgentAction::Event {
                    event_type,
                    payload,
                    payload_file,
                    source,
                    id,
                    format,
                }),
            data,
            ..
        } => {
            crate::orch::agent_event(
                &event_type,
                crate::orch::PayloadFrom::new(payload, payload_file),
                &source,
                id,
                format,
                &data,
            )
            .await
        }
        Command::Agent {
            action:
                Some(crate::cli::AgentAction::Ingest {
                    file,
                    from,
                    follow: true,
                    format,
                }),
            data,
            ..
        } => crate::responsecmd::agent_follow(&file, from.as_deref(), format, &data).await,
        Command::Agent {
            action:
                Some(crate::cli::AgentAction::Ingest {
                    file, from, format, ..
                }),
            data,
            ..
        } => crate::responsecmd::agent_ingest(&file, from.as_deref(), format, &data).await,
        Command::Bouncer {
            action,
            conn,
            format,
        } => crate::responsecmd::bouncer(action, &conn, format).await,
        Command::Decisions {
            action,
            site,
            active,
            conn,
            format,
        } => crate::responsecmd::decisions(action, site, active, &conn, format).await,
        Command::Events {
            site,
            limit,
            conn,
            format,
        } => crate::responsecmd::events(site, limit, &conn, format).await,
        Command::Approvals { conn, format } => crate::approvalcmd::list(&conn, format).await,
        Command::Approve { id, conn, format } => {
            crate::approvalcmd::settle(&id, true, &conn, format).await
        }
        Command::Deny { id, conn, format } => {
            crate::approvalcmd::settle(&id, false, &conn, format).await
        }
        Command::Agent {
            action: Some(crate::cli::AgentAction::Status { format }),
            data,
            ..
        } => crate::orch::agent_status(format, &data),
        Command::Agent {
            action: Some(crate::cli::AgentAction::Preflight),
            orchestrator,
            intake_key,
            pin,
            data,
            ..
        } => Ok(crate::orch::preflight(orchestrator, pin, intake_key.is_some(), &data).await),
        Command::Agent {
            action: None,
            orchestrator,
            intake_key,
            name,
            pin,
            data,
            retention,
            decoys,
        } => {
            crate::orch::agent(
                orchestrator,
                intake_key,
                name,
                pin,
                data,
                retention.schedule(),
                decoys,
            )
            .await
        }
        Command::Gc {
            data,
            database,
            dry_run,
            keep,
            format,
        } => crate::gccmd::gc(&data, database, dry_run, keep.policy(), format).await,
        Command::Site {
            action,
            conn,
            format,
        } => crate::orch::site(action, &conn, format).await,
        Command::Status { conn, format } => crate::orch::status(&conn, format).await,
        Command::Push {
            files,
            conn,
            format,
        } => match crate::registrycmd::image_refs(&files) {
            Some(refs) => crate::registrycmd::push_images(refs, &conn, format).await,
            None => crate::registrycmd::push(files, &conn, format).await,
        },
        Command::Registry {
            action: crate::cli::RegistryAction::List,
            conn,
            format,
        } => crate::registrycmd::list(&conn, format).await,
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            let gave_up = e.downcast_ref::<crate::orch::GaveUp>().is_some();
            let code = report_error(e);
            if gave_up {
                EXIT_UNREACHABLE
            } else {
                code
            }
        }
    }
}

/// A located error as JSON: message, help, file, line, column.
fn load_error_json(l: &LoadError) -> serde_json::Value {
    serde_json::json!({
        "message": l.message,
        "help": l.help,
        "file": l.file,
        "line": l.line,
        "column": l.column,
    })
}

/// An error as JSON: located when it is a [`LoadError`], else its message and help.
fn error_json(e: &miette::Report) -> serde_json::Value {
    match e.downcast_ref::<LoadError>() {
        Some(l) => load_error_json(l),
        None => serde_json::json!({
            "message": e.to_string(),
            "help": e.help().map(|h| h.to_string()),
        }),
    }
}

/// An error object on one line of stdout: valid JSON for the commands that print one
/// document and one line of the JSON Lines that `run` and `logs` print.
pub(crate) fn print_json_line(v: &serde_json::Value) {
    print(&format!("{v}\n"));
}

/// Print an error that ends the command (as `{"error": {...}}` on stdout under `--format
/// json`, as a diagnostic on stderr otherwise) and return the error exit code.
pub fn report_error(e: miette::Report) -> i32 {
    if JSON_ERRORS.load(Ordering::Relaxed) {
        print_json_line(&serde_json::json!({ "error": error_json(&e) }));
    } else {
        eprintln!("{e:?}");
    }
    EXIT_ERROR
}

/// Print located diagnostics and return the error exit code. Under `--format json`: one
/// `{"error": {...}}` object for one problem, `{"errors": [...]}` for several.
pub fn print_diagnostics(errors: Vec<LoadError>) -> i32 {
    if JSON_ERRORS.load(Ordering::Relaxed) {
        let mut v: Vec<_> = errors.iter().map(load_error_json).collect();
        if v.len() == 1 {
            print_json_line(&serde_json::json!({ "error": v.remove(0) }));
        } else {
            print_json_line(&serde_json::json!({ "errors": v }));
        }
        return EXIT_ERROR;
    }
    let n = errors.len();
    for e in errors {
        eprintln!("{:?}", Diag::new(e));
    }
    eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
    EXIT_ERROR
}

pub(crate) fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

pub(crate) fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => print(&format!("{s}\n")),
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

/// Where Vacsine keeps its journal: `$VACSINE_HOME`, else `$XDG_DATA_HOME/vacsine`, else
/// `~/.local/share/vacsine`.
pub fn data_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("VACSINE_HOME") {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("vacsine");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/vacsine"),
        None => PathBuf::from(".vacsine"),
    }
}

pub fn journal_path() -> miette::Result<PathBuf> {
    let d = data_dir();
    std::fs::create_dir_all(&d).map_err(|e| {
        miette::miette!(
            help = "set VACSINE_HOME to a writable folder",
            "cannot create data folder {}: {e}",
            d.display()
        )
    })?;
    Ok(d.join("journal.db"))
}

/// One firewall ruleset to dry-run with `nft -c`, and where a failure is reported.
struct RulesetCheck<'a> {
    source: &'a vacsine_core::doc::SourceFile,
    line: u64,
    column: u64,
    /// What asked for it (`requirement `r` on node `n`, fix `f``), or empty for a step
    /// that needs no input.
    context: String,
    /// The fix's inputs, for the help text.
    inputs: Option<serde_json::Map<String, serde_json::Value>>,
    ruleset: vacsine_engine::FirewallRuleset,
}

/// Dry-run every ruleset with `nft -c` (nothing is loaded; see
/// `vacsine_engine::executor::nft_check`), each distinct script once. Returns the located
/// errors and the warnings (`nft` not available here: said once, and the command goes on).
async fn nft_dry_run(checks: Vec<RulesetCheck<'_>>) -> (Vec<LoadError>, Vec<String>) {
    use vacsine_engine::executor::{nft_check, NftCheck};
    let mut errors = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut seen: std::collections::HashMap<String, NftCheck> = Default::default();
    for c in checks {
        let r = &c.ruleset;
        let step = format!("workflow `{}`, step `{}`", r.workflow, r.step);
        let head = if c.context.is_empty() {
            step.clone()
        } else {
            format!("{} ({step})", c.context)
        };
        let with = c
            .inputs
            .as_ref()
            .map(|i| format!(" with inputs {}", serde_json::Value::Object(i.clone())))
            .unwrap_or_default();
        let script = match &r.script {
            Ok(s) => s,
            Err(e) => {
                errors.push(LoadError::at(
                    c.source,
                    c.line,
                    c.column,
                    format!("{head}: the firewall step would fail{with}: {e}"),
                    Some(
                        "correct the fix's `with:` values or the workflow's firewall arguments"
                            .into(),
                    ),
                ));
                continue;
            }
        };
        let verdict = match seen.get(script) {
            Some(v) => v.clone(),
            None => {
                let v = nft_check(script).await;
                seen.insert(script.clone(), v.clone());
                v
            }
        };
        match verdict {
            NftCheck::Loads => {}
            NftCheck::Rejected(msg) => errors.push(LoadError::at(
                c.source,
                c.line,
                c.column,
                format!("{head}: the nft ruleset it renders{with} does not load (`nft -c`): {msg}"),
                Some(format!(
                    "the ruleset was checked with `nft -c` before anything runs; correct the fix's `with:` values or the rules of workflow `{}`.\nRuleset:\n{script}",
                    r.defined_in
                )),
            )),
            NftCheck::Unchecked(why) => warnings.push(format!("{head}: not checked: {why}")),
            NftCheck::Unavailable(why) => {
                // Said once; no other ruleset can be checked either.
                warnings.push(why);
                break;
            }
        }
    }
    (errors, warnings)
}

/// Whether a value holds template syntax anywhere (it is decided only at run time).
fn has_template(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains("{{") || s.contains("{%"),
        serde_json::Value::Array(a) => a.iter().any(has_template),
        serde_json::Value::Object(o) => o.values().any(has_template),
        _ => false,
    }
}

/// The firewall rulesets `validate` can render without a site: the catalog's firewall steps
/// that need no input, and the fixes of each policy whose `with:` values are literal.
fn validate_ruleset_checks<'a>(
    docs: &'a [inputs::Loaded<Document>],
    cat: &'a inputs::Catalog,
    ecat: &vacsine_engine::Catalog,
) -> Vec<RulesetCheck<'a>> {
    let mut checks = Vec::new();
    for w in cat.workflows.values() {
        for r in vacsine_engine::firewall_rulesets(&w.doc, &Default::default(), ecat) {
            let Some(src) = cat.workflows.get(&r.defined_in) else {
                continue;
            };
            checks.push(RulesetCheck {
                source: &src.source,
                line: r.line,
                column: r.column,
                context: String::new(),
                inputs: None,
                ruleset: r,
            });
        }
    }
    for d in docs {
        let Document::Policy(p) = &d.doc else {
            continue;
        };
        for req in &p.spec.requirements {
            for fix in &req.fixes {
                let Some(w) = cat.workflows.get(&fix.uses.value) else {
                    continue;
                };
                let inputs: serde_json::Map<String, serde_json::Value> = fix
                    .with
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect();
                if inputs.is_empty() || inputs.values().any(has_template) {
                    continue;
                }
                for r in vacsine_engine::firewall_rulesets(&w.doc, &inputs, ecat) {
                    checks.push(RulesetCheck {
                        source: &d.source,
                        line: fix.uses.line,
                        column: fix.uses.column,
                        context: format!(
                            "requirement `{}`, fix `{}`",
                            req.id.value, fix.uses.value
                        ),
                        inputs: Some(inputs.clone()),
                        ruleset: r,
                    });
                }
            }
        }
    }
    checks
}

async fn validate(files: &[PathBuf], catalog: &[PathBuf], format: SimpleFormat) -> i32 {
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    for f in files {
        match inputs::load_any(f) {
            Ok(d) => docs.push(d),
            Err(e) => errors.push(e),
        }
    }
    // Catalog: explicit folders, the policies' catalogs, and workflow files given.
    let mut cat = inputs::Catalog::default();
    let mut extra_problems = Vec::new();
    for c in catalog {
        if c.is_dir() {
            cat.add_dir(c, &mut extra_problems);
        } else {
            cat.add_file(c, &mut extra_problems);
        }
    }
    // `spec.import`: the profile's rules become requirements, their fixes catalog workflows.
    let mut generated = Vec::new();
    for d in &mut docs {
        if let Document::Policy(p) = &d.doc {
            let mut lp = inputs::Loaded {
                doc: p.clone(),
                source: d.source.clone(),
                path: d.path.clone(),
            };
            lp.doc
                .rebase_paths(d.path.parent().unwrap_or_else(|| Path::new("")));
            errors.extend(inputs::scap_check_problems(&lp));
            if p.spec.import.is_none() {
                continue;
            }
            match inputs::expand_import(&mut lp) {
                Ok(w) => {
                    generated.extend(w);
                    d.doc = Document::Policy(lp.doc);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    for w in generated {
        cat.add_generated(w, &mut extra_problems);
    }
    for d in &docs {
        match &d.doc {
            Document::Policy(p) => {
                let base = d.path.parent().unwrap_or(Path::new("."));
                for dir in &p.spec.catalog {
                    cat.add_dir(&base.join(dir), &mut extra_problems);
                }
            }
            Document::Workflow(w) => {
                cat.workflows
                    .entry(w.metadata.name.value.clone())
                    .or_insert_with(|| inputs::Loaded {
                        doc: w.clone(),
                        source: d.source.clone(),
                        path: d.path.clone(),
                    });
            }
            Document::Target(_) => {}
        }
    }
    errors.append(&mut extra_problems);
    let targets: Vec<&vacsine_core::target::Target> = docs
        .iter()
        .filter_map(|d| match &d.doc {
            Document::Target(t) => Some(t),
            _ => None,
        })
        .collect();
    let idx = cat.index();
    let mut warnings: Vec<String> = Vec::new();
    for d in &docs {
        match &d.doc {
            Document::Policy(p) => {
                let (probs, deprecated) = vacsine_core::validate::Problem::split(
                    vacsine_core::validate::validate_policy(p, &idx, targets.first().copied()),
                );
                errors.extend(probs.into_iter().map(|x| x.into_error(&d.source)));
                for w in deprecated {
                    let e = w.into_error(&d.source);
                    warnings.push(format!(
                        "{}:{}:{}: {}{}",
                        e.file,
                        e.line,
                        e.column,
                        e.message,
                        e.help.map(|h| format!(" ({h})")).unwrap_or_default()
                    ));
                }
            }
            Document::Target(t) => {
                let probs = vacsine_core::validate::validate_target(t);
                errors.extend(probs.into_iter().map(|x| x.into_error(&d.source)));
            }
            Document::Workflow(_) => {}
        }
    }
    // Every catalog workflow, by the one workflow validator (structure, executors, templates).
    let ecat = vacsine_enforce::engine_catalog(&cat);
    for w in cat.workflows.values() {
        for p in vacsine_engine::validate_workflow(&w.doc, &ecat) {
            errors.push(p.into_error(&w.source));
        }
    }
    // Firewall rulesets that can be rendered without a site are dry-run with `nft -c`.
    let (mut nft_errors, nft_warnings) =
        nft_dry_run(validate_ruleset_checks(&docs, &cat, &ecat)).await;
    warnings.extend(nft_warnings);
    errors.append(&mut nft_errors);
    errors.sort_by(|a, b| {
        (a.file.as_str(), a.line, a.column).cmp(&(b.file.as_str(), b.line, b.column))
    });
    errors.dedup_by(|a, b| {
        a.file == b.file && a.line == b.line && a.column == b.column && a.message == b.message
    });
    if format == SimpleFormat::Json {
        let v: Vec<_> = errors
            .iter()
            .map(|e| serde_json::json!({"file": e.file, "line": e.line, "column": e.column, "message": e.message, "help": e.help}))
            .collect();
        print_json(
            &serde_json::json!({"valid": v.is_empty(), "documents": docs.len(), "workflows": cat.workflows.len(), "problems": v, "warnings": warnings}),
        );
        return if errors.is_empty() {
            EXIT_OK
        } else {
            EXIT_ERROR
        };
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if errors.is_empty() {
        for d in &docs {
            print(&format!(
                "ok  {} ({} {})\n",
                d.path.display(),
                d.doc.kind(),
                d.doc.name()
            ));
        }
        print(&format!(
            "{} documents valid ({} catalog workflows resolved)\n",
            docs.len(),
            cat.workflows.len()
        ));
        EXIT_OK
    } else {
        print_diagnostics(errors)
    }
}

pub(crate) fn load(io: &PolicyTarget) -> Result<Inputs, i32> {
    load_inputs(&io.policy, &io.target, &io.catalog).map_err(print_diagnostics)
}

async fn connect_site(inputs: &Inputs) -> miette::Result<Arc<dyn ResolvedSite>> {
    crate::drivers::resolve(&inputs.target.doc)
        .await
        .map_err(|e| site_error(inputs, &e))
}

/// A driver error, located in the target file when it is about a container it names.
fn site_error(inputs: &Inputs, e: &DriverError) -> miette::Report {
    if let DriverErrorKind::NodeMissing { handle: container } = e.kind() {
        let spec = &inputs.target.doc.spec;
        let at = spec
            .nodes
            .iter()
            .filter_map(|n| n.container.as_ref())
            .chain(spec.vantage_points.iter().map(|v| &v.container))
            .find(|c| c.value == *container);
        if let Some(c) = at {
            let err = LoadError::at(&inputs.target.source, c.line, c.column, e.to_string(), None);
            return miette::Report::new(err);
        }
    }
    miette::miette!("{e}")
}

async fn check(io: &PolicyTarget, format: Format) -> miette::Result<i32> {
    let inputs = match load(io) {
        Ok(i) => i,
        Err(code) => return Ok(code),
    };
    let site = connect_site(&inputs).await?;
    let results = check_site(&inputs.policy.doc, site.as_site()).await;
    let name = inputs.policy.doc.metadata.name.value.clone();
    match format {
        Format::Human => print(&report::check_human(&results)),
        Format::Json => print_json(&report::check_json(&results)),
        Format::Junit => print(&report::check_junit(&name, &results)),
        Format::Sarif => print_json(&report::check_sarif(
            &io.policy.display().to_string(),
            &results,
        )),
    }
    Ok(if results.iter().any(|r| r.outcome.is_problem()) {
        EXIT_FAILURES
    } else {
        EXIT_OK
    })
}

async fn plan(io: &PolicyTarget, format: SimpleFormat) -> miette::Result<i32> {
    let inputs = match load(io) {
        Ok(i) => i,
        Err(code) => return Ok(code),
    };
    let site = connect_site(&inputs).await?;
    let results = check_site(&inputs.policy.doc, site.as_site()).await;
    let plan = vacsine_core::plan::plan(
        &inputs.policy.doc,
        &inputs.target.doc.metadata.name.value,
        &site.nodes(),
        &vacsine_enforce::check::findings(&results),
        &inputs.catalog.index(),
    );
    // Every firewall step of the plan, rendered with the fix's inputs, must load: dry-run
    // with `nft -c` before anything is printed.
    let ecat = vacsine_enforce::engine_catalog(&inputs.catalog);
    let mut checks = Vec::new();
    for i in &plan.items {
        let Some(w) = inputs.catalog.workflows.get(&i.workflow) else {
            continue;
        };
        // Located at the fix in the policy (the first requirement it fixes).
        let fix = inputs
            .policy
            .doc
            .spec
            .requirements
            .iter()
            .filter(|r| i.requirements.contains(&r.id.value))
            .flat_map(|r| r.fixes.iter().map(move |f| (r, f)))
            .find(|(_, f)| f.uses.value == i.workflow);
        let (line, column) = fix
            .map(|(_, f)| (f.uses.line, f.uses.column))
            .unwrap_or((0, 0));
        for r in vacsine_engine::firewall_rulesets(&w.doc, &i.inputs, &ecat) {
            checks.push(RulesetCheck {
                source: &inputs.policy.source,
                line,
                column,
                context: format!(
                    "requirement `{}` on node `{}`, fix `{}`",
                    i.requirements.join("`, `"),
                    i.node,
                    i.workflow
                ),
                inputs: Some(i.inputs.clone()),
                ruleset: r,
            });
        }
    }
    let (errors, warnings) = nft_dry_run(checks).await;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if !errors.is_empty() {
        return Ok(print_diagnostics(errors));
    }
    match format {
        SimpleFormat::Json => print_json(&plan),
        SimpleFormat::Human => {
            let mut out = String::new();
            for i in &plan.items {
                out.push_str(&format!(
                    "# + {} on {}: fixes {} (strategy {}, disruption {})\n",
                    i.workflow,
                    i.node,
                    i.requirements.join(", "),
                    i.strategy,
                    i.disruption
                ));
            }
            for u in &plan.unfixable {
                out.push_str(&format!(
                    "# ! {} on {} cannot be fixed: {}\n",
                    u.requirement, u.node, u.reason
                ));
            }
            if plan.items.is_empty() {
                out.push_str("# nothing to remediate\n");
            }
            let yaml = serde_saphyr::to_string(&plan.workflow)
                .map_err(|e| miette::miette!("cannot render the plan as YAML: {e}"))?;
            out.push_str(&yaml);
            print(&out);
        }
    }
    Ok(if plan.unfixable.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILURES
    })
}

/// The gates and switches of `vacsine enforce`.
#[derive(Debug, Clone, Copy, Default)]
struct EnforceFlags {
    keep_sandbox: bool,
    force: bool,
    require_persistent: bool,
    all_or_nothing: bool,
}

async fn enforce(
    io: &crate::cli::EnforceInputs,
    report_path: Option<&Path>,
    format: Format,
    flags: EnforceFlags,
) -> miette::Result<i32> {
    let (loaded, shown) = match (&io.scap, &io.profile, &io.policy) {
        (Some(ds), Some(profile), _) => {
            let imp = inputs::ScapImportArgs {
                datastream: ds.clone(),
                profile: profile.clone(),
                tailoring: io.tailoring.clone(),
                rules: io.rules.clone(),
                container_as_machine: io.container_as_machine,
            };
            (
                inputs::load_scap_inputs(&imp, &io.target, &io.catalog),
                ds.clone(),
            )
        }
        (_, _, policy) => {
            let policy = policy.clone().unwrap_or_default();
            (load_inputs(&policy, &io.target, &io.catalog), policy)
        }
    };
    let inputs = match loaded {
        Ok(i) => i,
        Err(errors) => return Ok(print_diagnostics(errors)),
    };
    run_enforce(&inputs, &shown, report_path, format, flags).await
}

async fn run_enforce(
    inputs: &Inputs,
    policy_path: &Path,
    report_path: Option<&Path>,
    format: Format,
    flags: EnforceFlags,
) -> miette::Result<i32> {
    let driver =
        crate::drivers::for_target(&inputs.target.doc).map_err(|e| site_error(inputs, &e))?;
    let progress = Progress::new(false);
    let p2 = progress.clone();
    let slot = Arc::new(Mutex::new(None::<String>));
    let opts = vacsine_enforce::EnforceOptions {
        keep_sandbox: flags.keep_sandbox,
        force: flags.force,
        require_persistent: flags.require_persistent,
        all_or_nothing: flags.all_or_nothing,
        journal: Some(journal_path()?),
        progress: Some(Arc::new(move |m: &str| p2.say(m))),
        hook: None,
        sandbox_slot: Some(slot.clone()),
        ..Default::default()
    };
    let result = tokio::select! {
        r = vacsine_enforce::enforce(driver.as_ref(), inputs, &opts) => r,
        _ = tokio::signal::ctrl_c() => {
            progress.done();
            let id = slot.lock().ok().and_then(|s| s.clone());
            eprintln!("interrupted{}", id.as_ref().map(|i| format!(": removing sandbox {i}")).unwrap_or_default());
            if let Some(id) = id {
                sweep_sandbox(driver.as_ref(), &id).await;
            }
            return Ok(130);
        }
    };
    progress.done();
    let rep = result.map_err(|e| match &e {
        vacsine_enforce::EnforceError::Driver(d) => site_error(inputs, d),
        _ => miette::miette!("{e}"),
    })?;
    show_enforce_report(&rep, policy_path, report_path, format)
}

/// Print an enforce report as `format` (and write it to `report_path`); its exit code.
pub(crate) fn show_enforce_report(
    rep: &vacsine_enforce::Report,
    policy_path: &Path,
    report_path: Option<&Path>,
    format: Format,
) -> miette::Result<i32> {
    if let Some(path) = report_path {
        write_atomic(
            path,
            &serde_json::to_vec_pretty(&rep).map_err(|e| miette::miette!("{e}"))?,
        )?;
    }
    match format {
        Format::Human => print(&report::enforce_human(rep)),
        Format::Json => print_json(rep),
        Format::Junit => print(&report::enforce_junit(rep)),
        Format::Sarif => print_json(&report::enforce_sarif(
            &policy_path.display().to_string(),
            rep,
        )),
    }
    if let (Some(p), Format::Human) = (report_path, format) {
        print(&format!("Report written to {}\n", p.display()));
    }
    Ok(rep.exit_code())
}

/// Remove sandbox `id` of an interrupted enforce. Requests in flight when the clone was
/// interrupted (a commit, a create) can still complete on the backend: sweep until two passes
/// find nothing.
pub(crate) async fn sweep_sandbox(driver: &dyn vacsine_core::driver::Driver, id: &str) {
    let mut quiet = 0;
    for _ in 0..20 {
        match driver.teardown(id).await {
            Ok(removed) if removed.is_empty() => quiet += 1,
            Err(e) if *e.kind() == DriverErrorKind::Unreachable => break,
            _ => quiet = 0,
        }
        if quiet >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Write a file through a temporary sibling and a rename: never half-written.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> miette::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            miette::miette!("cannot write {}: {e}", path.display())
        })
}

async fn demo(
    action: Option<DemoAction>,
    format: Format,
    report_path: &Path,
) -> miette::Result<i32> {
    let docker = vacsine_docker::connect()
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    match action {
        Some(DemoAction::Down) => {
            let removed = vacsine_docker::demo::down(&docker)
                .await
                .map_err(|e| miette::miette!("{e}"))?;
            print(&format!("demo site removed ({} objects)\n", removed.len()));
            return Ok(EXIT_OK);
        }
        Some(DemoAction::Up) => {
            let p = Progress::new(false);
            build_demo_images(&docker, &p).await?;
            p.say("starting a fresh, non-compliant demo site");
            vacsine_docker::demo::up(&docker)
                .await
                .map_err(|e| miette::miette!("{e}"))?;
            p.done();
            print("demo site is up: try\n  vacsine check --policy examples/edge-site/policy.yaml --target examples/edge-site/target.yaml\n");
            return Ok(EXIT_OK);
        }
        None => {}
    }
    let root = find_examples()?;
    let policy = root.join("examples/edge-site/policy.yaml");
    let target = root.join("examples/edge-site/target.yaml");
    let inputs = match load_inputs(&policy, &target, &[]) {
        Ok(i) => i,
        Err(e) => return Ok(print_diagnostics(e)),
    };
    let p = Progress::new(false);
    build_demo_images(&docker, &p).await?;
    p.say("starting a fresh, non-compliant demo site (4 nodes + vantage point `outside`)");
    vacsine_docker::demo::up(&docker)
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    p.done();
    let code = run_enforce(
        &inputs,
        &policy,
        Some(report_path),
        format,
        EnforceFlags::default(),
    )
    .await?;
    if format == Format::Human {
        print("The demo site stays up for exploring: `vacsine check ...`; remove it with `vacsine demo down`.\n");
    }
    Ok(code)
}

/// Build the demo's images, telling the user what a first build (Debian packages, a minute
/// or two) is doing.
async fn build_demo_images(
    docker: &vacsine_docker::Docker,
    p: &std::sync::Arc<Progress>,
) -> miette::Result<()> {
    p.say("building demo images: Debian packages, cached after the first run");
    let say = p.clone();
    vacsine_docker::demo::images_with_progress(
        docker,
        std::sync::Arc::new(move |m: &str| say.say(m)),
    )
    .await
    .map_err(|e| miette::miette!("{e}"))?;
    Ok(())
}

/// The demo's files live in the repository: from the current folder or the binary's.
fn find_examples() -> miette::Result<PathBuf> {
    let mut candidates = vec![std::env::current_dir().unwrap_or_default()];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().map(Path::to_path_buf));
    }
    candidates
        .into_iter()
        .find(|d| d.join("examples/edge-site/policy.yaml").is_file())
        .ok_or_else(|| {
            miette::miette!(
                help = "run it from the repository root",
                "cannot find examples/edge-site/policy.yaml"
            )
        })
}

async fn sandbox(action: SandboxAction, format: SimpleFormat) -> miette::Result<i32> {
    let docker = vacsine_docker::connect()
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    match action {
        SandboxAction::List => {
            let list = vacsine_docker::sandbox::list(&docker)
                .await
                .map_err(|e| miette::miette!("{e}"))?;
            if format == SimpleFormat::Json {
                print_json(&list);
            } else if list.is_empty() {
                print("no sandbox\n");
            } else {
                print("SANDBOX            CONTAINERS  NETWORKS  VOLUMES  IMAGES\n");
                for s in &list {
                    print(&format!(
                        "{:<18} {:>10}  {:>8}  {:>7}  {:>6}\n",
                        s.id, s.containers, s.networks, s.volumes, s.images
                    ));
                }
            }
        }
        SandboxAction::Gc => {
            let removed = vacsine_docker::sandbox::gc(&docker)
                .await
                .map_err(|e| miette::miette!("{e}"))?;
            if format == SimpleFormat::Json {
                print_json(&removed);
            } else {
                print(&format!("removed {} sandbox objects\n", removed.len()));
            }
        }
    }
    Ok(EXIT_OK)
}

/// `vacsine pin FILE`: the pin of a certificate.
fn pin(cert: &std::path::Path, format: SimpleFormat) -> miette::Result<i32> {
    let pin = vacsine_orch::tls::pin_of_file(cert).map_err(|e| miette::miette!("{e:#}"))?;
    if format == SimpleFormat::Json {
        print_json(&serde_json::json!({ "pin": pin, "file": cert }));
    } else {
        println!("{pin}");
    }
    Ok(EXIT_OK)
}

fn schema(kind: SchemaKind) -> miette::Result<i32> {
    let s = match kind {
        SchemaKind::Policy => schemars::schema_for!(vacsine_core::policy::Policy),
        SchemaKind::Target => schemars::schema_for!(vacsine_core::target::Target),
        SchemaKind::Workflow => {
            let registry = vacsine_engine::executor::Registry::default();
            print_json(&vacsine_engine::reference::workflow_schema(&registry));
            return Ok(EXIT_OK);
        }
        SchemaKind::Executors => {
            let registry = vacsine_engine::executor::Registry::default();
            print!(
                "{}",
                vacsine_engine::reference::executor_reference(&registry)
            );
            return Ok(EXIT_OK);
        }
    };
    print_json(&s);
    Ok(EXIT_OK)
}
