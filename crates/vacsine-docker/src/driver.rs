//! The docker driver behind the core's [`Driver`] seam: [`DockerDriver`] resolves targets into
//! [`DockerSite`]s and tears sandboxes down; [`DockerSite`] clones itself into a sandbox.

use crate::sandbox::{self, Sandbox};
use crate::{DockerError, DockerSite};
use async_trait::async_trait;
use std::sync::Arc;
use vacsine_core::driver::{
    Driver, DriverError, DriverErrorKind, NodeEvents, ProgressFn, ResolvedSite, SandboxClone,
    SandboxHandle,
};
use vacsine_core::node::Site;
use vacsine_core::target::Target;

const NAME: &str = "docker";

impl From<DockerError> for DriverError {
    fn from(e: DockerError) -> Self {
        let kind = match &e {
            DockerError::Connect { .. } => DriverErrorKind::Unreachable,
            DockerError::ContainerNotFound { container, .. } => DriverErrorKind::NodeMissing {
                handle: container.clone(),
            },
            DockerError::SelectorEmpty { .. }
            | DockerError::DuplicateNode { .. }
            | DockerError::InvalidTarget { .. } => DriverErrorKind::InvalidTarget,
            DockerError::Sandbox { .. } => DriverErrorKind::Sandbox,
            _ => DriverErrorKind::Other,
        };
        DriverError::new(NAME, kind, e)
    }
}

/// The docker driver: containers of the local Docker Engine (socket or `DOCKER_HOST`). It
/// connects on each call, so making one costs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct DockerDriver;

#[async_trait]
impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn resolve(&self, target: &Target) -> Result<Arc<dyn ResolvedSite>, DriverError> {
        Ok(Arc::new(DockerSite::connect(target).await?))
    }

    async fn teardown(&self, sandbox_id: &str) -> Result<Vec<String>, DriverError> {
        let docker = crate::connect().await?;
        Ok(sandbox::teardown(&docker, sandbox_id).await?)
    }

    async fn node_events(&self, target: &Target) -> Result<Box<dyn NodeEvents>, DriverError> {
        let docker = crate::connect().await?;
        Ok(Box::new(crate::events::DockerNodeEvents::new(
            docker, target,
        )?))
    }
}

#[async_trait]
impl ResolvedSite for DockerSite {
    fn as_site(&self) -> &dyn Site {
        self
    }

    fn into_site(self: Arc<Self>) -> Arc<dyn Site> {
        self
    }

    async fn clone_sandbox(
        &self,
        id: &str,
        progress: ProgressFn<'_>,
    ) -> Result<SandboxClone, DriverError> {
        let (handle, site) = DockerSite::clone_sandbox(self, id, progress).await?;
        Ok(SandboxClone {
            site: Box::new(site),
            handle: Box::new(handle),
        })
    }
}

#[async_trait]
impl SandboxHandle for Sandbox {
    fn id(&self) -> &str {
        Sandbox::id(self)
    }

    async fn teardown(&self) -> Result<Vec<String>, DriverError> {
        Ok(Sandbox::teardown(self).await?)
    }

    async fn restart(&self) -> Result<Vec<String>, DriverError> {
        Ok(Sandbox::restart(self).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CLI locates a missing container in the target file from the kind alone; the
    /// message (with its fix) is the driver's, unchanged.
    #[test]
    fn docker_errors_keep_their_message_and_say_their_kind() {
        let check = |e: DockerError, kind: DriverErrorKind| {
            let text = e.to_string();
            let d = DriverError::from(e);
            assert_eq!(d.kind(), &kind);
            assert_eq!(d.to_string(), text);
            assert_eq!(d.driver(), "docker");
            assert!(std::error::Error::source(&d).is_some());
        };
        check(
            DockerError::ContainerNotFound {
                container: "vacsine-demo-web".into(),
                detail: "is not running".into(),
            },
            DriverErrorKind::NodeMissing {
                handle: "vacsine-demo-web".into(),
            },
        );
        check(
            DockerError::Connect {
                detail: "no socket".into(),
            },
            DriverErrorKind::Unreachable,
        );
        check(
            DockerError::SelectorEmpty {
                selector: "{app=web}".into(),
            },
            DriverErrorKind::InvalidTarget,
        );
        check(
            DockerError::Sandbox {
                id: "sbx-1".into(),
                detail: "left objects".into(),
            },
            DriverErrorKind::Sandbox,
        );
        check(
            DockerError::Tool {
                tool: "nft".into(),
                detail: "missing".into(),
            },
            DriverErrorKind::Other,
        );
    }
}
