//! Staging directories and prefixes of many small objects through the batched path
//! (`stage_prefix`), against the in-memory sink and real Ignite clusters (1 node, 3 nodes with
//! a backup), from a local directory (as `file://` and as a `pvc://` claim) and from the real
//! S3 server (moto): objects read back byte-identical with valid manifests, an unchanged
//! prefix is skipped without reading it, a changed object is found and staged again, progress
//! adds up, and staging never lists the metadata space (which reads all of it on Ignite).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use kfcache_prefetcher::{
    checksum, stage_object_observed, stage_prefix, ArtifactSource, CacheSink, LayoutConfig,
    ObjectCache, ObjectOutcome, ObjectStatus, ObjectStoreSource, PrefixOptions, Result,
    SourceConfig, SourceObject, SourceVersion, Space, StageObserver, StageOptions,
};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};

/// Small chunks, so that some small objects span several chunks inside a batch.
const CHUNK: u64 = 4096;
/// Objects above this go through the large-object path.
const SMALL_MAX: u64 = 16 * 1024;

fn layout(namespace: &str) -> LayoutConfig {
    LayoutConfig {
        namespace: namespace.to_string(),
        chunk_size: CHUNK,
        ..LayoutConfig::default()
    }
}

/// Small batches, so that a fixture of a few hundred objects makes several of them.
fn options() -> PrefixOptions {
    PrefixOptions {
        large: StageOptions {
            read_concurrency: 3,
            write_concurrency: 2,
            write_batch: 2,
        },
        large_object_concurrency: 2,
        small_object_max: SMALL_MAX,
        batch_objects: 40,
        batch_bytes: 96 * 1024,
        small_read_concurrency: 8,
        batch_concurrency: 2,
    }
}

/// The objects of a fixture, by path under the base: sizes from empty to several chunks, in
/// nested directories, plus two large objects.
fn fixture(small: usize) -> BTreeMap<String, Vec<u8>> {
    let sizes = [0usize, 1, 100, 4095, 4096, 4097, 10 * 1024, 3 * 4096 + 7];
    let mut objects = BTreeMap::new();
    for i in 0..small {
        let dir = if i % 3 == 0 { "sub/" } else { "" };
        let size = sizes[i % sizes.len()];
        objects.insert(
            format!("data/{dir}small-{i:04}.bin"),
            common::pattern(size, i as u8),
        );
    }
    for i in 0..2u8 {
        objects.insert(
            format!("data/large-{i}.bin"),
            common::pattern(10 * CHUNK as usize + 5 + i as usize, 100 + i),
        );
    }
    objects
}

/// Where the fixture lives.
enum Place {
    Local {
        dir: tempfile::TempDir,
    },
    S3 {
        store: Arc<dyn ObjectStore>,
        prefix: String,
    },
}

impl Place {
    async fn write(&self, path: &str, data: &[u8]) {
        match self {
            Place::Local { dir } => {
                let target = dir.path().join(path);
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                // A new file renamed into place: a new inode, so a new version even within
                // the timestamp resolution.
                let temp = target.with_extension("tmp-write");
                std::fs::write(&temp, data).unwrap();
                std::fs::rename(&temp, &target).unwrap();
            }
            Place::S3 { store, prefix } => {
                store
                    .put(
                        &StorePath::from(format!("{prefix}/{path}")),
                        PutPayload::from(data.to_vec()),
                    )
                    .await
                    .unwrap();
            }
        }
    }

    async fn remove_all(&self, paths: impl Iterator<Item = &String>) {
        if let Place::S3 { store, prefix } = self {
            for path in paths {
                store
                    .delete(&StorePath::from(format!("{prefix}/{path}")))
                    .await
                    .unwrap();
            }
        }
    }
}

/// Counts source reads, so that a test can tell skipped objects were not read.
#[derive(Debug)]
struct CountingSource {
    inner: ObjectStoreSource,
    reads: AtomicU64,
}

#[async_trait]
impl ArtifactSource for CountingSource {
    async fn head(&self, uri: &str) -> Result<SourceObject> {
        self.inner.head(uri).await
    }

    async fn read_range(
        &self,
        uri: &str,
        range: Range<u64>,
        version: Option<&SourceVersion>,
    ) -> Result<Bytes> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_range(uri, range, version).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<SourceObject>> {
        self.inner.list(prefix).await
    }
}

/// Counts listings of the sink: the staging hot path must not list (on Ignite a listing reads
/// the whole metadata space, which made staging N objects cost O(N²)).
#[derive(Debug)]
struct ListingCounter<S: CacheSink> {
    inner: S,
    listings: AtomicU64,
}

#[async_trait]
impl<S: CacheSink> CacheSink for ListingCounter<S> {
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
        self.inner.put(space, key, value).await
    }
    async fn put_all(&self, space: Space, entries: Vec<(String, Bytes)>) -> Result<()> {
        self.inner.put_all(space, entries).await
    }
    async fn remove_all(&self, space: Space, keys: &[String]) -> Result<()> {
        self.inner.remove_all(space, keys).await
    }
    async fn keys_with_prefix(&self, space: Space, prefix: &str) -> Result<Vec<String>> {
        self.listings.fetch_add(1, Ordering::Relaxed);
        self.inner.keys_with_prefix(space, prefix).await
    }
}

/// Records what a staging reports.
#[derive(Default)]
struct Recorder {
    bytes: AtomicU64,
    outcomes: Mutex<Vec<ObjectOutcome>>,
}

impl StageObserver for Recorder {
    fn on_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn on_object(&self, outcome: &ObjectOutcome) {
        self.outcomes.lock().unwrap().push(outcome.clone());
    }
}

impl Recorder {
    fn statuses(&self) -> BTreeMap<String, ObjectStatus> {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .map(|o| (o.uri.clone(), o.status))
            .collect()
    }
}

/// Every object of `expected` (URI → bytes) reads back identical, with a manifest that
/// describes it and the source version it was listed with.
async fn assert_cached<S: CacheSink + ?Sized>(
    cache: &ObjectCache<S>,
    source: &dyn ArtifactSource,
    expected: &BTreeMap<String, Vec<u8>>,
) {
    let listed: HashMap<String, SourceObject> = {
        let mut all = HashMap::new();
        for uri in expected.keys() {
            all.insert(uri.clone(), source.head(uri).await.unwrap());
        }
        all
    };
    for (uri, data) in expected {
        let (manifest, bytes) = cache.read(uri).await.unwrap();
        assert!(bytes[..] == data[..], "{uri}: bytes differ");
        assert_eq!(manifest.uri, *uri);
        assert_eq!(manifest.size, data.len() as u64);
        assert_eq!(manifest.chunk_size, CHUNK);
        assert_eq!(manifest.chunk_count, (data.len() as u64).div_ceil(CHUNK));
        assert_eq!(manifest.checksum, checksum(data), "{uri}");
        for (index, chunk) in data.chunks(CHUNK as usize).enumerate() {
            assert_eq!(manifest.chunk_checksums[index], checksum(chunk), "{uri}");
        }
        assert!(
            manifest.matches(&listed[uri]),
            "{uri}: manifest not current"
        );
        assert!(cache.is_current(&listed[uri]).await.unwrap());
    }
}

/// The whole story on one sink and one source: stage, read back, stage again (all skipped,
/// nothing read), change two objects (one small, one large) and add one, stage again (those
/// three staged, the rest skipped, old chunks gone), evict, and never list the sink.
async fn prefix_suite<S: CacheSink + 'static>(
    sink: S,
    source: ObjectStoreSource,
    place: Place,
    base: &str,
    small: usize,
) -> S {
    let sink = Arc::new(ListingCounter {
        inner: sink,
        listings: AtomicU64::new(0),
    });
    let source = CountingSource {
        inner: source,
        reads: AtomicU64::new(0),
    };
    let cache = ObjectCache::new(sink.clone(), layout(&common::unique("small"))).unwrap();
    let mut objects = fixture(small);
    for (path, data) in &objects {
        place.write(path, data).await;
    }
    let uri_of = |path: &str| format!("{base}/{path}");
    let mut expected: BTreeMap<String, Vec<u8>> = objects
        .iter()
        .map(|(path, data)| (uri_of(path), data.clone()))
        .collect();
    let total: u64 = expected.values().map(|d| d.len() as u64).sum();

    // First staging: everything is staged, the large objects on their own path.
    let first = Recorder::default();
    let summary = stage_prefix(&source, &cache, &format!("{base}/data/"), options(), &first)
        .await
        .unwrap();
    assert_eq!(summary.objects_staged, expected.len() as u64);
    assert_eq!(summary.objects_skipped, 0);
    assert_eq!(summary.bytes_staged, total);
    assert!(summary.seconds > 0.0);
    assert_eq!(first.bytes.load(Ordering::Relaxed), total);
    let statuses = first.statuses();
    assert_eq!(statuses.len(), expected.len());
    assert!(statuses.values().all(|s| *s == ObjectStatus::Staged));
    assert_eq!(
        sink.listings.load(Ordering::Relaxed),
        0,
        "staging listed the cache"
    );
    assert_cached(&cache, &source, &expected).await;

    // Unchanged: every object is skipped and none is read.
    let reads_before = source.reads.load(Ordering::Relaxed);
    let again = Recorder::default();
    let summary = stage_prefix(&source, &cache, &format!("{base}/data"), options(), &again)
        .await
        .unwrap();
    assert_eq!(summary.objects_staged, 0);
    assert_eq!(summary.objects_skipped, expected.len() as u64);
    assert_eq!(summary.bytes_skipped, total);
    assert_eq!(again.bytes.load(Ordering::Relaxed), 0);
    assert!(again
        .statuses()
        .values()
        .all(|s| *s == ObjectStatus::Skipped));
    assert_eq!(source.reads.load(Ordering::Relaxed), reads_before);

    // New content under the same keys (same sizes), and a new object.
    let small_path = objects
        .keys()
        .find(|p| p.contains("small-") && objects[*p].len() == 10 * 1024)
        .unwrap()
        .clone();
    let large_path = "data/large-1.bin".to_string();
    let new_path = "data/sub/new.bin".to_string();
    let old_small = cache.stat(&uri_of(&small_path)).await.unwrap().unwrap();
    let old_large = cache.stat(&uri_of(&large_path)).await.unwrap().unwrap();
    for (path, seed) in [(&small_path, 201u8), (&large_path, 202), (&new_path, 203)] {
        let size = objects.get(path).map_or(777, Vec::len);
        let data: Vec<u8> = common::pattern(size, seed).iter().map(|b| !b).collect();
        place.write(path, &data).await;
        objects.insert(path.clone(), data.clone());
        expected.insert(uri_of(path), data);
    }
    let changed = Recorder::default();
    let summary = stage_prefix(
        &source,
        &cache,
        &format!("{base}/data/"),
        options(),
        &changed,
    )
    .await
    .unwrap();
    let staged: Vec<String> = changed
        .statuses()
        .into_iter()
        .filter(|(_, s)| *s == ObjectStatus::Staged)
        .map(|(uri, _)| uri)
        .collect();
    let mut want = vec![uri_of(&small_path), uri_of(&large_path), uri_of(&new_path)];
    want.sort();
    assert_eq!(staged, want);
    assert_eq!(summary.objects_staged, 3);
    assert_eq!(summary.objects_skipped, expected.len() as u64 - 3);
    assert_cached(&cache, &source, &expected).await;
    // The replaced writes left no chunks behind.
    for old in [&old_small, &old_large] {
        for index in 0..old.chunk_count {
            let key = cache.chunk_key(old, index);
            assert!(
                sink.get(Space::Chunks, &key).await.unwrap().is_none(),
                "chunk {key} of a replaced write is still there"
            );
        }
    }

    // One object through the observed single-object path: the bytes add up.
    let observed = AtomicU64::new(0);
    let manifest = stage_object_observed(
        &source,
        &cache,
        &uri_of(&large_path),
        StageOptions::default(),
        &|bytes| {
            observed.fetch_add(bytes, Ordering::Relaxed);
        },
    )
    .await
    .unwrap();
    assert_eq!(observed.load(Ordering::Relaxed), manifest.size);
    assert_eq!(
        sink.listings.load(Ordering::Relaxed),
        0,
        "staging listed the cache"
    );

    // Evicting objects of both paths removes them.
    for path in [&small_path, &large_path] {
        assert!(cache.evict(&uri_of(path)).await.unwrap());
        assert!(cache.stat(&uri_of(path)).await.unwrap().is_none());
    }
    assert_eq!(
        sink.listings.load(Ordering::Relaxed),
        0,
        "eviction listed the cache"
    );
    assert_eq!(cache.clear().await.unwrap(), expected.len() - 2);
    assert!(cache.list().await.unwrap().is_empty());
    place.remove_all(objects.keys()).await;
    drop(cache);
    Arc::try_unwrap(sink)
        .map(|counter| counter.inner)
        .unwrap_or_else(|_| panic!("sink still shared"))
}

fn local() -> (Place, String) {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("file://{}", dir.path().display());
    (Place::Local { dir }, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sink_from_a_local_directory() {
    let (place, base) = local();
    let sink = kfcache_prefetcher::MemorySink::new();
    let sink = prefix_suite(sink, ObjectStoreSource::default(), place, &base, 200).await;
    assert!(sink.is_empty(), "leftovers after clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignite_one_node_from_a_local_directory() {
    let (place, base) = local();
    let sink = common::ignite_sink("KFCACHE_TEST_IGNITE_1", 1).await;
    let sink = prefix_suite(sink, ObjectStoreSource::default(), place, &base, 200).await;
    sink.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignite_three_nodes_from_a_pvc_claim() {
    let dir = tempfile::tempdir().unwrap();
    let source = ObjectStoreSource::new(SourceConfig {
        pvc_roots: BTreeMap::from([("training-data".to_string(), dir.path().to_path_buf())]),
        ..SourceConfig::default()
    });
    let sink = common::ignite_sink("KFCACHE_TEST_IGNITE_3", 1).await;
    let sink = prefix_suite(
        sink,
        source,
        Place::Local { dir },
        "pvc://training-data",
        120,
    )
    .await;
    sink.destroy().await.unwrap();
}

fn moto() -> (Place, ObjectStoreSource, String) {
    let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
    let bucket = common::env("KFCACHE_TEST_S3_BUCKET");
    let prefix = common::unique("small-objects");
    let store = AmazonS3Builder::from_env()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(&bucket)
        .build()
        .unwrap();
    let source = ObjectStoreSource::new(SourceConfig {
        s3_endpoint: Some(endpoint),
        s3_region: Some("us-east-1".to_string()),
        ..SourceConfig::default()
    });
    let base = format!("s3://{bucket}/{prefix}");
    (
        Place::S3 {
            store: Arc::new(store),
            prefix,
        },
        source,
        base,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignite_one_node_from_moto_s3() {
    let (place, source, base) = moto();
    let sink = common::ignite_sink("KFCACHE_TEST_IGNITE_1", 1).await;
    let sink = prefix_suite(sink, source, place, &base, 60).await;
    sink.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sink_from_moto_s3() {
    let (place, source, base) = moto();
    let sink = kfcache_prefetcher::MemorySink::new();
    let sink = prefix_suite(sink, source, place, &base, 60).await;
    assert!(sink.is_empty(), "leftovers after clear");
}

/// A URI that names one object (not a directory) stages that object; one that names nothing
/// is an error naming it.
#[tokio::test]
async fn prefix_naming_one_object_or_nothing() {
    let (place, base) = local();
    place.write("one.bin", &common::pattern(5000, 1)).await;
    let cache = ObjectCache::new(
        Arc::new(kfcache_prefetcher::MemorySink::new()),
        layout("single"),
    )
    .unwrap();
    let source = ObjectStoreSource::default();
    let uri = format!("{base}/one.bin");
    let summary = stage_prefix(&source, &cache, &uri, options(), &())
        .await
        .unwrap();
    assert_eq!((summary.objects_staged, summary.bytes_staged), (1, 5000));
    assert!(cache.read(&uri).await.unwrap().1[..] == common::pattern(5000, 1)[..]);
    let missing = format!("{base}/nothing-here/");
    let error = stage_prefix(&source, &cache, &missing, options(), &())
        .await
        .expect_err("names nothing");
    assert!(
        matches!(error, kfcache_prefetcher::Error::SourceNotFound { .. }),
        "{error:?}"
    );
}
