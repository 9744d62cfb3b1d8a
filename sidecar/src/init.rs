//! `kfcache sidecar init`: put the task's inputs where it expects them before it starts.
//!
//! For each input of the [`TaskSpec`] that has a source:
//!
//! 1. Its destination is the declared path (Argo's input artifact `path`; KFP's
//!    `/tmp/inputs/NAME/data` when none is declared) inside the target directory. A name or
//!    path that would leave the target is refused before anything is written.
//! 2. The cached copy is used when its manifest is there, it is the origin's current version
//!    (ETag, else size and mtime; checked with one `head`), and every chunk and the whole
//!    object match their checksums while being read: a **hit**.
//! 3. Otherwise — not cached, stale, a chunk missing or corrupted — the input is read from its
//!    origin: a **miss**, with the reason.
//! 4. Upstream outputs (`task://PRODUCER/ARTIFACT`) are read from the producer's write-through
//!    copy in this run (see [`crate::outputs`]). They have no origin kfcache can read (Argo's
//!    artifact repository key is decided at run time); when they are not cached the file
//!    Argo's own executor placed is left as it is.
//! 5. A directory (an S3 prefix, a cached directory of objects) is materialised object by
//!    object under the destination, with the same rules per object.
//!
//! Every file is written to a temporary name in its directory and renamed into place, so the
//! task never sees partial data; a failed input removes its temporary file. The report counts
//! hits, misses, bytes from each side and seconds, for the `inputs` event.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use kfcache_parser::model::TASK_URI_SCHEME;
use kfcache_prefetcher::{ArtifactSource, CacheSink, Manifest, ObjectCache, SourceObject};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::fill::Fill;
use crate::spec::{contained_path, input_cache_uri, Identity, SpecInput, TaskSpec};

/// Bytes read from the origin per request when an input misses.
const ORIGIN_READ: u64 = 8 << 20;

/// Objects of a directory input materialised at the same time.
const DIRECTORY_CONCURRENCY: usize = 4;

/// What happened to one file of one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Served from the cache, verified.
    Hit { bytes: u64 },
    /// Read from the origin.
    Miss { bytes: u64, reason: String },
    /// An upstream output that is not cached: the file already at the path stays.
    Present { reason: String },
    /// Nothing done (no source, an unsupported source, an upstream output nobody placed).
    Skipped { reason: String },
}

/// One materialised file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileReport {
    /// The input's name.
    pub input: String,
    /// The URI read (cache or origin).
    pub uri: String,
    pub path: PathBuf,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What `init` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InitReport {
    pub files: Vec<FileReport>,
    pub hits: u32,
    pub misses: u32,
    pub bytes_from_cache: u64,
    pub bytes_from_origin: u64,
    pub seconds: f64,
}

impl InitReport {
    fn push(&mut self, file: FileReport) {
        match &file.outcome {
            Outcome::Hit { bytes } => {
                self.hits += 1;
                self.bytes_from_cache += bytes;
            }
            Outcome::Miss { bytes, .. } => {
                self.misses += 1;
                self.bytes_from_origin += bytes;
            }
            Outcome::Present { .. } | Outcome::Skipped { .. } => {}
        }
        self.files.push(file);
    }
}

/// Where an input goes: its declared path, else KFP's `/tmp/inputs/NAME/data`.
pub fn destination(target: &Path, input: &SpecInput) -> Result<PathBuf> {
    let name = input.name.as_str();
    let bad_name = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\\')
        || name.contains('\0');
    if bad_name {
        return Err(Error::PathEscape {
            name: name.to_string(),
            path: input.path.clone().unwrap_or_default(),
            target: target.to_path_buf(),
        });
    }
    match input.path.as_deref() {
        Some(path) => contained_path(target, name, path),
        None => contained_path(target, name, &format!("/tmp/inputs/{name}/data")),
    }
}

/// Materialises every input of `spec` under `target`.
pub async fn materialise<S: CacheSink + ?Sized + 'static>(
    cache: &ObjectCache<S>,
    origin: &dyn ArtifactSource,
    spec: &TaskSpec,
    identity: &Identity,
    target: &Path,
) -> Result<InitReport> {
    materialise_with(cache, origin, spec, identity, target, None).await
}

/// [`materialise`], filling the cache on demand with what misses when `fill` is given (see
/// [`crate::fill`]).
pub async fn materialise_with<S: CacheSink + ?Sized + 'static>(
    cache: &ObjectCache<S>,
    origin: &dyn ArtifactSource,
    spec: &TaskSpec,
    identity: &Identity,
    target: &Path,
    fill: Option<Fill>,
) -> Result<InitReport> {
    let started = Instant::now();
    // Refuse escaping names and paths before writing anything.
    let mut plan = Vec::new();
    for input in &spec.inputs {
        plan.push((input, destination(target, input)?));
    }
    let mut report = InitReport::default();
    for (input, path) in plan {
        let Some(source) = input.source.as_deref() else {
            report.push(FileReport {
                input: input.name.clone(),
                uri: String::new(),
                path,
                outcome: Outcome::Skipped {
                    reason: "the pipeline does not say where it comes from".to_string(),
                },
            });
            continue;
        };
        if !readable(source) {
            report.push(FileReport {
                input: input.name.clone(),
                uri: source.to_string(),
                path,
                outcome: Outcome::Skipped {
                    reason: "kfcache does not read this kind of source".to_string(),
                },
            });
            continue;
        }
        let cache_uri = input_cache_uri(identity, source);
        let upstream = source.starts_with(TASK_URI_SCHEME);
        let fill = fill.filter(|_| !upstream);
        for file in
            materialise_input(cache, origin, input, &cache_uri, upstream, &path, fill).await?
        {
            report.push(file);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn readable(source: &str) -> bool {
    const SCHEMES: &[&str] = &[
        "s3://", "s3a://", "gs://", "az://", "azure://", "abfs://", "abfss://", "http://",
        "https://", "file://", "pvc://",
    ];
    source.starts_with(TASK_URI_SCHEME) || SCHEMES.iter().any(|s| source.starts_with(s))
}

async fn materialise_input<S: CacheSink + ?Sized + 'static>(
    cache: &ObjectCache<S>,
    origin: &dyn ArtifactSource,
    input: &SpecInput,
    cache_uri: &str,
    upstream: bool,
    path: &Path,
    fill: Option<Fill>,
) -> Result<Vec<FileReport>> {
    let filler = fill.map(|fill| (cache, fill));
    let report = |uri: &str, path: &Path, outcome| FileReport {
        input: input.name.clone(),
        uri: uri.to_string(),
        path: path.to_path_buf(),
        outcome,
    };
    // A cache that cannot be read (a lost node, a hung cluster) is the same as an empty one:
    // the input comes from its origin, and the task does not fail for the cache's sake.
    let mut unreadable = None;
    let manifest = match cache.stat(cache_uri).await {
        Ok(manifest) => manifest,
        Err(error) => {
            tracing::warn!(uri = %cache_uri, %error, "cannot look the input up in the cache; reading it from its origin");
            unreadable = Some(format!("the cache cannot be read: {error}"));
            None
        }
    };
    if let Some(manifest) = manifest {
        let outcome = one_object(cache, origin, &manifest, None, upstream, path, fill).await?;
        return Ok(vec![report(cache_uri, path, outcome)]);
    }
    let not_cached = unreadable.as_deref().unwrap_or("not cached");
    if upstream {
        // A directory output written through object by object?
        let inside = match &unreadable {
            Some(_) => Vec::new(),
            None => cached_under(cache, cache_uri).await.unwrap_or_else(|error| {
                tracing::warn!(uri = %cache_uri, %error, "cannot list the input's objects in the cache");
                Vec::new()
            }),
        };
        if inside.is_empty() {
            let outcome = if path.exists() {
                Outcome::Present {
                    reason: format!("{not_cached}; the file Argo placed is used"),
                }
            } else {
                Outcome::Skipped {
                    reason: format!("an upstream output that is not placed ({not_cached})"),
                }
            };
            return Ok(vec![report(cache_uri, path, outcome)]);
        }
        let mut files = Vec::new();
        for manifest in inside {
            let rel = relative(cache_uri, &manifest.uri);
            let dest = contained_path(path, &input.name, &rel)?;
            let outcome = one_object(cache, origin, &manifest, None, true, &dest, None).await?;
            files.push(report(&manifest.uri, &dest, outcome));
        }
        return Ok(files);
    }
    // Not cached as one object: one object at the origin, or a directory of them.
    match origin.head(cache_uri).await {
        Ok(object) => {
            let outcome = from_origin(origin, &object, path, not_cached, filler).await?;
            Ok(vec![report(cache_uri, path, outcome)])
        }
        Err(head_error) => {
            let prefix = format!("{}/", cache_uri.trim_end_matches('/'));
            let objects = origin.list(&prefix).await.map_err(Error::cache(format!(
                "{cache_uri} is neither cached nor an object at its origin ({head_error}), and listing it as a directory failed"
            )))?;
            if objects.is_empty() {
                return Err(Error::Cache {
                    context: format!("input {:?} ({cache_uri}) is not cached", input.name),
                    source: Box::new(head_error),
                });
            }
            let uris: Vec<String> = objects.iter().map(|o| o.uri.clone()).collect();
            let mut not_cached = not_cached.to_string();
            let cached = match &unreadable {
                Some(_) => Default::default(),
                None => cache.stat_many(&uris).await.unwrap_or_else(|error| {
                    tracing::warn!(%prefix, %error, "cannot look the objects up in the cache; reading them from their origin");
                    not_cached = format!("the cache cannot be read: {error}");
                    Default::default()
                }),
            };
            let not_cached = not_cached.as_str();
            // Every destination is checked before anything is written.
            let mut planned = Vec::with_capacity(objects.len());
            for object in objects {
                let rel = relative(cache_uri, &object.uri);
                let dest = contained_path(path, &input.name, &rel)?;
                planned.push((object, dest));
            }
            // A few objects at a time: one request's latency hides behind another's bytes.
            let cached = &cached;
            futures::stream::iter(planned)
                .map(|(object, dest)| async move {
                    let outcome = match cached.get(&object.uri) {
                        Some(manifest) => {
                            one_object(cache, origin, manifest, Some(&object), false, &dest, fill)
                                .await?
                        }
                        None => from_origin(origin, &object, &dest, not_cached, filler).await?,
                    };
                    Ok(report(&object.uri, &dest, outcome))
                })
                .buffered(DIRECTORY_CONCURRENCY)
                .try_collect()
                .await
        }
    }
}

/// The manifests of objects cached under `uri/`.
async fn cached_under<S: CacheSink + ?Sized>(
    cache: &ObjectCache<S>,
    uri: &str,
) -> Result<Vec<Manifest>> {
    let prefix = format!("{}/", uri.trim_end_matches('/'));
    let all = cache.list().await.map_err(Error::cache(format!(
        "listing what is cached under {prefix}"
    )))?;
    Ok(all
        .into_iter()
        .filter(|m| m.uri.starts_with(&prefix))
        .collect())
}

fn relative(base: &str, uri: &str) -> String {
    uri.strip_prefix(base.trim_end_matches('/'))
        .unwrap_or(uri)
        .trim_start_matches('/')
        .to_string()
}

/// One object with a manifest: from the cache when current and intact, else from the origin.
async fn one_object<S: CacheSink + ?Sized + 'static>(
    cache: &ObjectCache<S>,
    origin: &dyn ArtifactSource,
    manifest: &Manifest,
    listed: Option<&SourceObject>,
    upstream: bool,
    path: &Path,
    fill: Option<Fill>,
) -> Result<Outcome> {
    let filler = fill.map(|fill| (cache, fill));
    // Is the cached copy the origin's current version?
    let current = if upstream {
        None
    } else {
        match listed {
            Some(object) => Some(object.clone()),
            None => match origin.head(&manifest.uri).await {
                Ok(object) => Some(object),
                Err(error) => {
                    tracing::warn!(uri = %manifest.uri, %error, "cannot check the origin; trusting the cached copy's checksums");
                    None
                }
            },
        }
    };
    if let Some(object) = &current {
        if !manifest.matches(object) {
            let reason = format!(
                "the cached copy is {} but the origin now has {}",
                manifest.version, object.version
            );
            return from_origin(origin, object, path, &reason, filler).await;
        }
    }
    create_parent(path).await?;
    match cache.download(&manifest.uri, path).await {
        Ok(read) => {
            if fill.is_some() {
                crate::fill::touch(cache, &manifest.uri).await;
            }
            Ok(Outcome::Hit { bytes: read.size })
        }
        Err(error) => {
            let reason = format!("the cached copy cannot be used: {error}");
            tracing::warn!(uri = %manifest.uri, %reason, "reading from the origin");
            if upstream {
                return Ok(if path.exists() {
                    Outcome::Present { reason }
                } else {
                    Outcome::Skipped { reason }
                });
            }
            let object = match current {
                Some(object) => object,
                None => origin
                    .head(&manifest.uri)
                    .await
                    .map_err(Error::cache(format!(
                        "{reason}; and reading the origin failed"
                    )))?,
            };
            from_origin(origin, &object, path, &reason, filler).await
        }
    }
}

async fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(Error::io("create directory", parent))?;
    }
    Ok(())
}

/// Copies `object` from its origin to `path` through a temporary file renamed into place;
/// with a filler, also writes it into the cache as it passes (see [`crate::fill`]).
async fn from_origin<S: CacheSink + ?Sized + 'static>(
    origin: &dyn ArtifactSource,
    object: &SourceObject,
    path: &Path,
    reason: &str,
    filler: Option<(&ObjectCache<S>, Fill)>,
) -> Result<Outcome> {
    create_parent(path).await?;
    let temp = temp_name(path);
    let begun = Instant::now();
    let mut writer = match filler {
        Some((cache, fill)) => begin_fill(cache, object, fill.budget).await,
        None => None,
    };
    if writer.is_some() {
        tracing::debug!(uri = %object.uri, seconds = begun.elapsed().as_secs_f64(), "made room and began the fill");
    }
    let copy_started = Instant::now();
    // Reads cover whole chunks so that each can go to the cache as it arrives.
    let read_size = match &writer {
        Some(writer) => {
            let chunk = writer.chunk_size();
            (ORIGIN_READ / chunk).max(1) * chunk
        }
        None => ORIGIN_READ,
    };
    let outcome = async {
        let mut file = tokio::fs::File::create(&temp)
            .await
            .map_err(Error::io("create", &temp))?;
        let mut offset = 0;
        while offset < object.size {
            let end = (offset + read_size).min(object.size);
            let bytes = origin
                .read_range(&object.uri, offset..end, Some(&object.version))
                .await
                .map_err(Error::cache(format!(
                    "reading {} from its origin",
                    object.uri
                )))?;
            if let Some(fill) = writer.as_mut() {
                if let Err(error) = fill.accept(bytes.clone()).await {
                    tracing::warn!(uri = %object.uri, %error, "filling the cache failed; reading on from the origin");
                    if let Some(fill) = writer.take() {
                        fill.abort().await;
                    }
                }
            }
            file.write_all(&bytes)
                .await
                .map_err(Error::io("write", &temp))?;
            offset = end;
        }
        file.sync_all().await.map_err(Error::io("sync", &temp))?;
        drop(file);
        tokio::fs::rename(&temp, path)
            .await
            .map_err(Error::io("rename into", path))?;
        Ok(Outcome::Miss {
            bytes: object.size,
            reason: reason.to_string(),
        })
    }
    .await;
    tracing::debug!(uri = %object.uri, size = object.size, seconds = copy_started.elapsed().as_secs_f64(), "copied from the origin");
    match (&outcome, writer) {
        (Ok(_), Some(fill)) => {
            let finishing = Instant::now();
            fill.finish().await;
            tracing::debug!(uri = %object.uri, seconds = finishing.elapsed().as_secs_f64(), "filled the cache");
        }
        (Err(_), Some(fill)) => fill.abort().await,
        _ => {}
    }
    if outcome.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    outcome
}

/// A write into the cache that follows a copy from the origin: the put of one read's chunks
/// runs while the next read is under way.
struct FillWriter<S: CacheSink + ?Sized + 'static> {
    cache: ObjectCache<S>,
    writer: kfcache_prefetcher::ObjectWriter<S>,
    in_flight: Option<tokio::task::JoinHandle<kfcache_prefetcher::Result<()>>>,
}

async fn begin_fill<S: CacheSink + ?Sized + 'static>(
    cache: &ObjectCache<S>,
    object: &SourceObject,
    budget: u64,
) -> Option<FillWriter<S>> {
    let room = match crate::fill::make_room(cache, &object.uri, object.size, budget).await {
        Ok(room) => room,
        Err(error) => {
            tracing::warn!(uri = %object.uri, %error, "cannot make room in the cache; not filling");
            return None;
        }
    };
    if !room.fits {
        tracing::info!(uri = %object.uri, size = object.size, budget, "larger than the budget; not filling");
        return None;
    }
    match cache
        .begin(&object.uri, object.version.clone(), object.size)
        .await
    {
        Ok(writer) => Some(FillWriter {
            cache: cache.clone(),
            writer,
            in_flight: None,
        }),
        Err(error) => {
            tracing::warn!(uri = %object.uri, %error, "cannot start filling the cache");
            None
        }
    }
}

impl<S: CacheSink + ?Sized + 'static> FillWriter<S> {
    fn chunk_size(&self) -> u64 {
        self.cache.config().chunk_size.max(1)
    }

    /// Takes the next whole chunks (the last may be short) and puts them in the background.
    async fn accept(&mut self, data: Bytes) -> kfcache_prefetcher::Result<()> {
        self.wait().await?;
        let chunk = usize::try_from(self.chunk_size()).unwrap_or(usize::MAX);
        let mut entries = Vec::new();
        let mut start = 0;
        while start < data.len() {
            let end = (start + chunk).min(data.len());
            entries.push(self.writer.accept(data.slice(start..end))?);
            start = end;
        }
        let putter = self.writer.putter();
        self.in_flight = Some(tokio::spawn(async move { putter.put(entries).await }));
        Ok(())
    }

    async fn wait(&mut self) -> kfcache_prefetcher::Result<()> {
        match self.in_flight.take() {
            Some(handle) => handle.await.unwrap_or_else(|join| {
                Err(kfcache_prefetcher::Error::Config(format!(
                    "a chunk write stopped: {join}"
                )))
            }),
            None => Ok(()),
        }
    }

    /// Publishes the manifest once every chunk is stored.
    async fn finish(mut self) {
        let uri = self.writer.uri().to_string();
        if let Err(error) = self.wait().await {
            tracing::warn!(%uri, %error, "filling the cache failed");
            self.writer.abort().await;
            return;
        }
        match self.writer.finish().await {
            Ok(_) => crate::fill::touch(&self.cache, &uri).await,
            Err(error) => tracing::warn!(%uri, %error, "filling the cache failed"),
        }
    }

    async fn abort(mut self) {
        let _ = self.wait().await;
        self.writer.abort().await;
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".to_string());
    path.with_file_name(format!(
        ".{name}.kfcache-part-{:08x}",
        rand::random::<u32>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_default_to_kfcp_paths_and_refuse_escapes() {
        let target = Path::new("/t");
        let input = |name: &str, path: Option<&str>| SpecInput {
            name: name.to_string(),
            source: Some("s3://b/k".to_string()),
            path: path.map(str::to_string),
        };
        assert_eq!(
            destination(target, &input("data", None)).expect("default"),
            Path::new("/t/tmp/inputs/data/data")
        );
        assert_eq!(
            destination(target, &input("data", Some("/data/train.csv"))).expect("declared"),
            Path::new("/t/data/train.csv")
        );
        for (name, path) in [("../x", None), ("a/b", None), ("ok", Some("/a/../../x"))] {
            assert!(
                matches!(
                    destination(target, &input(name, path)),
                    Err(Error::PathEscape { .. })
                ),
                "{name} {path:?}"
            );
        }
    }
}
