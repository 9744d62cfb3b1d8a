//! Staging one object: copy it from an [`ArtifactSource`] into an [`ObjectCache`], reading
//! chunk-sized ranges concurrently and writing chunks while later ranges are still being read.
//!
//! Reads run `read_concurrency` at a time and are consumed in order (so the whole-object
//! checksum can be computed as they pass); ready chunks are grouped into one `putAll` and each
//! group is written by its own task, at most `write_concurrency` at a time. Memory in use is
//! bounded by `(read_concurrency + write_concurrency × batch) × chunk size`.
//!
//! Many objects (a directory or key prefix) are staged by [`crate::stage_prefix`], which uses
//! [`stage_listed_object`] for the large ones and batches the small ones.

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
        .ready_chunks(options.write_batch.max(1));
    futures::pin_mut!(reads);

    let mut writes = tokio::task::JoinSet::new();
    let outcome: Result<()> = async {
        while let Some(batch) = reads.next().await {
            let mut entries = Vec::with_capacity(batch.len());
            let mut bytes = 0u64;
            for chunk in batch {
                let entry = writer.accept(chunk?)?;
                bytes += entry.1.len() as u64;
                entries.push(entry);
            }
            while writes.len() >= options.write_concurrency.max(1) {
                on_bytes(join_one(&mut writes).await?);
            }
            let putter = writer.putter();
            writes.spawn(async move { putter.put(entries).await.map(|()| bytes) });
        }
        while !writes.is_empty() {
            on_bytes(join_one(&mut writes).await?);
        }
        Ok(())
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

/// Waits for one write; returns the bytes it stored.
async fn join_one(writes: &mut tokio::task::JoinSet<Result<u64>>) -> Result<u64> {
    match writes.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(error)) => Err(Error::Task {
            what: "writing chunks",
            message: error.to_string(),
        }),
        None => Ok(0),
    }
}
