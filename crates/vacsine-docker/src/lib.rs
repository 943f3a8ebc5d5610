//! Vacsine docker driver: the only crate that talks to the Docker Engine.
//!
//! * [`DockerDriver`] implements the core's [`vacsine_core::driver::Driver`] seam: the enforce
//!   pipeline and the CLI reach this crate only through it (and `demo`/`sandbox gc`).
//! * [`DockerSite`] resolves a [`vacsine_core::target::Target`] into containers and implements
//!   [`vacsine_core::node::Site`]: it gathers an [`vacsine_core::node::Observation`] for every
//!   probe kind.
//! * [`DockerNode`] implements [`vacsine_core::node::NodeOps`] for one container (exec, files,
//!   nftables, sysctls, quarantine).
//! * [`sandbox`] clones a site into an isolated copy (design §5 step 2) and garbage-collects
//!   sandboxes by label.
//! * [`events`] follows Docker's event stream for a target's containers (`vacsine watch`).
//! * [`demo`] builds the demo images locally (no registry) and starts/stops the demo site: a
//!   fixture on top of the driver, which never needs it (the host's static busybox and the
//!   view of a container's processes from the host live in the private `host` module).
//!
//! Files are read and written through `/proc/<pid>/root` of the container with
//! `openat2(RESOLVE_IN_ROOT)`, so a symlink inside a container never resolves to a host path.
//! Network namespace work (nft, sysctl, probes from a vantage point) runs host tools under
//! `nsenter -t <pid> -n`, spawned with argv lists, never a shell string.
#![forbid(unsafe_code)]
// The driver is where nodes are reached: it spawns host tools and talks to the Docker API
// (see the workspace clippy.toml).
#![allow(clippy::disallowed_methods)]

pub mod debian;
pub mod decoy;
pub mod demo;
mod driver;
mod error;
pub mod events;
mod exec;
mod fsroot;
mod host;
mod node;
pub mod sandbox;
mod site;
mod ssh;

pub use bollard::Docker;
pub use driver::DockerDriver;
pub use error::DockerError;
pub use node::DockerNode;

pub use sandbox::{Sandbox, SandboxInfo};
pub use site::DockerSite;

/// Label carried by every object of a sandbox (`vacsine.sandbox=<id>`).
pub const SANDBOX_LABEL: &str = "vacsine.sandbox";

/// Connect to the local Docker Engine (socket or `DOCKER_HOST`) and negotiate the API version
/// (the engine here may be older than the client).
pub async fn connect() -> Result<bollard::Docker, DockerError> {
    let docker = bollard::Docker::connect_with_local_defaults().map_err(DockerError::connect)?;
    docker
        .negotiate_version()
        .await
        .map_err(DockerError::connect)
}
