//! `vacsine agent preflight`: what an agent needs, each checked and reported pass/fail with
//! the reason: the orchestrator reachable with the pinned certificate, clocks close enough for
//! sealed messages, the identity accepted (or an intake key to enrol), Docker's socket, `nft`,
//! the data folder writable with free space.

use std::path::{Path, PathBuf};
use std::time::Instant;
use vacsine_contract::client::{AgentLink, CallError};
use vacsine_contract::proto;

pub struct Check {
    pub name: &'static str,
    pub pass: bool,
    pub detail: String,
}

fn check(name: &'static str, r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check {
            name,
            pass: true,
            detail,
        },
        Err(detail) => Check {
            name,
            pass: false,
            detail,
        },
    }
}

/// Clock skew refused by the orchestrator is 120 s; warn well before.
const SKEW_LIMIT_MS: i64 = 30_000;
/// Free space wanted in the data folder (journal, outbox).
const DISK_MIN: u64 = 100 * 1024 * 1024;

#[derive(serde::Deserialize)]
struct IdentityView {
    agent_id: String,
    name: String,
    site: String,
    orchestrator: String,
    pin: String,
    secret_key: String,
    server_key: String,
}

pub async fn run(
    orchestrator: Option<String>,
    pin: Option<String>,
    intake_key: bool,
    data: &Path,
) -> Vec<Check> {
    let mut out = Vec::new();
    let id: Option<IdentityView> = std::fs::read(data.join("agent.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let url = orchestrator.or_else(|| id.as_ref().map(|i| i.orchestrator.clone()));
    let pin = pin.or_else(|| id.as_ref().map(|i| i.pin.clone()));
    match (url, pin) {
        (Some(url), Some(pin)) => {
            let t0 = Instant::now();
            let hello = AgentLink::hello(&url, &pin).await;
            let rtt = t0.elapsed().as_millis() as i64;
            match hello {
                Ok(h) => {
                    out.push(check(
                        "orchestrator",
                        Ok(format!(
                            "{url} reachable in {rtt} ms, certificate matches the pin, version {}",
                            h.version
                        )),
                    ));
                    let skew = h.time_ms + rtt / 2 - vacsine_contract::now_ms();
                    out.push(check(
                        "clock",
                        if skew.abs() <= SKEW_LIMIT_MS {
                            Ok(format!("{skew} ms from the orchestrator's clock"))
                        } else {
                            Err(format!("{skew} ms from the orchestrator's clock (sealed messages are refused past ±120 s); sync the clocks (NTP)"))
                        },
                    ));
                }
                Err(e) => {
                    out.push(check("orchestrator", Err(format!("{url}: {e}"))));
                    out.push(check(
                        "clock",
                        Err("not measured: orchestrator unreachable".into()),
                    ));
                }
            }
            out.push(identity(&id, intake_key).await);
        }
        _ => out.push(check(
            "orchestrator",
            Err("no orchestrator: give --orchestrator URL --pin sha256:… (or enrol first)".into()),
        )),
    }
    out.push(docker().await);
    out.push(nft());
    out.push(disk(data));
    if let Some(c) = outbox(data) {
        out.push(c);
    }
    out
}

async fn identity(id: &Option<IdentityView>, intake_key: bool) -> Check {
    let Some(id) = id else {
        return check(
            "identity",
            if intake_key {
                Ok("not enrolled yet; the intake key given enrols it at the first start".into())
            } else {
                Err(
                    "not enrolled and no --intake-key: `vacsine site create SITE` prints one"
                        .into(),
                )
            },
        );
    };
    let link = match (
        vacsine_wire::KeyPair::from_secret_b64(&id.secret_key),
        vacsine_wire::PublicKey::from_b64(&id.server_key),
    ) {
        (Ok(k), Ok(s)) => AgentLink::new(&id.orchestrator, &id.pin, k, s),
        _ => {
            return check(
                "identity",
                Err("agent.json holds invalid keys; remove it and enrol again".into()),
            )
        }
    };
    let link = match link {
        Ok(l) => l,
        Err(e) => return check("identity", Err(e.to_string())),
    };
    // An authenticated no-op: proves the keys, the seal both ways and that the agent is not
    // revoked, without taking work.
    let r: Result<proto::Pong, CallError> = link.op(&id.agent_id, &proto::PingRequest {}).await;
    check(
        "identity",
        match r {
            Ok(_) => Ok(format!(
                "agent {} ({}) of site {}: sealed request accepted",
                id.name, id.agent_id, id.site
            )),
            Err(e) => Err(format!("agent {} ({}): {e}", id.name, id.agent_id)),
        },
    )
}

async fn docker() -> Check {
    let sock = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
    check(
        "docker",
        match tokio::net::UnixStream::connect(&sock).await {
            Ok(_) => Ok(format!("{} accepts connections", sock.display())),
            Err(e) => Err(format!(
                "{}: {e} (needed by docker.exec, container and Docker targets)",
                sock.display()
            )),
        },
    )
}

fn nft() -> Check {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    use std::os::unix::fs::PermissionsExt;
    let found = dirs.iter().map(|d| d.join("nft")).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    });
    check(
        "nft",
        match found {
            Some(p) => Ok(format!("{}", p.display())),
            None => Err(
                "nft not found (needed by firewall steps): install Debian's nftables package"
                    .into(),
            ),
        },
    )
}

fn disk(data: &Path) -> Check {
    if let Err(e) = vacsine_private::private_dir(data) {
        return check("disk", Err(format!("{}: {e}", data.display())));
    }
    let probe = data.join(".preflight");
    if let Err(e) = vacsine_private::write_private(&probe, b"ok") {
        return check("disk", Err(format!("{} not writable: {e}", data.display())));
    }
    let _ = std::fs::remove_file(&probe);
    check(
        "disk",
        match nix::sys::statvfs::statvfs(data) {
            Ok(s) => {
                // The field types differ between platforms (u32 on some 32-bit ones).
                #[allow(clippy::unnecessary_cast)]
                let free = s.blocks_available() as u64 * s.fragment_size() as u64;
                let mib = free / (1024 * 1024);
                if free >= DISK_MIN {
                    Ok(format!("{} writable, {mib} MiB free", data.display()))
                } else {
                    Err(format!(
                        "{}: only {mib} MiB free (want ≥ {} MiB for the journal and the outbox)",
                        data.display(),
                        DISK_MIN / (1024 * 1024)
                    ))
                }
            }
            Err(e) => Err(format!("{}: {e}", data.display())),
        },
    )
}

/// The outbox, when the agent has one: items waiting, and items refused for good (a fail:
/// `vacsine agent status` lists them).
fn outbox(data: &Path) -> Option<Check> {
    let db = data.join("agent.db");
    if !db.exists() {
        return None;
    }
    let r = crate::Outbox::open(&db)
        .and_then(|o| o.status())
        .map_err(|e| format!("{}: {e:#}", db.display()))
        .and_then(|st| {
            if st.refused.is_empty() {
                Ok(format!(
                    "{} item(s) waiting to be uploaded, none refused",
                    st.pending
                ))
            } else {
                Err(format!(
                    "{} item(s) refused by the orchestrator and kept (first: {} of run {}: {}); `vacsine agent status` lists them",
                    st.refused.len(),
                    st.refused[0].key,
                    st.refused[0].run_id,
                    st.refused[0].reason
                ))
            }
        });
    Some(check("outbox", r))
}
