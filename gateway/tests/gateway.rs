//! The gateway against the real servers: moto as the origin (behind a counting proxy), Apache
//! Ignite as the cache (behind a fault-injecting proxy), objects staged with kfcache's own
//! staging, and real S3 clients: object_store's AWS client and aws-sdk-s3 (minio-go, Argo's
//! client, is in `minio_go.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{pattern, Setup, CHUNK};
use hyper::Method;
use kfcache_gateway::MissReason;
use kfcache_harness::proxy::Fault;
use kfcache_prefetcher::{CacheSink, Space};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};

const GET: &str = "GetObject";

/// The reason the gateway exists: a staged object is read from the cache, byte for byte, and
/// the origin sees no GET of it (only the freshness HEAD).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_object_is_served_without_a_get_at_the_origin() {
    let setup = Setup::start("hit").await;
    let key = setup.key("model.bin");
    let data = pattern(5 * CHUNK as usize + 123, 7);
    setup.put_origin(&key, data.clone()).await;
    let manifest = setup.stage(&key).await;
    assert_eq!(manifest.chunk_count, 6);
    setup.origin.clear();
    let client = setup.client();
    let path = Path::from(key.as_str());

    let full = client.get(&path).await.unwrap();
    assert_eq!(full.meta.size, data.len() as u64);
    assert_eq!(full.meta.e_tag, manifest.version.etag);
    assert_eq!(full.bytes().await.unwrap().as_ref(), data.as_slice());

    for range in [
        0..1,
        1_000_000..3_500_123,
        4_194_304..5_242_880,
        5_242_000..data.len() as u64,
    ] {
        let got = client.get_range(&path, range.clone()).await.unwrap();
        assert_eq!(
            got.as_ref(),
            &data[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    let suffix = client
        .get_opts(
            &path,
            GetOptions {
                range: Some(GetRange::Suffix(1000)),
                ..GetOptions::default()
            },
        )
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(suffix.as_ref(), &data[data.len() - 1000..]);

    // aws-sdk-s3: the headers a client compares.
    let aws = setup.aws_client();
    let ranged = aws
        .get_object()
        .bucket(&setup.bucket)
        .key(&key)
        .range("bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ranged.content_range(),
        Some(format!("bytes 10-19/{}", data.len()).as_str())
    );
    assert_eq!(ranged.content_length(), Some(10));
    assert_eq!(ranged.e_tag(), manifest.version.etag.as_deref());
    assert!(ranged.last_modified().is_some());
    assert_eq!(
        ranged.body.collect().await.unwrap().into_bytes().as_ref(),
        &data[10..20]
    );
    let etag = manifest.version.etag.clone().unwrap();
    let not_modified = aws
        .get_object()
        .bucket(&setup.bucket)
        .key(&key)
        .if_none_match(&etag)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        not_modified.raw_response().map(|r| r.status().as_u16()),
        Some(304)
    );
    let failed = aws
        .get_object()
        .bucket(&setup.bucket)
        .key(&key)
        .if_match("\"not-the-etag\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        failed.raw_response().map(|r| r.status().as_u16()),
        Some(412)
    );
    let matched = aws
        .get_object()
        .bucket(&setup.bucket)
        .key(&key)
        .if_match(&etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        matched.body.collect().await.unwrap().into_bytes().len(),
        data.len()
    );

    assert_eq!(
        setup.origin.count(&Method::GET, &setup.bucket, &key),
        0,
        "GETs reached the origin: {:?}",
        setup.origin.seen()
    );
    assert!(setup.origin.count(&Method::HEAD, &setup.bucket, &key) >= 1);
    let metrics = setup.gateway.metrics();
    assert_eq!(metrics.hits(GET), 10);
    assert!(metrics.served_bytes(true) >= 2 * data.len() as u64);
    let text = metrics.render().unwrap();
    assert!(
        text.contains("kfcache_gateway_cache_hits_total{operation=\"GetObject\"} 10"),
        "{text}"
    );

    // An object that is not staged comes from the origin.
    let other = setup.key("not-staged.bin");
    let other_data = pattern(300_000, 9);
    setup.put_origin(&other, other_data.clone()).await;
    let got = client
        .get(&Path::from(other.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), other_data.as_slice());
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &other), 1);
    assert_eq!(metrics.misses(GET, MissReason::NotCached), 1);
    assert!(metrics.served_bytes(false) >= other_data.len() as u64);
    setup.stop().await;
}

/// An object overwritten at the origin after it was staged must not be served from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_copy_is_not_served() {
    let setup = Setup::start("stale").await;
    let key = setup.key("data.csv");
    setup.put_origin(&key, pattern(2 * CHUNK as usize, 1)).await;
    setup.stage(&key).await;
    // Same size, other bytes: only the ETag tells.
    let new = pattern(2 * CHUNK as usize, 2);
    setup.put_origin(&key, new.clone()).await;
    let got = setup
        .client()
        .get(&Path::from(key.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), new.as_slice());
    assert_eq!(setup.gateway.metrics().misses(GET, MissReason::Stale), 1);
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &key), 1);
    setup.stop().await;
}

/// A hit carries the headers the origin keeps with the object (content type, encoding, cache
/// control, user metadata), taken from the freshness HEAD: a client reading through the
/// gateway sees what it would see at the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hit_carries_the_origins_content_type_and_metadata() {
    let setup = Setup::start("headers").await;
    let key = setup.key("table.json");
    let data = pattern(2 * CHUNK as usize + 17, 5);
    setup
        .aws_client()
        .put_object()
        .bucket(&setup.bucket)
        .key(&key)
        .body(data.clone().into())
        .content_type("application/json")
        .content_encoding("identity")
        .cache_control("max-age=60")
        .metadata("pipeline", "replay")
        .send()
        .await
        .unwrap();
    setup.stage(&key).await;
    setup.origin.clear();
    let got = setup
        .aws_client()
        .get_object()
        .bucket(&setup.bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("application/json"));
    assert_eq!(got.content_encoding(), Some("identity"));
    assert_eq!(got.cache_control(), Some("max-age=60"));
    assert_eq!(
        got.metadata()
            .and_then(|m| m.get("pipeline"))
            .map(String::as_str),
        Some("replay")
    );
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(body.as_ref(), data.as_slice());
    assert_eq!(setup.gateway.metrics().hits(GET), 1);
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &key), 0);
    setup.stop().await;
}

/// A GET of `key` through the gateway answers the origin's 404.
async fn assert_not_found(setup: &Setup, key: &str) {
    let error = setup.client().get(&Path::from(key)).await.unwrap_err();
    assert!(
        matches!(error, object_store::Error::NotFound { .. }),
        "{key}: expected the origin's 404, got {error}"
    );
}

/// Waits until the tenant's cache no longer has a manifest for `uri`.
async fn wait_dropped(setup: &Setup, uri: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while setup.cache.stat(uri).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the cached copy of {uri} was not dropped within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An object deleted at the origin behind the gateway's back is not served from its (intact)
/// cached copy: the client gets the origin's 404, and the copy is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_deleted_at_the_origin_is_not_served() {
    let setup = Setup::start("deleted").await;
    let key = setup.key("gone.bin");
    setup.put_origin(&key, pattern(CHUNK as usize, 3)).await;
    setup.stage(&key).await;
    setup.moto.delete(&Path::from(key.as_str())).await.unwrap();
    assert_not_found(&setup, &key).await;
    assert_eq!(setup.gateway.metrics().misses(GET, MissReason::Deleted), 1);
    assert_eq!(setup.gateway.metrics().hits(GET), 0);
    wait_dropped(&setup, &setup.uri(&key)).await;
    setup.stop().await;
}

/// Deleting through the gateway (`DeleteObject`, and `DeleteObjects` for several keys) drops
/// the cached copies of what the origin deleted; an object the request did not name stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_through_the_gateway_drop_the_cached_copies() {
    let setup = Setup::start("delete").await;
    let keys: Vec<String> = ["one.bin", "two.bin", "three.bin", "kept.bin"]
        .iter()
        .map(|name| setup.key(name))
        .collect();
    for (seed, key) in keys.iter().enumerate() {
        setup
            .put_origin(key, pattern(CHUNK as usize, seed as u8))
            .await;
        setup.stage(key).await;
    }
    setup
        .client()
        .delete(&Path::from(keys[0].as_str()))
        .await
        .unwrap();
    wait_dropped(&setup, &setup.uri(&keys[0])).await;
    let objects: Vec<_> = keys[1..3]
        .iter()
        .map(|key| {
            aws_sdk_s3::types::ObjectIdentifier::builder()
                .key(key)
                .build()
                .unwrap()
        })
        .collect();
    let deleted = setup
        .aws_client()
        .delete_objects()
        .bucket(&setup.bucket)
        .delete(
            aws_sdk_s3::types::Delete::builder()
                .set_objects(Some(objects))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.deleted().len(), 2, "{deleted:?}");
    for key in &keys[1..3] {
        wait_dropped(&setup, &setup.uri(key)).await;
    }
    assert!(
        setup
            .cache
            .stat(&setup.uri(&keys[3]))
            .await
            .unwrap()
            .is_some(),
        "an object the deletes did not name lost its cached copy"
    );
    for key in &keys[..3] {
        assert_not_found(&setup, key).await;
    }
    setup.stop().await;
}

/// A corrupted chunk is never served: found before the response starts, the whole object
/// comes from the origin; found mid-response, the rest does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupted_chunks_are_read_from_the_origin() {
    let setup = Setup::start("corrupt").await;
    let key = setup.key("weights.bin");
    let data = pattern(6 * CHUNK as usize, 3);
    setup.put_origin(&key, data.clone()).await;
    let manifest = setup.stage(&key).await;
    let client = setup.client();
    let path = Path::from(key.as_str());
    let metrics = setup.gateway.metrics();

    // Chunk 5 is in the second batch (4 chunks per batch): found mid-response.
    let garbage = bytes::Bytes::from(vec![0u8; CHUNK as usize]);
    setup
        .cache
        .sink()
        .put(
            Space::Chunks,
            &setup.cache.chunk_key(&manifest, 5),
            garbage.clone(),
        )
        .await
        .unwrap();
    let got = client.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
    assert_eq!(metrics.hits(GET), 1);
    // The failed batch (chunks 4 and 5) and everything after it come from the origin.
    assert_eq!(metrics.served_bytes(false), 2 * CHUNK);
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &key), 1);

    // Chunk 0: found before the response starts.
    setup
        .cache
        .sink()
        .put(Space::Chunks, &setup.cache.chunk_key(&manifest, 0), garbage)
        .await
        .unwrap();
    let got = client.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
    assert_eq!(metrics.misses(GET, MissReason::CheckFailed), 1);
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &key), 2);
    setup.stop().await;
}

async fn timed_get(setup: &Setup, key: &str) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let got = setup
        .client()
        .get(&Path::from(key))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    (got.to_vec(), started.elapsed())
}

/// Ignite hung, refusing, or not connected at all: requests are answered from the origin,
/// each within about the cache timeout (1 s here), and a hung cache costs one timeout, not one
/// per request. When Ignite is back, objects are served from the cache again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_cache_falls_back_to_the_origin_in_bounded_time() {
    let setup = Setup::start("down").await;
    let key = setup.key("input.parquet");
    let data = pattern(3 * CHUNK as usize, 5);
    setup.put_origin(&key, data.clone()).await;
    setup.stage(&key).await;
    let metrics = setup.gateway.metrics();
    let (got, _) = timed_get(&setup, &key).await;
    assert_eq!(got, data);
    assert_eq!(metrics.hits(GET), 1);

    setup.ignite_link.set_fault(Fault::Stall).unwrap();
    let (got, took) = timed_get(&setup, &key).await;
    assert_eq!(got, data);
    assert!(
        took < Duration::from_secs(4),
        "a hung cache held the request for {took:?}"
    );
    let (got, took) = timed_get(&setup, &key).await;
    assert_eq!(got, data);
    assert!(
        took < Duration::from_millis(900),
        "the cool-down did not skip the hung cache: {took:?}"
    );
    assert_eq!(metrics.misses(GET, MissReason::CacheError), 2);

    setup.ignite_link.set_fault(Fault::Refuse).unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await; // past the cool-down
    let (got, took) = timed_get(&setup, &key).await;
    assert_eq!(got, data);
    assert!(
        took < Duration::from_secs(4),
        "a refusing cache held the request for {took:?}"
    );

    // No cache at all.
    setup.gateway.set_cache(None);
    let (got, _) = timed_get(&setup, &key).await;
    assert_eq!(got, data);
    assert_eq!(metrics.misses(GET, MissReason::CacheError), 4);
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &key), 4);

    // Back.
    setup.ignite_link.set_fault(Fault::None).unwrap();
    setup.gateway.set_cache(Some(common::as_dyn(&setup.cache)));
    let (got, _) = timed_get(&setup, &key).await;
    assert_eq!(got, data);
    assert_eq!(metrics.hits(GET), 2);
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &key), 4);
    setup.stop().await;
}

/// Everything but reads is the origin's: uploads (single and multipart), listings, bucket
/// calls, copies and deletes go through unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_listings_and_bucket_calls_are_forwarded() {
    let setup = Setup::start("forward").await;
    let client = setup.client();
    let small = setup.key("out/small.txt");
    client
        .put(
            &Path::from(small.as_str()),
            PutPayload::from(b"hello gateway".to_vec()),
        )
        .await
        .unwrap();
    let at_origin = setup.at_origin(&small).await;
    assert_eq!(at_origin.as_ref(), b"hello gateway");

    // Multipart: 3 parts of 7 MiB.
    let big = setup.key("out/big.bin");
    let big_data = pattern(21 << 20, 11);
    let mut upload = client
        .put_multipart(&Path::from(big.as_str()))
        .await
        .unwrap();
    for part in big_data.chunks(7 << 20) {
        upload
            .put_part(PutPayload::from(part.to_vec()))
            .await
            .unwrap();
    }
    upload.complete().await.unwrap();
    let at_origin = setup.at_origin(&big).await;
    assert!(
        at_origin.as_ref() == big_data.as_slice(),
        "the multipart upload differs at the origin"
    );

    let listed: Vec<String> = {
        use futures::TryStreamExt;
        client
            .list(Some(&Path::from(format!("{}/out", setup.prefix))))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap()
    };
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.contains(&small) && listed.contains(&big),
        "{listed:?}"
    );

    let aws = setup.aws_client();
    let location = aws
        .get_bucket_location()
        .bucket(&setup.bucket)
        .send()
        .await
        .unwrap();
    let _ = location.location_constraint(); // us-east-1 answers with an empty constraint
    aws.head_bucket()
        .bucket(&setup.bucket)
        .send()
        .await
        .unwrap();
    let v2 = aws
        .list_objects_v2()
        .bucket(&setup.bucket)
        .prefix(format!("{}/out/", setup.prefix))
        .send()
        .await
        .unwrap();
    assert_eq!(v2.key_count(), Some(2));
    let copy = setup.key("out/copy.txt");
    aws.copy_object()
        .bucket(&setup.bucket)
        .key(&copy)
        .copy_source(format!("{}/{small}", setup.bucket))
        .send()
        .await
        .unwrap();
    let copied = setup
        .moto
        .get(&Path::from(copy.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(copied.as_ref(), b"hello gateway");
    let head = aws
        .head_object()
        .bucket(&setup.bucket)
        .key(&copy)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(13));
    aws.delete_object()
        .bucket(&setup.bucket)
        .key(&copy)
        .send()
        .await
        .unwrap();
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    aws.delete_objects()
        .bucket(&setup.bucket)
        .delete(
            Delete::builder()
                .objects(ObjectIdentifier::builder().key(&small).build().unwrap())
                .objects(ObjectIdentifier::builder().key(&big).build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let left = aws
        .list_objects_v2()
        .bucket(&setup.bucket)
        .prefix(format!("{}/out/", setup.prefix))
        .send()
        .await
        .unwrap();
    assert_eq!(left.key_count(), Some(0));
    let metrics = setup.gateway.metrics();
    assert_eq!(metrics.requests("PutObject"), 1);
    assert_eq!(metrics.requests("UploadPart"), 3);
    assert_eq!(metrics.requests("CompleteMultipartUpload"), 1);
    assert_eq!(metrics.requests("GetBucketLocation"), 1);
    setup.stop().await;
}

/// A client that signs with another secret is refused: the gateway checks SigV4 itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_signature_is_refused() {
    let setup = Setup::start("auth").await;
    let key = setup.key("secret.bin");
    setup.put_origin(&key, b"x".to_vec()).await;
    let impostor = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(setup.endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(&setup.bucket)
        .with_access_key_id(common::env("AWS_ACCESS_KEY_ID"))
        .with_secret_access_key("not-the-secret")
        .build()
        .unwrap();
    let error = impostor.get(&Path::from(key.as_str())).await.unwrap_err();
    assert!(
        error.to_string().contains("403") || error.to_string().contains("SignatureDoesNotMatch"),
        "{error}"
    );
    assert_eq!(setup.origin.count(&Method::GET, &setup.bucket, &key), 0);
    setup.stop().await;
}

/// A stop (SIGTERM in `kfcache gateway`) while a slow download is under way: the gateway stops
/// accepting connections, and the response in flight still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_lets_requests_in_flight_finish() {
    let setup = Setup::start("shutdown").await;
    let key = setup.key("slow.bin");
    let data = pattern(3 << 20, 8);
    setup.put_origin(&key, data.clone()).await;
    // About 2 s for the download.
    setup.origin_link.set_bandwidth(Some(1_500_000.0)).unwrap();
    let client = setup.client();
    let path = Path::from(key.as_str());
    let download =
        tokio::spawn(async move { client.get(&path).await.unwrap().bytes().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let addr = setup.gateway_addr;
    let started = Instant::now();
    setup.stop().await;
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "stopped before the response ended"
    );
    let got = download.await.unwrap();
    assert!(
        got.as_ref() == data.as_slice(),
        "the response in flight was cut"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}
