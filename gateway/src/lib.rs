//! kfcache-gateway: the kfcache S3 gateway, an S3-compatible read-through endpoint in front of
//! the cache.
//!
//! Argo's `init` container (minio-go), KFP v2's launcher (aws-sdk-go-v2 through gocloud) and
//! user code (boto3) all read their inputs from S3 themselves. Pointing them at the gateway
//! instead of the origin makes every read of a staged object come from the Ignite cache,
//! without changing the pipelines beyond the endpoint:
//!
//! - `GetObject` of a staged, current object is answered from the cache: full and `Range`
//!   reads, the origin's ETag, `Last-Modified`, verified chunks (the rules are those of
//!   `kfcache sidecar init`; see `src/service.rs`). The origin sees one HEAD and no GET.
//! - Uploads (`PutObject` with aws-chunked streaming signatures, multipart uploads) are
//!   forwarded, and written through into the cache once the origin has stored them
//!   (`GatewayConfig::write_through`, on by default): Argo's `wait` uploads a task's outputs,
//!   and the next task's download of them is a hit. The copy is taken as the body passes and
//!   written after the origin's OK, under the ETag the origin gave; it never delays nor fails
//!   the upload, and it is bounded per object and in total (see `src/write.rs`).
//! - With a fill budget (`GatewayConfig::fill_budget`, off by default), a full `GetObject`
//!   that missed is written into the cache as it passes, evicting least-recently-used objects
//!   to stay within the budget: the on-demand LRU cache `kfcache bench e2e` compares
//!   prefetching against, with the rule of `kfcache sidecar init --fill-budget`.
//! - Everything else (`ListObjectsV2`, `GetBucketLocation`, `HeadBucket`, `DeleteObject(s)`,
//!   `CopyObject`, …) is forwarded to the origin unchanged.
//! - Clients sign with the origin's access key; the gateway verifies SigV4 and signs again
//!   towards the origin.
//! - One gateway serves one tenant (Kubernetes namespace): it reads the cache under that
//!   tenant's key namespace, the one `kfcache prefetch --tenant NS` stages into.
//!
//! ```no_run
//! # async fn run(cache: kfcache_prefetcher::ObjectCache<dyn kfcache_prefetcher::CacheSink>) -> kfcache_gateway::Result<()> {
//! use std::sync::Arc;
//! use kfcache_gateway::{Gateway, GatewayConfig, Origin, OriginConfig, S3Credentials};
//! use kfcache_prefetcher::{ObjectStoreSource, SourceConfig};
//!
//! let credentials = S3Credentials { access_key_id: "minio".into(), secret_access_key: "minio123".into() };
//! let origin = Origin::new(
//!     &OriginConfig {
//!         endpoint: Some("http://minio-service.kubeflow:9000".into()),
//!         region: "us-east-1".into(),
//!         credentials: credentials.clone(),
//!         connect_timeout: std::time::Duration::from_secs(5),
//!     },
//!     Arc::new(ObjectStoreSource::new(SourceConfig::default())),
//! );
//! let gateway = Gateway::new(GatewayConfig::new("team-a", credentials), Some(cache), origin)?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:9000").await.map_err(|source| {
//!     kfcache_gateway::Error::Listen { op: "listen", addr: None, source }
//! })?;
//! gateway.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! ## Why these crates
//!
//! - **s3s 0.14** implements the server side of the S3 protocol: routing of path-style and
//!   virtual-host-style requests into typed inputs, XML, SigV4 header and presigned-URL
//!   verification, and decoding of `aws-chunked` streaming-signature bodies (what minio-go
//!   sends over plain HTTP). It is the only maintained crate that does; its README calls it
//!   experimental. s3s 0.15 and later need Rust 1.96 (`cargo info s3s@0.15.0`), newer than the
//!   1.95 toolchain here, so 0.14.1 (Rust 1.92) it is.
//! - **s3s-aws 0.14** `Proxy` implements every operation of `s3s::S3` (98 of 99, all but
//!   browser `PostObject`) by converting the typed input into an aws-sdk-s3 call and the
//!   output back, headers included: forwarding is "unchanged" without writing a converter per
//!   operation. aws-sdk-s3 signs towards the origin. Its cost is compile time (aws-sdk-s3 and
//!   aws-lc-rs).
//! - The freshness check and the mid-response fallback read the origin through kfcache's own
//!   [`kfcache_prefetcher::ArtifactSource`] (object_store), so that the versions compared are
//!   exactly the ones the prefetcher recorded in the manifest.

mod config;
mod error;
mod forward;
mod metrics;
mod read;
mod server;
mod service;
mod upload;
mod write;

pub use config::{GatewayConfig, OriginConfig, S3Credentials};
pub use error::{Error, Result};
pub use metrics::{serve_admin, GatewayMetrics, MissReason, WriteKind, WriteOutcome};
pub use server::{Gateway, Origin};
