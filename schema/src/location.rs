//! Which table a URI belongs in: `data` (one object), `directory` (a prefix or a PVC mount),
//! or neither (inline content). The rule is syntactic so that the same URI always lands in the
//! same place, whichever task or pipeline names it.

/// Where an artifact URI is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageKind {
    /// A single object: `s3://b/k`, `gs://…`, `http(s)://…`, `file:///…`,
    /// `artifact-repository://key`, `task://producer/artifact`, and anything else.
    Data,
    /// A directory read or written as a whole: any URI ending in `/` (bucket prefixes,
    /// key-only `artifact-repository://prefix/`) and every `pvc://claim/path` mount.
    Directory,
    /// Inline content (`raw:`): nothing to fetch or share.
    Inline,
}

/// Classify an artifact URI.
pub fn classify(uri: &str) -> StorageKind {
    if uri.starts_with("raw:") {
        StorageKind::Inline
    } else if uri.starts_with("pvc://") || uri.ends_with('/') {
        StorageKind::Directory
    } else {
        StorageKind::Data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_uris() {
        for (uri, kind) in [
            ("s3://bucket/data/train.csv", StorageKind::Data),
            ("gs://bucket/model.pt", StorageKind::Data),
            ("https://example.com/a.tar.gz", StorageKind::Data),
            ("file:///mnt/data/x", StorageKind::Data),
            ("task://train/model", StorageKind::Data),
            ("artifact-repository://some/key", StorageKind::Data),
            ("s3://bucket/images/", StorageKind::Directory),
            ("artifact-repository://prefix/", StorageKind::Directory),
            ("pvc://data-claim/mnt/data", StorageKind::Directory),
            (
                "pvc://data-claim/mnt/out/result.json",
                StorageKind::Directory,
            ),
            ("raw:", StorageKind::Inline),
        ] {
            assert_eq!(classify(uri), kind, "{uri}");
        }
    }
}
