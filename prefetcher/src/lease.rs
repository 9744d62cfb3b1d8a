//! Leases: a running task pins what it reads, so no eviction removes it mid-read.
//!
//! A lease is a small record in the cache's metadata space, visible to every kfcache process
//! on the cluster (the prefetcher, the sidecar of each task, `kfcache cache`):
//!
//! | space | key | value |
//! |---|---|---|
//! | meta | `NS/l/ID/HOLDER` | [`Lease`] (JSON) |
//!
//! `ID` is the object's id (as in the layout's keys), `HOLDER` the lease holder (a task run,
//! `run/task`, with `/` escaped). A lease expires by itself after its time to live, so a
//! crashed reader cannot pin an object for ever; a reader that runs longer renews it.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::ObjectCache;
use crate::manifest::checksum;
use crate::sink::{CacheSink, Space};

/// One lease on a cached object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub uri: String,
    pub holder: String,
    pub expires_at: DateTime<Utc>,
}

fn lease_prefix(namespace: &str) -> String {
    format!("{namespace}/l/")
}

fn lease_key(namespace: &str, uri: &str, holder: &str) -> String {
    let holder: String = holder
        .chars()
        .map(|c| if c == '/' { '|' } else { c })
        .collect();
    format!(
        "{}{}/{holder}",
        lease_prefix(namespace),
        checksum(uri.as_bytes())
    )
}

/// Pins `uri` for `holder` for `ttl` (renewing an earlier lease of the same holder).
pub async fn acquire<S: CacheSink + ?Sized>(
    cache: &ObjectCache<S>,
    uri: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Lease> {
    if holder.is_empty() {
        return Err(Error::Config("a lease needs a holder name".to_string()));
    }
    let ttl = chrono::Duration::from_std(ttl)
        .map_err(|_| Error::Config(format!("lease time {ttl:?} is too long")))?;
    let lease = Lease {
        uri: uri.to_string(),
        holder: holder.to_string(),
        expires_at: Utc::now() + ttl,
    };
    let key = lease_key(&cache.config().namespace, uri, holder);
    let value = serde_json::to_vec(&lease).map_err(|source| Error::BadMetadata {
        key: key.clone(),
        what: "lease",
        source,
    })?;
    cache
        .sink()
        .put(Space::Meta, &key, Bytes::from(value))
        .await?;
    Ok(lease)
}

/// Gives up `holder`'s lease on `uri` (nothing happens when there is none).
pub async fn release<S: CacheSink + ?Sized>(
    cache: &ObjectCache<S>,
    uri: &str,
    holder: &str,
) -> Result<()> {
    let key = lease_key(&cache.config().namespace, uri, holder);
    cache.sink().remove_all(Space::Meta, &[key]).await
}

/// Every unexpired lease of the namespace. Expired leases are removed on the way.
pub async fn active<S: CacheSink + ?Sized>(cache: &ObjectCache<S>) -> Result<Vec<Lease>> {
    let prefix = lease_prefix(&cache.config().namespace);
    let keys = cache.sink().keys_with_prefix(Space::Meta, &prefix).await?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let values = cache.sink().get_all(Space::Meta, &keys).await?;
    let now = Utc::now();
    let mut leases = Vec::new();
    let mut expired = Vec::new();
    for (key, bytes) in values {
        match serde_json::from_slice::<Lease>(&bytes) {
            Ok(lease) if lease.expires_at > now => leases.push(lease),
            Ok(_) => expired.push(key),
            Err(error) => {
                tracing::warn!(%key, "removing an undecodable lease: {error}");
                expired.push(key);
            }
        }
    }
    cache.sink().remove_all(Space::Meta, &expired).await?;
    leases.sort_by(|a, b| a.uri.cmp(&b.uri).then(a.holder.cmp(&b.holder)));
    Ok(leases)
}

/// The URIs some unexpired lease pins.
pub async fn leased_uris<S: CacheSink + ?Sized>(
    cache: &ObjectCache<S>,
) -> Result<BTreeSet<String>> {
    Ok(active(cache).await?.into_iter().map(|l| l.uri).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::{LayoutConfig, MemorySink};

    #[tokio::test]
    async fn a_lease_pins_until_released_or_expired() {
        let cache = ObjectCache::new(Arc::new(MemorySink::new()), LayoutConfig::default()).unwrap();
        acquire(&cache, "s3://b/a", "run-1/train", Duration::from_secs(60))
            .await
            .unwrap();
        acquire(&cache, "s3://b/b", "run-1/eval", Duration::ZERO)
            .await
            .unwrap();
        let uris = leased_uris(&cache).await.unwrap();
        assert_eq!(uris, BTreeSet::from(["s3://b/a".to_string()]));
        // The expired lease was removed from the cache, not only ignored.
        let left = cache
            .sink()
            .keys_with_prefix(Space::Meta, "default/l/")
            .await
            .unwrap();
        assert_eq!(left.len(), 1);
        release(&cache, "s3://b/a", "run-1/train").await.unwrap();
        assert!(leased_uris(&cache).await.unwrap().is_empty());
    }
}
