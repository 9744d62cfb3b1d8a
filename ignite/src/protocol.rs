//! Wire format of the Ignite 2.x thin-client binary protocol, version 1.7.0.
//!
//! Pure functions only: encoding request bodies into [`Bytes`] segments and decoding reply
//! bodies with a bounds-checked [`Decoder`]. Nothing here does I/O, and nothing here panics on
//! any input: every read checks the remaining length and returns a [`DecodeError`].
//!
//! Frames (all integers little-endian):
//! - request: `len: i32, op: i16, request_id: i64, payload`
//! - response: `len: i32, request_id: i64, flags: i16, [topology: i64 + i32 if flags & 2],
//!   [status: i32, message: String if flags & 1], payload`
//!
//! Values are written as a small header segment followed by the caller's [`Bytes`], so a 4 MiB
//! value is never copied before it reaches the socket.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol version spoken by this client.
pub const VERSION: (i16, i16, i16) = (1, 7, 0);

pub const OP_HANDSHAKE: u8 = 1;
pub const OP_RESOURCE_CLOSE: i16 = 0;
pub const OP_CACHE_GET: i16 = 1000;
pub const OP_CACHE_PUT: i16 = 1001;
pub const OP_CACHE_PUT_IF_ABSENT: i16 = 1002;
pub const OP_CACHE_GET_ALL: i16 = 1003;
pub const OP_CACHE_PUT_ALL: i16 = 1004;
/// `key, expected, new` → bool: stores `new` only while the value equals `expected`.
pub const OP_CACHE_REPLACE_IF_EQUALS: i16 = 1010;
pub const OP_CACHE_CONTAINS_KEY: i16 = 1011;
pub const OP_CACHE_CLEAR: i16 = 1013;
pub const OP_CACHE_REMOVE_KEY: i16 = 1016;
/// `key, expected` → bool: removes the entry only while its value equals `expected`.
pub const OP_CACHE_REMOVE_IF_EQUALS: i16 = 1017;
pub const OP_CACHE_REMOVE_KEYS: i16 = 1018;
pub const OP_CACHE_REMOVE_ALL: i16 = 1019;
pub const OP_CACHE_GET_SIZE: i16 = 1020;
pub const OP_CACHE_LOCAL_PEEK: i16 = 1021;
pub const OP_CACHE_GET_NAMES: i16 = 1050;
pub const OP_CACHE_GET_OR_CREATE_WITH_CONFIGURATION: i16 = 1054;
pub const OP_CACHE_DESTROY: i16 = 1056;
pub const OP_CACHE_PARTITIONS: i16 = 1101;
pub const OP_QUERY_SCAN: i16 = 2000;
pub const OP_QUERY_SCAN_CURSOR_GET_PAGE: i16 = 2001;

pub const TYPE_STRING: u8 = 9;
pub const TYPE_UUID: u8 = 10;
pub const TYPE_BYTE_ARRAY: u8 = 12;
pub const TYPE_NULL: u8 = 101;

/// Response flag: the reply carries an error status and message.
pub const FLAG_ERROR: i16 = 1;
/// Response flag: the cluster's affinity topology changed; partition maps are stale.
pub const FLAG_AFFINITY_TOPOLOGY_CHANGED: i16 = 2;
/// Response flag: a server notification, not a reply to a request.
pub const FLAG_NOTIFICATION: i16 = 4;

/// Bytes of a request header after the length prefix: op code and request id.
pub const REQUEST_HEADER_AFTER_LEN: usize = 2 + 8;
/// Smallest valid response frame body: request id and flags.
pub const MIN_RESPONSE_LEN: usize = 8 + 2;

/// A node's UUID as sent on the wire (most then least significant half, each little-endian).
pub type NodeId = [u8; 16];

/// A decode failure: what was expected and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bounds-checked little-endian reader over a reply body. Slices share the body's buffer.
#[derive(Debug)]
pub struct Decoder {
    buf: Bytes,
}

impl Decoder {
    pub fn new(buf: Bytes) -> Self {
        Decoder { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    fn need(&self, count: usize, what: &str) -> Result<(), DecodeError> {
        if self.buf.remaining() < count {
            return Err(DecodeError(format!(
                "truncated {what}: need {count} bytes, {} left",
                self.buf.remaining()
            )));
        }
        Ok(())
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }

    pub fn bool(&mut self, what: &str) -> Result<bool, DecodeError> {
        Ok(self.u8(what)? != 0)
    }

    pub fn i16(&mut self, what: &str) -> Result<i16, DecodeError> {
        self.need(2, what)?;
        Ok(self.buf.get_i16_le())
    }

    pub fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        self.need(4, what)?;
        Ok(self.buf.get_i32_le())
    }

    pub fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        self.need(8, what)?;
        Ok(self.buf.get_i64_le())
    }

    /// A non-negative element count, bounded by the bytes left (each element takes at least
    /// `min_element_bytes`), so a corrupt count cannot trigger a huge allocation.
    pub fn count(&mut self, what: &str, min_element_bytes: usize) -> Result<usize, DecodeError> {
        let count = self.i32(what)?;
        let count =
            usize::try_from(count).map_err(|_| DecodeError(format!("negative {what}: {count}")))?;
        if count.saturating_mul(min_element_bytes.max(1)) > self.remaining() {
            return Err(DecodeError(format!(
                "{what} {count} exceeds the {} bytes left",
                self.remaining()
            )));
        }
        Ok(count)
    }

    pub fn take(&mut self, len: usize, what: &str) -> Result<Bytes, DecodeError> {
        self.need(len, what)?;
        Ok(self.buf.split_to(len))
    }

    fn len_prefixed(&mut self, what: &str) -> Result<Bytes, DecodeError> {
        let len = self.i32(what)?;
        let len =
            usize::try_from(len).map_err(|_| DecodeError(format!("negative {what} length")))?;
        self.take(len, what)
    }

    /// A typed object that must be a string or null.
    pub fn string_object(&mut self, what: &str) -> Result<Option<String>, DecodeError> {
        match self.u8(what)? {
            TYPE_NULL => Ok(None),
            TYPE_STRING => {
                let bytes = self.len_prefixed(what)?;
                String::from_utf8(bytes.to_vec())
                    .map(Some)
                    .map_err(|_| DecodeError(format!("{what} is not valid UTF-8")))
            }
            other => Err(DecodeError(format!(
                "{what}: expected a string, got type code {other}"
            ))),
        }
    }

    /// A typed object that must be a byte array or null; `Err(Ok(code))` for another type.
    pub fn byte_array_object(
        &mut self,
        what: &str,
    ) -> Result<Result<Option<Bytes>, u8>, DecodeError> {
        match self.u8(what)? {
            TYPE_NULL => Ok(Ok(None)),
            TYPE_BYTE_ARRAY => Ok(Ok(Some(self.len_prefixed(what)?))),
            other => Ok(Err(other)),
        }
    }

    /// A typed UUID object or null.
    pub fn uuid_object(&mut self, what: &str) -> Result<Option<NodeId>, DecodeError> {
        match self.u8(what)? {
            TYPE_NULL => Ok(None),
            TYPE_UUID => {
                let bytes = self.take(16, what)?;
                let mut id = [0u8; 16];
                id.copy_from_slice(&bytes);
                Ok(Some(id))
            }
            other => Err(DecodeError(format!(
                "{what}: expected a UUID, got type code {other}"
            ))),
        }
    }

    /// Skips one object of the simple types this client writes (string, byte array, null).
    pub fn skip_simple_object(&mut self, what: &str) -> Result<(), DecodeError> {
        match self.u8(what)? {
            TYPE_NULL => Ok(()),
            TYPE_STRING | TYPE_BYTE_ARRAY => self.len_prefixed(what).map(drop),
            other => Err(DecodeError(format!(
                "{what}: unsupported type code {other} (kfcache caches hold string keys and byte-array values)"
            ))),
        }
    }
}

/// Appends a typed string object.
pub fn put_string(buf: &mut BytesMut, value: &str) {
    buf.put_u8(TYPE_STRING);
    buf.put_i32_le(value.len() as i32);
    buf.put_slice(value.as_bytes());
}

/// Appends a typed string object or null.
pub fn put_opt_string(buf: &mut BytesMut, value: Option<&str>) {
    match value {
        Some(value) => put_string(buf, value),
        None => buf.put_u8(TYPE_NULL),
    }
}

/// Appends a byte-array object header; the caller sends the `len` bytes as the next segment.
pub fn put_byte_array_header(buf: &mut BytesMut, len: usize) {
    buf.put_u8(TYPE_BYTE_ARRAY);
    buf.put_i32_le(len as i32);
}

/// Start of every cache operation: cache id and flags (0: no transaction, no expiry policy,
/// values deserialised).
pub fn put_cache_header(buf: &mut BytesMut, cache_id: i32) {
    buf.put_i32_le(cache_id);
    buf.put_u8(0);
}

/// The request frame header for a payload of `payload_len` bytes.
pub fn request_header(op: i16, request_id: i64, payload_len: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + REQUEST_HEADER_AFTER_LEN);
    buf.put_i32_le((REQUEST_HEADER_AFTER_LEN + payload_len) as i32);
    buf.put_i16_le(op);
    buf.put_i64_le(request_id);
    buf.freeze()
}

/// Optional username and password sent in the handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct HandshakeCredentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

impl std::fmt::Debug for HandshakeCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The complete handshake frame (length prefix included).
pub fn handshake_request(credentials: Option<HandshakeCredentials<'_>>) -> Bytes {
    let mut body = BytesMut::with_capacity(64);
    body.put_u8(OP_HANDSHAKE);
    body.put_i16_le(VERSION.0);
    body.put_i16_le(VERSION.1);
    body.put_i16_le(VERSION.2);
    body.put_u8(2); // client code: thin client
                    // Feature bitmask (1.7.0+): none requested. Without USER_ATTRIBUTES no attribute map follows.
    put_byte_array_header(&mut body, 0);
    if let Some(credentials) = credentials {
        put_string(&mut body, credentials.username);
        put_string(&mut body, credentials.password);
    }
    let mut frame = BytesMut::with_capacity(4 + body.len());
    frame.put_i32_le(body.len() as i32);
    frame.put_slice(&body);
    frame.freeze()
}

/// What the server answered to the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeReply {
    Accepted {
        node_id: Option<NodeId>,
    },
    Rejected {
        server_version: (i16, i16, i16),
        message: String,
    },
}

/// Decodes a handshake reply body (after the length prefix).
pub fn decode_handshake_reply(body: Bytes) -> Result<HandshakeReply, DecodeError> {
    let mut decoder = Decoder::new(body);
    if decoder.bool("handshake success flag")? {
        // Features bitmask, then the node's UUID. Both are optional for robustness.
        let mut node_id = None;
        if decoder.remaining() > 0 {
            match decoder.byte_array_object("server features")? {
                Ok(_) => {}
                Err(code) => {
                    return Err(DecodeError(format!(
                        "server features: expected a byte array, got type code {code}"
                    )))
                }
            }
            if decoder.remaining() > 0 {
                node_id = decoder.uuid_object("node id")?;
            }
        }
        Ok(HandshakeReply::Accepted { node_id })
    } else {
        let server_version = (
            decoder.i16("server version")?,
            decoder.i16("server version")?,
            decoder.i16("server version")?,
        );
        let message = if decoder.remaining() > 0 {
            decoder
                .string_object("handshake error message")?
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(HandshakeReply::Rejected {
            server_version,
            message,
        })
    }
}

/// A decoded response header; `body` is the payload after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader {
    pub request_id: i64,
    pub flags: i16,
    pub error: Option<(i32, String)>,
}

/// Splits a response frame body into header and payload.
pub fn decode_response(frame: Bytes) -> Result<(ResponseHeader, Bytes), DecodeError> {
    let mut decoder = Decoder::new(frame);
    let request_id = decoder.i64("request id")?;
    let flags = decoder.i16("response flags")?;
    if flags & FLAG_AFFINITY_TOPOLOGY_CHANGED != 0 {
        decoder.i64("affinity topology version")?;
        decoder.i32("affinity topology minor version")?;
    }
    let error = if flags & FLAG_ERROR != 0 {
        let status = decoder.i32("error status")?;
        let message = decoder.string_object("error message")?.unwrap_or_default();
        Some((status, message))
    } else {
        None
    };
    Ok((
        ResponseHeader {
            request_id,
            flags,
            error,
        },
        decoder.buf,
    ))
}

/// Java's `String.hashCode()`: over UTF-16 code units, `h = 31 * h + c`, wrapping.
pub fn java_string_hash(value: &str) -> i32 {
    value.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The id Ignite uses for a cache: the Java hash code of its name.
pub fn cache_id(name: &str) -> i32 {
    java_string_hash(name)
}

/// `RendezvousAffinityFunction.calculatePartition`: with a power-of-two partition count the hash
/// is spread (`h ^ h >>> 16`) and masked, otherwise `|h % parts|`.
pub fn partition_for_hash(hash: i32, partitions: usize) -> usize {
    if partitions == 0 {
        return 0;
    }
    if partitions.is_power_of_two() {
        let spread = hash ^ ((hash as u32) >> 16) as i32;
        (spread as u32 as usize) & (partitions - 1)
    } else {
        // partitions fits in i32 for any real cache (Ignite caps it at 65 000).
        let parts = partitions as i64;
        (i64::from(hash) % parts).unsigned_abs() as usize
    }
}

/// The partition map of one cache: which node is primary for each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePartitions {
    pub cache_id: i32,
    /// `primary[partition]` is the primary node's id.
    pub primary: Vec<NodeId>,
}

/// Decodes an `OP_CACHE_PARTITIONS` reply. Caches whose mapping is not applicable (custom
/// affinity functions) are left out.
pub fn decode_partitions(body: Bytes) -> Result<Vec<CachePartitions>, DecodeError> {
    let mut decoder = Decoder::new(body);
    decoder.i64("affinity topology version")?;
    decoder.i32("affinity topology minor version")?;
    let mappings = decoder.count("partition mapping count", 5)?;
    let mut result = Vec::new();
    for _ in 0..mappings {
        let applicable = decoder.bool("applicable flag")?;
        let caches = decoder.count("cache count", 4)?;
        let mut cache_ids = Vec::with_capacity(caches);
        for _ in 0..caches {
            cache_ids.push(decoder.i32("cache id")?);
            if applicable {
                let key_configs = decoder.count("key configuration count", 8)?;
                for _ in 0..key_configs {
                    decoder.i32("key type id")?;
                    decoder.i32("affinity key field id")?;
                }
            }
        }
        if !applicable {
            continue;
        }
        let nodes = decoder.count("node count", 5)?;
        let mut assignment: Vec<(usize, NodeId)> = Vec::new();
        for _ in 0..nodes {
            let node = decoder
                .uuid_object("node id")?
                .ok_or_else(|| DecodeError("null node id in partition map".into()))?;
            let parts = decoder.count("partition count", 4)?;
            for _ in 0..parts {
                let part = decoder.i32("partition")?;
                let part = usize::try_from(part)
                    .map_err(|_| DecodeError(format!("negative partition {part}")))?;
                assignment.push((part, node));
            }
        }
        let total = assignment.len();
        let mut primary = vec![None; total];
        for (part, node) in assignment {
            let slot = primary
                .get_mut(part)
                .ok_or_else(|| DecodeError(format!("partition {part} outside 0..{total}")))?;
            *slot = Some(node);
        }
        let primary: Option<Vec<NodeId>> = primary.into_iter().collect();
        let primary = primary.ok_or_else(|| DecodeError("partition map has gaps".to_string()))?;
        for cache_id in cache_ids {
            result.push(CachePartitions {
                cache_id,
                primary: primary.clone(),
            });
        }
    }
    Ok(result)
}

/// Cache mode in a cache configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    Replicated,
    Partitioned,
}

impl CacheMode {
    fn code(self) -> i32 {
        match self {
            CacheMode::Replicated => 1,
            CacheMode::Partitioned => 2,
        }
    }
}

/// Write synchronisation mode in a cache configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteSynchronizationMode {
    FullSync,
    FullAsync,
    PrimarySync,
}

impl WriteSynchronizationMode {
    fn code(self) -> i32 {
        match self {
            WriteSynchronizationMode::FullSync => 0,
            WriteSynchronizationMode::FullAsync => 1,
            WriteSynchronizationMode::PrimarySync => 2,
        }
    }
}

const PROP_NAME: i16 = 0;
const PROP_CACHE_MODE: i16 = 1;
const PROP_BACKUPS: i16 = 3;
const PROP_WRITE_SYNCHRONIZATION_MODE: i16 = 4;

/// Payload of `OP_CACHE_GET_OR_CREATE_WITH_CONFIGURATION`.
pub fn cache_configuration(
    name: &str,
    mode: CacheMode,
    backups: i32,
    write_synchronization: WriteSynchronizationMode,
) -> Bytes {
    let mut props = BytesMut::new();
    props.put_i16_le(4);
    props.put_i16_le(PROP_NAME);
    put_string(&mut props, name);
    props.put_i16_le(PROP_CACHE_MODE);
    props.put_i32_le(mode.code());
    props.put_i16_le(PROP_BACKUPS);
    props.put_i32_le(backups);
    props.put_i16_le(PROP_WRITE_SYNCHRONIZATION_MODE);
    props.put_i32_le(write_synchronization.code());
    let mut buf = BytesMut::with_capacity(4 + props.len());
    buf.put_i32_le(props.len() as i32);
    buf.put_slice(&props);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_java() {
        // Values from java.lang.String#hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("kfcache-test"), -1_990_561_896);
        // Non-BMP characters hash as two UTF-16 surrogates.
        assert_eq!(java_string_hash("\u{1F600}"), 1_772_899);
    }

    #[test]
    fn partition_uses_mask_for_power_of_two() {
        let hash = java_string_hash("key-1");
        let spread = hash ^ ((hash as u32) >> 16) as i32;
        assert_eq!(partition_for_hash(hash, 1024), (spread & 1023) as usize);
        assert!(partition_for_hash(i32::MIN, 1024) < 1024);
        assert!(partition_for_hash(i32::MIN, 1000) < 1000);
        assert_eq!(partition_for_hash(-7, 5), 2);
        assert_eq!(partition_for_hash(5, 0), 0);
    }

    #[test]
    fn truncated_and_garbage_replies_are_errors_not_panics() {
        assert!(decode_response(Bytes::from_static(&[1, 2, 3])).is_err());
        assert!(decode_handshake_reply(Bytes::new()).is_err());
        assert!(decode_handshake_reply(Bytes::from_static(&[0, 1])).is_err());
        assert!(decode_partitions(Bytes::from_static(&[0xff; 40])).is_err());
        let mut frame = BytesMut::new();
        frame.put_i64_le(7);
        frame.put_i16_le(FLAG_ERROR);
        frame.put_i32_le(1);
        frame.put_u8(TYPE_STRING);
        frame.put_i32_le(i32::MAX);
        assert!(decode_response(frame.freeze()).is_err());
        let mut decoder = Decoder::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0x7f]));
        assert!(decoder.count("count", 1).is_err());
        // Every prefix of a valid handshake reply decodes or fails cleanly.
        let mut ok = BytesMut::new();
        ok.put_u8(1);
        put_byte_array_header(&mut ok, 2);
        ok.put_slice(&[1, 2]);
        ok.put_u8(TYPE_UUID);
        ok.put_slice(&[9; 16]);
        let ok = ok.freeze();
        for len in 0..ok.len() {
            let _ = decode_handshake_reply(ok.slice(..len));
        }
        assert_eq!(
            decode_handshake_reply(ok).ok(),
            Some(HandshakeReply::Accepted {
                node_id: Some([9; 16])
            })
        );
    }

    #[test]
    fn error_response_decodes_status_and_message() {
        let mut frame = BytesMut::new();
        frame.put_i64_le(42);
        frame.put_i16_le(FLAG_ERROR | FLAG_AFFINITY_TOPOLOGY_CHANGED);
        frame.put_i64_le(3);
        frame.put_i32_le(1);
        frame.put_i32_le(1000);
        put_string(&mut frame, "Cache does not exist");
        let (header, body) = decode_response(frame.freeze()).expect("decodes");
        assert_eq!(header.request_id, 42);
        assert_eq!(
            header.error,
            Some((1000, "Cache does not exist".to_string()))
        );
        assert!(body.is_empty());
    }

    #[test]
    fn partition_map_decodes() {
        let mut body = BytesMut::new();
        body.put_i64_le(5);
        body.put_i32_le(0);
        body.put_i32_le(1); // one mapping
        body.put_u8(1); // applicable
        body.put_i32_le(1); // one cache
        body.put_i32_le(77);
        body.put_i32_le(0); // no key configs
        body.put_i32_le(2); // two nodes
        for (node, parts) in [([1u8; 16], [0, 2]), ([2u8; 16], [1, 3])] {
            body.put_u8(TYPE_UUID);
            body.put_slice(&node);
            body.put_i32_le(2);
            for part in parts {
                body.put_i32_le(part);
            }
        }
        let maps = decode_partitions(body.freeze()).expect("decodes");
        assert_eq!(maps.len(), 1);
        assert_eq!(maps[0].cache_id, 77);
        assert_eq!(maps[0].primary, vec![[1; 16], [2; 16], [1; 16], [2; 16]]);
    }
}
