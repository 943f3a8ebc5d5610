//! Scheduled assessments at a site (issue 17), the agent's side: a pushed policy checked, a
//! SCAP profile evaluated (its data stream on this machine) or the target's nodes scanned,
//! with the drivers `vacsine check` uses. Called through `SiteEnforcer`'s `assess`.

use anyhow::{anyhow, bail, Context};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use vacsine_contract::schedule::{scan_items, Assess, Assessed, Item, ScanSpec};
use vacsine_core::node::NodeOps;
use vacsine_core::policy::Policy;
use vacsine_core::target::Target;
use vacsine_engine::executor::{ExecCtx, Executor, OpenPort, ScanExecutor};

/// Longest evidence kept per result.
const MAX_EVIDENCE: usize = 1000;
/// Longest a scan may take.
const SCAN_TIMEOUT: Duration = Duration::from_secs(600);

pub async fn assess(a: Assess) -> anyhow::Result<Assessed> {
    match a {
        Assess::Check { policy, target } => check(*policy, target).await,
        Assess::Scap { spec, target } => {
            let mut loaded =
                vacsine_enforce::inputs::scap_policy(&vacsine_enforce::inputs::ScapImportArgs {
                    datastream: spec.datastream.clone().into(),
                    profile: spec.profile.clone(),
                    ..Default::default()
                });
            vacsine_enforce::inputs::expand_import(&mut loaded).map_err(|e| {
                anyhow!(
                    "SCAP {} profile {}: {}",
                    spec.datastream,
                    spec.profile,
                    e.message
                )
            })?;
            check(loaded.doc, target).await
        }
        Assess::Scan { spec, target } => scan(spec, target).await,
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_EVIDENCE {
        let mut end = MAX_EVIDENCE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// `policy` checked on `target`'s nodes (as `vacsine check`), each result an item with the
/// requirement's references.
async fn check(policy: Policy, target: Target) -> anyhow::Result<Assessed> {
    let refs: BTreeMap<String, BTreeMap<String, Vec<String>>> = policy
        .spec
        .requirements
        .iter()
        .map(|r| (r.id.value.clone(), r.references.clone()))
        .collect();
    // The check's future is not `Send` (its probes borrow across awaits): it runs on a
    // blocking thread of this runtime, driven there by `block_on`.
    let rt = tokio::runtime::Handle::current();
    let results = tokio::task::spawn_blocking(move || {
        rt.block_on(async move {
            let site = crate::drivers::resolve(&target).await?;
            Ok::<_, anyhow::Error>(
                vacsine_enforce::check::check_site(&policy, site.as_site()).await,
            )
        })
    })
    .await
    .map_err(|e| anyhow!("the check stopped abruptly: {e}"))??;
    let items = results
        .into_iter()
        .map(|r| {
            let outcome = serde_json::to_value(r.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            let evidence = if r.message.is_empty() || r.message == r.observed {
                r.observed
            } else {
                format!("{} ({})", r.observed, r.message)
            };
            Item {
                references: refs.get(&r.requirement).cloned().unwrap_or_default(),
                node: r.node,
                item: r.requirement,
                outcome,
                evidence: cut(evidence),
                title: Some(r.title),
                severity: serde_json::to_value(r.severity)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string)),
            }
        })
        .collect();
    Ok(Assessed {
        items,
        addresses: BTreeMap::new(),
    })
}

/// The target's nodes (those `spec.nodes` names) scanned with nmap from the vantage point.
async fn scan(spec: ScanSpec, target: Target) -> anyhow::Result<Assessed> {
    let site = vacsine_docker::DockerSite::connect(&target)
        .await
        .context("resolving the target to scan")?;
    let names: Vec<String> = if spec.nodes.is_empty() {
        use vacsine_core::node::Site;
        site.nodes().into_iter().map(|n| n.name).collect()
    } else {
        spec.nodes.clone()
    };
    let mut addresses = BTreeMap::new();
    for n in &names {
        let addr = if spec.from == "agent" {
            any_address(&site, n).await?
        } else {
            site.node_address(n, &spec.from)
                .await
                .with_context(|| format!("the address of node `{n}` from `{}`", spec.from))?
        };
        addresses.insert(n.clone(), addr);
    }
    if addresses.is_empty() {
        bail!("no node to scan in target `{}`", target.metadata.name.value);
    }
    let vantage: Arc<dyn NodeOps> = if spec.from == "agent" {
        Arc::new(vacsine_engine::LocalNode::new("agent"))
    } else {
        site.vantage_node(&spec.from)
            .map(|n| n as Arc<dyn NodeOps>)
            .ok_or_else(|| anyhow!("no vantage point `{}` in the target", spec.from))?
    };
    let mut targets: Vec<String> = addresses.values().cloned().collect();
    targets.sort();
    targets.dedup();
    let args = serde_json::json!({
        "targets": targets,
        "ports": spec.ports,
        "serviceVersion": spec.service_version,
    });
    let ctx = ExecCtx {
        run_id: "schedule".into(),
        step_id: "scan".into(),
        attempt: 1,
        node: Some(vantage),
        timeout: SCAN_TIMEOUT,
        secret_env: Vec::new(),
        observer: None,
        undo_log: None,
    };
    let r = ScanExecutor.run(&ctx, args).await;
    if let Some(e) = r.error {
        bail!("scan from {}: {e}", spec.from);
    }
    let open: Vec<OpenPort> = r
        .outputs
        .get("open")
        .cloned()
        .map(serde_json::from_value)
        .transpose()?
        .unwrap_or_default();
    Ok(Assessed {
        items: scan_items(&open, &addresses),
        addresses,
    })
}

/// An address of node `name` reachable from the agent's machine: its IP on its first network
/// (by name) that has one.
async fn any_address(site: &vacsine_docker::DockerSite, name: &str) -> anyhow::Result<String> {
    let n = site
        .docker_node(name)
        .ok_or_else(|| anyhow!("no node `{name}` in the target"))?;
    let i = n.inspect().await?;
    let mut nets: Vec<(String, String)> = i
        .network_settings
        .and_then(|s| s.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| v.ip_address.filter(|a| !a.is_empty()).map(|a| (k, a)))
        .collect();
    nets.sort();
    nets.into_iter().map(|(_, a)| a).next().ok_or_else(|| {
        anyhow!(
            "node `{name}` (container `{}`) has no IP address",
            n.container()
        )
    })
}
