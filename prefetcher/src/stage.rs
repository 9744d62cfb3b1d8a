//! Staging one object: copy it from an [`ArtifactSource`] into an [`ObjectCache`], reading
//! chunk-sized ranges concurrently and writing chunks while later ranges are still being read.
//!
//! Reads run `read_concurrency` at a time and are consumed in order (so the whole-object
//! checksum can be computed as they pass); chunks are grouped into one `putAll` of up to
//! `write_batch` chunks and each group is written by its own task, at most
//! `write_concurrency` at a time. Reading goes on while writes are in flight: a group goes out
//! when it is full, when the reads are over, or at once when no write is in flight (a slow
//! source never leaves the cache idle waiting for a full group). Memory in use is bounded by
//! `(read_concurrency + (write_concurrency + 1) × write_batch) × chunk size`.
//!
//! Many objects (a directory or key prefix) are staged by [`crate::stage_prefix`], which uses
//! [`stage_listed_object`] for the large ones and batches the small ones.

use bytes::Bytes;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::layout::ObjectCache;
use crate::manifest::Manifest;
use crate::sink::CacheSink;
use crate::source::{ArtifactSource, SourceObject};

/// Concurrency of [`stage_object`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageOptions {
    /// Ranged reads in flight.
    pub read_concurrency: usize,
    /// `putAll` requests in flight.
    pub write_concurrency: usize,
    /// Most chunks in one `putAll`.
    pub write_batch: usize,
}

impl Default for StageOptions {
    fn default() -> Self {
        StageOptions {
            read_concurrency: 8,
            write_concurrency: 4,
            write_batch: 4,
        }
    }
}

/// Stages `uri` from `source` into `cache`; returns the manifest written. On any error the
/// partial write is removed and nothing becomes visible.
pub async fn stage_object<S>(
    source: &dyn ArtifactSource,
    cache: &ObjectCache<S>,
    uri: &str,
    options: StageOptions,
) -> Result<Manifest>
where
    S: CacheSink + ?Sized + 'static,
{
    stage_object_observed(source, cache, uri, options, &|_| {}).await
}

/// [`stage_object`], calling `on_bytes(n)` each time `n` more bytes of the object are stored
/// in the cache (once per `putAll` that lands, in no particular order), for progress bars and
/// metrics. The calls add up to the object's size when the staging succeeds; a failed
/// staging may have reported bytes that are then removed.
pub async fn stage_object_observed<S>(
    source: &dyn ArtifactSource,
    cache: &ObjectCache<S>,
    uri: &str,
    options: StageOptions,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<Manifest>
where
    S: CacheSink + ?Sized + 'static,
{
    let object = source.head(uri).await?;
    stage_listed_object(source, cache, &object, options, on_bytes).await
}

/// [`stage_object_observed`] for an object whose size and version the caller already has
/// (from [`ArtifactSource::list`] or `head`): no second `head`. Reads fail with
/// [`Error::SourceChanged`] if the object is no longer that version (where the source can
/// tell).
pub async fn stage_listed_object<S>(
    source: &dyn ArtifactSource,
    cache: &ObjectCache<S>,
    object: &SourceObject,
    options: StageOptions,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<Manifest>
where
    S: CacheSink + ?Sized + 'static,
{
    let uri = object.uri.as_str();
    let mut writer = cache
        .begin(uri, object.version.clone(), object.size)
        .await?;
    let version = object.version.clone();
    let reads = futures::stream::iter(writer.chunk_ranges())
        .map(|range| {
            let version = &version;
            async move { source.read_range(uri, range, Some(version)).await }
        })
        .buffered(options.read_concurrency.max(1))
        .fuse();
    futures::pin_mut!(reads);

    let write_batch = options.write_batch.max(1);
    let write_concurrency = options.write_concurrency.max(1);
    let mut writes = tokio::task::JoinSet::new();
    let mut pending: Vec<(String, Bytes)> = Vec::with_capacity(write_batch);
    let mut read_all = false;
    let outcome: Result<()> = async {
        loop {
            // A batch goes out when it is full, when the reads are over, or when the cache
            // would otherwise wait for it; reads go on while writes are in flight.
            let slot = writes.len() < write_concurrency;
            if !pending.is_empty()
                && slot
                && (pending.len() >= write_batch || read_all || writes.is_empty())
            {
                let entries = std::mem::replace(&mut pending, Vec::with_capacity(write_batch));
                let bytes = entries.iter().map(|(_, v)| v.len() as u64).sum::<u64>();
                let putter = writer.putter();
                writes.spawn(async move { putter.put(entries).await.map(|()| bytes) });
                continue;
            }
            if read_all && pending.is_empty() && writes.is_empty() {
                return Ok(());
            }
            tokio::select! {
                chunk = reads.next(), if !read_all && pending.len() < write_batch => {
                    match chunk {
                        Some(chunk) => pending.push(writer.accept(chunk?)?),
                        None => read_all = true,
                    }
                }
                Some(joined) = writes.join_next(), if !writes.is_empty() => {
                    on_bytes(joined_bytes(joined)?);
                }
            }
        }
    }
    .await;
    match outcome {
        Ok(()) => writer.finish().await,
        Err(error) => {
            // Let writes already sent land before removing them, so that none lands after.
            while writes.join_next().await.is_some() {}
            writer.abort().await;
            Err(error)
        }
    }
}

fn joined_bytes(joined: std::result::Result<Result<u64>, tokio::task::JoinError>) -> Result<u64> {
    match joined {
        Ok(result) => result,
        Err(error) => Err(Error::Task {
            what: "writing chunks",
            message: error.to_string(),
        }),
    }
}
