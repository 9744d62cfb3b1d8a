//! Prometheus metrics of the gateway, and the admin HTTP server that serves them on
//! `/metrics` beside `/healthz` (a port of its own, so that S3 clients never reach it).
//!
//! Every request is counted by S3 operation. `GetObject` and `HeadObject` are also counted as
//! a cache hit, or a miss with its reason (`not_cached`, `stale`, `check_failed`,
//! `cache_error`, `bypass` for requests the cache does not answer: versions, parts, SSE-C,
//! response overrides, time conditions). Body bytes are counted by where they came from.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// Why a request was not answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MissReason {
    /// No manifest for the object.
    NotCached,
    /// The origin has another version than the cached one.
    Stale,
    /// A chunk is missing or does not match its checksum.
    CheckFailed,
    /// The cache failed, timed out, or is cooling down after a timeout; or none is connected.
    CacheError,
    /// The request asks for something the cache does not answer (a version, a part, SSE-C,
    /// response header overrides, time conditions).
    Bypass,
}

impl MissReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MissReason::NotCached => "not_cached",
            MissReason::Stale => "stale",
            MissReason::CheckFailed => "check_failed",
            MissReason::CacheError => "cache_error",
            MissReason::Bypass => "bypass",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MissLabel {
    operation: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// The gateway's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    requests: Family<OperationLabel, Counter>,
    hits: Family<OperationLabel, Counter>,
    misses: Family<MissLabel, Counter>,
    bytes: Family<SourceLabel, Counter>,
    cache_connected: Gauge,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> GatewayMetrics {
        let mut registry = Registry::with_prefix("kfcache_gateway");
        let inner = Inner {
            requests: Family::default(),
            hits: Family::default(),
            misses: Family::default(),
            bytes: Family::default(),
            cache_connected: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "S3 requests received, by operation",
            inner.requests.clone(),
        );
        registry.register(
            "cache_hits",
            "GetObject and HeadObject requests answered from the cache",
            inner.hits.clone(),
        );
        registry.register(
            "cache_misses",
            "GetObject and HeadObject requests answered from the origin, by reason",
            inner.misses.clone(),
        );
        registry.register(
            "served_bytes",
            "Object bytes sent to clients, by where they came from (cache, origin)",
            inner.bytes.clone(),
        );
        registry.register(
            "cache_connected",
            "1 while a cache is connected, else 0",
            inner.cache_connected.clone(),
        );
        for source in ["cache", "origin"] {
            let _ = inner.bytes.get_or_create(&SourceLabel {
                source: source.to_string(),
            });
        }
        GatewayMetrics {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    pub(crate) fn request(&self, operation: &str) {
        self.inner
            .requests
            .get_or_create(&OperationLabel {
                operation: operation.to_string(),
            })
            .inc();
    }

    pub(crate) fn hit(&self, operation: &str) {
        self.inner
            .hits
            .get_or_create(&OperationLabel {
                operation: operation.to_string(),
            })
            .inc();
    }

    pub(crate) fn miss(&self, operation: &str, reason: MissReason) {
        self.inner
            .misses
            .get_or_create(&MissLabel {
                operation: operation.to_string(),
                reason: reason.as_str().to_string(),
            })
            .inc();
    }

    pub(crate) fn served(&self, from_cache: bool, bytes: u64) {
        let source = if from_cache { "cache" } else { "origin" };
        self.inner
            .bytes
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .inc_by(bytes);
    }

    pub(crate) fn cache_connected(&self, connected: bool) {
        self.inner.cache_connected.set(i64::from(connected));
    }

    /// Requests of `operation` so far.
    pub fn requests(&self, operation: &str) -> u64 {
        self.inner
            .requests
            .get_or_create(&OperationLabel {
                operation: operation.to_string(),
            })
            .get()
    }

    /// Cache hits of `operation` so far.
    pub fn hits(&self, operation: &str) -> u64 {
        self.inner
            .hits
            .get_or_create(&OperationLabel {
                operation: operation.to_string(),
            })
            .get()
    }

    /// Misses of `operation` for `reason` so far.
    pub fn misses(&self, operation: &str, reason: MissReason) -> u64 {
        self.inner
            .misses
            .get_or_create(&MissLabel {
                operation: operation.to_string(),
                reason: reason.as_str().to_string(),
            })
            .get()
    }

    /// Object bytes served from the cache (`true`) or the origin (`false`) so far.
    pub fn served_bytes(&self, from_cache: bool) -> u64 {
        let source = if from_cache { "cache" } else { "origin" };
        self.inner
            .bytes
            .get_or_create(&SourceLabel {
                source: source.to_string(),
            })
            .get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String> {
        let mut text = String::new();
        encode(&mut text, &self.inner.registry).map_err(Error::Metrics)?;
        Ok(text)
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` completes.
pub async fn serve_admin(
    metrics: GatewayMetrics,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr().ok();
    let page = move || {
        let metrics = metrics.clone();
        async move {
            match metrics.render() {
                Ok(text) => (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
                    .into_response(),
                Err(error) => (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    error.to_string(),
                )
                    .into_response(),
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(page))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Listen {
            op: "serve the admin port",
            addr,
            source,
        })
}
