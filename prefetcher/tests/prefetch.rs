//! Planning and executing prefetches against the real servers: Ignite (1 node) and the moto
//! S3 server started by scripts/services.sh.
//!
//! - the budget holds at every moment, measured at the sink, and a shared input is copied once;
//! - an interrupted prefetch resumes without copying again what was complete, and leaves no
//!   chunks of the interrupted write behind;
//! - an object changed at the source after staging is staged again;
//! - a 5xx answer from S3 is retried (a proxy in front of moto answers 503 first).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use kfcache_prefetcher::execute::{Event, ExecuteConfig, Executor, PlanClock, RetryPolicy};
use kfcache_prefetcher::plan::{plan, CachedEntry, PlanConfig, PlanInput, PlanTask, TaskState};
use kfcache_prefetcher::{
    ArtifactSource, CacheSink, IgniteSink, LayoutConfig, ObjectCache, ObjectStoreSource, Result,
    SourceConfig, SourceObject, SourceVersion, Space, StageOptions,
};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KB: u64 = 1024;
const CHUNK: u64 = 64 * KB;

/// An Ignite sink that records the chunk bytes it holds after every call.
#[derive(Debug)]
struct Metered {
    inner: IgniteSink,
    held: Mutex<HashMap<String, u64>>,
    peak: AtomicU64,
}

#[async_trait]
impl CacheSink for Metered {
    fn describe(&self) -> String {
        self.inner.describe()
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
            let mut held = self.held.lock().unwrap();
            for (key, value) in &entries {
                held.insert(key.clone(), value.len() as u64);
            }
            self.peak.fetch_max(held.values().sum(), Ordering::SeqCst);
        }
        self.inner.put_all(space, entries).await
    }
    async fn remove_all(&self, space: Space, keys: &[String]) -> Result<()> {
        // Removed from the count only once the cluster has removed them.
        self.inner.remove_all(space, keys).await?;
        if space == Space::Chunks {
            let mut held = self.held.lock().unwrap();
            for key in keys {
                held.remove(key);
            }
        }
        Ok(())
    }
    async fn keys_with_prefix(&self, space: Space, prefix: &str) -> Result<Vec<String>> {
        self.inner.keys_with_prefix(space, prefix).await
    }
}

/// A source that counts ranged reads per URI and can slow them down.
#[derive(Debug)]
struct Counting {
    inner: ObjectStoreSource,
    reads: Mutex<HashMap<String, usize>>,
    delay: Duration,
}

#[async_trait]
impl ArtifactSource for Counting {
    async fn head(&self, uri: &str) -> Result<SourceObject> {
        self.inner.head(uri).await
    }
    async fn read_range(
        &self,
        uri: &str,
        range: Range<u64>,
        version: Option<&SourceVersion>,
    ) -> Result<Bytes> {
        tokio::time::sleep(self.delay).await;
        *self
            .reads
            .lock()
            .unwrap()
            .entry(uri.to_string())
            .or_default() += 1;
        self.inner.read_range(uri, range, version).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<SourceObject>> {
        self.inner.list(prefix).await
    }
}

fn s3_config(endpoint: &str) -> SourceConfig {
    SourceConfig {
        s3_endpoint: Some(endpoint.to_string()),
        s3_region: Some("us-east-1".to_string()),
        ..SourceConfig::default()
    }
}

fn bucket_store(endpoint: &str, bucket: &str) -> AmazonS3 {
    AmazonS3Builder::from_env()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .build()
        .unwrap()
}

/// Uploads `objects` (name, bytes, seed) under a fresh prefix; returns `s3://bucket/prefix`.
async fn upload(store: &AmazonS3, bucket: &str, objects: &[(&str, u64, u8)]) -> String {
    let prefix = common::unique("prefetch");
    for (name, bytes, seed) in objects {
        store
            .put(
                &Path::from(format!("{prefix}/{name}")),
                PutPayload::from(common::pattern(*bytes as usize, *seed)),
            )
            .await
            .unwrap();
    }
    format!("s3://{bucket}/{prefix}")
}

fn gpu_task(id: &str, start: f64, end: f64, base: &str, inputs: &[(&str, u64)]) -> PlanTask {
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
                uri: format!("{base}/{name}"),
                bytes: Some(*bytes),
            })
            .collect(),
        outputs: Vec::new(),
    }
}

struct Servers {
    endpoint: String,
    bucket: String,
    store: AmazonS3,
}

fn servers() -> Servers {
    let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
    let bucket = common::env("KFCACHE_TEST_S3_BUCKET");
    let store = bucket_store(&endpoint, &bucket);
    Servers {
        endpoint,
        bucket,
        store,
    }
}

fn layout(stale_after: Duration) -> LayoutConfig {
    LayoutConfig {
        namespace: common::unique("prefetch"),
        chunk_size: CHUNK,
        stale_after,
        ..LayoutConfig::default()
    }
}

type Events = Arc<Mutex<Vec<Event>>>;

async fn executor<S: CacheSink + ?Sized + 'static>(
    source: Arc<dyn ArtifactSource>,
    cache: &ObjectCache<S>,
    budget: u64,
    events: &Events,
) -> Arc<Executor<S>> {
    let events = events.clone();
    Arc::new(
        Executor::new(
            source,
            cache.clone(),
            ExecuteConfig {
                budget_bytes: budget,
                concurrency: 4,
                per_source_concurrency: 4,
                stage: StageOptions::default(),
                retry: RetryPolicy {
                    attempts: 4,
                    base_delay: Duration::from_millis(10),
                    max_delay: Duration::from_millis(100),
                },
            },
            PlanClock { anchor: Utc::now() },
            Arc::new(move |e| events.lock().unwrap().push(e)),
        )
        .await
        .unwrap(),
    )
}

fn staged(events: &Events) -> Vec<String> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Staged { uri, .. } => Some(uri.clone()),
            _ => None,
        })
        .collect()
}

fn config(budget: u64) -> PlanConfig {
    PlanConfig {
        budget_bytes: budget,
        margin_s: 5.0,
        ..PlanConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_holds_at_every_moment_and_a_shared_input_is_staged_once() {
    let s = servers();
    let base = upload(
        &s.store,
        &s.bucket,
        &[
            ("a", 256 * KB, 1),
            ("b", 256 * KB, 2),
            ("c", 256 * KB, 3),
            ("d", 256 * KB, 4),
        ],
    )
    .await;
    let sink = Arc::new(Metered {
        inner: common::ignite_sink("KFCACHE_TEST_IGNITE_1", 0).await,
        held: Mutex::default(),
        peak: AtomicU64::new(0),
    });
    let cache = ObjectCache::new(sink.clone(), layout(Duration::from_secs(3600))).unwrap();
    // `a` is read by t1 and t3; `d` only much later. Room for three objects.
    let tasks = [
        gpu_task("t1", 600.0, 700.0, &base, &[("a", 256 * KB)]),
        gpu_task("t2", 610.0, 700.0, &base, &[("b", 256 * KB)]),
        gpu_task(
            "t3",
            620.0,
            700.0,
            &base,
            &[("a", 256 * KB), ("c", 256 * KB)],
        ),
        gpu_task("t4", 9000.0, 9100.0, &base, &[("d", 256 * KB)]),
    ];
    let budget = 3 * 256 * KB + 100 * KB;
    let plan = Arc::new(plan(&tasks, &[], &config(budget)));
    let events = Events::default();
    let source = Arc::new(ObjectStoreSource::new(s3_config(&s.endpoint)));
    let exec = executor(source, &cache, budget, &events).await;
    let summary = exec.execute(&plan).await.unwrap();

    let peak = sink.peak.load(Ordering::SeqCst);
    assert!(
        peak <= budget,
        "the cache held {peak} bytes; budget {budget}"
    );
    assert!(summary.peak_bytes <= budget);
    // `a` was copied once for both readers; `d` (needed last) does not fit beside them now.
    let staged = staged(&events);
    assert_eq!(
        staged.iter().filter(|u| u.ends_with("/a")).count(),
        1,
        "{:?}",
        events.lock().unwrap()
    );
    assert_eq!(
        staged.iter().cloned().collect::<BTreeSet<_>>(),
        ["a", "b", "c"].map(|n| format!("{base}/{n}")).into()
    );
    assert_eq!(summary.deferred, [format!("{base}/d")]);
    for name in ["a", "b", "c"] {
        let (_, data) = cache.read(&format!("{base}/{name}")).await.unwrap();
        assert_eq!(data.len() as u64, 256 * KB);
    }
    sink.inner.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_prefetch_resumes_without_copying_again() {
    let s = servers();
    let names = ["o1", "o2", "o3", "o4", "o5", "o6"];
    let objects: Vec<(&str, u64, u8)> = names
        .iter()
        .enumerate()
        .map(|(n, name)| (*name, 4 * CHUNK, n as u8))
        .collect();
    let base = upload(&s.store, &s.bucket, &objects).await;
    let sink = Arc::new(common::ignite_sink("KFCACHE_TEST_IGNITE_1", 0).await);
    let cache = ObjectCache::new(sink.clone(), layout(Duration::from_millis(500))).unwrap();
    // Readers one after the other, so that the objects are staged in this order.
    let tasks: Vec<PlanTask> = names
        .iter()
        .enumerate()
        .map(|(n, name)| {
            let start = 600.0 + 60.0 * n as f64;
            gpu_task(name, start, start + 30.0, &base, &[(name, 4 * CHUNK)])
        })
        .collect();
    let plan = Arc::new(plan(&tasks, &[], &config(1 << 30)));

    // First run: slow reads, killed once two objects are complete.
    let slow = Arc::new(Counting {
        inner: ObjectStoreSource::new(s3_config(&s.endpoint)),
        reads: Mutex::default(),
        delay: Duration::from_millis(150),
    });
    let events = Events::default();
    let exec = executor(slow.clone(), &cache, 1 << 30, &events).await;
    let run = tokio::spawn({
        let plan = plan.clone();
        async move { exec.execute(&plan).await }
    });
    while staged(&events).len() < 2 {
        assert!(
            !run.is_finished(),
            "the first run ended before it was interrupted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.abort();
    let _ = run.await;
    // Copies in flight stop at their next await; what is complete is what has a manifest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let complete: BTreeSet<String> = cache
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.uri)
        .collect();
    assert!(complete.len() >= 2 && complete.len() < names.len());

    // Second run: what was complete is a hit and is not read again; the rest is staged.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let counting = Arc::new(Counting {
        inner: ObjectStoreSource::new(s3_config(&s.endpoint)),
        reads: Mutex::default(),
        delay: Duration::ZERO,
    });
    let events = Events::default();
    let cached: Vec<CachedEntry> = cache
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|m| CachedEntry {
            uri: m.uri,
            bytes: m.size,
            leased: false,
        })
        .collect();
    let plan = Arc::new(kfcache_prefetcher::plan::plan(
        &tasks,
        &cached,
        &config(1 << 30),
    ));
    let exec = executor(counting.clone(), &cache, 1 << 30, &events).await;
    let summary = exec.execute(&plan).await.unwrap();
    assert_eq!(summary.hits as usize, complete.len());
    assert_eq!(
        summary.objects_staged as usize,
        names.len() - complete.len()
    );
    let reads = counting.reads.lock().unwrap().clone();
    for uri in &complete {
        assert!(!reads.contains_key(uri), "{uri} was read again");
    }
    // Every object is readable, and no chunk of the interrupted writes is left.
    let mut expected = BTreeSet::new();
    for name in names {
        let (manifest, data) = cache.read(&format!("{base}/{name}")).await.unwrap();
        assert_eq!(data.len() as u64, 4 * CHUNK);
        expected.extend((0..manifest.chunk_count).map(|i| cache.chunk_key(&manifest, i)));
    }
    let prefix = format!("{}/", cache.config().namespace);
    let chunks: BTreeSet<String> = sink
        .keys_with_prefix(Space::Chunks, &prefix)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        chunks, expected,
        "chunks of interrupted writes are left behind"
    );
    sink.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_changed_at_the_source_is_staged_again() {
    let s = servers();
    let base = upload(&s.store, &s.bucket, &[("model.pt", 3 * CHUNK, 1)]).await;
    let sink = Arc::new(common::ignite_sink("KFCACHE_TEST_IGNITE_1", 0).await);
    let cache = ObjectCache::new(sink.clone(), layout(Duration::from_secs(3600))).unwrap();
    let tasks = [gpu_task(
        "train",
        600.0,
        900.0,
        &base,
        &[("model.pt", 3 * CHUNK)],
    )];
    let source: Arc<dyn ArtifactSource> = Arc::new(ObjectStoreSource::new(s3_config(&s.endpoint)));
    let uri = format!("{base}/model.pt");

    let events = Events::default();
    let exec = executor(source.clone(), &cache, 1 << 30, &events).await;
    let p = Arc::new(plan(&tasks, &[], &config(1 << 30)));
    assert_eq!(exec.execute(&p).await.unwrap().objects_staged, 1);
    let before = cache.stat(&uri).await.unwrap().unwrap();
    assert_eq!(exec.execute(&p).await.unwrap().hits, 1);

    // New content under the same key: another ETag.
    let key = uri.trim_start_matches(&format!("s3://{}/", s.bucket));
    let changed = common::pattern(3 * CHUNK as usize + 5, 77);
    s.store
        .put(&Path::from(key), PutPayload::from(changed.clone()))
        .await
        .unwrap();
    let summary = exec.execute(&p).await.unwrap();
    assert_eq!((summary.hits, summary.objects_staged), (0, 1));
    let (after, data) = cache.read(&uri).await.unwrap();
    assert_ne!(after.version, before.version);
    assert_eq!(data, Bytes::from(changed));
    sink.destroy().await.unwrap();
}

/// A TCP proxy to `upstream` that answers the first `failures` GET requests with
/// `503 Service Unavailable` and forwards everything else.
async fn failing_proxy(upstream: String, failures: usize) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                // Read the request head.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                if head.starts_with(b"GET ") && counter.load(Ordering::SeqCst) < failures {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = client
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                if server.write_all(&head).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (format!("http://{address}"), served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_from_s3_is_retried() {
    let s = servers();
    let base = upload(&s.store, &s.bucket, &[("shard.tar", 2 * CHUNK, 9)]).await;
    let upstream = s
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (proxy, served) = failing_proxy(upstream, 2).await;
    let sink = Arc::new(common::ignite_sink("KFCACHE_TEST_IGNITE_1", 0).await);
    let cache = ObjectCache::new(sink.clone(), layout(Duration::from_secs(3600))).unwrap();
    let tasks = [gpu_task(
        "train",
        600.0,
        900.0,
        &base,
        &[("shard.tar", 2 * CHUNK)],
    )];
    let events = Events::default();
    let source = Arc::new(ObjectStoreSource::new(s3_config(&proxy)));
    let exec = executor(source, &cache, 1 << 30, &events).await;
    let summary = exec
        .execute(&Arc::new(plan(&tasks, &[], &config(1 << 30))))
        .await
        .unwrap();
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "the proxy did not answer 503"
    );
    assert_eq!(summary.objects_staged, 1, "{:?}", events.lock().unwrap());
    let (_, data) = cache.read(&format!("{base}/shard.tar")).await.unwrap();
    assert_eq!(data, Bytes::from(common::pattern(2 * CHUNK as usize, 9)));
    sink.destroy().await.unwrap();
}
