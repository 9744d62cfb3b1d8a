//! Events from the pods, shared through the cache cluster.
//!
//! Every sidecar publishes what it saw — the task's real start and end, GPU memory, inputs
//! served from the cache or the origin, outputs written through, deadline slack — as small JSON
//! records in the cache's metadata space. Every kfcache process that can reach Ignite can read
//! them, so observations cross nodes without a service of their own: `kfcache prefetch
//! --follow` and `kfcache cron` drain them into the SQLite history ([`crate::drain`]) and
//! remove what they recorded.
//!
//! | space | key | value |
//! |---|---|---|
//! | meta | `NS/e/TIME-RANDOM` | [`Event`] (JSON), drained and removed |
//! | meta | `NS/n/NODE` | [`NodeReport`] (JSON), the node's latest state, overwritten |
//!
//! `TIME` is the publication time in nanoseconds, zero-padded, so keys sort by time; `RANDOM`
//! keeps two pods publishing in the same nanosecond apart.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use kfcache_prefetcher::{CacheSink, Space};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::Identity;

/// One thing a sidecar saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Which task run.
    pub who: Identity,
    /// When it happened.
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The task's work started (`at`): a GPU process appeared, or the main process started.
    Started {
        /// `nvml` or `proc`.
        detector: String,
        pid: u32,
    },
    /// The task's work ended (`at`).
    Ended {
        started_at: DateTime<Utc>,
        detector: String,
        /// The main process's exit status, when the detector could see it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Peak GPU memory of the task's processes, when NVML was available.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gpu_memory_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<DateTime<Utc>>,
        /// Deadline minus end, in seconds (the paper's float time); negative when missed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slack_s: Option<f64>,
    },
    /// The init container materialised the inputs.
    Inputs {
        hits: u32,
        misses: u32,
        bytes_from_cache: u64,
        bytes_from_origin: u64,
        seconds: f64,
    },
    /// The sidecar wrote the task's outputs through to the cache.
    Outputs {
        written: u32,
        bytes: u64,
        seconds: f64,
    },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Started { .. } => "started",
            EventKind::Ended { .. } => "ended",
            EventKind::Inputs { .. } => "inputs",
            EventKind::Outputs { .. } => "outputs",
        }
    }
}

/// What a node says about itself (Algorithm 2's worker side): whether it can take another GPU
/// task, its free GPU memory and its deadline float time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub at: DateTime<Utc>,
    /// `false` when a task on the node missed its deadline, or GPU cores or memory are full.
    pub provisionable: bool,
    pub gpu_memory_total_bytes: u64,
    pub gpu_memory_used_bytes: u64,
    /// GPU core utilisation, percent (max over the node's GPUs).
    pub gpu_utilization_pct: f64,
    /// Sum of the deadline slack of the tasks that finished on the node, seconds.
    pub float_time_s: f64,
    /// Tasks on the node that missed their deadline.
    pub deadline_misses: u32,
}

impl NodeReport {
    pub fn gpu_memory_free_bytes(&self) -> u64 {
        self.gpu_memory_total_bytes
            .saturating_sub(self.gpu_memory_used_bytes)
    }
}

/// The shared event space of one cache namespace.
#[derive(Debug)]
pub struct EventLog<S: CacheSink + ?Sized> {
    sink: Arc<S>,
    namespace: String,
}

impl<S: CacheSink + ?Sized> Clone for EventLog<S> {
    fn clone(&self) -> Self {
        EventLog {
            sink: self.sink.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

impl<S: CacheSink + ?Sized> EventLog<S> {
    pub fn new(sink: Arc<S>, namespace: impl Into<String>) -> Self {
        EventLog {
            sink,
            namespace: namespace.into(),
        }
    }

    fn event_prefix(&self) -> String {
        format!("{}/e/", self.namespace)
    }

    fn node_prefix(&self) -> String {
        format!("{}/n/", self.namespace)
    }

    /// Publishes one event; returns its key.
    pub async fn publish(&self, event: &Event) -> Result<String> {
        let nanos = event.at.timestamp_nanos_opt().unwrap_or_default().max(0);
        let key = format!(
            "{}{nanos:020}-{:08x}",
            self.event_prefix(),
            rand::random::<u32>()
        );
        let value = serde_json::to_vec(event).map_err(|e| Error::Event {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        self.sink
            .put(Space::Meta, &key, Bytes::from(value))
            .await
            .map_err(Error::cache(format!("publishing event {key}")))?;
        Ok(key)
    }

    /// Every event not drained yet, oldest first, with its key. Records that do not parse are
    /// returned as errors beside the good ones so one bad record cannot block the rest.
    pub async fn pending(&self) -> Result<(Vec<(String, Event)>, Vec<Error>)> {
        let mut keys = self
            .sink
            .keys_with_prefix(Space::Meta, &self.event_prefix())
            .await
            .map_err(Error::cache("listing events"))?;
        keys.sort();
        let mut values = self
            .sink
            .get_all(Space::Meta, &keys)
            .await
            .map_err(Error::cache("reading events"))?;
        let mut events = Vec::with_capacity(keys.len());
        let mut bad = Vec::new();
        for key in keys {
            let Some(value) = values.remove(&key) else {
                continue; // drained by someone else meanwhile
            };
            match serde_json::from_slice::<Event>(&value) {
                Ok(event) => events.push((key, event)),
                Err(e) => bad.push(Error::Event {
                    key,
                    reason: e.to_string(),
                }),
            }
        }
        Ok((events, bad))
    }

    /// Removes drained events.
    pub async fn acknowledge(&self, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.sink
            .remove_all(Space::Meta, keys)
            .await
            .map_err(Error::cache(format!(
                "removing {} drained events",
                keys.len()
            )))
    }

    /// Replaces the node's report.
    pub async fn report_node(&self, report: &NodeReport) -> Result<()> {
        let key = format!("{}{}", self.node_prefix(), report.node);
        let value = serde_json::to_vec(report).map_err(|e| Error::Event {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        self.sink
            .put(Space::Meta, &key, Bytes::from(value))
            .await
            .map_err(Error::cache(format!("reporting node {}", report.node)))
    }

    /// The latest report of every node, by node name.
    pub async fn nodes(&self) -> Result<Vec<NodeReport>> {
        let mut keys = self
            .sink
            .keys_with_prefix(Space::Meta, &self.node_prefix())
            .await
            .map_err(Error::cache("listing node reports"))?;
        keys.sort();
        let values = self
            .sink
            .get_all(Space::Meta, &keys)
            .await
            .map_err(Error::cache("reading node reports"))?;
        let mut reports = Vec::new();
        for key in keys {
            if let Some(value) = values.get(&key) {
                let report: NodeReport =
                    serde_json::from_slice(value).map_err(|e| Error::Event {
                        key: key.clone(),
                        reason: e.to_string(),
                    })?;
                reports.push(report);
            }
        }
        Ok(reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kfcache_prefetcher::MemorySink;

    fn who(task: &str) -> Identity {
        Identity::resolve("wf-1", "p", Some(task), None).expect("identity")
    }

    #[tokio::test]
    async fn events_round_trip_in_time_order_and_drain() {
        let log = EventLog::new(Arc::new(MemorySink::default()), "ns");
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("t");
        let later = Event {
            who: who("fit"),
            at: t0 + chrono::Duration::seconds(5),
            kind: EventKind::Started {
                detector: "proc".into(),
                pid: 7,
            },
        };
        let earlier = Event {
            who: who("prep"),
            at: t0,
            kind: EventKind::Inputs {
                hits: 1,
                misses: 0,
                bytes_from_cache: 10,
                bytes_from_origin: 0,
                seconds: 0.1,
            },
        };
        log.publish(&later).await.expect("publish");
        log.publish(&earlier).await.expect("publish");
        let (events, bad) = log.pending().await.expect("pending");
        assert!(bad.is_empty());
        let got: Vec<_> = events.iter().map(|(_, e)| e.clone()).collect();
        assert_eq!(got, vec![earlier, later]);
        let keys: Vec<String> = events.into_iter().map(|(k, _)| k).collect();
        log.acknowledge(&keys).await.expect("ack");
        assert!(log.pending().await.expect("pending").0.is_empty());
    }
}
