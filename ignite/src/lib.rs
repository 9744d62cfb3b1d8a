//! kfcache-ignite: an async Apache Ignite 2.x thin client, focused on what kfcache needs —
//! artifact bytes stored under string keys.
//!
//! Why not an existing crate: `ignite-rs` 0.1.1 is blocking, speaks protocol 1.2 over one
//! mutex-guarded socket with 1 KiB buffered writes, has no timeouts or reconnect, and its TLS
//! depends on a rustls release with published advisories. This crate speaks protocol 1.7.0 on
//! tokio:
//!
//! - one multiplexed connection per node, shared by all clones of a [`Client`], many requests in
//!   flight, vectored writes that send values without copying them;
//! - connect and request timeouts, reconnect, failover across the configured addresses, and an
//!   error naming every address tried when none answers;
//! - partition awareness: keyed requests go to the key's primary node using the cluster's
//!   partition map and Ignite's `RendezvousAffinityFunction` partition formula;
//! - username/password in the handshake, TLS with rustls via tokio-rustls;
//! - every reply is decoded with bounds checks: a misbehaving server yields an error, never a
//!   panic.
//!
//! ```no_run
//! # async fn demo() -> kfcache_ignite::Result<()> {
//! use kfcache_ignite::{CacheConfig, Client, ClientConfig};
//! let client = Client::connect(ClientConfig::from_address_list("127.0.0.1:10800")).await?;
//! let cache = client.get_or_create_cache(&CacheConfig::partitioned("artifacts")).await?;
//! cache.put("run-1/model.bin", vec![1u8, 2, 3]).await?;
//! assert_eq!(cache.get("run-1/model.bin").await?.as_deref(), Some(&[1u8, 2, 3][..]));
//! # Ok(()) }
//! ```

#[cfg(feature = "bench")]
mod bench;
mod cache;
mod client;
mod connection;
mod error;
pub mod protocol;
mod tls;

#[cfg(feature = "bench")]
pub use bench::{run_cache_bench, BenchReport, Throughput};
pub use bytes::Bytes;
pub use cache::{Cache, CacheConfig};
pub use client::{Client, ClientConfig, ClientStats, Credentials, TlsConfig};
pub use error::{Error, Result};
pub use protocol::{CacheMode, WriteSynchronizationMode};
