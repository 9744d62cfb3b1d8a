//! `kfcache cache` as a user runs it, against the real servers started by
//! scripts/services.sh: `put s3://…` from moto into Ignite, `get` back byte-identical,
//! `ls`/`stat` show it, `check` finds a missing and a corrupt chunk, `evict` removes it, and
//! an unreachable cluster is a clear error.

#![allow(clippy::unwrap_used)]

mod common;
use common::WithoutKfcacheEnv;

use std::path::Path;

use assert_cmd::Command;
use kfcache_ignite::{Client, ClientConfig};
use kfcache_prefetcher::{
    CacheSink, IgniteSink, IgniteSinkConfig, LayoutConfig, ObjectCache, Space,
};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use serde_json::Value;

/// `kfcache` with no config file and no inherited cache settings.
fn kfcache(config_dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("kfcache").unwrap();
    cmd.without_kfcache_env().env("XDG_CONFIG_HOME", config_dir);
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "kfcache failed ({:?}):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_s3_object_get_it_back_list_stat_and_evict() {
    let ignite = common::env("KFCACHE_TEST_IGNITE_1");
    let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
    let bucket = common::env("KFCACHE_TEST_S3_BUCKET");
    let key = format!("{}/model.bin", common::unique("cli"));
    // 9 MiB + 7 bytes: three 4 MiB chunks, the last one short.
    let data: Vec<u8> = (0..(9 << 20) + 7u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let store = common::s3_store(&endpoint, &bucket);
    store
        .put(
            &StorePath::from(key.as_str()),
            PutPayload::from(data.clone()),
        )
        .await
        .unwrap();
    let uri = format!("s3://{bucket}/{key}");
    let dir = tempfile::tempdir().unwrap();
    // Settings from a config file for the S3 endpoint and the namespace, the flag for Ignite.
    let namespace = common::unique("cli-ns");
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[cache]\nnamespace = \"{namespace}\"\nbackups = 0\n\n[s3]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n"
        ),
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    let cache = |args: &[&str]| {
        let mut cmd = kfcache(dir.path());
        cmd.env("KFCACHE_CONFIG", &config)
            .arg("cache")
            .args(args)
            .args(["--ignite", &ignite]);
        cmd
    };

    let put = run_ok(&mut cache(&["put", &uri]));
    assert!(
        put.contains("staged") && put.contains("9.0 MiB") && put.contains("3 chunks"),
        "{put}"
    );

    let out = dir.path().join("model.bin");
    run_ok(&mut cache(&["get", &uri, "-o", out.to_str().unwrap()]));
    assert!(
        std::fs::read(&out).unwrap() == data,
        "get returned other bytes"
    );

    let ls = run_ok(&mut cache(&["ls"]));
    assert!(ls.contains(&uri) && ls.contains("9.0 MiB"), "{ls}");
    let listed: Value = serde_json::from_str(&run_ok(&mut cache(&["ls", "-o", "json"]))).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["uri"], uri.as_str());
    assert_eq!(listed[0]["size"], data.len() as u64);
    assert_eq!(listed[0]["chunk_count"], 3);

    let stat = run_ok(&mut cache(&["stat", &uri]));
    assert!(
        stat.contains("3 of 4.0 MiB") && stat.contains("etag"),
        "{stat}"
    );
    let stat: Value =
        serde_json::from_str(&run_ok(&mut cache(&["stat", &uri, "-o", "json"]))).unwrap();
    assert_eq!(stat["chunk_checksums"].as_array().map(Vec::len), Some(3));

    // check: consistent, then a missing chunk and a corrupt chunk are found (exit 1).
    let check = |args: &[&str]| {
        let out = cache(&[&["check", "-o", "json"], args].concat())
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (
            out.status.code(),
            report,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, report, stderr) = check(&["--verify"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["manifests"], 1);
    assert_eq!(report["chunks"], 3);
    assert_eq!(report["verified"], 1);
    assert_eq!(report["orphan_chunks"], 0);
    let (sink, layout) = {
        let client = Client::connect(ClientConfig::from_address_list(&ignite))
            .await
            .unwrap();
        let sink = IgniteSink::open(client, &IgniteSinkConfig::default())
            .await
            .unwrap();
        let layout = ObjectCache::new(
            std::sync::Arc::new(sink.clone()),
            LayoutConfig {
                namespace: namespace.clone(),
                ..LayoutConfig::default()
            },
        )
        .unwrap();
        (sink, layout)
    };
    let manifest = layout.stat(&uri).await.unwrap().unwrap();
    let chunk = layout.chunk_key(&manifest, 1);
    let saved = sink.get(Space::Chunks, &chunk).await.unwrap().unwrap();
    sink.remove_all(Space::Chunks, std::slice::from_ref(&chunk))
        .await
        .unwrap();
    let (code, report, stderr) = check(&[]);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        stderr.contains("1 missing chunk") && stderr.contains(&namespace),
        "{stderr}"
    );
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["missing_chunks"],
        serde_json::json!([{"uri": uri, "index": 1}])
    );
    let mut damaged = saved.to_vec();
    damaged[100] ^= 0xff;
    sink.put(Space::Chunks, &chunk, damaged.into())
        .await
        .unwrap();
    let (code, report, _) = check(&["--verify"]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["corrupt"], serde_json::json!([uri]));
    assert_eq!(report["missing_chunks"], serde_json::json!([]));
    sink.put(Space::Chunks, &chunk, saved).await.unwrap();
    assert_eq!(check(&["--verify"]).0, Some(0));

    let evict = run_ok(&mut cache(&["evict", &uri]));
    assert!(evict.contains("evicted"), "{evict}");
    let out_after = cache(&["stat", &uri]).output().unwrap();
    assert_eq!(out_after.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out_after.stderr).contains("is not in the cache"));
    let listed: Value = serde_json::from_str(&run_ok(&mut cache(&["ls", "-o", "json"]))).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(0));

    // clear empties the namespace.
    run_ok(&mut cache(&["put", &uri]));
    let cleared = run_ok(&mut cache(&["clear"]));
    assert!(cleared.contains("removed 1 object"), "{cleared}");
    store.delete(&StorePath::from(key.as_str())).await.unwrap();
}

#[test]
fn unreachable_ignite_names_the_addresses_tried() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let other = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let out = kfcache(dir.path())
        .env("KFCACHE_IGNITE", format!("{closed},{other}"))
        .args(["cache", "ls"])
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&closed) && stderr.contains(&other) && stderr.contains("KFCACHE_IGNITE"),
        "{stderr}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "bench"),
    ignore = "`kfcache bench` is built with the `bench` feature"
)]
fn bench_cache_prints_the_summary_line() {
    let ignite = common::env("KFCACHE_TEST_IGNITE_1");
    let dir = tempfile::tempdir().unwrap();
    let stdout = run_ok(kfcache(dir.path()).args([
        "bench", "cache", "--ignite", &ignite, "--size", "1MiB", "--count", "4",
    ]));
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("cache-bench: client=kfcache-ignite put_mbps=")
            && last.contains(" get_mbps=")
            && last.contains(" ignite_rs_put_mbps=")
            && last.contains(" ignite_rs_get_mbps="),
        "{stdout}"
    );
}
