//! TLS and username/password against the real secure node (KFCACHE_TEST_IGNITE_SECURE, started
//! by scripts/services.sh with a throw-away CA and Ignite's default user ignite/ignite).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use kfcache_ignite::{Bytes, CacheConfig, Client, ClientConfig, Error, TlsConfig};

fn secure_config() -> ClientConfig {
    ClientConfig::new(common::addresses("KFCACHE_TEST_IGNITE_SECURE"))
        .with_connect_timeout(Duration::from_secs(5))
        .with_tls(TlsConfig {
            ca_file: PathBuf::from(common::env("KFCACHE_TEST_IGNITE_SECURE_CA")),
            server_name: None,
        })
}

#[tokio::test]
async fn tls_with_credentials_round_trips() {
    let config = secure_config().with_credentials(
        common::env("KFCACHE_TEST_IGNITE_SECURE_USER"),
        common::env("KFCACHE_TEST_IGNITE_SECURE_PASSWORD"),
    );
    let client = Client::connect(config).await.unwrap();
    let name = common::unique("tls");
    let cache = client
        .get_or_create_cache(&CacheConfig::partitioned(&name))
        .await
        .unwrap();
    let value = Bytes::from(common::pattern(4 << 20, 9));
    cache.put("secure/value", value.clone()).await.unwrap();
    assert_eq!(cache.get("secure/value").await.unwrap(), Some(value));
    client.destroy_cache(&name).await.unwrap();
}

#[tokio::test]
async fn wrong_password_is_rejected_by_the_node() {
    let config = secure_config().with_credentials("ignite", "not-the-password");
    let error = Client::connect(config).await.expect_err("wrong password");
    let Error::NoNodeReachable { last, .. } = error else {
        panic!("unexpected {error}");
    };
    assert!(matches!(*last, Error::HandshakeRejected { .. }), "{last}");
}

#[tokio::test]
async fn missing_credentials_are_rejected_by_the_node() {
    let error = Client::connect(secure_config())
        .await
        .expect_err("no credentials");
    assert!(
        error.to_string().contains("no Ignite node reachable"),
        "{error}"
    );
}

#[tokio::test]
async fn plain_tcp_to_a_tls_port_fails_cleanly() {
    let config = ClientConfig::new(common::addresses("KFCACHE_TEST_IGNITE_SECURE"))
        .with_connect_timeout(Duration::from_secs(3))
        .with_credentials("ignite", "ignite");
    let error = Client::connect(config)
        .await
        .expect_err("server expects TLS");
    assert!(
        error.to_string().contains("no Ignite node reachable"),
        "{error}"
    );
}

#[tokio::test]
async fn bad_ca_file_and_wrong_server_name_are_refused() {
    // A CA file without certificates is a configuration error before any connection.
    let dir = std::env::temp_dir().join(common::unique("ca"));
    std::fs::create_dir_all(&dir).unwrap();
    let bogus = dir.join("ca.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let config =
        ClientConfig::new(common::addresses("KFCACHE_TEST_IGNITE_SECURE")).with_tls(TlsConfig {
            ca_file: bogus,
            server_name: None,
        });
    let error = Client::connect(config).await.expect_err("unusable CA file");
    assert!(matches!(error, Error::Tls { .. }), "{error}");
    // The right CA but another expected server name: certificate verification must fail.
    let config = secure_config()
        .with_credentials("ignite", "ignite")
        .with_tls(TlsConfig {
            ca_file: PathBuf::from(common::env("KFCACHE_TEST_IGNITE_SECURE_CA")),
            server_name: Some("not-the-node.example".to_string()),
        });
    let error = Client::connect(config).await.expect_err("name mismatch");
    let Error::NoNodeReachable { last, .. } = error else {
        panic!("unexpected {error}");
    };
    assert!(matches!(*last, Error::Tls { .. }), "{last}");
    std::fs::remove_dir_all(dir).unwrap();
}
