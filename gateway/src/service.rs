//! How `GetObject` and `HeadObject` are answered: from the cache when the object is staged
//! and current, else from the origin, transparently.
//!
//! The decision is the one `kfcache sidecar init` makes for each input (`one_object` in
//! kfcache-sidecar): the manifest of `s3://BUCKET/KEY` is looked up in the tenant's cache; the
//! origin is asked for the object's current version with one HEAD and compared with
//! [`kfcache_prefetcher::Manifest::matches`]; when the origin cannot be reached the cached
//! copy's checksums are trusted. When the origin answers that the object is gone (404), it is
//! not served: the cached copy is dropped and the origin's answer goes to the client. The
//! HEAD's content type, encoding, disposition, language, cache control and user metadata
//! are sent with a cached body, so a hit carries the headers the origin would have sent. Chunks are verified as they are read ([`crate::read`]).
//! Anything that goes wrong on the cache side (no cache connected, a timeout, a missing or
//! corrupted chunk) is a miss with its reason, and the request is forwarded to the origin:
//! the cache never fails a request. An object served from the cache causes no GET at the
//! origin, only the freshness HEAD.
//!
//! Requests the cache cannot answer faithfully (a `versionId`, a `partNumber`, SSE-C keys,
//! `response-*` overrides, `If-Modified-Since`/`If-Unmodified-Since`) are forwarded as they
//! are. `If-Match` and `If-None-Match` are decided here against the origin's ETag recorded in
//! the manifest.
//!
//! `HeadObject` is forwarded (the origin's answer carries its content type and metadata,
//! which the cache does not keep); only when the origin fails (no answer, a 5xx) and the object
//! is cached is it answered from the manifest.
//!
//! With a fill budget (`GatewayConfig::fill_budget`, the on-demand LRU baseline), a full
//! `GetObject` that missed because the object is not cached or stale is copied as it passes
//! to the client and written into the cache once the whole body has passed
//! ([`crate::write`]); a hit records the object's use for the least-recently-used rule.

use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use kfcache_prefetcher::{
    ArtifactSource, CacheSink, Manifest, ObjectAttributes, ObjectCache, SourceVersion,
};
use s3s::dto::{
    ETag, ETagCondition, GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput,
    StreamingBlob, Timestamp,
};
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use crate::config::GatewayConfig;
use crate::metrics::{GatewayMetrics, MissReason, WriteKind, WriteOutcome};
use crate::read;
use crate::write::{etag_text, spawn_write, Buffers, Tee, Uploads};

/// The cache the gateway reads, if one is connected, with the cool-down after a timeout.
pub(crate) struct CacheSlot {
    cache: RwLock<Option<ObjectCache<dyn CacheSink>>>,
    cooling_until: Mutex<Option<Instant>>,
    timeout: Duration,
    cooldown: Duration,
}

/// Why a cache call gave nothing.
#[derive(Debug)]
pub(crate) enum CacheFailure {
    /// It failed, in time.
    Failed(kfcache_prefetcher::Error),
    /// It did not answer within the cache timeout (the cache now cools down).
    TimedOut(Duration),
}

impl std::fmt::Display for CacheFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheFailure::Failed(error) => write!(f, "{error}"),
            CacheFailure::TimedOut(after) => write!(f, "no answer from the cache in {after:?}"),
        }
    }
}

impl CacheSlot {
    pub(crate) fn new(
        cache: Option<ObjectCache<dyn CacheSink>>,
        timeout: Duration,
        cooldown: Duration,
    ) -> CacheSlot {
        CacheSlot {
            cache: RwLock::new(cache),
            cooling_until: Mutex::new(None),
            timeout,
            cooldown,
        }
    }

    pub(crate) fn set(&self, cache: Option<ObjectCache<dyn CacheSink>>) {
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = cache;
        *self.cooling_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn is_set(&self) -> bool {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The cache, unless none is connected or it is cooling down after a timeout.
    pub(crate) fn current(&self) -> Option<ObjectCache<dyn CacheSink>> {
        {
            let mut cooling = self.cooling_until.lock().unwrap_or_else(|p| p.into_inner());
            match *cooling {
                Some(until) if Instant::now() < until => return None,
                Some(_) => *cooling = None,
                None => {}
            }
        }
        self.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs one cache call within the timeout; a timeout starts the cool-down.
    pub(crate) async fn call<T>(
        &self,
        operation: impl std::future::Future<Output = kfcache_prefetcher::Result<T>>,
    ) -> Result<T, CacheFailure> {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(CacheFailure::Failed(error)),
            Err(_) => {
                *self.cooling_until.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Instant::now() + self.cooldown);
                tracing::warn!(timeout = ?self.timeout, cooldown = ?self.cooldown,
                    "the cache did not answer in time; serving from the origin during the cool-down");
                Err(CacheFailure::TimedOut(self.timeout))
            }
        }
    }
}

/// What the gateway's requests share.
pub(crate) struct Shared {
    pub(crate) config: GatewayConfig,
    pub(crate) proxy: s3s_aws::Proxy,
    pub(crate) source: Arc<dyn ArtifactSource>,
    pub(crate) cache: CacheSlot,
    pub(crate) metrics: GatewayMetrics,
    /// The memory bound of copies into the cache (uploads written through, fills).
    pub(crate) buffers: Arc<Buffers>,
    /// Multipart uploads whose parts are being copied.
    pub(crate) uploads: Uploads,
}

/// The `s3s::S3` implementation of the gateway (its methods are in [`crate::forward`]).
#[derive(Clone)]
pub(crate) struct GatewayS3 {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for GatewayS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayS3")
            .field("tenant", &self.shared.config.tenant)
            .finish_non_exhaustive()
    }
}

/// A cached object found current.
struct Fresh {
    cache: ObjectCache<dyn CacheSink>,
    manifest: Manifest,
    last_modified: Option<DateTime<Utc>>,
    /// The origin's headers for the object, from the freshness HEAD (empty when the origin
    /// could not be asked).
    attributes: ObjectAttributes,
}

impl Fresh {
    fn etag(&self) -> Option<ETag> {
        self.manifest.version.etag.as_deref().map(parse_etag)
    }
}

/// The cache's URI of an S3 object, as the prefetcher stages it.
pub(crate) fn object_uri(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// The URI a manifest was staged under.
pub(crate) fn object_uri_of(manifest: &Manifest) -> &str {
    &manifest.uri
}

/// An ETag as the origin sent it (`"abc"`, `W/"abc"`, or bare), as s3s's type.
fn parse_etag(text: &str) -> ETag {
    let text = text.trim();
    match text.strip_prefix("W/") {
        Some(weak) => ETag::Weak(weak.trim_matches('"').to_string()),
        None => ETag::Strong(text.trim_matches('"').to_string()),
    }
}

fn condition_holds(condition: &ETagCondition, etag: Option<&ETag>) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(wanted) => etag.is_some_and(|etag| etag.value() == wanted.value()),
    }
}

/// Why the cache cannot answer this request as it is, if it cannot.
fn bypasses_cache(input: &GetObjectInput) -> bool {
    input.version_id.is_some()
        || input.part_number.is_some()
        || input.sse_customer_algorithm.is_some()
        || input.sse_customer_key.is_some()
        || input.if_modified_since.is_some()
        || input.if_unmodified_since.is_some()
        || input.response_cache_control.is_some()
        || input.response_content_disposition.is_some()
        || input.response_content_encoding.is_some()
        || input.response_content_language.is_some()
        || input.response_content_type.is_some()
        || input.response_expires.is_some()
}

impl GatewayS3 {
    pub(crate) fn proxy(&self) -> &s3s_aws::Proxy {
        &self.shared.proxy
    }

    pub(crate) fn forwarded(&self, operation: &str) {
        self.shared.metrics.request(operation);
        tracing::debug!(operation, "forwarded to the origin");
    }

    /// The cached copy of `uri` if it is there and current, else why not.
    async fn lookup(&self, uri: &str) -> Result<Fresh, MissReason> {
        let shared = &self.shared;
        let Some(cache) = shared.cache.current() else {
            return Err(MissReason::CacheError);
        };
        let manifest = match shared.cache.call(cache.stat(uri)).await {
            Ok(Some(manifest)) => manifest,
            Ok(None) => return Err(MissReason::NotCached),
            Err(error) => {
                tracing::warn!(%uri, %error, "cannot look the object up in the cache; serving it from the origin");
                return Err(MissReason::CacheError);
            }
        };
        // Is the cached copy the origin's current version? (As `kfcache sidecar init`.)
        let current = match tokio::time::timeout(
            shared.config.freshness_timeout,
            shared.source.head(uri),
        )
        .await
        {
            Ok(Ok(object)) => Some(object),
            Ok(Err(kfcache_prefetcher::Error::SourceNotFound { .. })) => {
                tracing::info!(%uri, "the origin no longer has the object; dropping the cached copy");
                self.drop_cached(cache, uri);
                return Err(MissReason::Deleted);
            }
            Ok(Err(error)) => {
                tracing::warn!(%uri, %error, "cannot check the origin; trusting the cached copy's checksums");
                None
            }
            Err(_) => {
                tracing::warn!(%uri, timeout = ?shared.config.freshness_timeout,
                        "the origin did not answer the freshness check; trusting the cached copy's checksums");
                None
            }
        };
        if let Some(object) = &current {
            if !manifest.matches(object) {
                tracing::info!(%uri, cached = %manifest.version, origin = %object.version,
                    "the cached copy is stale; serving the origin's");
                return Err(MissReason::Stale);
            }
        }
        let (origin_modified, attributes) = match current {
            Some(object) => (object.version.last_modified, object.attributes),
            None => (None, ObjectAttributes::default()),
        };
        let last_modified = manifest.version.last_modified.or(origin_modified);
        Ok(Fresh {
            cache,
            manifest,
            last_modified,
            attributes,
        })
    }

    /// Drops the cached copy of `uri` in the background (the object is gone at the origin);
    /// a failure is only logged: the copy is never served while the origin says 404, and
    /// eviction or the sweep removes it later.
    pub(crate) fn drop_cached(&self, cache: ObjectCache<dyn CacheSink>, uri: &str) {
        let shared = self.shared.clone();
        let uri = uri.to_string();
        tokio::spawn(async move {
            match shared.cache.call(cache.evict(&uri)).await {
                Ok(true) => {
                    tracing::info!(%uri, "dropped the cached copy of an object deleted at the origin")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%uri, %error, "cannot drop the cached copy of an object deleted at the origin")
                }
            }
        });
    }

    /// After the origin deleted `bucket/key`: drops its cached copy (in the background).
    pub(crate) fn deleted_at_origin(&self, bucket: &str, key: &str) {
        if let Some(cache) = self.shared.cache.current() {
            self.drop_cached(cache, &object_uri(bucket, key));
        }
    }

    pub(crate) async fn get_object_through(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        const OPERATION: &str = "GetObject";
        let metrics = &self.shared.metrics;
        metrics.request(OPERATION);
        if bypasses_cache(&req.input) {
            metrics.miss(OPERATION, MissReason::Bypass);
            return self.get_from_origin(req, false).await;
        }
        let uri = object_uri(&req.input.bucket, &req.input.key);
        let fresh = match self.lookup(&uri).await {
            Ok(fresh) => fresh,
            Err(reason) => {
                tracing::debug!(%uri, reason = reason.as_str(), "miss");
                metrics.miss(OPERATION, reason);
                let fill = matches!(reason, MissReason::NotCached | MissReason::Stale);
                return self.get_from_origin(req, fill).await;
            }
        };
        let etag = fresh.etag();
        if let Some(condition) = &req.input.if_match {
            if !condition_holds(condition, etag.as_ref()) {
                metrics.hit(OPERATION);
                return Err(s3_error!(PreconditionFailed));
            }
        }
        if let Some(condition) = &req.input.if_none_match {
            if condition_holds(condition, etag.as_ref()) {
                metrics.hit(OPERATION);
                return Err(s3_error!(NotModified));
            }
        }
        let size = fresh.manifest.size;
        let range = match &req.input.range {
            None => None,
            Some(range) => match range.check(size) {
                Ok(range) => Some(range),
                Err(_) => {
                    metrics.hit(OPERATION);
                    return Err(s3_error!(InvalidRange));
                }
            },
        };
        let span = range.clone().unwrap_or(0..size);
        let body = match read::open(
            self.shared.clone(),
            fresh.cache.clone(),
            fresh.manifest.clone(),
            span.clone(),
        )
        .await
        {
            Ok(body) => body,
            Err(failure) => {
                tracing::warn!(%uri, error = %failure, "the cached copy cannot be used; serving the origin's");
                metrics.miss(OPERATION, failure.reason());
                return self.get_from_origin(req, false).await;
            }
        };
        metrics.hit(OPERATION);
        tracing::debug!(%uri, start = span.start, end = span.end, "hit");
        if self.shared.config.fill_budget.is_some() {
            let cache = fresh.cache.clone();
            let uri = uri.clone();
            tokio::spawn(async move { kfcache_prefetcher::fill::touch(&cache, &uri).await });
        }
        let output = GetObjectOutput {
            body: Some(StreamingBlob::new(body)),
            content_length: Some(i64::try_from(span.end - span.start).unwrap_or(i64::MAX)),
            content_range: range
                .filter(|r| !r.is_empty())
                .map(|r| format!("bytes {}-{}/{size}", r.start, r.end - 1)),
            accept_ranges: Some("bytes".to_string()),
            e_tag: etag,
            last_modified: fresh
                .last_modified
                .map(|at| Timestamp::from(std::time::SystemTime::from(at))),
            content_type: fresh.attributes.content_type,
            content_encoding: fresh.attributes.content_encoding,
            content_disposition: fresh.attributes.content_disposition,
            content_language: fresh.attributes.content_language,
            cache_control: fresh.attributes.cache_control,
            metadata: (!fresh.attributes.metadata.is_empty())
                .then(|| fresh.attributes.metadata.into_iter().collect()),
            ..GetObjectOutput::default()
        };
        Ok(S3Response::new(output))
    }

    /// Forwards `req`; with `fill` (a miss the fill budget may fill), the body is copied into
    /// the cache as it passes.
    async fn get_from_origin(
        &self,
        req: S3Request<GetObjectInput>,
        fill: bool,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let fill = fill && req.input.range.is_none();
        let uri = object_uri(&req.input.bucket, &req.input.key);
        let mut response = self.proxy().get_object(req).await?;
        if let Some(body) = response.output.body.take() {
            let body = StreamingBlob::new(CountedBody {
                inner: body,
                metrics: self.shared.metrics.clone(),
            });
            response.output.body = Some(if fill {
                self.fill_from(uri, &response.output, body)
            } else {
                body
            });
        }
        Ok(response)
    }

    /// `body` (the origin's answer `output` to a full GET of `uri`), copied into the cache
    /// in passing when the fill budget is on and the object may fit.
    fn fill_from(
        &self,
        uri: String,
        output: &GetObjectOutput,
        body: StreamingBlob,
    ) -> StreamingBlob {
        let config = &self.shared.config;
        let Some(budget) = config.fill_budget else {
            return body;
        };
        let (Some(length), Some(etag), None) = (
            output.content_length,
            output.e_tag.as_ref(),
            &output.content_range,
        ) else {
            return body;
        };
        let Some(cache) = self.shared.cache.current() else {
            return body;
        };
        let size = u64::try_from(length).unwrap_or(0);
        let metrics = &self.shared.metrics;
        if size > budget.min(config.write_through_max_object) {
            tracing::debug!(%uri, size, budget, "larger than the fill budget or the object bound; not filled");
            metrics.wrote(WriteKind::Fill, WriteOutcome::Skipped, 0);
            return body;
        }
        let version = SourceVersion {
            etag: Some(etag_text(etag)),
            size,
            last_modified: output.last_modified.as_ref().and_then(timestamp_to_chrono),
        };
        let (tee, handle) = Tee::new(body, Some(size), &self.shared.buffers, size);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let copy = match handle.finished().await {
                Ok(copy) if copy.len() == size => copy,
                Ok(copy) => {
                    tracing::debug!(%uri, got = copy.len(), size, "the body is not as long as its Content-Length; not filled");
                    shared
                        .metrics
                        .wrote(WriteKind::Fill, WriteOutcome::Skipped, 0);
                    return;
                }
                Err(reason) => {
                    tracing::debug!(%uri, reason = reason.as_str(), "not filled");
                    shared
                        .metrics
                        .wrote(WriteKind::Fill, WriteOutcome::Skipped, 0);
                    return;
                }
            };
            spawn_write(&shared, WriteKind::Fill, cache, uri, version, copy);
        });
        StreamingBlob::new(tee)
    }

    pub(crate) async fn head_object_through(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        const OPERATION: &str = "HeadObject";
        self.shared.metrics.request(OPERATION);
        let plain = req.input.version_id.is_none()
            && req.input.part_number.is_none()
            && req.input.range.is_none();
        let uri = object_uri(&req.input.bucket, &req.input.key);
        let error = match self.proxy().head_object(req).await {
            Ok(response) => return Ok(response),
            Err(error) => error,
        };
        let origin_failed = error
            .status_code()
            .is_none_or(|status| status.is_server_error());
        if !(plain && origin_failed) {
            return Err(error);
        }
        // The origin cannot answer: a cached copy is trusted, as `sidecar init` does.
        match self.lookup(&uri).await {
            Ok(fresh) => {
                tracing::warn!(%uri, error = %error, "the origin failed HEAD; answering from the cache");
                self.shared.metrics.hit(OPERATION);
                let output = HeadObjectOutput {
                    content_length: Some(i64::try_from(fresh.manifest.size).unwrap_or(i64::MAX)),
                    accept_ranges: Some("bytes".to_string()),
                    e_tag: fresh.etag(),
                    last_modified: fresh
                        .last_modified
                        .map(|at| Timestamp::from(std::time::SystemTime::from(at))),
                    ..HeadObjectOutput::default()
                };
                Ok(S3Response::new(output))
            }
            Err(reason) => {
                self.shared.metrics.miss(OPERATION, reason);
                Err(error)
            }
        }
    }
}

/// An S3 timestamp as chrono's.
fn timestamp_to_chrono(at: &Timestamp) -> Option<DateTime<Utc>> {
    let mut text = Vec::new();
    at.format(s3s::dto::TimestampFormat::DateTime, &mut text)
        .ok()?;
    DateTime::parse_from_rfc3339(std::str::from_utf8(&text).ok()?)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// A body from the origin, counted into the served-bytes metric.
struct CountedBody {
    inner: StreamingBlob,
    metrics: GatewayMetrics,
}

impl Stream for CountedBody {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled {
            self.metrics.served(false, bytes.len() as u64);
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ByteStream for CountedBody {
    fn remaining_length(&self) -> RemainingLength {
        self.inner.remaining_length()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_read_as_the_origin_sent_them() {
        assert_eq!(parse_etag("\"abc\""), ETag::Strong("abc".to_string()));
        assert_eq!(parse_etag("abc"), ETag::Strong("abc".to_string()));
        assert_eq!(parse_etag("W/\"abc\""), ETag::Weak("abc".to_string()));
    }

    #[test]
    fn conditions_compare_etag_values() {
        let etag = parse_etag("\"abc\"");
        assert!(condition_holds(&ETagCondition::Any, Some(&etag)));
        assert!(condition_holds(
            &ETagCondition::ETag(ETag::Strong("abc".to_string())),
            Some(&etag)
        ));
        assert!(!condition_holds(
            &ETagCondition::ETag(ETag::Strong("abd".to_string())),
            Some(&etag)
        ));
        assert!(!condition_holds(
            &ETagCondition::ETag(ETag::Strong("abc".to_string())),
            None
        ));
    }
}
