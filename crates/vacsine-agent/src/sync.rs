//! The agent's copy of the registry: at start it says which signed bundle it holds (verified
//! again from `agent.db`), then syncs the latest bundle from the orchestrator now and every
//! [`SYNC_EVERY`], verifies it with the pinned key and keeps it. A child of `agent`.

use crate::Shared;
use std::sync::Arc;
use std::time::Duration;
use vacsine_contract::proto;

/// How often the registry bundle is synced.
pub const SYNC_EVERY: Duration = Duration::from_secs(60);

/// The version held now (after checking it still verifies), logged.
fn held(sh: &Shared) -> Option<String> {
    match sh.bundles.held_registry(&sh.bundle_key, &sh.site) {
        Ok(Some((v, b))) => {
            eprintln!(
                "registry bundle held: {v} ({} document(s): {})",
                b.documents.len(),
                b.label()
            );
            Some(v)
        }
        Ok(None) => {
            eprintln!("registry bundle held: none yet");
            None
        }
        Err(e) => {
            eprintln!("warning: {e:#}; discarded, syncing again");
            let _ = sh.bundles.drop_registry();
            None
        }
    }
}

/// One sync: `Some(version)` held after it.
async fn sync_once(sh: &Shared, have: Option<String>) -> Option<String> {
    let r = sh
        .link
        .op(&sh.agent_id, &proto::BundleRequest { have: have.clone() })
        .await;
    let resp = match r {
        Ok(r) => r,
        Err(e) => {
            // Cut off: the bundle held goes on serving.
            eprintln!(
                "registry bundle: sync failed ({e}); keeping {}",
                have.as_deref().unwrap_or("none")
            );
            return have;
        }
    };
    let Some(signed) = resp.bundle else {
        return have;
    };
    let b = match vacsine_contract::bundle::verify_registry(&sh.bundle_key, &sh.site, &signed) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("warning: registry bundle {}: {e:#}", resp.version);
            return have;
        }
    };
    let version = vacsine_contract::bundle::registry_version(&b.documents);
    if version != resp.version {
        eprintln!(
            "warning: the registry bundle sent as {} holds {version}: not used",
            resp.version
        );
        return have;
    }
    if let Err(e) = sh
        .bundles
        .keep_registry(&version, &signed, vacsine_contract::now_ms())
    {
        eprintln!("warning: keeping the registry bundle: {e:#}");
        return have;
    }
    eprintln!(
        "registry bundle {version} verified and kept ({} document(s): {}){}",
        b.documents.len(),
        b.label(),
        have.map(|h| format!(", was {h}")).unwrap_or_default()
    );
    Some(version)
}

pub(super) async fn syncer(sh: Arc<Shared>) {
    let mut have = held(&sh);
    loop {
        have = sync_once(&sh, have).await;
        tokio::time::sleep(SYNC_EVERY).await;
    }
}
