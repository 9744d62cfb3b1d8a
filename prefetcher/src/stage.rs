//! Staging: copy one object from an [`ArtifactSource`] into an [`ObjectCache`], reading
//! chunk-sized ranges concurrently and writing chunks while later ranges are still being read.
//!
//! Reads run `read_concurrency` at a time and are consumed in order (so the whole-object
//! checksum can be computed as they pass); ready chunks are grouped into one `putAll` and each
//! group is written by its own task, at most `write_concurrency` at a time. Memory in use is
//! bounded by `(read_concurrency + write_concurrency × batch) × chunk size`.

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::layout::ObjectCache;
use crate::manifest::Manifest;
use crate::sink::CacheSink;
use crate::source::ArtifactSource;

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
    let object = source.head(uri).await?;
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
            for chunk in batch {
                entries.push(writer.accept(chunk?)?);
            }
            while writes.len() >= options.write_concurrency.max(1) {
                join_one(&mut writes).await?;
            }
            let putter = writer.putter();
            writes.spawn(async move { putter.put(entries).await });
        }
        while !writes.is_empty() {
            join_one(&mut writes).await?;
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

async fn join_one(writes: &mut tokio::task::JoinSet<Result<()>>) -> Result<()> {
    match writes.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(error)) => Err(Error::Task {
            what: "writing chunks",
            message: error.to_string(),
        }),
        None => Ok(()),
    }
}
