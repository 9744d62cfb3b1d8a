//! Prometheus metrics of `kfcache prefetch` (`--metrics-addr`), in the OpenMetrics text
//! format, and the small HTTP server that exposes them.
//!
//! [`Metrics`] follows the executor's events ([`Metrics::observe`]); the queue depth and the
//! bytes the cache ledger holds are set by the caller, which knows them. Every metric is
//! registered up front so that a scrape sees all of them (at 0) from the start. The server
//! binds before it returns, so a port of 0 works and a port in use is an error the user sees
//! at once, naming the address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use kfcache_prefetcher::execute::{Event, EvictReason};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The eviction counter's label set: `reason`.
type ReasonLabel = [(&'static str, &'static str); 1];

/// The metrics of one prefetch. Cheap to clone; clones share their values.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    bytes_staged: Counter,
    objects_staged: Counter,
    hits: Counter,
    hit_bytes: Counter,
    evictions: Family<ReasonLabel, Counter>,
    evicted_bytes: Counter,
    deadline_misses: Counter,
    retries: Counter,
    failures: Counter,
    no_room: Counter,
    waiting: Counter,
    queue_depth: Gauge<u64, AtomicU64>,
    in_flight: Gauge,
    cache_bytes: Gauge<u64, AtomicU64>,
    stage_seconds: Histogram,
    /// Objects started and not yet staged or failed (what `in_flight` shows), with the
    /// bytes they still have to copy.
    started: Mutex<HashMap<String, u64>>,
}

fn reason_label(reason: EvictReason) -> ReasonLabel {
    [(
        "reason",
        match reason {
            EvictReason::Dead => "dead",
            EvictReason::FurthestNextUse => "furthest-next-use",
        },
    )]
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered and at 0.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let inner = Inner {
            bytes_staged: Counter::default(),
            objects_staged: Counter::default(),
            hits: Counter::default(),
            hit_bytes: Counter::default(),
            evictions: Family::default(),
            evicted_bytes: Counter::default(),
            deadline_misses: Counter::default(),
            retries: Counter::default(),
            failures: Counter::default(),
            no_room: Counter::default(),
            waiting: Counter::default(),
            queue_depth: Gauge::default(),
            in_flight: Gauge::default(),
            cache_bytes: Gauge::default(),
            // 50 ms to about 20 minutes.
            stage_seconds: Histogram::new(exponential_buckets(0.05, 2.5, 12)),
            started: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        let counters = [
            (
                "kfcache_prefetch_bytes_staged",
                "Bytes copied into the cache",
                &inner.bytes_staged,
            ),
            (
                "kfcache_prefetch_objects_staged",
                "Objects copied into the cache",
                &inner.objects_staged,
            ),
            (
                "kfcache_prefetch_hits",
                "Objects already in the cache at their current source version",
                &inner.hits,
            ),
            (
                "kfcache_prefetch_hit_bytes",
                "Bytes of the objects already in the cache",
                &inner.hit_bytes,
            ),
            (
                "kfcache_prefetch_evicted_bytes",
                "Bytes removed from the cache to make room",
                &inner.evicted_bytes,
            ),
            (
                "kfcache_prefetch_deadline_misses",
                "Objects staged after their deadline",
                &inner.deadline_misses,
            ),
            (
                "kfcache_prefetch_retries",
                "Transient failures tried again",
                &inner.retries,
            ),
            (
                "kfcache_prefetch_failures",
                "Objects that could not be staged",
                &inner.failures,
            ),
            (
                "kfcache_prefetch_no_room",
                "Objects not admitted: no room within the budget",
                &inner.no_room,
            ),
            (
                "kfcache_prefetch_waiting",
                "Upstream outputs not written yet when their turn came",
                &inner.waiting,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "kfcache_prefetch_evictions",
            "Entries removed from the cache to make room, by reason",
            inner.evictions.clone(),
        );
        // Both reasons show from the start, at 0.
        for reason in [EvictReason::Dead, EvictReason::FurthestNextUse] {
            inner.evictions.get_or_create_owned(&reason_label(reason));
        }
        registry.register(
            "kfcache_prefetch_queue_depth",
            "Plan items waiting to start",
            inner.queue_depth.clone(),
        );
        registry.register(
            "kfcache_prefetch_in_flight",
            "Objects being staged",
            inner.in_flight.clone(),
        );
        registry.register(
            "kfcache_prefetch_cache_bytes",
            "Bytes the cache holds, as the budget ledger accounts for them",
            inner.cache_bytes.clone(),
        );
        registry.register(
            "kfcache_prefetch_stage_seconds",
            "Seconds to stage one object",
            inner.stage_seconds.clone(),
        );
        Metrics {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    /// Counts what `event` says happened.
    pub fn observe(&self, event: &Event) {
        let m = &*self.inner;
        match event {
            Event::Start { uri, bytes, .. } => self.started(uri, Some(*bytes)),
            Event::Progress { .. } => {}
            Event::Staged {
                uri,
                bytes,
                seconds,
                met_deadline,
                ..
            } => {
                self.started(uri, None);
                m.bytes_staged.inc_by(*bytes);
                m.objects_staged.inc();
                m.stage_seconds.observe(*seconds);
                if !met_deadline {
                    m.deadline_misses.inc();
                }
            }
            Event::Hit { uri, bytes, .. } => {
                m.hits.inc();
                m.hit_bytes.inc_by(*bytes);
                // A directory being staged reports its current objects as a hit at the end;
                // when they are all it held, no `Staged` follows.
                self.skipped(uri, *bytes);
            }
            Event::Evicted { bytes, reason, .. } => {
                m.evictions.get_or_create(&reason_label(*reason)).inc();
                m.evicted_bytes.inc_by(*bytes);
            }
            Event::Retry { .. } => {
                m.retries.inc();
            }
            Event::NoRoom { .. } => {
                m.no_room.inc();
            }
            Event::Waiting { .. } => {
                m.waiting.inc();
            }
            Event::Failed { uri, .. } => {
                self.started(uri, None);
                m.failures.inc();
            }
        }
    }

    fn lock_started(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.inner
            .started
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks `uri` as being staged (with its bytes) or not, and shows how many are.
    fn started(&self, uri: &str, bytes: Option<u64>) {
        let mut started = self.lock_started();
        match bytes {
            Some(bytes) => started.insert(uri.to_string(), bytes),
            None => started.remove(uri),
        };
        self.set_in_flight(started.len());
    }

    /// `bytes` of `uri`, being staged, were current and are not copied.
    fn skipped(&self, uri: &str, bytes: u64) {
        let mut started = self.lock_started();
        if let Some(left) = started.get_mut(uri) {
            *left = left.saturating_sub(bytes);
            if *left == 0 {
                started.remove(uri);
            }
        }
        self.set_in_flight(started.len());
    }

    fn set_in_flight(&self, n: usize) {
        self.inner
            .in_flight
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Plan items waiting to start.
    pub fn set_queue_depth(&self, n: u64) {
        self.inner.queue_depth.set(n);
    }

    /// Bytes the cache ledger holds.
    pub fn set_cache_bytes(&self, n: u64) {
        self.inner.cache_bytes.set(n);
    }

    /// Every metric in the OpenMetrics text format (ending with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would leave a partial page.
        if encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What the metrics server serves: anything that renders an OpenMetrics page. `prefetch`'s
/// [`Metrics`] and the sidecar's metrics share the one server below.
pub trait MetricsPage: Clone + Send + Sync + 'static {
    /// Every metric in the OpenMetrics text format.
    fn encode(&self) -> String;
}

impl MetricsPage for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
}

async fn metrics_page<M: MetricsPage>(State(metrics): State<M>) -> impl IntoResponse {
    ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], metrics.encode())
}

async fn health() -> &'static str {
    "ok\n"
}

/// Serves `GET /metrics` and `GET /healthz` on `addr`. Binds before returning: the address
/// it listens on (the port chosen when `addr`'s is 0) and the server's task come back.
pub async fn serve<M: MetricsPage>(
    metrics: M,
    addr: SocketAddr,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr} (--metrics-addr)"))?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("cannot read the address the metrics server bound for {addr}"))?;
    let app = Router::new()
        .route("/metrics", get(metrics_page::<M>))
        .route("/healthz", get(health))
        .with_state(metrics);
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!("the metrics server on {bound} stopped: {error}");
        }
    });
    Ok((bound, server))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The value of the sample `name` (with its labels) in an OpenMetrics page.
    fn sample(page: &str, name: &str) -> Option<f64> {
        page.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    }

    fn staged(uri: &str, bytes: u64, seconds: f64, met_deadline: bool) -> Event {
        Event::Staged {
            uri: uri.to_string(),
            item: uri.to_string(),
            bytes,
            seconds,
            finished_s: 10.0,
            deadline_s: 20.0,
            met_deadline,
        }
    }

    #[test]
    fn prefetch_metrics_count_staged_and_evicted() {
        let metrics = Metrics::new();
        let uri = "s3://bucket/train.parquet";
        metrics.observe(&Event::Start {
            uri: uri.to_string(),
            item: uri.to_string(),
            bytes: 3_000,
            deadline_s: 20.0,
        });
        assert_eq!(
            sample(&metrics.encode(), "kfcache_prefetch_in_flight"),
            Some(1.0)
        );
        metrics.observe(&staged(uri, 3_000, 1.5, false));
        metrics.observe(&Event::Evicted {
            uri: "s3://bucket/old.parquet".to_string(),
            bytes: 700,
            reason: EvictReason::Dead,
            for_uri: uri.to_string(),
        });
        let page = metrics.encode();
        let value = |name: &str| sample(&page, name);
        assert_eq!(value("kfcache_prefetch_bytes_staged_total"), Some(3_000.0));
        assert_eq!(value("kfcache_prefetch_objects_staged_total"), Some(1.0));
        assert_eq!(value("kfcache_prefetch_deadline_misses_total"), Some(1.0));
        assert_eq!(value("kfcache_prefetch_in_flight"), Some(0.0));
        assert_eq!(
            value("kfcache_prefetch_evictions_total{reason=\"dead\"}"),
            Some(1.0)
        );
        assert_eq!(
            value("kfcache_prefetch_evictions_total{reason=\"furthest-next-use\"}"),
            Some(0.0)
        );
        assert_eq!(value("kfcache_prefetch_evicted_bytes_total"), Some(700.0));
        assert_eq!(value("kfcache_prefetch_stage_seconds_count"), Some(1.0));
        assert_eq!(value("kfcache_prefetch_stage_seconds_sum"), Some(1.5));
        assert_eq!(value("kfcache_prefetch_hits_total"), Some(0.0));
        assert!(page.ends_with("# EOF\n"), "{page}");
    }

    #[test]
    fn prefetch_metrics_count_hits_retries_failures_and_gauges() {
        let metrics = Metrics::new();
        let uri = "s3://bucket/a";
        metrics.observe(&Event::Hit {
            uri: uri.to_string(),
            item: uri.to_string(),
            bytes: 42,
        });
        metrics.observe(&Event::Retry {
            uri: uri.to_string(),
            attempt: 1,
            delay_ms: 10,
            error: "503".to_string(),
        });
        metrics.observe(&Event::NoRoom {
            uri: uri.to_string(),
            item: uri.to_string(),
            bytes: 9,
            short_bytes: 1,
        });
        // A failure before the object started leaves the in-flight count alone.
        metrics.observe(&Event::Failed {
            uri: uri.to_string(),
            item: uri.to_string(),
            error: "gone".to_string(),
        });
        metrics.set_queue_depth(5);
        metrics.set_cache_bytes(1 << 40);
        let page = metrics.encode();
        let value = |name: &str| sample(&page, name);
        assert_eq!(value("kfcache_prefetch_hits_total"), Some(1.0));
        assert_eq!(value("kfcache_prefetch_hit_bytes_total"), Some(42.0));
        assert_eq!(value("kfcache_prefetch_retries_total"), Some(1.0));
        assert_eq!(value("kfcache_prefetch_no_room_total"), Some(1.0));
        assert_eq!(value("kfcache_prefetch_failures_total"), Some(1.0));
        assert_eq!(value("kfcache_prefetch_in_flight"), Some(0.0));
        assert_eq!(value("kfcache_prefetch_queue_depth"), Some(5.0));
        assert_eq!(
            value("kfcache_prefetch_cache_bytes"),
            Some((1u64 << 40) as f64)
        );
    }

    #[test]
    fn prefetch_metrics_directory_of_current_objects_leaves_flight() {
        let metrics = Metrics::new();
        let dir = "s3://bucket/shards/";
        let start = Event::Start {
            uri: dir.to_string(),
            item: dir.to_string(),
            bytes: 5_000,
            deadline_s: 20.0,
        };
        let hit = |bytes| Event::Hit {
            uri: dir.to_string(),
            item: dir.to_string(),
            bytes,
        };
        let in_flight = |m: &Metrics| sample(&m.encode(), "kfcache_prefetch_in_flight");
        // Part current, part copied: in flight until `Staged`.
        metrics.observe(&start);
        metrics.observe(&hit(3_000));
        assert_eq!(in_flight(&metrics), Some(1.0));
        metrics.observe(&staged(dir, 2_000, 1.0, true));
        assert_eq!(in_flight(&metrics), Some(0.0));
        // All current: the hit ends it.
        metrics.observe(&start);
        metrics.observe(&hit(5_000));
        assert_eq!(in_flight(&metrics), Some(0.0));
        metrics.observe(&Event::Waiting {
            uri: "s3://bucket/features/".to_string(),
            producer: "prepare".to_string(),
            ready_s: 60.0,
        });
        let page = metrics.encode();
        assert_eq!(sample(&page, "kfcache_prefetch_hits_total"), Some(2.0));
        assert_eq!(sample(&page, "kfcache_prefetch_waiting_total"), Some(1.0));
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("the server accepts");
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .expect("the request is sent");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("the response is read");
        response
    }

    #[tokio::test]
    async fn prefetch_metrics_served_over_http() {
        let metrics = Metrics::new();
        metrics.observe(&staged("s3://bucket/x", 123, 0.2, true));
        let (addr, server) = serve(metrics.clone(), "127.0.0.1:0".parse().expect("an address"))
            .await
            .expect("binds");
        assert_ne!(addr.port(), 0, "the bound port comes back");

        let response = get(addr, "/metrics").await;
        let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}")),
            "{head}"
        );
        for name in [
            "kfcache_prefetch_bytes_staged_total",
            "kfcache_prefetch_objects_staged_total",
            "kfcache_prefetch_hits_total",
            "kfcache_prefetch_hit_bytes_total",
            "kfcache_prefetch_evictions_total",
            "kfcache_prefetch_evicted_bytes_total",
            "kfcache_prefetch_deadline_misses_total",
            "kfcache_prefetch_retries_total",
            "kfcache_prefetch_failures_total",
            "kfcache_prefetch_no_room_total",
            "kfcache_prefetch_queue_depth",
            "kfcache_prefetch_in_flight",
            "kfcache_prefetch_cache_bytes",
            "kfcache_prefetch_stage_seconds_bucket",
        ] {
            assert!(body.contains(name), "{name} missing from\n{body}");
        }
        assert!(
            body.contains("kfcache_prefetch_bytes_staged_total 123"),
            "{body}"
        );

        let health = get(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let missing = get(addr, "/nothing").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        server.abort();
    }

    #[tokio::test]
    async fn prefetch_metrics_bind_failure_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = taken.local_addr().expect("its address");
        let error = serve(Metrics::new(), addr)
            .await
            .expect_err("the port is in use");
        assert!(
            format!("{error:#}").contains(&addr.to_string()),
            "{error:#}"
        );
    }
}
