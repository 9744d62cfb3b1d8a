//! Size probes against real storage: a temporary directory for `file://` and mapped PVC
//! claims, and the moto S3 server that `scripts/services.sh up` starts for `s3://` (objects,
//! prefixes and missing keys). The S3 test fails, never skips, when the server is not set up.

use std::collections::BTreeMap;

use kfcache_predictor::probe::{
    probe_size, probe_sizes, s3_store, ProbeConfig, ProbedSize, PvcRoot, S3Config,
};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the test services with `scripts/services.sh up` and `eval \"$(scripts/services.sh env)\"`")
    })
}

#[tokio::test]
async fn file_and_pvc_sizes_come_from_stat_and_walks() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("labels.csv"), vec![b'x'; 1234]).expect("write");
    std::fs::create_dir_all(dir.path().join("shards/a")).expect("mkdir");
    std::fs::write(dir.path().join("shards/one.tar"), vec![0; 100]).expect("write");
    std::fs::write(dir.path().join("shards/a/two.tar"), vec![0; 50]).expect("write");
    let root = dir.path().display().to_string();

    let config = ProbeConfig {
        pvc_roots: BTreeMap::from([(
            "data-claim".to_string(),
            PvcRoot {
                mount: Some("/mnt/data".into()),
                local: dir.path().to_path_buf(),
            },
        )]),
        ..ProbeConfig::default()
    };
    let file = probe_size(&format!("file://{root}/labels.csv"), &config)
        .await
        .expect("file");
    assert_eq!(file, ProbedSize::Object { size_bytes: 1234 });
    let shards = probe_size(&format!("file://{root}/shards/"), &config)
        .await
        .expect("dir");
    assert_eq!(
        shards,
        ProbedSize::Directory {
            size_bytes: 150,
            object_count: 2
        }
    );
    let pvc = probe_size("pvc://data-claim/mnt/data/shards", &config)
        .await
        .expect("pvc");
    assert_eq!(
        pvc,
        ProbedSize::Directory {
            size_bytes: 150,
            object_count: 2
        }
    );

    let err = probe_size("pvc://other-claim/mnt/x", &config)
        .await
        .expect_err("unmapped");
    assert!(err.to_string().contains("other-claim"), "{err}");
    let missing = probe_size(&format!("file://{root}/nope"), &config)
        .await
        .expect_err("missing");
    assert!(format!("{:?}", missing).contains("nope"), "{missing:?}");
}

#[tokio::test]
async fn s3_objects_and_prefixes_on_the_test_server() {
    let endpoint = env("KFCACHE_TEST_S3_ENDPOINT");
    let bucket = env("KFCACHE_TEST_S3_BUCKET");
    let config = ProbeConfig {
        s3: S3Config {
            endpoint: Some(endpoint),
            region: std::env::var("AWS_REGION").ok(),
            access_key_id: Some(env("AWS_ACCESS_KEY_ID")),
            secret_access_key: Some(env("AWS_SECRET_ACCESS_KEY")),
            session_token: None,
            virtual_hosted_style: false,
        },
        ..ProbeConfig::default()
    };
    let store = s3_store(&bucket, &config.s3).expect("client");
    let base = format!("probe-{}", std::process::id());
    for (key, size) in [
        ("data/labels.csv", 777usize),
        ("data/shards/0.tar", 1000),
        ("data/shards/1.tar", 24),
    ] {
        store
            .put(
                &Path::from(format!("{base}/{key}")),
                PutPayload::from(vec![7u8; size]),
            )
            .await
            .expect("put");
    }
    let uris = vec![
        format!("s3://{bucket}/{base}/data/labels.csv"),
        format!("s3://{bucket}/{base}/data/shards/"),
        format!("s3://{bucket}/{base}/data/shards"),
        format!("s3://{bucket}/{base}/missing.bin"),
    ];
    let results = probe_sizes(&uris, &config).await;
    assert_eq!(
        results[0].1.as_ref().expect("object"),
        &ProbedSize::Object { size_bytes: 777 }
    );
    let dir = ProbedSize::Directory {
        size_bytes: 1024,
        object_count: 2,
    };
    assert_eq!(results[1].1.as_ref().expect("prefix"), &dir);
    assert_eq!(results[2].1.as_ref().expect("prefix without slash"), &dir);
    let err = results[3].1.as_ref().expect_err("missing");
    assert!(err.to_string().contains("missing.bin"), "{err}");
}
