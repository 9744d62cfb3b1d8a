//! What the cache stores about an object besides its bytes: the [`Manifest`], the
//! [`WriteRecord`] of each write of one object, the [`BatchRecord`] of each write of many
//! small objects at once, the [`PendingWrites`] of an object (the writes that began and are
//! not known to be finished), the [`SourceVersion`] of the source object, and the checksums.
//!
//! Checksums are xxHash3-128 (`xxhash-rust`): it runs at memory speed (tens of GB/s per core,
//! well above the network), is pure Rust with no build script, and is maintained and widely
//! used. The threat is bit rot and bugs, not an adversary who forges collisions, so a
//! cryptographic hash (blake3, SHA-256) would cost CPU on the hot path for nothing. 128 bits
//! keep accidental collisions out of reach at any cache size.
//!
//! Metadata is JSON: small, readable when debugging a cluster, and versioned by `format`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_128, Xxh3};

use crate::error::{Error, Result};
use crate::source::SourceObject;

/// The manifest format this crate writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// Most chunks one object may have (64 TiB in 4 MiB chunks).
pub const MAX_RECORD_CHUNKS: u64 = 1 << 24;

/// Name of the checksum algorithm recorded in manifests.
pub const CHECKSUM_ALGORITHM: &str = "xxh3-128";

/// Checksum of one buffer, as 32 lowercase hex digits.
pub fn checksum(data: &[u8]) -> String {
    format!("{:032x}", xxh3_128(data))
}

/// Streaming checksum of a whole object, fed chunk by chunk in order.
#[derive(Clone)]
pub struct ObjectHasher(Box<Xxh3>);

impl std::fmt::Debug for ObjectHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectHasher")
    }
}

impl Default for ObjectHasher {
    fn default() -> Self {
        ObjectHasher(Box::new(Xxh3::new()))
    }
}

impl ObjectHasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(&self) -> String {
        format!("{:032x}", self.0.digest128())
    }
}

/// Which version of the source object was staged: its ETag where the source has one, else
/// its size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceVersion {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<DateTime<Utc>>,
}

impl SourceVersion {
    /// Whether `other` names the same content: equal sizes and, where both have an ETag,
    /// equal ETags, else equal modification times. A version with neither ETag nor
    /// modification time matches nothing: without them the source cannot say it is unchanged.
    pub fn same_content(&self, other: &SourceVersion) -> bool {
        if self.size != other.size {
            return false;
        }
        match (&self.etag, &other.etag) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => matches!(
                (self.last_modified, other.last_modified),
                (Some(mine), Some(theirs)) if mine == theirs
            ),
        }
    }
}

impl std::fmt::Display for SourceVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.etag, &self.last_modified) {
            (Some(etag), _) => write!(f, "etag {etag}"),
            (None, Some(modified)) => {
                write!(f, "size {} mtime {}", self.size, modified.to_rfc3339())
            }
            (None, None) => write!(f, "size {}", self.size),
        }
    }
}

/// Everything needed to read an object back and trust it. Written after every chunk, so a
/// reader that finds a manifest finds a complete object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The source URI, as given when staging.
    pub uri: String,
    pub version: SourceVersion,
    pub size: u64,
    pub chunk_size: u64,
    pub chunk_count: u64,
    /// The write that produced the chunks; part of every chunk key.
    pub generation: String,
    pub checksum_algorithm: String,
    /// Checksum of each chunk, in order.
    pub chunk_checksums: Vec<String>,
    /// Checksum of the whole object.
    pub checksum: String,
    pub staged_at: DateTime<Utc>,
}

impl Manifest {
    /// Decodes and checks that the manifest agrees with itself.
    pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<Manifest> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|source| Error::BadMetadata {
                key: key.to_string(),
                what: "manifest",
                source,
            })?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::BadManifest {
                uri: self.uri.clone(),
                reason,
            })
        };
        if self.format != MANIFEST_FORMAT {
            return bad(format!(
                "format {} (this kfcache reads {MANIFEST_FORMAT})",
                self.format
            ));
        }
        if self.checksum_algorithm != CHECKSUM_ALGORITHM {
            return bad(format!("checksum algorithm {:?}", self.checksum_algorithm));
        }
        if self.chunk_size == 0 {
            return bad("chunk size 0".to_string());
        }
        if self.chunk_count != chunk_count(self.size, self.chunk_size) {
            return bad(format!(
                "{} chunks for {} bytes in chunks of {}",
                self.chunk_count, self.size, self.chunk_size
            ));
        }
        if self.chunk_checksums.len() as u64 != self.chunk_count {
            return bad(format!(
                "{} chunk checksums for {} chunks",
                self.chunk_checksums.len(),
                self.chunk_count
            ));
        }
        Ok(())
    }

    /// Byte length of chunk `index`.
    pub fn chunk_len(&self, index: u64) -> u64 {
        chunk_len(self.size, self.chunk_size, index)
    }

    /// Whether this manifest is current for `object` as its source lists it now: the same
    /// URI, the same size and the same source version (ETag, else modification time; see
    /// [`SourceVersion::same_content`]). A current object need not be staged again.
    pub fn matches(&self, object: &SourceObject) -> bool {
        self.uri == object.uri
            && self.size == object.size
            && self.version.same_content(&object.version)
    }
}

/// Number of chunks of `size` bytes cut into `chunk_size` pieces (0 for an empty object).
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    if chunk_size == 0 {
        return 0;
    }
    size.div_ceil(chunk_size)
}

/// Byte length of chunk `index`.
pub fn chunk_len(size: u64, chunk_size: u64, index: u64) -> u64 {
    let start = index.saturating_mul(chunk_size);
    size.saturating_sub(start).min(chunk_size)
}

/// State of one write of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteState {
    /// Chunks are being written; the manifest is not yet.
    Writing,
    /// The write put its manifest. Its chunks stay while that manifest is current.
    Committed,
}

/// Recorded before a write puts its first chunk, so that its chunks can always be found and
/// removed: when a later write replaces it, when it loses a race, or when it was interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRecord {
    pub uri: String,
    pub generation: String,
    pub chunk_count: u64,
    pub state: WriteState,
    pub started_at: DateTime<Utc>,
}

impl WriteRecord {
    /// Decodes a record; one claiming more than [`MAX_RECORD_CHUNKS`] chunks is refused so
    /// that a damaged record cannot make cleanup loop for ever.
    pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<WriteRecord> {
        let record: WriteRecord =
            serde_json::from_slice(bytes).map_err(|source| Error::BadMetadata {
                key: key.to_string(),
                what: "write record",
                source,
            })?;
        if record.chunk_count > MAX_RECORD_CHUNKS {
            return Err(Error::BadManifest {
                uri: record.uri,
                reason: format!("write record {key:?} claims {} chunks", record.chunk_count),
            });
        }
        Ok(record)
    }
}

/// One object of a [`BatchRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEntry {
    pub uri: String,
    pub chunk_count: u64,
}

/// Recorded before a write of many small objects puts its first chunk: every object of the
/// batch shares the batch's generation in its chunk keys, so the record alone says which
/// chunks the batch may have written. Marked `committed` once every manifest of the batch is
/// put; it stays until none of its objects is current any more (only the explicit sweep
/// removes it then), so that chunks of a batch object replaced in a race can still be found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub generation: String,
    pub state: WriteState,
    pub started_at: DateTime<Utc>,
    pub objects: Vec<BatchEntry>,
}

impl BatchRecord {
    /// Decodes a record; one claiming more than [`MAX_RECORD_CHUNKS`] chunks in all is
    /// refused, like a [`WriteRecord`].
    pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<BatchRecord> {
        let record: BatchRecord =
            serde_json::from_slice(bytes).map_err(|source| Error::BadMetadata {
                key: key.to_string(),
                what: "batch record",
                source,
            })?;
        let chunks = record
            .objects
            .iter()
            .fold(0u64, |sum, entry| sum.saturating_add(entry.chunk_count));
        if chunks > MAX_RECORD_CHUNKS {
            return Err(Error::BadManifest {
                uri: record
                    .objects
                    .first()
                    .map(|entry| entry.uri.clone())
                    .unwrap_or_default(),
                reason: format!("batch record {key:?} claims {chunks} chunks"),
            });
        }
        Ok(record)
    }
}

/// Most generations a [`PendingWrites`] keeps; older ones are left to the explicit sweep.
pub const MAX_PENDING_WRITES: usize = 64;

/// The writes of one object that began and are not known to be finished, so that the next
/// write of the object finds interrupted and racing writes without listing the cache. Written
/// without a compare-and-set, so a generation can be lost when two writes begin at the same
/// moment; the explicit sweep finds those through their [`WriteRecord`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWrites {
    pub uri: String,
    pub generations: Vec<String>,
}

impl PendingWrites {
    /// Decodes the value; an undecodable one counts as empty (it is only a hint).
    pub(crate) fn decode_or_empty(bytes: &[u8]) -> PendingWrites {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_arithmetic() {
        assert_eq!(chunk_count(0, 4), 0);
        assert_eq!(chunk_count(1, 4), 1);
        assert_eq!(chunk_count(4, 4), 1);
        assert_eq!(chunk_count(5, 4), 2);
        assert_eq!(chunk_len(5, 4, 0), 4);
        assert_eq!(chunk_len(5, 4, 1), 1);
        assert_eq!(chunk_len(5, 4, 2), 0);
        assert_eq!(chunk_count(u64::MAX, 1 << 22), u64::MAX / (1 << 22) + 1);
        assert_eq!(chunk_len(u64::MAX, 4, u64::MAX), 0);
    }

    #[test]
    fn streaming_checksum_matches_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut hasher = ObjectHasher::default();
        for piece in data.chunks(777) {
            hasher.update(piece);
        }
        assert_eq!(hasher.finish(), checksum(&data));
        assert_eq!(ObjectHasher::default().finish(), checksum(&[]));
    }

    fn version(etag: Option<&str>, size: u64, seconds: Option<i64>) -> SourceVersion {
        SourceVersion {
            etag: etag.map(str::to_string),
            size,
            last_modified: seconds.and_then(|s| DateTime::from_timestamp(s, 0)),
        }
    }

    #[test]
    fn same_content_prefers_etags_then_modification_times() {
        let a = version(Some("\"a\""), 10, Some(1));
        assert!(a.same_content(&a.clone()));
        // A new ETag is new content even with the old modification time.
        assert!(!a.same_content(&version(Some("\"b\""), 10, Some(1))));
        // The same ETag is the same content even when the time differs (a copied object).
        assert!(a.same_content(&version(Some("\"a\""), 10, Some(2))));
        assert!(!a.same_content(&version(Some("\"a\""), 11, Some(1))));
        // Without ETags on one side, the modification time decides.
        assert!(a.same_content(&version(None, 10, Some(1))));
        assert!(!a.same_content(&version(None, 10, Some(2))));
        // Neither: the source cannot say it is unchanged.
        assert!(!version(None, 10, None).same_content(&version(None, 10, None)));
    }

    #[test]
    fn manifest_matches_its_source_object() {
        let object = SourceObject {
            uri: "s3://bucket/a".to_string(),
            size: 3,
            version: version(Some("\"e\""), 3, Some(5)),
            attributes: Default::default(),
        };
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            uri: object.uri.clone(),
            version: object.version.clone(),
            size: 3,
            chunk_size: 4,
            chunk_count: 1,
            generation: "0".repeat(16),
            checksum_algorithm: CHECKSUM_ALGORITHM.to_string(),
            chunk_checksums: vec![checksum(b"abc")],
            checksum: checksum(b"abc"),
            staged_at: Utc::now(),
        };
        assert!(manifest.matches(&object));
        let changed = SourceObject {
            version: version(Some("\"f\""), 3, Some(6)),
            ..object.clone()
        };
        assert!(!manifest.matches(&changed));
        let other = SourceObject {
            uri: "s3://bucket/b".to_string(),
            ..object.clone()
        };
        assert!(!manifest.matches(&other));
    }
}
