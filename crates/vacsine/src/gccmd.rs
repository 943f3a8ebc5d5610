//! `vacsine gc`: the retention policy applied now, to an orchestrator's store (SQLite in its
//! data folder, or PostgreSQL with `--database`) or to an agent's data folder.

use crate::cli::SimpleFormat;
use crate::exit::Exit;
use crate::output::print_json;
use std::path::Path;
use vacsine_agent::gc::{agent_pass, is_agent_data, AgentReport};
use vacsine_engine::retention::Policy;
use vacsine_engine::retention::{human_bytes, runs_line};
use vacsine_orch::gc::{store_pass, StoreReport};

/// Which store a `vacsine gc` works on.
enum Target {
    Postgres(String),
    Sqlite(std::path::PathBuf),
    Agent,
}

fn target(data: &Path, database: Option<String>) -> miette::Result<Target> {
    let db = data.join("orchestrator.db");
    let database = database.filter(|d| !d.trim().is_empty());
    if database.is_some() && (db.is_file() || is_agent_data(data)) {
        return Err(miette::miette!(
            help = "to work on the folder, unset VACSINE_DATABASE_URL (or drop --database); to work on the PostgreSQL store, give --data a folder without a store",
            "{} holds a store of its own and --database (or VACSINE_DATABASE_URL) names a PostgreSQL store: which one is meant is not clear",
            data.display()
        ));
    }
    if let Some(url) = database {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(miette::miette!(
                help = "--database postgres://USER:PASSWORD@HOST:5432/DATABASE (or VACSINE_DATABASE_URL); without it, --data names the folder",
                "--database {}: only PostgreSQL URLs are supported",
                vacsine_orch::store::mask_url(&url)
            ));
        }
        return Ok(Target::Postgres(url));
    }
    if db.is_file() {
        return Ok(Target::Sqlite(db));
    }
    if is_agent_data(data) {
        return Ok(Target::Agent);
    }
    Err(miette::miette!(
        help = "give --data an orchestrator's data folder (it holds orchestrator.db) or an agent's (agent.db, journal.db), or --database URL for a PostgreSQL store",
        "{}: no orchestrator store and no agent data here",
        data.display()
    ))
}

pub async fn gc(
    data: &Path,
    database: Option<String>,
    dry_run: bool,
    policy: Policy,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let now = vacsine_contract::now_ms();
    let over = match target(data, database)? {
        Target::Postgres(url) => {
            let masked = vacsine_orch::store::mask_url(&url);
            let s = vacsine_orch::store::PgStore::connect(&url)
                .await
                .map_err(|e| {
                    miette::miette!("cannot open the PostgreSQL store at {masked}: {e}")
                })?;
            let what = format!("PostgreSQL store at {masked}");
            let r = store_pass(&s, &what, &policy, now, dry_run)
                .await
                .map_err(|e| miette::miette!("{what}: {e:#}"))?;
            print_store(&r, format);
            r.runs.over_limit_held
        }
        Target::Sqlite(p) => {
            let s = vacsine_orch::store::SqliteStore::open(&p)
                .map_err(|e| miette::miette!("opening {}: {e}", p.display()))?;
            let what = format!("SQLite store {}", p.display());
            let r = store_pass(&s, &what, &policy, now, dry_run)
                .await
                .map_err(|e| miette::miette!("{what}: {e:#}"))?;
            print_store(&r, format);
            r.runs.over_limit_held
        }
        Target::Agent => {
            let d = data.to_path_buf();
            let r = tokio::task::spawn_blocking(move || agent_pass(&d, &policy, now, dry_run))
                .await
                .map_err(|e| miette::miette!("{e}"))?
                .map_err(|e| miette::miette!("agent data {}: {e:#}", data.display()))?;
            print_agent(&r, format);
            r.journal.over_limit_held
        }
    };
    Ok(Exit::failures_if(over))
}

fn header(what: &str, policy: &Policy, dry_run: bool) {
    println!(
        "{}{what}",
        if dry_run {
            "dry run (nothing changed): "
        } else {
            ""
        }
    );
    println!("policy: {}", policy.describe());
}

fn print_store(r: &StoreReport, format: SimpleFormat) {
    if format == SimpleFormat::Json {
        print_json(r);
        return;
    }
    header(&r.store, &r.policy, r.dry_run);
    println!("{}", runs_line("runs", &r.runs, r.dry_run));
}

fn print_agent(r: &AgentReport, format: SimpleFormat) {
    if format == SimpleFormat::Json {
        print_json(r);
        return;
    }
    header(
        &format!("agent data {}", r.data.display()),
        &r.policy,
        r.dry_run,
    );
    println!("{}", runs_line("journal", &r.journal, r.dry_run));
    let a = &r.agent_db;
    let verb = if r.dry_run { "would remove" } else { "removed" };
    println!(
        "agent.db: {verb} {} acknowledged outbox item(s), {} bundle(s), {} expired trigger window(s){}",
        a.outbox_acknowledged_removed,
        a.bundles_removed,
        a.trigger_windows_removed,
        if r.dry_run {
            String::new()
        } else {
            format!("; file {} smaller", human_bytes(a.reclaimed_bytes))
        }
    );
    println!(
        "outbox: {} item(s) waiting to upload and {} refused for good, kept (nothing not uploaded is ever removed)",
        a.outbox_pending, a.outbox_refused
    );
}
