//! Copies into the cache against the real servers (moto behind a counting proxy, Apache
//! Ignite): objects uploaded through the gateway (`PutObject`, multipart uploads as Argo's
//! `wait` container sends them for files over 16 MiB) are read back from the cache with no
//! GET at the origin; aborted uploads and `write_through = false` write nothing; and the
//! on-demand fill (`fill_budget`) turns a second read into a hit and evicts the least recently
//! used object when the budget is full.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::{pattern, Setup, CHUNK};
use hyper::Method;
use kfcache_gateway::{MissReason, WriteKind, WriteOutcome};
use object_store::path::Path;
use object_store::ObjectStore;

const GET: &str = "GetObject";
const PART: usize = 5 << 20;

/// Waits until `done` holds (the cache writes run in spawned tasks, after the response).
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn read(setup: &Setup, key: &str) -> Vec<u8> {
    setup
        .client()
        .get(&Path::from(key))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

/// Uploads `data` in parts of 5 MiB (the last shorter) with aws-sdk-s3 through the gateway.
async fn upload_in_parts(setup: &Setup, key: &str, data: &[u8]) {
    let aws = setup.aws_client();
    let created = aws
        .create_multipart_upload()
        .bucket(&setup.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let upload_id = created.upload_id().unwrap();
    let mut parts = Vec::new();
    for (index, part) in data.chunks(PART).enumerate() {
        let number = i32::try_from(index + 1).unwrap();
        let uploaded = aws
            .upload_part()
            .bucket(&setup.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(part.to_vec()))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(uploaded.e_tag().unwrap())
                .build(),
        );
    }
    aws.complete_multipart_upload()
        .bucket(&setup.bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// What write-through is for: the next task's download of an output the previous task just
/// uploaded is a hit, byte for byte, with no GET at the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploaded_objects_are_read_from_the_cache() {
    let setup = Setup::start("write-through").await;
    let metrics = setup.gateway.metrics();
    let small_key = setup.key("metrics.json");
    let small = pattern(2 * CHUNK as usize + 321, 3);
    setup
        .aws_client()
        .put_object()
        .bucket(&setup.bucket)
        .key(&small_key)
        .body(ByteStream::from(small.clone()))
        .send()
        .await
        .unwrap();
    let large_key = setup.key("model.tar.gz");
    let large = pattern(3 * PART + 1234, 9);
    upload_in_parts(&setup, &large_key, &large).await;
    eventually("both uploads written into the cache", || {
        metrics.writes(WriteKind::WriteThrough, WriteOutcome::Written) == 2
    })
    .await;
    assert_eq!(metrics.buffered_bytes(), 0, "the copies are released");

    // The version recorded is the one the origin's HEAD gives (what the freshness check
    // compares).
    for key in [&small_key, &large_key] {
        let manifest = setup.cache.stat(&setup.uri(key)).await.unwrap().unwrap();
        let head = setup.moto.head(&Path::from(key.as_str())).await.unwrap();
        assert_eq!(manifest.version.etag, head.e_tag, "{key}");
        assert_eq!(manifest.size, head.size, "{key}");
    }

    setup.origin.clear();
    assert_eq!(read(&setup, &small_key).await, small);
    assert_eq!(read(&setup, &large_key).await, large);
    assert_eq!(metrics.hits(GET), 2);
    assert_eq!(metrics.misses(GET, MissReason::NotCached), 0);
    assert_eq!(metrics.misses(GET, MissReason::Stale), 0);
    for key in [&small_key, &large_key] {
        assert_eq!(
            setup.origin.count(&Method::GET, &setup.bucket, key),
            0,
            "{key}"
        );
    }
    setup.stop().await;
}

/// An upload that never completes must not leave an object (or its memory) behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aborted_upload_writes_nothing() {
    let setup = Setup::start("write-through-abort").await;
    let metrics = setup.gateway.metrics();
    let key = setup.key("partial.bin");
    let aws = setup.aws_client();
    let created = aws
        .create_multipart_upload()
        .bucket(&setup.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let upload_id = created.upload_id().unwrap();
    for number in 1..=2 {
        aws.upload_part()
            .bucket(&setup.bucket)
            .key(&key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(pattern(PART, 1)))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        metrics.buffered_bytes(),
        2 * PART as u64,
        "the parts are kept"
    );
    aws.abort_multipart_upload()
        .bucket(&setup.bucket)
        .key(&key)
        .upload_id(upload_id)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.buffered_bytes(), 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(setup.cache.stat(&setup.uri(&key)).await.unwrap(), None);
    for outcome in [
        WriteOutcome::Written,
        WriteOutcome::Skipped,
        WriteOutcome::Failed,
    ] {
        assert_eq!(metrics.writes(WriteKind::WriteThrough, outcome), 0);
    }
    setup.stop().await;
}

/// `--no-write-through` turns the copies off: uploads go to the origin only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_write_through_uploads_are_not_cached() {
    let setup = Setup::start_with("no-write-through", |config| config.write_through = false).await;
    let metrics = setup.gateway.metrics();
    let small_key = setup.key("small.bin");
    let small = pattern(300_000, 5);
    setup
        .client()
        .put(&Path::from(small_key.as_str()), small.clone().into())
        .await
        .unwrap();
    let large_key = setup.key("large.bin");
    upload_in_parts(&setup, &large_key, &pattern(PART + 10, 6)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for key in [&small_key, &large_key] {
        assert_eq!(
            setup.cache.stat(&setup.uri(key)).await.unwrap(),
            None,
            "{key}"
        );
    }
    assert_eq!(read(&setup, &small_key).await, small);
    assert_eq!(metrics.misses(GET, MissReason::NotCached), 1);
    assert_eq!(
        metrics.writes(WriteKind::WriteThrough, WriteOutcome::Written),
        0
    );
    setup.stop().await;
}

/// Objects above `write_through_max_object` are uploaded but not copied (nor held in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_above_the_object_bound_are_not_cached() {
    let setup = Setup::start_with("write-through-bound", |config| {
        config.write_through_max_object = (PART + PART / 2) as u64;
    })
    .await;
    let metrics = setup.gateway.metrics();
    let put_key = setup.key("put.bin");
    setup
        .client()
        .put(&Path::from(put_key.as_str()), pattern(2 * PART, 1).into())
        .await
        .unwrap();
    let parts_key = setup.key("parts.bin");
    upload_in_parts(&setup, &parts_key, &pattern(2 * PART, 2)).await;
    eventually("both uploads skipped", || {
        metrics.writes(WriteKind::WriteThrough, WriteOutcome::Skipped) == 2
    })
    .await;
    assert_eq!(metrics.buffered_bytes(), 0);
    for key in [&put_key, &parts_key] {
        assert_eq!(
            setup.cache.stat(&setup.uri(key)).await.unwrap(),
            None,
            "{key}"
        );
        assert_eq!(setup.at_origin(key).await.len(), 2 * PART, "{key}");
    }
    setup.stop().await;
}

/// The on-demand LRU baseline: the first read goes to the origin and fills the cache, the
/// second is a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fill_turns_the_second_read_into_a_hit() {
    let setup = Setup::start_with("fill", |config| config.fill_budget = Some(1 << 30)).await;
    let metrics = setup.gateway.metrics();
    let key = setup.key("dataset.bin");
    let data = pattern(3 * CHUNK as usize + 77, 4);
    setup.put_origin(&key, data.clone()).await;
    setup.origin.clear();

    assert_eq!(read(&setup, &key).await, data);
    assert_eq!(metrics.misses(GET, MissReason::NotCached), 1);
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &key), 1);
    eventually("the miss filled", || {
        metrics.writes(WriteKind::Fill, WriteOutcome::Written) == 1
    })
    .await;
    let manifest = setup.cache.stat(&setup.uri(&key)).await.unwrap().unwrap();
    let head = setup.moto.head(&Path::from(key.as_str())).await.unwrap();
    assert_eq!(manifest.version.etag, head.e_tag);
    assert_eq!(manifest.version.last_modified, Some(head.last_modified));

    assert_eq!(read(&setup, &key).await, data);
    assert_eq!(metrics.hits(GET), 1);
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &key), 1);

    // A ranged read of a miss is not a fill (the cache keeps whole objects).
    let other = setup.key("other.bin");
    setup.put_origin(&other, data.clone()).await;
    let part = setup
        .client()
        .get_range(&Path::from(other.as_str()), 10..20)
        .await
        .unwrap();
    assert_eq!(part.as_ref(), &data[10..20]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(setup.cache.stat(&setup.uri(&other)).await.unwrap(), None);
    setup.stop().await;
}

/// With a budget for two and a half objects, filling a third evicts the one used least
/// recently: a hit counts as a use, so the first object, read again, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fill_evicts_the_least_recently_used_object() {
    let size = 2 * CHUNK as usize;
    let setup = Setup::start_with("fill-evict", |config| {
        config.fill_budget = Some((2 * size + size / 2) as u64);
    })
    .await;
    let metrics = setup.gateway.metrics();
    let keys = [
        setup.key("first.bin"),
        setup.key("second.bin"),
        setup.key("third.bin"),
    ];
    for (seed, key) in keys.iter().enumerate() {
        setup.put_origin(key, pattern(size, seed as u8)).await;
    }
    for (filled, key) in keys[..2].iter().enumerate() {
        read(&setup, key).await;
        eventually("a fill", || {
            metrics.writes(WriteKind::Fill, WriteOutcome::Written) == filled as u64 + 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read(&setup, &keys[0]).await, pattern(size, 0));
    assert_eq!(metrics.hits(GET), 1);
    // The use is recorded in a spawned task; give it time before the next fill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    read(&setup, &keys[2]).await;
    eventually("the third fill", || {
        metrics.writes(WriteKind::Fill, WriteOutcome::Written) == 3
    })
    .await;
    assert_eq!(metrics.fill_evictions(), 1);
    assert!(setup
        .cache
        .stat(&setup.uri(&keys[0]))
        .await
        .unwrap()
        .is_some());
    assert_eq!(setup.cache.stat(&setup.uri(&keys[1])).await.unwrap(), None);
    assert!(setup
        .cache
        .stat(&setup.uri(&keys[2]))
        .await
        .unwrap()
        .is_some());

    setup.origin.clear();
    assert_eq!(read(&setup, &keys[2]).await, pattern(size, 2));
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &keys[2]), 0);
    setup.stop().await;
}
