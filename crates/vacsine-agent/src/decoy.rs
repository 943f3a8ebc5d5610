//! Decoy services declared in the agent's configuration (issue 16 item 8): `vacsine agent
//! --decoys FILE` runs each declared decoy (a real OpenCanary, in an image built here:
//! [`vacsine_docker::decoy`]) in the agent's network namespace on the ports it names, and
//! removes those no longer declared. Each deployment and removal is a run of a one-step
//! workflow (executor `decoy`) in the agent's journal, like any action.
//!
//! Each decoy's JSON log (`<data>/decoys/<name>/opencanary.log`, rotated by OpenCanary's
//! logger at 8 MiB) is followed by the same [`crate::tail::Follower`] as `vacsine agent ingest
//! --follow`: every connection becomes an indicator event (source address and port, service,
//! what was sent) decided over the held Responses at once, also while cut off, with its
//! position kept in the data folder: no line lost or fed twice across agent restarts and
//! rotation. A removed decoy's log is read to its end before its folder is deleted.
//!
//! The file is re-read when it changes (every 2 s): no restart is needed to add or remove a
//! decoy. A file that cannot be read at start stops the agent with its location; a later bad
//! edit is said and the decoys running stay as they are.

use crate::tail::Follower;
use crate::Shared;
use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use vacsine_engine::executor::{ExecCtx, Executor, StepResult};
use vacsine_events::Format;

/// How often a decoy's log is read.
const FOLLOW_EVERY: Duration = crate::tail::POLL;
/// How often the file and the containers are reconciled.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// The `--decoys` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DecoysFile {
    #[allow(dead_code)]
    api_version: String,
    kind: String,
    spec: DecoysSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecoysSpec {
    #[serde(default)]
    decoys: Vec<DecoySpec>,
}

/// One declared decoy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecoySpec {
    /// Letters, digits and `-`, at most 32.
    pub name: String,
    /// The decoy software (`opencanary`).
    #[serde(default)]
    pub kind: DecoyKind,
    /// Each emulated service and the TCP port it listens on.
    pub services: BTreeMap<Service, u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoyKind {
    #[default]
    Opencanary,
}

/// The OpenCanary services a decoy may emulate (TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Ssh,
    Ftp,
    Http,
    Telnet,
    Mysql,
    Redis,
    Vnc,
}

impl Service {
    fn key(self) -> &'static str {
        match self {
            Service::Ssh => "ssh",
            Service::Ftp => "ftp",
            Service::Http => "http",
            Service::Telnet => "telnet",
            Service::Mysql => "mysql",
            Service::Redis => "redis",
            Service::Vnc => "vnc",
        }
    }
}

/// Read and check the `--decoys` file: errors name the file, line and column, or the decoy.
pub fn load(path: &Path) -> anyhow::Result<Vec<DecoySpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot be read", path.display()))?;
    let src = vacsine_core::doc::SourceFile::new(path.display().to_string(), text);
    let f: DecoysFile = vacsine_core::doc::parse_as(&src).map_err(|e| anyhow!("{e}"))?;
    if f.kind != "Decoys" {
        bail!(
            "{}: kind is `{}`; a decoys file has `kind: Decoys`",
            path.display(),
            f.kind
        );
    }
    check(&f.spec.decoys).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(f.spec.decoys)
}

fn check(decoys: &[DecoySpec]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    let mut ports: HashMap<u16, String> = HashMap::new();
    for d in decoys {
        let ok = !d.name.is_empty()
            && d.name.len() <= 32
            && d.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !d.name.starts_with('-');
        if !ok {
            return Err(format!(
                "decoy name {:?}: use letters, digits and `-` (at most 32)",
                d.name
            ));
        }
        if !names.insert(d.name.clone()) {
            return Err(format!("decoy `{}` is declared twice", d.name));
        }
        if d.services.is_empty() {
            return Err(format!(
                "decoy `{}` has no service: name at least one (`services: {{ssh: 2222}}`)",
                d.name
            ));
        }
        for (s, p) in &d.services {
            if *p == 0 {
                return Err(format!("decoy `{}`: {} port 0", d.name, s.key()));
            }
            if let Some(other) = ports.insert(*p, format!("{}.{}", d.name, s.key())) {
                return Err(format!(
                    "port {p} is given twice ({other} and {}.{})",
                    d.name,
                    s.key()
                ));
            }
        }
    }
    Ok(())
}

/// OpenCanary's configuration for a decoy: only its services enabled, a JSON line per event
/// in [`vacsine_docker::decoy::LOG_FILE`], rotated by size.
fn opencanary_conf(site: &str, d: &DecoySpec) -> Value {
    let mut c = serde_json::Map::new();
    c.insert("device.node_id".into(), json!(format!("{site}/{}", d.name)));
    c.insert("ip.ignorelist".into(), json!([]));
    c.insert("logtype.ignorelist".into(), json!([]));
    c.insert(
        "logger".into(),
        json!({
            "class": "PyLogger",
            "kwargs": {
                "formatters": {"plain": {"format": "%(message)s"}},
                "handlers": {"file": {
                    "class": "logging.handlers.RotatingFileHandler",
                    "filename": format!("{}/{}", vacsine_docker::decoy::LOG_DIR, vacsine_docker::decoy::LOG_FILE),
                    "maxBytes": 8 << 20,
                    "backupCount": 2,
                }},
            },
        }),
    );
    for (s, port) in &d.services {
        let k = s.key();
        c.insert(format!("{k}.enabled"), json!(true));
        c.insert(format!("{k}.port"), json!(port));
        match s {
            Service::Ssh => {
                c.insert(
                    "ssh.version".into(),
                    json!("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"),
                );
            }
            Service::Ftp => {
                c.insert("ftp.banner".into(), json!("FTP server ready"));
            }
            Service::Http => {
                c.insert("http.banner".into(), json!("Apache/2.4.62 (Debian)"));
                c.insert("http.skin".into(), json!("nasLogin"));
            }
            Service::Telnet => {
                c.insert("telnet.banner".into(), json!(""));
                c.insert("telnet.honeycreds".into(), json!([]));
            }
            Service::Mysql => {
                c.insert("mysql.banner".into(), json!("5.7.42-log"));
                c.insert("mysql.log_connection_made".into(), json!(true));
            }
            Service::Redis | Service::Vnc => {}
        }
    }
    Value::Object(c)
}

/// The decoys folder of an agent's data folder.
fn root(data: &Path) -> PathBuf {
    data.join("decoys")
}

fn log_dir(data: &Path, name: &str) -> PathBuf {
    root(data).join(name)
}

fn conf_path(data: &Path, name: &str) -> PathBuf {
    root(data).join(format!("{name}.conf"))
}

fn log_path(data: &Path, name: &str) -> PathBuf {
    log_dir(data, name).join(vacsine_docker::decoy::LOG_FILE)
}

/// The owner label of this agent's decoys: a hash of its data folder.
pub fn owner(data: &Path) -> String {
    let p = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    let h = Sha256::digest(p.as_os_str().as_encoded_bytes());
    hex::encode(h)[..12].to_string()
}

/// The container name of decoy `name` of this agent.
pub fn container_name(data: &Path, name: &str) -> String {
    format!("vacsine-decoy-{}-{name}", owner(data))
}

/// Arguments of the `decoy` executor (the agent's own; not offered to workflows).
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct DecoyArgs {
    /// `deploy` or `remove`.
    action: String,
    name: String,
    container: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    spec: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    network_mode: String,
    #[serde(default)]
    log_dir: String,
    #[serde(default)]
    config: String,
}

struct DecoyExecutor;

#[async_trait]
impl Executor for DecoyExecutor {
    fn name(&self) -> &'static str {
        "decoy"
    }
    fn summary(&self) -> &'static str {
        "Deploy or remove a decoy container of this agent (the agent's own action)."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<DecoyArgs>()
    }
    fn idempotent(&self) -> bool {
        true
    }
    fn needs_node(&self) -> bool {
        false
    }
    fn literal_args(&self) -> &'static [&'static str] {
        &[
            "action",
            "name",
            "container",
            "owner",
            "spec",
            "image",
            "network_mode",
            "log_dir",
            "config",
        ]
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        serde_json::from_value::<DecoyArgs>(args.clone())
            .map(|_| ())
            .map_err(|e| format!("invalid `with` for `decoy`: {e}"))
    }
    async fn run(&self, _ctx: &ExecCtx, args: Value) -> StepResult {
        let a: DecoyArgs = match serde_json::from_value(args) {
            Ok(a) => a,
            Err(e) => return StepResult::failed(format!("invalid `with` for `decoy`: {e}")),
        };
        let docker = match vacsine_docker::connect().await {
            Ok(d) => d,
            Err(e) => return StepResult::failed(format!("decoys need Docker at this site: {e}")),
        };
        let mut r = match a.action.as_str() {
            "deploy" => {
                let d = vacsine_docker::decoy::Deploy {
                    container: a.container.clone(),
                    name: a.name.clone(),
                    owner: a.owner,
                    spec: a.spec,
                    image: a.image.clone(),
                    network_mode: a.network_mode.clone(),
                    log_dir: a.log_dir.into(),
                    config: a.config.into(),
                };
                match vacsine_docker::decoy::deploy(&docker, &d).await {
                    Ok(id) => {
                        let mut r = StepResult::ok(true);
                        r.stdout = format!(
                            "decoy {} deployed: container {} ({}) from {}, network {}\n",
                            a.name,
                            a.container,
                            &id[..12.min(id.len())],
                            a.image,
                            a.network_mode
                        )
                        .into_bytes();
                        r
                    }
                    Err(e) => StepResult::failed(format!("deploying decoy {}: {e}", a.name)),
                }
            }
            "remove" => match vacsine_docker::decoy::remove(&docker, &a.container).await {
                Ok(was) => {
                    let mut r = StepResult::ok(was);
                    r.stdout = format!(
                        "decoy {} {}\n",
                        a.name,
                        if was {
                            format!("removed: container {} deleted", a.container)
                        } else {
                            "had no container".to_string()
                        }
                    )
                    .into_bytes();
                    r
                }
                Err(e) => StepResult::failed(format!("removing decoy {}: {e}", a.name)),
            },
            other => StepResult::failed(format!("decoy action `{other}`: deploy or remove")),
        };
        r.undo = None;
        r
    }
}

/// One deployment or removal, journaled as a run of a one-step workflow.
async fn journaled(sh: &Shared, args: &DecoyArgs) -> anyhow::Result<String> {
    use vacsine_engine::{CancelToken, Catalog, Engine, LocalNode, NodeMap, RunRequest};
    let workflow: vacsine_core::workflow::Workflow = serde_json::from_value(json!({
        "apiVersion": vacsine_core::API_VERSION,
        "kind": "Workflow",
        "metadata": {"name": format!("decoy-{}", args.action)},
        "spec": {"steps": [{"id": args.action, "uses": "decoy", "with": args}]}
    }))?;
    let mut engine = Engine::new(sh.journal.clone(), Catalog::new());
    engine.register(Arc::new(DecoyExecutor));
    let mut nodes = NodeMap::new();
    nodes.insert("local".into(), Arc::new(LocalNode::new("local")));
    let report = engine
        .run(RunRequest {
            workflow,
            inputs: Default::default(),
            nodes,
            default_node: Some("local".into()),
            target_name: "decoys".into(),
            labels: Default::default(),
            progress: None,
            observer: None,
            cancel: CancelToken::new(),
            run_id: None,
        })
        .await?;
    if report.status != vacsine_engine::RunStatus::Succeeded {
        bail!(
            "run {} {}: {}",
            report.run_id,
            report.status,
            report.message.unwrap_or_default()
        );
    }
    Ok(report.run_id)
}

/// Ports listening in this namespace (TCP, v4 and v6).
fn listening() -> Vec<u16> {
    let mut out = Vec::new();
    for (f, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(t) = std::fs::read_to_string(f) {
            if let Ok(l) =
                vacsine_core::procnet::parse_table(&t, vacsine_core::policy::Protocol::Tcp, v6)
            {
                out.extend(l.into_iter().map(|l| l.port));
            }
        }
    }
    out
}

/// A decoy being followed: its follower, and whether it is retired (container removed,
/// log read to its end, then its files deleted).
struct Followed {
    follower: Follower,
    retired: bool,
}

/// Run the decoys of `path` until the agent's process ends (its declarations were checked at
/// start), on a thread of their own: reading a log feeds the same intake as `vacsine agent
/// ingest`, whose stores are used from one thread.
pub(super) fn start(sh: Arc<Shared>, path: PathBuf, specs: Vec<DecoySpec>) {
    let spawned = std::thread::Builder::new()
        .name("decoys".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run(sh, path, specs)),
                Err(e) => eprintln!("error: decoys: cannot start their runtime: {e}"),
            }
        });
    if let Err(e) = spawned {
        eprintln!("error: decoys: cannot start their thread: {e}");
    }
}

async fn run(sh: Arc<Shared>, path: PathBuf, mut specs: Vec<DecoySpec>) {
    let mut modified = mtime(&path);
    let mut followed: BTreeMap<String, Followed> = BTreeMap::new();
    // Decoys deployed by an earlier run: followed from their saved position.
    if let Ok(rd) = std::fs::read_dir(root(&sh.data)) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                let name = e.file_name().to_string_lossy().to_string();
                followed.insert(name.clone(), follow(&sh.data, &name));
            }
        }
    }
    let mut next_reconcile = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        if tokio::time::Instant::now() >= next_reconcile {
            next_reconcile = tokio::time::Instant::now() + RECONCILE_EVERY;
            let m = mtime(&path);
            if m != modified {
                modified = m;
                match load(&path) {
                    Ok(s) => {
                        eprintln!("decoys: {} re-read ({} declared)", path.display(), s.len());
                        specs = s;
                    }
                    Err(e) => {
                        eprintln!("error: decoys: {e:#} (the decoys running stay as they are)")
                    }
                }
            }
            match reconcile(&sh, &specs, &mut followed).await {
                Ok(()) => {
                    if failing {
                        eprintln!("decoys: in place again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        eprintln!("error: decoys: {e:#} (tried again every {RECONCILE_EVERY:?})");
                    }
                    failing = true;
                }
            }
        }
        let mut done = Vec::new();
        for (name, f) in followed.iter_mut() {
            match f.follower.step().await {
                Ok(reports) => {
                    for r in &reports {
                        for e in &r.report.errors {
                            eprintln!("decoys: {name}: {e}");
                        }
                        if !r.report.applied.is_empty() {
                            eprintln!(
                                "decoys: {name}: {} event(s), {} decision(s) in effect here",
                                r.report.events,
                                r.report.applied.len()
                            );
                        }
                    }
                    if !reports.is_empty() {
                        sh.kick.notify_one();
                    }
                    if f.retired {
                        done.push(name.clone());
                    }
                }
                Err(e) => {
                    tracing::warn!(decoy = %name, "reading its log: {e:#}");
                }
            }
        }
        for name in done {
            followed.remove(&name);
            forget(&sh.data, &name);
            eprintln!("decoys: {name}: removed, its log read to its end and deleted");
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn follow(data: &Path, name: &str) -> Followed {
    Followed {
        follower: Follower::new(data, &log_path(data, name), Some(Format::OpenCanary)),
        retired: false,
    }
}

/// A removed decoy's files: its log folder, configuration and saved position.
fn forget(data: &Path, name: &str) {
    let _ = std::fs::remove_dir_all(log_dir(data, name));
    let _ = std::fs::remove_file(conf_path(data, name));
    let _ = std::fs::remove_file(crate::tail::position_path(data, &log_path(data, name)));
}

/// Make the running decoys what `specs` declares: each missing or changed one deployed, each
/// no longer declared removed (journaled).
async fn reconcile(
    sh: &Shared,
    specs: &[DecoySpec],
    followed: &mut BTreeMap<String, Followed>,
) -> anyhow::Result<()> {
    let data = std::fs::canonicalize(&sh.data).unwrap_or_else(|_| sh.data.clone());
    let docker = vacsine_docker::connect()
        .await
        .map_err(|e| anyhow!("decoys need Docker at this site: {e}"))?;
    let owner = owner(&data);
    let running = vacsine_docker::decoy::list(&docker, &owner).await?;
    // No longer declared: removed, its log read to its end.
    for r in &running {
        if specs.iter().any(|s| s.name == r.name) {
            continue;
        }
        let run = journaled(
            sh,
            &DecoyArgs {
                action: "remove".into(),
                name: r.name.clone(),
                container: r.container.clone(),
                owner: owner.clone(),
                spec: String::new(),
                image: String::new(),
                network_mode: String::new(),
                log_dir: String::new(),
                config: String::new(),
            },
        )
        .await?;
        eprintln!("decoys: {} removed (run {run})", r.name);
    }
    for (name, f) in followed.iter_mut() {
        if !specs.iter().any(|s| &s.name == name) {
            f.retired = true;
        }
    }
    let mut image: Option<String> = None;
    let mut mode: Option<String> = None;
    let mut listening: Option<Vec<u16>> = None;
    for s in specs {
        let conf = serde_json::to_vec_pretty(&opencanary_conf(&sh.site, s))?;
        let tag = vacsine_docker::decoy::image_tag();
        let current = running.iter().find(|r| r.name == s.name);
        let spec_hash = {
            let mut h = Sha256::new();
            h.update(&conf);
            h.update(tag.as_bytes());
            hex::encode(h.finalize())[..16].to_string()
        };
        if current.is_some_and(|r| r.spec == spec_hash && r.running) {
            followed
                .entry(s.name.clone())
                .or_insert_with(|| follow(&data, &s.name))
                .retired = false;
            continue;
        }
        // A port something else listens on is refused (a decoy never displaces a service).
        if current.is_none() {
            let l = listening.get_or_insert_with(self::listening);
            if let Some((svc, p)) = s.services.iter().find(|(_, p)| l.contains(p)) {
                bail!(
                    "decoy `{}`: {} port {p} is already in use at this site; choose a port nothing legitimate uses",
                    s.name,
                    svc.key()
                );
            }
        }
        let tag = match &image {
            Some(t) => t.clone(),
            None => {
                let t = tokio::task::spawn_blocking(|| {
                    vacsine_docker::decoy::ensure_image(&|m| eprintln!("decoys: image: {m}"))
                })
                .await?
                .map_err(|e| anyhow!("building the decoy image: {e}"))?;
                image = Some(t.clone());
                t
            }
        };
        let network_mode = match &mode {
            Some(m) => m.clone(),
            None => {
                let m = vacsine_docker::decoy::network_mode(&docker)
                    .await
                    .map_err(|e| anyhow!(e))?;
                mode = Some(m.clone());
                m
            }
        };
        let dir = log_dir(&data, &s.name);
        vacsine_private::private_dir(&root(&data))?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cp = conf_path(&data, &s.name);
        vacsine_private::write_private(&cp, &conf)
            .with_context(|| format!("writing {}", cp.display()))?;
        let run = journaled(
            sh,
            &DecoyArgs {
                action: "deploy".into(),
                name: s.name.clone(),
                container: container_name(&data, &s.name),
                owner: owner.clone(),
                spec: spec_hash,
                image: tag,
                network_mode: network_mode.clone(),
                log_dir: dir.display().to_string(),
                config: cp.display().to_string(),
            },
        )
        .await?;
        let ports: Vec<String> = s
            .services
            .iter()
            .map(|(k, p)| format!("{}:{p}", k.key()))
            .collect();
        eprintln!(
            "decoys: {} deployed ({}; run {run})",
            s.name,
            ports.join(", ")
        );
        followed
            .entry(s.name.clone())
            .or_insert_with(|| follow(&data, &s.name))
            .retired = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Vec<DecoySpec>> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("decoys.yaml");
        std::fs::write(&p, text).unwrap();
        load(&p)
    }

    #[test]
    fn a_decoys_file_is_read_strictly_with_located_errors() {
        let ok = parse(
            "apiVersion: vacsine.io/v1\nkind: Decoys\nspec:\n  decoys:\n    - name: canary\n      services: {ssh: 2222, http: 8081}\n",
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].services[&Service::Ssh], 2222);
        for (text, want) in [
            (
                "apiVersion: vacsine.io/v1\nkind: Decoys\nspec:\n  decoys:\n    - name: c\n      services: {ssh: 2222}\n      port: 1\n",
                "unknown field",
            ),
            (
                "apiVersion: vacsine.io/v1\nkind: Decoys\nspec:\n  decoys:\n    - name: c\n      services: {smtp: 25}\n",
                "smtp",
            ),
            (
                "apiVersion: vacsine.io/v1\nkind: Decoys\nspec:\n  decoys:\n    - name: c\n      services: {ssh: 2222}\n    - name: d\n      services: {http: 2222}\n",
                "port 2222 is given twice",
            ),
            (
                "apiVersion: vacsine.io/v1\nkind: Decoys\nspec:\n  decoys:\n    - name: \"a;b\"\n      services: {ssh: 2222}\n",
                "use letters, digits",
            ),
            (
                "apiVersion: vacsine.io/v1\nkind: Decoys\nspec:\n  decoys:\n    - name: c\n      services: {}\n",
                "has no service",
            ),
            ("apiVersion: vacsine.io/v1\nkind: Policy\nspec: {}\n", "kind: Decoys"),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{want}: {e}");
            assert!(e.contains("decoys.yaml"), "not located: {e}");
        }
    }

    #[test]
    fn the_opencanary_configuration_enables_only_the_declared_services() {
        let d = DecoySpec {
            name: "c".into(),
            kind: DecoyKind::Opencanary,
            services: BTreeMap::from([(Service::Ssh, 2222)]),
        };
        let c = opencanary_conf("edge-a", &d);
        assert_eq!(c["ssh.enabled"], true);
        assert_eq!(c["ssh.port"], 2222);
        assert!(c.get("ftp.enabled").is_none());
        assert_eq!(c["device.node_id"], "edge-a/c");
    }
}
