//! The demo site: real Debian containers built locally from Debian's packages (no registry),
//! and the lifecycle of a fresh, deliberately non-compliant site.
//!
//! Two flavours share names, roles and network:
//! * [`Flavor::Debian`] (the demo, `vacsine demo`, the enforce tests): a Debian base image made
//!   with debootstrap from the host's apt mirror ([`debian_base_tag`], packages
//!   [`DEBIAN_PACKAGES`]), then one small image per role on top of it;
//! * [`Flavor::Busybox`] (fast driver tests): `FROM scratch` + Debian's static busybox.
//!
//! Debian site:
//!
//! | container | role | facts |
//! |---|---|---|
//! | `vacsine-demo-outside` | outside | vantage point (busybox image) |
//! | `vacsine-demo-web` | web | nginx (a standalone daemon started by the container's init after `WEB_START_DELAY_S`) serving `/srv/www/index.html` ("Vacsine demo edge site"); `/srv/www` mode 0777 |
//! | `vacsine-demo-gateway` | gateway | a router: `net.ipv4.ip_forward=1` (0 elsewhere); no user nft table |
//! | `vacsine-demo-legacy` | legacy | `inetutils-inetd` (standalone daemon) serving telnet (`inetutils-telnetd`) from `/etc/inetd.conf` |
//! | (web, gateway, legacy) | | also: `openssh-server` installed, never started, no host keys (as many container images ship it) |
//! | `vacsine-demo-ssh` | ssh | OpenSSH `sshd -D` as PID 1, `PermitRootLogin yes`, `PasswordAuthentication yes`, the demo key (`examples/edge-site/keys`) authorized for root; `/etc/shadow` 0644; users root and guest |
//!
//! Busybox site: the same roles with busybox `httpd`, `telnetd -l /bin/sh`, a fake dpkg status
//! and a weak `sshd_config` without an sshd (see [`contexts`]).
//!
//! All on the bridge network `vacsine-demo-lan`, labelled `vacsine.demo=1` and
//! `vacsine.demo.role=<role>`. PID 1 of every container but Debian's ssh is `/init` (sh): it
//! starts the role's services and waits; it exits at once on SIGTERM.

use crate::error::{is_not_found, DockerError};
use crate::host::processes_in_pidns;
use crate::SANDBOX_LABEL;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use vacsine_core::doc::{Loc, Metadata};
use vacsine_core::target::{DriverKind, NodeSpec, Target, TargetSpec, VantagePoint};

/// The demo images carry the host's static busybox; finding it is the driver's (module
/// `host`), not the demo's.
pub use crate::host::{host_busybox, provision_busybox};

/// The demo's bridge network.
pub const NETWORK: &str = "vacsine-demo-lan";
/// Label on every demo object (`vacsine.demo=1`).
pub const LABEL: &str = "vacsine.demo";
/// Role label (`vacsine.demo.role=web`).
pub const ROLE_LABEL: &str = "vacsine.demo.role";
/// Image label holding the hash of the build context (rebuild only when it changes).
pub const HASH_LABEL: &str = "vacsine.demo.hash";
/// Roles of the demo containers; container `vacsine-demo-<role>`, image `vacsine-demo/<role>:1`.
/// Seconds the demo web server takes to start listening (see `up`).
pub const WEB_START_DELAY_S: u32 = 2;
pub const ROLES: [&str; 5] = ["outside", "web", "gateway", "legacy", "ssh"];

/// Container name of a demo role.
pub fn container_name(role: &str) -> String {
    format!("vacsine-demo-{role}")
}

/// Image tag of a demo role (or `base`).
pub fn image_tag(name: &str) -> String {
    format!("vacsine-demo/{name}:1")
}

const INIT: &str = r#"#!/bin/sh
# Vacsine demo init: start every service listed in /etc/demo/services (one argv per line,
# no quoting), then wait forever; exit at once on SIGTERM/SIGINT. VACSINE_DEMO_START_DELAY
# (seconds) delays the services, as a real server takes a while to be ready.
trap 'exit 0' TERM INT
set -f
if [ -n "${VACSINE_DEMO_START_DELAY:-}" ]; then
  sleep "$VACSINE_DEMO_START_DELAY"
fi
if [ -r /etc/demo/services ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    $line
  done < /etc/demo/services
fi
while :; do
  sleep 3600 &
  wait $!
done
"#;

const PKILL: &str = "#!/bin/sh\n# busybox-static has no pkill: `pkill NAME` = `killall NAME` here.\nexec killall \"$@\"\n";

const SSHD_CONFIG: &str = "# Demo sshd configuration (deliberately weak)\nPort 22\nAddressFamily any\nPermitRootLogin yes\nPasswordAuthentication yes\nPubkeyAuthentication yes\nChallengeResponseAuthentication no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\n";

const DPKG_STATUS: &str = "Package: busybox\nStatus: install ok installed\nPriority: optional\nSection: utils\nMaintainer: Debian Install System Team <debian-boot@lists.debian.org>\nArchitecture: amd64\nVersion: 1:1.35.0-4\nDescription: Tiny utilities for small and embedded systems\n\nPackage: telnetd\nStatus: install ok installed\nPriority: optional\nSection: net\nMaintainer: Debian QA Group <packages@qa.debian.org>\nArchitecture: amd64\nVersion: 0.17-44\nDescription: basic telnet server\n";

/// One entry of a build context.
enum Entry {
    Dir(&'static str, u32, u32),
    File(&'static str, u32, u32, Vec<u8>),
}

fn context_tar(dockerfile: &str, entries: &[Entry]) -> Result<Vec<u8>, DockerError> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, mode: u32, uid: u32, data: &[u8], dir: bool| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(mode);
        h.set_uid(uid as u64);
        h.set_gid(uid as u64);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data)
    };
    let io = |e| DockerError::io("build context", e);
    add("Dockerfile", 0o644, 0, dockerfile.as_bytes(), false).map_err(io)?;
    add("rootfs", 0o755, 0, &[], true).map_err(io)?;
    for e in entries {
        match e {
            Entry::Dir(p, mode, uid) => add(&format!("rootfs/{p}"), *mode, *uid, &[], true),
            Entry::File(p, mode, uid, data) => {
                add(&format!("rootfs/{p}"), *mode, *uid, data, false)
            }
        }
        .map_err(io)?;
    }
    b.into_inner().map_err(io)
}

fn services(lines: &str) -> Entry {
    Entry::File("etc/demo/services", 0o644, 0, lines.as_bytes().to_vec())
}

/// Build contexts: (name, Dockerfile, entries).
fn contexts(busybox: Vec<u8>) -> Vec<(&'static str, String, Vec<Entry>)> {
    let base_df = "FROM scratch\nCOPY rootfs/ /\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENTRYPOINT [\"/bin/sh\", \"/init\"]\n".to_string();
    let child_df = format!("FROM {}\nCOPY rootfs/ /\n", image_tag("base"));
    let base = vec![
        Entry::Dir("bin", 0o755, 0),
        Entry::File("bin/busybox", 0o755, 0, busybox),
        Entry::File("bin/pkill", 0o755, 0, PKILL.as_bytes().to_vec()),
        Entry::File("init", 0o755, 0, INIT.as_bytes().to_vec()),
        Entry::Dir("etc", 0o755, 0),
        Entry::Dir("etc/demo", 0o755, 0),
        services(""),
        Entry::File(
            "etc/passwd",
            0o644,
            0,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
        ),
        Entry::File(
            "etc/group",
            0o644,
            0,
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        ),
        Entry::Dir("root", 0o700, 0),
        Entry::Dir("tmp", 0o1777, 0),
        Entry::Dir("var", 0o755, 0),
        Entry::Dir("var/run", 0o755, 0),
    ];
    vec![
        ("base", base_df, base),
        ("outside", child_df.clone(), vec![]),
        (
            "web",
            child_df.clone(),
            vec![
                Entry::Dir("srv", 0o755, 0),
                Entry::Dir("srv/www", 0o777, 0),
                Entry::File(
                    "srv/www/index.html",
                    0o644,
                    0,
                    b"<!doctype html>\n<html><head><title>Vacsine demo</title></head>\n<body><h1>Vacsine demo edge site</h1></body></html>\n".to_vec(),
                ),
                services("httpd -p 80 -h /srv/www\n"),
            ],
        ),
        ("gateway", child_df.clone(), vec![]),
        (
            "legacy",
            child_df.clone(),
            vec![
                Entry::Dir("var/lib", 0o755, 0),
                Entry::Dir("var/lib/dpkg", 0o755, 0),
                Entry::File("var/lib/dpkg/status", 0o644, 0, DPKG_STATUS.as_bytes().to_vec()),
                services("telnetd -p 23 -l /bin/sh\n"),
            ],
        ),
        (
            "ssh",
            child_df,
            vec![
                Entry::Dir("etc/ssh", 0o755, 0),
                Entry::File("etc/ssh/sshd_config", 0o644, 0, SSHD_CONFIG.as_bytes().to_vec()),
                Entry::File(
                    "etc/passwd",
                    0o644,
                    0,
                    b"root:x:0:0:root:/root:/bin/sh\nguest:x:1000:1000:Guest:/home/guest:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
                ),
                Entry::File(
                    "etc/group",
                    0o644,
                    0,
                    b"root:x:0:\nshadow:x:42:\nguest:x:1000:\nnogroup:x:65534:\n".to_vec(),
                ),
                Entry::File(
                    "etc/shadow",
                    0o644,
                    0,
                    b"root:$6$vacsine$demo.hash.not.a.real.password:19000:0:99999:7:::\nguest:$6$vacsine$guest.demo.hash:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n".to_vec(),
                ),
                Entry::Dir("home", 0o755, 0),
                Entry::Dir("home/guest", 0o755, 1000),
            ],
        ),
    ]
}

/// Which images a demo site runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Real Debian services (OpenSSH, nginx, inetd + telnetd): the demo and enforce tests.
    Debian,
    /// Busybox look-alikes: fast driver tests.
    Busybox,
}

/// Debian packages of the demo's base image (on top of debootstrap's minbase).
pub const DEBIAN_PACKAGES: &[&str] = &[
    "openssh-server",
    "nginx-light",
    "inetutils-inetd",
    "inetutils-telnetd",
    "procps",
];

/// Tag of the Debian base image: it names its package list, so a changed list builds anew.
pub fn debian_base_tag() -> String {
    let mut h = Sha256::new();
    h.update(DEBIAN_PACKAGES.join(",").as_bytes());
    let hex = format!("{:x}", h.finalize());
    format!("vacsine-demo/debian:1-{}", &hex[..10])
}

/// Image tag of a role of the Debian site.
pub fn debian_image_tag(role: &str) -> String {
    format!("vacsine-demo/{role}-debian:1")
}

/// The demo's root key (public half), authorized for root in the Debian ssh node.
pub const DEMO_ROOT_KEY_PUB: &str =
    include_str!("../../../examples/edge-site/keys/demo-root-ed25519.pub");

/// PID 1 of the Debian web, gateway and legacy nodes: start the role's services
/// (`/etc/vacsine-demo/rc`, after `VACSINE_DEMO_START_DELAY` seconds), then wait; stop the
/// services and exit on SIGTERM/SIGINT.
const DEBIAN_INIT: &str = r#"#!/bin/sh
# Vacsine demo init (PID 1): start the node's services, then wait; exit on SIGTERM/SIGINT.
trap 'kill $(cat /run/*.pid 2>/dev/null) 2>/dev/null; exit 0' TERM INT
if [ -n "${VACSINE_DEMO_START_DELAY:-}" ]; then
  sleep "$VACSINE_DEMO_START_DELAY" &
  wait $!
fi
[ -x /etc/vacsine-demo/rc ] && /etc/vacsine-demo/rc
while :; do
  sleep 3600 &
  wait $!
done
"#;

const NGINX_SITE: &str = "# Demo web site (nginx, Debian's nginx-light)\nserver {\n\tlisten 80 default_server;\n\tlisten [::]:80 default_server;\n\troot /srv/www;\n\tindex index.html;\n\tserver_name _;\n\tlocation / {\n\t\ttry_files $uri $uri/ =404;\n\t}\n}\n";

const INETD_CONF: &str = "# /etc/inetd.conf: see inetd(8) for further information.\n#\n# <service_name> <sock_type> <proto> <flags> <user> <server_path> <args>\n#\n#:STANDARD: These are standard services.\ntelnet\tstream\ttcp\tnowait\troot\t/usr/sbin/telnetd\ttelnetd\n";

/// Build contexts of the Debian site's roles: (role, Dockerfile, entries). Every image is
/// `FROM` [`debian_base_tag`].
fn debian_contexts() -> Vec<(&'static str, String, Vec<Entry>)> {
    let from = format!("FROM {}\n", debian_base_tag());
    // openssh-server is installed on every node (Debian's base list), but only the ssh node
    // runs it: the others are in the state many container images ship it in, never started,
    // so without host keys (made at first start) — where a harden-sshd fix must still work.
    let init_df = format!(
        "{from}COPY rootfs/ /\nRUN rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub\nENTRYPOINT [\"/bin/sh\", \"/init\"]\n"
    );
    let init = || Entry::File("init", 0o755, 0, DEBIAN_INIT.as_bytes().to_vec());
    let rc = |body: &str| {
        Entry::File(
            "etc/vacsine-demo/rc",
            0o755,
            0,
            format!("#!/bin/sh\n{body}").into_bytes(),
        )
    };
    vec![
        (
            "web",
            format!("{init_df}RUN chmod 0777 /srv/www\n"),
            vec![
                init(),
                Entry::Dir("etc", 0o755, 0),
                Entry::Dir("etc/vacsine-demo", 0o755, 0),
                rc("exec nginx\n"),
                Entry::Dir("etc/nginx", 0o755, 0),
                Entry::Dir("etc/nginx/sites-available", 0o755, 0),
                Entry::File("etc/nginx/sites-available/default", 0o644, 0, NGINX_SITE.as_bytes().to_vec()),
                Entry::Dir("srv", 0o755, 0),
                Entry::Dir("srv/www", 0o755, 0),
                Entry::File(
                    "srv/www/index.html",
                    0o644,
                    0,
                    b"<!doctype html>\n<html><head><title>Vacsine demo</title></head>\n<body><h1>Vacsine demo edge site</h1></body></html>\n".to_vec(),
                ),
            ],
        ),
        ("gateway", init_df.clone(), vec![init()]),
        (
            "legacy",
            init_df,
            vec![
                init(),
                Entry::Dir("etc", 0o755, 0),
                Entry::Dir("etc/vacsine-demo", 0o755, 0),
                rc("exec /usr/sbin/inetutils-inetd\n"),
                Entry::File("etc/inetd.conf", 0o644, 0, INETD_CONF.as_bytes().to_vec()),
            ],
        ),
        (
            "ssh",
            format!(
                "{from}COPY rootfs/ /\nRUN mkdir -p /run/sshd && chmod 0755 /run/sshd && chmod 0644 /etc/shadow \\\n && useradd -m -s /bin/bash -c Guest guest\nENTRYPOINT [\"/usr/sbin/sshd\", \"-D\", \"-e\"]\n"
            ),
            vec![
                Entry::Dir("etc", 0o755, 0),
                Entry::Dir("etc/ssh", 0o755, 0),
                Entry::File("etc/ssh/sshd_config", 0o644, 0, DEBIAN_SSHD_CONFIG.as_bytes().to_vec()),
                Entry::Dir("root", 0o700, 0),
                Entry::Dir("root/.ssh", 0o700, 0),
                Entry::File("root/.ssh/authorized_keys", 0o600, 0, DEMO_ROOT_KEY_PUB.as_bytes().to_vec()),
            ],
        ),
    ]
}

/// Debian's own sshd_config with the demo's weaknesses set explicitly.
const DEBIAN_SSHD_CONFIG: &str = "# Demo sshd configuration (deliberately weak; see sshd_config(5))\nInclude /etc/ssh/sshd_config.d/*.conf\nPort 22\nPermitRootLogin yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\n";

async fn image_hash_label(docker: &Docker, tag: &str) -> Option<String> {
    let img = docker.inspect_image(tag).await.ok()?;
    img.config?.labels?.get(HASH_LABEL).cloned()
}

/// Build one image from a tar context unless an image with its tag carries the same context
/// hash (`vacsine.demo.hash`, which also covers `parent`, the hash or id of the image it
/// starts from). Returns the hash.
async fn build_one(
    docker: &Docker,
    tag: &str,
    dockerfile: &str,
    entries: &[Entry],
    parent: &str,
) -> Result<String, DockerError> {
    let tar = context_tar(dockerfile, entries)?;
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    h.update(&tar);
    let hash = format!("{:x}", h.finalize());
    if image_hash_label(docker, tag).await.as_deref() == Some(hash.as_str()) {
        return Ok(hash);
    }
    tracing::info!(image = %tag, "building demo image");
    let opts = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.to_string()),
        rm: true,
        forcerm: true,
        labels: Some(HashMap::from([(HASH_LABEL.to_string(), hash.clone())])),
        ..Default::default()
    };
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(tar.into())));
    let mut log = String::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| DockerError::Build {
            image: tag.to_string(),
            detail: e.to_string(),
        })?;
        if let Some(e) = info.error.or(info.error_detail.and_then(|d| d.message)) {
            return Err(DockerError::Build {
                image: tag.to_string(),
                detail: format!("{e}\n{log}"),
            });
        }
        if let Some(s) = info.stream {
            log.push_str(&s);
        }
    }
    if image_hash_label(docker, tag).await.is_none() {
        return Err(DockerError::Build {
            image: tag.to_string(),
            detail: format!("the engine reported no error but the image is missing\n{log}"),
        });
    }
    Ok(hash)
}

/// Build the busybox images (`vacsine-demo/<role>:1` and their base) from tar contexts made
/// here; an image whose context did not change is kept as is. Returns the tags.
pub async fn images_busybox(docker: &Docker) -> Result<Vec<String>, DockerError> {
    let path = provision_busybox()?;
    let busybox = std::fs::read(&path).map_err(|_| DockerError::BusyboxMissing {
        path: path.display().to_string(),
    })?;
    let mut base_hash = String::new();
    let mut tags = Vec::new();
    for (name, dockerfile, entries) in contexts(busybox) {
        let tag = image_tag(name);
        let hash = build_one(docker, &tag, &dockerfile, &entries, &base_hash).await?;
        if name == "base" {
            base_hash = hash;
        }
        tags.push(tag);
    }
    Ok(tags)
}

/// Build every image of the demo site: the busybox vantage point, the Debian base image
/// (debootstrap, the first time only: a minute or two, told to `progress`) and the Debian
/// roles. Returns the tags.
pub async fn images_with_progress(
    docker: &Docker,
    progress: std::sync::Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<Vec<String>, DockerError> {
    let mut tags = images_busybox(docker).await?;
    let base = debian_base_tag();
    let p = progress.clone();
    let tag = base.clone();
    let built = tokio::task::spawn_blocking(move || {
        crate::debian::ensure_image_with_progress(&tag, DEBIAN_PACKAGES, &|m: &str| p(m))
    })
    .await
    .map_err(|e| DockerError::Build {
        image: base.clone(),
        detail: e.to_string(),
    })?
    .map_err(|detail| DockerError::Build {
        image: base.clone(),
        detail,
    })?;
    if let crate::debian::Built::Now { suite, took } = built {
        progress(&format!(
            "built {base} from Debian {suite} packages in {:.0} s (kept for later runs)",
            took.as_secs_f64()
        ));
    }
    // Role images are rebuilt when the base image itself changed (its id is in their hash).
    let base_id = docker
        .inspect_image(&base)
        .await
        .map_err(|e| DockerError::api("inspect image", &base, e))?
        .id
        .unwrap_or_default();
    tags.push(base.clone());
    for (role, dockerfile, entries) in debian_contexts() {
        let tag = debian_image_tag(role);
        build_one(docker, &tag, &dockerfile, &entries, &base_id).await?;
        tags.push(tag);
    }
    Ok(tags)
}

/// [`images_with_progress`] without progress reports.
pub async fn images(docker: &Docker) -> Result<Vec<String>, DockerError> {
    images_with_progress(docker, std::sync::Arc::new(|_: &str| {})).await
}

/// Start a fresh Debian demo site (removing any previous one first): builds the images if
/// needed, creates `vacsine-demo-lan` and the five containers, and waits until nginx, inetd
/// and sshd run.
pub async fn up(docker: &Docker) -> Result<(), DockerError> {
    up_flavor(docker, Flavor::Debian).await
}

/// Start a fresh busybox demo site (see [`Flavor::Busybox`]).
pub async fn up_busybox(docker: &Docker) -> Result<(), DockerError> {
    up_flavor(docker, Flavor::Busybox).await
}

/// Start a fresh demo site of the given flavour.
pub async fn up_flavor(docker: &Docker, flavor: Flavor) -> Result<(), DockerError> {
    down(docker).await?;
    match flavor {
        Flavor::Debian => images(docker).await?,
        Flavor::Busybox => images_busybox(docker).await?,
    };
    docker
        .create_network(NetworkCreateRequest {
            name: NETWORK.into(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(LABEL.to_string(), "1".to_string())])),
            ..Default::default()
        })
        .await
        .map_err(|e| DockerError::api("create network", NETWORK, e))?;
    for role in ROLES {
        let name = container_name(role);
        // Explicit on every container: a new network namespace may inherit forwarding=1
        // from the host, and only the gateway is meant to forward.
        let forward = if role == "gateway" { "1" } else { "0" };
        let sysctls = Some(HashMap::from([(
            "net.ipv4.ip_forward".to_string(),
            forward.to_string(),
        )]));
        let body = ContainerCreateBody {
            image: Some(match flavor {
                Flavor::Debian if role != "outside" => debian_image_tag(role),
                _ => image_tag(role),
            }),
            hostname: Some(role.into()),
            // The web server takes a while to listen, like a real one: clones of it are not
            // ready at once (the enforce fidelity check must wait for them).
            env: (role == "web")
                .then(|| vec![format!("VACSINE_DEMO_START_DELAY={WEB_START_DELAY_S}")]),
            labels: Some(HashMap::from([
                (LABEL.to_string(), "1".to_string()),
                (ROLE_LABEL.to_string(), role.to_string()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some(NETWORK.into()),
                sysctls,
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    NETWORK.to_string(),
                    EndpointSettings {
                        aliases: Some(vec![role.to_string()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| DockerError::api("create container", &name, e))?;
        docker
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| DockerError::api("start container", &name, e))?;
    }
    // Wait for the services (the web server starts after a delay) so the first check sees a
    // settled site: the daemon running and its socket listening (on a loaded machine a daemon
    // binds its port a while after it starts).
    let daemons: &[(&str, &str, u16)] = match flavor {
        Flavor::Debian => &[
            ("web", "nginx", 80),
            ("legacy", "inetutils-inetd", 23),
            ("ssh", "sshd", 22),
        ],
        Flavor::Busybox => &[("web", "httpd", 80), ("legacy", "telnetd", 23)],
    };
    for &(role, daemon, port) in daemons {
        let node = crate::DockerNode::new(
            docker.clone(),
            vacsine_core::target::ResolvedNode {
                name: role.into(),
                roles: vec![],
                labels: BTreeMap::new(),
                handle: container_name(role),
            },
        );
        let pid = node.pid().await?;
        let mut ok = false;
        for _ in 0..100 {
            let procs = tokio::task::spawn_blocking(move || processes_in_pidns(pid))
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default();
            if procs.iter().any(|p| p == daemon) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !ok {
            return Err(DockerError::Api {
                op: "start service in".into(),
                object: container_name(role),
                detail: format!(
                    "{daemon} did not start within 5 s (see `docker logs {}`)",
                    container_name(role)
                ),
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !listening(pid, port) {
            if tokio::time::Instant::now() > deadline {
                return Err(DockerError::Api {
                    op: "start service in".into(),
                    object: container_name(role),
                    detail: format!(
                        "{daemon} runs but does not listen on TCP port {port} after 30 s (see `docker logs {}`)",
                        container_name(role)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Whether a TCP socket listens on `port` in the network namespace of process `pid` (read
/// from the host's `/proc/<pid>/net/tcp{,6}`).
fn listening(pid: i64, port: u16) -> bool {
    [("tcp", false), ("tcp6", true)].iter().any(|(t, v6)| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .ok()
            .and_then(|text| {
                vacsine_core::procnet::parse_table(&text, vacsine_core::policy::Protocol::Tcp, *v6)
                    .ok()
            })
            .is_some_and(|l| l.iter().any(|l| l.port == port))
    })
}

/// Remove the demo site's containers and network (sandbox clones are left to
/// [`crate::sandbox::gc`]). Idempotent; returns the removed containers.
pub async fn down(docker: &Docker) -> Result<Vec<String>, DockerError> {
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL}=1")],
            )])),
            ..Default::default()
        }))
        .await
        .map_err(|e| DockerError::api("list containers", "vacsine.demo=1", e))?;
    let mut removed = Vec::new();
    for c in list {
        if c.labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SANDBOX_LABEL))
        {
            continue;
        }
        let Some(id) = c.id else { continue };
        let name = c
            .names
            .and_then(|n| n.first().cloned())
            .unwrap_or_else(|| id.clone())
            .trim_start_matches('/')
            .to_string();
        match docker
            .remove_container(
                &id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => removed.push(name),
            Err(e) if is_not_found(&e) => {}
            // Another caller is removing it: wait until it is gone.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                for _ in 0..100 {
                    match docker
                        .inspect_container(
                            &id,
                            None::<bollard::query_parameters::InspectContainerOptions>,
                        )
                        .await
                    {
                        Err(e) if is_not_found(&e) => break,
                        _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                    }
                }
                removed.push(name);
            }
            Err(e) => return Err(DockerError::api("remove container", &name, e)),
        }
    }
    match docker.remove_network(NETWORK).await {
        Ok(()) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(DockerError::api("remove network", NETWORK, e)),
    }
    removed.sort();
    Ok(removed)
}

/// The target description of the demo site: nodes `web`, `gateway`, `legacy`, `ssh` (named
/// after their role, which is also their only role) and the vantage point `outside`.
pub fn target() -> Target {
    Target {
        api_version: vacsine_core::API_VERSION.into(),
        kind: "Target".into(),
        metadata: Metadata {
            name: Loc::new("demo".into()),
            version: None,
            description: Some("Vacsine demo edge site (docker)".into()),
            labels: BTreeMap::new(),
        },
        spec: TargetSpec {
            driver: DriverKind::Docker,
            nodes: ["web", "gateway", "legacy", "ssh"]
                .iter()
                .map(|r| NodeSpec {
                    name: Some(Loc::new(r.to_string())),
                    container: Some(Loc::new(container_name(r))),
                    selector: BTreeMap::new(),
                    roles: vec![r.to_string()],
                    labels: BTreeMap::new(),
                })
                .collect(),
            vantage_points: vec![VantagePoint {
                name: Loc::new("outside".into()),
                container: Loc::new(container_name("outside")),
            }],
            management_network: None,
        },
    }
}
