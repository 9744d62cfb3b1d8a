//! Draining the shared event space into the SQLite history.
//!
//! The events of one task run (same run, task, loop instance and attempt) are folded into one
//! [`TaskObservation`] with source `sidecar`: the task's window from when it began reading its
//! inputs (what the tasks after it wait for, as they wait for its end) to the end of its work
//! or of its outputs' write-through, whichever is later; the exit status; the bytes read and
//! written. A task run is recorded once its `ended` event is there;
//! until then its events stay in the cache for the next drain. Recorded events are removed, so
//! two drainers (`kfcache prefetch --follow`, `kfcache cron`) that race record the same task run
//! at most twice, and the store replaces the earlier report of the same attempt. A task run
//! that started but has not ended yet is recorded with phase `Running` (so a re-plan sees that
//! it started) and its events stay; the end replaces that report.
//!
//! Records that cannot be parsed are removed too (they never will parse) and counted.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use kfcache_prefetcher::CacheSink;
use kfcache_schema::{ObservationSource, Store, TaskObservation};

use crate::error::{Error, Result};
use crate::events::{Event, EventKind, EventLog};

/// What one drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainSummary {
    /// Events read.
    pub events: usize,
    /// Finished task runs recorded in the history.
    pub observations: usize,
    /// Task runs recorded as still running.
    pub running: usize,
    /// Events left for a later drain (their task is still running).
    pub pending: usize,
    /// Unreadable records removed.
    pub bad: usize,
}

/// One task run's events, folded.
#[derive(Debug, Default)]
struct Fold {
    keys: Vec<String>,
    observation: TaskObservation,
    run: String,
    namespace: Option<String>,
    pipeline: String,
    ended: bool,
    hits: u32,
    misses: u32,
    /// When the task began reading its inputs (the `inputs` event's time less its seconds).
    inputs_began: Option<DateTime<Utc>>,
    /// When its outputs were written through (the `outputs` event's time).
    outputs_ended: Option<DateTime<Utc>>,
}

/// Reads every pending event, records each finished task run in `store`, and removes what was
/// recorded.
pub async fn drain<S: CacheSink + ?Sized>(
    log: &EventLog<S>,
    store: &Store,
) -> Result<DrainSummary> {
    let (events, bad) = log.pending().await?;
    let mut summary = DrainSummary {
        events: events.len(),
        bad: bad.len(),
        ..DrainSummary::default()
    };
    let bad_keys: Vec<String> = bad
        .into_iter()
        .filter_map(|e| match e {
            Error::Event { key, reason } => {
                tracing::warn!(%key, %reason, "removing an unreadable event");
                Some(key)
            }
            _ => None,
        })
        .collect();
    log.acknowledge(&bad_keys).await?;

    for fold in fold(events).into_values() {
        let started = fold.observation.started_at.is_some();
        if !fold.ended && !started {
            summary.pending += fold.keys.len();
            continue;
        }
        store
            .record_task_observation(
                &fold.run,
                fold.namespace.as_deref(),
                &fold.pipeline,
                &fold.observation,
            )
            .await
            .map_err(|source| Error::Store {
                source: Box::new(source),
                context: format!(
                    "recording the sidecar's report of {}/{}",
                    fold.run, fold.observation.task_key
                ),
            })?;
        if fold.ended {
            log.acknowledge(&fold.keys).await?;
            summary.observations += 1;
        } else {
            // Recorded as running (so `prefetch --follow` sees it started); the events stay
            // until the end arrives and replaces this report.
            summary.running += 1;
            summary.pending += fold.keys.len();
        }
    }
    Ok(summary)
}

type RunKey = (String, Option<String>, String, String, u32);

fn fold(events: Vec<(String, Event)>) -> BTreeMap<RunKey, Fold> {
    let mut folds: BTreeMap<RunKey, Fold> = BTreeMap::new();
    for (key, event) in events {
        let who = &event.who;
        let id = (
            who.run.clone(),
            who.namespace.clone(),
            who.task.clone(),
            who.instance.clone(),
            who.attempt,
        );
        let fold = folds.entry(id).or_insert_with(|| Fold {
            run: who.run.clone(),
            namespace: who.namespace.clone(),
            pipeline: who.pipeline.clone(),
            observation: TaskObservation {
                task_key: who.task.clone(),
                instance: who.instance.clone(),
                attempt: who.attempt,
                source: ObservationSource::Sidecar,
                display_name: who.pod.clone(),
                ..TaskObservation::default()
            },
            ..Fold::default()
        });
        fold.keys.push(key);
        let obs = &mut fold.observation;
        if obs.node.is_none() {
            obs.node = who.node.clone();
        }
        match event.kind {
            EventKind::Started { .. } => {
                obs.started_at = Some(obs.started_at.map_or(event.at, |s| s.min(event.at)));
                if obs.phase.is_none() {
                    obs.phase = Some("Running".to_string());
                }
            }
            EventKind::Ended {
                started_at,
                exit_code,
                slack_s,
                ..
            } => {
                fold.ended = true;
                obs.started_at = Some(started_at);
                obs.finished_at = Some(event.at);
                obs.phase = Some(
                    match exit_code {
                        Some(0) | None => "Succeeded",
                        Some(_) => "Failed",
                    }
                    .to_string(),
                );
                let mut notes = Vec::new();
                if let Some(code) = exit_code {
                    notes.push(format!("exit {code}"));
                }
                if let Some(slack) = slack_s {
                    notes.push(if slack >= 0.0 {
                        format!("deadline met with {slack:.1}s to spare")
                    } else {
                        format!("deadline missed by {:.1}s", -slack)
                    });
                }
                if !notes.is_empty() {
                    obs.message = Some(notes.join(", "));
                }
            }
            EventKind::Inputs {
                hits,
                misses,
                bytes_from_cache,
                bytes_from_origin,
                seconds,
            } => {
                let began = chrono::Duration::try_milliseconds((seconds.max(0.0) * 1e3) as i64)
                    .map_or(event.at, |d| event.at - d);
                fold.inputs_began = Some(fold.inputs_began.map_or(began, |b| b.min(began)));
                fold.hits += hits;
                fold.misses += misses;
                let bytes = bytes_from_cache.saturating_add(bytes_from_origin);
                obs.input_bytes = Some(obs.input_bytes.unwrap_or(0).saturating_add(bytes));
            }
            EventKind::Outputs { bytes, .. } => {
                fold.outputs_ended = Some(fold.outputs_ended.map_or(event.at, |e| e.max(event.at)));
                obs.output_bytes = Some(obs.output_bytes.unwrap_or(0).saturating_add(bytes));
            }
        }
    }
    for fold in folds.values_mut() {
        // The window the tasks after it see: reading the inputs is part of the task, and so
        // is writing the outputs through when that ends after the work.
        let obs = &mut fold.observation;
        if let (Some(began), Some(started)) = (fold.inputs_began, obs.started_at) {
            obs.started_at = Some(started.min(began));
        }
        if let (Some(written), Some(finished)) = (fold.outputs_ended, obs.finished_at) {
            obs.finished_at = Some(finished.max(written));
        }
        if fold.hits + fold.misses > 0 {
            let cache = format!(
                "inputs: {} from cache, {} from origin",
                fold.hits, fold.misses
            );
            fold.observation.message = Some(match fold.observation.message.take() {
                Some(m) => format!("{m}; {cache}"),
                None => cache,
            });
        }
    }
    folds
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, Duration, Utc};
    use kfcache_prefetcher::MemorySink;

    use super::*;
    use crate::spec::Identity;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[tokio::test]
    async fn finished_task_runs_become_sidecar_observations() {
        let log = EventLog::new(Arc::new(MemorySink::default()), "ns");
        let store = Store::open_in_memory().await.expect("store");
        let mut fit = Identity::resolve("train-x1", "train", Some("fit"), None).expect("id");
        fit.node = Some("gpu-node-1".into());
        let prep = Identity::resolve("train-x1", "train", Some("prep"), None).expect("id");
        let t0 = at("2026-01-01T00:00:00Z");
        let publish = |who: &Identity, at, kind| {
            let event = Event {
                who: who.clone(),
                at,
                kind,
            };
            let log = log.clone();
            async move { log.publish(&event).await.expect("publish") }
        };
        publish(
            &fit,
            t0,
            EventKind::Inputs {
                hits: 2,
                misses: 1,
                bytes_from_cache: 200,
                bytes_from_origin: 100,
                seconds: 1.0,
            },
        )
        .await;
        publish(
            &fit,
            t0 + Duration::seconds(2),
            EventKind::Started {
                detector: "proc".into(),
                pid: 42,
            },
        )
        .await;
        publish(
            &fit,
            t0 + Duration::seconds(62),
            EventKind::Ended {
                started_at: t0 + Duration::seconds(2),
                detector: "proc".into(),
                exit_code: Some(0),
                gpu_memory_bytes: None,
                deadline: None,
                slack_s: Some(30.0),
            },
        )
        .await;
        // Still running: stays for the next drain.
        publish(
            &prep,
            t0,
            EventKind::Started {
                detector: "proc".into(),
                pid: 7,
            },
        )
        .await;

        let summary = drain(&log, &store).await.expect("drain");
        assert_eq!(
            summary,
            DrainSummary {
                events: 4,
                observations: 1,
                running: 1,
                pending: 1,
                bad: 0
            }
        );
        let runs = store.runs_of_pipeline("train", 10).await.expect("runs");
        let running = runs[0]
            .run
            .tasks
            .iter()
            .find(|t| t.task_key == "prep")
            .expect("prep recorded as running");
        assert_eq!(running.phase.as_deref(), Some("Running"));
        assert_eq!(running.started_at, Some(t0));
        let task = runs[0]
            .run
            .tasks
            .iter()
            .find(|t| t.task_key == "fit")
            .expect("fit recorded");
        assert_eq!(task.task_key, "fit");
        assert_eq!(task.source, ObservationSource::Sidecar);
        // From when it began reading its inputs (1 s before t0) to the end of its work.
        assert_eq!(task.started_at, Some(t0 - Duration::seconds(1)));
        assert_eq!(task.duration_s(), Some(63.0));
        assert_eq!(task.input_bytes, Some(300));
        assert_eq!(task.node.as_deref(), Some("gpu-node-1"));
        assert!(task.succeeded());
        let message = task.message.as_deref().unwrap_or_default();
        assert!(message.contains("2 from cache, 1 from origin"), "{message}");
        // The recorded events are gone; the running task's one is left.
        let (left, _) = log.pending().await.expect("pending");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.who.task, "prep");
    }
}
