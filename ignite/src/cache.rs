//! Cache operations on string keys and byte-array values.
//!
//! kfcache stores artifact bytes under string keys, so the API is deliberately narrow: keys are
//! `&str` (Ignite type 9, routed by Java's `String.hashCode`), values are [`Bytes`] (type 12).
//! Values are sent as their own write segment and returned as slices of the reply buffer, so a
//! value is never copied inside the client. A value of another type (written by some other
//! client) is reported as [`Error::UnexpectedValueType`], never misread.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::client::{protocol_error, Client, RequestContext};
use crate::error::{Error, Result};
use crate::protocol::{self, CacheMode, Decoder, WriteSynchronizationMode};

/// Settings for [`Client::get_or_create_cache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub name: String,
    pub mode: CacheMode,
    /// Backup copies of each partition (partitioned mode).
    pub backups: i32,
    pub write_synchronization: WriteSynchronizationMode,
}

impl CacheConfig {
    /// A partitioned cache with no backups, acknowledging writes once the primary has them.
    pub fn partitioned(name: impl Into<String>) -> Self {
        CacheConfig {
            name: name.into(),
            mode: CacheMode::Partitioned,
            backups: 0,
            write_synchronization: WriteSynchronizationMode::PrimarySync,
        }
    }

    pub fn with_backups(mut self, backups: i32) -> Self {
        self.backups = backups;
        self
    }

    pub fn with_write_synchronization(mut self, mode: WriteSynchronizationMode) -> Self {
        self.write_synchronization = mode;
        self
    }
}

/// A handle on one cache. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cache {
    client: Client,
    name: Arc<str>,
    id: i32,
}

impl Cache {
    pub(crate) fn new(client: Client, name: &str) -> Cache {
        Cache {
            client,
            name: Arc::from(name),
            id: protocol::cache_id(name),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn header(&self, extra: usize) -> BytesMut {
        let mut buf = BytesMut::with_capacity(5 + extra);
        protocol::put_cache_header(&mut buf, self.id);
        buf
    }

    fn context<'a>(
        &'a self,
        op: i16,
        op_name: &'static str,
        key: Option<&'a str>,
    ) -> RequestContext<'a> {
        RequestContext {
            op,
            op_name,
            cache: &self.name,
            key,
        }
    }

    fn check_len(what: &'static str, len: usize) -> Result<()> {
        if len > i32::MAX as usize - 64 {
            return Err(Error::TooLarge {
                what,
                len,
                limit: i32::MAX as usize - 64,
            });
        }
        Ok(())
    }

    async fn keyed(
        &self,
        op: i16,
        op_name: &'static str,
        key: &str,
        payload: Vec<Bytes>,
    ) -> Result<(Bytes, String)> {
        Self::check_len("key", key.len())?;
        let preferred = self.client.primary_node(self.id, key).await;
        self.client
            .execute_at(self.context(op, op_name, Some(key)), preferred, payload)
            .await
    }

    fn key_payload(&self, key: &str) -> Bytes {
        let mut buf = self.header(5 + key.len());
        protocol::put_string(&mut buf, key);
        buf.freeze()
    }

    /// The value under `key`, or `None`.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let (body, address) = self
            .keyed(
                protocol::OP_CACHE_GET,
                "get",
                key,
                vec![self.key_payload(key)],
            )
            .await?;
        let mut decoder = Decoder::new(body);
        match decoder.byte_array_object("value") {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(type_code)) => Err(Error::UnexpectedValueType {
                cache: self.name.to_string(),
                key: key.to_string(),
                type_code,
            }),
            Err(error) => Err(protocol_error(&address, "get", error)),
        }
    }

    /// Stores `value` under `key`, replacing any previous value.
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<()> {
        let value = value.into();
        Self::check_len("value", value.len())?;
        let mut head = self.header(10 + key.len());
        protocol::put_string(&mut head, key);
        protocol::put_byte_array_header(&mut head, value.len());
        self.keyed(
            protocol::OP_CACHE_PUT,
            "put",
            key,
            vec![head.freeze(), value],
        )
        .await
        .map(drop)
    }

    /// Stores `value` only if `key` is absent; true if it was stored.
    pub async fn put_if_absent(&self, key: &str, value: impl Into<Bytes>) -> Result<bool> {
        let value = value.into();
        Self::check_len("value", value.len())?;
        let mut head = self.header(10 + key.len());
        protocol::put_string(&mut head, key);
        protocol::put_byte_array_header(&mut head, value.len());
        let (body, address) = self
            .keyed(
                protocol::OP_CACHE_PUT_IF_ABSENT,
                "put-if-absent",
                key,
                vec![head.freeze(), value],
            )
            .await?;
        Decoder::new(body)
            .bool("put-if-absent result")
            .map_err(|error| protocol_error(&address, "put-if-absent", error))
    }

    /// Stores `new` under `key` only while its value equals `expected` (byte for byte); true
    /// if it was replaced. One atomic operation on the key's primary node: of two callers that
    /// read the same old value, at most one replaces it (compare-and-set).
    pub async fn replace_if_equals(
        &self,
        key: &str,
        expected: impl Into<Bytes>,
        new: impl Into<Bytes>,
    ) -> Result<bool> {
        let (expected, new) = (expected.into(), new.into());
        Self::check_len("value", expected.len())?;
        Self::check_len("value", new.len())?;
        let mut head = self.header(10 + key.len());
        protocol::put_string(&mut head, key);
        protocol::put_byte_array_header(&mut head, expected.len());
        let mut middle = BytesMut::with_capacity(5);
        protocol::put_byte_array_header(&mut middle, new.len());
        let (body, address) = self
            .keyed(
                protocol::OP_CACHE_REPLACE_IF_EQUALS,
                "replace-if-equals",
                key,
                vec![head.freeze(), expected, middle.freeze(), new],
            )
            .await?;
        Decoder::new(body)
            .bool("replace-if-equals result")
            .map_err(|error| protocol_error(&address, "replace-if-equals", error))
    }

    /// Removes `key` only while its value equals `expected`; true if it was removed.
    pub async fn remove_if_equals(&self, key: &str, expected: impl Into<Bytes>) -> Result<bool> {
        let expected = expected.into();
        Self::check_len("value", expected.len())?;
        let mut head = self.header(10 + key.len());
        protocol::put_string(&mut head, key);
        protocol::put_byte_array_header(&mut head, expected.len());
        let (body, address) = self
            .keyed(
                protocol::OP_CACHE_REMOVE_IF_EQUALS,
                "remove-if-equals",
                key,
                vec![head.freeze(), expected],
            )
            .await?;
        Decoder::new(body)
            .bool("remove-if-equals result")
            .map_err(|error| protocol_error(&address, "remove-if-equals", error))
    }

    /// True if `key` has a value.
    pub async fn contains_key(&self, key: &str) -> Result<bool> {
        let (body, address) = self
            .keyed(
                protocol::OP_CACHE_CONTAINS_KEY,
                "contains-key",
                key,
                vec![self.key_payload(key)],
            )
            .await?;
        Decoder::new(body)
            .bool("contains-key result")
            .map_err(|error| protocol_error(&address, "contains-key", error))
    }

    /// Removes `key`; true if it had a value.
    pub async fn remove(&self, key: &str) -> Result<bool> {
        let (body, address) = self
            .keyed(
                protocol::OP_CACHE_REMOVE_KEY,
                "remove",
                key,
                vec![self.key_payload(key)],
            )
            .await?;
        Decoder::new(body)
            .bool("remove result")
            .map_err(|error| protocol_error(&address, "remove", error))
    }

    /// Values of the keys that exist. Keys are grouped by primary node and the groups are
    /// fetched concurrently.
    pub async fn get_all<K: AsRef<str>>(&self, keys: &[K]) -> Result<HashMap<String, Bytes>> {
        let mut result = HashMap::with_capacity(keys.len());
        let groups = self.group_by_node(keys.iter().map(AsRef::as_ref)).await;
        let mut requests = tokio::task::JoinSet::new();
        for (preferred, group) in groups {
            let mut payload = self.header(4 + group.iter().map(|k| 5 + k.len()).sum::<usize>());
            payload.put_i32_le(group.len() as i32);
            for key in &group {
                Self::check_len("key", key.len())?;
                protocol::put_string(&mut payload, key);
            }
            let cache = self.clone();
            let payload = payload.freeze();
            requests.spawn(async move {
                let (body, address) = cache
                    .client
                    .execute_at(
                        cache.context(protocol::OP_CACHE_GET_ALL, "get-all", None),
                        preferred,
                        vec![payload],
                    )
                    .await?;
                cache.decode_entries(body, &address)
            });
        }
        while let Some(joined) = requests.join_next().await {
            let entries = joined.map_err(|error| Error::Config {
                message: format!("get-all task failed: {error}"),
            })??;
            result.extend(entries);
        }
        Ok(result)
    }

    fn decode_entries(&self, body: Bytes, address: &str) -> Result<Vec<(String, Bytes)>> {
        let mut decoder = Decoder::new(body);
        let count = decoder
            .count("entry count", 2)
            .map_err(|error| protocol_error(address, "get-all", error))?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let key = decoder
                .string_object("key")
                .map_err(|error| protocol_error(address, "get-all", error))?
                .unwrap_or_default();
            match decoder.byte_array_object("value") {
                Ok(Ok(Some(value))) => entries.push((key, value)),
                Ok(Ok(None)) => {}
                Ok(Err(type_code)) => {
                    return Err(Error::UnexpectedValueType {
                        cache: self.name.to_string(),
                        key,
                        type_code,
                    })
                }
                Err(error) => return Err(protocol_error(address, "get-all", error)),
            }
        }
        Ok(entries)
    }

    /// Stores all entries. Entries are grouped by primary node and the groups are written
    /// concurrently; each group is one request whose values go out as their own segments.
    pub async fn put_all<K, I>(&self, entries: I) -> Result<()>
    where
        K: AsRef<str>,
        I: IntoIterator<Item = (K, Bytes)>,
    {
        let entries: Vec<(K, Bytes)> = entries.into_iter().collect();
        let mut by_key: HashMap<&str, &Bytes> = HashMap::with_capacity(entries.len());
        for (key, value) in &entries {
            Self::check_len("key", key.as_ref().len())?;
            Self::check_len("value", value.len())?;
            by_key.insert(key.as_ref(), value);
        }
        let groups = self.group_by_node(by_key.keys().copied()).await;
        let mut requests = tokio::task::JoinSet::new();
        for (preferred, group) in groups {
            let mut segments = Vec::with_capacity(group.len() * 2 + 1);
            let mut head = self.header(4);
            head.put_i32_le(group.len() as i32);
            for key in &group {
                let value = by_key
                    .get(key.as_str())
                    .map(|v| (*v).clone())
                    .unwrap_or_default();
                protocol::put_string(&mut head, key);
                protocol::put_byte_array_header(&mut head, value.len());
                segments.push(head.split().freeze());
                segments.push(value);
            }
            if !head.is_empty() {
                segments.push(head.freeze());
            }
            let cache = self.clone();
            requests.spawn(async move {
                cache
                    .client
                    .execute(
                        cache.context(protocol::OP_CACHE_PUT_ALL, "put-all", None),
                        preferred,
                        segments,
                    )
                    .await
                    .map(drop)
            });
        }
        while let Some(joined) = requests.join_next().await {
            joined.map_err(|error| Error::Config {
                message: format!("put-all task failed: {error}"),
            })??;
        }
        Ok(())
    }

    /// Splits keys into groups per primary node (one group with `None` when unknown).
    async fn group_by_node<'k>(
        &self,
        keys: impl Iterator<Item = &'k str>,
    ) -> Vec<(Option<usize>, Vec<String>)> {
        let mut groups: HashMap<Option<usize>, Vec<String>> = HashMap::new();
        for key in keys {
            let node = self.client.primary_node(self.id, key).await;
            groups.entry(node).or_default().push(key.to_string());
        }
        groups
            .into_iter()
            .filter(|(_, keys)| !keys.is_empty())
            .collect()
    }

    /// Removes the given keys.
    pub async fn remove_keys<K: AsRef<str>>(&self, keys: &[K]) -> Result<()> {
        let mut payload = self.header(4 + keys.iter().map(|k| 5 + k.as_ref().len()).sum::<usize>());
        payload.put_i32_le(keys.len() as i32);
        for key in keys {
            Self::check_len("key", key.as_ref().len())?;
            protocol::put_string(&mut payload, key.as_ref());
        }
        self.client
            .execute(
                self.context(protocol::OP_CACHE_REMOVE_KEYS, "remove-keys", None),
                None,
                vec![payload.freeze()],
            )
            .await
            .map(drop)
    }

    /// Removes every entry, notifying listeners (`removeAll`).
    pub async fn remove_all(&self) -> Result<()> {
        self.client
            .execute(
                self.context(protocol::OP_CACHE_REMOVE_ALL, "remove-all", None),
                None,
                vec![self.header(0).freeze()],
            )
            .await
            .map(drop)
    }

    /// Clears the cache without notifications (`clear`).
    pub async fn clear(&self) -> Result<()> {
        self.client
            .execute(
                self.context(protocol::OP_CACHE_CLEAR, "clear", None),
                None,
                vec![self.header(0).freeze()],
            )
            .await
            .map(drop)
    }

    /// Number of entries across the cluster (primary copies).
    pub async fn size(&self) -> Result<u64> {
        let mut payload = self.header(4);
        payload.put_i32_le(0); // no peek modes: all
        let (body, address) = self
            .client
            .execute_at(
                self.context(protocol::OP_CACHE_GET_SIZE, "size", None),
                None,
                vec![payload.freeze()],
            )
            .await?;
        let size = Decoder::new(body)
            .i64("cache size")
            .map_err(|error| protocol_error(&address, "size", error))?;
        Ok(u64::try_from(size).unwrap_or(0))
    }

    /// All keys, by a scan query. Values travel with the keys (the protocol has no keys-only
    /// scan), so this costs as much as reading the whole cache: use it for listings and
    /// diagnostics, not on hot paths.
    pub async fn scan_keys(&self, page_size: i32) -> Result<Vec<String>> {
        let connection = self.client.any_connection().await?;
        let address = connection.address().to_string();
        let mut payload = self.header(10);
        payload.put_u8(protocol::TYPE_NULL); // no filter
        payload.put_i32_le(page_size.max(1));
        payload.put_i32_le(-1); // all partitions
        payload.put_u8(0); // not local
        let body = self
            .client
            .request_on(
                &connection,
                self.context(protocol::OP_QUERY_SCAN, "scan", None),
                vec![payload.freeze()],
            )
            .await?;
        let mut decoder = Decoder::new(body);
        let cursor = decoder
            .i64("cursor id")
            .map_err(|error| protocol_error(&address, "scan", error))?;
        let mut keys = Vec::new();
        loop {
            let more = Self::scan_page(&mut decoder, &mut keys)
                .map_err(|error| protocol_error(&address, "scan", error))?;
            if !more {
                return Ok(keys);
            }
            let mut payload = BytesMut::with_capacity(8);
            payload.put_i64_le(cursor);
            let body = self
                .client
                .request_on(
                    &connection,
                    self.context(protocol::OP_QUERY_SCAN_CURSOR_GET_PAGE, "scan page", None),
                    vec![payload.freeze()],
                )
                .await?;
            decoder = Decoder::new(body);
        }
    }

    fn scan_page(
        decoder: &mut Decoder,
        keys: &mut Vec<String>,
    ) -> std::result::Result<bool, protocol::DecodeError> {
        let rows = decoder.count("row count", 2)?;
        for _ in 0..rows {
            keys.extend(decoder.string_object("key")?);
            decoder.skip_simple_object("value")?;
        }
        decoder.bool("more pages flag")
    }

    /// The value of `key` as stored on the node at `address` itself (primary or backup copy),
    /// without going to other nodes. A diagnostic: it shows where data lives.
    pub async fn peek_on_node(&self, address: &str, key: &str) -> Result<Option<Bytes>> {
        let mut payload = self.header(9 + key.len());
        protocol::put_string(&mut payload, key);
        payload.put_i32_le(0); // no peek modes: all
        let body = self
            .client
            .execute_on_node(
                address,
                self.context(protocol::OP_CACHE_LOCAL_PEEK, "local peek", Some(key)),
                vec![payload.freeze()],
            )
            .await?;
        match Decoder::new(body).byte_array_object("value") {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(type_code)) => Err(Error::UnexpectedValueType {
                cache: self.name.to_string(),
                key: key.to_string(),
                type_code,
            }),
            Err(error) => Err(protocol_error(address, "local peek", error)),
        }
    }

    /// The address of the node the client believes is primary for `key`, if it knows.
    pub async fn primary_address(&self, key: &str) -> Option<String> {
        let index = self.client.primary_node(self.id, key).await?;
        self.client.addresses().into_iter().nth(index)
    }
}
