//! The conformance suites of kfcache's two I/O seams, for every implementation to run (feature
//! `testing`): [`cache_sink_suite`] for a [`CacheSink`] (run through [`ObjectCache`], which is
//! how the product uses a sink), including the compare-and-set race and the cluster lock that
//! rest on it, and [`artifact_source_suite`] for an [`ArtifactSource`]. kfcache runs them
//! against the in-memory sink, Ignite with 1 and 3 nodes, [`BoundedSink`](crate::BoundedSink)
//! around the first two, moto S3 and a local directory; another sink or source passes the same
//! functions.
//!
//! Each case panics with what it found when the implementation breaks the contract.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{
    stage_object, ArtifactSource, CacheSink, Error, LayoutConfig, Manifest, MemorySink,
    ObjectCache, ObjectStoreSource, SourceVersion, Space, StageOptions,
};

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 11) as u8))
        .collect()
}

// --- CacheSink conformance --------------------------------------------------------------------

/// Small chunks so that multi-chunk objects stay small; one test uses the default 4 MiB.
pub const CHUNK: u64 = 64 * 1024;

fn layout(namespace: &str, chunk_size: u64) -> LayoutConfig {
    LayoutConfig {
        namespace: namespace.to_string(),
        chunk_size,
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

async fn absent<S: CacheSink + ?Sized>(sink: &S, keys: &[String]) -> bool {
    for key in keys {
        if sink.get(Space::Chunks, key).await.unwrap().is_some() {
            return false;
        }
    }
    true
}

fn chunk_keys<S: CacheSink + ?Sized>(cache: &ObjectCache<S>, manifest: &Manifest) -> Vec<String> {
    (0..manifest.chunk_count)
        .map(|index| cache.chunk_key(manifest, index))
        .collect()
}

/// Every conformance case, in order, each in its own namespace.
pub async fn cache_sink_suite<S: CacheSink + ?Sized + 'static>(sink: Arc<S>) {
    round_trip_of_every_size(sink.clone()).await;
    default_chunk_size_object(sink.clone()).await;
    replaced_object_leaves_no_stale_chunks(sink.clone()).await;
    // Races show up only sometimes: several rounds.
    for _ in 0..3 {
        concurrent_writers_of_one_key(sink.clone()).await;
    }
    interleaved_writers_last_manifest_wins(sink.clone()).await;
    interrupted_write_is_swept(sink.clone()).await;
    corrupted_chunk_is_detected(sink.clone()).await;
    evict_clear_and_namespaces(sink.clone()).await;
    download_is_byte_identical(sink.clone()).await;
    staging_from_a_source(sink.clone()).await;
    for _ in 0..3 {
        compare_and_set_race(sink.clone()).await;
    }
    lock_excludes_and_is_taken_over_once_expired(sink).await;
}

pub async fn round_trip_of_every_size<S: CacheSink + ?Sized>(sink: Arc<S>) {
    let cache = ObjectCache::new(sink, layout(&unique("sizes"), CHUNK)).unwrap();
    let c = CHUNK as usize;
    for (i, size) in [0, 1, c - 1, c, c + 1, 3 * c + 17].into_iter().enumerate() {
        let uri = format!("s3://bucket/sizes/object-{size}");
        let data = Bytes::from(pattern(size, i as u8));
        let manifest = cache
            .put_bytes(&uri, version("v1", size), data.clone())
            .await
            .unwrap();
        assert_eq!(manifest.size, size as u64);
        assert_eq!(manifest.chunk_count, (size as u64).div_ceil(CHUNK));
        assert_eq!(manifest.chunk_checksums.len() as u64, manifest.chunk_count);
        assert_eq!(manifest.checksum, crate::checksum(&data));
        let stat = cache.stat(&uri).await.unwrap().expect("manifest");
        assert_eq!(stat, manifest);
        let (read_manifest, bytes) = cache.read(&uri).await.unwrap();
        assert_eq!(read_manifest, manifest);
        assert!(bytes == data, "size {size}: bytes differ");
    }
    let listed = cache.list().await.unwrap();
    assert_eq!(listed.len(), 6);
    assert!(listed.windows(2).all(|w| w[0].uri < w[1].uri));
    assert!(cache
        .stat("s3://bucket/sizes/none")
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        cache.read("s3://bucket/sizes/none").await,
        Err(Error::NotCached { .. })
    ));
    cache.clear().await.unwrap();
}

pub async fn default_chunk_size_object<S: CacheSink + ?Sized>(sink: Arc<S>) {
    let cache = ObjectCache::new(sink, layout(&unique("large"), 4 << 20)).unwrap();
    let data = Bytes::from(pattern((9 << 20) + 3, 7));
    let uri = "s3://bucket/large/model.safetensors";
    let manifest = cache
        .put_bytes(uri, version("large", data.len()), data.clone())
        .await
        .unwrap();
    assert_eq!(manifest.chunk_count, 3);
    assert_eq!(manifest.chunk_size, 4 << 20);
    assert!(cache.read(uri).await.unwrap().1 == data);
    cache.clear().await.unwrap();
}

pub async fn replaced_object_leaves_no_stale_chunks<S: CacheSink + ?Sized>(sink: Arc<S>) {
    let cache = ObjectCache::new(sink.clone(), layout(&unique("replace"), CHUNK)).unwrap();
    let uri = "s3://bucket/replace/data.bin";
    let old = cache
        .put_bytes(
            uri,
            version("v1", 0),
            Bytes::from(pattern(3 * CHUNK as usize, 1)),
        )
        .await
        .unwrap();
    let new_data = Bytes::from(pattern(CHUNK as usize / 2, 2));
    let new = cache
        .put_bytes(uri, version("v2", new_data.len()), new_data.clone())
        .await
        .unwrap();
    assert_ne!(old.generation, new.generation);
    assert!(
        absent(&*sink, &chunk_keys(&cache, &old)).await,
        "old chunks left behind"
    );
    let (manifest, bytes) = cache.read(uri).await.unwrap();
    assert_eq!(manifest.version.etag.as_deref(), Some("v2"));
    assert!(bytes == new_data);
    cache.clear().await.unwrap();
}

pub async fn concurrent_writers_of_one_key<S: CacheSink + ?Sized + 'static>(sink: Arc<S>) {
    let namespace = unique("concurrent");
    let cache = ObjectCache::new(sink.clone(), layout(&namespace, CHUNK)).unwrap();
    let uri = "s3://bucket/concurrent/shard.bin";
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..4u8 {
        let cache = cache.clone();
        writers.spawn(async move {
            let data = Bytes::from(pattern((writer as usize + 2) * CHUNK as usize + 5, writer));
            let manifest = cache
                .put_bytes(
                    uri,
                    version(&format!("w{writer}"), data.len()),
                    data.clone(),
                )
                .await
                .unwrap();
            (manifest, data)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = writers.join_next().await {
        results.push(joined.unwrap());
    }
    let (current, bytes) = cache.read(uri).await.unwrap();
    let (_, expected) = results
        .iter()
        .find(|(manifest, _)| manifest.generation == current.generation)
        .expect("the current manifest is one of the writers'");
    assert!(bytes == *expected, "read data of another writer");
    for (manifest, _) in &results {
        if manifest.generation != current.generation {
            assert!(
                absent(&*sink, &chunk_keys(&cache, manifest)).await,
                "the chunks of losing write {} were left behind",
                manifest.generation
            );
        }
    }
    // Only the winner's write record remains.
    let records = sink
        .keys_with_prefix(Space::Meta, &format!("{namespace}/w/"))
        .await
        .unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    cache.clear().await.unwrap();
}

pub async fn interleaved_writers_last_manifest_wins<S: CacheSink + ?Sized>(sink: Arc<S>) {
    let namespace = unique("interleaved");
    let cache = ObjectCache::new(sink.clone(), layout(&namespace, CHUNK)).unwrap();
    let uri = "s3://bucket/interleaved/x";
    let a_data = Bytes::from(pattern(2 * CHUNK as usize, 10));
    let b_data = Bytes::from(pattern(3 * CHUNK as usize, 20));
    let mut a = cache
        .begin(uri, version("a", a_data.len()), a_data.len() as u64)
        .await
        .unwrap();
    let mut b = cache
        .begin(uri, version("b", b_data.len()), b_data.len() as u64)
        .await
        .unwrap();
    let a_entries = vec![
        a.accept(a_data.slice(..CHUNK as usize)).unwrap(),
        a.accept(a_data.slice(CHUNK as usize..)).unwrap(),
    ];
    let mut b_entries = Vec::new();
    for i in 0..3 {
        let range = i * CHUNK as usize..(i + 1) * CHUNK as usize;
        b_entries.push(b.accept(b_data.slice(range)).unwrap());
    }
    a.putter().put(a_entries).await.unwrap();
    b.putter().put(b_entries).await.unwrap();
    // B commits first, A last: A's manifest wins, and B's chunks go.
    let b_manifest = b.finish().await.unwrap();
    let a_manifest = a.finish().await.unwrap();
    let (current, bytes) = cache.read(uri).await.unwrap();
    assert_eq!(current.generation, a_manifest.generation);
    assert!(bytes == a_data);
    assert!(absent(&*sink, &chunk_keys(&cache, &b_manifest)).await);
    let records = sink
        .keys_with_prefix(Space::Meta, &format!("{namespace}/w/"))
        .await
        .unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    cache.clear().await.unwrap();
}

pub async fn interrupted_write_is_swept<S: CacheSink + ?Sized>(sink: Arc<S>) {
    let namespace = unique("interrupted");
    let cache = ObjectCache::new(sink.clone(), layout(&namespace, CHUNK)).unwrap();
    let uri = "s3://bucket/interrupted/y";
    let data = Bytes::from(pattern(3 * CHUNK as usize, 3));
    let mut writer = cache
        .begin(uri, version("i", data.len()), data.len() as u64)
        .await
        .unwrap();
    let entries = vec![
        writer.accept(data.slice(..CHUNK as usize)).unwrap(),
        writer
            .accept(data.slice(CHUNK as usize..2 * CHUNK as usize))
            .unwrap(),
    ];
    let orphan_keys: Vec<String> = entries.iter().map(|(key, _)| key.clone()).collect();
    writer.putter().put(entries).await.unwrap();
    drop(writer); // the process died here: no manifest, chunks and record left behind
    assert!(
        cache.stat(uri).await.unwrap().is_none(),
        "half-written object visible"
    );
    assert!(!absent(&*sink, &orphan_keys).await);

    // A fresh write does not touch a write still within its time...
    cache
        .put_bytes(uri, version("j", 1), Bytes::from_static(b"j"))
        .await
        .unwrap();
    assert!(
        !absent(&*sink, &orphan_keys).await,
        "a live write was swept"
    );
    // ...but a write older than `stale_after` is taken as interrupted and swept.
    let impatient = ObjectCache::new(
        sink.clone(),
        LayoutConfig {
            stale_after: Duration::ZERO,
            ..layout(&namespace, CHUNK)
        },
    )
    .unwrap();
    impatient
        .put_bytes(uri, version("k", 1), Bytes::from_static(b"k"))
        .await
        .unwrap();
    assert!(
        absent(&*sink, &orphan_keys).await,
        "interrupted chunks left behind"
    );
    let records = sink
        .keys_with_prefix(Space::Meta, &format!("{namespace}/w/"))
        .await
        .unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(cache.read(uri).await.unwrap().1 == Bytes::from_static(b"k"));
    cache.clear().await.unwrap();
}

pub async fn corrupted_chunk_is_detected<S: CacheSink + ?Sized>(sink: Arc<S>) {
    let cache = ObjectCache::new(sink.clone(), layout(&unique("corrupt"), CHUNK)).unwrap();
    let uri = "s3://bucket/corrupt/weights.bin";
    let data = pattern(3 * CHUNK as usize, 4);
    let manifest = cache
        .put_bytes(uri, version("c", data.len()), Bytes::from(data.clone()))
        .await
        .unwrap();
    // One flipped bit in chunk 1.
    let key = cache.chunk_key(&manifest, 1);
    let mut bad = data[CHUNK as usize..2 * CHUNK as usize].to_vec();
    bad[100] ^= 0x01;
    sink.put(Space::Chunks, &key, Bytes::from(bad))
        .await
        .unwrap();
    let error = cache
        .read(uri)
        .await
        .expect_err("corruption must be detected");
    assert!(
        matches!(&error, Error::ChunkCorrupted { uri: u, chunk: 1, .. } if u == uri),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(uri) && message.contains("chunk 1"),
        "{message}"
    );
    // A truncated chunk too.
    sink.put(Space::Chunks, &key, Bytes::from_static(b"short"))
        .await
        .unwrap();
    assert!(matches!(
        cache.read(uri).await,
        Err(Error::ChunkCorrupted { chunk: 1, .. })
    ));
    // A chunk that vanished is named as missing.
    sink.remove_all(Space::Chunks, &[key]).await.unwrap();
    let error = cache.read(uri).await.expect_err("missing chunk");
    assert!(
        matches!(error, Error::ChunkMissing { chunk: 1, .. }),
        "{error:?}"
    );
    // The download of a corrupted object leaves no file behind.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    assert!(cache.download(uri, &path).await.is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    cache.clear().await.unwrap();
}

pub async fn evict_clear_and_namespaces<S: CacheSink + ?Sized>(sink: Arc<S>) {
    let team_a = ObjectCache::new(sink.clone(), layout(&unique("team-a"), CHUNK)).unwrap();
    let team_b = ObjectCache::new(sink.clone(), layout(&unique("team-b"), CHUNK)).unwrap();
    let uri = "s3://bucket/shared/name.bin";
    let a = team_a
        .put_bytes(
            uri,
            version("a", 0),
            Bytes::from(pattern(2 * CHUNK as usize, 1)),
        )
        .await
        .unwrap();
    let b = team_b
        .put_bytes(uri, version("b", 0), Bytes::from(pattern(10, 2)))
        .await
        .unwrap();
    // The same URI in two namespaces are two objects.
    assert_eq!(team_a.read(uri).await.unwrap().0, a);
    assert_eq!(team_b.read(uri).await.unwrap().0, b);

    assert!(team_a.evict(uri).await.unwrap());
    assert!(!team_a.evict(uri).await.unwrap());
    assert!(team_a.stat(uri).await.unwrap().is_none());
    assert!(absent(&*sink, &chunk_keys(&team_a, &a)).await);
    assert!(
        team_b.stat(uri).await.unwrap().is_some(),
        "evict crossed namespaces"
    );

    team_a
        .put_bytes("file:///x", version("x", 1), Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(team_a.clear().await.unwrap(), 1);
    assert!(team_a.list().await.unwrap().is_empty());
    assert_eq!(
        team_b.list().await.unwrap().len(),
        1,
        "clear crossed namespaces"
    );
    assert_eq!(team_b.clear().await.unwrap(), 1);
    assert!(absent(&*sink, &chunk_keys(&team_b, &b)).await);
}

pub async fn download_is_byte_identical<S: CacheSink + ?Sized>(sink: Arc<S>) {
    let cache = ObjectCache::new(sink, layout(&unique("download"), CHUNK)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for size in [0usize, 5 * CHUNK as usize + 1] {
        let uri = format!("pvc://data/download/{size}");
        let data = pattern(size, 9);
        cache
            .put_bytes(&uri, version("d", size), Bytes::from(data.clone()))
            .await
            .unwrap();
        let path = dir.path().join(format!("out-{size}.bin"));
        std::fs::write(&path, b"old contents").unwrap();
        cache.download(&uri, &path).await.unwrap();
        assert!(std::fs::read(&path).unwrap() == data);
    }
    // Only the two files: no temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    cache.clear().await.unwrap();
}

pub async fn staging_from_a_source<S: CacheSink + ?Sized + 'static>(sink: Arc<S>) {
    use object_store::{memory::InMemory, path::Path, ObjectStore, PutPayload};
    let store = Arc::new(InMemory::new());
    let data = Bytes::from(pattern(7 * CHUNK as usize + 99, 5));
    store
        .put(&Path::from("dir/big.bin"), PutPayload::from(data.clone()))
        .await
        .unwrap();
    store
        .put(&Path::from("dir/empty.bin"), PutPayload::default())
        .await
        .unwrap();
    let source = ObjectStoreSource::default();
    source.register("mem://bucket", store);
    let cache = ObjectCache::new(sink, layout(&unique("stage"), CHUNK)).unwrap();
    let options = StageOptions {
        read_concurrency: 3,
        write_concurrency: 2,
        write_batch: 2,
    };
    let manifest = stage_object(&source, &cache, "mem://bucket/dir/big.bin", options)
        .await
        .unwrap();
    assert_eq!(manifest.chunk_count, 8);
    assert!(manifest.version.etag.is_some());
    assert!(cache.read("mem://bucket/dir/big.bin").await.unwrap().1 == data);
    let empty = stage_object(&source, &cache, "mem://bucket/dir/empty.bin", options)
        .await
        .unwrap();
    assert_eq!((empty.size, empty.chunk_count), (0, 0));
    // A missing source object stages nothing.
    let error = stage_object(&source, &cache, "mem://bucket/dir/none", options)
        .await
        .expect_err("missing");
    assert!(matches!(error, Error::SourceNotFound { .. }), "{error:?}");
    assert_eq!(cache.list().await.unwrap().len(), 2);
    cache.clear().await.unwrap();
}

/// The in-memory sink for unit-speed runs.
pub fn memory_sink() -> Arc<MemorySink> {
    Arc::new(MemorySink::new())
}

// --- ArtifactSource conformance ---------------------------------------------------------------

/// What the suite expects under `base` (written there by the caller before it runs):
/// `BASE/dir/big.bin` (3 × CHUNK + 5 bytes of `pattern(_, 1)`), `BASE/dir/empty.bin` (0 bytes),
/// `BASE/dir/sub/small.txt` (`b"hello"`), and `BASE/dir2/other.bin` (`b"x"`).
pub fn source_fixture() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("dir/big.bin", pattern(3 * CHUNK as usize + 5, 1)),
        ("dir/empty.bin", Vec::new()),
        ("dir/sub/small.txt", b"hello".to_vec()),
        ("dir2/other.bin", b"x".to_vec()),
    ]
}

pub async fn artifact_source_suite(source: &dyn ArtifactSource, base: &str) {
    let big = pattern(3 * CHUNK as usize + 5, 1);
    let big_uri = format!("{base}/dir/big.bin");

    // head: size and a version.
    let head = source.head(&big_uri).await.unwrap();
    assert_eq!(head.size, big.len() as u64);
    assert_eq!(head.version.size, big.len() as u64);
    assert!(head.version.etag.is_some() || head.version.last_modified.is_some());
    let empty = source.head(&format!("{base}/dir/empty.bin")).await.unwrap();
    assert_eq!(empty.size, 0);

    // Ranged reads: start, middle, last byte, empty range.
    let len = big.len() as u64;
    for range in [0..10, 1000..CHUNK + 77, len - 1..len, 0..len] {
        let bytes = source
            .read_range(&big_uri, range.clone(), Some(&head.version))
            .await
            .unwrap();
        assert!(
            bytes[..] == big[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    assert!(source
        .read_range(&big_uri, 5..5, None)
        .await
        .unwrap()
        .is_empty());
    // Past the end: an error, not a panic or a short buffer.
    assert!(source
        .read_range(&big_uri, len - 1..len + 10, None)
        .await
        .is_err());
    // A version that is no longer current is refused where the store has ETags.
    if head.version.etag.is_some() {
        let stale = SourceVersion {
            etag: Some("\"not-the-current-etag\"".to_string()),
            ..head.version.clone()
        };
        let error = source
            .read_range(&big_uri, 0..10, Some(&stale))
            .await
            .expect_err("stale");
        assert!(matches!(error, Error::SourceChanged { .. }), "{error:?}");
    }

    // Listing a directory is recursive, sorted, and stops at the `/` boundary.
    let listed = source.list(&format!("{base}/dir")).await.unwrap();
    let uris: Vec<&str> = listed.iter().map(|o| o.uri.as_str()).collect();
    assert_eq!(
        uris,
        [
            format!("{base}/dir/big.bin"),
            format!("{base}/dir/empty.bin"),
            format!("{base}/dir/sub/small.txt"),
        ],
        "listing of {base}/dir"
    );
    assert_eq!(listed[0].size, len);
    assert_eq!(source.list(&format!("{base}/dir/")).await.unwrap().len(), 3);
    assert!(source
        .list(&format!("{base}/nothing-here"))
        .await
        .unwrap()
        .is_empty());

    // A missing object is named.
    let missing = format!("{base}/dir/missing.bin");
    let error = source.head(&missing).await.expect_err("missing");
    assert!(matches!(error, Error::SourceNotFound { .. }), "{error:?}");
    assert!(error.to_string().contains(&missing), "{error}");

    // Staging through the source: several chunks read concurrently, and an empty object.
    let cache = ObjectCache::new(memory_sink(), layout("source-suite", CHUNK)).unwrap();
    let manifest = stage_object(source, &cache, &big_uri, StageOptions::default())
        .await
        .unwrap();
    assert_eq!(manifest.chunk_count, 4);
    assert_eq!(manifest.version, head.version);
    assert!(cache.read(&big_uri).await.unwrap().1[..] == big[..]);
    let empty_uri = format!("{base}/dir/empty.bin");
    let manifest = stage_object(source, &cache, &empty_uri, StageOptions::default())
        .await
        .unwrap();
    assert_eq!(manifest.size, 0);
    assert!(cache.read(&empty_uri).await.unwrap().1.is_empty());
}

/// Callers of [`compare_and_set_race`] at once.
const CALLERS: usize = 8;

/// Runs `attempt(i)` for every caller `i` at once and returns the one that succeeded; fails,
/// naming `sink` and `what` the callers did, unless exactly one did.
async fn only_winner<F, Fut>(what: &str, sink: &str, attempt: F) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let outcomes: Vec<bool> =
        futures::future::join_all((0..CALLERS).map(|i| tokio::spawn(attempt(i))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o).count(),
        1,
        "{sink}: {what} {outcomes:?}"
    );
    outcomes.iter().position(|o| *o).unwrap()
}

/// Compare-and-set under contention, which the cluster lock and the leases rest on: of many
/// callers at once, exactly one puts a missing key, exactly one replaces the value they all
/// read, a stale expected value replaces nothing, and a remove happens only on the value
/// expected.
pub async fn compare_and_set_race<S: CacheSink + ?Sized + 'static>(sink: Arc<S>) {
    let key = format!("{}/cas", unique("cas"));
    let describe = sink.describe();
    let winner = only_winner("put-if-absent stored", &describe, |i| {
        let (sink, key) = (sink.clone(), key.clone());
        async move {
            sink.put_if_absent(Space::Meta, &key, Bytes::from(format!("first-{i}")))
                .await
                .unwrap()
        }
    })
    .await;
    let current = sink.get(Space::Meta, &key).await.unwrap().unwrap();
    assert_eq!(current, Bytes::from(format!("first-{winner}")));

    let winner = only_winner("replace-if-equals replaced", &describe, |i| {
        let (sink, key, current) = (sink.clone(), key.clone(), current.clone());
        async move {
            sink.replace_if_equals(Space::Meta, &key, current, Bytes::from(format!("next-{i}")))
                .await
                .unwrap()
        }
    })
    .await;
    let next = Bytes::from(format!("next-{winner}"));
    assert_eq!(
        sink.get(Space::Meta, &key).await.unwrap(),
        Some(next.clone())
    );

    assert!(!sink
        .replace_if_equals(
            Space::Meta,
            &key,
            current.clone(),
            Bytes::from_static(b"stale")
        )
        .await
        .unwrap());
    assert!(!sink
        .remove_if_equals(Space::Meta, &key, current)
        .await
        .unwrap());
    assert_eq!(
        sink.get(Space::Meta, &key).await.unwrap(),
        Some(next.clone())
    );
    assert!(sink
        .remove_if_equals(Space::Meta, &key, next)
        .await
        .unwrap());
    assert_eq!(sink.get(Space::Meta, &key).await.unwrap(), None);
}

/// The cluster lock (`kfcache cron`'s) on this sink: of many takers at once exactly one holds
/// it; the others see the holder; a renewal keeps it; after the holder's record expires, one
/// taker takes it over and the old holder learns that it lost it; a release frees it.
pub async fn lock_excludes_and_is_taken_over_once_expired<S: CacheSink + ?Sized + 'static>(
    sink: Arc<S>,
) {
    use crate::lock::{self, Acquisition, Renewal};

    const TAKERS: usize = 6;
    let cache = ObjectCache::new(sink.clone(), layout(&unique("lock"), CHUNK)).unwrap();
    let ttl = Duration::from_secs(2);
    let takers = (0..TAKERS).map(|i| {
        let cache = cache.clone();
        tokio::spawn(async move {
            lock::acquire(&cache, "cron", &format!("taker-{i}"), ttl)
                .await
                .unwrap()
        })
    });
    let mut held = Vec::new();
    let mut busy = Vec::new();
    for outcome in futures::future::join_all(takers).await {
        match outcome.unwrap() {
            Acquisition::Acquired(lock) => held.push(lock),
            Acquisition::Busy(record) => busy.push(record),
        }
    }
    assert_eq!(
        held.len(),
        1,
        "{}: {} takers hold the lock at once",
        sink.describe(),
        held.len()
    );
    let mut holder = held.pop().unwrap();
    for record in &busy {
        assert_eq!(
            record.holder,
            holder.record().holder,
            "busy names the holder"
        );
    }
    assert_eq!(holder.renew().await.unwrap(), Renewal::Renewed);

    // The holder stops renewing: once its record expires, one other taker takes over.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let successor = match lock::acquire(&cache, "cron", "successor", ttl)
        .await
        .unwrap()
    {
        Acquisition::Acquired(lock) => lock,
        Acquisition::Busy(record) => panic!(
            "{}: an expired lock was not taken over (held by {record:?})",
            sink.describe()
        ),
    };
    assert_eq!(
        successor.took_over().map(|r| r.holder.clone()),
        Some(holder.record().holder.clone())
    );
    assert!(
        matches!(holder.renew().await.unwrap(), Renewal::Lost(_)),
        "the old holder learns it lost the lock"
    );
    assert!(
        !holder.release().await.unwrap(),
        "the old holder cannot release its successor's lock"
    );
    assert!(successor.release().await.unwrap());
    match lock::acquire(&cache, "cron", "after", ttl).await.unwrap() {
        Acquisition::Acquired(lock) => assert!(lock.release().await.unwrap()),
        Acquisition::Busy(record) => panic!("a released lock is still held by {record:?}"),
    }
}
