//! Carrying out a [`Plan`]: staging its items into the cache with tokio, earliest deadline
//! first, within the budget.
//!
//! - **Order and concurrency.** Items start in plan order. At most
//!   [`ExecuteConfig::concurrency`] objects are in flight (the caller sets it to the Ignite
//!   nodes × objects per node) and at most [`ExecuteConfig::per_source_concurrency`] per
//!   source (bucket, host, claim). Inside one object, [`stage_object`] reads ranges in
//!   parallel and writes chunks while later ranges are read.
//! - **Idempotent.** Each object's source version is asked first; an object whose manifest
//!   matches it is a hit and is not copied. A changed object (another ETag or size) is staged
//!   again.
//! - **Budget.** The executor keeps a ledger of what the namespace holds (the manifests found
//!   at start, plus what it stages). Before an object comes in, room is made with the plan's
//!   eviction rule, on the clock of now: dead entries first, then the furthest next use;
//!   never an entry that is leased ([`crate::lease`]), read by a running task, or being
//!   staged. Bytes are reserved before the first chunk is written, so the cache never holds
//!   more than the budget.
//! - **Retries.** A transient failure ([`Error::is_transient`]: 5xx and timeouts after
//!   object_store's own retries, a lost connection to Ignite) is retried with exponential
//!   backoff and full jitter; a source that changed mid-copy is staged again at its new
//!   version. A failed write leaves nothing visible.
//! - **Resumable.** A crash leaves at most unfinished writes; their chunks are never visible
//!   and are swept by the layout. A second run skips what is complete and stages the rest.
//!
//! Everything that happens is reported as an [`Event`] (progress bars, JSON lines, metrics
//! and the database listen to them).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::batch::{stage_objects, PrefixOptions, StageObserver};
use crate::error::{Error, Result};
use crate::layout::ObjectCache;
use crate::lease;
use crate::plan::{resident_at, ItemStatus, Plan, PlanItem};
use crate::policy::{choose_victims, Resident, Victims};
use crate::sink::CacheSink;
use crate::source::{ArtifactSource, SourceObject};
use crate::stage::{stage_listed_object, stage_object_observed, StageOptions};

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all (1: no retry).
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The pause before try `attempt + 1` (`attempt` counts from 1): uniform in
    /// `0..=min(max, base × 2^(attempt-1))`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_delay);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
    }
}

/// Settings of an execution.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteConfig {
    pub budget_bytes: u64,
    /// Objects in flight at once.
    pub concurrency: usize,
    /// Objects in flight per source (bucket, host, claim, directory).
    pub per_source_concurrency: usize,
    pub stage: StageOptions,
    pub retry: RetryPolicy,
}

impl Default for ExecuteConfig {
    fn default() -> Self {
        ExecuteConfig {
            budget_bytes: 64 << 30,
            concurrency: 4,
            per_source_concurrency: 4,
            stage: StageOptions::default(),
            retry: RetryPolicy::default(),
        }
    }
}

/// Why an entry was evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvictReason {
    /// No remaining task reads it.
    Dead,
    /// Its next read is the furthest in the future.
    FurthestNextUse,
}

/// What happened, as it happened. Times are seconds on the plan's clock (from the run's start).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Staging of an object began.
    Start {
        uri: String,
        item: String,
        bytes: u64,
        deadline_s: f64,
    },
    /// Bytes of an object read so far.
    Progress { uri: String, done: u64, bytes: u64 },
    /// An object is in the cache.
    Staged {
        uri: String,
        item: String,
        bytes: u64,
        seconds: f64,
        finished_s: f64,
        deadline_s: f64,
        met_deadline: bool,
    },
    /// An object was already in the cache at its current source version.
    Hit {
        uri: String,
        item: String,
        bytes: u64,
    },
    /// An entry was removed to make room.
    Evicted {
        uri: String,
        bytes: u64,
        reason: EvictReason,
        for_uri: String,
    },
    /// A transient failure; the object is tried again after `delay_ms`.
    Retry {
        uri: String,
        attempt: u32,
        delay_ms: u64,
        error: String,
    },
    /// The object cannot be admitted now without breaking the budget rules.
    NoRoom {
        uri: String,
        item: String,
        bytes: u64,
        short_bytes: u64,
    },
    /// An upstream output its producer has not written yet (predicted at `ready_s`): staged
    /// by a later plan (`--follow`), once it exists.
    Waiting {
        uri: String,
        producer: String,
        ready_s: f64,
    },
    /// The object could not be staged.
    Failed {
        uri: String,
        item: String,
        error: String,
    },
}

/// Where events go.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// Totals of an execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub objects_staged: u64,
    pub bytes_staged: u64,
    pub hits: u64,
    pub hit_bytes: u64,
    pub evictions: u64,
    pub evicted_bytes: u64,
    pub deadline_misses: u64,
    pub retries: u64,
    pub no_room: u64,
    /// Upstream outputs not written yet.
    pub waiting: u64,
    pub failed: u64,
    pub seconds: f64,
    /// Most bytes the ledger held at once (never above the budget).
    pub peak_bytes: u64,
    /// URIs that were not staged (no room or failed), for a later run.
    pub deferred: Vec<String>,
}

impl Summary {
    /// Adds a later execution's totals (a re-plan of `--follow`): counts add up, the peak is
    /// the higher one, and what is deferred is what the later execution left.
    pub fn absorb(&mut self, later: Summary) {
        self.objects_staged += later.objects_staged;
        self.bytes_staged += later.bytes_staged;
        self.hits += later.hits;
        self.hit_bytes += later.hit_bytes;
        self.evictions += later.evictions;
        self.evicted_bytes += later.evicted_bytes;
        self.deadline_misses += later.deadline_misses;
        self.retries += later.retries;
        self.no_room += later.no_room;
        self.waiting += later.waiting;
        self.failed += later.failed;
        self.seconds += later.seconds;
        self.peak_bytes = self.peak_bytes.max(later.peak_bytes);
        self.deferred = later.deferred;
    }
}

/// The plan's clock: seconds since the run's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanClock {
    pub anchor: DateTime<Utc>,
}

impl PlanClock {
    pub fn now_s(&self) -> f64 {
        (Utc::now() - self.anchor).num_milliseconds() as f64 / 1000.0
    }
}

/// What the cache holds, as the executor accounts for it.
#[derive(Debug, Default)]
struct Ledger {
    /// Object URI → bytes held (staged, or reserved while staging).
    held: HashMap<String, u64>,
    /// Being staged now: pinned.
    in_flight: HashSet<String>,
    leased: BTreeSet<String>,
    peak: u64,
}

impl Ledger {
    fn used(&self) -> u64 {
        self.held.values().sum()
    }
}

/// Runs plans against one source and one cache.
pub struct Executor<S: CacheSink + ?Sized + 'static> {
    source: Arc<dyn ArtifactSource>,
    cache: ObjectCache<S>,
    config: ExecuteConfig,
    events: EventSink,
    clock: PlanClock,
    ledger: Arc<Mutex<Ledger>>,
    summary: Arc<Mutex<Summary>>,
}

impl<S: CacheSink + ?Sized + 'static> std::fmt::Debug for Executor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("source", &self.source)
            .field("cache", &self.cache)
            .field("config", &self.config)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// One object to copy: the item it belongs to and its source state.
#[derive(Debug, Clone)]
struct Work {
    item: PlanItem,
    object: SourceObject,
    /// For a directory or prefix: every object under it, staged together in batches
    /// (`object` then describes the whole: the prefix and the total bytes).
    group: Option<Vec<SourceObject>>,
}

impl<S: CacheSink + ?Sized + 'static> Executor<S> {
    /// An executor whose ledger starts from what the namespace holds now.
    pub async fn new(
        source: Arc<dyn ArtifactSource>,
        cache: ObjectCache<S>,
        config: ExecuteConfig,
        clock: PlanClock,
        events: EventSink,
    ) -> Result<Self> {
        if config.budget_bytes == 0 {
            return Err(Error::Config("the budget is 0 bytes".to_string()));
        }
        let mut ledger = Ledger::default();
        for manifest in cache.list().await? {
            ledger.held.insert(manifest.uri.clone(), manifest.size);
        }
        ledger.leased = lease::leased_uris(&cache).await?;
        ledger.peak = ledger.used();
        Ok(Executor {
            source,
            cache,
            config,
            events,
            clock,
            ledger: Arc::new(Mutex::new(ledger)),
            summary: Arc::new(Mutex::new(Summary::default())),
        })
    }

    /// Bytes the namespace holds, as accounted.
    pub fn used_bytes(&self) -> u64 {
        self.lock_ledger().used()
    }

    fn lock_ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, event: Event) {
        (self.events)(event);
    }

    fn count(&self, update: impl FnOnce(&mut Summary)) {
        update(&mut self.summary.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Re-reads the leases (a sidecar may have taken or given up some).
    pub async fn refresh_leases(&self) -> Result<()> {
        let leased = lease::leased_uris(&self.cache).await?;
        self.lock_ledger().leased = leased;
        Ok(())
    }

    /// Stages every item of `plan` that it stages ([`ItemStatus::stages`]) and checks every
    /// cached one; returns the totals of this call.
    pub async fn execute(self: &Arc<Self>, plan: &Arc<Plan>) -> Result<Summary> {
        let started = Instant::now();
        *self.summary.lock().unwrap_or_else(|p| p.into_inner()) = Summary::default();
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut per_source: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        for item in &plan.items {
            let wanted = item.status.stages() || item.status == ItemStatus::Cached;
            if !wanted {
                if let ItemStatus::NoRoom { short_bytes } = item.status {
                    self.emit(Event::NoRoom {
                        uri: item.uri.clone(),
                        item: item.uri.clone(),
                        bytes: item.bytes,
                        short_bytes,
                    });
                    self.count(|s| {
                        s.no_room += 1;
                        s.deferred.push(item.uri.clone());
                    });
                }
                continue;
            }
            if let Some(producer) = &item.producer {
                if item.ready_s > self.clock.now_s() {
                    self.emit(Event::Waiting {
                        uri: item.uri.clone(),
                        producer: producer.clone(),
                        ready_s: item.ready_s,
                    });
                    self.count(|s| {
                        s.waiting += 1;
                        s.deferred.push(item.uri.clone());
                    });
                    continue;
                }
            }
            // Listing, the hit check and admission happen here, in plan order, so that an
            // earlier deadline is never refused room taken by a later one; copies run
            // concurrently, at most `concurrency` at once.
            for work in self.prepare(plan, item).await {
                let slot = slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| Error::Task {
                        what: "waiting for a staging slot",
                        message: e.to_string(),
                    })?;
                let source_slots = per_source
                    .entry(source_key(&work.item.uri))
                    .or_insert_with(|| {
                        Arc::new(Semaphore::new(self.config.per_source_concurrency.max(1)))
                    })
                    .clone();
                let this = self.clone();
                tasks.spawn(async move {
                    let _slot = slot;
                    let Ok(_permit) = source_slots.acquire().await else {
                        return;
                    };
                    this.copy(work).await;
                });
                // Finished copies are reaped as we go.
                while tasks.try_join_next().is_some() {}
            }
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                return Err(Error::Task {
                    what: "staging an item",
                    message: error.to_string(),
                });
            }
        }
        let mut summary = self
            .summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        summary.seconds = started.elapsed().as_secs_f64();
        summary.peak_bytes = self.lock_ledger().peak;
        Ok(summary)
    }

    /// Lists the item's objects (one, or every object under a directory or prefix), and
    /// for each that is not current in the cache makes room and reserves it; returns the
    /// copies to make.
    async fn prepare(&self, plan: &Plan, item: &PlanItem) -> Vec<Work> {
        let mut directory = item.uri.ends_with('/');
        let objects = if directory {
            self.with_retries(&item.uri, || self.source.list(&item.uri))
                .await
        } else {
            match self
                .with_retries(&item.uri, || self.source.head(&item.uri))
                .await
            {
                Ok(object) => Ok(vec![object]),
                // An S3 key that names a "directory": Argo reads every object under it.
                Err(error @ Error::SourceNotFound { .. }) => {
                    let dir = format!("{}/", item.uri);
                    match self.with_retries(&dir, || self.source.list(&dir)).await {
                        Ok(objects) if !objects.is_empty() => {
                            directory = true;
                            Ok(objects)
                        }
                        _ => Err(error),
                    }
                }
                Err(error) => Err(error),
            }
        };
        let objects = match objects {
            Ok(objects) => objects,
            Err(error) => {
                self.fail(&item.uri, &item.uri, &error);
                return Vec::new();
            }
        };
        if directory {
            // One admission and one batched staging for the whole directory: objects already
            // current are skipped by the batch without being read.
            let entries: Vec<(String, u64)> =
                objects.iter().map(|o| (o.uri.clone(), o.size)).collect();
            let total = entries.iter().map(|(_, b)| b).sum();
            return match self.admit(plan, item, &entries).await {
                Ok(()) => vec![Work {
                    item: item.clone(),
                    object: SourceObject {
                        uri: item.uri.clone(),
                        size: total,
                        version: crate::manifest::SourceVersion {
                            etag: None,
                            size: total,
                            last_modified: None,
                        },
                        attributes: Default::default(),
                    },
                    group: Some(objects),
                }],
                Err(refusal) => {
                    self.refused(&item.uri, item, total, refusal);
                    Vec::new()
                }
            };
        }
        let mut work = Vec::with_capacity(objects.len());
        for object in objects {
            let w = Work {
                item: item.clone(),
                object,
                group: None,
            };
            if self.admit_object(plan, &w).await {
                work.push(w);
            }
        }
        work
    }

    fn refused(&self, uri: &str, item: &PlanItem, bytes: u64, refusal: Admission) {
        match refusal {
            Admission::NoRoom(short_bytes) => {
                self.emit(Event::NoRoom {
                    uri: uri.to_string(),
                    item: item.uri.clone(),
                    bytes,
                    short_bytes,
                });
                self.count(|s| {
                    s.no_room += 1;
                    s.deferred.push(uri.to_string());
                });
            }
            Admission::Failed(error) => self.fail(uri, &item.uri, &error),
        }
    }

    fn fail(&self, uri: &str, item: &str, error: &Error) {
        let mut message = error.to_string();
        let mut cause = std::error::Error::source(error);
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        self.emit(Event::Failed {
            uri: uri.to_string(),
            item: item.to_string(),
            error: message,
        });
        self.count(|s| {
            s.failed += 1;
            s.deferred.push(uri.to_string());
        });
    }

    /// Runs `op` until it succeeds, fails for good, or the tries run out.
    async fn with_retries<T, F, Fut>(&self, uri: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_transient() && attempt < self.config.retry.attempts => {
                    let delay = self.config.retry.delay(attempt);
                    self.emit(Event::Retry {
                        uri: uri.to_string(),
                        attempt,
                        delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error: error.to_string(),
                    });
                    self.count(|s| s.retries += 1);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Whether `work` has to be copied: false for a hit (current in the cache), for no
    /// room, and for a failure (each reported); true once room is made and reserved.
    async fn admit_object(&self, plan: &Plan, work: &Work) -> bool {
        let uri = work.object.uri.clone();
        let item = &work.item;
        let bytes = work.object.size;
        match self.cache.stat(&uri).await {
            Ok(Some(manifest)) if manifest.matches(&work.object) => {
                self.emit(Event::Hit {
                    uri: uri.clone(),
                    item: item.uri.clone(),
                    bytes,
                });
                self.count(|s| {
                    s.hits += 1;
                    s.hit_bytes += bytes;
                });
                self.lock_ledger().held.insert(uri, manifest.size);
                return false;
            }
            Ok(_) => {}
            Err(error) => {
                self.fail(&uri, &item.uri, &error);
                return false;
            }
        }
        match self.admit(plan, item, &[(uri.clone(), bytes)]).await {
            Ok(()) => true,
            Err(refusal) => {
                self.refused(&uri, item, bytes, refusal);
                false
            }
        }
    }

    /// Copies an admitted object (its room is reserved).
    async fn copy(&self, work: Work) {
        if work.group.is_some() {
            return self.copy_group(work).await;
        }
        let uri = work.object.uri.clone();
        let item = &work.item;
        let bytes = work.object.size;
        self.emit(Event::Start {
            uri: uri.clone(),
            item: item.uri.clone(),
            bytes,
            deadline_s: item.deadline_s,
        });
        let started = Instant::now();
        let progress = Progress::new(self.events.clone(), &uri, bytes);
        let on_bytes = |n: u64| progress.add(n);
        let result = self
            .with_retries(&uri, || async {
                progress.reset();
                // The object was headed when it was admitted: no second `head`.
                match stage_listed_object(
                    self.source.as_ref(),
                    &self.cache,
                    &work.object,
                    self.config.stage,
                    &on_bytes,
                )
                .await
                {
                    // The source changed since: stage its new version now.
                    Err(Error::SourceChanged { .. }) => {
                        progress.reset();
                        stage_object_observed(
                            self.source.as_ref(),
                            &self.cache,
                            &uri,
                            self.config.stage,
                            &on_bytes,
                        )
                        .await
                    }
                    other => other,
                }
            })
            .await;
        let mut ledger = self.lock_ledger();
        ledger.in_flight.remove(&uri);
        match result {
            Ok(manifest) => {
                ledger.held.insert(uri.clone(), manifest.size);
                drop(ledger);
                let finished_s = self.clock.now_s();
                let met_deadline = finished_s <= item.deadline_s;
                self.emit(Event::Staged {
                    uri,
                    item: item.uri.clone(),
                    bytes: manifest.size,
                    seconds: started.elapsed().as_secs_f64(),
                    finished_s,
                    deadline_s: item.deadline_s,
                    met_deadline,
                });
                self.count(|s| {
                    s.objects_staged += 1;
                    s.bytes_staged += manifest.size;
                    s.deadline_misses += u64::from(!met_deadline);
                });
            }
            Err(error) => {
                ledger.held.remove(&uri);
                drop(ledger);
                self.fail(&uri, &item.uri, &error);
            }
        }
    }

    /// Makes room for `entries` (object URI, bytes) and reserves it, or says why not.
    async fn admit(
        &self,
        plan: &Plan,
        item: &PlanItem,
        entries: &[(String, u64)],
    ) -> std::result::Result<(), Admission> {
        let now = self.clock.now_s();
        let first_use = entries
            .iter()
            .flat_map(|(uri, _)| plan.readers_of(uri))
            .filter(|r| r.end_s > now)
            .map(|r| if r.running { now } else { r.start_s })
            .reduce(f64::min)
            .unwrap_or(item.deadline_s + plan.config.margin_s);
        let incoming: u64 = entries.iter().map(|(_, b)| b).sum();
        let victims: Vec<(String, u64, EvictReason)> = {
            let mut ledger = self.lock_ledger();
            // A replaced version's bytes come out of the ledger as the new ones go in; if
            // the room cannot be made, they are put back.
            let previous: Vec<(String, u64)> = entries
                .iter()
                .filter_map(|(uri, _)| ledger.held.remove(uri).map(|b| (uri.clone(), b)))
                .collect();
            let held: Vec<(String, u64)> =
                ledger.held.iter().map(|(u, b)| (u.clone(), *b)).collect();
            let residents: Vec<Resident> = held
                .iter()
                .map(|(u, b)| {
                    let mut r = resident_at(*b, plan.readers_of(u), now);
                    r.pinned |= ledger.leased.contains(u) || ledger.in_flight.contains(u);
                    r
                })
                .collect();
            match choose_victims(&residents, self.config.budget_bytes, incoming, first_use) {
                Victims::Refused { short_bytes } => {
                    ledger.held.extend(previous);
                    return Err(Admission::NoRoom(short_bytes));
                }
                Victims::Evict(chosen) => {
                    let victims: Vec<(String, u64, EvictReason)> = chosen
                        .into_iter()
                        .map(|i| {
                            let reason = if residents[i].next_use_s.is_none() {
                                EvictReason::Dead
                            } else {
                                EvictReason::FurthestNextUse
                            };
                            (held[i].0.clone(), held[i].1, reason)
                        })
                        .collect();
                    // Reserve now: the victims' bytes leave the ledger and ours come in, in
                    // one step, so that later admissions see the budget as it will be.
                    for (victim, ..) in &victims {
                        ledger.held.remove(victim);
                        ledger.in_flight.insert(victim.clone());
                    }
                    for (uri, bytes) in entries {
                        ledger.held.insert(uri.clone(), *bytes);
                        ledger.in_flight.insert(uri.clone());
                    }
                    let used = ledger.used();
                    ledger.peak = ledger.peak.max(used);
                    victims
                }
            }
        };
        // The victims leave the cache before the first chunk of the new objects lands.
        let mut failure = None;
        for (victim, victim_bytes, reason) in &victims {
            match self.cache.evict(victim).await {
                Ok(_) => {
                    self.emit(Event::Evicted {
                        uri: victim.clone(),
                        bytes: *victim_bytes,
                        reason: *reason,
                        for_uri: item.uri.clone(),
                    });
                    self.count(|s| {
                        s.evictions += 1;
                        s.evicted_bytes += victim_bytes;
                    });
                }
                Err(error) => failure = Some(error),
            }
            self.lock_ledger().in_flight.remove(victim);
        }
        if let Some(error) = failure {
            let mut ledger = self.lock_ledger();
            for (uri, _) in entries {
                ledger.held.remove(uri);
                ledger.in_flight.remove(uri);
            }
            return Err(Admission::Failed(error));
        }
        Ok(())
    }

    /// Stages a directory's objects in batches (their room is reserved).
    async fn copy_group(&self, work: Work) {
        let item = &work.item;
        let objects = work.group.unwrap_or_default();
        let total = work.object.size;
        self.emit(Event::Start {
            uri: item.uri.clone(),
            item: item.uri.clone(),
            bytes: total,
            deadline_s: item.deadline_s,
        });
        let started = Instant::now();
        let observer = Progress::new(self.events.clone(), &item.uri, total);
        let options = PrefixOptions {
            large: self.config.stage,
            ..PrefixOptions::default()
        };
        let result = self
            .with_retries(&item.uri, || {
                observer.reset();
                stage_objects(
                    self.source.as_ref(),
                    &self.cache,
                    objects.clone(),
                    options,
                    &observer,
                )
            })
            .await;
        {
            let mut ledger = self.lock_ledger();
            for object in &objects {
                ledger.in_flight.remove(&object.uri);
            }
        }
        match result {
            Ok(summary) => {
                let finished_s = self.clock.now_s();
                let met_deadline = finished_s <= item.deadline_s;
                if summary.objects_skipped > 0 {
                    self.emit(Event::Hit {
                        uri: item.uri.clone(),
                        item: item.uri.clone(),
                        bytes: summary.bytes_skipped,
                    });
                }
                if summary.objects_staged > 0 {
                    self.emit(Event::Staged {
                        uri: item.uri.clone(),
                        item: item.uri.clone(),
                        bytes: summary.bytes_staged,
                        seconds: started.elapsed().as_secs_f64(),
                        finished_s,
                        deadline_s: item.deadline_s,
                        met_deadline,
                    });
                }
                self.count(|s| {
                    s.objects_staged += summary.objects_staged;
                    s.bytes_staged += summary.bytes_staged;
                    s.hits += summary.objects_skipped;
                    s.hit_bytes += summary.bytes_skipped;
                    s.deadline_misses += u64::from(!met_deadline && summary.objects_staged > 0);
                });
            }
            Err(error) => {
                // What did land stays accounted for; the rest is released.
                let landed: HashSet<String> = match self.cache.list().await {
                    Ok(manifests) => manifests.into_iter().map(|m| m.uri).collect(),
                    Err(_) => HashSet::new(),
                };
                {
                    let mut ledger = self.lock_ledger();
                    for object in &objects {
                        if !landed.contains(&object.uri) {
                            ledger.held.remove(&object.uri);
                        }
                    }
                }
                self.fail(&item.uri, &item.uri, &error);
            }
        }
    }
}

/// Bytes of one staging (an object, or a directory's objects together) stored so far,
/// reported as [`Event::Progress`].
struct Progress {
    events: EventSink,
    uri: String,
    bytes: u64,
    done: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new(events: EventSink, uri: &str, bytes: u64) -> Self {
        Progress {
            events,
            uri: uri.to_string(),
            bytes,
            done: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A retry starts the count again.
    fn reset(&self) {
        self.done.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    fn add(&self, bytes: u64) {
        let done = self
            .done
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed)
            + bytes;
        (self.events)(Event::Progress {
            uri: self.uri.clone(),
            done,
            bytes: self.bytes,
        });
    }
}

impl StageObserver for Progress {
    fn on_bytes(&self, bytes: u64) {
        self.add(bytes);
    }
}

enum Admission {
    NoRoom(u64),
    Failed(Error),
}

/// The source an URI is read from: `scheme://authority`.
fn source_key(uri: &str) -> String {
    match uri.split_once("://") {
        Some((scheme, rest)) => {
            format!("{scheme}://{}", rest.split('/').next().unwrap_or_default())
        }
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests;
