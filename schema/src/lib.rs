//! kfcache's SQLite schema and a typed store over it.
//!
//! The schema (in `migrations/`, embedded at compile time) follows the DAG database of the
//! design this project comes from: a `pipeline` has versions, a version has `task`s with
//! predicted start and end times, and tasks read and write `data` (single objects) and
//! `directory`s (prefixes and PVC mounts) through `data_has_task` and `task_has_directory`.
//! A data row is shared by every task that names the same URI, so data read by several tasks
//! — or produced by one and read by another — is visible as one row. Run history (`run`,
//! `task_run`) and cache state (`cache_entry`) are created here for later crates.
//!
//! The store is async (sqlx); configuration such as the database path is passed in, never
//! read from the environment here (see [`default_db_path`]).

mod error;
mod history;
mod location;
mod prefetch;
mod read;
mod record;
mod records;
mod store;

use std::ffi::OsStr;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

pub use error::{Error, Result};
pub use history::{
    ArtifactObservation, ImportSummary, ObservationSource, PredictionRecord, RunObservation,
    StoredRun, TaskObservation, TaskPredictionRecord,
};
pub use location::{classify, StorageKind};
pub use prefetch::TransferRecord;
pub use records::{
    AnalysisRecord, ArtifactRecord, ArtifactRole, ArtifactStorage, DataRecord, DirectoryRecord,
    PipelineRecord, TaskRecord, VersionRecord,
};
pub use store::Store;

/// Where the database lives when the user does not say: `$KFCACHE_DB`, else
/// `$XDG_DATA_HOME/kfcache/kfcache.db`, else `$HOME/.local/share/kfcache/kfcache.db`.
///
/// The values are passed in (the binary reads the environment). Empty values count as unset,
/// as the XDG base directory specification asks; `None` when none of them is usable.
pub fn default_db_path(
    kfcache_db: Option<&OsStr>,
    xdg_data_home: Option<&OsStr>,
    home: Option<&OsStr>,
) -> Option<PathBuf> {
    let set = |value: Option<&OsStr>| value.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = set(kfcache_db) {
        return Some(path);
    }
    // The specification also says a relative XDG_DATA_HOME is invalid and must be ignored.
    if let Some(data_home) = set(xdg_data_home).filter(|p| p.is_absolute()) {
        return Some(data_home.join("kfcache").join("kfcache.db"));
    }
    set(home).map(|home| home.join(".local/share/kfcache/kfcache.db"))
}

/// The content hash the store keys pipeline versions by: sha256 of the bytes, in lower-case hex.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn content_hash_is_sha256_hex() {
        assert_eq!(
            content_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn default_db_path_precedence() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            default_db_path(os("/x/k.db"), os("/data"), os("/home/u")).as_deref(),
            Some(Path::new("/x/k.db"))
        );
        assert_eq!(
            default_db_path(None, os("/data"), os("/home/u")).as_deref(),
            Some(Path::new("/data/kfcache/kfcache.db"))
        );
        assert_eq!(
            default_db_path(None, None, os("/home/u")).as_deref(),
            Some(Path::new("/home/u/.local/share/kfcache/kfcache.db"))
        );
        assert_eq!(default_db_path(None, None, None), None);
    }

    // Empty and relative values are "unset" per the XDG specification; falling through keeps a
    // stray `KFCACHE_DB=` from opening a database named "".
    #[test]
    fn default_db_path_ignores_empty_and_relative_values() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            default_db_path(os(""), os(""), os("/home/u")).as_deref(),
            Some(Path::new("/home/u/.local/share/kfcache/kfcache.db"))
        );
        assert_eq!(
            default_db_path(None, os("relative/data"), os("/home/u")).as_deref(),
            Some(Path::new("/home/u/.local/share/kfcache/kfcache.db"))
        );
        assert_eq!(default_db_path(None, None, os("")), None);
    }
}
