//! An in-memory [`CacheSink`] for unit tests and dry runs: two ordered maps behind a mutex.
//!
//! The mutex is a `std` one held only for map operations that never await, so it cannot block
//! the runtime for longer than a copy of the keys involved. Holding it across a compare and
//! its write makes the conditional writes atomic, as the trait requires.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::sink::{CacheSink, Space};

type Map = BTreeMap<String, Bytes>;

/// In-memory sink. Cheap to clone; clones share the data.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    spaces: Arc<Mutex<(Map, Map)>>,
}

impl MemorySink {
    pub fn new() -> Self {
        MemorySink::default()
    }

    fn lock(&self) -> MutexGuard<'_, (Map, Map)> {
        // A panic while holding the lock cannot leave the maps half-updated (every operation
        // is a single map call), so a poisoned lock is still usable.
        self.spaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with<T>(&self, space: Space, f: impl FnOnce(&mut Map) -> T) -> T {
        let mut guard = self.lock();
        match space {
            Space::Chunks => f(&mut guard.0),
            Space::Meta => f(&mut guard.1),
        }
    }

    /// Number of entries in a space (for tests that check cleanup).
    pub fn len(&self, space: Space) -> usize {
        self.with(space, |map| map.len())
    }

    /// True when both spaces are empty.
    pub fn is_empty(&self) -> bool {
        self.len(Space::Chunks) == 0 && self.len(Space::Meta) == 0
    }
}

#[async_trait]
impl CacheSink for MemorySink {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    async fn get(&self, space: Space, key: &str) -> Result<Option<Bytes>> {
        Ok(self.with(space, |map| map.get(key).cloned()))
    }

    async fn get_all(&self, space: Space, keys: &[String]) -> Result<HashMap<String, Bytes>> {
        Ok(self.with(space, |map| {
            keys.iter()
                .filter_map(|key| map.get(key).map(|value| (key.clone(), value.clone())))
                .collect()
        }))
    }

    async fn put(&self, space: Space, key: &str, value: Bytes) -> Result<()> {
        self.with(space, |map| map.insert(key.to_string(), value));
        Ok(())
    }

    async fn put_all(&self, space: Space, entries: Vec<(String, Bytes)>) -> Result<()> {
        self.with(space, |map| map.extend(entries));
        Ok(())
    }

    async fn remove_all(&self, space: Space, keys: &[String]) -> Result<()> {
        self.with(space, |map| {
            for key in keys {
                map.remove(key);
            }
        });
        Ok(())
    }

    async fn keys_with_prefix(&self, space: Space, prefix: &str) -> Result<Vec<String>> {
        Ok(self.with(space, |map| {
            map.range(prefix.to_string()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, _)| key.clone())
                .collect()
        }))
    }

    async fn put_if_absent(&self, space: Space, key: &str, value: Bytes) -> Result<bool> {
        Ok(self.with(space, |map| {
            if map.contains_key(key) {
                false
            } else {
                map.insert(key.to_string(), value);
                true
            }
        }))
    }

    async fn replace_if_equals(
        &self,
        space: Space,
        key: &str,
        expected: Bytes,
        new: Bytes,
    ) -> Result<bool> {
        Ok(self.with(space, |map| match map.get_mut(key) {
            Some(current) if *current == expected => {
                *current = new;
                true
            }
            _ => false,
        }))
    }

    async fn remove_if_equals(&self, space: Space, key: &str, expected: Bytes) -> Result<bool> {
        Ok(self.with(space, |map| {
            if map.get(key) == Some(&expected) {
                map.remove(key);
                true
            } else {
                false
            }
        }))
    }
}
