//! How uploads are answered: forwarded to the origin as they are, and, with write-through on,
//! copied into the cache once the origin has stored them (the mechanics are in
//! [`crate::write`]).
//!
//! - `PutObject`: the body is teed while it is forwarded; on the origin's OK the copy is
//!   written under the ETag the origin returned.
//! - `CreateMultipartUpload` starts copying the upload's parts (only uploads begun through
//!   this gateway are copied); `UploadPart` tees each part and records it with the ETag the
//!   origin returned; `UploadPartCopy` forgets the part it replaces at the origin;
//!   `CompleteMultipartUpload`, once the origin has answered OK, assembles the listed parts
//!   and writes them under the completion's ETag; `AbortMultipartUpload` drops the parts.
//!
//! With write-through off, or no cache connected (or it cooling down), nothing is copied.

use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput,
    PutObjectInput, PutObjectOutput, StreamingBlob, UploadPartCopyInput, UploadPartCopyOutput,
    UploadPartInput, UploadPartOutput,
};
use s3s::{S3Request, S3Response, S3Result, S3};

use kfcache_prefetcher::{CacheSink, ObjectCache, SourceVersion};

use crate::metrics::{WriteKind, WriteOutcome};
use crate::service::{object_uri, GatewayS3};
use crate::write::{assemble, etag_text, spawn_write, Completed, Tee};

impl GatewayS3 {
    /// The cache to write uploads into, if write-through is on and one is usable now.
    fn write_through_cache(&self) -> Option<ObjectCache<dyn CacheSink>> {
        if !self.shared.config.write_through {
            return None;
        }
        self.sweep_uploads();
        self.shared.cache.current()
    }

    /// Drops the parts of uploads that were neither completed nor aborted in time.
    fn sweep_uploads(&self) {
        for (bucket, key) in self
            .shared
            .uploads
            .sweep(self.shared.config.write_through_idle)
        {
            tracing::info!(uri = %object_uri(&bucket, &key), idle = ?self.shared.config.write_through_idle,
                "an unfinished multipart upload was idle too long; its parts are no longer kept");
            self.skipped(&object_uri(&bucket, &key), "the upload was idle too long");
        }
    }

    fn skipped(&self, uri: &str, reason: &str) {
        tracing::info!(%uri, reason, "not written through into the cache");
        self.shared
            .metrics
            .wrote(WriteKind::WriteThrough, WriteOutcome::Skipped, 0);
    }

    fn too_large(&self, declared: Option<i64>) -> bool {
        declared.is_some_and(|len| {
            u64::try_from(len).unwrap_or(0) > self.shared.config.write_through_max_object
        })
    }

    pub(crate) async fn put_object_through(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.forwarded("PutObject");
        let uri = object_uri(&req.input.bucket, &req.input.key);
        let declared = req.input.content_length;
        let mut copying = None;
        if let Some(cache) = self.write_through_cache() {
            if self.too_large(declared) {
                self.skipped(&uri, crate::write::NotCopied::TooLarge.as_str());
            } else if let Some(body) = req.input.body.take() {
                let (tee, handle) = Tee::new(
                    body,
                    declared.and_then(|len| u64::try_from(len).ok()),
                    &self.shared.buffers,
                    self.shared.config.write_through_max_object,
                );
                req.input.body = Some(StreamingBlob::new(tee));
                copying = Some((cache, handle));
            }
        }
        let response = self.proxy().put_object(req).await?;
        if let Some((cache, handle)) = copying {
            let etag = response.output.e_tag.as_ref().map(etag_text);
            match (handle.take(), etag) {
                (Err(reason), _) => self.skipped(&uri, reason.as_str()),
                (Ok(_), None) => self.skipped(&uri, "the origin returned no ETag"),
                (Ok(copy), Some(_))
                    if declared.is_some_and(|len| u64::try_from(len).ok() != Some(copy.len())) =>
                {
                    self.skipped(&uri, "the body is not as long as its Content-Length");
                }
                (Ok(copy), Some(etag)) => {
                    let version = SourceVersion {
                        etag: Some(etag),
                        size: copy.len(),
                        last_modified: None,
                    };
                    spawn_write(
                        &self.shared,
                        WriteKind::WriteThrough,
                        cache,
                        uri,
                        version,
                        copy,
                    );
                }
            }
        }
        Ok(response)
    }

    pub(crate) async fn create_multipart_upload_through(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.forwarded("CreateMultipartUpload");
        let copy = self.write_through_cache().is_some();
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.proxy().create_multipart_upload(req).await?;
        if copy {
            if let Some(upload_id) = &response.output.upload_id {
                self.shared.uploads.begin(upload_id, &bucket, &key);
            }
        }
        Ok(response)
    }

    pub(crate) async fn upload_part_through(
        &self,
        mut req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.forwarded("UploadPart");
        let upload_id = req.input.upload_id.clone();
        let number = req.input.part_number;
        let uploads = &self.shared.uploads;
        let mut copying = None;
        if self.write_through_cache().is_some() && uploads.wants(&upload_id) {
            if self.too_large(req.input.content_length) {
                uploads.skip(&upload_id, crate::write::NotCopied::TooLarge.as_str());
            } else if let Some(body) = req.input.body.take() {
                let (tee, handle) = Tee::new(
                    body,
                    req.input
                        .content_length
                        .and_then(|len| u64::try_from(len).ok()),
                    &self.shared.buffers,
                    self.shared.config.write_through_max_object,
                );
                req.input.body = Some(StreamingBlob::new(tee));
                copying = Some(handle);
            }
        }
        let response = self.proxy().upload_part(req).await?;
        if let Some(handle) = copying {
            match (handle.take(), &response.output.e_tag) {
                (Ok(copy), Some(etag)) => {
                    if let Some(reason) = uploads.add_part(
                        &upload_id,
                        number,
                        etag,
                        copy,
                        self.shared.config.write_through_max_object,
                    ) {
                        tracing::info!(upload_id, reason, "the upload's parts are no longer kept");
                    }
                }
                (Ok(_), None) => uploads.skip(&upload_id, "the origin returned no ETag"),
                (Err(reason), _) => {
                    tracing::info!(
                        upload_id,
                        part = number,
                        reason = reason.as_str(),
                        "a part was not copied; the upload will not be written through"
                    );
                    uploads.skip(&upload_id, reason.as_str());
                }
            }
        }
        Ok(response)
    }

    pub(crate) async fn upload_part_copy_through(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.forwarded("UploadPartCopy");
        let (upload_id, number) = (req.input.upload_id.clone(), req.input.part_number);
        let response = self.proxy().upload_part_copy(req).await;
        // The part at the origin is no longer the one copied (or is in doubt).
        self.shared.uploads.forget_part(&upload_id, number);
        response
    }

    pub(crate) async fn complete_multipart_upload_through(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.forwarded("CompleteMultipartUpload");
        let upload_id = req.input.upload_id.clone();
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let listed: Vec<(i32, Option<String>)> = req
            .input
            .multipart_upload
            .as_ref()
            .and_then(|upload| upload.parts.as_ref())
            .map(|parts| {
                parts
                    .iter()
                    .map(|part| {
                        (
                            part.part_number.unwrap_or_default(),
                            part.e_tag.as_ref().map(etag_text),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        // On an error the upload stays: the client may complete it again.
        let response = self.proxy().complete_multipart_upload(req).await?;
        let Some(completed) = self.shared.uploads.complete(&upload_id, &bucket, &key) else {
            return Ok(response);
        };
        let uri = object_uri(&bucket, &key);
        let parts = match completed {
            Completed::Skipped(reason) => {
                self.skipped(&uri, reason);
                return Ok(response);
            }
            Completed::Parts(parts) => parts,
        };
        let Some(cache) = self.write_through_cache() else {
            self.skipped(&uri, "no cache is usable now");
            return Ok(response);
        };
        let Some(etag) = response.output.e_tag.as_ref().map(etag_text) else {
            self.skipped(&uri, "the origin returned no ETag");
            return Ok(response);
        };
        match assemble(parts, &listed) {
            Ok(copy) => {
                let version = SourceVersion {
                    etag: Some(etag),
                    size: copy.len(),
                    last_modified: None,
                };
                spawn_write(
                    &self.shared,
                    WriteKind::WriteThrough,
                    cache,
                    uri,
                    version,
                    copy,
                );
            }
            Err(mismatch) => self.skipped(&uri, &mismatch.to_string()),
        }
        Ok(response)
    }

    pub(crate) async fn abort_multipart_upload_through(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.forwarded("AbortMultipartUpload");
        let upload_id = req.input.upload_id.clone();
        let response = self.proxy().abort_multipart_upload(req).await;
        if self.shared.uploads.abort(&upload_id) {
            tracing::debug!(upload_id, "aborted; its parts are dropped");
        }
        response
    }
}
