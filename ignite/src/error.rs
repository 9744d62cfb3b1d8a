//! The crate's one error type.
//!
//! Every variant names the node address it concerns and, where there is one, the operation, the
//! cache and the key, so that an error printed at the top of the binary says where it happened
//! without a backtrace.

use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to Ignite.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The [`ClientConfig`](crate::ClientConfig) cannot be used.
    #[error("invalid Ignite client configuration: {message}")]
    Config { message: String },

    /// TCP connect failed.
    #[error("cannot connect to Ignite node {address}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },

    /// TCP connect, TLS and handshake together took longer than the connect timeout.
    #[error("connecting to Ignite node {address} timed out after {timeout:?}")]
    ConnectTimeout { address: String, timeout: Duration },

    /// The TLS handshake failed, or the CA file could not be used.
    #[error("TLS with Ignite node {address} failed: {message}")]
    Tls { address: String, message: String },

    /// The node refused the thin-client handshake (wrong credentials, unsupported version).
    #[error("Ignite node {address} rejected the handshake (server protocol {server_version}): {message}")]
    HandshakeRejected {
        address: String,
        server_version: String,
        message: String,
    },

    /// Every configured address was tried and none answered.
    #[error("no Ignite node reachable at {addresses}")]
    NoNodeReachable {
        addresses: String,
        #[source]
        last: Box<Error>,
    },

    /// The connection broke (I/O error, EOF or a desynchronised stream) while a request was
    /// in flight. Only the requests on that connection fail; the next request reconnects.
    #[error("connection to Ignite node {address} lost during {op}: {reason}")]
    ConnectionLost {
        address: String,
        op: &'static str,
        reason: String,
    },

    /// No reply within the request timeout.
    #[error("{op} on cache {cache:?} timed out after {timeout:?} (node {address})")]
    RequestTimeout {
        address: String,
        op: &'static str,
        cache: String,
        timeout: Duration,
    },

    /// The node answered with an error status.
    #[error("Ignite node {address} failed {op} on cache {cache:?}{}: status {status}: {message}", key_suffix(.key))]
    Server {
        address: String,
        op: &'static str,
        cache: String,
        key: Option<String>,
        status: i32,
        message: String,
    },

    /// The node's reply could not be decoded.
    #[error("malformed reply from Ignite node {address} to {op}: {detail}")]
    Protocol {
        address: String,
        op: &'static str,
        detail: String,
    },

    /// A value stored under a key is not a byte array (written by another kind of client).
    #[error("value of key {key:?} in cache {cache:?} is not a byte array (binary type code {type_code})")]
    UnexpectedValueType {
        cache: String,
        key: String,
        type_code: u8,
    },

    /// A key or value does not fit the protocol's 32-bit lengths or the configured frame limit.
    #[error("{what} of {len} bytes is too large for one Ignite request (limit {limit} bytes)")]
    TooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
}

fn key_suffix(key: &Option<String>) -> String {
    match key {
        Some(key) => format!(", key {key:?}"),
        None => String::new(),
    }
}

impl Error {
    /// True for errors after which retrying on another connection may succeed.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::ConnectTimeout { .. }
                | Error::ConnectionLost { .. }
                | Error::NoNodeReachable { .. }
                | Error::Tls { .. }
        )
    }
}
