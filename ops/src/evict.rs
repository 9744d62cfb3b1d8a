//! Eviction of finished objects: a cached object goes once every analysed task that reads it
//! has finished, in the pipeline's latest run and in every run still in progress, as the run
//! history says. Objects that a lease pins, or that the caller keeps (a pipeline due soon
//! reads them), stay. This is `kfcache cron`'s rule between prefetch cycles; the plan's rule
//! for making room while staging is [`kfcache_prefetcher::policy`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use kfcache_prefetcher::{lease, CacheSink, ObjectCache};
use kfcache_schema::{RunObservation, Store};

use crate::error::{Context, Result};

/// Recent runs eviction looks at for runs still in progress.
pub const EVICTION_HISTORY: u32 = 10;
/// A run without an end whose last sign of life is older than this is over.
pub const STALE_RUN: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Whether reading `input` reads `uri`: the same URI, or a directory / prefix it lies under.
pub fn covers(input: &str, uri: &str) -> bool {
    if input == uri {
        return true;
    }
    let directory = input.trim_end_matches('/');
    uri.len() > directory.len()
        && uri.starts_with(directory)
        && uri[directory.len()..].starts_with('/')
}

/// The URIs a reader of `uri` may have declared: `uri` itself and every directory above it
/// (with and without the trailing `/`), up to the bucket or claim.
pub fn reader_uris(uri: &str) -> Vec<String> {
    let mut out = vec![uri.to_string()];
    let Some(scheme_end) = uri.find("://") else {
        return out;
    };
    let path_start = scheme_end + 3;
    let Some(root) = uri[path_start..].find('/').map(|i| path_start + i) else {
        return out;
    };
    for (i, _) in uri[root..].match_indices('/').map(|(i, s)| (root + i, s)) {
        if i + 1 < uri.len() {
            out.push(uri[..=i].to_string());
            if i > root {
                out.push(uri[..i].to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Where the readers of a cached object are.
#[derive(Debug, Clone, PartialEq)]
pub enum Readers {
    /// No analysed task reads it.
    Unknown,
    /// Some reader has not finished (why).
    Pending(String),
    /// Every reader finished (where).
    Finished(String),
}

/// Which task of a run has finished, as the history says.
pub fn task_finished(run: &RunObservation, task: &str) -> bool {
    let mut observations = run.tasks.iter().filter(|t| t.task_key == task).peekable();
    if observations.peek().is_none() {
        return run_over(run); // it did not run (a branch not taken, a failed run)
    }
    observations.all(|o| o.finished_at.is_some() || o.skipped())
}

pub fn run_over(run: &RunObservation) -> bool {
    run.finished_at.is_some()
        || matches!(run.phase.as_deref(), Some("Succeeded" | "Failed" | "Error"))
}

/// The last sign of life of a run: its latest start or end of anything.
pub fn last_activity(run: &RunObservation) -> Option<DateTime<Utc>> {
    run.tasks
        .iter()
        .flat_map(|t| [t.started_at, t.finished_at])
        .chain([run.started_at, run.finished_at])
        .flatten()
        .max()
}

/// The readers of one pipeline: finished in its latest run and in each run still in progress?
pub fn pipeline_readers(
    pipeline: &str,
    tasks: &BTreeSet<String>,
    runs: &[RunObservation],
    now: DateTime<Utc>,
) -> Readers {
    let Some(latest) = runs.last() else {
        return Readers::Pending(format!("`{pipeline}` has no recorded run yet"));
    };
    let in_progress = runs
        .iter()
        .filter(|r| !run_over(r) && last_activity(r).is_some_and(|at| now - at < STALE_RUN));
    for run in std::iter::once(latest).chain(in_progress) {
        if let Some(task) = tasks.iter().find(|t| !task_finished(run, t)) {
            return Readers::Pending(format!(
                "{task} of `{pipeline}` run {} has not finished",
                run.name
            ));
        }
    }
    Readers::Finished(format!(
        "every reader finished ({} in `{pipeline}` run {})",
        tasks.iter().cloned().collect::<Vec<_>>().join(", "),
        latest.name
    ))
}

/// The verdict on one cached URI from the analysed readers and the history.
struct ReaderIndex<'a> {
    store: &'a Store,
    now: DateTime<Utc>,
    pipeline_names: HashMap<i64, String>,
    version_pipeline: HashMap<i64, Option<String>>,
    runs: HashMap<String, Vec<RunObservation>>,
}

impl<'a> ReaderIndex<'a> {
    async fn new(store: &'a Store, now: DateTime<Utc>) -> Result<ReaderIndex<'a>> {
        let pipeline_names = store
            .pipelines()
            .await
            .context(|| "cannot list the stored pipelines".to_string())?
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
        Ok(ReaderIndex {
            store,
            now,
            pipeline_names,
            version_pipeline: HashMap::new(),
            runs: HashMap::new(),
        })
    }

    async fn pipeline_of(&mut self, version_id: i64) -> Result<Option<String>> {
        if let Some(name) = self.version_pipeline.get(&version_id) {
            return Ok(name.clone());
        }
        let name = self
            .store
            .version(version_id)
            .await
            .context(|| format!("cannot read pipeline version {version_id}"))?
            .and_then(|v| self.pipeline_names.get(&v.pipeline_id).cloned());
        self.version_pipeline.insert(version_id, name.clone());
        Ok(name)
    }

    async fn readers(&mut self, uri: &str) -> Result<Readers> {
        let mut by_pipeline: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for candidate in reader_uris(uri) {
            for (version_id, task) in self
                .store
                .consumers(&candidate)
                .await
                .context(|| format!("cannot read the readers of {candidate}"))?
            {
                if let Some(pipeline) = self.pipeline_of(version_id).await? {
                    by_pipeline.entry(pipeline).or_default().insert(task);
                }
            }
        }
        if by_pipeline.is_empty() {
            return Ok(Readers::Unknown);
        }
        let mut reasons = Vec::new();
        for (pipeline, tasks) in &by_pipeline {
            if !self.runs.contains_key(pipeline) {
                let runs = self
                    .store
                    .runs_of_pipeline(pipeline, EVICTION_HISTORY)
                    .await
                    .context(|| format!("cannot read the runs of `{pipeline}`"))?
                    .into_iter()
                    .map(|r| r.run)
                    .collect();
                self.runs.insert(pipeline.clone(), runs);
            }
            let runs = self.runs.get(pipeline).map(Vec::as_slice).unwrap_or(&[]);
            match pipeline_readers(pipeline, tasks, runs, self.now) {
                Readers::Finished(reason) => reasons.push(reason),
                other => return Ok(other),
            }
        }
        Ok(Readers::Finished(reasons.join("; ")))
    }
}

/// An object that eviction removed (or, in a dry run, would remove), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub uri: String,
    pub bytes: u64,
    /// Which readers finished, in which runs.
    pub reason: String,
    pub dry_run: bool,
}

/// Evicts every cached object whose readers have all finished, unless `kept` names a reason to
/// keep it (a pipeline due soon reads it) or a lease pins it. Each eviction is reported to
/// `evicted` as it happens. Returns how many objects and bytes went.
pub async fn evict_finished<S: CacheSink>(
    store: &Store,
    cache: &ObjectCache<S>,
    kept: &(dyn Fn(&str) -> Option<String> + Sync),
    now: DateTime<Utc>,
    dry_run: bool,
    evicted: &mut (dyn FnMut(&Evicted) + Send),
) -> Result<(usize, u64)> {
    let manifests = cache
        .list()
        .await
        .context(|| "cannot list the cached objects".to_string())?;
    if manifests.is_empty() {
        return Ok((0, 0));
    }
    let leased = lease::leased_uris(cache)
        .await
        .context(|| "cannot read the leases".to_string())?;
    let mut index = ReaderIndex::new(store, now).await?;
    let (mut count, mut bytes) = (0, 0);
    for manifest in manifests {
        let uri = &manifest.uri;
        if leased.contains(uri) {
            tracing::info!(%uri, "kept: leased");
            continue;
        }
        if let Some(reason) = kept(uri) {
            tracing::info!(%uri, %reason, "kept");
            continue;
        }
        let reason = match index.readers(uri).await? {
            Readers::Finished(reason) => reason,
            Readers::Unknown => {
                tracing::info!(%uri, "kept: no analysed task reads it");
                continue;
            }
            Readers::Pending(reason) => {
                tracing::info!(%uri, %reason, "kept");
                continue;
            }
        };
        if !dry_run
            && !cache
                .evict(uri)
                .await
                .context(|| format!("cannot evict {uri}"))?
        {
            continue; // gone meanwhile
        }
        evicted(&Evicted {
            uri: uri.clone(),
            bytes: manifest.size,
            reason,
            dry_run,
        });
        count += 1;
        bytes += manifest.size;
    }
    Ok((count, bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use kfcache_schema::TaskObservation;

    use super::*;
    use crate::units::parse_time;

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap()
    }

    #[test]
    fn readers_are_found_by_uri_and_by_the_directories_above_it() {
        assert_eq!(
            reader_uris("s3://bucket/data/v3/train.tar"),
            vec![
                "s3://bucket/",
                "s3://bucket/data",
                "s3://bucket/data/",
                "s3://bucket/data/v3",
                "s3://bucket/data/v3/",
                "s3://bucket/data/v3/train.tar",
            ]
        );
        assert_eq!(reader_uris("task://a/b"), vec!["task://a/", "task://a/b"]);
        assert_eq!(reader_uris("inline"), vec!["inline"]);
        assert!(covers("s3://b/data/", "s3://b/data/x"));
        assert!(covers("s3://b/data", "s3://b/data/x"));
        assert!(covers("s3://b/data", "s3://b/data"));
        assert!(!covers("s3://b/data", "s3://b/database"));
        assert!(!covers("s3://b/data/x", "s3://b/data/"));
    }

    fn task(key: &str, started: Option<&str>, finished: Option<&str>) -> TaskObservation {
        TaskObservation {
            task_key: key.into(),
            started_at: started.map(at),
            finished_at: finished.map(at),
            ..TaskObservation::default()
        }
    }

    fn run(name: &str, over: bool, tasks: Vec<TaskObservation>) -> RunObservation {
        RunObservation {
            name: name.into(),
            started_at: tasks.iter().filter_map(|t| t.started_at).min(),
            phase: over.then(|| "Succeeded".to_string()),
            tasks,
            ..RunObservation::default()
        }
    }

    #[test]
    fn an_object_is_dead_once_every_reader_finished_in_the_runs_that_matter() {
        let now = at("2024-01-02T00:00:00Z");
        let readers: BTreeSet<String> = ["train".to_string(), "eval".to_string()].into();
        let done = run(
            "p-1",
            true,
            vec![
                task(
                    "train",
                    Some("2024-01-01T10:00:00Z"),
                    Some("2024-01-01T11:00:00Z"),
                ),
                task(
                    "eval",
                    Some("2024-01-01T11:00:00Z"),
                    Some("2024-01-01T11:10:00Z"),
                ),
            ],
        );
        assert!(matches!(
            pipeline_readers("p", &readers, std::slice::from_ref(&done), now),
            Readers::Finished(reason) if reason.contains("eval, train in `p` run p-1")
        ));
        assert!(matches!(
            pipeline_readers("p", &readers, &[], now),
            Readers::Pending(reason) if reason.contains("no recorded run")
        ));
        // A run in progress (reported by sidecars, no start of its own) whose eval has not run.
        let running = RunObservation {
            started_at: None,
            ..run(
                "p-2",
                false,
                vec![task("train", Some("2024-01-01T23:00:00Z"), None)],
            )
        };
        let runs = [running.clone(), done.clone()];
        assert!(matches!(
            pipeline_readers("p", &readers, &runs, now),
            Readers::Pending(reason) if reason.contains("of `p` run p-2 has not finished")
        ));
        // The same run a few days later has gone quiet: it no longer holds anything.
        let later = now + chrono::TimeDelta::days(3);
        assert!(matches!(
            pipeline_readers("p", &readers, &runs, later),
            Readers::Finished(_)
        ));
        // A task that did not run in a finished run counts as finished; in a running one not.
        let skipped = run(
            "p-3",
            true,
            vec![task(
                "train",
                Some("2024-01-01T20:00:00Z"),
                Some("2024-01-01T21:00:00Z"),
            )],
        );
        assert!(matches!(
            pipeline_readers("p", &readers, std::slice::from_ref(&skipped), now),
            Readers::Finished(_)
        ));
        let unfinished = run(
            "p-4",
            false,
            vec![task(
                "train",
                Some("2024-01-01T20:00:00Z"),
                Some("2024-01-01T21:00:00Z"),
            )],
        );
        assert!(matches!(
            pipeline_readers("p", &readers, std::slice::from_ref(&unfinished), now),
            Readers::Pending(reason) if reason.contains("eval")
        ));
    }
}
