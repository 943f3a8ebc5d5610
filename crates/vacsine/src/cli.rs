//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "vacsine",
    version,
    about = "Verified security remediation for Cloud/Edge sites",
    long_about = "Vacsine enforces security policies on real systems: it checks a target, deduces a \
remediation workflow from the failed requirements, proves it in a sandbox clone of the target, \
applies it to the target, verifies, and rolls back when verification fails.",
    after_help = after_help()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Examples and the exit codes ([`crate::exit::HELP`]), after `-h` and `--help`.
fn after_help() -> String {
    format!(
        "{}\n\nExamples:\n  vacsine demo\n  vacsine check --policy examples/edge-site/policy.yaml --target examples/edge-site/target.yaml\n  vacsine enforce --policy examples/edge-site/policy.yaml --target examples/edge-site/target.yaml --report report.json",
        crate::exit::HELP
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables for people.
    Human,
    /// JSON (JSON Lines for logs).
    Json,
    /// JUnit XML for CI pipelines.
    Junit,
    /// SARIF 2.1.0 for code-scanning dashboards.
    Sarif,
}

/// `--format` of the commands that print no report: `human` or `json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimpleFormat {
    Human,
    Json,
}

/// Parse `--format` for commands without a report: `junit` and `sarif` are refused with the
/// commands that have them, rather than silently printing the human table.
pub fn simple_format(s: &str) -> Result<SimpleFormat, String> {
    match s {
        "human" => Ok(SimpleFormat::Human),
        "json" => Ok(SimpleFormat::Json),
        "junit" | "sarif" => Err(format!(
            "`{s}` is a report format of `check` and `enforce`; this command prints `human` or `json`"
        )),
        _ => Err("expected `human` or `json`".into()),
    }
}

/// Where `vacsine run` runs the steps that name no node (`runsOn`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeChoice {
    /// The node of the target with this name.
    Name(String),
    /// Every node of the target with this role.
    Role(String),
}

fn name_value(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((name, _)) if !name.is_empty() => Ok(s.to_string()),
        _ => Err("expected NAME=VALUE".into()),
    }
}

fn node_choice(s: &str) -> Result<NodeChoice, String> {
    match s.split_once('=') {
        Some(("role", r)) if !r.is_empty() => Ok(NodeChoice::Role(r.to_string())),
        None if !s.is_empty() => Ok(NodeChoice::Name(s.to_string())),
        _ => Err("expected a node name, or role=ROLE".into()),
    }
}

#[derive(Args, Debug, Clone)]
pub struct PolicyTarget {
    /// Policy file (kind: Policy).
    #[arg(long, short = 'p')]
    pub policy: PathBuf,
    /// Target system description (kind: Target).
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Extra catalog folders or workflow files (besides the policy's `spec.catalog`).
    #[arg(long = "catalog")]
    pub catalog: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the demo: build images, start a non-compliant edge site, enforce its policy.
    Demo(DemoCli),
    /// Validate documents (policy, target, workflow) and their cross-references.
    Validate(ValidateCli),
    /// SCAP content (SSG data streams): list profiles, evaluate a profile on a target.
    Scap {
        #[command(subcommand)]
        action: ScapAction,
    },
    /// Check a policy's requirements on a target (read-only); or, with `--scap DS --profile
    /// ID`, a SCAP profile evaluated natively (as `vacsine scap eval`).
    Check {
        #[command(flatten)]
        io: CheckInputs,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Print the remediation workflow deduced from the failed requirements (read-only).
    Plan {
        #[command(flatten)]
        io: PolicyTarget,
        /// `human` prints the workflow as YAML; `json` prints plan items and workflow.
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
    /// Enforce a policy: sandbox, apply, verify, apply to the target, verify, roll back; or,
    /// with `--scap DS --profile ID`, a SCAP profile remediated with the content's own fixes
    /// (as a policy whose `spec.import` is that profile).
    Enforce(EnforceCli),
    /// List or garbage-collect sandboxes.
    Sandbox {
        #[command(subcommand)]
        action: SandboxAction,
        /// `human` or `json`.
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
    /// Print the JSON Schema of a document kind (for editor completion), or `executors`: the
    /// reference of every executor's arguments and outputs (Markdown).
    Schema {
        #[arg(value_enum)]
        kind: SchemaKind,
    },
    /// Run a remediation workflow on a target, journaled step by step.
    Run(RunCli),
    /// Keep a policy in effect on a Docker target: when a node (re)starts, re-apply the fixes
    /// `enforce` applied to it (from the journal), re-check it, and log the latency. Runs
    /// until SIGINT/SIGTERM.
    Watch(WatchCli),
    /// List recent runs: this machine's, or with --site / --all-sites every site's, from
    /// the orchestrator.
    Runs(RunsCli),
    /// Show the step records of a run (`--format json` prints JSON Lines): from this
    /// machine's journal, else from the orchestrator (a run at a site).
    Logs(LogsCli),
    /// Run the orchestrator: HTTPS with a self-signed certificate made on first start (its
    /// pin is printed), sealed agent channel, work queue, data in --data.
    Orchestrator(OrchestratorCli),
    /// Run a site agent: enrols with an intake key on first start, then pulls work from the
    /// orchestrator (outbound connections only) and runs it on this machine.
    Agent(AgentCli),
    /// Apply the retention policy now: remove ended runs (and their records) older or more
    /// than the policy keeps, from an orchestrator's store or an agent's data folder, and
    /// give the space back. Never a run queued or running, never anything an agent has not
    /// uploaded yet. Exit 0: done (or nothing to do); 2: a limit is still exceeded because
    /// what is left is not uploaded yet or among the newest kept; 1: error.
    Gc(GcCli),
    /// Sites and their intake keys (as an operator of the orchestrator).
    Site(SiteCli),
    /// Push policies, workflows, responses (`kind: Response`) and schedules (`kind:
    /// Schedule`) into the orchestrator's registry: each gets a new version when its content
    /// changed (`vacsine run NAME[@VERSION] --site S` runs a pushed workflow; agents hold the
    /// responses and run the schedules).
    /// `vacsine push image REF...` uploads action images (`docker save` of each local image):
    /// agents get them from the orchestrator, sites need no registry.
    Push(PushCli),
    /// The orchestrator's registry of pushed policies and workflows.
    Registry(RegistryCli),
    /// Sites, agents (online/offline, last seen, version) and runs known to the orchestrator.
    Status {
        #[command(flatten)]
        conn: OperatorConn,
        /// `human` or `json`.
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
    /// People allowed into the web console (https://ORCHESTRATOR/console/): `add NAME
    /// --role viewer|operator|admin` prints their login token once (the orchestrator keeps
    /// its hash), `list`, `revoke NAME` (their token is refused and their sessions end at once).
    User(UserCli),
    /// CrowdSec bouncers that enforce Vacsine's bans: `add NAME [--site S]` prints the API key
    /// once (the orchestrator keeps its hash), `list`, `delete NAME`. Bouncers read the bans on
    /// the orchestrator's `--bouncer-listen` address (their `api_url`).
    Bouncer(BouncerCli),
    /// Decisions (bans) made at sites or by operators, with their scope, origin and time to
    /// mitigate (event, decided, in effect at each site); `add` bans an address or network
    /// at every site in scope, `delete ID` lifts a decision everywhere.
    Decisions(DecisionsCli),
    /// Quarantines and workflow runs that orchestrated Responses with `approval: required`
    /// asked for, waiting for an operator (awaiting, expired, approved, denied).
    Approvals {
        #[command(flatten)]
        conn: OperatorConn,
        /// `human` or `json`.
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
    /// Approve a waiting quarantine (fanned out to every site in its scope) or workflow run
    /// (submitted to the site whose event asked for it). An expired one cannot be approved.
    Approve {
        /// The approval's id (`vacsine approvals` lists them; a unique prefix is enough).
        id: String,
        #[command(flatten)]
        conn: OperatorConn,
        /// `human` or `json`.
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
    /// Deny a waiting quarantine or workflow run: it never runs.
    Deny {
        /// The approval's id (`vacsine approvals` lists them; a unique prefix is enough).
        id: String,
        #[command(flatten)]
        conn: OperatorConn,
        /// `human` or `json`.
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
    /// The posture from the scheduled assessments (`kind: Schedule`): per site, requirements
    /// passing and failing now (failing ones with their evidence), framework controls rolled
    /// up from the policies' `references`, open ports found by scans, and the trend. Exit 2
    /// when a requirement fails now.
    Posture(PostureCli),
    /// Events the sites uploaded (each once), newest first.
    Events(EventsCli),
    /// Print the pin (`sha256:…`) of a certificate, as `--pin` takes it: the server
    /// certificate of a TLS-terminating proxy in front of the orchestrator, or a certificate
    /// given to `vacsine orchestrator --tls-cert`. PEM (the chain's first certificate) or DER.
    Pin {
        /// The certificate file.
        cert: PathBuf,
        /// `human` or `json`.
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
}

// The arguments of `vacsine demo` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct DemoCli {
    #[command(subcommand)]
    pub action: Option<DemoAction>,
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Where to write the JSON report.
    #[arg(long, default_value = "vacsine-demo-report.json")]
    pub report: PathBuf,
}

// The arguments of `vacsine validate` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct ValidateCli {
    /// Files to validate; catalogs named by policies are validated too.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Extra catalog folders used to resolve fixes and sub-workflows.
    #[arg(long = "catalog")]
    pub catalog: Vec<PathBuf>,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = simple_format)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine watch` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct WatchCli {
    #[command(flatten)]
    pub io: PolicyTarget,
    /// `human` or `json` (JSON Lines: one object per event).
    #[arg(long, default_value = "human", value_parser = simple_format)]
    pub format: SimpleFormat,
    /// Seconds a re-check may wait for a restarted node's services to come back.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub recheck_timeout: u64,
}

// The arguments of `vacsine runs` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct RunsCli {
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Runs of this site, from the orchestrator.
    #[arg(long, conflicts_with = "all_sites")]
    pub site: Option<String>,
    /// Runs of every site, from the orchestrator.
    #[arg(long)]
    pub all_sites: bool,
    /// Only runs in this state (queued, running, succeeded, failed, cancelled); with
    /// --site or --all-sites.
    #[arg(long)]
    pub status: Option<String>,
    /// The next page: the cursor printed after the previous one (--site or --all-sites).
    #[arg(long, value_name = "CURSOR")]
    pub before: Option<String>,
    #[command(flatten)]
    pub conn: OperatorConn,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = simple_format)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine logs` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct LogsCli {
    pub run_id: String,
    #[command(flatten)]
    pub conn: OperatorConn,
    /// `human` or `json` (JSON Lines).
    #[arg(long, default_value = "human", value_parser = simple_format)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine gc` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct GcCli {
    /// Data folder: an orchestrator's (`orchestrator.db`) or an agent's (`agent.db`,
    /// `journal.db`), told apart by what it holds.
    #[arg(long, default_value = "./vacsine-data")]
    pub data: PathBuf,
    /// The orchestrator's PostgreSQL store instead of a data folder
    /// (postgres://USER:PASSWORD@HOST:5432/DATABASE; prefer the environment variable).
    #[arg(
        long,
        env = "VACSINE_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: Option<String>,
    /// Show what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub keep: RetentionArgs,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = simple_format)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine site` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct SiteCli {
    #[command(subcommand)]
    pub action: SiteAction,
    #[command(flatten)]
    pub conn: OperatorConn,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = simple_format, global = true)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine push` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct PushCli {
    /// Policy, workflow and response files (YAML); or `image` then image references.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub conn: OperatorConn,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = simple_format)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine registry` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct RegistryCli {
    #[command(subcommand)]
    pub action: RegistryAction,
    #[command(flatten)]
    pub conn: OperatorConn,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = simple_format, global = true)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine user` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct UserCli {
    #[command(subcommand)]
    pub action: UserAction,
    #[command(flatten)]
    pub conn: OperatorConn,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = simple_format, global = true)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine bouncer` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct BouncerCli {
    #[command(subcommand)]
    pub action: BouncerAction,
    #[command(flatten)]
    pub conn: OperatorConn,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = simple_format, global = true)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine decisions` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct DecisionsCli {
    #[command(subcommand)]
    pub action: Option<DecisionsAction>,
    /// Only decisions whose scope holds this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only active decisions (not expired, not deleted).
    #[arg(long)]
    pub active: bool,
    #[command(flatten)]
    pub conn: OperatorConn,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = simple_format, global = true)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine posture` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct PostureCli {
    /// Only this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only requirements referencing this framework (a prefix: `anssi` matches
    /// `anssi-bp28`).
    #[arg(long)]
    pub framework: Option<String>,
    /// The trend's window, back from now (`10m`, `24h`, `30d`).
    #[arg(long, default_value = "30d")]
    pub window: String,
    /// The trend's step (`1m`, `1h`, `1d`; default a thirtieth of the window).
    #[arg(long)]
    pub bucket: Option<String>,
    #[command(flatten)]
    pub conn: OperatorConn,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = simple_format)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine events` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct EventsCli {
    /// Only events from this site.
    #[arg(long)]
    pub site: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[command(flatten)]
    pub conn: OperatorConn,
    /// `human` or `json`.
    #[arg(long, default_value = "human", value_parser = simple_format)]
    pub format: SimpleFormat,
}

// The arguments of `vacsine enforce` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct EnforceCli {
    #[command(flatten)]
    pub io: EnforceInputs,
    /// Write the full JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Keep the sandbox for inspection (remove it later with `vacsine sandbox gc`).
    #[arg(long)]
    pub keep_sandbox: bool,
    /// Go on even when the sandbox is not faithful to the target.
    #[arg(long)]
    pub force: bool,
    /// Reject a fix that does not survive a restart of its sandbox clone (held back; with
    /// --all-or-nothing the whole remediation: `rejected_in_sandbox`, target untouched);
    /// without it that is a warning.
    #[arg(long)]
    pub require_persistent: bool,
    /// One fix rejected in the sandbox keeps every fix off the target
    /// (`rejected_in_sandbox`). Without it, the rejected fixes are held back and the others,
    /// proven again on a fresh sandbox, are applied and verified (`partially_verified`).
    #[arg(long, conflicts_with = "site")]
    pub all_or_nothing: bool,
    /// Enforce at this site, by its agent, through the orchestrator: the files are checked
    /// here, the site's agent resolves the target with its own driver and runs the whole
    /// pipeline there, and the report comes back.
    #[arg(long, conflicts_with_all = ["scap", "keep_sandbox"])]
    pub site: Option<String>,
    /// With --site: print the run id and return instead of following the run (its report:
    /// `GET /v1/runs/{id}/report`).
    #[arg(long, requires = "site")]
    pub detach: bool,
    #[command(flatten)]
    pub conn: OperatorConn,
}

// The arguments of `vacsine run` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct RunCli {
    /// Workflow file (kind: Workflow). Not needed with --resume.
    pub workflow: Option<PathBuf>,
    /// Target system description; without it, steps run on this machine (`local`).
    #[arg(long, short = 't')]
    pub target: Option<PathBuf>,
    /// Input values, `name=value` (repeatable). Strings, unless the input is declared
    /// `array` or `object` (then JSON); typed scalars (`port`, `boolean`…) are parsed.
    #[arg(long = "input", short = 'i', value_name = "NAME=VALUE", value_parser = name_value)]
    pub inputs: Vec<String>,
    /// Catalog folders for sub-workflows (default: ./catalog when present).
    #[arg(long = "catalog")]
    pub catalog: Vec<PathBuf>,
    /// Where steps that name no node (`runsOn`) run: a node of the target by name, or
    /// `role=ROLE` for every node with that role (repeatable; with several nodes, those
    /// steps fan out over them). Needed when the target has several nodes.
    #[arg(long = "node", value_name = "NAME|role=ROLE", value_parser = node_choice, conflicts_with = "resume")]
    pub nodes: Vec<NodeChoice>,
    /// Resume an interrupted run.
    #[arg(long, value_name = "RUN_ID", conflicts_with = "workflow")]
    pub resume: Option<String>,
    /// `human` or `json` (JSON Lines of step records).
    #[arg(long, default_value = "human", value_parser = simple_format)]
    pub format: SimpleFormat,
    /// Run at this site, by its agent, through the orchestrator (see `vacsine orchestrator`).
    #[arg(long, conflicts_with_all = ["resume", "target", "nodes"])]
    pub site: Option<String>,
    /// With --site: print the run id and return instead of following its records.
    #[arg(long, requires = "site")]
    pub detach: bool,
    #[command(flatten)]
    pub conn: OperatorConn,
}

// The arguments of `vacsine orchestrator` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct OrchestratorCli {
    /// HTTPS address for agents and operators.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// Also serve plain HTTP here, for a TLS-terminating reverse proxy in front (request
    /// and response bodies stay sealed end to end): bind it to an address only the
    /// proxy reaches, such as 127.0.0.1.
    #[arg(long, value_name = "ADDR")]
    pub listen_plain: Option<std::net::SocketAddr>,
    /// A given certificate chain (PEM, server certificate first) instead of the
    /// self-signed one made on first start; with --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Data folder: store, keys, certificate, operator token (`operator.token`, and
    /// `operator.json` that the CLI reads).
    #[arg(long, default_value = "./vacsine-data")]
    pub data: PathBuf,
    /// How long a work lease lasts without renewal by its agent (ms).
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub lease_ttl_ms: u64,
    /// PostgreSQL store shared by several replicas (scale-out):
    /// postgres://USER:PASSWORD@HOST:5432/DATABASE. Replicas share the data folder's keys,
    /// certificate and token. Default: SQLite in --data. Prefer the environment variable:
    /// a password on the command line is visible to other local users.
    #[arg(
        long,
        env = "VACSINE_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: Option<String>,
    /// Largest action image archive `vacsine push image` may upload (MiB).
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    pub max_image_mb: u64,
    /// Connections one client address may hold on the HTTPS listener (fairness: a client
    /// holding sockets takes only its share). Default: an eighth of the connection limit
    /// (112 under 1,024 open files), at least 16; 0: no cap (many agents behind one NAT
    /// address). The --listen-plain listener is not capped per client.
    #[arg(long, value_name = "N")]
    pub max_connections_per_client: Option<usize>,
    #[command(flatten)]
    pub retention: ScheduleArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, no token; counts
    /// only, no run data). Bind it to loopback or an address only Prometheus reaches,
    /// e.g. 127.0.0.1:9464. Default: no metrics listener.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Push step records, events and decisions to Grafana Loki at this URL
    /// (http://loki:3100, or its full /loki/api/v1/push URL). Default: no push.
    #[arg(long, value_name = "URL")]
    pub loki_url: Option<String>,
    /// Lines kept for Loki while it is unreachable; past it the oldest are given up.
    #[arg(long, default_value_t = vacsine_orch::loki::DEFAULT_BUFFER, value_name = "LINES")]
    pub loki_buffer: usize,
    /// Lines per Loki push request at most.
    #[arg(long, default_value_t = vacsine_orch::loki::DEFAULT_BATCH, value_name = "LINES")]
    pub loki_batch: usize,
    #[command(flatten)]
    pub taxii: TaxiiArgs,
    /// Also serve CrowdSec's bouncer API (plain HTTP: `GET /v1/decisions/stream`) here, so
    /// existing CrowdSec bouncers enforce Vacsine's bans: bind it to an address only the
    /// bouncers reach, such as 127.0.0.1:8081, and give each bouncer
    /// `api_url: http://ADDR/` and a key from `vacsine bouncer add NAME`.
    #[arg(long, value_name = "ADDR")]
    pub bouncer_listen: Option<std::net::SocketAddr>,
}

// The arguments of `vacsine agent` (its help is the variant's doc comment).
#[derive(Args, Debug)]
pub struct AgentCli {
    #[command(subcommand)]
    pub action: Option<AgentAction>,
    /// Orchestrator URL (https://HOST:PORT), or several replicas separated by commas, tried
    /// in order when one is unreachable. Kept after enrolment; given again, it replaces them.
    #[arg(long, global = true)]
    pub orchestrator: Option<String>,
    /// Intake key of the site (`vacsine site create SITE`), for the first start.
    #[arg(
        long,
        env = "VACSINE_INTAKE_KEY",
        hide_env_values = true,
        global = true
    )]
    pub intake_key: Option<String>,
    /// Name of this agent at its site.
    #[arg(long, global = true)]
    pub name: Option<String>,
    /// SHA-256 pin of the orchestrator's certificate (`sha256:…`, printed at its start).
    #[arg(long, global = true)]
    pub pin: Option<String>,
    /// Data folder: identity (0600), journal, outbox.
    #[arg(long, default_value = "./vacsine-agent", global = true)]
    pub data: PathBuf,
    #[command(flatten)]
    pub retention: ScheduleArgs,
    /// Decoy services to run at this site (`kind: Decoys` file: each decoy's name and its
    /// services' ports): real OpenCanary containers in the agent's network namespace
    /// (image built here on first use), deployed and removed (when no longer declared)
    /// by the agent, journaled; every connection to one becomes an event decided at once.
    /// The file is re-read when it changes.
    #[arg(long, value_name = "FILE", env = "VACSINE_DECOYS")]
    pub decoys: Option<PathBuf>,
}

/// What retention keeps of ended runs (`vacsine gc`, and the orchestrator's and agent's
/// periodic pass). 0 in a limit: no limit.
#[derive(Args, Debug, Clone, Copy)]
pub struct RetentionArgs {
    /// Remove ended runs older than this many days (0: no age limit).
    #[arg(long, default_value_t = vacsine_engine::retention::DEFAULT_KEEP_DAYS, value_name = "DAYS")]
    pub keep_days: u64,
    /// Keep at most this many ended runs (0: no limit).
    #[arg(long, default_value_t = vacsine_engine::retention::DEFAULT_KEEP_RUNS, value_name = "RUNS")]
    pub keep_runs: u64,
    /// Keep at most this many MiB of ended runs, their jobs and records (0: no limit).
    #[arg(long, default_value_t = vacsine_engine::retention::DEFAULT_KEEP_MB, value_name = "MIB")]
    pub keep_mb: u64,
    /// Always keep the newest this many ended runs of each site (orchestrator) or workflow
    /// (agent), whatever their age.
    #[arg(long, default_value_t = vacsine_engine::retention::DEFAULT_KEEP_LAST, value_name = "RUNS")]
    pub keep_last: u64,
}

impl RetentionArgs {
    pub fn policy(&self) -> vacsine_engine::retention::Policy {
        vacsine_engine::retention::Policy::from_flags(
            self.keep_days,
            self.keep_runs,
            self.keep_mb,
            self.keep_last,
        )
    }
}

/// Retention, and how often the orchestrator or agent applies it by itself.
#[derive(Args, Debug, Clone, Copy)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub keep: RetentionArgs,
    /// Apply the retention policy every this many seconds (0: only by `vacsine gc`).
    #[arg(long, default_value_t = vacsine_engine::retention::DEFAULT_EVERY_SECS, value_name = "SECS")]
    pub gc_every: u64,
}

impl ScheduleArgs {
    pub fn schedule(&self) -> vacsine_engine::retention::Schedule {
        vacsine_engine::retention::Schedule {
            policy: self.keep.policy(),
            every: std::time::Duration::from_secs(self.gc_every),
        }
    }
}

/// How an operator's command reaches the orchestrator. Without flags, from `operator.json`
/// in the orchestrator's data folder (written at its start).
#[derive(Args, Debug, Clone)]
pub struct OperatorConn {
    /// Orchestrator URL.
    #[arg(long = "orchestrator", env = "VACSINE_ORCHESTRATOR", global = true)]
    pub url: Option<String>,
    /// SHA-256 pin of its certificate.
    #[arg(long, env = "VACSINE_PIN", global = true)]
    pub pin: Option<String>,
    /// Operator token (`operator.token` in its data folder).
    #[arg(
        long,
        env = "VACSINE_OPERATOR_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// The orchestrator's data folder, when it runs on this machine.
    #[arg(
        long = "orchestrator-data",
        env = "VACSINE_ORCHESTRATOR_DATA",
        default_value = "./vacsine-data",
        global = true
    )]
    pub data: PathBuf,
    /// How long a submission (run, push, site change) is retried while the orchestrator is
    /// unreachable or unavailable: `60s`, `5m`, `0` (one try). Giving up exits with 3.
    #[arg(
        long,
        env = "VACSINE_RETRY_FOR",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = retry_for,
        global = true
    )]
    pub retry_for: std::time::Duration,
    /// The submission's idempotency key (8-128 letters, digits, `-`, `_`); default: a fresh
    /// one per invocation. The orchestrator makes a submission once per key and answers a
    /// repeat with the first answer: give the same key when a script repeats a submission.
    #[arg(
        long,
        env = "VACSINE_IDEMPOTENCY_KEY",
        value_name = "KEY",
        global = true
    )]
    pub idempotency_key: Option<String>,
}

/// `--retry-for`: seconds (`90`, `90s`), minutes (`5m`) or hours (`1h`).
fn retry_for(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (n, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: give a duration such as 60s, 5m or 0"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("`{s}`: the unit is s, m or h (60s, 5m, 1h)")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Subcommand, Debug, Clone)]
pub enum AgentAction {
    /// Check what the agent needs, each pass/fail: the orchestrator reachable with the pin,
    /// clock skew, identity accepted, Docker, nft, disk. Exit 0 when all pass, 2 otherwise.
    Preflight,
    /// The agent's outbox (read from its data folder; the agent may be running): items
    /// waiting to be uploaded, acknowledged items still kept, and every item the orchestrator
    /// refused for good (kept, with the reason). Exit 0 when none was refused, 2 otherwise.
    Status {
        /// `human` or `json`.
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
    /// Run a workflow of the registry bundle this agent holds, here and now, without the
    /// orchestrator (autonomous: works while the site is cut off). The bundle is verified
    /// with the key pinned at enrolment first; the run is uploaded, marked autonomous, when
    /// the agent next reaches the orchestrator. Exit 0 when it succeeded, 2 when it did not.
    Run {
        /// Workflow name in the bundle (`NAME` or `NAME@VERSION`).
        workflow: String,
        /// Input value `NAME=VALUE` (repeatable; typed by the workflow's declarations).
        #[arg(long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// `human` (records as steps end) or `json` (one record per line).
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
    /// Events in a security tool's format (Suricata EVE, Falco, STIX 2.1, CrowdSec,
    /// OpenCanary, Cowrie, nmap XML) from FILE or `-` (standard input): each is decided over
    /// the `kind: Response` documents of the registry bundle held (dedupe, throttle, the
    /// allow-list of this machine's and the orchestrator's addresses), the bans are in effect
    /// at once as nft set elements with their timeout (one transaction), every outcome is
    /// recorded with its reason, and events and decisions are queued for upload. Works while
    /// the orchestrator is unreachable. A bad record is refused with its line and never
    /// drops the good ones. Exit 0 when every record was read, 2 when one was refused.
    Ingest {
        /// The file, or `-` for standard input (up to 64 MiB).
        file: PathBuf,
        /// The input's format: eve, falco, stix, crowdsec, opencanary, cowrie or nmap
        /// (default: detected from its first bytes).
        #[arg(long = "from", value_name = "FORMAT")]
        from: Option<String>,
        /// Keep following FILE, a growing JSON-lines log (EVE, Falco, OpenCanary, Cowrie):
        /// every complete new line is fed as above, polled every 20 ms, until interrupted.
        /// The position (device, inode, offset, a hash of the first bytes) is kept in the
        /// data dir and saved after the lines' outcomes are stored: across restarts, log
        /// rotation (rename + new file) and copytruncate, no line is lost or fed twice.
        #[arg(long)]
        follow: bool,
        /// `human` or `json` (with --follow: one report per line, per round that read lines).
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
    /// A local event (from an IDS hook, a scanner, an operator): every workflow of the held
    /// registry bundle whose trigger (`spec.on`) matches it runs here, without the
    /// orchestrator; runs are uploaded, marked autonomous, when the link allows. Each
    /// matching workflow runs or is refused on its own (one refused does not stop the
    /// others), and each outcome is printed. Exit 0 when every matching workflow ran and
    /// succeeded or was deduplicated (or none matched), 2 when one failed or was refused, 1
    /// on a usage error or a bundle that cannot be read.
    Event {
        /// `indicator`, `incident`, `vulnerability` or `requirement_changed`.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: String,
        /// The event's payload, a JSON object (e.g. `{"type": "ip", "value": "203.0.113.9"}`).
        #[arg(
            long,
            value_name = "JSON",
            required_unless_present = "payload_file",
            conflicts_with = "payload_file"
        )]
        payload: Option<String>,
        /// The payload from a file, or `-` for standard input (no command-line size limit;
        /// up to 16 MiB).
        #[arg(long, value_name = "FILE|-")]
        payload_file: Option<std::path::PathBuf>,
        /// Where the event comes from (default `local`).
        #[arg(long, default_value = "local")]
        source: String,
        /// The event's id (default: a new UUID).
        #[arg(long)]
        id: Option<String>,
        /// `human` or `json` (one line per workflow started).
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum UserAction {
    /// Add a console user; prints their token, once.
    Add {
        /// Their name (letters, digits, `.`, `_`, `-`, `@`).
        name: String,
        /// viewer: reads every page; operator: also approves and denies; admin: as operator.
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    /// The console users and their roles (never their tokens).
    List,
    /// Revoke a user: their token is refused and their console sessions end now.
    Revoke { name: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum BouncerAction {
    /// Let a CrowdSec bouncer read the bans; prints its API key, once.
    Add {
        /// Its name (letters, digits, `.`, `_`, `-`).
        name: String,
        /// Only the bans whose scope holds this site (default: every site's).
        #[arg(long)]
        site: Option<String>,
    },
    /// The bouncers, with their last pull.
    List,
    /// Revoke a bouncer's key.
    Delete { name: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum DecisionsAction {
    /// Ban an address or network for a duration at every site in scope.
    Add {
        /// An IPv4 or IPv6 address, or a network (`198.51.100.0/24`).
        #[arg(long)]
        ip: String,
        /// How long: a number and `s`, `m`, `h` or `d` (`4h`).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// `all`, or site names separated by commas.
        #[arg(long, default_value = "all")]
        scope: String,
        /// Why (kept in the orchestrator's log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a decision at every site (each removes its element at its next poll).
    Delete { id: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum RegistryAction {
    /// Every version of every pushed policy and workflow.
    List,
    /// One version of a pushed document (the latest without --version): its content as
    /// pushed, SHA-256, time of push, and whether its signature still verifies.
    ///
    /// `vacsine registry show Workflow contain-host --version 2`
    Show {
        #[arg(value_parser = ["Policy", "Workflow", "Response", "Schedule"])]
        kind: String,
        name: String,
        #[arg(long)]
        version: Option<i64>,
    },
    /// The difference between two versions of a pushed document (a unified diff of their
    /// JSON; `--format json` gives it line by line too).
    ///
    /// `vacsine registry diff Workflow contain-host 1 2`
    Diff {
        #[arg(value_parser = ["Policy", "Workflow", "Response", "Schedule"])]
        kind: String,
        name: String,
        from: i64,
        to: i64,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum SiteAction {
    /// Create a site and print its intake key.
    Create {
        name: String,
        /// A label the site carries, `KEY=VALUE` (repeatable); a Response's `scope.labels`
        /// matches the sites carrying them.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// Change a site's labels: `KEY=VALUE` adds or replaces one, `KEY-` removes it. Its agents
    /// receive them, signed, with their next decision set.
    Label {
        name: String,
        /// `KEY=VALUE` or `KEY-`.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        changes: Vec<String>,
    },
    /// List sites.
    List,
    /// Revoke a site (its intake key and every agent), or one agent of it.
    Revoke {
        name: String,
        /// Revoke only this agent (by name).
        #[arg(long)]
        agent: Option<String>,
    },
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum DemoAction {
    /// Build the demo images and start a fresh, non-compliant demo site.
    Up,
    /// Remove the demo site.
    Down,
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum SandboxAction {
    /// List sandboxes left on the Docker engine.
    List,
    /// Remove every sandbox object (containers, networks, volumes, images).
    Gc,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SchemaKind {
    /// JSON Schema of a policy.
    Policy,
    /// JSON Schema of a target.
    Target,
    /// JSON Schema of a workflow, each step's `with:` typed by its executor.
    Workflow,
    /// The executor reference (Markdown): every executor's arguments and outputs.
    Executors,
}

/// `enforce`'s inputs: a policy, or a SCAP data stream and one of its profiles.
#[derive(Args, Debug, Clone)]
pub struct EnforceInputs {
    /// Policy file (kind: Policy).
    #[arg(
        long,
        short = 'p',
        required_unless_present = "scap",
        conflicts_with = "scap"
    )]
    pub policy: Option<PathBuf>,
    /// Target system description (kind: Target).
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Extra catalog folders or workflow files (besides the policy's `spec.catalog`).
    #[arg(long = "catalog")]
    pub catalog: Vec<PathBuf>,
    /// A SCAP 1.3 source data stream whose profile is enforced (needs `--profile`).
    #[arg(long, requires = "profile")]
    pub scap: Option<PathBuf>,
    /// The data stream's profile (full id or short form such as `standard`).
    #[arg(long, requires = "scap")]
    pub profile: Option<String>,
    /// An XCCDF tailoring file applied to the data stream.
    #[arg(long, requires = "scap")]
    pub tailoring: Option<PathBuf>,
    /// Only this rule of the profile (short id; repeatable). Default: every selected rule.
    #[arg(long = "rule", requires = "scap")]
    pub rules: Vec<String>,
    /// With `--scap`: rules restricted to machines (SSG's `machine` platform) apply to
    /// containers too.
    #[arg(long, requires = "scap")]
    pub container_as_machine: bool,
}

/// `check`'s inputs: a policy, or a SCAP data stream and one of its profiles.
#[derive(Args, Debug, Clone)]
pub struct CheckInputs {
    /// Policy file (kind: Policy).
    #[arg(
        long,
        short = 'p',
        required_unless_present = "scap",
        conflicts_with = "scap"
    )]
    pub policy: Option<PathBuf>,
    /// Target system description (kind: Target).
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Extra catalog folders or workflow files (besides the policy's `spec.catalog`).
    #[arg(long = "catalog")]
    pub catalog: Vec<PathBuf>,
    /// A SCAP 1.3 source data stream to evaluate instead of a policy (needs `--profile`).
    #[arg(long, requires = "profile")]
    pub scap: Option<PathBuf>,
    /// The data stream's profile (full id or short form such as `anssi_np_nt28_high`).
    #[arg(long, requires = "scap")]
    pub profile: Option<String>,
    /// With `--scap`: evaluate rules restricted to machines (SSG's `machine` platform) on
    /// containers too.
    #[arg(long, requires = "scap")]
    pub container_as_machine: bool,
    /// With `--scap`: an XCCDF 1.2 tailoring file whose profiles `--profile` may name.
    #[arg(long, requires = "scap", value_name = "FILE")]
    pub tailoring: Option<PathBuf>,
    /// With `--scap`: write the XCCDF 1.2 results document here (one file per node, named
    /// `FILE` with `-<node>` before its extension, when the target has several nodes).
    #[arg(long, requires = "scap", value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// With `--scap`: write the ARF 1.1 report here (per node as `--results`).
    #[arg(long, requires = "scap", value_name = "FILE")]
    pub arf: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ScapAction {
    /// List a data stream's profiles with their number of selected rules.
    Profiles {
        /// SCAP 1.3 source data stream (e.g. /usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml).
        datastream: PathBuf,
        /// `human` or `json`.
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
    /// Evaluate a profile natively (XCCDF + OVAL) on every node of a target (read-only).
    /// Exit 0 when no rule fails, 2 when some rule fails or errs, 1 on bad input.
    Eval {
        /// SCAP 1.3 source data stream.
        datastream: PathBuf,
        /// Profile id (full, or its short form such as `anssi_np_nt28_high`).
        #[arg(long)]
        profile: String,
        /// Target system description (kind: Target).
        #[arg(long, short = 't')]
        target: PathBuf,
        /// Only this node of the target.
        #[arg(long)]
        node: Option<String>,
        /// Evaluate rules restricted to machines (SSG's `machine` platform) on containers too.
        #[arg(long)]
        container_as_machine: bool,
        /// An XCCDF 1.2 tailoring file (SCAP Workbench, autotailor): its profiles become
        /// selectable with `--profile`.
        #[arg(long, value_name = "FILE")]
        tailoring: Option<PathBuf>,
        /// Write the XCCDF 1.2 results document (the benchmark with a TestResult, as `oscap
        /// --results`) here; with several nodes, one file per node: `FILE` with `-<node>`
        /// before its extension.
        #[arg(long, value_name = "FILE")]
        results: Option<PathBuf>,
        /// Write the ARF 1.1 report (source data stream, node as asset, TestResult, as `oscap
        /// --results-arf`) here; per node as `--results`.
        #[arg(long, value_name = "FILE")]
        arf: Option<PathBuf>,
        /// `human` or `json` (one JSON object per node).
        #[arg(long, default_value = "human", value_parser = simple_format)]
        format: SimpleFormat,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn retry_for_takes_seconds_minutes_hours_and_zero() {
        use std::time::Duration;
        let d = |s: &str| super::retry_for(s);
        assert_eq!(d("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(d("90"), Ok(Duration::from_secs(90)));
        assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert!(d("5d").unwrap_err().contains("s, m or h"));
        assert!(d("soon").unwrap_err().contains("60s"));
        assert!(d("").is_err());
    }
}

/// Threat intelligence the orchestrator polls (issue 16).
#[derive(Debug, Clone, clap::Args)]
pub struct TaxiiArgs {
    /// A TAXII 2.1 collection to poll for STIX indicators
    /// (https://HOST/API-ROOT/collections/ID/; repeat for several). Each indicator becomes an
    /// event with source `taxii:ID`, decided on by `mode: orchestrated` Responses.
    #[arg(long = "taxii", value_name = "URL")]
    pub urls: Vec<String>,
    /// User for the TAXII server (HTTP basic authentication).
    #[arg(long = "taxii-user", value_name = "USER", requires = "urls")]
    pub user: Option<String>,
    /// File whose first line is the TAXII password (never on the command line).
    #[arg(long = "taxii-password-file", value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
    /// Seconds between two polls of each collection.
    #[arg(long = "taxii-every", default_value_t = 60, value_name = "SECS")]
    pub every: u64,
}

impl TaxiiArgs {
    /// The feeds, each checked (a bad URL or an unreadable password file is an error here).
    pub fn feeds(&self) -> anyhow::Result<Vec<vacsine_orch::taxii::Feed>> {
        self.urls
            .iter()
            .map(|u| {
                vacsine_orch::taxii::Feed::new(
                    u,
                    self.user.as_deref(),
                    self.password_file.as_deref(),
                    std::time::Duration::from_secs(self.every),
                )
            })
            .collect()
    }
}
