//! The least-recently-used rule of on-demand filling, shared by `kfcache sidecar init
//! --fill-budget` and `kfcache gateway --fill-budget`: a cache that fills itself on first read
//! (no prefetcher) keeps its namespace within a byte budget by evicting the objects used least
//! recently.
//!
//! - **Recency** is a small record per object in [`Space::Meta`] (`NS/lru/URI` → the last use
//!   in milliseconds since the epoch), written on every hit and every fill ([`touch`]). An
//!   object without one (staged by `kfcache prefetch`) counts as used when it was staged.
//! - **Room** is made before a fill ([`make_room`]): objects are evicted oldest use first until
//!   the new one fits. An object larger than the whole budget is not filled. Fillers working at
//!   the same time each make room for their own object only, so the namespace may exceed the
//!   budget by the objects in flight until the next fill.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::Utc;

use crate::{CacheSink, ObjectCache, Space};

fn recency_key(namespace: &str, uri: &str) -> String {
    format!("{namespace}/lru/{uri}")
}

/// Records that `uri` was used now.
pub async fn touch<S: CacheSink + ?Sized>(cache: &ObjectCache<S>, uri: &str) {
    let key = recency_key(&cache.config().namespace, uri);
    let now = Utc::now().timestamp_millis().to_string();
    if let Err(error) = cache.sink().put(Space::Meta, &key, Bytes::from(now)).await {
        tracing::warn!(%uri, %error, "cannot record the use of a cached object");
    }
}

/// What [`make_room`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Room {
    /// Whether the object may be filled.
    pub fits: bool,
    /// URIs evicted to make room, oldest use first.
    pub evicted: Vec<String>,
}

/// Evicts least-recently-used objects until `size` more bytes fit in `budget`.
pub async fn make_room<S: CacheSink + ?Sized>(
    cache: &ObjectCache<S>,
    uri: &str,
    size: u64,
    budget: u64,
) -> crate::Result<Room> {
    if size > budget {
        return Ok(Room::default());
    }
    let manifests = cache.list().await?;
    let mut used: u64 = manifests
        .iter()
        .filter(|m| m.uri != uri)
        .map(|m| m.size)
        .sum();
    if used + size <= budget {
        return Ok(Room {
            fits: true,
            evicted: Vec::new(),
        });
    }
    let namespace = &cache.config().namespace;
    let keys: Vec<String> = manifests
        .iter()
        .map(|m| recency_key(namespace, &m.uri))
        .collect();
    let recency = cache.sink().get_all(Space::Meta, &keys).await?;
    let last_use: HashMap<&str, i64> = manifests
        .iter()
        .map(|m| {
            let recorded = recency
                .get(&recency_key(namespace, &m.uri))
                .and_then(|b| std::str::from_utf8(b).ok()?.trim().parse::<i64>().ok());
            (
                m.uri.as_str(),
                recorded.unwrap_or_else(|| m.staged_at.timestamp_millis()),
            )
        })
        .collect();
    let mut candidates: Vec<_> = manifests.iter().filter(|m| m.uri != uri).collect();
    candidates.sort_by_key(|m| (last_use.get(m.uri.as_str()).copied(), m.uri.clone()));
    let mut evicted = Vec::new();
    for manifest in candidates {
        if used + size <= budget {
            break;
        }
        cache.evict(&manifest.uri).await?;
        let _ = cache
            .sink()
            .remove_all(Space::Meta, &[recency_key(namespace, &manifest.uri)])
            .await;
        used = used.saturating_sub(manifest.size);
        evicted.push(manifest.uri.clone());
    }
    Ok(Room {
        fits: used + size <= budget,
        evicted,
    })
}
