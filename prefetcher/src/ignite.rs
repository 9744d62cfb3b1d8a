//! [`CacheSink`] over an Apache Ignite 2.x cluster, through the kfcache-ignite thin client.
//!
//! Each [`Space`] is its own Ignite cache: chunks go to `NAME`, manifests and write records to
//! `NAME.meta`. Both are created PARTITIONED with the configured backup count (default 1)
//! through `getOrCreate` with a configuration, and with FULL_SYNC writes: a put returns only
//! when the backups have the value too, so a manifest never outlives the chunks it names when
//! a primary node fails right after a write.
//!
//! The conditional writes map to Ignite's own atomic operations (`putIfAbsent`,
//! `replace(key, old, new)`, `remove(key, old)`; byte arrays compare by content). After a
//! lost connection the client retries on another node, so a write that landed before the
//! reply was lost answers `false` the second time: callers that need to know (the lock) read
//! the key back and recognise their own value.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use kfcache_ignite::{Cache, CacheConfig, Client, WriteSynchronizationMode};

use crate::error::{Error, Result};
use crate::sink::{CacheSink, Space};

/// Entries per scan-query page when listing metadata.
const SCAN_PAGE: i32 = 512;

/// How the sink's Ignite caches are named and created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgniteSinkConfig {
    /// Name of the chunk cache; the metadata cache is this name plus `.meta`.
    pub cache_name: String,
    /// Backup copies of every partition.
    pub backups: u32,
}

impl Default for IgniteSinkConfig {
    fn default() -> Self {
        IgniteSinkConfig {
            cache_name: "kfcache".to_string(),
            backups: 1,
        }
    }
}

/// The Ignite sink. Cheap to clone.
#[derive(Debug, Clone)]
pub struct IgniteSink {
    client: Client,
    chunks: Cache,
    meta: Cache,
}

impl IgniteSink {
    /// Creates (or opens) the two caches on the cluster `client` is connected to.
    pub async fn open(client: Client, config: &IgniteSinkConfig) -> Result<IgniteSink> {
        if config.cache_name.trim().is_empty() {
            return Err(Error::Config("the Ignite cache name is empty".to_string()));
        }
        let backups = i32::try_from(config.backups)
            .map_err(|_| Error::Config(format!("backup count {} is too large", config.backups)))?;
        let create = |name: String| {
            CacheConfig::partitioned(name)
                .with_backups(backups)
                .with_write_synchronization(WriteSynchronizationMode::FullSync)
        };
        let chunk_config = create(config.cache_name.clone());
        let meta_config = create(format!("{}.meta", config.cache_name));
        let chunks = client
            .get_or_create_cache(&chunk_config)
            .await
            .map_err(|e| Error::sink("create cache", Some(&chunk_config.name), e))?;
        let meta = client
            .get_or_create_cache(&meta_config)
            .await
            .map_err(|e| Error::sink("create cache", Some(&meta_config.name), e))?;
        Ok(IgniteSink {
            client,
            chunks,
            meta,
        })
    }

    fn cache(&self, space: Space) -> &Cache {
        match space {
            Space::Chunks => &self.chunks,
            Space::Meta => &self.meta,
        }
    }

    /// The client this sink uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Destroys both Ignite caches (all data of every namespace in them).
    pub async fn destroy(&self) -> Result<()> {
        for cache in [&self.chunks, &self.meta] {
            self.client
                .destroy_cache(cache.name())
                .await
                .map_err(|e| Error::sink("destroy cache", Some(cache.name()), e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl CacheSink for IgniteSink {
    fn describe(&self) -> String {
        format!(
            "ignite {} cache {}",
            self.client.addresses().join(","),
            self.chunks.name()
        )
    }

    async fn get(&self, space: Space, key: &str) -> Result<Option<Bytes>> {
        self.cache(space)
            .get(key)
            .await
            .map_err(|e| Error::sink("get", Some(key), e))
    }

    async fn get_all(&self, space: Space, keys: &[String]) -> Result<HashMap<String, Bytes>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        self.cache(space)
            .get_all(keys)
            .await
            .map_err(|e| Error::sink("get-all", keys.first().map(String::as_str), e))
    }

    async fn put(&self, space: Space, key: &str, value: Bytes) -> Result<()> {
        self.cache(space)
            .put(key, value)
            .await
            .map_err(|e| Error::sink("put", Some(key), e))
    }

    async fn put_all(&self, space: Space, entries: Vec<(String, Bytes)>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let first = entries.first().map(|(key, _)| key.clone());
        self.cache(space)
            .put_all(entries)
            .await
            .map_err(|e| Error::sink("put-all", first.as_deref(), e))
    }

    async fn remove_all(&self, space: Space, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.cache(space)
            .remove_keys(keys)
            .await
            .map_err(|e| Error::sink("remove", keys.first().map(String::as_str), e))
    }

    async fn keys_with_prefix(&self, space: Space, prefix: &str) -> Result<Vec<String>> {
        let mut keys = self
            .cache(space)
            .scan_keys(SCAN_PAGE)
            .await
            .map_err(|e| Error::sink("scan", None, e))?;
        keys.retain(|key| key.starts_with(prefix));
        keys.sort();
        Ok(keys)
    }

    async fn contains(&self, space: Space, key: &str) -> Result<bool> {
        self.cache(space)
            .contains_key(key)
            .await
            .map_err(|e| Error::sink("contains", Some(key), e))
    }

    async fn put_if_absent(&self, space: Space, key: &str, value: Bytes) -> Result<bool> {
        self.cache(space)
            .put_if_absent(key, value)
            .await
            .map_err(|e| Error::sink("put-if-absent", Some(key), e))
    }

    async fn replace_if_equals(
        &self,
        space: Space,
        key: &str,
        expected: Bytes,
        new: Bytes,
    ) -> Result<bool> {
        self.cache(space)
            .replace_if_equals(key, expected, new)
            .await
            .map_err(|e| Error::sink("replace-if-equals", Some(key), e))
    }

    async fn remove_if_equals(&self, space: Space, key: &str, expected: Bytes) -> Result<bool> {
        self.cache(space)
            .remove_if_equals(key, expected)
            .await
            .map_err(|e| Error::sink("remove-if-equals", Some(key), e))
    }
}
