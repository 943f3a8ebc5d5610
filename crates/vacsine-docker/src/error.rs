//! Errors of the docker driver. Every message names the object and, where there is one, the fix.

/// Errors of the docker driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// The Docker Engine cannot be reached.
    #[error("cannot reach the Docker Engine: {detail} (is dockerd running and is /var/run/docker.sock (or DOCKER_HOST) accessible to this user?)")]
    Connect { detail: String },
    /// A container named in the target does not exist or is not running.
    #[error("container `{container}` {detail}: start it (e.g. `vacsine demo up` for the demo site, or `docker start {container}`) or fix the target's `container:` field")]
    ContainerNotFound { container: String, detail: String },
    /// A label selector matched no running container.
    #[error("node selector {selector} matched no running container: start the containers or fix the target's `selector:` labels")]
    SelectorEmpty { selector: String },
    /// Two nodes resolve to the same name.
    #[error("node name `{name}` is used twice in the target: give each node a distinct `name:`")]
    DuplicateNode { name: String },
    /// A target field is invalid for the docker driver.
    #[error("invalid target for the docker driver: {detail}")]
    InvalidTarget { detail: String },
    /// A Docker API call failed.
    #[error("docker {op} `{object}` failed: {detail}")]
    Api {
        op: String,
        object: String,
        detail: String,
    },
    /// A host tool (nsenter, nft) failed or is missing.
    #[error("`{tool}` failed: {detail}")]
    Tool { tool: String, detail: String },
    /// Building a demo image failed.
    #[error("building image `{image}` failed: {detail}")]
    Build { image: String, detail: String },
    /// The static busybox needed by the demo images is missing.
    #[error("static busybox not found at {path}: install it with `apt-get install -y busybox-static` (Debian package busybox-static), or set VACSINE_BUSYBOX to a statically linked busybox")]
    BusyboxMissing { path: String },
    /// A sandbox could not be created or torn down completely.
    #[error("sandbox `{id}`: {detail}")]
    Sandbox { id: String, detail: String },
    /// Local I/O error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl DockerError {
    pub(crate) fn connect(e: bollard::errors::Error) -> Self {
        DockerError::Connect {
            detail: e.to_string(),
        }
    }
    pub(crate) fn api(op: &str, object: &str, e: impl std::fmt::Display) -> Self {
        DockerError::Api {
            op: op.into(),
            object: object.into(),
            detail: e.to_string(),
        }
    }
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        DockerError::Io {
            context: context.into(),
            source,
        }
    }
}

/// True when a bollard error is a 404 from the engine.
pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
