//! The cache-sink seam: where staged bytes go.
//!
//! A [`CacheSink`] is a plain key → bytes store with two spaces: [`Space::Chunks`] for the
//! (large) chunk values and [`Space::Meta`] for the (small) manifests and write records. The
//! chunk/manifest layout itself lives once, in [`ObjectCache`](crate::ObjectCache), on top of
//! any sink; each implementation only moves bytes:
//!
//! - [`MemorySink`](crate::MemorySink) for unit tests;
//! - [`IgniteSink`](crate::IgniteSink) over kfcache-ignite, one Ignite cache per space.
//!
//! Two spaces because listing is needed only for metadata: Ignite's thin-client scan sends
//! values along with keys, so listing a space that held the chunks would read every cached
//! byte. Listing [`Space::Meta`] reads only manifests and write records.
//!
//! Three conditional writes ([`CacheSink::put_if_absent`], [`CacheSink::replace_if_equals`],
//! [`CacheSink::remove_if_equals`]) are atomic per key: they are what the cluster-wide lock
//! ([`crate::lock`]) is built on. They have default bodies that refuse (a sink that cannot
//! compare and set atomically must not pretend to), so wrappers written for tests need not
//! forward them.

use std::collections::HashMap;
use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};

/// Which of a sink's two key spaces an operation addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Chunk values: large, written in bulk, never listed.
    Chunks,
    /// Manifests and write records: small, listed by prefix.
    Meta,
}

/// A key → bytes store with bulk operations. Implementations must be safe to share between
/// tasks; every method is a network round trip at most per node.
#[async_trait]
pub trait CacheSink: Send + Sync + Debug {
    /// A short description for messages (`ignite 127.0.0.1:10800 cache kfcache`).
    fn describe(&self) -> String;

    /// The value under `key`, or `None`.
    async fn get(&self, space: Space, key: &str) -> Result<Option<Bytes>>;

    /// Values of the keys that exist.
    async fn get_all(&self, space: Space, keys: &[String]) -> Result<HashMap<String, Bytes>>;

    /// Stores one value, replacing any previous one.
    async fn put(&self, space: Space, key: &str, value: Bytes) -> Result<()>;

    /// Stores all entries, replacing previous values.
    async fn put_all(&self, space: Space, entries: Vec<(String, Bytes)>) -> Result<()>;

    /// Removes the keys (absent keys are ignored).
    async fn remove_all(&self, space: Space, keys: &[String]) -> Result<()>;

    /// Every key of the space that starts with `prefix`. Meant for [`Space::Meta`]; on
    /// [`Space::Chunks`] it may be slow (it may read every value).
    async fn keys_with_prefix(&self, space: Space, prefix: &str) -> Result<Vec<String>>;

    /// Whether `key` has a value, without transferring it where the sink can.
    async fn contains(&self, space: Space, key: &str) -> Result<bool> {
        Ok(self.get(space, key).await?.is_some())
    }

    /// Stores `value` only if `key` has no value; true if it was stored. Atomic: of two
    /// callers, at most one stores.
    async fn put_if_absent(&self, space: Space, key: &str, value: Bytes) -> Result<bool> {
        let _ = (space, value);
        Err(unsupported(self, "put-if-absent", key))
    }

    /// Replaces the value under `key` with `new` only while it equals `expected` byte for
    /// byte; true if it was replaced. Atomic (compare-and-set): of two callers that read the
    /// same value, at most one replaces it.
    async fn replace_if_equals(
        &self,
        space: Space,
        key: &str,
        expected: Bytes,
        new: Bytes,
    ) -> Result<bool> {
        let _ = (space, expected, new);
        Err(unsupported(self, "replace-if-equals", key))
    }

    /// Removes `key` only while its value equals `expected`; true if it was removed. Atomic.
    async fn remove_if_equals(&self, space: Space, key: &str, expected: Bytes) -> Result<bool> {
        let _ = (space, expected);
        Err(unsupported(self, "remove-if-equals", key))
    }
}

fn unsupported<S: CacheSink + ?Sized>(sink: &S, op: &str, key: &str) -> Error {
    Error::Config(format!(
        "{} cannot {op} atomically (key {key:?})",
        sink.describe()
    ))
}
