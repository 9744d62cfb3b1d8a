//! The cache layout: how an object becomes chunks, a manifest and a write record in a
//! [`CacheSink`], how many small objects are written together as one batch, and how objects
//! are read back and trusted.
//!
//! Keys, under the namespace `NS` (a tenant prefix inside the cluster cache) and `ID` (the
//! xxh3-128 of the source URI, so that no URI is a key prefix of another):
//!
//! | space | key | value |
//! |---|---|---|
//! | meta | `NS/m/ID` | [`Manifest`] (JSON) |
//! | meta | `NS/w/ID/GEN` | [`WriteRecord`] (JSON) of write `GEN` of one object |
//! | meta | `NS/p/ID` | [`PendingWrites`] (JSON): writes of the object that began and are not known to be finished |
//! | meta | `NS/b/GEN` | [`BatchRecord`] (JSON) of batch write `GEN` (many small objects) |
//! | chunks | `NS/c/ID/GEN/INDEX` | the bytes of chunk `INDEX` |
//!
//! **One object** ([`ObjectCache::begin`], [`ObjectWriter`]). A write takes a fresh random
//! generation `GEN`, adds it to the object's pending writes and records it (state
//! `writing`), puts its chunks, reads its record (gone: it was swept as interrupted, so it
//! must not publish) and the manifest it is about to replace, puts its manifest (last: a
//! reader never sees a half-written object) and marks its record `committed`. Then it cleans
//! up *without listing the cache*: the chunks and record of the manifest it replaced go
//! directly, and so do the pending writes of the object that are committed but not current
//! (they lost a race) or `writing` for longer than `stale_after` (interrupted). Records are
//! read before the current manifest, so a write that commits meanwhile is never taken for a
//! replaced one. A write that sees another one in flight, or finds it lost, stays in (or
//! leaves) the pending writes accordingly and also sweeps the object's records by listing
//! them, as every write did before; that listing reads the whole metadata space on Ignite, so
//! it is kept for writes that race.
//!
//! **Many small objects** ([`ObjectCache::put_many`]). One batch record listing every object
//! is put first; all objects share its generation in their chunk keys. Then one `putAll` of
//! the chunks, one `getAll` of the batch record (gone: swept as interrupted) and of the
//! manifests about to be replaced, one `putAll` of the manifests (each lands after its own
//! chunks), and the record is marked `committed` while the manifests are read back: an
//! object whose manifest is not the batch's lost a race and its chunks go; the chunks of the
//! manifests the batch replaced go too. A committed batch record stays while any of its
//! objects is current, so that the explicit sweep can still find what a race left behind.
//!
//! **Cleanup that lists the cache** runs only when asked: [`ObjectCache::sweep_stale`] (and
//! [`ObjectCache::sweep_older_than`], for an executor that starts after a crash) reads every
//! record of the namespace once and removes interrupted writes and batches (older than
//! `stale_after`), the chunks of committed writes and batch objects that are no longer
//! current, and emptied batch records and pending lists. Pending lists are written without a
//! compare-and-set (the sink has none), so two writes that begin at the same moment can lose
//! one entry; such a write, if it is interrupted or loses a race unseen, is found only by
//! this sweep.
//!
//! Because chunk keys carry the generation, two writers of the same URI never mix chunks;
//! whichever manifest lands last wins. A reader that finds a chunk missing re-reads the
//! manifest: if a newer write replaced the object meanwhile, it starts over on the new
//! generation.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::manifest::{
    checksum, chunk_count, chunk_len, BatchEntry, BatchRecord, Manifest, ObjectHasher,
    PendingWrites, SourceVersion, WriteRecord, WriteState, CHECKSUM_ALGORITHM, MANIFEST_FORMAT,
    MAX_PENDING_WRITES, MAX_RECORD_CHUNKS,
};
use crate::sink::{CacheSink, Space};
use crate::source::SourceObject;

/// Default chunk size: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

/// Largest chunk size accepted (one chunk is one Ignite value).
pub const MAX_CHUNK_SIZE: u64 = 512 << 20;

/// How many times a read starts over when the object is replaced under it.
const READ_ATTEMPTS: usize = 3;

/// Keys per `getAll` / `removeAll` of metadata.
const META_BATCH: usize = 256;

/// Keys per `removeAll` of chunks.
const CHUNK_REMOVE_BATCH: usize = 1024;

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

/// One object for [`ObjectCache::put_many`]: its URI, the source version its bytes are of,
/// and the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchObject {
    pub uri: String,
    pub version: SourceVersion,
    pub data: Bytes,
}

/// What an explicit sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Single-object writes removed (interrupted, or replaced and left behind by a race).
    pub writes_removed: u64,
    /// Batch records removed (interrupted, or with no current object left).
    pub batches_removed: u64,
    /// Chunk keys removed (some may have been absent already).
    pub chunks_removed: u64,
}

/// A chunk that a current manifest names and the cache does not hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MissingChunk {
    pub uri: String,
    pub index: u64,
}

/// What [`ObjectCache::check`] found in a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub namespace: String,
    /// Current manifests (cached objects).
    pub manifests: u64,
    /// Chunks those manifests name.
    pub chunks: u64,
    /// Chunks named by a manifest that is still current and absent from the cache.
    pub missing_chunks: Vec<MissingChunk>,
    /// Objects whose bytes do not match their checksums (only with `verify`).
    pub corrupt: Vec<String>,
    /// Chunks of writes that are not the current ones of their objects, from the write and
    /// batch records: writes in flight, or leftovers for [`ObjectCache::sweep_stale`].
    pub orphan_chunks: u64,
    /// Objects read back and verified (only with `verify`).
    pub verified: u64,
    /// No missing chunk and no corrupt object.
    pub ok: bool,
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

fn encode<T: Serialize>(key: &str, what: &'static str, value: &T) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|source| Error::BadMetadata {
            key: key.to_string(),
            what,
            source,
        })
}

/// The generation of a stored manifest, without checking the rest of it.
fn manifest_generation(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Generation {
        generation: String,
    }
    serde_json::from_slice::<Generation>(bytes)
        .ok()
        .map(|g| g.generation)
}

/// The generation and chunk count of a stored manifest (what its chunks are keyed by).
fn manifest_write(bytes: &[u8]) -> Option<(String, u64)> {
    #[derive(serde::Deserialize)]
    struct Write {
        generation: String,
        chunk_count: u64,
    }
    serde_json::from_slice::<Write>(bytes)
        .ok()
        .filter(|w| w.chunk_count <= MAX_RECORD_CHUNKS)
        .map(|w| (w.generation, w.chunk_count))
}

fn is_stale(started_at: DateTime<Utc>, now: DateTime<Utc>, stale_after: Duration) -> bool {
    let stale_after = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    now.signed_duration_since(started_at) >= stale_after
}

/// Checksums and manifest of `data`, cut into `chunk_size` pieces.
fn describe_object(
    uri: &str,
    version: SourceVersion,
    data: &Bytes,
    chunk_size: u64,
    generation: &str,
) -> Manifest {
    let size = data.len() as u64;
    let count = chunk_count(size, chunk_size);
    let chunk_checksums: Vec<String> = (0..count)
        .map(|index| {
            let start = (index * chunk_size) as usize;
            let end = start + chunk_len(size, chunk_size, index) as usize;
            checksum(&data[start..end])
        })
        .collect();
    // One chunk: the object's checksum is the chunk's (xxh3 streams to the one-shot value).
    let object_checksum = match chunk_checksums.as_slice() {
        [only] => only.clone(),
        _ => checksum(data),
    };
    Manifest {
        format: MANIFEST_FORMAT,
        uri: uri.to_string(),
        version,
        size,
        chunk_size,
        chunk_count: count,
        generation: generation.to_string(),
        checksum_algorithm: CHECKSUM_ALGORITHM.to_string(),
        chunk_checksums,
        checksum: object_checksum,
        staged_at: Utc::now(),
    }
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

    fn record_key(&self, id: &str, generation: &str) -> String {
        format!("{}/w/{id}/{generation}", self.config.namespace)
    }

    fn pending_key(&self, id: &str) -> String {
        format!("{}/p/{id}", self.config.namespace)
    }

    fn batch_key(&self, generation: &str) -> String {
        format!("{}/b/{generation}", self.config.namespace)
    }

    fn chunk_key_of(&self, id: &str, generation: &str, index: u64) -> String {
        format!("{}/c/{id}/{generation}/{index}", self.config.namespace)
    }

    /// Removes chunks `0..count` of one write, 1024 keys per request, without ever holding
    /// more than one batch of keys.
    async fn remove_chunks(&self, id: &str, generation: &str, count: u64) -> Result<()> {
        let mut first = 0;
        while first < count {
            let last = count.min(first + CHUNK_REMOVE_BATCH as u64);
            let keys: Vec<String> = (first..last)
                .map(|index| self.chunk_key_of(id, generation, index))
                .collect();
            self.sink.remove_all(Space::Chunks, &keys).await?;
            first = last;
        }
        Ok(())
    }

    /// Removes the chunks of many writes `(id, generation, count)`, packing keys of small
    /// writes into shared requests.
    async fn remove_writes(&self, writes: &[(String, String, u64)]) -> Result<u64> {
        let mut keys = Vec::new();
        let mut removed = 0;
        for (id, generation, count) in writes {
            if *count > CHUNK_REMOVE_BATCH as u64 {
                self.remove_chunks(id, generation, *count).await?;
            } else {
                keys.extend((0..*count).map(|index| self.chunk_key_of(id, generation, index)));
                if keys.len() >= CHUNK_REMOVE_BATCH {
                    self.sink
                        .remove_all(Space::Chunks, &std::mem::take(&mut keys))
                        .await?;
                }
            }
            removed += count;
        }
        if !keys.is_empty() {
            self.sink.remove_all(Space::Chunks, &keys).await?;
        }
        Ok(removed)
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

    /// The manifests of those of `uris` that are cached, by URI, read with one `getAll` per
    /// 256 URIs.
    pub async fn stat_many(&self, uris: &[String]) -> Result<HashMap<String, Manifest>> {
        let mut manifests = HashMap::with_capacity(uris.len());
        for batch in uris.chunks(META_BATCH) {
            let keys: Vec<String> = batch
                .iter()
                .map(|uri| self.manifest_key(&object_id(uri)))
                .collect();
            let values = self.sink.get_all(Space::Meta, &keys).await?;
            for (uri, key) in batch.iter().zip(&keys) {
                if let Some(bytes) = values.get(key) {
                    manifests.insert(uri.clone(), Manifest::decode(key, bytes)?);
                }
            }
        }
        Ok(manifests)
    }

    /// Whether the cached `uri` is current for `object` as its source describes it now (see
    /// [`Manifest::matches`]); false when it is not cached.
    pub async fn is_current(&self, object: &SourceObject) -> Result<bool> {
        Ok(self
            .stat(&object.uri)
            .await?
            .is_some_and(|manifest| manifest.matches(object)))
    }

    /// Manifests of every cached object of the namespace, sorted by URI.
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let prefix = format!("{}/m/", self.config.namespace);
        let keys = self.sink.keys_with_prefix(Space::Meta, &prefix).await?;
        let mut manifests = Vec::with_capacity(keys.len());
        for batch in keys.chunks(META_BATCH) {
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
        let record_key = self.record_key(&id, &generation);
        let pending_key = self.pending_key(&id);
        let mut pending = match self.sink.get(Space::Meta, &pending_key).await? {
            Some(bytes) => PendingWrites::decode_or_empty(&bytes),
            None => PendingWrites::default(),
        };
        let known_pending = pending.generations.clone();
        pending.uri = uri.to_string();
        pending.generations.push(generation.clone());
        let excess = pending.generations.len().saturating_sub(MAX_PENDING_WRITES);
        pending.generations.drain(..excess);
        let entries = vec![
            (
                record_key.clone(),
                encode(&record_key, "write record", &record)?,
            ),
            (
                pending_key.clone(),
                encode(&pending_key, "pending writes", &pending)?,
            ),
        ];
        self.sink.put_all(Space::Meta, entries).await?;
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
            known_pending,
        })
    }

    async fn put_record(&self, key: &str, record: &WriteRecord) -> Result<()> {
        let value = encode(key, "write record", record)?;
        self.sink.put(Space::Meta, key, value).await
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

    /// Stages many (small) objects as one batch: one batch record, one `putAll` of chunks per
    /// `read_batch_bytes`, one `getAll` and one `putAll` of manifests, one commit. Each object
    /// becomes visible only with its manifest, after all its chunks; the manifests returned
    /// are those written (an object replaced by a racing write meanwhile keeps the racer's).
    ///
    /// On an error before the manifests, the batch removes what it wrote (best effort). An
    /// error while the manifests are put leaves the outcome unknown (some may have landed,
    /// each complete), so nothing is removed then. What an interrupted batch leaves behind
    /// is never visible and is removed by [`sweep_stale`](Self::sweep_stale) once older than
    /// `stale_after`.
    pub async fn put_many(&self, objects: Vec<BatchObject>) -> Result<Vec<Manifest>> {
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let chunk_size = self.config.chunk_size;
        let mut seen = BTreeSet::new();
        let mut total_chunks = 0u64;
        for object in &objects {
            if !seen.insert(object.uri.as_str()) {
                return Err(Error::Config(format!(
                    "{} appears twice in one batch",
                    object.uri
                )));
            }
            total_chunks += chunk_count(object.data.len() as u64, chunk_size);
        }
        if total_chunks > MAX_RECORD_CHUNKS {
            return Err(Error::Config(format!(
                "a batch of {} objects would be {total_chunks} chunks (at most {MAX_RECORD_CHUNKS}); use smaller batches",
                objects.len()
            )));
        }
        let generation = new_generation();
        let record_key = self.batch_key(&generation);
        let mut record = BatchRecord {
            generation: generation.clone(),
            state: WriteState::Writing,
            started_at: Utc::now(),
            objects: objects
                .iter()
                .map(|object| BatchEntry {
                    uri: object.uri.clone(),
                    chunk_count: chunk_count(object.data.len() as u64, chunk_size),
                })
                .collect(),
        };
        self.sink
            .put(
                Space::Meta,
                &record_key,
                encode(&record_key, "batch record", &record)?,
            )
            .await?;

        // Chunks, with the manifests computed as they are cut.
        let ids: Vec<String> = objects.iter().map(|o| object_id(&o.uri)).collect();
        let mut manifests = Vec::with_capacity(objects.len());
        let put_limit = self.config.read_batch_bytes.max(chunk_size);
        let mut entries: Vec<(String, Bytes)> = Vec::new();
        let mut entry_bytes = 0u64;
        let mut outcome = Ok(());
        for (object, id) in objects.into_iter().zip(&ids) {
            let manifest = describe_object(
                &object.uri,
                object.version,
                &object.data,
                chunk_size,
                &generation,
            );
            for index in 0..manifest.chunk_count {
                let start = (index * chunk_size) as usize;
                let end = start + manifest.chunk_len(index) as usize;
                entries.push((
                    self.chunk_key_of(id, &generation, index),
                    object.data.slice(start..end),
                ));
                entry_bytes += (end - start) as u64;
                if entry_bytes >= put_limit {
                    entry_bytes = 0;
                    outcome = self
                        .sink
                        .put_all(Space::Chunks, std::mem::take(&mut entries))
                        .await;
                    if outcome.is_err() {
                        break;
                    }
                }
            }
            manifests.push(manifest);
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() && !entries.is_empty() {
            outcome = self.sink.put_all(Space::Chunks, entries).await;
        }
        if let Err(error) = outcome {
            self.abort_batch(&record_key, &record, &ids).await;
            return Err(error);
        }

        // The record (still there: not swept as interrupted) and the manifests to replace.
        let manifest_keys: Vec<String> = ids.iter().map(|id| self.manifest_key(id)).collect();
        let mut check = Vec::with_capacity(manifest_keys.len() + 1);
        check.push(record_key.clone());
        check.extend(manifest_keys.iter().cloned());
        let found = match self.sink.get_all(Space::Meta, &check).await {
            Ok(found) => found,
            Err(error) => {
                self.abort_batch(&record_key, &record, &ids).await;
                return Err(error);
            }
        };
        if !found.contains_key(&record_key) {
            return Err(Error::Config(format!(
                "the batch write of {} objects (from {}) took longer than stale_after ({:?}) and was cleaned up; stage them again",
                manifests.len(),
                manifests.first().map(|m| m.uri.as_str()).unwrap_or_default(),
                self.config.stale_after
            )));
        }
        let replaced: Vec<Option<(String, u64)>> = manifest_keys
            .iter()
            .map(|key| found.get(key).and_then(|bytes| manifest_write(bytes)))
            .collect();

        let mut values = Vec::with_capacity(manifests.len());
        for (manifest, key) in manifests.iter_mut().zip(&manifest_keys) {
            manifest.staged_at = Utc::now();
            values.push((key.clone(), encode(key, "manifest", &*manifest)?));
        }
        self.sink.put_all(Space::Meta, values).await?;

        // Commit, and read the manifests back to find the objects that lost a race.
        record.state = WriteState::Committed;
        let commit_value = encode(&record_key, "batch record", &record)?;
        let (committed, current) = tokio::join!(
            self.sink.put(Space::Meta, &record_key, commit_value),
            self.sink.get_all(Space::Meta, &manifest_keys)
        );
        committed?;
        let current = current?;
        let mut removals = Vec::new();
        let mut record_keys = Vec::new();
        let mut any_current = false;
        for (((manifest, id), key), replaced) in
            manifests.iter().zip(&ids).zip(&manifest_keys).zip(replaced)
        {
            let now = current
                .get(key)
                .and_then(|bytes| manifest_generation(bytes));
            if now.as_deref() == Some(generation.as_str()) {
                any_current = true;
            } else {
                removals.push((id.clone(), generation.clone(), manifest.chunk_count));
            }
            if let Some((old, count)) = replaced {
                if old != generation && now.as_deref() != Some(old.as_str()) {
                    record_keys.push(self.record_key(id, &old));
                    removals.push((id.clone(), old, count));
                }
            }
        }
        self.remove_writes(&removals).await?;
        if !any_current {
            record_keys.push(record_key);
        }
        for keys in record_keys.chunks(META_BATCH) {
            self.sink.remove_all(Space::Meta, keys).await?;
        }
        Ok(manifests)
    }

    /// Removes what a failed batch wrote (before any manifest): its chunks and its record.
    async fn abort_batch(&self, record_key: &str, record: &BatchRecord, ids: &[String]) {
        let writes: Vec<(String, String, u64)> = record
            .objects
            .iter()
            .zip(ids)
            .map(|(entry, id)| (id.clone(), record.generation.clone(), entry.chunk_count))
            .collect();
        if let Err(error) = self.remove_writes(&writes).await {
            tracing::warn!("cannot remove chunks of an abandoned batch: {error}");
            return;
        }
        if let Err(error) = self
            .sink
            .remove_all(Space::Meta, &[record_key.to_string()])
            .await
        {
            tracing::warn!("cannot remove the record of an abandoned batch: {error}");
        }
    }

    /// After a write of object `id` (`own`: its generation and chunk count; `None` for an
    /// eviction) replaced the writes in `replaced` (generation, chunk count, from the
    /// manifests it read before putting its own): removes those, and the pending writes of
    /// the object that are finished and not current or interrupted, without listing the
    /// cache. Falls back to listing the object's records when it sees a write in flight or
    /// finds it lost (a race).
    async fn settle(
        &self,
        id: &str,
        uri: &str,
        own: Option<(&str, u64)>,
        replaced: Vec<(String, u64)>,
        known_pending: &[String],
    ) -> Result<()> {
        let own_generation = own.map(|(generation, _)| generation);
        let pending_key = self.pending_key(id);
        let mut candidates: BTreeSet<String> = known_pending
            .iter()
            .cloned()
            .chain(replaced.iter().map(|(generation, _)| generation.clone()))
            .filter(|generation| Some(generation.as_str()) != own_generation)
            .collect();
        let mut keys = vec![pending_key.clone()];
        keys.extend(candidates.iter().map(|g| self.record_key(id, g)));
        let mut found = self.sink.get_all(Space::Meta, &keys).await?;
        let pending_now = found
            .remove(&pending_key)
            .map(|bytes| PendingWrites::decode_or_empty(&bytes));
        let listed: Vec<String> = pending_now
            .as_ref()
            .map(|p| p.generations.clone())
            .unwrap_or_default();
        let new: Vec<String> = listed
            .iter()
            .filter(|g| Some(g.as_str()) != own_generation && !candidates.contains(*g))
            .cloned()
            .collect();
        if !new.is_empty() {
            let keys: Vec<String> = new.iter().map(|g| self.record_key(id, g)).collect();
            found.extend(self.sink.get_all(Space::Meta, &keys).await?);
            candidates.extend(new);
        }
        // The current manifest only after the records: a record read `committed` had its
        // manifest put before, so if another manifest is current now, it was replaced for good.
        let current = self
            .sink
            .get(Space::Meta, &self.manifest_key(id))
            .await?
            .and_then(|bytes| manifest_generation(&bytes));

        let now = Utc::now();
        let mut removals: BTreeMap<String, u64> = BTreeMap::new();
        let mut keep = Vec::new();
        let mut racing = false;
        for (generation, count) in replaced {
            if current.as_ref() != Some(&generation) && Some(generation.as_str()) != own_generation
            {
                removals.insert(generation, count);
            }
        }
        let mut undecodable = Vec::new();
        for generation in &candidates {
            let key = self.record_key(id, generation);
            let Some(bytes) = found.get(&key) else {
                continue; // finished and cleaned up, or a batch write (no record of its own)
            };
            match WriteRecord::decode(&key, bytes) {
                Err(error) => {
                    tracing::warn!("removing undecodable write record: {error}");
                    undecodable.push(key);
                }
                Ok(_) if current.as_ref() == Some(generation) => {}
                Ok(record) => {
                    if record.state == WriteState::Committed
                        || is_stale(record.started_at, now, self.config.stale_after)
                    {
                        removals.insert(generation.clone(), record.chunk_count);
                    } else {
                        keep.push(generation.clone());
                        racing = true;
                    }
                }
            }
        }
        if let Some((own_generation, own_count)) = own {
            if current.as_deref() != Some(own_generation) {
                removals.insert(own_generation.to_string(), own_count);
                racing = true;
            } else {
                // Stay findable by a write in flight that may replace this one unseen.
                racing |= !listed.iter().any(|g| g == own_generation);
                if racing {
                    keep.push(own_generation.to_string());
                }
            }
        }

        let writes: Vec<(String, String, u64)> = removals
            .iter()
            .map(|(generation, count)| (id.to_string(), generation.clone(), *count))
            .collect();
        self.remove_writes(&writes).await?;
        let mut meta_removals: Vec<String> = removals
            .keys()
            .map(|generation| self.record_key(id, generation))
            .chain(undecodable)
            .collect();
        if keep.is_empty() {
            if pending_now.is_some() {
                meta_removals.push(pending_key);
            }
        } else if keep != listed {
            let pending = PendingWrites {
                uri: uri.to_string(),
                generations: keep,
            };
            let value = encode(&pending_key, "pending writes", &pending)?;
            self.sink.put(Space::Meta, &pending_key, value).await?;
        }
        if !meta_removals.is_empty() {
            self.sink.remove_all(Space::Meta, &meta_removals).await?;
        }
        if racing {
            self.sweep_object(id).await?;
        }
        Ok(())
    }

    /// Removes chunks and records of writes of one object that are no longer needed, by
    /// listing the object's records (which reads the whole metadata space on Ignite): the
    /// fallback of [`settle`](Self::settle) when writes race.
    async fn sweep_object(&self, id: &str) -> Result<()> {
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
            .and_then(|bytes| manifest_generation(&bytes));
        let now = Utc::now();
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
            if finished || is_stale(record.started_at, now, self.config.stale_after) {
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
        let pending_key = self.pending_key(&id);
        let found = self
            .sink
            .get_all(Space::Meta, &[key.clone(), pending_key.clone()])
            .await?;
        let manifest = found.get(&key).and_then(|bytes| manifest_write(bytes));
        let pending = found
            .get(&pending_key)
            .map(|bytes| PendingWrites::decode_or_empty(bytes).generations)
            .unwrap_or_default();
        self.sink.remove_all(Space::Meta, &[key]).await?;
        // With no manifest, the evicted write and every finished pending write go.
        let cached = manifest.is_some();
        self.settle(&id, uri, None, manifest.into_iter().collect(), &pending)
            .await?;
        Ok(cached)
    }

    /// Removes every object of the namespace, with all write records, batch records and
    /// chunks; returns how many objects were cached. Writes in progress lose their records
    /// too and fail to find their chunks later only if they are read; run it when nothing
    /// stages.
    pub async fn clear(&self) -> Result<usize> {
        let prefix = format!("{}/", self.config.namespace);
        let manifests = format!("{prefix}m/");
        let batches = format!("{prefix}b/");
        let keys = self.sink.keys_with_prefix(Space::Meta, &prefix).await?;
        let mut objects = 0;
        for batch in keys.chunks(META_BATCH) {
            let values = self.sink.get_all(Space::Meta, batch).await?;
            let mut writes = BTreeSet::new();
            for (key, bytes) in &values {
                if key.starts_with(&manifests) {
                    objects += 1;
                    if let Ok(manifest) = Manifest::decode(key, bytes) {
                        writes.insert((
                            object_id(&manifest.uri),
                            manifest.generation,
                            manifest.chunk_count,
                        ));
                    }
                } else if key.starts_with(&batches) {
                    if let Ok(record) = BatchRecord::decode(key, bytes) {
                        for entry in record.objects {
                            writes.insert((
                                object_id(&entry.uri),
                                record.generation.clone(),
                                entry.chunk_count,
                            ));
                        }
                    }
                } else if let Ok(record) = WriteRecord::decode(key, bytes) {
                    writes.insert((
                        object_id(&record.uri),
                        record.generation,
                        record.chunk_count,
                    ));
                }
            }
            let writes: Vec<(String, String, u64)> = writes.into_iter().collect();
            self.remove_writes(&writes).await?;
            self.sink.remove_all(Space::Meta, batch).await?;
        }
        Ok(objects)
    }

    /// Checks that every current manifest of the namespace can be read: each chunk it names
    /// is present (objects replaced or evicted while the check runs are not counted), and
    /// counts the chunks of writes that are not current. With `verify`, every object is also
    /// read back and checked against its checksums. Only metadata is listed: the chunk space,
    /// which holds every tenant's data, is never scanned.
    pub async fn check(&self, verify: bool) -> Result<CheckReport> {
        let manifests = self.list().await?;
        let mut report = CheckReport {
            namespace: self.config.namespace.clone(),
            manifests: manifests.len() as u64,
            ..CheckReport::default()
        };
        for manifest in &manifests {
            report.chunks += manifest.chunk_count;
            let mut missing = Vec::new();
            for index in 0..manifest.chunk_count {
                let key = self.chunk_key(manifest, index);
                if !self.sink.contains(Space::Chunks, &key).await? {
                    missing.push(index);
                }
            }
            if !missing.is_empty() && self.still_current(manifest).await? {
                report
                    .missing_chunks
                    .extend(missing.into_iter().map(|index| MissingChunk {
                        uri: manifest.uri.clone(),
                        index,
                    }));
                continue;
            }
            if verify && missing.is_empty() {
                match self
                    .read_with(&manifest.uri, |_| std::future::ready(Ok(())))
                    .await
                {
                    Ok(_) => report.verified += 1,
                    Err(Error::ObjectCorrupted { .. } | Error::ChunkCorrupted { .. }) => {
                        report.corrupt.push(manifest.uri.clone())
                    }
                    // Replaced or evicted meanwhile.
                    Err(Error::ChunkMissing { .. } | Error::NotCached { .. }) => {}
                    Err(other) => return Err(other),
                }
            }
        }
        let current: HashMap<&str, &str> = manifests
            .iter()
            .map(|m| (m.uri.as_str(), m.generation.as_str()))
            .collect();
        report.orphan_chunks = self.chunks_not_current(&current).await?;
        report.ok = report.missing_chunks.is_empty() && report.corrupt.is_empty();
        Ok(report)
    }

    /// Chunks named by the namespace's write and batch records whose generation is not the
    /// current one of their object (`current`: URI → generation).
    async fn chunks_not_current(&self, current: &HashMap<&str, &str>) -> Result<u64> {
        let namespace = &self.config.namespace;
        let records_prefix = format!("{namespace}/w/");
        let batches_prefix = format!("{namespace}/b/");
        let mut keys = self
            .sink
            .keys_with_prefix(Space::Meta, &format!("{namespace}/"))
            .await?;
        keys.retain(|key| key.starts_with(&records_prefix) || key.starts_with(&batches_prefix));
        let is_current = |uri: &str, generation: &str| current.get(uri) == Some(&generation);
        let mut count = 0;
        for batch in keys.chunks(META_BATCH) {
            let values = self.sink.get_all(Space::Meta, batch).await?;
            for key in batch {
                let Some(bytes) = values.get(key) else {
                    continue;
                };
                if key.starts_with(&records_prefix) {
                    if let Ok(record) = WriteRecord::decode(key, bytes) {
                        if !is_current(&record.uri, &record.generation) {
                            count += record.chunk_count;
                        }
                    }
                } else if let Ok(record) = BatchRecord::decode(key, bytes) {
                    count += record
                        .objects
                        .iter()
                        .filter(|entry| !is_current(&entry.uri, &record.generation))
                        .map(|entry| entry.chunk_count)
                        .sum::<u64>();
                }
            }
        }
        Ok(count)
    }

    /// Whether `manifest` is still the object's current one.
    async fn still_current(&self, manifest: &Manifest) -> Result<bool> {
        Ok(self
            .stat(&manifest.uri)
            .await?
            .is_some_and(|now| now.generation == manifest.generation))
    }

    /// Removes what interrupted writes and races left behind, listing every record of the
    /// namespace once: writes and batches still `writing` after `stale_after`, the chunks of
    /// committed writes and batch objects that are no longer current, batch records with no
    /// current object left, and pending lists with nothing pending. Safe to run while other
    /// writers stage (what is current, or in flight for less than `stale_after`, stays).
    pub async fn sweep_stale(&self) -> Result<SweepReport> {
        self.sweep_older_than(self.config.stale_after).await
    }

    /// [`sweep_stale`](Self::sweep_stale) with another age for interrupted writes. An executor
    /// that is the only writer of the namespace can pass `Duration::ZERO` when it starts, to
    /// remove at once what its crashed predecessor left; with other writers running, that
    /// would remove their writes in flight (they then fail instead of publishing).
    pub async fn sweep_older_than(&self, age: Duration) -> Result<SweepReport> {
        let namespace = &self.config.namespace;
        let records_prefix = format!("{namespace}/w/");
        let batches_prefix = format!("{namespace}/b/");
        let pending_prefix = format!("{namespace}/p/");
        let mut keys = self
            .sink
            .keys_with_prefix(Space::Meta, &format!("{namespace}/"))
            .await?;
        keys.retain(|key| {
            key.starts_with(&records_prefix)
                || key.starts_with(&batches_prefix)
                || key.starts_with(&pending_prefix)
        });
        // Pending lists last: they are pruned of the records removed before them.
        keys.sort_by_key(|key| key.starts_with(&pending_prefix));
        let mut report = SweepReport::default();
        for batch in keys.chunks(META_BATCH) {
            // Records first, then the manifests of their objects (see `sweep_object`).
            let values = self.sink.get_all(Space::Meta, batch).await?;
            let mut writes: Vec<(String, WriteRecord)> = Vec::new();
            let mut batches: Vec<(String, BatchRecord)> = Vec::new();
            let mut pending: Vec<(String, PendingWrites)> = Vec::new();
            let mut undecodable = Vec::new();
            for key in batch {
                let Some(bytes) = values.get(key) else {
                    continue;
                };
                if key.starts_with(&records_prefix) {
                    match WriteRecord::decode(key, bytes) {
                        Ok(record) => writes.push((key.clone(), record)),
                        Err(_) => undecodable.push(key.clone()),
                    }
                } else if key.starts_with(&batches_prefix) {
                    match BatchRecord::decode(key, bytes) {
                        Ok(record) => batches.push((key.clone(), record)),
                        Err(_) => undecodable.push(key.clone()),
                    }
                } else {
                    pending.push((key.clone(), PendingWrites::decode_or_empty(bytes)));
                }
            }
            let mut uris: BTreeSet<String> = writes.iter().map(|(_, r)| r.uri.clone()).collect();
            for (_, record) in &batches {
                uris.extend(record.objects.iter().map(|entry| entry.uri.clone()));
            }
            uris.extend(pending.iter().map(|(_, p)| p.uri.clone()));
            let uris: Vec<String> = uris.into_iter().collect();
            let current = self.current_generations(&uris).await?;
            let now = Utc::now();

            let mut removals = Vec::new();
            let mut meta_removals = undecodable;
            let mut removed_records = BTreeSet::new();
            for (key, record) in writes {
                if current.get(&record.uri) == Some(&record.generation) {
                    continue;
                }
                if record.state == WriteState::Committed || is_stale(record.started_at, now, age) {
                    removals.push((
                        object_id(&record.uri),
                        record.generation.clone(),
                        record.chunk_count,
                    ));
                    removed_records.insert((object_id(&record.uri), record.generation));
                    meta_removals.push(key);
                    report.writes_removed += 1;
                }
            }
            for (key, record) in batches {
                let interrupted =
                    record.state == WriteState::Writing && is_stale(record.started_at, now, age);
                if record.state == WriteState::Writing && !interrupted {
                    continue; // in flight
                }
                let (live, dead): (Vec<BatchEntry>, Vec<BatchEntry>) = record
                    .objects
                    .into_iter()
                    .partition(|entry| current.get(&entry.uri) == Some(&record.generation));
                for entry in &dead {
                    removals.push((
                        object_id(&entry.uri),
                        record.generation.clone(),
                        entry.chunk_count,
                    ));
                }
                if live.is_empty() {
                    meta_removals.push(key);
                    report.batches_removed += 1;
                } else if !dead.is_empty() || interrupted {
                    // Keep the record of the objects still current, as committed.
                    let kept = BatchRecord {
                        generation: record.generation,
                        state: WriteState::Committed,
                        started_at: record.started_at,
                        objects: live,
                    };
                    let value = encode(&key, "batch record", &kept)?;
                    self.sink.put(Space::Meta, &key, value).await?;
                }
            }
            for (key, list) in pending {
                let id = object_id(&list.uri);
                let left: Vec<String> = list
                    .generations
                    .iter()
                    .filter(|g| {
                        current.get(&list.uri) != Some(*g)
                            && !removed_records.contains(&(id.clone(), (*g).clone()))
                    })
                    .cloned()
                    .collect();
                // Only generations whose records still exist stay listed.
                let still: Vec<String> = if left.is_empty() {
                    Vec::new()
                } else {
                    let record_keys: Vec<String> =
                        left.iter().map(|g| self.record_key(&id, g)).collect();
                    let exist = self.sink.get_all(Space::Meta, &record_keys).await?;
                    left.into_iter()
                        .zip(record_keys)
                        .filter(|(_, k)| exist.contains_key(k))
                        .map(|(g, _)| g)
                        .collect()
                };
                if still.is_empty() {
                    meta_removals.push(key);
                } else if still != list.generations {
                    let value = encode(
                        &key,
                        "pending writes",
                        &PendingWrites {
                            uri: list.uri,
                            generations: still,
                        },
                    )?;
                    self.sink.put(Space::Meta, &key, value).await?;
                }
            }
            report.chunks_removed += self.remove_writes(&removals).await?;
            for keys in meta_removals.chunks(META_BATCH) {
                self.sink.remove_all(Space::Meta, keys).await?;
            }
        }
        Ok(report)
    }

    /// The generation of the current manifest of each of `uris` that is cached.
    async fn current_generations(&self, uris: &[String]) -> Result<HashMap<String, String>> {
        let mut current = HashMap::with_capacity(uris.len());
        for batch in uris.chunks(META_BATCH) {
            let keys: Vec<String> = batch
                .iter()
                .map(|uri| self.manifest_key(&object_id(uri)))
                .collect();
            let values = self.sink.get_all(Space::Meta, &keys).await?;
            for (uri, key) in batch.iter().zip(&keys) {
                if let Some(generation) = values.get(key).and_then(|b| manifest_generation(b)) {
                    current.insert(uri.clone(), generation);
                }
            }
        }
        Ok(current)
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
    /// Pending writes of the object when this one began.
    known_pending: Vec<String>,
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

    /// Puts the manifest (the object becomes visible), then cleans up the write it replaced
    /// and finished or interrupted writes of the object (see the module documentation). Call
    /// only after every entry from [`accept`](Self::accept) was put.
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
        // may be gone, so it must not publish a manifest naming them. The same request reads
        // the manifest this write replaces.
        let key = self.cache.manifest_key(&self.id);
        let found = self
            .cache
            .sink
            .get_all(Space::Meta, &[self.record_key.clone(), key.clone()])
            .await?;
        if !found.contains_key(&self.record_key) {
            return Err(Error::Config(format!(
                "the write of {} took longer than stale_after ({:?}) and was cleaned up; stage it again",
                self.record.uri, self.cache.config.stale_after
            )));
        }
        let replaced = found.get(&key).and_then(|bytes| manifest_write(bytes));
        let value = encode(&key, "manifest", &manifest)?;
        self.cache.sink.put(Space::Meta, &key, value).await?;
        self.record.state = WriteState::Committed;
        self.cache
            .put_record(&self.record_key, &self.record)
            .await?;
        self.cache
            .settle(
                &self.id,
                &self.record.uri,
                Some((&self.record.generation, self.record.chunk_count)),
                replaced.into_iter().collect(),
                &self.known_pending,
            )
            .await?;
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
