//! The `ArtifactSource` conformance suite against a local directory (as `file://` and as a
//! `pvc://` claim) and a real S3 server (moto, started by scripts/services.sh); plus an S3
//! endpoint that is not there.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kfcache_prefetcher::{ArtifactSource, ObjectStoreSource, SourceConfig};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

fn local_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, data) in common::source_fixture() {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    dir
}

#[tokio::test]
async fn local_directory_as_file_uris_conforms() {
    let dir = local_fixture();
    let source = ObjectStoreSource::new(SourceConfig::default());
    let base = format!("file://{}", dir.path().display());
    common::artifact_source_suite(&source, &base).await;
}

#[tokio::test]
async fn local_directory_as_pvc_claim_conforms() {
    let dir = local_fixture();
    let source = ObjectStoreSource::new(SourceConfig {
        pvc_roots: BTreeMap::from([("training-data".to_string(), dir.path().to_path_buf())]),
        ..SourceConfig::default()
    });
    common::artifact_source_suite(&source, "pvc://training-data").await;
}

fn s3_config(endpoint: &str) -> SourceConfig {
    SourceConfig {
        s3_endpoint: Some(endpoint.to_string()),
        s3_region: Some("us-east-1".to_string()),
        ..SourceConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_s3_conforms() {
    let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
    let bucket = common::env("KFCACHE_TEST_S3_BUCKET");
    let prefix = common::unique("source-suite");
    // Upload the fixture with object_store directly: credentials from the AWS environment.
    let store = AmazonS3Builder::from_env()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(&bucket)
        .build()
        .unwrap();
    for (path, data) in common::source_fixture() {
        store
            .put(
                &Path::from(format!("{prefix}/{path}")),
                PutPayload::from(data),
            )
            .await
            .unwrap();
    }
    let source = ObjectStoreSource::new(s3_config(&endpoint));
    common::artifact_source_suite(&source, &format!("s3://{bucket}/{prefix}")).await;
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    for (path, _) in common::source_fixture() {
        store
            .delete(&Path::from(format!("{prefix}/{path}")))
            .await
            .unwrap();
    }
}

/// No S3 server listens at the endpoint: a clear error naming the URI, within the retry
/// timeout configured.
#[tokio::test]
async fn unreachable_s3_fails_clearly_within_the_timeout() {
    let endpoint = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let source = ObjectStoreSource::new(SourceConfig {
        connect_timeout: Some(Duration::from_secs(1)),
        max_retries: Some(1),
        retry_timeout: Some(Duration::from_secs(3)),
        ..s3_config(&endpoint)
    });
    let started = Instant::now();
    let error = source
        .head("s3://bucket/key.bin")
        .await
        .expect_err("no server");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let chain = format!("{error}: {:?}", std::error::Error::source(&error));
    assert!(chain.contains("s3://bucket/key.bin"), "{chain}");
}
