//! What the test binaries share: the conformance suites of `kfcache_prefetcher::testing`
//! (feature `testing`), and the helpers that find the real servers started by
//! `scripts/services.sh`: a missing variable fails the test with instructions, never passes it
//! silently.

#![allow(dead_code, clippy::unwrap_used)]

pub use kfcache_prefetcher::testing::*;

use std::time::Duration;

use kfcache_ignite::{Client, ClientConfig};
use kfcache_prefetcher::{IgniteSink, IgniteSinkConfig};

// --- the real servers -------------------------------------------------------------------------

pub fn env(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "{variable} is not set. This test needs the real Ignite and S3 servers: run \
             `bash scripts/test.sh`, or `scripts/services.sh up && eval \"$(scripts/services.sh env)\"` \
             before `cargo test`."
        ),
    }
}

pub fn addresses(variable: &str) -> Vec<String> {
    ClientConfig::from_address_list(&env(variable)).addresses
}

/// An Ignite sink on the cluster named by `variable`, in a cache of its own (destroy it with
/// [`IgniteSink::destroy`] at the end).
pub async fn ignite_sink(variable: &str, backups: u32) -> IgniteSink {
    let client = Client::connect(
        ClientConfig::new(addresses(variable))
            .with_connect_timeout(Duration::from_secs(5))
            .with_request_timeout(Duration::from_secs(30)),
    )
    .await
    .unwrap_or_else(|error| panic!("cannot connect to {variable}: {error}"));
    IgniteSink::open(
        client,
        &IgniteSinkConfig {
            cache_name: unique("test-prefetcher"),
            backups,
        },
    )
    .await
    .unwrap()
}
