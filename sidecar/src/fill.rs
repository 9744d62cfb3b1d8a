//! On-demand filling: `kfcache sidecar init --fill-budget SIZE`.
//!
//! Without a prefetcher, a cache can still fill itself on first read: every input that misses
//! is written into the cache while it is copied from the origin, and a least-recently-used
//! rule keeps the namespace within a byte budget. This is how on-demand caches behave (Alluxio,
//! Fluid without warm-up), and it is the baseline `kfcache bench e2e` compares prefetching
//! against, with the same chunk layout, checksums and budget.
//!
//! - **Recency and room**: the rule itself ([`touch`] on every hit and fill, [`make_room`]
//!   before a fill) lives in [`kfcache_prefetcher::fill`], shared with `kfcache gateway
//!   --fill-budget`, so that both baselines evict the same way.
//! - **Failures of the fill never fail the task**: the copy to the task's file goes on and the
//!   partial write is aborted (its chunks removed), so nothing half-written becomes visible.

pub use kfcache_prefetcher::fill::{make_room, touch, Room};

/// The on-demand fill settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Bytes the namespace may hold.
    pub budget: u64,
}
