//! Cache operations against the real Ignite clusters (1-node: KFCACHE_TEST_IGNITE_1, 3-node:
//! KFCACHE_TEST_IGNITE_3), started by scripts/services.sh.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kfcache_ignite::{Bytes, CacheConfig, Client, ClientConfig};

#[tokio::test]
async fn put_get_round_trip_of_every_size() {
    let client = common::connect("KFCACHE_TEST_IGNITE_1").await;
    let name = common::unique("sizes");
    let cache = client
        .get_or_create_cache(&CacheConfig::partitioned(&name))
        .await
        .unwrap();
    for (len, seed) in [(0usize, 1u8), (1, 2), (4 << 20, 3), (32 << 20, 4)] {
        let key = format!("value-{len}");
        let value = common::pattern(len, seed);
        cache.put(&key, value.clone()).await.unwrap();
        let read = cache.get(&key).await.unwrap().expect("value present");
        assert_eq!(read.len(), len);
        assert!(read == value, "value of {len} bytes differs");
    }
    assert_eq!(cache.get("never-written").await.unwrap(), None);
    client.destroy_cache(&name).await.unwrap();
}

#[tokio::test]
async fn key_operations_and_listing() {
    let client = common::connect("KFCACHE_TEST_IGNITE_3").await;
    let name = common::unique("ops");
    let cache = client
        .get_or_create_cache(&CacheConfig::partitioned(&name))
        .await
        .unwrap();
    assert!(client.cache_names().await.unwrap().contains(&name));

    cache.put("a", &b"alpha"[..]).await.unwrap();
    assert!(cache.contains_key("a").await.unwrap());
    assert!(!cache.contains_key("b").await.unwrap());
    assert!(!cache.put_if_absent("a", &b"other"[..]).await.unwrap());
    assert!(cache.put_if_absent("b", &b"beta"[..]).await.unwrap());
    assert_eq!(
        cache.get("a").await.unwrap().as_deref(),
        Some(&b"alpha"[..])
    );
    assert_eq!(cache.size().await.unwrap(), 2);

    let mut keys = cache.scan_keys(1).await.unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);

    assert!(cache.remove("a").await.unwrap());
    assert!(!cache.remove("a").await.unwrap());
    assert_eq!(cache.get("a").await.unwrap(), None);

    cache.put("c", Bytes::from_static(b"gamma")).await.unwrap();
    cache.remove_keys(&["b", "c"]).await.unwrap();
    assert_eq!(cache.size().await.unwrap(), 0);

    cache.put("d", Bytes::from_static(b"delta")).await.unwrap();
    cache.clear().await.unwrap();
    assert_eq!(cache.size().await.unwrap(), 0);
    cache.put("e", Bytes::from_static(b"eps")).await.unwrap();
    cache.remove_all().await.unwrap();
    assert_eq!(cache.size().await.unwrap(), 0);

    client.destroy_cache(&name).await.unwrap();
    assert!(!client.cache_names().await.unwrap().contains(&name));
}

#[tokio::test]
async fn put_all_and_get_all_across_nodes() {
    let client = common::connect("KFCACHE_TEST_IGNITE_3").await;
    let name = common::unique("bulk");
    let cache = client
        .get_or_create_cache(&CacheConfig::partitioned(&name))
        .await
        .unwrap();
    let entries: Vec<(String, Bytes)> = (0..200)
        .map(|i| {
            (
                format!("artifact/{i}"),
                Bytes::from(common::pattern(1000 + i, i as u8)),
            )
        })
        .collect();
    cache.put_all(entries.clone()).await.unwrap();
    assert_eq!(cache.size().await.unwrap(), 200);

    let mut keys: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
    keys.push("missing".to_string());
    let found = cache.get_all(&keys).await.unwrap();
    assert_eq!(found.len(), 200);
    let expected: HashMap<String, Bytes> = entries.into_iter().collect();
    assert_eq!(found, expected);
    client.destroy_cache(&name).await.unwrap();
}

#[tokio::test]
async fn backups_one_keeps_two_copies_on_the_three_node_cluster() {
    let client = common::connect("KFCACHE_TEST_IGNITE_3").await;
    let name = common::unique("backups");
    let cache = client
        .get_or_create_cache(&CacheConfig::partitioned(&name).with_backups(1))
        .await
        .unwrap();
    for i in 0..30 {
        cache
            .put(&format!("k{i}"), Bytes::from(vec![i as u8; 10]))
            .await
            .unwrap();
    }
    for i in 0..30 {
        let key = format!("k{i}");
        let mut copies = 0;
        for address in client.addresses() {
            if cache.peek_on_node(&address, &key).await.unwrap().is_some() {
                copies += 1;
            }
        }
        assert_eq!(
            copies, 2,
            "key {key} should be on its primary and one backup"
        );
    }
    client.destroy_cache(&name).await.unwrap();
}

#[tokio::test]
async fn keyed_requests_go_to_the_primary_node() {
    let client = common::connect("KFCACHE_TEST_IGNITE_3").await;
    let name = common::unique("affinity");
    let cache = client
        .get_or_create_cache(&CacheConfig::partitioned(&name))
        .await
        .unwrap();
    // The first keyed requests fetch the partition map (and the first reply of each connection
    // reports a topology change), so warm up before counting.
    for i in 0..10 {
        cache
            .put(&format!("warm{i}"), Bytes::from_static(b"w"))
            .await
            .unwrap();
    }
    let before = client.stats();
    let mut primaries = HashSet::new();
    for i in 0..60 {
        let key = format!("route/{i}");
        cache.put(&key, Bytes::from(vec![1u8; 16])).await.unwrap();
        let primary = cache
            .primary_address(&key)
            .await
            .expect("partition map known for a partitioned cache");
        // With no backups the value lives only on its primary: local peek proves the
        // client's partition calculation matches the cluster's.
        assert!(
            cache.peek_on_node(&primary, &key).await.unwrap().is_some(),
            "key {key} not on the node the client computed ({primary})"
        );
        primaries.insert(primary);
    }
    let after = client.stats();
    assert!(
        primaries.len() >= 2,
        "60 keys should spread over several nodes"
    );
    assert!(
        after.routed_to_primary - before.routed_to_primary >= 60,
        "puts were not routed by partition: {before:?} -> {after:?}"
    );
    client.destroy_cache(&name).await.unwrap();
}

#[tokio::test]
async fn many_tasks_share_the_connections() {
    let client = common::connect("KFCACHE_TEST_IGNITE_3").await;
    let name = common::unique("concurrent");
    let cache = client
        .get_or_create_cache(&CacheConfig::partitioned(&name))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64 {
        let cache = cache.clone();
        tasks.spawn(async move {
            for round in 0..20 {
                let key = format!("t{task}/r{round}");
                let value = Bytes::from(common::pattern(100 + round * 7, task as u8));
                cache.put(&key, value.clone()).await.unwrap();
                assert_eq!(cache.get(&key).await.unwrap(), Some(value));
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    assert_eq!(cache.size().await.unwrap(), 64 * 20);
    // One connection per node, however many tasks.
    assert!(client.stats().connections_opened <= 3 + 1);
    client.destroy_cache(&name).await.unwrap();
}

#[tokio::test]
async fn unknown_cache_is_a_server_error_with_context() {
    let client = common::connect("KFCACHE_TEST_IGNITE_1").await;
    let error = client
        .cache("no-such-cache")
        .get("some-key")
        .await
        .expect_err("cache does not exist");
    let text = error.to_string();
    assert!(
        text.contains("no-such-cache") && text.contains("some-key"),
        "{text}"
    );
}

#[tokio::test]
async fn failover_skips_a_dead_address() {
    let mut addresses = vec![common::closed_port_address()];
    addresses.extend(common::addresses("KFCACHE_TEST_IGNITE_1"));
    let client =
        Client::connect(ClientConfig::new(addresses).with_connect_timeout(Duration::from_secs(2)))
            .await
            .unwrap();
    let cache = client
        .get_or_create_cache(&CacheConfig::partitioned(common::unique("failover")))
        .await
        .unwrap();
    for i in 0..10 {
        cache
            .put(&format!("k{i}"), Bytes::from_static(b"v"))
            .await
            .unwrap();
    }
    client.destroy_cache(cache.name()).await.unwrap();
}
