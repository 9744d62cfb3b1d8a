//! Write-through of a finished task's outputs.
//!
//! When the main container's work ends successfully, the sidecar stores every declared output
//! that has a path (Argo output artifacts, KFP `file_outputs`) in the cache under the run's
//! URI for it, `kfcache-run://RUN/TASK/ARTIFACT` (see [`crate::spec::run_output_uri`]), with a
//! manifest and chunk checksums like any staged object. A directory output becomes one object
//! per file, `…/ARTIFACT/REL/PATH`. The init container of a downstream task that reads
//! `task://TASK/ARTIFACT` finds it there, so the consumer reads it from memory instead of
//! waiting for Argo to upload it to the artifact repository and download it again.
//!
//! A file is read once, in chunk-size pieces, while its chunks are put; its version is its
//! size and modification time. A file that changes while it is read is detected by the size
//! check at the end and reported, not cached.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use kfcache_prefetcher::{CacheSink, ObjectCache, SourceVersion};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::spec::{contained_path, run_output_uri, Identity, TaskSpec};

/// Chunks put per request.
const PUT_BATCH: usize = 4;

/// What the write-through did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutputsReport {
    /// `(cache URI, local path, bytes)` of every file written.
    pub files: Vec<(String, PathBuf, u64)>,
    /// `(output name, reason)` of outputs not written.
    pub skipped: Vec<(String, String)>,
    pub bytes: u64,
    pub seconds: f64,
}

/// Writes the outputs of `spec` found under `target` through to `cache`.
pub async fn write_through<S: CacheSink + ?Sized>(
    cache: &ObjectCache<S>,
    spec: &TaskSpec,
    identity: &Identity,
    target: &Path,
) -> Result<OutputsReport> {
    let started = Instant::now();
    let mut report = OutputsReport::default();
    for output in &spec.outputs {
        let Some(declared) = output.path.as_deref() else {
            report
                .skipped
                .push((output.name.clone(), "no path declared".to_string()));
            continue;
        };
        let path = contained_path(target, &output.name, declared)?;
        let base = run_output_uri(
            &identity.run,
            &identity.task,
            &identity.instance,
            &output.name,
        );
        let meta = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta,
            Err(error) => {
                report
                    .skipped
                    .push((output.name.clone(), format!("{}: {error}", path.display())));
                continue;
            }
        };
        let files = if meta.is_dir() {
            files_under(&path)
                .await?
                .into_iter()
                .map(|file| {
                    let rel = file
                        .strip_prefix(&path)
                        .map(|r| r.to_string_lossy().replace('\\', "/"))
                        .unwrap_or_default();
                    (format!("{base}/{rel}"), file)
                })
                .collect()
        } else {
            vec![(base, path)]
        };
        for (uri, file) in files {
            let bytes = put_file(cache, &uri, &file).await?;
            report.bytes += bytes;
            report.files.push((uri, file, bytes));
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Every regular file below `dir`, sorted.
async fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let mut entries = tokio::fs::read_dir(&next)
            .await
            .map_err(Error::io("list", &next))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(Error::io("list", &next))?
        {
            let kind = entry
                .file_type()
                .await
                .map_err(Error::io("stat", entry.path()))?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

async fn put_file<S: CacheSink + ?Sized>(
    cache: &ObjectCache<S>,
    uri: &str,
    path: &Path,
) -> Result<u64> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(Error::io("open", path))?;
    let meta = file.metadata().await.map_err(Error::io("stat", path))?;
    let size = meta.len();
    let modified: Option<DateTime<Utc>> = meta.modified().ok().map(DateTime::<Utc>::from);
    let version = SourceVersion {
        etag: None,
        size,
        last_modified: modified,
    };
    let context = || format!("writing {} through to the cache as {uri}", path.display());
    let mut writer = cache
        .begin(uri, version, size)
        .await
        .map_err(Error::cache(context()))?;
    let chunk_size = usize::try_from(cache.config().chunk_size).unwrap_or(usize::MAX);
    let outcome: Result<()> = async {
        let mut read = 0u64;
        let mut batch = Vec::with_capacity(PUT_BATCH);
        while read < size {
            let want = chunk_size.min((size - read) as usize);
            let mut buffer = vec![0u8; want];
            file.read_exact(&mut buffer)
                .await
                .map_err(Error::io("read", path))?;
            read += want as u64;
            batch.push(
                writer
                    .accept(Bytes::from(buffer))
                    .map_err(Error::cache(context()))?,
            );
            if batch.len() >= PUT_BATCH {
                writer
                    .putter()
                    .put(std::mem::take(&mut batch))
                    .await
                    .map_err(Error::cache(context()))?;
            }
        }
        writer
            .putter()
            .put(batch)
            .await
            .map_err(Error::cache(context()))?;
        let now = file.metadata().await.map_err(Error::io("stat", path))?;
        if now.len() != size {
            return Err(Error::Io {
                op: "read (the file changed size while it was written through)",
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("{size} → {} bytes", now.len())),
            });
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            writer.finish().await.map_err(Error::cache(context()))?;
            Ok(size)
        }
        Err(error) => {
            writer.abort().await;
            Err(error)
        }
    }
}
