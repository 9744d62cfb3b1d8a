//! The one error type of kfcache-gateway: what can go wrong while configuring and starting a
//! gateway. Failures while serving a request never surface here: a cache that fails turns into
//! a miss (the request is answered from the origin), and an origin that fails answers the
//! client with the S3 error the origin (or the forwarding client) gave.

use std::net::SocketAddr;

/// What can go wrong when building or running a [`crate::Gateway`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot be used.
    #[error("invalid gateway configuration: {reason}")]
    Config { reason: String },

    /// A virtual-host base domain that is not a domain name.
    #[error("invalid virtual-host domain {domain:?}")]
    Domain { domain: String },

    /// The listening socket failed.
    #[error("cannot {op} on {addr:?}")]
    Listen {
        op: &'static str,
        addr: Option<SocketAddr>,
        #[source]
        source: std::io::Error,
    },

    /// The metrics could not be rendered.
    #[error("cannot encode the metrics")]
    Metrics(#[source] std::fmt::Error),
}

/// `Result` with the gateway's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
