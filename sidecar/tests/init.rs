//! `sidecar init` and the write-through against the real servers: Ignite (1 node) and the moto
//! S3 server started by scripts/services.sh.
//!
//! - a full hit, a partial hit and a miss, with the bytes at the task's paths identical to the
//!   origin's;
//! - a corrupted chunk and a changed origin are misses read from the origin;
//! - a name or path that escapes the target directory is refused before anything is written;
//! - outputs written through by one task are read from the cache by the next task's init.

#![allow(clippy::unwrap_used)]

#[path = "../../prefetcher/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kfcache_prefetcher::{
    stage_object, CacheSink, IgniteSink, LayoutConfig, ObjectCache, ObjectStoreSource,
    SourceConfig, Space, StageOptions,
};
use kfcache_sidecar::init::{materialise, Outcome};
use kfcache_sidecar::outputs::write_through;
use kfcache_sidecar::{Error, Identity, SpecInput, SpecOutput, TaskSpec};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, PutPayload};

const CHUNK: u64 = 64 * 1024;

struct World {
    store: AmazonS3,
    base: String,
    source: ObjectStoreSource,
    sink: Arc<IgniteSink>,
    cache: ObjectCache<IgniteSink>,
}

async fn world() -> World {
    let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
    let bucket = common::env("KFCACHE_TEST_S3_BUCKET");
    let store = AmazonS3Builder::from_env()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(&bucket)
        .build()
        .unwrap();
    let prefix = common::unique("sidecar");
    let source = ObjectStoreSource::new(SourceConfig {
        s3_endpoint: Some(endpoint),
        s3_region: Some("us-east-1".to_string()),
        ..SourceConfig::default()
    });
    let sink = Arc::new(common::ignite_sink("KFCACHE_TEST_IGNITE_1", 0).await);
    let cache = ObjectCache::new(
        sink.clone(),
        LayoutConfig {
            namespace: common::unique("sidecar"),
            chunk_size: CHUNK,
            ..LayoutConfig::default()
        },
    )
    .unwrap();
    World {
        store,
        base: format!("s3://{bucket}/{prefix}"),
        source,
        sink,
        cache,
    }
}

impl World {
    async fn upload(&self, name: &str, data: &[u8]) -> String {
        let key = self
            .base
            .split_once("://")
            .unwrap()
            .1
            .split_once('/')
            .unwrap()
            .1;
        self.store
            .put(
                &object_store::path::Path::from(format!("{key}/{name}")),
                PutPayload::from(data.to_vec()),
            )
            .await
            .unwrap();
        format!("{}/{name}", self.base)
    }

    async fn stage(&self, uri: &str) {
        stage_object(&self.source, &self.cache, uri, StageOptions::default())
            .await
            .unwrap();
    }
}

fn spec(inputs: &[(&str, &str, &str)]) -> TaskSpec {
    TaskSpec {
        pipeline: "train".to_string(),
        task: Some("fit".to_string()),
        template: "fit".to_string(),
        gpus: 1,
        inputs: inputs
            .iter()
            .map(|(name, source, path)| SpecInput {
                name: name.to_string(),
                source: Some(source.to_string()),
                path: Some(path.to_string()),
            })
            .collect(),
        outputs: Vec::new(),
    }
}

fn identity(task: &str) -> Identity {
    Identity::resolve(&common::unique("run"), "train", Some(task), None).unwrap()
}

fn outcomes(report: &kfcache_sidecar::init::InitReport) -> Vec<&'static str> {
    report
        .files
        .iter()
        .map(|f| match f.outcome {
            Outcome::Hit { .. } => "hit",
            Outcome::Miss { .. } => "miss",
            Outcome::Present { .. } => "present",
            Outcome::Skipped { .. } => "skipped",
        })
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn full_hit_partial_hit_and_miss() {
    let w = world().await;
    let train = common::pattern(5 * CHUNK as usize + 123, 1);
    let labels = common::pattern(1000, 2);
    let train_uri = w.upload("train.bin", &train).await;
    let labels_uri = w.upload("labels.csv", &labels).await;
    let spec = spec(&[
        ("train", &train_uri, "/data/train.bin"),
        ("labels", &labels_uri, "/tmp/inputs/labels/data"),
    ]);

    // Nothing cached: two misses, read from S3.
    let target = tempfile::tempdir().unwrap();
    let report = materialise(&w.cache, &w.source, &spec, &identity("fit"), target.path())
        .await
        .unwrap();
    assert_eq!(outcomes(&report), ["miss", "miss"]);
    assert_eq!(
        report.bytes_from_origin,
        (train.len() + labels.len()) as u64
    );
    assert_eq!(read(&target.path().join("data/train.bin")), train);
    assert_eq!(read(&target.path().join("tmp/inputs/labels/data")), labels);

    // One staged: a partial hit.
    w.stage(&train_uri).await;
    let target = tempfile::tempdir().unwrap();
    let report = materialise(&w.cache, &w.source, &spec, &identity("fit"), target.path())
        .await
        .unwrap();
    assert_eq!(outcomes(&report), ["hit", "miss"]);
    assert_eq!((report.hits, report.misses), (1, 1));
    assert_eq!(report.bytes_from_cache, train.len() as u64);
    assert_eq!(read(&target.path().join("data/train.bin")), train);

    // Both staged: a full hit, nothing read from the origin.
    w.stage(&labels_uri).await;
    let target = tempfile::tempdir().unwrap();
    let report = materialise(&w.cache, &w.source, &spec, &identity("fit"), target.path())
        .await
        .unwrap();
    assert_eq!(outcomes(&report), ["hit", "hit"]);
    assert_eq!(report.bytes_from_origin, 0);
    assert_eq!(read(&target.path().join("data/train.bin")), train);
    assert_eq!(read(&target.path().join("tmp/inputs/labels/data")), labels);
    // No temporary files are left next to the inputs.
    let leftovers: Vec<_> = std::fs::read_dir(target.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["train.bin"]);
    w.sink.destroy().await.unwrap();
}

#[tokio::test]
async fn a_corrupted_chunk_or_a_changed_origin_is_a_miss() {
    let w = world().await;
    let data = common::pattern(3 * CHUNK as usize, 3);
    let uri = w.upload("weights.bin", &data).await;
    w.stage(&uri).await;
    let manifest = w.cache.stat(&uri).await.unwrap().unwrap();
    let key = w.cache.chunk_key(&manifest, 1);
    let mut bad = data[CHUNK as usize..2 * CHUNK as usize].to_vec();
    bad[100] ^= 0xff;
    w.sink
        .put(Space::Chunks, &key, Bytes::from(bad))
        .await
        .unwrap();

    let spec = spec(&[("weights", &uri, "/models/weights.bin")]);
    let target = tempfile::tempdir().unwrap();
    let report = materialise(&w.cache, &w.source, &spec, &identity("fit"), target.path())
        .await
        .unwrap();
    assert_eq!(outcomes(&report), ["miss"]);
    let Outcome::Miss { reason, .. } = &report.files[0].outcome else {
        unreachable!()
    };
    assert!(reason.contains("chunk 1"), "{reason}");
    assert_eq!(read(&target.path().join("models/weights.bin")), data);

    // The origin changes after staging: the stale copy is not used.
    w.stage(&uri).await;
    let newer = common::pattern(3 * CHUNK as usize, 9);
    w.upload("weights.bin", &newer).await;
    let target = tempfile::tempdir().unwrap();
    let report = materialise(&w.cache, &w.source, &spec, &identity("fit"), target.path())
        .await
        .unwrap();
    assert_eq!(outcomes(&report), ["miss"]);
    assert_eq!(read(&target.path().join("models/weights.bin")), newer);
    w.sink.destroy().await.unwrap();
}

#[tokio::test]
async fn escaping_paths_are_refused_before_anything_is_written() {
    let w = world().await;
    let uri = w.upload("ok.bin", b"fine").await;
    let target = tempfile::tempdir().unwrap();
    for (name, path) in [
        ("ok", "/etc/../../escape"),
        ("../escape", "/data/x"),
        ("fine", "../../../tmp/escape"),
    ] {
        let spec = spec(&[("first", &uri, "/data/first"), (name, &uri, path)]);
        let error = materialise(&w.cache, &w.source, &spec, &identity("fit"), target.path())
            .await
            .expect_err(path);
        assert!(matches!(error, Error::PathEscape { .. }), "{error}");
        assert!(error.to_string().contains(name), "{error}");
        assert_eq!(
            std::fs::read_dir(target.path()).unwrap().count(),
            0,
            "nothing written for {name} {path}"
        );
    }
    w.sink.destroy().await.unwrap();
}

#[tokio::test]
async fn outputs_written_through_are_read_by_the_next_init() {
    let w = world().await;
    let run = common::unique("run");
    let producer = Identity::resolve(&run, "train", Some("prep"), None).unwrap();
    let consumer = Identity::resolve(&run, "train", Some("fit"), None).unwrap();
    let out = tempfile::tempdir().unwrap();
    let features = common::pattern(2 * CHUNK as usize + 5, 4);
    std::fs::create_dir_all(out.path().join("tmp/outputs/features")).unwrap();
    std::fs::write(out.path().join("tmp/outputs/features/data"), &features).unwrap();
    std::fs::create_dir_all(out.path().join("shards/a")).unwrap();
    std::fs::write(out.path().join("shards/a/0.bin"), b"zero").unwrap();
    std::fs::write(out.path().join("shards/1.bin"), b"one").unwrap();
    let prep = TaskSpec {
        pipeline: "train".to_string(),
        task: Some("prep".to_string()),
        template: "prep".to_string(),
        gpus: 0,
        inputs: Vec::new(),
        outputs: vec![
            SpecOutput {
                name: "features".to_string(),
                location: None,
                path: Some("/tmp/outputs/features/data".to_string()),
            },
            SpecOutput {
                name: "shards".to_string(),
                location: None,
                path: Some("/shards".to_string()),
            },
            SpecOutput {
                name: "never-written".to_string(),
                location: None,
                path: Some("/nowhere".to_string()),
            },
        ],
    };
    let written = write_through(&w.cache, &prep, &producer, out.path())
        .await
        .unwrap();
    assert_eq!(written.files.len(), 3);
    assert_eq!(written.bytes, features.len() as u64 + 7);
    assert_eq!(written.skipped.len(), 1);

    let fit = spec(&[
        ("features", "task://prep/features", "/in/features"),
        ("shards", "task://prep/shards", "/in/shards"),
    ]);
    let target = tempfile::tempdir().unwrap();
    let report = materialise(&w.cache, &w.source, &fit, &consumer, target.path())
        .await
        .unwrap();
    assert_eq!(outcomes(&report), ["hit", "hit", "hit"]);
    assert_eq!(read(&target.path().join("in/features")), features);
    assert_eq!(read(&target.path().join("in/shards/a/0.bin")), b"zero");
    assert_eq!(read(&target.path().join("in/shards/1.bin")), b"one");

    // Another run's consumer does not see this run's outputs.
    let other = identity("fit");
    let target = tempfile::tempdir().unwrap();
    let report = materialise(&w.cache, &w.source, &fit, &other, target.path())
        .await
        .unwrap();
    assert_eq!(outcomes(&report), ["skipped", "skipped"]);
    w.sink.destroy().await.unwrap();
}
