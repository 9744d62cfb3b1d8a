//! Prometheus metrics of the gateway, and the admin HTTP server that serves them on
//! `/metrics` beside `/healthz` (a port of its own, so that S3 clients never reach it).
//!
//! Every request is counted by S3 operation. `GetObject` and `HeadObject` are also counted as
//! a cache hit, or a miss with its reason (`not_cached`, `stale`, `check_failed`,
//! `cache_error`, `bypass` for requests the cache does not answer: versions, parts, SSE-C,
//! response overrides, time conditions). Body bytes are counted by where they came from.
//!
//! Copies into the cache are counted by kind (`write_through_*` for uploads, `fill_*` for the
//! on-demand fill of misses) and [`WriteOutcome`]; the bytes held in memory for them are a
//! gauge.

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
    /// The origin no longer has the object (its HEAD answered 404); the cached copy is dropped.
    Deleted,
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
            MissReason::Deleted => "deleted",
            MissReason::CheckFailed => "check_failed",
            MissReason::CacheError => "cache_error",
            MissReason::Bypass => "bypass",
        }
    }
}

/// What became of an object copied towards the cache (an upload written through, a miss
/// filled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteOutcome {
    /// It is in the cache.
    Written,
    /// It was not written on purpose: too large, over the buffer bound, larger than the fill
    /// budget, an upload that failed or whose parts do not match the completion.
    Skipped,
    /// Writing it into the cache failed.
    Failed,
}

impl WriteOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteOutcome::Written => "written",
            WriteOutcome::Skipped => "skipped",
            WriteOutcome::Failed => "failed",
        }
    }
}

/// Which copy into the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// An object uploaded through the gateway.
    WriteThrough,
    /// A miss read from the origin (`fill_budget`).
    Fill,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
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
    write_through: Family<OutcomeLabel, Counter>,
    write_through_bytes: Counter,
    fills: Family<OutcomeLabel, Counter>,
    fill_bytes: Counter,
    fill_evictions: Counter,
    buffered: Gauge,
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
            write_through: Family::default(),
            write_through_bytes: Counter::default(),
            fills: Family::default(),
            fill_bytes: Counter::default(),
            fill_evictions: Counter::default(),
            buffered: Gauge::default(),
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
        registry.register(
            "write_through_objects",
            "Objects uploaded through the gateway, by what became of their copy into the cache (written, skipped, failed)",
            inner.write_through.clone(),
        );
        registry.register(
            "write_through_bytes",
            "Bytes of uploaded objects written into the cache",
            inner.write_through_bytes.clone(),
        );
        registry.register(
            "fill_objects",
            "Objects read from the origin on a miss, by what became of their copy into the cache (written, skipped, failed)",
            inner.fills.clone(),
        );
        registry.register(
            "fill_bytes",
            "Bytes of missed objects written into the cache",
            inner.fill_bytes.clone(),
        );
        registry.register(
            "fill_evictions",
            "Objects evicted, least recently used first, to make room for fills",
            inner.fill_evictions.clone(),
        );
        registry.register(
            "write_buffer_bytes",
            "Bytes of bodies held in memory to be written into the cache",
            inner.buffered.clone(),
        );
        for outcome in [
            WriteOutcome::Written,
            WriteOutcome::Skipped,
            WriteOutcome::Failed,
        ] {
            let label = OutcomeLabel {
                outcome: outcome.as_str().to_string(),
            };
            let _ = inner.write_through.get_or_create(&label);
            let _ = inner.fills.get_or_create(&label);
        }
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

    pub(crate) fn wrote(&self, kind: WriteKind, outcome: WriteOutcome, bytes: u64) {
        let label = OutcomeLabel {
            outcome: outcome.as_str().to_string(),
        };
        let (objects, written) = match kind {
            WriteKind::WriteThrough => (&self.inner.write_through, &self.inner.write_through_bytes),
            WriteKind::Fill => (&self.inner.fills, &self.inner.fill_bytes),
        };
        objects.get_or_create(&label).inc();
        if outcome == WriteOutcome::Written {
            written.inc_by(bytes);
        }
    }

    pub(crate) fn evicted(&self, objects: u64) {
        self.inner.fill_evictions.inc_by(objects);
    }

    pub(crate) fn buffered(&self, bytes: u64) {
        self.inner
            .buffered
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Objects of `kind` whose copy into the cache ended with `outcome` so far.
    pub fn writes(&self, kind: WriteKind, outcome: WriteOutcome) -> u64 {
        let label = OutcomeLabel {
            outcome: outcome.as_str().to_string(),
        };
        match kind {
            WriteKind::WriteThrough => self.inner.write_through.get_or_create(&label).get(),
            WriteKind::Fill => self.inner.fills.get_or_create(&label).get(),
        }
    }

    /// Objects evicted to make room for fills so far.
    pub fn fill_evictions(&self) -> u64 {
        self.inner.fill_evictions.get()
    }

    /// Bytes held in memory for copies into the cache now.
    pub fn buffered_bytes(&self) -> u64 {
        u64::try_from(self.inner.buffered.get()).unwrap_or(0)
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
