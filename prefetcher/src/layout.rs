//! The cache layout: how an object becomes chunks, a manifest and a write record in a
//! [`CacheSink`], and how it is read back and trusted.
//!
//! Keys, under the namespace `NS` (a tenant prefix inside the cluster cache) and `ID` (the
//! xxh3-128 of the source URI, so that no URI is a key prefix of another):
//!
//! | space | key | value |
//! |---|---|---|
//! | meta | `NS/m/ID` | [`Manifest`] (JSON) |
//! | meta | `NS/w/ID/GEN` | [`WriteRecord`] (JSON) of write `GEN` |
//! | chunks | `NS/c/ID/GEN/INDEX` | the bytes of chunk `INDEX` |
//!
//! A write takes a fresh random generation `GEN`, records it (state `writing`), puts its
//! chunks, puts the manifest (last: a reader never sees a half-written object), marks its
//! record `committed`, then sweeps the object (reading the records before the current
//! manifest): every committed record other than the current manifest's generation, and every `writing` record older than `stale_after` (an interrupted
//! write), loses its chunks and its record. Because chunk keys carry the generation, two
//! writers of the same URI never mix chunks; whichever manifest lands last wins, and the
//! loser's chunks are removed by whichever of the two sweeps last (each sweeps after marking
//! its own record, so the later one always sees the other's record committed).
//!
//! A reader that finds a chunk missing re-reads the manifest: if a newer write replaced the
//! object meanwhile, it starts over on the new generation.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::manifest::{
    checksum, chunk_count, chunk_len, Manifest, ObjectHasher, SourceVersion, WriteRecord,
    WriteState, CHECKSUM_ALGORITHM, MANIFEST_FORMAT, MAX_RECORD_CHUNKS,
};
use crate::sink::{CacheSink, Space};

/// Default chunk size: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

/// Largest chunk size accepted (one chunk is one Ignite value).
pub const MAX_CHUNK_SIZE: u64 = 512 << 20;

/// How many times a read starts over when the object is replaced under it.
const READ_ATTEMPTS: usize = 3;

/// Settings of an [`ObjectCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutConfig {
    /// Tenant prefix of every key (no `/`).
    pub namespace: String,
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// A write still `writing` after this long is taken as interrupted and swept.
    pub stale_after: Duration,
    /// Bytes fetched per `getAll` when reading.
    pub read_batch_bytes: u64,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        LayoutConfig {
            namespace: "default".to_string(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            stale_after: Duration::from_secs(3600),
            read_batch_bytes: 32 << 20,
        }
    }
}

/// Chunked, checksummed objects in a [`CacheSink`]. Cheap to clone.
#[derive(Debug)]
pub struct ObjectCache<S: CacheSink + ?Sized> {
    sink: Arc<S>,
    config: LayoutConfig,
}

impl<S: CacheSink + ?Sized> Clone for ObjectCache<S> {
    fn clone(&self) -> Self {
        ObjectCache {
            sink: self.sink.clone(),
            config: self.config.clone(),
        }
    }
}

/// The id of a URI in keys: 32 hex digits.
fn object_id(uri: &str) -> String {
    checksum(uri.as_bytes())
}

/// A random 64-bit generation, 16 hex digits. `RandomState` is seeded from the operating
/// system's randomness per process; the clock and a counter keep generations of one process
/// distinct.
fn new_generation() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

impl<S: CacheSink + ?Sized> ObjectCache<S> {
    /// Checks the configuration.
    pub fn new(sink: Arc<S>, config: LayoutConfig) -> Result<Self> {
        if config.namespace.is_empty() || config.namespace.contains('/') {
            return Err(Error::Config(format!(
                "namespace {:?} must be non-empty and contain no '/'",
                config.namespace
            )));
        }
        if config.chunk_size == 0 || config.chunk_size > MAX_CHUNK_SIZE {
            return Err(Error::Config(format!(
                "chunk size {} must be between 1 byte and {MAX_CHUNK_SIZE} bytes",
                config.chunk_size
            )));
        }
        Ok(ObjectCache { sink, config })
    }

    pub fn sink(&self) -> &Arc<S> {
        &self.sink
    }

    pub fn config(&self) -> &LayoutConfig {
        &self.config
    }

    fn manifest_key(&self, id: &str) -> String {
        format!("{}/m/{id}", self.config.namespace)
    }

    fn record_prefix(&self, id: &str) -> String {
        format!("{}/w/{id}/", self.config.namespace)
    }

    fn chunk_key_of(&self, id: &str, generation: &str, index: u64) -> String {
        format!("{}/c/{id}/{generation}/{index}", self.config.namespace)
    }

    /// Removes chunks `0..count` of one write, 1024 keys per request, without ever holding
    /// more than one batch of keys.
    async fn remove_chunks(&self, id: &str, generation: &str, count: u64) -> Result<()> {
        let mut first = 0;
        while first < count {
            let last = count.min(first + 1024);
            let keys: Vec<String> = (first..last)
                .map(|index| self.chunk_key_of(id, generation, index))
                .collect();
            self.sink.remove_all(Space::Chunks, &keys).await?;
            first = last;
        }
        Ok(())
    }

    /// The key of chunk `index` of the object `manifest` describes.
    pub fn chunk_key(&self, manifest: &Manifest, index: u64) -> String {
        self.chunk_key_of(&object_id(&manifest.uri), &manifest.generation, index)
    }

    /// The manifest of `uri`, if it is cached.
    pub async fn stat(&self, uri: &str) -> Result<Option<Manifest>> {
        let key = self.manifest_key(&object_id(uri));
        match self.sink.get(Space::Meta, &key).await? {
            Some(bytes) => Manifest::decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Manifests of every cached object of the namespace, sorted by URI.
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let prefix = format!("{}/m/", self.config.namespace);
        let keys = self.sink.keys_with_prefix(Space::Meta, &prefix).await?;
        let mut manifests = Vec::with_capacity(keys.len());
        for batch in keys.chunks(256) {
            let values = self.sink.get_all(Space::Meta, batch).await?;
            for key in batch {
                // A manifest evicted between listing and reading is simply gone.
                if let Some(bytes) = values.get(key) {
                    manifests.push(Manifest::decode(key, bytes)?);
                }
            }
        }
        manifests.sort_by(|a, b| a.uri.cmp(&b.uri));
        Ok(manifests)
    }

    /// Starts a write of `uri` (`size` bytes of source `version`). Nothing is visible to
    /// readers until [`ObjectWriter::finish`].
    pub async fn begin(
        &self,
        uri: &str,
        version: SourceVersion,
        size: u64,
    ) -> Result<ObjectWriter<S>> {
        let chunks = chunk_count(size, self.config.chunk_size);
        if chunks > MAX_RECORD_CHUNKS {
            return Err(Error::Config(format!(
                "{uri}: {size} bytes in chunks of {} would be {chunks} chunks (at most {MAX_RECORD_CHUNKS}); use larger chunks",
                self.config.chunk_size
            )));
        }
        let id = object_id(uri);
        let generation = new_generation();
        let record = WriteRecord {
            uri: uri.to_string(),
            generation: generation.clone(),
            chunk_count: chunks,
            state: WriteState::Writing,
            started_at: Utc::now(),
        };
        let record_key = format!("{}{generation}", self.record_prefix(&id));
        self.put_record(&record_key, &record).await?;
        Ok(ObjectWriter {
            cache: self.clone(),
            id,
            record_key,
            record,
            version,
            size,
            next_index: 0,
            written: 0,
            chunk_checksums: Vec::new(),
            hasher: ObjectHasher::default(),
        })
    }

    async fn put_record(&self, key: &str, record: &WriteRecord) -> Result<()> {
        let value = serde_json::to_vec(record).map_err(|source| Error::BadMetadata {
            key: key.to_string(),
            what: "write record",
            source,
        })?;
        self.sink.put(Space::Meta, key, Bytes::from(value)).await
    }

    /// Stages `data` as `uri` in one call (chunks written with `putAll` in batches).
    pub async fn put_bytes(
        &self,
        uri: &str,
        version: SourceVersion,
        data: Bytes,
    ) -> Result<Manifest> {
        let mut writer = self.begin(uri, version, data.len() as u64).await?;
        let chunk_size = usize::try_from(self.config.chunk_size).unwrap_or(usize::MAX);
        let batch = (self.config.read_batch_bytes / self.config.chunk_size).max(1) as usize;
        let mut entries = Vec::new();
        let mut offset = 0usize;
        while offset < data.len() {
            let end = offset.saturating_add(chunk_size).min(data.len());
            entries.push(writer.accept(data.slice(offset..end))?);
            offset = end;
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

    /// Removes chunks and records of writes of the object that are no longer needed.
    async fn sweep(&self, id: &str) -> Result<()> {
        // Records first, the current manifest second: a record seen `committed` had its
        // manifest put before it was read, so if another manifest is current afterwards, that
        // write has been replaced for good (each write puts its manifest once). Reading the
        // manifest first could see a manifest that a write committing meanwhile replaces,
        // and remove the chunks of the write that ends up current.
        let keys = self
            .sink
            .keys_with_prefix(Space::Meta, &self.record_prefix(id))
            .await?;
        let records = self.sink.get_all(Space::Meta, &keys).await?;
        let current = self
            .sink
            .get(Space::Meta, &self.manifest_key(id))
            .await?
            .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
            .map(|manifest| manifest.generation);
        let now = Utc::now();
        let stale_after =
            chrono::Duration::from_std(self.config.stale_after).unwrap_or(chrono::Duration::MAX);
        for (key, bytes) in records {
            let record = match WriteRecord::decode(&key, &bytes) {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!("removing undecodable write record: {error}");
                    self.sink.remove_all(Space::Meta, &[key]).await?;
                    continue;
                }
            };
            if current.as_deref() == Some(record.generation.as_str()) {
                continue;
            }
            let finished = record.state == WriteState::Committed;
            let stale = now.signed_duration_since(record.started_at) >= stale_after;
            if finished || stale {
                self.remove_chunks(id, &record.generation, record.chunk_count)
                    .await?;
                self.sink.remove_all(Space::Meta, &[key]).await?;
            }
        }
        Ok(())
    }

    /// Removes `uri` from the cache; false if it was not cached.
    pub async fn evict(&self, uri: &str) -> Result<bool> {
        let id = object_id(uri);
        let key = self.manifest_key(&id);
        let found = self.sink.get(Space::Meta, &key).await?.is_some();
        self.sink.remove_all(Space::Meta, &[key]).await?;
        // With no manifest, every committed write of the object is swept.
        self.sweep(&id).await?;
        Ok(found)
    }

    /// Removes every object of the namespace, with all write records and chunks; returns how
    /// many objects were cached. Writes in progress lose their records too and fail to find
    /// their chunks later only if they are read; run it when nothing stages.
    pub async fn clear(&self) -> Result<usize> {
        let prefix = format!("{}/", self.config.namespace);
        let keys = self.sink.keys_with_prefix(Space::Meta, &prefix).await?;
        let mut objects = 0;
        for batch in keys.chunks(256) {
            let values = self.sink.get_all(Space::Meta, batch).await?;
            let mut writes = std::collections::BTreeSet::new();
            for (key, bytes) in &values {
                if key.starts_with(&format!("{prefix}m/")) {
                    objects += 1;
                    if let Ok(manifest) = Manifest::decode(key, bytes) {
                        writes.insert((
                            object_id(&manifest.uri),
                            manifest.generation,
                            manifest.chunk_count,
                        ));
                    }
                } else if let Ok(record) = WriteRecord::decode(key, bytes) {
                    writes.insert((
                        object_id(&record.uri),
                        record.generation,
                        record.chunk_count,
                    ));
                }
            }
            for (id, generation, count) in writes {
                self.remove_chunks(&id, &generation, count).await?;
            }
            self.sink.remove_all(Space::Meta, batch).await?;
        }
        Ok(objects)
    }

    /// Reads chunks `first..first+count` of `manifest`, verified. `Ok(None)` when a chunk is
    /// missing because the object was replaced or evicted meanwhile.
    async fn read_chunks(&self, manifest: &Manifest, first: u64, count: u64) -> Result<Vec<Bytes>> {
        let id = object_id(&manifest.uri);
        let keys: Vec<String> = (first..first + count)
            .map(|index| self.chunk_key_of(&id, &manifest.generation, index))
            .collect();
        let mut values = self.sink.get_all(Space::Chunks, &keys).await?;
        let mut chunks = Vec::with_capacity(keys.len());
        for (offset, key) in keys.iter().enumerate() {
            let index = first + offset as u64;
            let value = values.remove(key).ok_or_else(|| Error::ChunkMissing {
                uri: manifest.uri.clone(),
                chunk: index,
                key: key.clone(),
            })?;
            let expected = manifest
                .chunk_checksums
                .get(index as usize)
                .cloned()
                .unwrap_or_default();
            let actual = checksum(&value);
            if actual != expected || value.len() as u64 != manifest.chunk_len(index) {
                return Err(Error::ChunkCorrupted {
                    uri: manifest.uri.clone(),
                    chunk: index,
                    key: key.clone(),
                    expected,
                    actual: format!("{actual} ({} bytes)", value.len()),
                });
            }
            chunks.push(value);
        }
        Ok(chunks)
    }

    /// Hands the verified chunks of `uri` to `emit` in order; returns the manifest. `emit(None)`
    /// means "start again from byte 0": the object was replaced mid-read by a newer write.
    async fn read_with<F, Fut>(&self, uri: &str, mut emit: F) -> Result<Manifest>
    where
        F: FnMut(Option<Bytes>) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let manifest = self.stat(uri).await?.ok_or_else(|| Error::NotCached {
                uri: uri.to_string(),
            })?;
            let per_batch = (self.config.read_batch_bytes / manifest.chunk_size).max(1);
            let mut hasher = ObjectHasher::default();
            let mut index = 0;
            let mut replaced = None;
            while index < manifest.chunk_count {
                let count = per_batch.min(manifest.chunk_count - index);
                match self.read_chunks(&manifest, index, count).await {
                    Ok(chunks) => {
                        for chunk in chunks {
                            hasher.update(&chunk);
                            emit(Some(chunk)).await?;
                        }
                    }
                    Err(error @ Error::ChunkMissing { .. }) => {
                        replaced = Some(error);
                        break;
                    }
                    Err(error) => return Err(error),
                }
                index += count;
            }
            if let Some(error) = replaced {
                let now = self.stat(uri).await?;
                let changed = now.as_ref().map(|m| &m.generation) != Some(&manifest.generation);
                if changed && now.is_some() && attempt < READ_ATTEMPTS {
                    emit(None).await?;
                    continue;
                }
                return Err(error);
            }
            let actual = hasher.finish();
            if actual != manifest.checksum {
                return Err(Error::ObjectCorrupted {
                    uri: uri.to_string(),
                    expected: manifest.checksum.clone(),
                    actual,
                });
            }
            return Ok(manifest);
        }
    }

    /// The verified bytes of `uri`, in memory.
    pub async fn read(&self, uri: &str) -> Result<(Manifest, Bytes)> {
        let buffer = std::sync::Mutex::new(BytesMut::new());
        let manifest = self
            .read_with(uri, |chunk| {
                let mut guard = buffer.lock().unwrap_or_else(|p| p.into_inner());
                match chunk {
                    Some(chunk) => guard.extend_from_slice(&chunk),
                    None => guard.clear(),
                }
                std::future::ready(Ok(()))
            })
            .await?;
        let bytes = buffer
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .freeze();
        Ok((manifest, bytes))
    }

    /// Writes the verified bytes of `uri` to the file at `path`, through a temporary file in
    /// the same directory renamed into place at the end: `path` never holds partial data.
    pub async fn download(&self, uri: &str, path: &std::path::Path) -> Result<Manifest> {
        let io = |op: &'static str, p: &std::path::Path| {
            let path = p.display().to_string();
            move |source| Error::Io { op, path, source }
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "download".to_string());
        let temp = path.with_file_name(format!(".{file_name}.kfcache-{}", new_generation()));
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(io("create", &temp))?;
        let writer = tokio::sync::Mutex::new(tokio::io::BufWriter::with_capacity(1 << 20, file));
        let result = self
            .read_with(uri, |chunk| {
                let writer = &writer;
                let temp = &temp;
                async move {
                    let mut writer = writer.lock().await;
                    match chunk {
                        Some(chunk) => writer.write_all(&chunk).await.map_err(io("write", temp)),
                        None => {
                            writer.flush().await.map_err(io("write", temp))?;
                            let file = writer.get_mut();
                            file.set_len(0).await.map_err(io("truncate", temp))?;
                            tokio::io::AsyncSeekExt::rewind(file)
                                .await
                                .map(drop)
                                .map_err(io("seek", temp))
                        }
                    }
                }
            })
            .await;
        let finish = async {
            let manifest = result?;
            let mut writer = writer.into_inner();
            writer.flush().await.map_err(io("write", &temp))?;
            writer
                .get_mut()
                .sync_all()
                .await
                .map_err(io("sync", &temp))?;
            drop(writer);
            tokio::fs::rename(&temp, path)
                .await
                .map_err(io("rename into", path))?;
            Ok(manifest)
        };
        let outcome = finish.await;
        if outcome.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        outcome
    }
}

/// Puts chunk entries of one write; owned, so it can run in a spawned task.
#[derive(Debug)]
pub struct ChunkPutter<S: CacheSink + ?Sized> {
    sink: Arc<S>,
}

impl<S: CacheSink + ?Sized> ChunkPutter<S> {
    pub async fn put(&self, entries: Vec<(String, Bytes)>) -> Result<()> {
        match entries.len() {
            0 => Ok(()),
            1 => {
                let (key, value) = entries.into_iter().next().unwrap_or_default();
                self.sink.put(Space::Chunks, &key, value).await
            }
            _ => self.sink.put_all(Space::Chunks, entries).await,
        }
    }
}

/// One write of one object: chunks are accepted in order (checksummed as they pass), put by
/// the caller through [`ObjectWriter::putter`] — concurrently if it likes — and the manifest
/// is put by [`ObjectWriter::finish`] once every chunk is stored.
#[derive(Debug)]
pub struct ObjectWriter<S: CacheSink + ?Sized> {
    cache: ObjectCache<S>,
    id: String,
    record_key: String,
    record: WriteRecord,
    version: SourceVersion,
    size: u64,
    next_index: u64,
    written: u64,
    chunk_checksums: Vec<String>,
    hasher: ObjectHasher,
}

impl<S: CacheSink + ?Sized> ObjectWriter<S> {
    pub fn uri(&self) -> &str {
        &self.record.uri
    }

    pub fn generation(&self) -> &str {
        &self.record.generation
    }

    pub fn chunk_count(&self) -> u64 {
        self.record.chunk_count
    }

    /// Byte ranges of the source, one per chunk, in order.
    pub fn chunk_ranges(&self) -> impl Iterator<Item = std::ops::Range<u64>> + Send + 'static {
        let (size, chunk_size) = (self.size, self.cache.config.chunk_size);
        (0..self.record.chunk_count).map(move |index| {
            let start = index * chunk_size;
            start..start + chunk_len(size, chunk_size, index)
        })
    }

    /// Takes the next chunk; returns the entry to put.
    pub fn accept(&mut self, data: Bytes) -> Result<(String, Bytes)> {
        let index = self.next_index;
        let expected = chunk_len(self.size, self.cache.config.chunk_size, index);
        if index >= self.record.chunk_count || data.len() as u64 != expected {
            return Err(Error::ShortRead {
                uri: self.record.uri.clone(),
                start: index.saturating_mul(self.cache.config.chunk_size),
                end: index.saturating_mul(self.cache.config.chunk_size) + expected,
                got: data.len(),
            });
        }
        self.hasher.update(&data);
        self.chunk_checksums.push(checksum(&data));
        self.next_index += 1;
        self.written += data.len() as u64;
        Ok((
            self.cache
                .chunk_key_of(&self.id, &self.record.generation, index),
            data,
        ))
    }

    /// A handle that puts chunk entries.
    pub fn putter(&self) -> ChunkPutter<S> {
        ChunkPutter {
            sink: self.cache.sink.clone(),
        }
    }

    /// Puts the manifest (the object becomes visible), then cleans up older writes. Call only
    /// after every entry from [`accept`](Self::accept) was put.
    pub async fn finish(mut self) -> Result<Manifest> {
        if self.next_index != self.record.chunk_count || self.written != self.size {
            let error = Error::ShortRead {
                uri: self.record.uri.clone(),
                start: 0,
                end: self.size,
                got: usize::try_from(self.written).unwrap_or(usize::MAX),
            };
            self.abort().await;
            return Err(error);
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            uri: self.record.uri.clone(),
            version: self.version.clone(),
            size: self.size,
            chunk_size: self.cache.config.chunk_size,
            chunk_count: self.record.chunk_count,
            generation: self.record.generation.clone(),
            checksum_algorithm: CHECKSUM_ALGORITHM.to_string(),
            chunk_checksums: std::mem::take(&mut self.chunk_checksums),
            checksum: self.hasher.finish(),
            staged_at: Utc::now(),
        };
        // A write slower than `stale_after` may have been swept as interrupted: its chunks
        // may be gone, so it must not publish a manifest naming them.
        if self
            .cache
            .sink
            .get(Space::Meta, &self.record_key)
            .await?
            .is_none()
        {
            return Err(Error::Config(format!(
                "the write of {} took longer than stale_after ({:?}) and was cleaned up; stage it again",
                self.record.uri, self.cache.config.stale_after
            )));
        }
        let key = self.cache.manifest_key(&self.id);
        let value = serde_json::to_vec(&manifest).map_err(|source| Error::BadMetadata {
            key: key.clone(),
            what: "manifest",
            source,
        })?;
        self.cache
            .sink
            .put(Space::Meta, &key, Bytes::from(value))
            .await?;
        self.record.state = WriteState::Committed;
        self.cache
            .put_record(&self.record_key, &self.record)
            .await?;
        self.cache.sweep(&self.id).await?;
        Ok(manifest)
    }

    /// Gives the write up: removes its chunks and record (best effort; what stays behind is
    /// swept as an interrupted write later).
    pub async fn abort(self) {
        // Only the chunks accepted so far can have been put.
        if let Err(error) = self
            .cache
            .remove_chunks(&self.id, &self.record.generation, self.next_index)
            .await
        {
            tracing::warn!("cannot remove chunks of an abandoned write: {error}");
            return;
        }
        if let Err(error) = self
            .cache
            .sink
            .remove_all(Space::Meta, std::slice::from_ref(&self.record_key))
            .await
        {
            tracing::warn!("cannot remove the record of an abandoned write: {error}");
        }
    }
}
