//! The driver seam: what the enforce pipeline and the CLI need from a driver (Docker today; a
//! remote agent or SSH driver tomorrow). A [`Driver`] resolves a target into a
//! [`ResolvedSite`], which is a [`Site`] (nodes, [`crate::node::NodeOps`], observation) that
//! can also clone itself into an isolated sandbox. The pipeline names only these traits; the
//! binary chooses the implementation for a target's `driver:` in one place.

use crate::node::Site;
use crate::target::Target;
use async_trait::async_trait;
use std::error::Error;
use std::sync::Arc;

/// What a driver error is about, for callers that act on it (the CLI locates a missing node
/// in the target file). The message itself comes from the driver and names the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverErrorKind {
    /// The driver's backend (Docker Engine, agent…) cannot be reached.
    Unreachable,
    /// A node the target names by handle (e.g. `container:`) does not exist or is not running.
    NodeMissing { handle: String },
    /// The target does not fit the driver (wrong `driver:`, empty selector, duplicate names).
    InvalidTarget,
    /// A sandbox could not be created or torn down completely.
    Sandbox,
    /// Anything else (an API call, a host tool).
    Other,
}

/// An error of a driver: its kind, the driver's name and the driver's own error (whose
/// message says what failed and how to fix it). Displays as that message.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct DriverError {
    kind: DriverErrorKind,
    driver: &'static str,
    #[source]
    source: Box<dyn Error + Send + Sync>,
}

impl DriverError {
    pub fn new(
        driver: &'static str,
        kind: DriverErrorKind,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        DriverError {
            kind,
            driver,
            source: source.into(),
        }
    }
    pub fn kind(&self) -> &DriverErrorKind {
        &self.kind
    }
    /// Name of the driver that failed (`docker`).
    pub fn driver(&self) -> &'static str {
        self.driver
    }
}

/// Progress messages of a long driver operation (a clone).
pub type ProgressFn<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// Chooses nodes for a target and owns the sandboxes it makes.
#[async_trait]
pub trait Driver: Send + Sync {
    /// The driver's name (`docker`), as in a target's `driver:`.
    fn name(&self) -> &'static str;
    /// Resolve `target` into its nodes. A node that exists but is not available (stopped)
    /// stays in the site, its checks errors with the reason; a target the driver cannot
    /// serve at all is an error.
    async fn resolve(&self, target: &Target) -> Result<Arc<dyn ResolvedSite>, DriverError>;
    /// Remove every object of sandbox `id`, waiting first for this process's requests still
    /// creating some (an interrupted clone). Idempotent: nothing left gives `Ok(vec![])`;
    /// returns what was removed. Used on error paths and by a Ctrl-C handler, which only
    /// knows the id.
    async fn teardown(&self, sandbox_id: &str) -> Result<Vec<String>, DriverError>;
    /// Follow the lifecycle of `target`'s nodes (starts, restarts, removals) from now on, as
    /// the driver's platform reports them. Only the target's own nodes are reported, never a
    /// sandbox clone. A driver that cannot follow its nodes says so (the default).
    async fn node_events(&self, target: &Target) -> Result<Box<dyn NodeEvents>, DriverError> {
        Err(DriverError::new(
            self.name(),
            DriverErrorKind::InvalidTarget,
            format!(
                "the {} driver of target `{}` cannot follow its nodes' events (`vacsine watch` needs `driver: docker`)",
                self.name(),
                target.metadata.name.value
            ),
        ))
    }
}

/// What happened to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEventKind {
    /// The node (re)started: state kept only by the running node is gone.
    Started,
    /// The node was removed (it may come back later under the same handle).
    Removed,
}

impl NodeEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeEventKind::Started => "start",
            NodeEventKind::Removed => "remove",
        }
    }
}

/// A lifecycle event of one node of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// The node's driver handle (docker: container name), as in
    /// [`crate::target::ResolvedNode::handle`].
    pub handle: String,
    pub kind: NodeEventKind,
    /// When the platform says it happened.
    pub at: std::time::SystemTime,
}

/// A stream of node events, made by [`Driver::node_events`].
#[async_trait]
pub trait NodeEvents: Send {
    /// The next event. An error says the stream was lost (the backend went away); the next
    /// call reconnects and resumes from the last event seen, so none is skipped while the
    /// backend keeps them. `None`: the stream cannot go on.
    async fn next(&mut self) -> Option<Result<NodeEvent, DriverError>>;
}

/// A site resolved by a driver, which can be cloned into a sandbox.
#[async_trait]
pub trait ResolvedSite: Site {
    /// This site as a plain [`Site`].
    fn as_site(&self) -> &dyn Site;
    /// This site as a shared plain [`Site`] (for observers that keep it).
    fn into_site(self: Arc<Self>) -> Arc<dyn Site>;
    /// Clone the site into sandbox `id`: isolated copies of its nodes (and vantage points)
    /// that the returned site resolves under the same names. The target is never paused or
    /// stopped. On failure, everything already created is torn down before the error is
    /// returned; an interrupted clone is removed by [`Driver::teardown`] with the same id.
    async fn clone_sandbox(
        &self,
        id: &str,
        progress: ProgressFn<'_>,
    ) -> Result<SandboxClone, DriverError>;
}

/// A sandbox made by [`ResolvedSite::clone_sandbox`].
pub struct SandboxClone {
    /// The clones, under the original node names.
    pub site: Box<dyn Site>,
    /// Removes the sandbox. Dropping it removes nothing (the caller may keep the sandbox).
    pub handle: Box<dyn SandboxHandle>,
}

/// Tears a sandbox down.
#[async_trait]
pub trait SandboxHandle: Send + Sync {
    /// The sandbox id.
    fn id(&self) -> &str;
    /// Remove every object of the sandbox (idempotent); returns what was removed.
    async fn teardown(&self) -> Result<Vec<String>, DriverError>;
    /// Restart every clone of the sandbox as its platform restarts a node (Docker: `docker
    /// restart`), and return once each runs again (its services may still be starting);
    /// returns the clones restarted. State kept only by the running node (a network
    /// namespace's firewall tables, runtime sysctls, processes) is lost, so the pipeline can
    /// tell which fixes persist.
    async fn restart(&self) -> Result<Vec<String>, DriverError>;
}
