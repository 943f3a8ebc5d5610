//! The one place a parsed command line becomes a call: [`dispatch`] routes each subcommand to
//! the module that implements it (one arm per subcommand, a route function where the arguments
//! choose between implementations) and maps the error that ends it to its exit code
//! ([`crate::exit`]). Printing lives in [`crate::output`]; no subcommand module imports from
//! here.

use crate::cli::*;
use crate::exit::Exit;
use crate::output::report_error;
use crate::{
    approvalcmd, checkcmd, enforcecmd, gccmd, orch, posturecmd, registrycmd, responsecmd, runcmd,
    scapcmd, toolcmd, usercmd, validatecmd, watch,
};

/// Whether a command line asks for machine-readable output, so its errors must be too.
fn wants_json_errors(cmd: &Command) -> bool {
    let machine = |f: &Format| matches!(f, Format::Json | Format::Sarif);
    let simple = |f: &SimpleFormat| *f == SimpleFormat::Json;
    match cmd {
        Command::Demo(DemoCli { format, .. })
        | Command::Check { format, .. }
        | Command::Enforce(EnforceCli { format, .. }) => machine(format),
        Command::Plan { format, .. }
        | Command::Validate(ValidateCli { format, .. })
        | Command::Sandbox { format, .. }
        | Command::Run(RunCli { format, .. })
        | Command::Runs(RunsCli { format, .. })
        | Command::Logs(LogsCli { format, .. })
        | Command::Watch(WatchCli { format, .. }) => simple(format),
        Command::Scap { action } => match action {
            ScapAction::Profiles { format, .. } | ScapAction::Eval { format, .. } => simple(format),
        },
        Command::Site(SiteCli { format, .. })
        | Command::Status { format, .. }
        | Command::Push(PushCli { format, .. })
        | Command::Registry(RegistryCli { format, .. })
        | Command::Decisions(DecisionsCli { format, .. })
        | Command::Bouncer(BouncerCli { format, .. })
        | Command::User(UserCli { format, .. })
        | Command::Events(EventsCli { format, .. })
        | Command::Posture(PostureCli { format, .. })
        | Command::Approvals { format, .. }
        | Command::Approve { format, .. }
        | Command::Deny { format, .. }
        | Command::Pin { format, .. }
        | Command::Gc(GcCli { format, .. }) => simple(format),
        Command::Schema { .. } | Command::Orchestrator(_) | Command::Agent(_) => false,
    }
}

/// Run the command line's subcommand; its exit code. An error that ends it is printed here
/// (JSON on stdout under `--format json`) and mapped by [`Exit::of_error`].
pub async fn dispatch(cli: Cli) -> Exit {
    crate::output::set_json_errors(wants_json_errors(&cli.command));
    let r = match cli.command {
        Command::Demo(a) => enforcecmd::demo(a.action, a.format, &a.report).await,
        Command::Validate(a) => Ok(validatecmd::validate(&a.files, &a.catalog, a.format).await),
        Command::Check { io, format } => check(io, format).await,
        Command::Scap { action } => scapcmd::scap(action).await,
        Command::Plan { io, format } => checkcmd::plan(&io, format).await,
        Command::Enforce(a) => enforce(a).await,
        Command::Sandbox { action, format } => toolcmd::sandbox(action, format).await,
        Command::Schema { kind } => toolcmd::schema(kind),
        Command::Pin { cert, format } => toolcmd::pin(&cert, format),
        Command::Run(a) => run(a).await,
        Command::Runs(a) => runs(a).await,
        Command::Logs(a) => logs(&a.run_id, &a.conn, a.format).await,
        Command::Watch(a) => watch::watch(&a).await,
        Command::Orchestrator(a) => orchestrator(a).await,
        Command::Agent(a) => agent(a).await,
        Command::Bouncer(a) => responsecmd::bouncer(a.action, &a.conn, a.format).await,
        Command::User(a) => usercmd::user(a.action, &a.conn, a.format).await,
        Command::Decisions(a) => responsecmd::decisions(a).await,
        Command::Events(a) => responsecmd::events(a.site, a.limit, &a.conn, a.format).await,
        Command::Posture(a) => posturecmd::posture(a).await,
        Command::Approvals { conn, format } => approvalcmd::list(&conn, format).await,
        Command::Approve { id, conn, format } => {
            approvalcmd::settle(&id, true, &conn, format).await
        }
        Command::Deny { id, conn, format } => approvalcmd::settle(&id, false, &conn, format).await,
        Command::Gc(a) => {
            gccmd::gc(&a.data, a.database, a.dry_run, a.keep.policy(), a.format).await
        }
        Command::Site(a) => orch::site(a.action, &a.conn, a.format).await,
        Command::Status { conn, format } => orch::status(&conn, format).await,
        Command::Push(a) => registrycmd::dispatch_push(a.files, &a.conn, a.format).await,
        Command::Registry(a) => registrycmd::dispatch_registry(a.action, &a.conn, a.format).await,
    };
    r.unwrap_or_else(report_error)
}

/// `vacsine runs`: the orchestrator's runs (`--site`, `--all-sites`), or this machine's.
async fn runs(a: RunsCli) -> miette::Result<Exit> {
    if a.site.is_some() || a.all_sites {
        orch::runs(&a.conn, a.site, a.status, a.before, a.limit, a.format).await
    } else if a.status.is_some() || a.before.is_some() {
        Err(miette::miette!(
            help = "add --site SITE or --all-sites",
            "--status and --before page through the orchestrator's runs"
        ))
    } else {
        runcmd::runs(a.limit, a.format)
    }
}

/// `vacsine check`: a SCAP profile (`--scap` and `--profile`) or a policy on a target.
async fn check(io: CheckInputs, format: Format) -> miette::Result<Exit> {
    match (io.scap, io.profile, io.policy) {
        (Some(datastream), Some(profile), _) => {
            let docs = crate::scapcmd::Documents {
                tailoring: io.tailoring,
                results: io.results,
                arf: io.arf,
            };
            crate::scapcmd::check_scap(
                datastream,
                profile,
                io.target,
                io.container_as_machine,
                docs,
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
            crate::checkcmd::check(&io, format).await
        }
    }
}

/// `vacsine enforce`: at a site through its agent (`--site`), or here.
async fn enforce(a: EnforceCli) -> miette::Result<Exit> {
    let report = a.report.as_deref();
    match a.site {
        Some(site) => {
            let at = crate::siteenforce::AtSite {
                site,
                detach: a.detach,
                force: a.force,
                require_persistent: a.require_persistent,
            };
            crate::siteenforce::enforce_at_site(&a.io, &at, report, a.format, &a.conn).await
        }
        None => {
            let flags = crate::enforcecmd::EnforceFlags {
                keep_sandbox: a.keep_sandbox,
                force: a.force,
                require_persistent: a.require_persistent,
                all_or_nothing: a.all_or_nothing,
            };
            crate::enforcecmd::enforce(&a.io, report, a.format, flags).await
        }
    }
}

/// `vacsine run`: at a site through the orchestrator (`--site`), or here.
async fn run(a: RunCli) -> miette::Result<Exit> {
    match a.site {
        Some(site) => {
            crate::orch::run_at_site(
                a.workflow, &site, a.inputs, a.catalog, a.detach, &a.conn, a.format,
            )
            .await
        }
        None => {
            let args = crate::runcmd::RunArgs {
                workflow: a.workflow,
                target: a.target,
                raw_inputs: a.inputs,
                catalog: a.catalog,
                node_choices: a.nodes,
                resume: a.resume,
                format: a.format,
            };
            crate::runcmd::run(args).await
        }
    }
}

/// `vacsine logs RUN_ID`: this machine's journal when it has the run, else the
/// orchestrator's (when one is configured).
async fn logs(run_id: &str, conn: &OperatorConn, format: SimpleFormat) -> miette::Result<Exit> {
    if crate::runcmd::has_local_records(run_id) {
        crate::runcmd::logs(run_id, format)
    } else if conn.url.is_some() || conn.data.join("operator.json").exists() {
        crate::orch::logs(conn, run_id, format).await
    } else {
        crate::runcmd::logs(run_id, format)
    }
}

/// `vacsine orchestrator`: its options as the server's configuration, then the server.
async fn orchestrator(a: OrchestratorCli) -> miette::Result<Exit> {
    let taxii = a.taxii.feeds().map_err(|e| miette::miette!("{e:#}"))?;
    let loki = a.loki_url.map(|url| vacsine_orch::loki::LokiConfig {
        url,
        buffer: a.loki_buffer,
        batch: a.loki_batch,
        spool: a.data.join(vacsine_orch::loki::SPOOL),
    });
    crate::orch::orchestrator(crate::orch::OrchestratorArgs {
        listen: a.listen,
        listen_plain: a.listen_plain,
        tls_files: a.tls_cert.zip(a.tls_key),
        data: a.data,
        lease_ttl_ms: a.lease_ttl_ms,
        database: a.database,
        max_image_bytes: a.max_image_mb.saturating_mul(1 << 20),
        max_connections_per_client: a.max_connections_per_client,
        retention: a.retention.schedule(),
        metrics_listen: a.metrics_listen,
        loki,
        taxii,
        bouncer_listen: a.bouncer_listen,
    })
    .await
}

/// `vacsine agent`: the agent loop, or one of its subcommands (all on its `--data` folder).
async fn agent(a: AgentCli) -> miette::Result<Exit> {
    let data = a.data;
    match a.action {
        None => {
            crate::orch::agent(
                a.orchestrator,
                a.intake_key,
                a.name,
                a.pin,
                data,
                a.retention.schedule(),
                a.decoys,
            )
            .await
        }
        Some(AgentAction::Preflight) => {
            Ok(crate::orch::preflight(a.orchestrator, a.pin, a.intake_key.is_some(), &data).await)
        }
        Some(AgentAction::Status { format }) => crate::orch::agent_status(format, &data),
        Some(AgentAction::Run {
            workflow,
            inputs,
            format,
        }) => crate::orch::agent_run(&workflow, &inputs, format, &data).await,
        Some(AgentAction::Event {
            event_type,
            payload,
            payload_file,
            source,
            id,
            format,
        }) => {
            let payload = crate::orch::PayloadFrom::new(payload, payload_file);
            crate::orch::agent_event(&event_type, payload, &source, id, format, &data).await
        }
        Some(AgentAction::Ingest {
            file,
            from,
            follow: true,
            format,
        }) => crate::responsecmd::agent_follow(&file, from.as_deref(), format, &data).await,
        Some(AgentAction::Ingest {
            file, from, format, ..
        }) => crate::responsecmd::agent_ingest(&file, from.as_deref(), format, &data).await,
    }
}
