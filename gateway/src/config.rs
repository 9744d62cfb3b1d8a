//! The gateway's settings, passed in explicitly by whoever embeds it (the `kfcache gateway`
//! command merges flags, `KFCACHE_*` and the AWS environment into these structs).
//!
//! Clients sign their requests with the origin's own access key, so they need no new
//! credentials: the gateway verifies the signature with [`S3Credentials`] and signs again
//! towards the origin with the same key.

use std::time::Duration;

/// An S3 access key and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Where the origin is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// The origin's endpoint (`http://minio.kubeflow:9000`); AWS S3 of `region` when unset.
    pub endpoint: Option<String>,
    pub region: String,
    pub credentials: S3Credentials,
    /// Limit for connecting to the origin.
    pub connect_timeout: Duration,
}

/// How the gateway behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The Kubernetes namespace this gateway serves: the cache it reads is that tenant's key
    /// namespace (`NAMESPACE.TENANT`, decided by whoever builds the
    /// [`kfcache_prefetcher::ObjectCache`]); here it labels logs.
    pub tenant: String,
    /// The key clients must sign with (normally the origin's own).
    pub credentials: S3Credentials,
    /// Longest wait for any one cache call (a manifest lookup, one batch of chunks). A call
    /// that takes longer is a miss, and the request is answered from the origin.
    pub cache_timeout: Duration,
    /// After a cache call timed out, the cache is not asked again for this long: a hung
    /// cluster costs one timeout, not one per request.
    pub cache_cooldown: Duration,
    /// Longest wait for the HEAD that decides whether a cached copy is current. When the
    /// origin does not answer in time the cached copy's checksums are trusted, as `kfcache
    /// sidecar init` does.
    pub freshness_timeout: Duration,
    /// Base domains for virtual-host-style requests (`BUCKET.DOMAIN`). Requests to any other
    /// host (an IP address, a service name) are path-style.
    pub virtual_host_domains: Vec<String>,
    /// Whether objects uploaded through the gateway (`PutObject`, multipart uploads) are
    /// written into the cache once the origin has stored them, so that the next task's read
    /// is a hit. Never delays nor fails the upload.
    pub write_through: bool,
    /// Objects larger than this are not written through (nor filled).
    pub write_through_max_object: u64,
    /// Bytes of upload bodies (and fill copies) held in memory at once, across requests in
    /// flight; what does not fit is not written through.
    pub write_through_buffer: u64,
    /// Parts of a multipart upload that is neither completed nor aborted for this long are
    /// dropped.
    pub write_through_idle: Duration,
    /// On-demand fill: when set, a full `GetObject` that misses (not cached, or stale) is
    /// written into the cache as it passes, after evicting least-recently-used objects until
    /// the namespace holds at most this many bytes (the rule of `kfcache sidecar init
    /// --fill-budget`). Off by default: kfcache stages ahead instead.
    pub fill_budget: Option<u64>,
}

impl GatewayConfig {
    /// Defaults for `tenant` signing with `credentials`: 5 s cache calls, 30 s cool-down, 10 s
    /// freshness checks, path-style only; write-through of objects up to 1 GiB with 2 GiB of
    /// buffers and unfinished uploads dropped after 1 h; no on-demand fill.
    pub fn new(tenant: impl Into<String>, credentials: S3Credentials) -> GatewayConfig {
        GatewayConfig {
            tenant: tenant.into(),
            credentials,
            cache_timeout: Duration::from_secs(5),
            cache_cooldown: Duration::from_secs(30),
            freshness_timeout: Duration::from_secs(10),
            virtual_host_domains: Vec::new(),
            write_through: true,
            write_through_max_object: 1 << 30,
            write_through_buffer: 2 << 30,
            write_through_idle: Duration::from_secs(3600),
            fill_budget: None,
        }
    }
}
