//! Interrupted and racing writes of the batched path, against the in-memory sink and real
//! Ignite clusters: a batch that dies before or while its manifests land shows no
//! half-written object, and what it leaves is removed by the explicit sweep (never by the
//! sweep of writes still in flight); batch and single-object writers racing on the same URIs
//! leave, after the sweep, exactly the chunks of the current manifests.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kfcache_prefetcher::{
    stage_object, stage_prefix, BatchObject, BatchRecord, CacheSink, Error, LayoutConfig,
    MemorySink, ObjectCache, ObjectStoreSource, PrefixOptions, Result, SourceVersion, Space,
    StageOptions, WriteState,
};

const CHUNK: u64 = 4096;

fn layout(namespace: &str) -> LayoutConfig {
    LayoutConfig {
        namespace: namespace.to_string(),
        chunk_size: CHUNK,
        ..LayoutConfig::default()
    }
}

fn version(tag: &str, size: usize) -> SourceVersion {
    SourceVersion {
        etag: Some(tag.to_string()),
        size: size as u64,
        last_modified: None,
    }
}

/// A sink that "crashes" at the `crash_at`-th write (`put` or `putAll`) into `space`
/// (counting from 0): from then on every call fails, as if the process had died there, so
/// that nothing can clean up. With `land_half`, a crashing `putAll` stores the first half of
/// its entries first (a process dying while its request is being applied).
#[derive(Debug)]
struct CrashingSink<S: CacheSink + ?Sized> {
    inner: Arc<S>,
    space: Space,
    crash_at: usize,
    land_half: bool,
    writes: AtomicUsize,
    crashed: AtomicBool,
}

impl<S: CacheSink + ?Sized> CrashingSink<S> {
    fn new(inner: Arc<S>, space: Space, crash_at: usize, land_half: bool) -> Self {
        CrashingSink {
            inner,
            space,
            crash_at,
            land_half,
            writes: AtomicUsize::new(0),
            crashed: AtomicBool::new(false),
        }
    }

    /// Counts a write into `space`; true when it is the one that crashes.
    fn crashes(&self, space: Space) -> bool {
        let crash =
            space == self.space && self.writes.fetch_add(1, Ordering::SeqCst) == self.crash_at;
        if crash {
            self.crashed.store(true, Ordering::SeqCst);
        }
        crash
    }

    fn alive(&self) -> Result<()> {
        if self.crashed.load(Ordering::SeqCst) {
            Err(Error::Config("simulated crash".to_string()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl<S: CacheSink + ?Sized> CacheSink for CrashingSink<S> {
    fn describe(&self) -> String {
        format!("crashing {}", self.inner.describe())
    }
    async fn get(&self, space: Space, key: &str) -> Result<Option<Bytes>> {
        self.alive()?;
        self.inner.get(space, key).await
    }
    async fn get_all(&self, space: Space, keys: &[String]) -> Result<HashMap<String, Bytes>> {
        self.alive()?;
        self.inner.get_all(space, keys).await
    }
    async fn put(&self, space: Space, key: &str, value: Bytes) -> Result<()> {
        self.alive()?;
        if self.crashes(space) {
            return Err(Error::Config("simulated crash".to_string()));
        }
        self.inner.put(space, key, value).await
    }
    async fn put_all(&self, space: Space, mut entries: Vec<(String, Bytes)>) -> Result<()> {
        self.alive()?;
        if self.crashes(space) {
            if self.land_half {
                entries.truncate(entries.len() / 2);
                self.inner.put_all(space, entries).await?;
            }
            return Err(Error::Config("simulated crash".to_string()));
        }
        self.inner.put_all(space, entries).await
    }
    async fn remove_all(&self, space: Space, keys: &[String]) -> Result<()> {
        self.alive()?;
        self.inner.remove_all(space, keys).await
    }
    async fn keys_with_prefix(&self, space: Space, prefix: &str) -> Result<Vec<String>> {
        self.alive()?;
        self.inner.keys_with_prefix(space, prefix).await
    }
}

/// Only small objects, all in one batch.
fn one_batch() -> PrefixOptions {
    PrefixOptions {
        small_object_max: 64 * 1024,
        batch_objects: 1000,
        batch_bytes: 64 << 20,
        batch_concurrency: 1,
        ..PrefixOptions::default()
    }
}

/// A directory of `count` small objects (some of several chunks); returns the directory, its
/// URI and the objects by URI.
fn small_directory(count: usize) -> (tempfile::TempDir, String, BTreeMap<String, Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let base = format!("file://{}", dir.path().display());
    let mut objects = BTreeMap::new();
    for i in 0..count {
        let data = common::pattern([10usize, 4096, 10 * 1024, 0][i % 4], i as u8);
        let path = dir.path().join(format!("f-{i:03}.bin"));
        std::fs::write(&path, &data).unwrap();
        objects.insert(format!("{base}/f-{i:03}.bin"), data);
    }
    (dir, base, objects)
}

/// The batch records of a namespace.
async fn batch_records<S: CacheSink + ?Sized>(sink: &S, namespace: &str) -> Vec<BatchRecord> {
    let keys = sink
        .keys_with_prefix(Space::Meta, &format!("{namespace}/b/"))
        .await
        .unwrap();
    let values = sink.get_all(Space::Meta, &keys).await.unwrap();
    values
        .values()
        .map(|bytes| serde_json::from_slice(bytes).unwrap())
        .collect()
}

/// Chunk keys of the objects of a batch record, with whether each is there.
async fn chunks_present<S: CacheSink + ?Sized>(
    cache: &ObjectCache<S>,
    record: &BatchRecord,
    uris: impl Fn(&str) -> bool,
) -> (usize, usize) {
    let namespace = &cache.config().namespace;
    let mut keys = Vec::new();
    for entry in &record.objects {
        if !uris(&entry.uri) {
            continue;
        }
        let id = kfcache_prefetcher::checksum(entry.uri.as_bytes());
        for index in 0..entry.chunk_count {
            keys.push(format!("{namespace}/c/{id}/{}/{index}", record.generation));
        }
    }
    let found = cache.sink().get_all(Space::Chunks, &keys).await.unwrap();
    (found.len(), keys.len())
}

/// A batch dies at its chunk `putAll` (`crash_at_meta = false`) or at its manifest `putAll`:
/// no object is visible, the batch record and chunks it wrote stay until the explicit sweep,
/// which leaves them while they may still be in flight and removes them as interrupted, and
/// staging again works.
async fn batch_dies_before_its_manifests<S: CacheSink + ?Sized + 'static>(
    sink: Arc<S>,
    crash_at_meta: bool,
) {
    let namespace = common::unique("crash");
    let (_dir, base, objects) = small_directory(30);
    let space = if crash_at_meta {
        Space::Meta
    } else {
        Space::Chunks
    };
    // Meta writes of a batch: its record (0), its manifests (1).
    let crash_at = usize::from(crash_at_meta);
    let crashing = Arc::new(CrashingSink::new(sink.clone(), space, crash_at, false));
    let dying = ObjectCache::new(crashing, layout(&namespace)).unwrap();
    let source = ObjectStoreSource::default();
    let error = stage_prefix(&source, &dying, &base, one_batch(), &())
        .await
        .expect_err("the batch crashes");
    assert!(error.to_string().contains("simulated crash"), "{error}");

    let cache = ObjectCache::new(sink.clone(), layout(&namespace)).unwrap();
    let uris: Vec<String> = objects.keys().cloned().collect();
    assert!(
        cache.stat_many(&uris).await.unwrap().is_empty(),
        "an object of the interrupted batch is visible"
    );
    let records = batch_records(&*sink, &namespace).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].state, WriteState::Writing);
    assert_eq!(records[0].objects.len(), objects.len());
    let (present, total) = chunks_present(&cache, &records[0], |_| true).await;
    assert!(total > 0);
    if crash_at_meta {
        assert_eq!(present, total, "the chunks landed before the crash");
    } else {
        assert_eq!(present, 0);
    }

    // Within `stale_after` the batch may still be running: the sweep leaves it.
    let report = cache.sweep_stale().await.unwrap();
    assert_eq!(report.batches_removed, 0);
    assert_eq!(batch_records(&*sink, &namespace).await.len(), 1);

    // Taken as interrupted: everything it wrote goes.
    let report = cache.sweep_older_than(Duration::ZERO).await.unwrap();
    assert_eq!(report.batches_removed, 1);
    assert_eq!(chunks_present(&cache, &records[0], |_| true).await.0, 0);
    assert!(sink
        .keys_with_prefix(Space::Meta, &format!("{namespace}/"))
        .await
        .unwrap()
        .is_empty());

    // Staging again stages everything.
    let summary = stage_prefix(&source, &cache, &base, one_batch(), &())
        .await
        .unwrap();
    assert_eq!(summary.objects_staged, objects.len() as u64);
    for (uri, data) in &objects {
        assert!(cache.read(uri).await.unwrap().1[..] == data[..], "{uri}");
    }
    cache.clear().await.unwrap();
}

/// A batch dies while its manifest `putAll` is applied (half of the manifests land): the
/// objects that are visible are complete and verified, the others are not visible; the sweep
/// removes the chunks of the others only and keeps a record of the visible ones, and staging
/// again skips the visible ones and stages the rest.
async fn batch_dies_while_its_manifests_land<S: CacheSink + ?Sized + 'static>(sink: Arc<S>) {
    let namespace = common::unique("half");
    let (_dir, base, objects) = small_directory(24);
    let crashing = Arc::new(CrashingSink::new(sink.clone(), Space::Meta, 1, true));
    let dying = ObjectCache::new(crashing, layout(&namespace)).unwrap();
    let source = ObjectStoreSource::default();
    stage_prefix(&source, &dying, &base, one_batch(), &())
        .await
        .expect_err("the batch crashes");

    let cache = ObjectCache::new(sink.clone(), layout(&namespace)).unwrap();
    let uris: Vec<String> = objects.keys().cloned().collect();
    let visible = cache.stat_many(&uris).await.unwrap();
    assert_eq!(visible.len(), objects.len() / 2);
    for uri in visible.keys() {
        assert!(
            cache.read(uri).await.unwrap().1[..] == objects[uri][..],
            "{uri}"
        );
    }

    let records = batch_records(&*sink, &namespace).await;
    assert_eq!(records.len(), 1);
    let report = cache.sweep_older_than(Duration::ZERO).await.unwrap();
    assert_eq!(
        report.batches_removed, 0,
        "the visible objects need their record"
    );
    let is_visible = |uri: &str| visible.contains_key(uri);
    let (present, total) = chunks_present(&cache, &records[0], |u| !is_visible(u)).await;
    assert!(total > 0);
    assert_eq!(present, 0, "chunks of invisible objects left behind");
    let (present, total) = chunks_present(&cache, &records[0], is_visible).await;
    assert_eq!(present, total, "chunks of visible objects removed");
    let kept = batch_records(&*sink, &namespace).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].state, WriteState::Committed);
    let kept_uris: BTreeSet<&str> = kept[0].objects.iter().map(|e| e.uri.as_str()).collect();
    let visible_uris: BTreeSet<&str> = visible.keys().map(String::as_str).collect();
    assert_eq!(kept_uris, visible_uris);

    let summary = stage_prefix(&source, &cache, &base, one_batch(), &())
        .await
        .unwrap();
    assert_eq!(summary.objects_skipped, visible.len() as u64);
    assert_eq!(
        summary.objects_staged,
        (objects.len() - visible.len()) as u64
    );
    for (uri, data) in &objects {
        assert!(cache.read(uri).await.unwrap().1[..] == data[..], "{uri}");
    }
    // Once none of its objects is current, the explicit sweep removes the old record.
    for uri in visible.keys() {
        cache.evict(uri).await.unwrap();
    }
    cache.sweep_stale().await.unwrap();
    let generations: Vec<String> = batch_records(&*sink, &namespace)
        .await
        .into_iter()
        .map(|r| r.generation)
        .collect();
    assert!(!generations.contains(&records[0].generation));
    cache.clear().await.unwrap();
    assert!(sink
        .keys_with_prefix(Space::Meta, &format!("{namespace}/"))
        .await
        .unwrap()
        .is_empty());
}

/// A single large object dies at its second chunk `putAll`: invisible, and the explicit sweep
/// removes its chunks, its record and its pending-writes entry.
async fn large_object_dies<S: CacheSink + ?Sized + 'static>(sink: Arc<S>) {
    let namespace = common::unique("large-crash");
    let dir = tempfile::tempdir().unwrap();
    let data = common::pattern(20 * CHUNK as usize + 3, 9);
    std::fs::write(dir.path().join("weights.bin"), &data).unwrap();
    let uri = format!("file://{}/weights.bin", dir.path().display());
    let crashing = Arc::new(CrashingSink::new(sink.clone(), Space::Chunks, 1, false));
    let dying = ObjectCache::new(crashing, layout(&namespace)).unwrap();
    let source = ObjectStoreSource::default();
    let options = StageOptions {
        read_concurrency: 2,
        write_concurrency: 1,
        write_batch: 2,
    };
    stage_object(&source, &dying, &uri, options)
        .await
        .expect_err("crashes");
    let cache = ObjectCache::new(sink.clone(), layout(&namespace)).unwrap();
    assert!(cache.stat(&uri).await.unwrap().is_none());
    let left = sink
        .keys_with_prefix(Space::Meta, &format!("{namespace}/"))
        .await
        .unwrap();
    assert_eq!(
        left.len(),
        2,
        "a write record and a pending entry: {left:?}"
    );
    let report = cache.sweep_older_than(Duration::ZERO).await.unwrap();
    assert_eq!(report.writes_removed, 1);
    assert!(sink
        .keys_with_prefix(Space::Meta, &format!("{namespace}/"))
        .await
        .unwrap()
        .is_empty());
    assert!(sink
        .keys_with_prefix(Space::Chunks, &format!("{namespace}/"))
        .await
        .unwrap()
        .is_empty());
}

/// Batch writers and single-object writers race on the same URIs: every object reads back as
/// one writer's complete data, and after the explicit sweep the chunk space holds exactly the
/// chunks of the current manifests, with no pending entry left.
async fn batch_and_single_writers_race<S: CacheSink + ?Sized + 'static>(sink: Arc<S>) {
    let namespace = common::unique("race");
    let cache = ObjectCache::new(sink.clone(), layout(&namespace)).unwrap();
    let uris: Vec<String> = (0..12).map(|i| format!("s3://bucket/race/{i}")).collect();
    let content = |writer: usize, uri: usize| -> Bytes {
        Bytes::from(common::pattern(
            [100usize, 5000, 9000][(writer + uri) % 3],
            (writer * 16 + uri) as u8,
        ))
    };
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..6usize {
        let cache = cache.clone();
        let uris = uris.clone();
        tasks.spawn(async move {
            if writer % 2 == 0 {
                let objects = uris
                    .iter()
                    .enumerate()
                    .map(|(i, uri)| {
                        let data = content(writer, i);
                        BatchObject {
                            uri: uri.clone(),
                            version: version(&format!("w{writer}"), data.len()),
                            data,
                        }
                    })
                    .collect();
                cache.put_many(objects).await.unwrap();
            } else {
                for (i, uri) in uris.iter().enumerate() {
                    let data = content(writer, i);
                    cache
                        .put_bytes(uri, version(&format!("w{writer}"), data.len()), data)
                        .await
                        .unwrap();
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    for (i, uri) in uris.iter().enumerate() {
        let (manifest, bytes) = cache.read(uri).await.unwrap();
        let writer: usize = manifest.version.etag.as_deref().unwrap()[1..]
            .parse()
            .unwrap();
        assert!(
            bytes == content(writer, i),
            "{uri}: not writer {writer}'s data"
        );
    }
    cache.sweep_stale().await.unwrap();
    let mut expected = BTreeSet::new();
    for manifest in cache.list().await.unwrap() {
        for index in 0..manifest.chunk_count {
            expected.insert(cache.chunk_key(&manifest, index));
        }
    }
    let present: BTreeSet<String> = sink
        .keys_with_prefix(Space::Chunks, &format!("{namespace}/"))
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(present, expected);
    assert!(sink
        .keys_with_prefix(Space::Meta, &format!("{namespace}/p/"))
        .await
        .unwrap()
        .is_empty());
    for uri in &uris {
        assert!(
            cache.read(uri).await.is_ok(),
            "{uri} unreadable after the sweep"
        );
    }
    cache.clear().await.unwrap();
}

async fn suite<S: CacheSink + ?Sized + 'static>(sink: Arc<S>) {
    batch_dies_before_its_manifests(sink.clone(), false).await;
    batch_dies_before_its_manifests(sink.clone(), true).await;
    batch_dies_while_its_manifests_land(sink.clone()).await;
    large_object_dies(sink.clone()).await;
    for _ in 0..3 {
        batch_and_single_writers_race(sink.clone()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sink() {
    let sink = Arc::new(MemorySink::new());
    suite(sink.clone()).await;
    assert!(sink.is_empty(), "leftovers: {:?}", sink.len(Space::Meta));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignite_one_node() {
    let sink = Arc::new(common::ignite_sink("KFCACHE_TEST_IGNITE_1", 1).await);
    suite(sink.clone()).await;
    sink.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignite_three_nodes_with_backups() {
    let sink = Arc::new(common::ignite_sink("KFCACHE_TEST_IGNITE_3", 1).await);
    suite(sink.clone()).await;
    sink.destroy().await.unwrap();
}
