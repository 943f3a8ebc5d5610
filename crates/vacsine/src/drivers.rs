//! The one place that maps a target's `driver:` to an implementation of the core's driver
//! seam ([`vacsine_core::driver::Driver`]). Commands reach nodes and sandboxes through what
//! this returns; the `local` driver has no sandbox and is only used by `vacsine run`
//! (`runcmd.rs`, through the engine's `LocalNode`).

use std::sync::Arc;
use vacsine_core::driver::{Driver, DriverError, DriverErrorKind, ResolvedSite};
use vacsine_core::target::{DriverKind, Target};

/// The driver that resolves, observes and clones the nodes of `target`.
pub fn for_target(target: &Target) -> Result<Arc<dyn Driver>, DriverError> {
    match target.spec.driver {
        DriverKind::Docker => Ok(Arc::new(vacsine_docker::DockerDriver)),
        DriverKind::Local => Err(DriverError::new(
            "local",
            DriverErrorKind::InvalidTarget,
            format!(
                "target `{}` uses `driver: local`, which only `vacsine run` supports: check, plan and enforce need a driver that observes and clones its nodes (`driver: docker`)",
                target.metadata.name.value
            ),
        )),
    }
}

/// Resolve `target` through its driver.
pub async fn resolve(target: &Target) -> Result<Arc<dyn ResolvedSite>, DriverError> {
    for_target(target)?.resolve(target).await
}
