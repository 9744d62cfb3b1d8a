//! A cluster-wide lock in the cache: one holder at a time for a named job, so two copies of
//! `kfcache cron` started at once (a CronJob overlapping a manual run, two clusters sharing
//! one Ignite) do not stage and evict over each other.
//!
//! | space | key | value |
//! |---|---|---|
//! | meta | `NS/lock/NAME` | [`LockRecord`] (JSON) |
//!
//! Every step is one atomic conditional write on the key ([`CacheSink`]'s compare-and-set
//! operations), so no step can be interleaved with another process's:
//!
//! - **acquire**: put-if-absent. When the key is taken by a record whose time is up (its
//!   holder crashed or stalled), it is taken over with replace-if-equals on the exact bytes
//!   read: of two processes that saw the same expired record, only one replaces it.
//! - **renew**: replace-if-equals from the holder's current bytes to a record with a later
//!   expiry. It fails only when someone took the lock over after it expired: the holder has
//!   lost it ([`Renewal::Lost`]) and must stop.
//! - **release**: remove-if-equals on the holder's current bytes, so a holder that lost the
//!   lock never removes its successor's.
//!
//! Every record carries a random token, so a process recognises its own record when a
//! conditional write landed but its reply was lost (the client then retries on another node,
//! which answers `false`): it reads the key back and finds its own bytes.
//!
//! Expiry is judged on each process's own clock; keep the time to live well above the clock
//! skew between the machines (minutes, not seconds).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::ObjectCache;
use crate::sink::{CacheSink, Space};

/// How often acquisition retries when the key changes under it (released, or taken over by
/// someone else) before it reports the lock as busy.
const ACQUIRE_ATTEMPTS: usize = 4;

/// The value stored under a lock's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The lock's name (`cron`).
    pub name: String,
    /// Who holds it, as the holder described itself (`host/pid`).
    pub holder: String,
    /// Random, different for every acquisition and renewal.
    pub token: String,
    pub acquired_at: DateTime<Utc>,
    /// Until when the lock holds unless renewed.
    pub expires_at: DateTime<Utc>,
}

impl LockRecord {
    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now
    }
}

/// What [`acquire`] found.
#[derive(Debug)]
pub enum Acquisition<S: CacheSink + ?Sized> {
    /// The lock is ours until [`HeldLock::release`].
    Acquired(HeldLock<S>),
    /// Someone else holds it (their record).
    Busy(LockRecord),
}

/// What [`HeldLock::renew`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours, with a later expiry.
    Renewed,
    /// Taken over by someone else after our record expired (their record, if it is still
    /// there), or removed.
    Lost(Option<LockRecord>),
}

/// A lock this process holds.
#[derive(Debug)]
pub struct HeldLock<S: CacheSink + ?Sized> {
    sink: Arc<S>,
    key: String,
    ttl: chrono::Duration,
    record: LockRecord,
    bytes: Bytes,
    previous: Option<LockRecord>,
}

fn lock_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/lock/{name}")
}

fn encode(key: &str, record: &LockRecord) -> Result<Bytes> {
    serde_json::to_vec(record)
        .map(Bytes::from)
        .map_err(|source| Error::BadMetadata {
            key: key.to_string(),
            what: "lock record",
            source,
        })
}

fn ttl_of(ttl: Duration) -> Result<chrono::Duration> {
    chrono::Duration::from_std(ttl)
        .map_err(|_| Error::Config(format!("lock time to live {ttl:?} is too long")))
}

fn new_record(name: &str, holder: &str, now: DateTime<Utc>, ttl: chrono::Duration) -> LockRecord {
    LockRecord {
        name: name.to_string(),
        holder: holder.to_string(),
        token: format!("{:016x}", rand::random::<u64>()),
        acquired_at: now,
        expires_at: now + ttl,
    }
}

/// Takes the lock `name` of the cache's namespace for `holder` for `ttl`, unless someone
/// else holds an unexpired one.
pub async fn acquire<S: CacheSink + ?Sized>(
    cache: &ObjectCache<S>,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Acquisition<S>> {
    acquire_at(cache, name, holder, ttl, Utc::now).await
}

async fn acquire_at<S: CacheSink + ?Sized>(
    cache: &ObjectCache<S>,
    name: &str,
    holder: &str,
    ttl: Duration,
    clock: impl Fn() -> DateTime<Utc>,
) -> Result<Acquisition<S>> {
    if name.is_empty() || name.contains('/') {
        return Err(Error::Config(format!(
            "invalid lock name {name:?} (non-empty, without `/`)"
        )));
    }
    if holder.is_empty() {
        return Err(Error::Config("a lock needs a holder name".to_string()));
    }
    let ttl = ttl_of(ttl)?;
    let sink = cache.sink().clone();
    let key = lock_key(&cache.config().namespace, name);
    let mut last_seen = None;
    for _ in 0..ACQUIRE_ATTEMPTS {
        let now = clock();
        let record = new_record(name, holder, now, ttl);
        let bytes = encode(&key, &record)?;
        let held = |previous| HeldLock {
            sink: sink.clone(),
            key: key.clone(),
            ttl,
            record: record.clone(),
            bytes: bytes.clone(),
            previous,
        };
        if sink.put_if_absent(Space::Meta, &key, bytes.clone()).await? {
            return Ok(Acquisition::Acquired(held(None)));
        }
        let Some(current) = sink.get(Space::Meta, &key).await? else {
            continue; // released meanwhile: try again
        };
        if current == bytes {
            // Our put landed; its reply was lost and the retry answered `false`.
            return Ok(Acquisition::Acquired(held(None)));
        }
        let previous = match serde_json::from_slice::<LockRecord>(&current) {
            Ok(previous) if !previous.expired(now) => return Ok(Acquisition::Busy(previous)),
            Ok(previous) => Some(previous),
            Err(error) => {
                tracing::warn!(%key, "taking over an undecodable lock record: {error}");
                None
            }
        };
        if sink
            .replace_if_equals(Space::Meta, &key, current, bytes.clone())
            .await?
            || sink.get(Space::Meta, &key).await?.as_ref() == Some(&bytes)
        {
            return Ok(Acquisition::Acquired(held(previous)));
        }
        // Someone else changed it first (took it over, renewed, released): look again.
        last_seen = previous;
    }
    match sink.get(Space::Meta, &key).await? {
        Some(current) => match serde_json::from_slice::<LockRecord>(&current) {
            Ok(record) => Ok(Acquisition::Busy(record)),
            Err(source) => Err(Error::BadMetadata {
                key,
                what: "lock record",
                source,
            }),
        },
        None => Err(Error::Config(format!(
            "lock {key:?} kept changing while it was being acquired (last holder {})",
            last_seen.map_or_else(|| "unknown".to_string(), |r| r.holder)
        ))),
    }
}

impl<S: CacheSink + ?Sized> HeldLock<S> {
    /// The record as stored now.
    pub fn record(&self) -> &LockRecord {
        &self.record
    }

    /// The expired record this acquisition took over, if any.
    pub fn took_over(&self) -> Option<&LockRecord> {
        self.previous.as_ref()
    }

    /// Moves the expiry to now + the time to live, if the lock is still ours.
    pub async fn renew(&mut self) -> Result<Renewal> {
        let now = Utc::now();
        let record = LockRecord {
            token: format!("{:016x}", rand::random::<u64>()),
            expires_at: now + self.ttl,
            ..self.record.clone()
        };
        let bytes = encode(&self.key, &record)?;
        let replaced = self
            .sink
            .replace_if_equals(Space::Meta, &self.key, self.bytes.clone(), bytes.clone())
            .await?;
        let current = if replaced {
            None
        } else {
            self.sink.get(Space::Meta, &self.key).await?
        };
        if replaced || current.as_ref() == Some(&bytes) {
            self.record = record;
            self.bytes = bytes;
            return Ok(Renewal::Renewed);
        }
        Ok(Renewal::Lost(current.and_then(|c| {
            serde_json::from_slice::<LockRecord>(&c).ok()
        })))
    }

    /// Gives the lock up; false when it was no longer ours (nothing is removed then).
    pub async fn release(&self) -> Result<bool> {
        self.sink
            .remove_if_equals(Space::Meta, &self.key, self.bytes.clone())
            .await
    }
}

impl<S: CacheSink + ?Sized + 'static> HeldLock<S> {
    /// Renews the lock in the background every `every` (a third of the time to live is a
    /// good choice) until [`KeepAlive::release`]. A failed renewal is retried at the next
    /// tick; a lost lock ends the renewals and shows in [`KeepAlive::lost`].
    pub fn keep_alive(self, every: Duration) -> KeepAlive<S> {
        let lock = Arc::new(tokio::sync::Mutex::new(self));
        let lost = Arc::new(AtomicBool::new(false));
        let task = {
            let lock = lock.clone();
            let lost = lost.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let mut held = lock.lock().await;
                    match held.renew().await {
                        Ok(Renewal::Renewed) => {
                            tracing::debug!(key = %held.key, until = %held.record.expires_at, "renewed the lock");
                        }
                        Ok(Renewal::Lost(by)) => {
                            tracing::warn!(
                                key = %held.key,
                                by = by.as_ref().map_or("nobody", |r| r.holder.as_str()),
                                "lost the lock"
                            );
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(key = %held.key, "cannot renew the lock (retrying): {error}");
                        }
                    }
                }
            })
        };
        KeepAlive { lock, lost, task }
    }
}

/// A held lock renewed in the background.
#[derive(Debug)]
pub struct KeepAlive<S: CacheSink + ?Sized> {
    lock: Arc<tokio::sync::Mutex<HeldLock<S>>>,
    lost: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl<S: CacheSink + ?Sized> KeepAlive<S> {
    /// Whether a renewal found the lock taken over: the work it protects must stop.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The record as last stored.
    pub async fn record(&self) -> LockRecord {
        self.lock.lock().await.record.clone()
    }

    /// Stops renewing and gives the lock up; false when it was no longer ours.
    pub async fn release(self) -> Result<bool> {
        let KeepAlive { lock, lost, task } = self;
        task.abort();
        let _ = task.await;
        if lost.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let held = lock.lock().await;
        held.release().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;
    use crate::{LayoutConfig, MemorySink};

    fn cache() -> ObjectCache<MemorySink> {
        ObjectCache::new(Arc::new(MemorySink::new()), LayoutConfig::default()).unwrap()
    }

    /// A memory sink that yields to the scheduler before every operation, so concurrent
    /// acquisitions interleave between their reads and their conditional writes.
    #[derive(Debug, Default)]
    struct Yielding(MemorySink);

    #[async_trait::async_trait]
    impl CacheSink for Yielding {
        fn describe(&self) -> String {
            "yielding memory".into()
        }
        async fn get(&self, s: Space, k: &str) -> Result<Option<Bytes>> {
            tokio::task::yield_now().await;
            self.0.get(s, k).await
        }
        async fn get_all(&self, s: Space, k: &[String]) -> Result<HashMap<String, Bytes>> {
            self.0.get_all(s, k).await
        }
        async fn put(&self, s: Space, k: &str, v: Bytes) -> Result<()> {
            self.0.put(s, k, v).await
        }
        async fn put_all(&self, s: Space, e: Vec<(String, Bytes)>) -> Result<()> {
            self.0.put_all(s, e).await
        }
        async fn remove_all(&self, s: Space, k: &[String]) -> Result<()> {
            self.0.remove_all(s, k).await
        }
        async fn keys_with_prefix(&self, s: Space, p: &str) -> Result<Vec<String>> {
            self.0.keys_with_prefix(s, p).await
        }
        async fn put_if_absent(&self, s: Space, k: &str, v: Bytes) -> Result<bool> {
            tokio::task::yield_now().await;
            self.0.put_if_absent(s, k, v).await
        }
        async fn replace_if_equals(&self, s: Space, k: &str, e: Bytes, n: Bytes) -> Result<bool> {
            tokio::task::yield_now().await;
            self.0.replace_if_equals(s, k, e, n).await
        }
        async fn remove_if_equals(&self, s: Space, k: &str, e: Bytes) -> Result<bool> {
            tokio::task::yield_now().await;
            self.0.remove_if_equals(s, k, e).await
        }
    }

    fn yielding_cache() -> ObjectCache<Yielding> {
        ObjectCache::new(Arc::new(Yielding::default()), LayoutConfig::default()).unwrap()
    }

    fn acquired<S: CacheSink + ?Sized>(a: Acquisition<S>) -> HeldLock<S> {
        match a {
            Acquisition::Acquired(held) => held,
            Acquisition::Busy(record) => panic!("busy: held by {}", record.holder),
        }
    }

    fn busy<S: CacheSink + ?Sized>(a: Acquisition<S>) -> LockRecord {
        match a {
            Acquisition::Busy(record) => record,
            Acquisition::Acquired(held) => panic!("acquired by {}", held.record.holder),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn one_holder_at_a_time_until_released() {
        let cache = cache();
        let a = acquired(acquire(&cache, "cron", "host-a/1", MINUTE).await.unwrap());
        assert_eq!(a.record().holder, "host-a/1");
        assert!(a.took_over().is_none());
        let seen = busy(acquire(&cache, "cron", "host-b/1", MINUTE).await.unwrap());
        assert_eq!(seen, *a.record());
        // Another name is another lock.
        acquired(acquire(&cache, "other", "host-b/1", MINUTE).await.unwrap());
        assert!(a.release().await.unwrap());
        let b = acquired(acquire(&cache, "cron", "host-b/1", MINUTE).await.unwrap());
        // The key is the documented one.
        let stored = cache
            .sink()
            .get(Space::Meta, "default/lock/cron")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<LockRecord>(&stored).unwrap(),
            *b.record()
        );
    }

    #[tokio::test]
    async fn two_takers_of_an_expired_lock_cannot_both_win() {
        let cache = yielding_cache();
        let stale = acquired(
            acquire(&cache, "cron", "crashed/1", Duration::ZERO)
                .await
                .unwrap(),
        );
        // Both contenders see the same expired record; compare-and-set lets one through.
        let (a, b) = tokio::join!(
            acquire(&cache, "cron", "host-a/1", MINUTE),
            acquire(&cache, "cron", "host-b/1", MINUTE)
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        let winners: Vec<&HeldLock<Yielding>> = outcomes
            .iter()
            .filter_map(|o| match o {
                Acquisition::Acquired(held) => Some(held),
                Acquisition::Busy(_) => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        assert_eq!(
            winners[0].took_over().map(|r| r.holder.as_str()),
            Some("crashed/1")
        );
        // The crashed holder, back, has lost it and cannot remove its successor's record.
        let mut stale = stale;
        assert!(
            matches!(stale.renew().await.unwrap(), Renewal::Lost(Some(r)) if r.holder == winners[0].record().holder)
        );
        assert!(!stale.release().await.unwrap());
        assert!(matches!(
            acquire(&cache, "cron", "host-c/1", MINUTE).await.unwrap(),
            Acquisition::Busy(_)
        ));
    }

    #[tokio::test]
    async fn many_concurrent_takers_one_winner() {
        let cache = yielding_cache();
        acquired(
            acquire(&cache, "cron", "crashed/1", Duration::ZERO)
                .await
                .unwrap(),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16 {
            let cache = cache.clone();
            tasks.spawn(async move {
                matches!(
                    acquire(&cache, "cron", &format!("host-{i}/1"), MINUTE)
                        .await
                        .unwrap(),
                    Acquisition::Acquired(_)
                )
            });
        }
        let mut winners = 0;
        while let Some(won) = tasks.join_next().await {
            winners += usize::from(won.unwrap());
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test]
    async fn renewal_moves_the_expiry_and_keeps_others_out() {
        let cache = cache();
        let clock = || Utc::now() - chrono::Duration::seconds(50);
        // Acquired 50 s ago for a minute: 10 s left.
        let mut held = acquired(
            acquire_at(&cache, "cron", "host-a/1", MINUTE, clock)
                .await
                .unwrap(),
        );
        let before = held.record().expires_at;
        assert_eq!(held.renew().await.unwrap(), Renewal::Renewed);
        assert!(held.record().expires_at > before + chrono::Duration::seconds(45));
        assert_eq!(
            held.record().acquired_at,
            before - chrono::Duration::seconds(60)
        );
        // Seen from 30 s in the future, the renewed lock is still held.
        let later = || Utc::now() + chrono::Duration::seconds(30);
        assert!(matches!(
            acquire_at(&cache, "cron", "host-b/1", MINUTE, later)
                .await
                .unwrap(),
            Acquisition::Busy(_)
        ));
        assert!(held.release().await.unwrap());
    }

    #[tokio::test]
    async fn an_undecodable_record_is_taken_over() {
        let cache = cache();
        cache
            .sink()
            .put(Space::Meta, "default/lock/cron", Bytes::from_static(b"{"))
            .await
            .unwrap();
        let held = acquired(acquire(&cache, "cron", "host-a/1", MINUTE).await.unwrap());
        assert!(held.took_over().is_none());
        assert!(held.release().await.unwrap());
    }

    #[tokio::test]
    async fn keep_alive_renews_until_released() {
        let cache = cache();
        let held = acquired(
            acquire(&cache, "cron", "host-a/1", Duration::from_millis(300))
                .await
                .unwrap(),
        );
        let first = held.record().expires_at;
        let alive = held.keep_alive(Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!alive.lost());
        assert!(alive.record().await.expires_at > first);
        assert!(matches!(
            acquire(&cache, "cron", "host-b/1", MINUTE).await.unwrap(),
            Acquisition::Busy(_)
        ));
        assert!(alive.release().await.unwrap());
        acquired(acquire(&cache, "cron", "host-b/1", MINUTE).await.unwrap());
    }

    #[tokio::test]
    async fn bad_names_are_refused_and_sinks_without_compare_and_set_say_so() {
        let cache = cache();
        assert!(acquire(&cache, "a/b", "h", MINUTE).await.is_err());
        assert!(acquire(&cache, "cron", "", MINUTE).await.is_err());

        #[derive(Debug)]
        struct Plain(MemorySink);
        #[async_trait::async_trait]
        impl CacheSink for Plain {
            fn describe(&self) -> String {
                "plain".into()
            }
            async fn get(&self, s: Space, k: &str) -> Result<Option<Bytes>> {
                self.0.get(s, k).await
            }
            async fn get_all(&self, s: Space, k: &[String]) -> Result<HashMap<String, Bytes>> {
                self.0.get_all(s, k).await
            }
            async fn put(&self, s: Space, k: &str, v: Bytes) -> Result<()> {
                self.0.put(s, k, v).await
            }
            async fn put_all(&self, s: Space, e: Vec<(String, Bytes)>) -> Result<()> {
                self.0.put_all(s, e).await
            }
            async fn remove_all(&self, s: Space, k: &[String]) -> Result<()> {
                self.0.remove_all(s, k).await
            }
            async fn keys_with_prefix(&self, s: Space, p: &str) -> Result<Vec<String>> {
                self.0.keys_with_prefix(s, p).await
            }
        }
        let plain =
            ObjectCache::new(Arc::new(Plain(MemorySink::new())), LayoutConfig::default()).unwrap();
        let error = acquire(&plain, "cron", "h", MINUTE).await.unwrap_err();
        assert!(
            error.to_string().contains("plain cannot put-if-absent"),
            "{error}"
        );
    }
}
