#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};

use async_trait::async_trait;
use bytes::Bytes;

use super::*;
use crate::manifest::SourceVersion;
use crate::plan::{plan, CachedEntry, PlanConfig, PlanInput, PlanTask, TaskState};
use crate::{LayoutConfig, MemorySink, ObjectStoreSource, Space};

const KB: u64 = 1024;

/// A sink that records the chunk bytes it holds after every call, to check the budget at
/// every moment.
#[derive(Debug, Default)]
struct MeteredSink {
    inner: MemorySink,
    chunk_bytes: Mutex<HashMap<String, u64>>,
    peak: AtomicU64,
}

impl MeteredSink {
    fn held(&self) -> u64 {
        self.chunk_bytes.lock().unwrap().values().sum()
    }
}

#[async_trait]
impl CacheSink for MeteredSink {
    fn describe(&self) -> String {
        "metered memory".to_string()
    }
    async fn get(&self, space: Space, key: &str) -> Result<Option<Bytes>> {
        self.inner.get(space, key).await
    }
    async fn get_all(&self, space: Space, keys: &[String]) -> Result<HashMap<String, Bytes>> {
        self.inner.get_all(space, keys).await
    }
    async fn put(&self, space: Space, key: &str, value: Bytes) -> Result<()> {
        self.put_all(space, vec![(key.to_string(), value)]).await
    }
    async fn put_all(&self, space: Space, entries: Vec<(String, Bytes)>) -> Result<()> {
        if space == Space::Chunks {
            let mut held = self.chunk_bytes.lock().unwrap();
            for (key, value) in &entries {
                held.insert(key.clone(), value.len() as u64);
            }
            let total = held.values().sum();
            self.peak.fetch_max(total, Ordering::SeqCst);
        }
        self.inner.put_all(space, entries).await
    }
    async fn remove_all(&self, space: Space, keys: &[String]) -> Result<()> {
        if space == Space::Chunks {
            let mut held = self.chunk_bytes.lock().unwrap();
            for key in keys {
                held.remove(key);
            }
        }
        self.inner.remove_all(space, keys).await
    }
    async fn keys_with_prefix(&self, space: Space, prefix: &str) -> Result<Vec<String>> {
        self.inner.keys_with_prefix(space, prefix).await
    }
}

/// A source that fails the first `failures` ranged reads with a server error, and counts
/// the reads.
#[derive(Debug)]
struct Flaky {
    inner: ObjectStoreSource,
    failures: AtomicUsize,
    reads: AtomicUsize,
}

#[async_trait]
impl ArtifactSource for Flaky {
    async fn head(&self, uri: &str) -> Result<SourceObject> {
        self.inner.head(uri).await
    }
    async fn read_range(
        &self,
        uri: &str,
        range: Range<u64>,
        version: Option<&SourceVersion>,
    ) -> Result<Bytes> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(Error::Source {
                op: "read",
                uri: uri.to_string(),
                source: Box::new(object_store::Error::Generic {
                    store: "test",
                    source: "503 Service Unavailable".into(),
                }),
            });
        }
        self.inner.read_range(uri, range, version).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<SourceObject>> {
        self.inner.list(prefix).await
    }
}

struct Fixture {
    store: Arc<InMemory>,
    source: Arc<Flaky>,
    sink: Arc<MeteredSink>,
    cache: ObjectCache<MeteredSink>,
    events: Arc<Mutex<Vec<Event>>>,
}

async fn fixture(objects: &[(&str, u64)]) -> Fixture {
    let store = Arc::new(InMemory::new());
    for (name, bytes) in objects {
        put(&store, name, *bytes, 1).await;
    }
    let inner = ObjectStoreSource::default();
    inner.register("s3://bucket", store.clone());
    let sink = Arc::new(MeteredSink::default());
    let cache = ObjectCache::new(
        sink.clone(),
        LayoutConfig {
            chunk_size: 16 * KB,
            ..LayoutConfig::default()
        },
    )
    .unwrap();
    Fixture {
        store,
        source: Arc::new(Flaky {
            inner,
            failures: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
        }),
        sink,
        cache,
        events: Arc::new(Mutex::new(Vec::new())),
    }
}

async fn put(store: &InMemory, name: &str, bytes: u64, seed: u8) {
    let data: Vec<u8> = (0..bytes)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed)
        .collect();
    store
        .put(&StorePath::from(name), PutPayload::from(data))
        .await
        .unwrap();
}

fn gpu_task(id: &str, start: f64, end: f64, inputs: &[(&str, u64)]) -> PlanTask {
    PlanTask {
        id: id.to_string(),
        gpus: 1,
        start_s: start,
        end_s: end,
        runs: true,
        state: TaskState::Pending,
        inputs: inputs
            .iter()
            .map(|(name, bytes)| PlanInput {
                name: name.to_string(),
                uri: format!("s3://bucket/{name}"),
                bytes: Some(*bytes),
            })
            .collect(),
        outputs: Vec::new(),
    }
}

async fn executor(f: &Fixture, budget: u64) -> Arc<Executor<MeteredSink>> {
    let events = f.events.clone();
    Arc::new(
        Executor::new(
            f.source.clone(),
            f.cache.clone(),
            ExecuteConfig {
                budget_bytes: budget,
                concurrency: 3,
                per_source_concurrency: 2,
                retry: RetryPolicy {
                    attempts: 4,
                    base_delay: Duration::from_millis(1),
                    max_delay: Duration::from_millis(5),
                },
                ..ExecuteConfig::default()
            },
            PlanClock { anchor: Utc::now() },
            Arc::new(move |e| events.lock().unwrap().push(e)),
        )
        .await
        .unwrap(),
    )
}

async fn cached_entries(cache: &ObjectCache<MeteredSink>) -> Vec<CachedEntry> {
    cache
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| CachedEntry {
            uri: m.uri,
            bytes: m.size,
            leased: false,
        })
        .collect()
}

fn config(budget: u64) -> PlanConfig {
    PlanConfig {
        budget_bytes: budget,
        margin_s: 1.0,
        ..PlanConfig::default()
    }
}

#[tokio::test]
async fn stages_each_input_once_then_finds_it_current_and_restages_a_changed_one() {
    let f = fixture(&[("a", 100 * KB), ("b", 40 * KB)]).await;
    let tasks = [
        gpu_task("train", 600.0, 900.0, &[("a", 100 * KB), ("b", 40 * KB)]),
        gpu_task("eval", 900.0, 950.0, &[("a", 100 * KB)]),
    ];
    let p = Arc::new(plan(&tasks, &[], &config(1 << 30)));
    let exec = executor(&f, 1 << 30).await;
    let summary = exec.execute(&p).await.unwrap();
    assert_eq!(summary.objects_staged, 2, "{:?}", f.events.lock().unwrap());
    assert_eq!(summary.bytes_staged, 140 * KB);
    assert_eq!(summary.deadline_misses, 0);
    // `a` is read by two tasks and copied once: 7 + 3 chunks of 16 KiB were read.
    assert_eq!(f.source.reads.load(Ordering::SeqCst), 7 + 3);
    let (_, data) = f.cache.read("s3://bucket/a").await.unwrap();
    assert_eq!(data.len() as u64, 100 * KB);

    // A second run copies nothing.
    let cached = cached_entries(&f.cache).await;
    let p = Arc::new(plan(&tasks, &cached, &config(1 << 30)));
    let summary = exec.execute(&p).await.unwrap();
    assert_eq!((summary.hits, summary.objects_staged), (2, 0));

    // `b` changes at the source: its manifest no longer matches, and it is staged again.
    put(&f.store, "b", 40 * KB, 99).await;
    let summary = exec.execute(&p).await.unwrap();
    assert_eq!((summary.hits, summary.objects_staged), (1, 1));
    let (_, data) = f.cache.read("s3://bucket/b").await.unwrap();
    assert_eq!(data[1], 7 ^ 99);
}

#[tokio::test]
async fn the_budget_holds_at_every_moment_and_dead_entries_go_first() {
    let f = fixture(&[
        ("old", 60 * KB),
        ("a", 50 * KB),
        ("b", 50 * KB),
        ("c", 50 * KB),
    ])
    .await;
    // `old` is cached and no task reads it.
    f.cache
        .put_bytes(
            "s3://bucket/old",
            f.source.head("s3://bucket/old").await.unwrap().version,
            Bytes::from(vec![1u8; 60 * KB as usize]),
        )
        .await
        .unwrap();
    let tasks = [
        gpu_task("t1", 600.0, 700.0, &[("a", 50 * KB)]),
        gpu_task("t2", 700.0, 800.0, &[("b", 50 * KB)]),
        gpu_task("t3", 5000.0, 5100.0, &[("c", 50 * KB)]),
    ];
    let budget = 120 * KB;
    let cached = cached_entries(&f.cache).await;
    let p = Arc::new(plan(&tasks, &cached, &config(budget)));
    let exec = executor(&f, budget).await;
    let summary = exec.execute(&p).await.unwrap();
    assert!(
        f.sink.peak.load(Ordering::SeqCst) <= budget,
        "the cache held {} bytes, budget {budget}",
        f.sink.peak.load(Ordering::SeqCst)
    );
    assert!(summary.peak_bytes <= budget);
    assert!(f.sink.held() <= budget);
    let events = f.events.lock().unwrap().clone();
    let evicted: Vec<(&str, EvictReason)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Evicted { uri, reason, .. } => Some((uri.as_str(), *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        evicted.first(),
        Some(&("s3://bucket/old", EvictReason::Dead))
    );
    // `c` is needed last and does not fit beside `a` and `b`: it waits (no room now).
    assert!(f.cache.stat("s3://bucket/a").await.unwrap().is_some());
    assert!(f.cache.stat("s3://bucket/b").await.unwrap().is_some());
    assert_eq!(summary.deferred, ["s3://bucket/c"]);
}

#[tokio::test]
async fn a_leased_entry_is_never_evicted() {
    let f = fixture(&[("pinned", 80 * KB), ("new", 80 * KB)]).await;
    f.cache
        .put_bytes(
            "s3://bucket/pinned",
            f.source.head("s3://bucket/pinned").await.unwrap().version,
            Bytes::from(vec![2u8; 80 * KB as usize]),
        )
        .await
        .unwrap();
    lease::acquire(
        &f.cache,
        "s3://bucket/pinned",
        "run/reader",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let tasks = [gpu_task("t", 600.0, 700.0, &[("new", 80 * KB)])];
    let budget = 100 * KB;
    let p = Arc::new(plan(&tasks, &[], &config(budget)));
    let exec = executor(&f, budget).await;
    let summary = exec.execute(&p).await.unwrap();
    assert_eq!(summary.no_room, 1);
    assert!(f.cache.stat("s3://bucket/pinned").await.unwrap().is_some());
    assert!(f.cache.stat("s3://bucket/new").await.unwrap().is_none());
    // Once the lease is given up, the entry (which no task reads) makes way.
    lease::release(&f.cache, "s3://bucket/pinned", "run/reader")
        .await
        .unwrap();
    exec.refresh_leases().await.unwrap();
    let summary = exec.execute(&p).await.unwrap();
    assert_eq!((summary.objects_staged, summary.evictions), (1, 1));
}

#[tokio::test]
async fn a_server_error_from_the_source_is_retried() {
    // One chunk, so that each try makes one read: two failures, two retries.
    let f = fixture(&[("a", 10 * KB)]).await;
    f.source.failures.store(2, Ordering::SeqCst);
    let tasks = [gpu_task("t", 600.0, 700.0, &[("a", 10 * KB)])];
    let p = Arc::new(plan(&tasks, &[], &config(1 << 30)));
    let exec = executor(&f, 1 << 30).await;
    let summary = exec.execute(&p).await.unwrap();
    assert_eq!(summary.objects_staged, 1);
    assert_eq!(summary.retries, 2);
    let retries = f
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::Retry { error, .. } if error.contains("read")))
        .count();
    assert_eq!(retries, 2);
    assert_eq!(
        f.cache.read("s3://bucket/a").await.unwrap().1.len(),
        10 * KB as usize
    );
}

#[tokio::test]
async fn a_directory_input_stages_every_object_under_it() {
    let f = fixture(&[
        ("ds/x", 10 * KB),
        ("ds/y", 20 * KB),
        ("ds/sub/z", 5 * KB),
        ("other", KB),
    ])
    .await;
    let mut task = gpu_task("t", 600.0, 700.0, &[]);
    task.inputs.push(PlanInput {
        name: "ds".to_string(),
        uri: "s3://bucket/ds/".to_string(),
        bytes: Some(35 * KB),
    });
    let p = Arc::new(plan(&[task], &[], &config(1 << 30)));
    let exec = executor(&f, 1 << 30).await;
    let summary = exec.execute(&p).await.unwrap();
    assert_eq!(summary.objects_staged, 3);
    let uris: Vec<String> = f
        .cache
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.uri)
        .collect();
    assert_eq!(
        uris,
        [
            "s3://bucket/ds/sub/z",
            "s3://bucket/ds/x",
            "s3://bucket/ds/y"
        ]
    );
}

#[test]
fn backoff_is_bounded_and_jittered() {
    let policy = RetryPolicy {
        attempts: 10,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1000),
    };
    let delays: Vec<Duration> = (0..200).map(|_| policy.delay(6)).collect();
    assert!(delays.iter().all(|d| *d <= Duration::from_millis(1000)));
    let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
    assert!(distinct.len() > 20, "delays are not jittered: {distinct:?}");
    assert!((0..50).all(|_| policy.delay(1) <= Duration::from_millis(100)));
}

#[tokio::test]
async fn an_upstream_output_waits_for_its_producer() {
    let f = fixture(&[("features", 10 * KB)]).await;
    let mut producer = gpu_task("prepare", 0.0, 3600.0, &[]);
    producer.gpus = 0;
    producer.outputs = vec!["s3://bucket/features".to_string()];
    let tasks = [
        producer,
        gpu_task("train", 3600.0, 7200.0, &[("features", 10 * KB)]),
    ];
    let p = Arc::new(plan(&tasks, &[], &config(1 << 30)));
    let exec = executor(&f, 1 << 30).await;
    let summary = exec.execute(&p).await.unwrap();
    assert_eq!((summary.waiting, summary.objects_staged), (1, 0));
    assert_eq!(f.source.reads.load(Ordering::SeqCst), 0);
    assert!(f.events.lock().unwrap().iter().any(|e| matches!(
        e,
        Event::Waiting { producer, ready_s, .. } if producer == "prepare" && *ready_s == 3600.0
    )));
}

#[tokio::test]
async fn a_key_that_names_a_directory_stages_every_object_under_it() {
    let f = fixture(&[("ds/x", 10 * KB), ("ds/y", 20 * KB)]).await;
    let tasks = [gpu_task("t", 600.0, 700.0, &[("ds", 30 * KB)])];
    let p = Arc::new(plan(&tasks, &[], &config(1 << 30)));
    let exec = executor(&f, 1 << 30).await;
    let summary = exec.execute(&p).await.unwrap();
    assert_eq!((summary.objects_staged, summary.failed), (2, 0));
    let uris: Vec<String> = f
        .cache
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.uri)
        .collect();
    assert_eq!(uris, ["s3://bucket/ds/x", "s3://bucket/ds/y"]);
}
