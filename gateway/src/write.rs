//! Copies of bodies into the cache: write-through of uploads (`PutObject`, multipart uploads)
//! and the on-demand fill of `GetObject` misses.
//!
//! Argo's `wait` container uploads a task's outputs through the gateway, and the next task
//! downloads them; copying them into the cache on the way up makes that download a hit. A body
//! is copied by a [`Tee`] while it is forwarded, so the upload is as fast as before. Only once
//! the origin has answered OK is the copy written, in a spawned task, under the version the
//! origin gave (its ETag, quoted as the origin's HEAD returns it, which is what
//! [`kfcache_prefetcher::Manifest::matches`] compares on the next read). The write never
//! delays nor fails the request: a failure is logged and counted.
//!
//! - **Multipart uploads**: each part's copy is kept per upload id with its part number and
//!   the ETag the origin gave it; the completion assembles the parts in the order it lists
//!   them, after checking that each listed ETag is the recorded one ([`assemble`]), and writes
//!   them under the completion's ETag. An abort drops the parts; so does an upload idle for
//!   `write_through_idle`.
//! - **Bounds**: one object is copied up to `write_through_max_object` bytes, and all copies
//!   together hold at most `write_through_buffer` bytes ([`Buffers`]); past either, the copy
//!   is dropped and the object is not written (`skipped`). The cache's usual guarantee holds
//!   either way: an object whose copy is missing or older than the origin's is a miss.
//! - **Fill** (`fill_budget`): a full `GetObject` that missed is copied the same way, and
//!   written once the client has received the whole body, after least-recently-used objects
//!   were evicted to make room ([`kfcache_prefetcher::fill`]). With a fill budget, uploads
//!   written through make room the same way, so the namespace stays within the budget.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use kfcache_prefetcher::{CacheSink, Manifest, ObjectCache, SourceVersion};
use s3s::dto::{ETag, StreamingBlob};
use s3s::stream::{ByteStream, RemainingLength};
use tokio::sync::oneshot;

use crate::metrics::{GatewayMetrics, WriteKind, WriteOutcome};
use crate::service::Shared;

/// The bound on bytes held in memory for copies, shared by every request.
#[derive(Debug)]
pub(crate) struct Buffers {
    limit: u64,
    used: AtomicU64,
    metrics: GatewayMetrics,
}

impl Buffers {
    pub(crate) fn new(limit: u64, metrics: GatewayMetrics) -> Arc<Buffers> {
        Arc::new(Buffers {
            limit,
            used: AtomicU64::new(0),
            metrics,
        })
    }

    /// An empty reservation, to grow as bytes arrive.
    pub(crate) fn hold(self: &Arc<Self>) -> Held {
        Held {
            buffers: self.clone(),
            bytes: 0,
        }
    }

    fn reserve(&self, bytes: u64) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = used.checked_add(bytes).filter(|next| *next <= self.limit) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.metrics.buffered(next);
                    return true;
                }
                Err(now) => used = now,
            }
        }
    }

    fn release(&self, bytes: u64) {
        let before = self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.metrics.buffered(before.saturating_sub(bytes));
    }
}

/// Bytes reserved in [`Buffers`]; released when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    buffers: Arc<Buffers>,
    bytes: u64,
}

impl Held {
    fn grow(&mut self, bytes: u64) -> bool {
        let reserved = self.buffers.reserve(bytes);
        if reserved {
            self.bytes += bytes;
        }
        reserved
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.buffers.release(self.bytes);
        }
    }
}

/// A body copied as it passed, with the memory it holds.
#[derive(Debug)]
pub(crate) struct Copied {
    pieces: Vec<Bytes>,
    len: u64,
    held: Vec<Held>,
}

impl Copied {
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// Why a body was not copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotCopied {
    /// Larger than `write_through_max_object` (or the fill budget).
    TooLarge,
    /// The copies in memory would exceed `write_through_buffer`.
    OverBuffer,
    /// Reading the body failed.
    BodyFailed,
    /// The body did not end (the request or response was cut short).
    Unfinished,
}

impl NotCopied {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotCopied::TooLarge => "larger than the write-through object bound",
            NotCopied::OverBuffer => "the write-through buffers are full",
            NotCopied::BodyFailed => "the body failed",
            NotCopied::Unfinished => "the body did not end",
        }
    }
}

#[derive(Debug)]
struct TeeState {
    copy: Result<Copied, NotCopied>,
    ended: bool,
}

/// A body that keeps a copy of what passes through it, up to a bound.
///
/// The body has ended when its stream says so, or when as many bytes as its declared length
/// have passed: hyper and aws-sdk-s3 stop polling a body of known length once they have read
/// that many bytes, so the stream's end may never be seen.
pub(crate) struct Tee {
    inner: StreamingBlob,
    state: Arc<Mutex<TeeState>>,
    max: u64,
    expected: Option<u64>,
    passed: u64,
    ended: Option<oneshot::Sender<()>>,
}

/// The other end of a [`Tee`]: the copy, once the body has ended.
pub(crate) struct TeeHandle {
    state: Arc<Mutex<TeeState>>,
    ended: oneshot::Receiver<()>,
}

impl Tee {
    /// Copies `inner` (`expected` bytes long, if declared) into memory reserved in `buffers`,
    /// at most `max` bytes.
    pub(crate) fn new(
        inner: StreamingBlob,
        expected: Option<u64>,
        buffers: &Arc<Buffers>,
        max: u64,
    ) -> (Tee, TeeHandle) {
        let state = Arc::new(Mutex::new(TeeState {
            copy: Ok(Copied {
                pieces: Vec::new(),
                len: 0,
                held: vec![buffers.hold()],
            }),
            ended: false,
        }));
        let (sender, receiver) = oneshot::channel();
        let mut tee = Tee {
            inner,
            state: state.clone(),
            max,
            expected,
            passed: 0,
            ended: Some(sender),
        };
        if expected == Some(0) {
            tee.end();
        }
        (
            tee,
            TeeHandle {
                state,
                ended: receiver,
            },
        )
    }
}

impl Tee {
    fn end(&mut self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).ended = true;
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(());
        }
    }
}

impl Stream for Tee {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(bytes))) => {
                let n = bytes.len() as u64;
                let max = self.max;
                {
                    let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    if let Ok(copy) = &mut state.copy {
                        if copy.len.saturating_add(n) > max {
                            state.copy = Err(NotCopied::TooLarge);
                        } else if !copy.held.first_mut().is_some_and(|held| held.grow(n)) {
                            state.copy = Err(NotCopied::OverBuffer);
                        } else {
                            copy.pieces.push(bytes.clone());
                            copy.len += n;
                        }
                    }
                }
                self.passed = self.passed.saturating_add(n);
                if self.expected == Some(self.passed) {
                    self.end();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                self.state.lock().unwrap_or_else(|p| p.into_inner()).copy =
                    Err(NotCopied::BodyFailed);
            }
            Poll::Ready(None) => self.end(),
            Poll::Pending => {}
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ByteStream for Tee {
    fn remaining_length(&self) -> RemainingLength {
        self.inner.remaining_length()
    }
}

impl TeeHandle {
    /// The copy, if the body has ended and was copied whole.
    pub(crate) fn take(&self) -> Result<Copied, NotCopied> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.ended {
            return Err(NotCopied::Unfinished);
        }
        std::mem::replace(&mut state.copy, Err(NotCopied::Unfinished))
    }

    /// Waits until the body has ended (or was dropped before), then [`TeeHandle::take`].
    pub(crate) async fn finished(mut self) -> Result<Copied, NotCopied> {
        let _ = (&mut self.ended).await;
        self.take()
    }
}

/// An ETag as the origin's HEAD returns it (`"abc"`), the form the prefetcher records.
pub(crate) fn etag_text(etag: &ETag) -> String {
    match etag {
        ETag::Strong(value) => format!("\"{value}\""),
        ETag::Weak(value) => format!("W/\"{value}\""),
    }
}

/// One part of a multipart upload, copied.
#[derive(Debug)]
pub(crate) struct Part {
    /// The ETag the origin gave the part (unquoted).
    etag: String,
    copy: Copied,
}

/// Why the parts of a completed upload are not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// The completion lists a part that was not copied.
    Missing { part: i32 },
    /// The completion lists a part with another ETag than the one recorded (or none).
    ETag {
        part: i32,
        listed: Option<String>,
        recorded: String,
    },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Missing { part } => write!(f, "part {part} was not copied"),
            Mismatch::ETag {
                part,
                listed,
                recorded,
            } => write!(
                f,
                "part {part} is listed with ETag {listed:?}, but its upload returned {recorded:?}"
            ),
        }
    }
}

/// The parts a completion lists (`(part number, ETag)` in its order), taken from `parts`,
/// as one copy; or why they do not match what was uploaded.
pub(crate) fn assemble(
    mut parts: BTreeMap<i32, Part>,
    listed: &[(i32, Option<String>)],
) -> Result<Copied, Mismatch> {
    let mut whole = Copied {
        pieces: Vec::new(),
        len: 0,
        held: Vec::new(),
    };
    for (number, etag) in listed {
        let Some(part) = parts.remove(number) else {
            return Err(Mismatch::Missing { part: *number });
        };
        let listed_value = etag.as_deref().map(|e| e.trim().trim_matches('"'));
        if listed_value != Some(part.etag.as_str()) {
            return Err(Mismatch::ETag {
                part: *number,
                listed: etag.clone(),
                recorded: part.etag,
            });
        }
        whole.pieces.extend(part.copy.pieces);
        whole.len += part.copy.len;
        whole.held.extend(part.copy.held);
    }
    Ok(whole)
}

/// Cuts `pieces` into chunks of `chunk` bytes (the last may be shorter), copying only the
/// chunks that straddle two pieces.
pub(crate) struct Rechunk {
    pieces: VecDeque<Bytes>,
    chunk: usize,
}

impl Rechunk {
    pub(crate) fn new(pieces: Vec<Bytes>, chunk: usize) -> Rechunk {
        Rechunk {
            pieces: pieces.into(),
            chunk: chunk.max(1),
        }
    }
}

impl Iterator for Rechunk {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        while self.pieces.front().is_some_and(Bytes::is_empty) {
            self.pieces.pop_front();
        }
        let first = self.pieces.front_mut()?;
        if first.len() >= self.chunk {
            return Some(first.split_to(self.chunk));
        }
        let mut out = BytesMut::with_capacity(self.chunk);
        while out.len() < self.chunk {
            let Some(piece) = self.pieces.front_mut() else {
                break;
            };
            let take = (self.chunk - out.len()).min(piece.len());
            out.extend_from_slice(&piece.split_to(take));
            if piece.is_empty() {
                self.pieces.pop_front();
            }
        }
        Some(out.freeze())
    }
}

/// One multipart upload whose parts are being copied.
#[derive(Debug)]
struct Upload {
    bucket: String,
    key: String,
    parts: BTreeMap<i32, Part>,
    last_used: Instant,
    /// Why its parts are no longer copied, once that happened.
    skipped: Option<&'static str>,
}

impl Upload {
    fn size(&self) -> u64 {
        self.parts.values().map(|part| part.copy.len).sum()
    }

    fn skip(&mut self, reason: &'static str) {
        self.parts.clear();
        self.skipped.get_or_insert(reason);
    }
}

/// A completed upload's parts, ready to assemble, or why not.
#[derive(Debug)]
pub(crate) enum Completed {
    Parts(BTreeMap<i32, Part>),
    Skipped(&'static str),
}

/// The multipart uploads in flight through the gateway, by upload id.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    uploads: Mutex<HashMap<String, Upload>>,
}

impl Uploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts copying the parts of `upload_id`.
    pub(crate) fn begin(&self, upload_id: &str, bucket: &str, key: &str) {
        self.lock().insert(
            upload_id.to_string(),
            Upload {
                bucket: bucket.to_string(),
                key: key.to_string(),
                parts: BTreeMap::new(),
                last_used: Instant::now(),
                skipped: None,
            },
        );
    }

    /// Whether the parts of `upload_id` are being copied.
    pub(crate) fn wants(&self, upload_id: &str) -> bool {
        self.lock()
            .get_mut(upload_id)
            .map(|upload| {
                upload.last_used = Instant::now();
                upload.skipped.is_none()
            })
            .unwrap_or(false)
    }

    /// Records part `number` of `upload_id` (replacing an earlier upload of it). Returns why
    /// the upload is no longer copied, if this part made it so.
    pub(crate) fn add_part(
        &self,
        upload_id: &str,
        number: i32,
        etag: &ETag,
        copy: Copied,
        max_object: u64,
    ) -> Option<&'static str> {
        let mut uploads = self.lock();
        let upload = uploads.get_mut(upload_id)?;
        if upload.skipped.is_some() {
            return None;
        }
        upload.last_used = Instant::now();
        upload.parts.insert(
            number,
            Part {
                etag: etag.value().to_string(),
                copy,
            },
        );
        if upload.size() > max_object {
            upload.skip(NotCopied::TooLarge.as_str());
            return upload.skipped;
        }
        None
    }

    /// Stops copying `upload_id` and drops its parts.
    pub(crate) fn skip(&self, upload_id: &str, reason: &'static str) {
        if let Some(upload) = self.lock().get_mut(upload_id) {
            upload.skip(reason);
        }
    }

    /// Forgets part `number` of `upload_id` (replaced by a copy at the origin).
    pub(crate) fn forget_part(&self, upload_id: &str, number: i32) {
        if let Some(upload) = self.lock().get_mut(upload_id) {
            upload.parts.remove(&number);
        }
    }

    /// Takes `upload_id` out on its completion, if it was copied for `bucket`/`key`.
    pub(crate) fn complete(&self, upload_id: &str, bucket: &str, key: &str) -> Option<Completed> {
        let upload = self.lock().remove(upload_id)?;
        Some(match upload.skipped {
            Some(reason) => Completed::Skipped(reason),
            None if upload.bucket != bucket || upload.key != key => {
                Completed::Skipped("completed under another bucket or key")
            }
            None => Completed::Parts(upload.parts),
        })
    }

    /// Drops `upload_id` and its parts; whether it was there.
    pub(crate) fn abort(&self, upload_id: &str) -> bool {
        self.lock().remove(upload_id).is_some()
    }

    /// Drops the uploads idle for `idle` or longer; returns their `(bucket, key)`.
    pub(crate) fn sweep(&self, idle: Duration) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut dropped = Vec::new();
        self.lock().retain(|_, upload| {
            let keep = now.duration_since(upload.last_used) < idle;
            if !keep {
                dropped.push((upload.bucket.clone(), upload.key.clone()));
            }
            keep
        });
        dropped
    }
}

/// Writes `pieces` (`size` bytes) as `uri`, chunk by chunk.
async fn put_pieces(
    cache: &ObjectCache<dyn CacheSink>,
    uri: &str,
    version: SourceVersion,
    pieces: Vec<Bytes>,
    size: u64,
) -> kfcache_prefetcher::Result<Manifest> {
    let config = cache.config();
    let chunk = usize::try_from(config.chunk_size).unwrap_or(usize::MAX);
    let batch = (config.read_batch_bytes / config.chunk_size.max(1)).max(1) as usize;
    let mut writer = cache.begin(uri, version, size).await?;
    let mut entries = Vec::new();
    for data in Rechunk::new(pieces, chunk) {
        match writer.accept(data) {
            Ok(entry) => entries.push(entry),
            Err(error) => {
                writer.abort().await;
                return Err(error);
            }
        }
        if entries.len() >= batch {
            if let Err(error) = writer.putter().put(std::mem::take(&mut entries)).await {
                writer.abort().await;
                return Err(error);
            }
        }
    }
    if let Err(error) = writer.putter().put(entries).await {
        writer.abort().await;
        return Err(error);
    }
    writer.finish().await
}

/// Writes `copy` into `cache` as `uri` of `version` in a spawned task (making room first
/// when a fill budget is set), and counts the outcome.
pub(crate) fn spawn_write(
    shared: &Arc<Shared>,
    kind: WriteKind,
    cache: ObjectCache<dyn CacheSink>,
    uri: String,
    version: SourceVersion,
    copy: Copied,
) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let size = copy.len;
        let metrics = &shared.metrics;
        // A bound on the whole write, so that a hung cluster does not pin the copy: the cache
        // timeout per batch of chunks, plus a few for the metadata.
        let batches = size.div_ceil(cache.config().read_batch_bytes.max(1));
        let limit = shared
            .config
            .cache_timeout
            .saturating_mul(u32::try_from(batches.saturating_add(4)).unwrap_or(u32::MAX));
        let budget = shared.config.fill_budget;
        let write = async {
            if let Some(budget) = budget {
                let room = kfcache_prefetcher::fill::make_room(&cache, &uri, size, budget).await?;
                metrics.evicted(room.evicted.len() as u64);
                if !room.evicted.is_empty() {
                    tracing::debug!(%uri, evicted = ?room.evicted, "evicted to make room");
                }
                if !room.fits {
                    return Ok(None);
                }
            }
            let manifest = put_pieces(&cache, &uri, version, copy.pieces, size).await?;
            if budget.is_some() {
                kfcache_prefetcher::fill::touch(&cache, &uri).await;
            }
            Ok::<_, kfcache_prefetcher::Error>(Some(manifest))
        };
        let outcome = match tokio::time::timeout(limit, write).await {
            Ok(Ok(Some(manifest))) => {
                tracing::debug!(%uri, size, version = %manifest.version, ?kind, "written into the cache");
                WriteOutcome::Written
            }
            Ok(Ok(None)) => {
                tracing::info!(%uri, size, budget, ?kind, "larger than the fill budget; not written into the cache");
                WriteOutcome::Skipped
            }
            Ok(Err(error)) => {
                tracing::warn!(%uri, %error, ?kind, "cannot write the object into the cache");
                WriteOutcome::Failed
            }
            Err(_) => {
                tracing::warn!(%uri, ?limit, ?kind, "writing the object into the cache took too long; given up");
                WriteOutcome::Failed
            }
        };
        metrics.wrote(kind, outcome, size);
        drop(copy.held);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffers(limit: u64) -> Arc<Buffers> {
        Buffers::new(limit, GatewayMetrics::new())
    }

    fn copied(buffers: &Arc<Buffers>, data: &[&[u8]]) -> Copied {
        let mut held = buffers.hold();
        let len = data.iter().map(|d| d.len() as u64).sum();
        assert!(held.grow(len));
        Copied {
            pieces: data.iter().map(|d| Bytes::copy_from_slice(d)).collect(),
            len,
            held: vec![held],
        }
    }

    fn part(buffers: &Arc<Buffers>, etag: &str, data: &[&[u8]]) -> Part {
        Part {
            etag: etag.to_string(),
            copy: copied(buffers, data),
        }
    }

    fn bytes_of(copy: &Copied) -> Vec<u8> {
        copy.pieces.iter().flat_map(|p| p.iter().copied()).collect()
    }

    #[test]
    fn parts_are_assembled_in_the_order_the_completion_lists_them() {
        let buffers = buffers(1 << 20);
        let mut parts = BTreeMap::new();
        parts.insert(1, part(&buffers, "a", &[b"11", b"1"]));
        parts.insert(2, part(&buffers, "b", &[b"22"]));
        parts.insert(3, part(&buffers, "c", &[b"3"]));
        // Part 3 listed before 2 (S3 would refuse that; the gateway follows the list), and a
        // part uploaded but not listed (5) is left out.
        parts.insert(5, part(&buffers, "e", &[b"55555"]));
        let listed = vec![
            (1, Some("\"a\"".to_string())),
            (3, Some("c".to_string())),
            (2, Some("\"b\"".to_string())),
        ];
        let whole = assemble(parts, &listed).unwrap_or_else(|m| panic!("{m}"));
        assert_eq!(bytes_of(&whole), b"111322");
        assert_eq!(whole.len(), 6);
        // The unlisted part's memory is released; the assembled parts' is still held.
        assert_eq!(buffers.used.load(Ordering::Relaxed), 6);
        drop(whole);
        assert_eq!(buffers.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_listed_etag_that_is_not_the_uploaded_one_is_a_mismatch() {
        let buffers = buffers(1 << 20);
        let make = || {
            let mut parts = BTreeMap::new();
            parts.insert(1, part(&buffers, "a", &[b"1"]));
            parts.insert(2, part(&buffers, "b", &[b"2"]));
            parts
        };
        assert_eq!(
            assemble(
                make(),
                &[(1, Some("\"a\"".into())), (2, Some("\"x\"".into()))]
            )
            .map(|c| c.len()),
            Err(Mismatch::ETag {
                part: 2,
                listed: Some("\"x\"".into()),
                recorded: "b".into()
            })
        );
        assert_eq!(
            assemble(make(), &[(1, None)]).map(|c| c.len()),
            Err(Mismatch::ETag {
                part: 1,
                listed: None,
                recorded: "a".into()
            })
        );
        assert_eq!(
            assemble(make(), &[(1, Some("a".into())), (4, Some("d".into()))]).map(|c| c.len()),
            Err(Mismatch::Missing { part: 4 })
        );
        // A part listed twice was taken by its first mention.
        assert_eq!(
            assemble(make(), &[(1, Some("a".into())), (1, Some("a".into()))]).map(|c| c.len()),
            Err(Mismatch::Missing { part: 1 })
        );
        assert_eq!(buffers.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn pieces_are_cut_into_chunks_across_their_boundaries() {
        let pieces = vec![
            Bytes::from_static(b"abcdefg"),
            Bytes::new(),
            Bytes::from_static(b"hi"),
            Bytes::from_static(b"jklmnopq"),
            Bytes::from_static(b"r"),
        ];
        let chunks: Vec<Bytes> = Rechunk::new(pieces, 4).collect();
        assert_eq!(
            chunks,
            vec![
                Bytes::from_static(b"abcd"),
                Bytes::from_static(b"efgh"),
                Bytes::from_static(b"ijkl"),
                Bytes::from_static(b"mnop"),
                Bytes::from_static(b"qr"),
            ]
        );
        assert_eq!(Rechunk::new(Vec::new(), 4).count(), 0);
        assert_eq!(Rechunk::new(vec![Bytes::new()], 4).count(), 0);
    }

    #[test]
    fn buffers_refuse_what_exceeds_their_bound_and_release_on_drop() {
        let buffers = buffers(10);
        let mut a = buffers.hold();
        let mut b = buffers.hold();
        assert!(a.grow(6));
        assert!(!b.grow(5));
        assert!(b.grow(4));
        drop(a);
        assert!(b.grow(6));
        assert_eq!(buffers.used.load(Ordering::Relaxed), 10);
        drop(b);
        assert_eq!(buffers.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn etags_are_written_as_the_origin_sends_them() {
        assert_eq!(etag_text(&ETag::Strong("abc".into())), "\"abc\"");
        assert_eq!(etag_text(&ETag::Weak("abc".into())), "W/\"abc\"");
    }

    #[tokio::test]
    async fn a_tee_copies_a_body_whole_or_not_at_all() {
        use futures::StreamExt;
        let body = |pieces: Vec<&'static [u8]>| {
            StreamingBlob::wrap(futures::stream::iter(
                pieces
                    .into_iter()
                    .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p))),
            ))
        };
        let buffers = buffers(100);
        let (tee, handle) = Tee::new(body(vec![b"ab", b"cd"]), None, &buffers, 10);
        assert_eq!(handle.take().map(|c| c.len()), Err(NotCopied::Unfinished));
        let passed: Vec<_> = tee.collect().await;
        assert_eq!(passed.len(), 2);
        let copy = handle.finished().await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(bytes_of(&copy), b"abcd");
        drop(copy);

        let (tee, handle) = Tee::new(body(vec![b"abcdef", b"ghijkl"]), None, &buffers, 10);
        let passed: Vec<_> = tee.collect().await;
        assert_eq!(
            passed.len(),
            2,
            "the body passes whole even when not copied"
        );
        assert_eq!(
            handle.finished().await.map(|c| c.len()),
            Err(NotCopied::TooLarge)
        );

        let small = Buffers::new(3, GatewayMetrics::new());
        let (tee, handle) = Tee::new(body(vec![b"ab", b"cd"]), None, &small, 10);
        let _: Vec<_> = tee.collect().await;
        assert_eq!(
            handle.finished().await.map(|c| c.len()),
            Err(NotCopied::OverBuffer)
        );
        assert_eq!(small.used.load(Ordering::Relaxed), 0);

        // A body of declared length ends with its last byte, even if its end is never polled.
        let (mut tee, handle) = Tee::new(body(vec![b"ab", b"cd"]), Some(4), &buffers, 10);
        let _ = tee.next().await;
        assert_eq!(handle.take().map(|c| c.len()), Err(NotCopied::Unfinished));
        let _ = tee.next().await;
        let copy = handle.take().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(bytes_of(&copy), b"abcd");
        drop((tee, copy));

        // A body dropped before its end gives no copy.
        let (mut tee, handle) = Tee::new(body(vec![b"ab", b"cd"]), None, &buffers, 10);
        let _ = tee.next().await;
        drop(tee);
        assert_eq!(
            handle.finished().await.map(|c| c.len()),
            Err(NotCopied::Unfinished)
        );
        assert_eq!(buffers.used.load(Ordering::Relaxed), 0);
    }
}
