//! The artifact-source seam: where staged bytes come from.
//!
//! [`ArtifactSource`] is what staging needs of a source: `head` (size and version), ranged
//! reads, and listing under a prefix. [`ObjectStoreSource`] implements it over object_store
//! for every scheme kfcache reads:
//!
//! | URI | store |
//! |---|---|
//! | `s3://BUCKET/KEY` | `AmazonS3` (endpoint, region, path-style and plain HTTP for local servers; credentials from the usual AWS chain) |
//! | `gs://BUCKET/KEY` | `GoogleCloudStorage` (credentials from the environment) |
//! | `az://CONTAINER/KEY` | `MicrosoftAzure` (account and credentials from the environment) |
//! | `http(s)://HOST/PATH` | `HttpStore` (ranged GET; listing needs WebDAV) |
//! | `file:///PATH` | `LocalFileSystem` |
//! | `pvc://CLAIM/PATH` | `LocalFileSystem` rooted at the claim's mount directory (NFS) |
//!
//! object_store is used because it is the maintained Rust interface for exactly these
//! stores (Apache Arrow project), with ranged and conditional reads, retries with backoff and
//! the AWS credential chain, so every scheme shares one code path and one conformance suite.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, RetryConfig};

use crate::error::{Error, Result};
use crate::manifest::SourceVersion;

/// Size and version of one source object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceObject {
    /// The object's full URI (for listings: the URI of each object found).
    pub uri: String,
    pub size: u64,
    pub version: SourceVersion,
    /// What the origin says about the object besides its bytes, where its HEAD tells (S3);
    /// empty for listings and file sources.
    pub attributes: ObjectAttributes,
}

/// The headers an object store keeps with an object: what a client that reads the object
/// back expects to see again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectAttributes {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    /// User metadata (`x-amz-meta-NAME` on S3), by NAME.
    pub metadata: BTreeMap<String, String>,
}

impl ObjectAttributes {
    fn from_store(attributes: &object_store::Attributes) -> ObjectAttributes {
        use object_store::Attribute;
        let mut out = ObjectAttributes::default();
        for (attribute, value) in attributes {
            let value = value.as_ref().to_string();
            match attribute {
                Attribute::ContentType => out.content_type = Some(value),
                Attribute::ContentEncoding => out.content_encoding = Some(value),
                Attribute::ContentDisposition => out.content_disposition = Some(value),
                Attribute::ContentLanguage => out.content_language = Some(value),
                Attribute::CacheControl => out.cache_control = Some(value),
                Attribute::Metadata(name) => {
                    out.metadata.insert(name.to_string(), value);
                }
                _ => {}
            }
        }
        out
    }
}

/// Where artifacts are read from.
#[async_trait]
pub trait ArtifactSource: Send + Sync + std::fmt::Debug {
    /// Size and version of the object at `uri`.
    async fn head(&self, uri: &str) -> Result<SourceObject>;

    /// Bytes `range` of the object. With `version`, the read fails with
    /// [`Error::SourceChanged`] if the object is no longer that version (where the store can
    /// tell: by ETag).
    async fn read_range(
        &self,
        uri: &str,
        range: Range<u64>,
        version: Option<&SourceVersion>,
    ) -> Result<Bytes>;

    /// Every object whose URI lies under `prefix` (a directory or key prefix, matched at
    /// `/` boundaries), sorted by URI.
    async fn list(&self, prefix: &str) -> Result<Vec<SourceObject>>;

    /// The whole contents of `objects` (as listed or headed), in order, each at its version
    /// ([`Error::SourceChanged`] where the source can tell it is no longer that version).
    /// Meant for many small objects: the default reads them one by one, concurrently; a
    /// source whose reads are blocking calls reads the whole group in one.
    async fn read_objects(&self, objects: &[SourceObject]) -> Result<Vec<Bytes>> {
        futures::future::try_join_all(
            objects
                .iter()
                .map(|object| self.read_range(&object.uri, 0..object.size, Some(&object.version))),
        )
        .await
    }
}

/// How [`ObjectStoreSource`] builds its stores. Credentials are not here: they come from the
/// standard environment chain of each cloud.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceConfig {
    /// S3 endpoint (e.g. `http://127.0.0.1:9000` for a local server); path-style addressing
    /// is used with it.
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    /// Allow plain HTTP to the S3 endpoint; defaults to true when the endpoint is `http://`.
    pub s3_allow_http: Option<bool>,
    /// PVC claim name → the local directory where it is mounted.
    pub pvc_roots: BTreeMap<String, PathBuf>,
    /// Limit for connecting to a network store (object_store's default, 5 s, when unset).
    pub connect_timeout: Option<Duration>,
    /// Limit for one request from its start to the end of its response, so a server that
    /// hangs fails the request, which is then retried (object_store's default, 30 s, when
    /// unset).
    pub request_timeout: Option<Duration>,
    /// Retries of a failed network request (5xx, refused or dropped connection, timeout of a
    /// read), and the time after which retrying stops (object_store's defaults, 10 and
    /// 3 minutes, when unset). A request is thus tried at most `1 + max_retries` times.
    pub max_retries: Option<usize>,
    pub retry_timeout: Option<Duration>,
}

impl SourceConfig {
    fn client_options(&self) -> ClientOptions {
        let mut options = ClientOptions::new();
        if let Some(timeout) = self.connect_timeout {
            options = options.with_connect_timeout(timeout);
        }
        if let Some(timeout) = self.request_timeout {
            options = options.with_timeout(timeout);
        }
        options
    }

    fn retry(&self) -> RetryConfig {
        let mut retry = RetryConfig::default();
        if let Some(max_retries) = self.max_retries {
            retry.max_retries = max_retries;
        }
        if let Some(timeout) = self.retry_timeout {
            retry.retry_timeout = timeout;
        }
        retry
    }
}

/// A parsed artifact URI: which store, and the path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    /// `scheme://authority`, the store's identity and the URI prefix of its objects.
    base: String,
    scheme: String,
    authority: String,
    path: StorePath,
}

fn invalid(uri: &str, reason: impl Into<String>) -> Error {
    Error::InvalidUri {
        uri: uri.to_string(),
        reason: reason.into(),
    }
}

fn parse_path(uri: &str, path: &str) -> Result<StorePath> {
    StorePath::from_url_path(path).map_err(|error| invalid(uri, error.to_string()))
}

fn parse_location(uri: &str) -> Result<Location> {
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| invalid(uri, "expected SCHEME://..."))?;
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "file" => {
            let path = rest
                .strip_prefix('/')
                .ok_or_else(|| invalid(uri, "file URIs need an absolute path: file:///PATH"))?;
            Ok(Location {
                base: "file://".to_string(),
                scheme,
                authority: String::new(),
                path: parse_path(uri, path)?,
            })
        }
        "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "pvc" | "http" | "https" => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            if authority.is_empty() {
                return Err(invalid(uri, "missing bucket, container, claim or host"));
            }
            Ok(Location {
                base: format!("{scheme}://{authority}"),
                scheme,
                authority: authority.to_string(),
                path: parse_path(uri, path)?,
            })
        }
        other => Err(invalid(
            uri,
            format!("unsupported scheme {other:?} (s3, gs, az, http, https, file, pvc)"),
        )),
    }
}

/// [`ArtifactSource`] over object_store; one store per bucket / container / claim / host,
/// built on first use and reused.
#[derive(Debug, Default)]
pub struct ObjectStoreSource {
    config: SourceConfig,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl ObjectStoreSource {
    pub fn new(config: SourceConfig) -> Self {
        ObjectStoreSource {
            config,
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// Serves URIs under `base` (`scheme://authority`, e.g. `mem://bucket`) from `store`:
    /// for tests with object_store's in-memory store, or for a store built by the caller.
    pub fn register(&self, base: &str, store: Arc<dyn ObjectStore>) {
        self.stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(base.trim_end_matches('/').to_string(), store);
    }

    fn store_for(&self, uri: &str) -> Result<(Location, Arc<dyn ObjectStore>)> {
        let location = match parse_location(uri) {
            Ok(location) => location,
            Err(error) => {
                // A registered store may use a scheme of its own (`mem://`).
                let stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
                for (base, store) in stores.iter() {
                    if let Some(rest) = uri.strip_prefix(base.as_str()) {
                        let path = rest.strip_prefix('/').unwrap_or(rest);
                        let (scheme, authority) = base.split_once("://").unwrap_or((base, ""));
                        return Ok((
                            Location {
                                base: base.clone(),
                                scheme: scheme.to_string(),
                                authority: authority.to_string(),
                                path: parse_path(uri, path)?,
                            },
                            store.clone(),
                        ));
                    }
                }
                return Err(error);
            }
        };
        if let Some(store) = self
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&location.base)
        {
            return Ok((location, store.clone()));
        }
        let store = self.build(uri, &location)?;
        self.stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(location.base.clone())
            .or_insert_with(|| store.clone());
        Ok((location, store))
    }

    fn build(&self, uri: &str, location: &Location) -> Result<Arc<dyn ObjectStore>> {
        let config_error = |error: object_store::Error| Error::SourceConfig {
            uri: uri.to_string(),
            reason: error.to_string(),
        };
        let store: Arc<dyn ObjectStore> = match location.scheme.as_str() {
            "s3" | "s3a" => {
                let mut builder = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&location.authority)
                    .with_client_options(self.config.client_options())
                    .with_retry(self.config.retry());
                if let Some(region) = &self.config.s3_region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = &self.config.s3_endpoint {
                    let allow_http = self
                        .config
                        .s3_allow_http
                        .unwrap_or_else(|| endpoint.starts_with("http://"));
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false)
                        .with_allow_http(allow_http);
                } else if let Some(allow_http) = self.config.s3_allow_http {
                    builder = builder.with_allow_http(allow_http);
                }
                Arc::new(builder.build().map_err(config_error)?)
            }
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&location.authority)
                    .with_client_options(self.config.client_options())
                    .with_retry(self.config.retry())
                    .build()
                    .map_err(config_error)?,
            ),
            "az" | "azure" | "abfs" | "abfss" => {
                // abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH names the account too.
                let (container, account) = match location.authority.split_once('@') {
                    Some((container, host)) => {
                        (container, host.split('.').next().map(str::to_string))
                    }
                    None => (location.authority.as_str(), None),
                };
                let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
                    .with_client_options(self.config.client_options())
                    .with_retry(self.config.retry());
                if let Some(account) = account {
                    builder = builder.with_account(account);
                }
                Arc::new(builder.build().map_err(config_error)?)
            }
            "http" | "https" => Arc::new(
                object_store::http::HttpBuilder::new()
                    .with_url(location.base.clone())
                    .with_client_options(self.config.client_options())
                    .with_retry(self.config.retry())
                    .build()
                    .map_err(config_error)?,
            ),
            "file" => Arc::new(object_store::local::LocalFileSystem::new()),
            "pvc" => {
                let root = self
                    .config
                    .pvc_roots
                    .get(&location.authority)
                    .ok_or_else(|| Error::SourceConfig {
                        uri: uri.to_string(),
                        reason: format!(
                            "no mount root configured for PVC claim {:?} (configured: {})",
                            location.authority,
                            if self.config.pvc_roots.is_empty() {
                                "none".to_string()
                            } else {
                                self.config
                                    .pvc_roots
                                    .keys()
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            }
                        ),
                    })?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(root)
                        .map_err(config_error)?,
                )
            }
            other => {
                return Err(invalid(uri, format!("unsupported scheme {other:?}")));
            }
        };
        Ok(store)
    }

    fn object_uri(location: &Location, path: &StorePath) -> String {
        format!("{}/{}", location.base, path)
    }

    /// Where a `file://` or `pvc://` URI lies on this machine; `None` for other stores.
    fn local_path(&self, uri: &str) -> Result<Option<PathBuf>> {
        let Ok(location) = parse_location(uri) else {
            return Ok(None); // a registered store of its own scheme
        };
        match location.scheme.as_str() {
            "file" => Ok(Some(PathBuf::from(format!("/{}", location.path)))),
            "pvc" => {
                // The same error as `store_for` when the claim has no mount root.
                self.store_for(uri)?;
                Ok(self
                    .config
                    .pvc_roots
                    .get(&location.authority)
                    .map(|root| root.join(location.path.as_ref())))
            }
            _ => Ok(None),
        }
    }
}

/// Reads local files whole, in one blocking call for the group: a read through
/// object_store's local store hands off to tokio's blocking threads twice per file, which
/// for small files costs more than the read. A file whose size or modification time is no
/// longer the listed one has changed.
fn read_local_files(files: Vec<(PathBuf, SourceObject)>) -> Result<Vec<Bytes>> {
    use std::io::Read;
    files
        .into_iter()
        .map(|(path, object)| {
            let io = |op: &'static str| {
                let path = path.display().to_string();
                move |source| Error::Io { op, path, source }
            };
            let mut file = std::fs::File::open(&path).map_err(|error| {
                if error.kind() == std::io::ErrorKind::NotFound {
                    Error::SourceNotFound {
                        uri: object.uri.clone(),
                        source: Box::new(object_store::Error::NotFound {
                            path: path.display().to_string(),
                            source: Box::new(error),
                        }),
                    }
                } else {
                    io("open")(error)
                }
            })?;
            let metadata = file.metadata().map_err(io("stat"))?;
            let modified = metadata
                .modified()
                .ok()
                .map(chrono::DateTime::<chrono::Utc>::from);
            let unchanged = metadata.len() == object.size
                && object
                    .version
                    .last_modified
                    .map_or(true, |listed| Some(listed) == modified);
            if !unchanged {
                return Err(Error::SourceChanged {
                    uri: object.uri.clone(),
                    version: object.version.to_string(),
                });
            }
            let mut data = Vec::with_capacity(usize::try_from(object.size).unwrap_or(0));
            file.read_to_end(&mut data).map_err(io("read"))?;
            if data.len() as u64 != object.size {
                return Err(Error::ShortRead {
                    uri: object.uri.clone(),
                    start: 0,
                    end: object.size,
                    got: data.len(),
                });
            }
            Ok(Bytes::from(data))
        })
        .collect()
}

fn version_of(meta: &object_store::ObjectMeta) -> SourceVersion {
    SourceVersion {
        etag: meta.e_tag.clone(),
        size: meta.size,
        last_modified: Some(meta.last_modified),
    }
}

#[async_trait]
impl ArtifactSource for ObjectStoreSource {
    async fn head(&self, uri: &str) -> Result<SourceObject> {
        let (location, store) = self.store_for(uri)?;
        // `head` is this request with its attributes dropped: one HEAD either way.
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let result = store
            .get_opts(&location.path, options)
            .await
            .map_err(|error| Error::source("head", uri, error))?;
        Ok(SourceObject {
            uri: uri.to_string(),
            size: result.meta.size,
            version: version_of(&result.meta),
            attributes: ObjectAttributes::from_store(&result.attributes),
        })
    }

    async fn read_range(
        &self,
        uri: &str,
        range: Range<u64>,
        version: Option<&SourceVersion>,
    ) -> Result<Bytes> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let (location, store) = self.store_for(uri)?;
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            if_match: version.and_then(|v| v.etag.clone()),
            ..GetOptions::default()
        };
        let result = store
            .get_opts(&location.path, options)
            .await
            .map_err(|error| match (error, version) {
                (object_store::Error::Precondition { .. }, Some(version)) => Error::SourceChanged {
                    uri: uri.to_string(),
                    version: version.to_string(),
                },
                (error, _) => Error::source("read", uri, error),
            })?;
        let bytes = result
            .bytes()
            .await
            .map_err(|error| Error::source("read", uri, error))?;
        let want = range.end - range.start;
        if bytes.len() as u64 != want {
            return Err(Error::ShortRead {
                uri: uri.to_string(),
                start: range.start,
                end: range.end,
                got: bytes.len(),
            });
        }
        Ok(bytes)
    }

    async fn read_objects(&self, objects: &[SourceObject]) -> Result<Vec<Bytes>> {
        let mut files = Vec::with_capacity(objects.len());
        for object in objects {
            match self.local_path(&object.uri)? {
                Some(path) => files.push((path, object.clone())),
                None => {
                    return futures::future::try_join_all(objects.iter().map(|object| {
                        self.read_range(&object.uri, 0..object.size, Some(&object.version))
                    }))
                    .await
                }
            }
        }
        tokio::task::spawn_blocking(move || read_local_files(files))
            .await
            .map_err(|error| Error::Task {
                what: "reading local files",
                message: error.to_string(),
            })?
    }

    async fn list(&self, prefix: &str) -> Result<Vec<SourceObject>> {
        let (location, store) = self.store_for(prefix)?;
        let path = (!location.path.as_ref().is_empty()).then_some(&location.path);
        let metas: Vec<object_store::ObjectMeta> = store
            .list(path)
            .try_collect()
            .await
            .map_err(|error| Error::source("list", prefix, error))?;
        let mut objects: Vec<SourceObject> = metas
            .iter()
            .map(|meta| SourceObject {
                uri: Self::object_uri(&location, &meta.location),
                size: meta.size,
                version: version_of(meta),
                attributes: ObjectAttributes::default(),
            })
            .collect();
        objects.sort_by(|a, b| a.uri.cmp(&b.uri));
        Ok(objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        let s3 = parse_location("s3://bucket/a/b.bin").expect("s3");
        assert_eq!(
            (s3.base.as_str(), s3.path.as_ref()),
            ("s3://bucket", "a/b.bin")
        );
        let file = parse_location("file:///tmp/x%20y").expect("file");
        assert_eq!(
            (file.base.as_str(), file.path.as_ref()),
            ("file://", "tmp/x y")
        );
        let pvc = parse_location("pvc://data/train/shard-0").expect("pvc");
        assert_eq!(
            (pvc.authority.as_str(), pvc.path.as_ref()),
            ("data", "train/shard-0")
        );
        assert!(parse_location("s3:///key").is_err());
        assert!(parse_location("file://relative").is_err());
        assert!(parse_location("ftp://host/x").is_err());
        assert!(parse_location("no-scheme").is_err());
        // A PVC path cannot climb out of its mount root.
        assert!(parse_location("pvc://data/../etc/passwd").is_err());
    }

    #[test]
    fn unknown_claim_is_named() {
        let source = ObjectStoreSource::new(SourceConfig::default());
        let error = source.store_for("pvc://missing/x").expect_err("no root");
        assert!(error.to_string().contains("\"missing\""), "{error}");
    }
}
