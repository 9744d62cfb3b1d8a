//! The crate's one error type.
//!
//! Errors that belong to one pod (a missing secret, an unsupported volume, a container that
//! cannot start) carry the pod and the thing that failed, and become the pod's Failed status
//! (`reason` from [`Error::reason`], `message` from `Display`); they never stop the agent.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API: {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// Reading or writing a file or directory of the agent's state failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A volume of the pod is of a kind the agent does not provide.
    #[error("volume {volume:?}: {what} is not supported by the kfcache test node agent")]
    UnsupportedVolume { volume: String, what: String },
    /// A volume's source (secret, configMap, key) does not exist and is not optional.
    #[error("volume {volume:?}: {message}")]
    VolumeSource { volume: String, message: String },
    /// A container mounts a volume that the pod does not declare.
    #[error("container {container:?}: volumeMount {volume:?} names no volume of the pod")]
    UnknownVolume { container: String, volume: String },
    /// An environment variable could not be resolved.
    #[error("container {container:?}: env {variable:?}: {message}")]
    Env {
        container: String,
        variable: String,
        message: String,
    },
    /// A container has no command and its image has no configured entrypoint.
    #[error(
        "container {container:?}: image {image:?} has no command in the pod spec and no \
         --image-entrypoint mapping; the test node agent has no image metadata to read one from"
    )]
    NoEntrypoint { container: String, image: String },
    /// Starting a container's process failed.
    #[error("container {container:?}: could not start {program}: {source}")]
    Spawn {
        container: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A command-line setting is malformed.
    #[error("invalid setting {setting}: {message}")]
    Config { setting: String, message: String },
    /// A host tool the agent needs (unshare, mount, chroot, sh) is missing.
    #[error("host tool {tool:?} not found in {searched}")]
    MissingTool { tool: String, searched: String },
    /// An object to create is not what its type expects.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The short CamelCase reason the kubelet-like status carries for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "NodeAgentAPIError",
            Error::Io { .. } => "NodeAgentIOError",
            Error::UnsupportedVolume { .. } => "UnsupportedVolume",
            Error::VolumeSource { .. } | Error::UnknownVolume { .. } => "FailedMount",
            Error::Env { .. } => "CreateContainerConfigError",
            Error::NoEntrypoint { .. } => "CreateContainerConfigError",
            Error::Spawn { .. } => "StartError",
            Error::Config { .. } | Error::MissingTool { .. } => "NodeAgentMisconfigured",
            Error::Invalid(_) => "InvalidObject",
        }
    }

    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
