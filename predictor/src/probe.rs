//! Asking where each external input lives how big it is — the only async part of the
//! predictor, since it talks to object stores.
//!
//! - `s3://bucket/key`, `gs://bucket/key`, `http(s)://…`: an object_store `head`; a key that
//!   is not an object but a prefix (or a URI ending in `/`) is listed instead and its objects'
//!   sizes summed.
//! - `file:///path` and `pvc://claim/path` (through a claim → local directory map): `stat`,
//!   or a walk of the directory, on the blocking pool.
//!
//! Upstream outputs (`task://…`), inline `raw:` content and schemes without a client here are
//! skipped: their sizes come from history. Connection settings arrive in [`ProbeConfig`]; the
//! binary fills them from the standard environment (AWS_ENDPOINT_URL, AWS_REGION, …).

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::path::Path;
use object_store::ObjectStore;

use crate::error::{Error, Result};

/// S3 connection settings; `None` leaves the object_store default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Bucket in the host name instead of the path; local servers (moto, MinIO) want paths.
    pub virtual_hosted_style: bool,
}

/// How to reach the inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    pub s3: S3Config,
    /// Service account key file for `gs://`.
    pub gcs_service_account_path: Option<String>,
    /// PVC claim → (mount path inside the pod, local directory holding the claim's files).
    pub pvc_roots: BTreeMap<String, PvcRoot>,
}

/// Where a PVC claim's files can be read on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvcRoot {
    /// The mount path the URIs name (`/mnt/data`); stripped before joining to `local`.
    pub mount: Option<String>,
    pub local: PathBuf,
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbedSize {
    /// One object.
    Object { size_bytes: u64 },
    /// A prefix or directory: its objects' total size and count.
    Directory { size_bytes: u64, object_count: u64 },
}

/// Whether `uri` is something [`probe_size`] can ask about.
pub fn probeable(uri: &str) -> bool {
    ["s3://", "gs://", "http://", "https://", "file://", "pvc://"]
        .iter()
        .any(|s| uri.starts_with(s))
}

fn probe_error(uri: &str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Probe {
        uri: uri.to_string(),
        source: source.into(),
    }
}

/// The size of one input.
pub async fn probe_size(uri: &str, config: &ProbeConfig) -> Result<ProbedSize> {
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| probe_error(uri, "not a URI"))?;
    match scheme {
        "s3" | "gs" => {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            let store: Arc<dyn ObjectStore> = if scheme == "s3" {
                Arc::new(s3_store(bucket, &config.s3).map_err(|e| probe_error(uri, e))?)
            } else {
                let mut b = GoogleCloudStorageBuilder::new().with_bucket_name(bucket);
                if let Some(path) = &config.gcs_service_account_path {
                    b = b.with_service_account_path(path);
                }
                Arc::new(b.build().map_err(|e| probe_error(uri, e))?)
            };
            object_or_prefix(uri, store.as_ref(), key).await
        }
        "http" | "https" => {
            let parsed = url::Url::parse(uri).map_err(|e| probe_error(uri, e))?;
            let origin = parsed.origin().ascii_serialization();
            let store = HttpBuilder::new()
                .with_url(origin)
                .build()
                .map_err(|e| probe_error(uri, e))?;
            let path = Path::parse(parsed.path().trim_start_matches('/'))
                .map_err(|e| probe_error(uri, e))?;
            let meta = store.head(&path).await.map_err(|e| probe_error(uri, e))?;
            Ok(ProbedSize::Object {
                size_bytes: meta.size,
            })
        }
        "file" => {
            let path = PathBuf::from(format!("/{}", rest.trim_start_matches('/')));
            stat_blocking(uri, path).await
        }
        "pvc" => {
            let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
            let root = config.pvc_roots.get(claim).ok_or_else(|| {
                probe_error(
                    uri,
                    format!(
                        "no local directory is mapped for claim `{claim}` (--pvc-map {claim}=DIR)"
                    ),
                )
            })?;
            let path = format!("/{path}");
            let inside = match &root.mount {
                Some(mount) => path
                    .strip_prefix(mount.trim_end_matches('/'))
                    .ok_or_else(|| {
                        probe_error(uri, format!("not under the claim's mount path {mount}"))
                    })?
                    .to_string(),
                None => path,
            };
            stat_blocking(uri, root.local.join(inside.trim_start_matches('/'))).await
        }
        _ => Err(probe_error(
            uri,
            format!("no size probe for `{scheme}://` URIs"),
        )),
    }
}

/// An S3 client for one bucket.
pub fn s3_store(
    bucket: &str,
    config: &S3Config,
) -> object_store::Result<object_store::aws::AmazonS3> {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(config.virtual_hosted_style);
    if let Some(endpoint) = &config.endpoint {
        b = b
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    b = b.with_region(
        config
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".to_string()),
    );
    if let Some(v) = &config.access_key_id {
        b = b.with_access_key_id(v);
    }
    if let Some(v) = &config.secret_access_key {
        b = b.with_secret_access_key(v);
    }
    if let Some(v) = &config.session_token {
        b = b.with_token(v);
    }
    b.build()
}

async fn object_or_prefix(uri: &str, store: &dyn ObjectStore, key: &str) -> Result<ProbedSize> {
    let trimmed = key.trim_end_matches('/');
    if !key.ends_with('/') && !key.is_empty() {
        let path = Path::parse(trimmed).map_err(|e| probe_error(uri, e))?;
        match store.head(&path).await {
            Ok(meta) => {
                return Ok(ProbedSize::Object {
                    size_bytes: meta.size,
                })
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(probe_error(uri, e)),
        }
    }
    let prefix = if trimmed.is_empty() {
        None
    } else {
        Some(Path::parse(trimmed).map_err(|e| probe_error(uri, e))?)
    };
    let (size_bytes, object_count) = store
        .list(prefix.as_ref())
        .map_err(|e| probe_error(uri, e))
        .try_fold((0u64, 0u64), |(s, n), meta| async move {
            Ok((s.saturating_add(meta.size), n + 1))
        })
        .await?;
    if object_count == 0 {
        return Err(probe_error(uri, "no object or prefix by that name"));
    }
    Ok(ProbedSize::Directory {
        size_bytes,
        object_count,
    })
}

async fn stat_blocking(uri: &str, path: PathBuf) -> Result<ProbedSize> {
    let owned = uri.to_string();
    tokio::task::spawn_blocking(move || {
        stat(&path).map_err(|e| probe_error(&owned, format!("{}: {e}", path.display())))
    })
    .await
    .map_err(|e| probe_error(uri, e))?
}

fn stat(path: &FsPath) -> std::io::Result<ProbedSize> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(ProbedSize::Object {
            size_bytes: meta.len(),
        });
    }
    let (mut size_bytes, mut object_count) = (0u64, 0u64);
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                size_bytes = size_bytes.saturating_add(entry.metadata()?.len());
                object_count += 1;
            }
        }
    }
    Ok(ProbedSize::Directory {
        size_bytes,
        object_count,
    })
}

/// Probe many URIs, a few at a time; each keeps its own result.
pub async fn probe_sizes(
    uris: &[String],
    config: &ProbeConfig,
) -> Vec<(String, Result<ProbedSize>)> {
    futures::stream::iter(uris.iter().cloned())
        .map(|uri| async move {
            let result = probe_size(&uri, config).await;
            (uri, result)
        })
        .buffered(8)
        .collect()
        .await
}
