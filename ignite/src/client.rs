//! The client: configuration, one pooled connection per node, routing, failover and the
//! partition map.
//!
//! Each configured address gets one slot holding at most one [`Connection`], opened lazily (all
//! of them are tried once at [`Client::connect`]) and reopened after it breaks. A request goes to
//! the primary node of its key when the partition map knows it, otherwise to the next node in
//! round-robin order; when a connection cannot be opened or breaks under the request, the
//! request moves on to the next address. Nodes that failed recently are tried last.
//!
//! The partition map comes from `OP_CACHE_PARTITIONS` per cache and is dropped whenever any
//! reply carries the "affinity topology changed" flag, so it follows nodes joining and leaving.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::cache::{Cache, CacheConfig};
use crate::connection::{ConnectOptions, Connection, RequestError};
use crate::error::{Error, Result};
use crate::protocol::{self, Decoder, NodeId};

/// How long a node that failed to connect is tried only after the others.
const FAILED_NODE_BACKOFF: Duration = Duration::from_secs(2);

/// Username and password sent in the handshake (Ignite's authentication must be enabled on the
/// cluster for them to matter).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS towards the nodes' client connector, verified against a CA certificate file (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca_file: PathBuf,
    /// Name to verify in the server certificate; defaults to the host part of each address.
    pub server_name: Option<String>,
}

/// Everything the client needs; built by the caller (the binary merges file, environment and
/// flags into it).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of each node's thin-client connector.
    pub addresses: Vec<String>,
    /// Limit for TCP connect, TLS and handshake together.
    pub connect_timeout: Duration,
    /// Limit for one request, from send to reply.
    pub request_timeout: Duration,
    pub credentials: Option<Credentials>,
    pub tls: Option<TlsConfig>,
    /// Send keyed requests to the key's primary node.
    pub partition_awareness: bool,
    /// Largest reply frame accepted; a bigger length is treated as a corrupt stream.
    pub max_frame_bytes: usize,
}

impl ClientConfig {
    /// Defaults: 5 s connect timeout, 60 s request timeout, partition awareness on, 1 GiB
    /// frame limit, no credentials, no TLS.
    pub fn new<I, S>(addresses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            addresses: addresses.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            credentials: None,
            tls: None,
            partition_awareness: true,
            max_frame_bytes: 1 << 30,
        }
    }

    /// Splits a comma-separated address list (`127.0.0.1:10800,127.0.0.1:10801`).
    pub fn from_address_list(list: &str) -> Self {
        Self::new(
            list.split(',')
                .map(str::trim)
                .filter(|address| !address.is_empty()),
        )
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Some(Credentials {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn with_partition_awareness(mut self, enabled: bool) -> Self {
        self.partition_awareness = enabled;
        self
    }
}

/// Counters describing what the client did; cheap to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests sent (including retries).
    pub requests: u64,
    /// Keyed requests sent to the key's primary node according to the partition map.
    pub routed_to_primary: u64,
    /// Connections opened (initial ones and reconnects).
    pub connections_opened: u64,
    /// Requests that moved on to another node after a connection failure.
    pub failovers: u64,
    /// Partition maps fetched.
    pub partition_map_fetches: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    routed_to_primary: AtomicU64,
    connections_opened: AtomicU64,
    failovers: AtomicU64,
    partition_map_fetches: AtomicU64,
}

#[derive(Debug)]
struct Node {
    address: String,
    connection: RwLock<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
    node_id: RwLock<Option<NodeId>>,
    last_failure: Mutex<Option<Instant>>,
}

impl Node {
    fn live_connection(&self) -> Option<Arc<Connection>> {
        let guard = self.connection.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    fn recently_failed(&self) -> bool {
        let guard = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        guard.is_some_and(|at| at.elapsed() < FAILED_NODE_BACKOFF)
    }

    fn node_id(&self) -> Option<NodeId> {
        *self.node_id.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Default)]
struct PartitionMaps {
    /// Topology epoch the maps were fetched at.
    epoch: u64,
    /// `None`: the cache's mapping is not applicable (custom affinity) or could not be fetched.
    caches: HashMap<i32, Option<Arc<Vec<NodeId>>>>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    nodes: Vec<Node>,
    options: ConnectOptions,
    request_timeout: Duration,
    partition_awareness: bool,
    topology_epoch: Arc<AtomicU64>,
    partition_maps: RwLock<PartitionMaps>,
    partition_refresh: tokio::sync::Mutex<()>,
    next_node: AtomicUsize,
    counters: Counters,
}

/// An async Ignite 2.x thin client. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// What a request is about, for routing and for error context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestContext<'a> {
    pub op: i16,
    pub op_name: &'static str,
    pub cache: &'a str,
    pub key: Option<&'a str>,
}

impl Client {
    /// Validates the configuration and opens a connection to every address at once. Succeeds
    /// if at least one node answers; the others are retried when requests need them.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        if config.addresses.is_empty() {
            return Err(Error::Config {
                message: "no Ignite addresses given".to_string(),
            });
        }
        if let Some(bad) = config.addresses.iter().find(|a| !a.contains(':')) {
            return Err(Error::Config {
                message: format!("address {bad:?} is not host:port"),
            });
        }
        let tls = match &config.tls {
            Some(tls) => Some((
                crate::tls::connector(&tls.ca_file)?,
                tls.server_name.clone(),
            )),
            None => None,
        };
        let options = ConnectOptions {
            connect_timeout: config.connect_timeout,
            credentials: config
                .credentials
                .as_ref()
                .map(|c| (c.username.clone(), c.password.clone())),
            tls,
            max_frame_bytes: config.max_frame_bytes.max(1024),
        };
        let nodes = config
            .addresses
            .iter()
            .map(|address| Node {
                address: address.clone(),
                connection: RwLock::new(None),
                connecting: tokio::sync::Mutex::new(()),
                node_id: RwLock::new(None),
                last_failure: Mutex::new(None),
            })
            .collect();
        let client = Client {
            inner: Arc::new(Inner {
                nodes,
                options,
                request_timeout: config.request_timeout,
                partition_awareness: config.partition_awareness,
                topology_epoch: Arc::new(AtomicU64::new(0)),
                partition_maps: RwLock::new(PartitionMaps::default()),
                partition_refresh: tokio::sync::Mutex::new(()),
                next_node: AtomicUsize::new(0),
                counters: Counters::default(),
            }),
        };
        let mut attempts = tokio::task::JoinSet::new();
        for index in 0..client.inner.nodes.len() {
            let client = client.clone();
            attempts.spawn(async move { client.connection(index).await.map(drop) });
        }
        let mut last_error = None;
        let mut connected = false;
        while let Some(result) = attempts.join_next().await {
            match result {
                Ok(Ok(())) => connected = true,
                Ok(Err(error)) => last_error = Some(error),
                Err(join_error) => {
                    last_error = Some(Error::Config {
                        message: format!("connect task failed: {join_error}"),
                    })
                }
            }
        }
        if connected {
            return Ok(client);
        }
        Err(Error::NoNodeReachable {
            addresses: config.addresses.join(", "),
            last: Box::new(last_error.unwrap_or_else(|| Error::Config {
                message: "no connection attempt made".to_string(),
            })),
        })
    }

    /// A handle on an existing cache (no request is sent).
    pub fn cache(&self, name: &str) -> Cache {
        Cache::new(self.clone(), name)
    }

    /// Creates the cache with this configuration unless it exists, and returns a handle.
    pub async fn get_or_create_cache(&self, config: &CacheConfig) -> Result<Cache> {
        let payload = protocol::cache_configuration(
            &config.name,
            config.mode,
            config.backups,
            config.write_synchronization,
        );
        self.execute(
            RequestContext {
                op: protocol::OP_CACHE_GET_OR_CREATE_WITH_CONFIGURATION,
                op_name: "get-or-create cache",
                cache: &config.name,
                key: None,
            },
            None,
            vec![payload],
        )
        .await?;
        Ok(self.cache(&config.name))
    }

    /// Destroys a cache and its data.
    pub async fn destroy_cache(&self, name: &str) -> Result<()> {
        let mut payload = BytesMut::with_capacity(4);
        bytes::BufMut::put_i32_le(&mut payload, protocol::cache_id(name));
        self.execute(
            RequestContext {
                op: protocol::OP_CACHE_DESTROY,
                op_name: "destroy cache",
                cache: name,
                key: None,
            },
            None,
            vec![payload.freeze()],
        )
        .await
        .map(drop)
    }

    /// Names of all caches in the cluster.
    pub async fn cache_names(&self) -> Result<Vec<String>> {
        let context = RequestContext {
            op: protocol::OP_CACHE_GET_NAMES,
            op_name: "get cache names",
            cache: "",
            key: None,
        };
        let (body, address) = self.execute_at(context, None, vec![]).await?;
        let decode = || -> std::result::Result<Vec<String>, protocol::DecodeError> {
            let mut decoder = Decoder::new(body);
            let count = decoder.count("cache name count", 1)?;
            let mut names = Vec::with_capacity(count);
            for _ in 0..count {
                names.extend(decoder.string_object("cache name")?);
            }
            Ok(names)
        };
        decode().map_err(|error| protocol_error(&address, context.op_name, error))
    }

    /// The configured node addresses, in order.
    pub fn addresses(&self) -> Vec<String> {
        self.inner.nodes.iter().map(|n| n.address.clone()).collect()
    }

    /// Counters of routed requests, connections and failovers.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            routed_to_primary: c.routed_to_primary.load(Ordering::Relaxed),
            connections_opened: c.connections_opened.load(Ordering::Relaxed),
            failovers: c.failovers.load(Ordering::Relaxed),
            partition_map_fetches: c.partition_map_fetches.load(Ordering::Relaxed),
        }
    }

    /// The live connection of node `index`, opening one if needed.
    async fn connection(&self, index: usize) -> Result<Arc<Connection>> {
        let inner = &self.inner;
        let Some(node) = inner.nodes.get(index) else {
            return Err(Error::Config {
                message: format!("no node with index {index}"),
            });
        };
        if let Some(connection) = node.live_connection() {
            return Ok(connection);
        }
        let _connecting = node.connecting.lock().await;
        if let Some(connection) = node.live_connection() {
            return Ok(connection);
        }
        match Connection::open(&node.address, &inner.options, inner.topology_epoch.clone()).await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                *node.node_id.write().unwrap_or_else(|p| p.into_inner()) = connection.node_id();
                *node.connection.write().unwrap_or_else(|p| p.into_inner()) =
                    Some(connection.clone());
                *node.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                inner
                    .counters
                    .connections_opened
                    .fetch_add(1, Ordering::Relaxed);
                // A new connection may be to a restarted node with a new id.
                inner.topology_epoch.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(address = %node.address, "connected to Ignite node");
                Ok(connection)
            }
            Err(error) => {
                *node.connection.write().unwrap_or_else(|p| p.into_inner()) = None;
                *node.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                tracing::debug!(address = %node.address, %error, "cannot connect to Ignite node");
                Err(error)
            }
        }
    }

    /// Node indices in the order a request should try them.
    fn node_order(&self, preferred: Option<usize>) -> Vec<usize> {
        let count = self.inner.nodes.len();
        let start = self.inner.next_node.fetch_add(1, Ordering::Relaxed) % count.max(1);
        let mut healthy = Vec::with_capacity(count);
        let mut failed = Vec::new();
        let rotation = (0..count).map(|offset| (start + offset) % count);
        for index in preferred
            .into_iter()
            .chain(rotation.filter(|i| Some(*i) != preferred))
        {
            match self.inner.nodes.get(index) {
                Some(node) if node.recently_failed() => failed.push(index),
                Some(_) => healthy.push(index),
                None => {}
            }
        }
        healthy.extend(failed);
        healthy
    }

    /// The node index that is primary for `key` in cache `cache_id`, if known.
    pub(crate) async fn primary_node(&self, cache_id: i32, key: &str) -> Option<usize> {
        if !self.inner.partition_awareness || self.inner.nodes.len() < 2 {
            return None;
        }
        let map = self.partition_map(cache_id).await?;
        let partition = protocol::partition_for_hash(protocol::java_string_hash(key), map.len());
        let node_id = map.get(partition)?;
        self.inner
            .nodes
            .iter()
            .position(|node| node.node_id() == Some(*node_id))
    }

    async fn partition_map(&self, cache_id: i32) -> Option<Arc<Vec<NodeId>>> {
        let inner = &self.inner;
        let lookup = |epoch: u64| -> Option<Option<Arc<Vec<NodeId>>>> {
            let maps = inner
                .partition_maps
                .read()
                .unwrap_or_else(|p| p.into_inner());
            if maps.epoch != epoch {
                return None;
            }
            maps.caches.get(&cache_id).cloned()
        };
        if let Some(found) = lookup(inner.topology_epoch.load(Ordering::Relaxed)) {
            return found;
        }
        // One fetch at a time; requests arriving meanwhile use default routing.
        let _refresh = inner.partition_refresh.try_lock().ok()?;
        let epoch = inner.topology_epoch.load(Ordering::Relaxed);
        if let Some(found) = lookup(epoch) {
            return found;
        }
        let fetched = self.fetch_partition_map(cache_id).await;
        let mut maps = inner
            .partition_maps
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if maps.epoch != epoch {
            maps.caches.clear();
            maps.epoch = epoch;
        }
        maps.caches.insert(cache_id, fetched.clone());
        fetched
    }

    async fn fetch_partition_map(&self, cache_id: i32) -> Option<Arc<Vec<NodeId>>> {
        let mut payload = BytesMut::with_capacity(8);
        bytes::BufMut::put_i32_le(&mut payload, 1);
        bytes::BufMut::put_i32_le(&mut payload, cache_id);
        let context = RequestContext {
            op: protocol::OP_CACHE_PARTITIONS,
            op_name: "get cache partitions",
            cache: "",
            key: None,
        };
        self.inner
            .counters
            .partition_map_fetches
            .fetch_add(1, Ordering::Relaxed);
        let (body, address) = match self.execute_at(context, None, vec![payload.freeze()]).await {
            Ok(reply) => reply,
            Err(error) => {
                tracing::debug!(%error, "partition map unavailable; using default routing");
                return None;
            }
        };
        match protocol::decode_partitions(body) {
            Ok(maps) => maps
                .into_iter()
                .find(|map| map.cache_id == cache_id)
                .map(|map| Arc::new(map.primary)),
            Err(error) => {
                tracing::warn!(%address, %error, "undecodable partition map; using default routing");
                None
            }
        }
    }

    /// Sends a request with failover and returns the reply body.
    pub(crate) async fn execute(
        &self,
        context: RequestContext<'_>,
        preferred: Option<usize>,
        payload: Vec<Bytes>,
    ) -> Result<Bytes> {
        self.execute_at(context, preferred, payload)
            .await
            .map(|(body, _)| body)
    }

    /// Like [`execute`](Self::execute), also returning the address that answered.
    pub(crate) async fn execute_at(
        &self,
        context: RequestContext<'_>,
        preferred: Option<usize>,
        payload: Vec<Bytes>,
    ) -> Result<(Bytes, String)> {
        let frame_len =
            protocol::REQUEST_HEADER_AFTER_LEN + payload.iter().map(Bytes::len).sum::<usize>();
        if frame_len > i32::MAX as usize {
            return Err(Error::TooLarge {
                what: "request",
                len: frame_len,
                limit: i32::MAX as usize,
            });
        }
        let counters = &self.inner.counters;
        let mut tried = Vec::new();
        let mut last_error = None;
        for index in self.node_order(preferred) {
            let Some(node) = self.inner.nodes.get(index) else {
                continue;
            };
            if !tried.is_empty() {
                counters.failovers.fetch_add(1, Ordering::Relaxed);
            }
            tried.push(node.address.clone());
            let connection = match self.connection(index).await {
                Ok(connection) => connection,
                Err(error) => {
                    last_error = Some(error);
                    continue;
                }
            };
            counters.requests.fetch_add(1, Ordering::Relaxed);
            if preferred == Some(index) {
                counters.routed_to_primary.fetch_add(1, Ordering::Relaxed);
            }
            match connection
                .request(context.op, payload.clone(), self.inner.request_timeout)
                .await
            {
                Ok(body) => return Ok((body, node.address.clone())),
                Err(RequestError::Closed(reason)) => {
                    last_error = Some(Error::ConnectionLost {
                        address: node.address.clone(),
                        op: context.op_name,
                        reason,
                    });
                }
                Err(RequestError::Timeout) => {
                    return Err(Error::RequestTimeout {
                        address: node.address.clone(),
                        op: context.op_name,
                        cache: context.cache.to_string(),
                        timeout: self.inner.request_timeout,
                    })
                }
                Err(RequestError::Server { status, message }) => {
                    return Err(Error::Server {
                        address: node.address.clone(),
                        op: context.op_name,
                        cache: context.cache.to_string(),
                        key: context.key.map(str::to_string),
                        status,
                        message,
                    })
                }
            }
        }
        Err(Error::NoNodeReachable {
            addresses: tried.join(", "),
            last: Box::new(last_error.unwrap_or_else(|| Error::Config {
                message: "no Ignite addresses configured".to_string(),
            })),
        })
    }

    /// Sends a request to one named node only (no failover); for node-local operations.
    pub(crate) async fn execute_on_node(
        &self,
        address: &str,
        context: RequestContext<'_>,
        payload: Vec<Bytes>,
    ) -> Result<Bytes> {
        let index = self
            .inner
            .nodes
            .iter()
            .position(|node| node.address == address)
            .ok_or_else(|| Error::Config {
                message: format!("{address} is not one of the client's addresses"),
            })?;
        let connection = self.connection(index).await?;
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.request_on(&connection, context, payload).await
    }

    /// One request on a given connection, mapping errors with context.
    pub(crate) async fn request_on(
        &self,
        connection: &Connection,
        context: RequestContext<'_>,
        payload: Vec<Bytes>,
    ) -> Result<Bytes> {
        connection
            .request(context.op, payload, self.inner.request_timeout)
            .await
            .map_err(|error| match error {
                RequestError::Closed(reason) => Error::ConnectionLost {
                    address: connection.address().to_string(),
                    op: context.op_name,
                    reason,
                },
                RequestError::Timeout => Error::RequestTimeout {
                    address: connection.address().to_string(),
                    op: context.op_name,
                    cache: context.cache.to_string(),
                    timeout: self.inner.request_timeout,
                },
                RequestError::Server { status, message } => Error::Server {
                    address: connection.address().to_string(),
                    op: context.op_name,
                    cache: context.cache.to_string(),
                    key: context.key.map(str::to_string),
                    status,
                    message,
                },
            })
    }

    /// Any live connection (for cursors, which live on one node).
    pub(crate) async fn any_connection(&self) -> Result<Arc<Connection>> {
        let mut tried = Vec::new();
        let mut last_error = None;
        for index in self.node_order(None) {
            match self.connection(index).await {
                Ok(connection) => return Ok(connection),
                Err(error) => {
                    if let Some(node) = self.inner.nodes.get(index) {
                        tried.push(node.address.clone());
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(Error::NoNodeReachable {
            addresses: tried.join(", "),
            last: Box::new(last_error.unwrap_or_else(|| Error::Config {
                message: "no Ignite addresses configured".to_string(),
            })),
        })
    }
}

pub(crate) fn protocol_error(
    address: &str,
    op: &'static str,
    error: protocol::DecodeError,
) -> Error {
    Error::Protocol {
        address: address.to_string(),
        op,
        detail: error.0,
    }
}
