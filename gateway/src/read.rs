//! Reading a byte range of a cached object as a response body, verified as the cache's own
//! read path verifies it (`ObjectCache::read_with` in kfcache-prefetcher): every chunk must
//! be present, have its recorded length and match its xxh3-128 checksum, and a whole-object
//! read must match the object's checksum.
//!
//! The first batch of chunks is read and verified *before* the response starts, so a missing
//! or corrupted copy is found while the request can still be answered from the origin. Later
//! batches are read while the client drains the earlier ones (a bounded channel between the
//! reading task and the body). Should a later batch be missing (evicted or replaced while the
//! response was being sent) or fail its checks, the rest of the range is read from the origin
//! at the staged version (`ArtifactSource::read_range`, which refuses another version), so the
//! client still gets the object; only if that also fails does the body end with an error.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use kfcache_prefetcher::{checksum, CacheSink, Manifest, ObjectCache, Space};
use s3s::stream::{ByteStream, RemainingLength};
use tokio::sync::mpsc;
use xxhash_rust::xxh3::Xxh3;

use crate::metrics::MissReason;
use crate::service::{object_uri_of, CacheFailure, Shared};

/// Bytes read from the origin per request when a read falls back to it mid-response.
const ORIGIN_READ: u64 = 8 << 20;

/// Why a cached copy could not be read.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The cache failed or timed out.
    Cache(CacheFailure),
    /// A chunk is missing, has the wrong length or the wrong checksum; or the object's
    /// checksum does not match.
    Check(String),
}

impl ReadFailure {
    pub(crate) fn reason(&self) -> MissReason {
        match self {
            ReadFailure::Cache(_) => MissReason::CacheError,
            ReadFailure::Check(_) => MissReason::CheckFailed,
        }
    }
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFailure::Cache(failure) => write!(f, "{failure}"),
            ReadFailure::Check(reason) => f.write_str(reason),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BodyError(String);

/// A response body fed by the reading task.
pub(crate) struct CacheBody {
    receiver: mpsc::Receiver<Result<Bytes, s3s::StdError>>,
    remaining: u64,
}

impl Stream for CacheBody {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.receiver.poll_recv(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled {
            self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
        }
        polled
    }
}

impl ByteStream for CacheBody {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(usize::try_from(self.remaining).unwrap_or(usize::MAX))
    }
}

/// Chunks per cache request.
fn batch_chunks(cache: &ObjectCache<dyn CacheSink>, manifest: &Manifest) -> u64 {
    (cache.config().read_batch_bytes / manifest.chunk_size.max(1)).max(1)
}

/// Chunks `first..first + count` of `manifest`, verified.
async fn read_chunks(
    shared: &Shared,
    cache: &ObjectCache<dyn CacheSink>,
    manifest: &Manifest,
    first: u64,
    count: u64,
) -> Result<Vec<Bytes>, ReadFailure> {
    let keys: Vec<String> = (first..first + count)
        .map(|index| cache.chunk_key(manifest, index))
        .collect();
    let mut values = shared
        .cache
        .call(cache.sink().get_all(Space::Chunks, &keys))
        .await
        .map_err(ReadFailure::Cache)?;
    let mut chunks = Vec::with_capacity(keys.len());
    for (offset, key) in keys.iter().enumerate() {
        let index = first + offset as u64;
        let value = values.remove(key).ok_or_else(|| {
            ReadFailure::Check(format!(
                "chunk {index} of {} is missing ({key})",
                manifest.uri
            ))
        })?;
        let expected = manifest
            .chunk_checksums
            .get(index as usize)
            .map(String::as_str)
            .unwrap_or_default();
        let actual = checksum(&value);
        if actual != expected || value.len() as u64 != manifest.chunk_len(index) {
            return Err(ReadFailure::Check(format!(
                "chunk {index} of {} is corrupted: checksum {actual} ({} bytes), expected {expected} ({} bytes)",
                manifest.uri,
                value.len(),
                manifest.chunk_len(index)
            )));
        }
        chunks.push(value);
    }
    Ok(chunks)
}

/// Starts reading bytes `span` of the cached object; fails (before anything is sent) when the
/// first batch cannot be read and verified.
pub(crate) async fn open(
    shared: Arc<Shared>,
    cache: ObjectCache<dyn CacheSink>,
    manifest: Manifest,
    span: Range<u64>,
) -> Result<CacheBody, ReadFailure> {
    let per_batch = batch_chunks(&cache, &manifest);
    // One batch waits in the channel while the next is read: at most about two batches
    // (2 × read_batch_bytes) in memory per response.
    let capacity = usize::try_from(per_batch)
        .unwrap_or(usize::MAX)
        .clamp(2, 1024);
    let (sender, receiver) = mpsc::channel(capacity);
    let body = CacheBody {
        receiver,
        remaining: span.end - span.start,
    };
    if span.is_empty() {
        if manifest.size == 0 && manifest.checksum != checksum(&[]) {
            return Err(ReadFailure::Check(format!(
                "the empty object {} does not match its checksum",
                manifest.uri
            )));
        }
        return Ok(body);
    }
    let chunk_size = manifest.chunk_size;
    let first = span.start / chunk_size;
    let last = (span.end - 1) / chunk_size;
    let count = per_batch.min(last - first + 1);
    let chunks = read_chunks(&shared, &cache, &manifest, first, count).await?;
    let reader = Reader {
        shared,
        cache,
        manifest,
        span,
        per_batch,
        sender,
    };
    tokio::spawn(reader.run(first, last, chunks));
    Ok(body)
}

struct Reader {
    shared: Arc<Shared>,
    cache: ObjectCache<dyn CacheSink>,
    manifest: Manifest,
    span: Range<u64>,
    per_batch: u64,
    sender: mpsc::Sender<Result<Bytes, s3s::StdError>>,
}

impl Reader {
    async fn run(self, first: u64, last: u64, mut chunks: Vec<Bytes>) {
        let whole = self.span.start == 0 && self.span.end == self.manifest.size;
        let mut hasher = whole.then(|| Box::new(Xxh3::new()));
        let chunk_size = self.manifest.chunk_size;
        let mut index = first;
        let mut position = self.span.start;
        loop {
            for chunk in chunks {
                if let Some(hasher) = hasher.as_mut() {
                    hasher.update(&chunk);
                }
                let chunk_start = index * chunk_size;
                let from = position.max(chunk_start) - chunk_start;
                let to = self.span.end.min(chunk_start + chunk.len() as u64) - chunk_start;
                let piece = chunk.slice(from as usize..to as usize);
                let sent = piece.len() as u64;
                if self.sender.send(Ok(piece)).await.is_err() {
                    return; // the client went away
                }
                self.shared.metrics.served(true, sent);
                position += sent;
                index += 1;
            }
            if index > last {
                break;
            }
            let count = self.per_batch.min(last - index + 1);
            match read_chunks(&self.shared, &self.cache, &self.manifest, index, count).await {
                Ok(next) => chunks = next,
                Err(failure) => {
                    tracing::warn!(uri = %self.manifest.uri, error = %failure, position,
                        "the cached copy failed mid-response; reading the rest from the origin");
                    self.rest_from_origin(position).await;
                    return;
                }
            }
        }
        if let Some(hasher) = hasher {
            let actual = format!("{:032x}", hasher.digest128());
            if actual != self.manifest.checksum {
                let reason = format!(
                    "{} does not match its checksum: {actual}, expected {}",
                    self.manifest.uri, self.manifest.checksum
                );
                tracing::error!(%reason, "the cached object is corrupted; ending the response with an error");
                let _ = self.sender.send(Err(Box::new(BodyError(reason)))).await;
            }
        }
    }

    /// Sends bytes `position..span.end` from the origin, at the staged version.
    async fn rest_from_origin(&self, mut position: u64) {
        let uri = object_uri_of(&self.manifest);
        while position < self.span.end {
            let end = self.span.end.min(position + ORIGIN_READ);
            match self
                .shared
                .source
                .read_range(uri, position..end, Some(&self.manifest.version))
                .await
            {
                Ok(bytes) => {
                    let sent = bytes.len() as u64;
                    if sent == 0 || self.sender.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                    self.shared.metrics.served(false, sent);
                    position += sent;
                }
                Err(error) => {
                    tracing::error!(%uri, %error, "the origin failed too; ending the response with an error");
                    let _ = self.sender.send(Err(Box::new(error))).await;
                    return;
                }
            }
        }
    }
}
