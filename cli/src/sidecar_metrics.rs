//! Prometheus metrics of `kfcache sidecar watch`, served on `/metrics` beside `/healthz`.
//!
//! One pod, one task: the metrics describe that task's work (running or not, when it started,
//! how long it ran, its deadline slack), what the sidecar wrote through, and whether its
//! events reached the cache. Everything is registered up front so a scrape sees every metric
//! from the start. The HTTP server is `prefetch`'s ([`crate::prefetch_metrics::serve`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::prefetch_metrics::MetricsPage;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectorLabel {
    detector: String,
}

/// The watch's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct SidecarMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    detector: Family<DetectorLabel, Gauge>,
    running: Gauge,
    started: Gauge<f64, AtomicU64>,
    work_seconds: Gauge<f64, AtomicU64>,
    slack_seconds: Gauge<f64, AtomicU64>,
    exit_code: Gauge,
    output_bytes: Counter,
    output_files: Counter,
    events: Counter,
    event_errors: Counter,
}

impl Default for SidecarMetrics {
    fn default() -> Self {
        SidecarMetrics::new()
    }
}

impl SidecarMetrics {
    pub fn new() -> SidecarMetrics {
        let mut registry = Registry::with_prefix("kfcache_sidecar");
        let inner = Inner {
            detector: Family::default(),
            running: Gauge::default(),
            started: Gauge::default(),
            work_seconds: Gauge::default(),
            slack_seconds: Gauge::default(),
            exit_code: Gauge::default(),
            output_bytes: Counter::default(),
            output_files: Counter::default(),
            events: Counter::default(),
            event_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "detector",
            "The detector in use (1 for the label that applies)",
            inner.detector.clone(),
        );
        registry.register(
            "work_running",
            "1 while the task's work runs",
            inner.running.clone(),
        );
        registry.register(
            "work_started_timestamp_seconds",
            "When the task's work started (Unix time)",
            inner.started.clone(),
        );
        registry.register(
            "work_seconds",
            "How long the task's work ran, once it ended",
            inner.work_seconds.clone(),
        );
        registry.register(
            "deadline_slack_seconds",
            "Deadline minus end of the work (negative when missed)",
            inner.slack_seconds.clone(),
        );
        registry.register(
            "work_exit_code",
            "Exit code of the task's main process (-1 when not visible)",
            inner.exit_code.clone(),
        );
        registry.register(
            "output_bytes",
            "Bytes of outputs written through to the cache",
            inner.output_bytes.clone(),
        );
        registry.register(
            "output_files",
            "Output files written through to the cache",
            inner.output_files.clone(),
        );
        registry.register(
            "events_published",
            "Events published to the cache",
            inner.events.clone(),
        );
        registry.register(
            "event_errors",
            "Events that could not be published",
            inner.event_errors.clone(),
        );
        SidecarMetrics {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    pub fn detector(&self, name: &str) {
        self.inner
            .detector
            .get_or_create(&DetectorLabel {
                detector: name.to_string(),
            })
            .set(1);
    }

    pub fn started(&self, unix_s: f64) {
        self.inner.running.set(1);
        self.inner.started.set(unix_s);
    }

    pub fn ended(&self, work_s: f64, exit_code: Option<i32>, slack_s: Option<f64>) {
        self.inner.running.set(0);
        self.inner.work_seconds.set(work_s);
        self.inner.exit_code.set(exit_code.map_or(-1, i64::from));
        if let Some(slack) = slack_s {
            self.inner.slack_seconds.set(slack);
        }
    }

    pub fn outputs(&self, files: u64, bytes: u64) {
        self.inner.output_files.inc_by(files);
        self.inner.output_bytes.inc_by(bytes);
    }

    pub fn published(&self, ok: bool) {
        if ok {
            self.inner.events.inc();
        } else {
            self.inner.event_errors.inc();
        }
    }

    pub fn encode(&self) -> String {
        let mut page = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut page, &self.inner.registry);
        page
    }
}

impl MetricsPage for SidecarMetrics {
    fn encode(&self) -> String {
        SidecarMetrics::encode(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_task_shows_its_duration_slack_and_outputs() {
        let metrics = SidecarMetrics::new();
        metrics.detector("proc");
        metrics.started(1_700_000_000.0);
        metrics.ended(42.5, Some(0), Some(-3.0));
        metrics.outputs(2, 2048);
        metrics.published(true);
        let page = metrics.encode();
        for line in [
            "kfcache_sidecar_detector{detector=\"proc\"} 1",
            "kfcache_sidecar_work_running 0",
            "kfcache_sidecar_work_seconds 42.5",
            "kfcache_sidecar_deadline_slack_seconds -3.0",
            "kfcache_sidecar_work_exit_code 0",
            "kfcache_sidecar_output_bytes_total 2048",
            "kfcache_sidecar_events_published_total 1",
        ] {
            assert!(page.contains(line), "{line} missing from\n{page}");
        }
    }
}
