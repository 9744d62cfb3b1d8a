//! Shared helpers for the tests that run against the real Ignite clusters started by
//! scripts/services.sh. A missing address variable fails the test with instructions: these tests
//! never pass silently without a cluster.

#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use kfcache_ignite::{Client, ClientConfig};

/// Addresses from an environment variable such as `KFCACHE_TEST_IGNITE_3`.
pub fn addresses(variable: &str) -> Vec<String> {
    match std::env::var(variable) {
        Ok(list) if !list.trim().is_empty() => ClientConfig::from_address_list(&list).addresses,
        _ => panic!(
            "{variable} is not set. These tests need the real Ignite clusters: run \
             `scripts/test.sh`, or `scripts/services.sh up && eval \"$(scripts/services.sh env)\"` \
             before `cargo test`."
        ),
    }
}

pub fn env(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!(
            "{variable} is not set: run `scripts/test.sh`, or \
             `eval \"$(scripts/services.sh env)\"` before `cargo test`."
        )
    })
}

pub async fn connect(variable: &str) -> Client {
    Client::connect(ClientConfig::new(addresses(variable)))
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {variable}: {error}"))
}

/// A cache name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("test-{prefix}-{}-{nanos}", std::process::id())
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// `127.0.0.1:PORT` where nothing listens (a port that was just free).
pub fn closed_port_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    drop(listener);
    address
}
