//! One multiplexed connection to one Ignite node.
//!
//! Requests carry ids, so many can be in flight at once. Two tasks own the socket:
//! - the writer task takes whole frames from a channel and writes them with vectored writes, so
//!   a value's [`Bytes`] goes to the kernel without being copied, and a caller that gives up
//!   (timeout, cancellation) can never leave half a frame on the wire;
//! - the reader task reads length-prefixed frames and hands each reply to the waiting request
//!   through a oneshot channel.
//!
//! Any I/O error, EOF or impossible frame length means the stream can no longer be trusted: the
//! connection closes and fails exactly the requests that were in flight on it. The client then
//! reconnects on the next request.

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_rustls::TlsConnector;

use crate::error::{Error, Result};
use crate::protocol::{self, HandshakeCredentials, HandshakeReply, NodeId};

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Largest handshake reply accepted (real ones are a few dozen bytes).
const MAX_HANDSHAKE_REPLY: usize = 64 * 1024;
/// Growth step while reading a large frame: a corrupt length cannot allocate more than this
/// ahead of the bytes actually received.
const READ_CHUNK: usize = 16 * 1024 * 1024;
/// Frames queued for the writer before callers wait.
const WRITE_QUEUE: usize = 256;

/// How to open connections; shared by all nodes of a client.
#[derive(Clone)]
pub(crate) struct ConnectOptions {
    pub connect_timeout: Duration,
    pub credentials: Option<(String, String)>,
    pub tls: Option<(TlsConnector, Option<String>)>,
    pub max_frame_bytes: usize,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(user, _)| user),
            )
            .field("tls", &self.tls.is_some())
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish()
    }
}

/// Why a request on a connection did not produce a reply body.
#[derive(Debug, Clone)]
pub(crate) enum RequestError {
    /// The connection is closed or broke while the request was in flight.
    Closed(String),
    /// No reply within the timeout.
    Timeout,
    /// The node answered with an error status.
    Server { status: i32, message: String },
}

type Waiter = oneshot::Sender<std::result::Result<Bytes, RequestError>>;

#[derive(Debug, Default)]
struct PendingState {
    waiting: HashMap<i64, Waiter>,
    closed: Option<String>,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<PendingState>,
    /// Client-wide counter bumped whenever a node reports an affinity topology change.
    topology_epoch: Arc<AtomicU64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PendingState> {
        // Nothing panics while holding the lock; recover the data if it ever happened.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn close(&self, reason: String) {
        let waiting = {
            let mut state = self.lock();
            if state.closed.is_none() {
                tracing::debug!(%reason, "ignite connection closed");
                state.closed = Some(reason.clone());
            }
            std::mem::take(&mut state.waiting)
        };
        for (_, waiter) in waiting {
            let _ = waiter.send(Err(RequestError::Closed(reason.clone())));
        }
    }
}

/// Removes a request's waiter if the request is abandoned (timeout or cancellation).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: i64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().waiting.remove(&self.id);
    }
}

/// A live connection to one node.
#[derive(Debug)]
pub(crate) struct Connection {
    address: String,
    node_id: Option<NodeId>,
    next_id: AtomicI64,
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Vec<Bytes>>,
    tasks: [AbortHandle; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Connection {
    /// Connects, optionally wraps in TLS, and performs the handshake, all within the connect
    /// timeout.
    pub(crate) async fn open(
        address: &str,
        options: &ConnectOptions,
        topology_epoch: Arc<AtomicU64>,
    ) -> Result<Connection> {
        match tokio::time::timeout(
            options.connect_timeout,
            Self::open_inner(address, options, topology_epoch),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(Error::ConnectTimeout {
                address: address.to_string(),
                timeout: options.connect_timeout,
            }),
        }
    }

    async fn open_inner(
        address: &str,
        options: &ConnectOptions,
        topology_epoch: Arc<AtomicU64>,
    ) -> Result<Connection> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|source| Error::Connect {
                address: address.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let credentials =
            options
                .credentials
                .as_ref()
                .map(|(username, password)| HandshakeCredentials {
                    username: username.as_str(),
                    password: password.as_str(),
                });
        let (reader, writer, node_id): (BoxRead, BoxWrite, _) = match &options.tls {
            None => {
                let mut tcp = tcp;
                let node_id = handshake(&mut tcp, address, credentials).await?;
                let (read, write) = tcp.into_split();
                (Box::new(read), Box::new(write), node_id)
            }
            Some((connector, server_name)) => {
                let host = server_name.clone().unwrap_or_else(|| host_of(address));
                let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|_| {
                    Error::Tls {
                        address: address.to_string(),
                        message: format!("{host:?} is not a valid TLS server name"),
                    }
                })?;
                let mut tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|error| Error::Tls {
                        address: address.to_string(),
                        message: error.to_string(),
                    })?;
                let node_id = handshake(&mut tls, address, credentials).await?;
                let (read, write) = tokio::io::split(tls);
                (Box::new(read), Box::new(write), node_id)
            }
        };
        Ok(Self::start(
            address.to_string(),
            node_id,
            reader,
            writer,
            options.max_frame_bytes,
            topology_epoch,
        ))
    }

    fn start(
        address: String,
        node_id: Option<NodeId>,
        reader: BoxRead,
        writer: BoxWrite,
        max_frame_bytes: usize,
        topology_epoch: Arc<AtomicU64>,
    ) -> Connection {
        let shared = Arc::new(Shared {
            pending: Mutex::new(PendingState::default()),
            topology_epoch,
        });
        let (outgoing, queue) = mpsc::channel(WRITE_QUEUE);
        let reader_task = tokio::spawn(read_loop(
            BufReader::with_capacity(64 * 1024, reader),
            shared.clone(),
            max_frame_bytes,
        ));
        let writer_task = tokio::spawn(write_loop(writer, queue, shared.clone()));
        Connection {
            address,
            node_id,
            next_id: AtomicI64::new(1),
            shared,
            outgoing,
            tasks: [reader_task.abort_handle(), writer_task.abort_handle()],
        }
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn node_id(&self) -> Option<NodeId> {
        self.node_id
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Sends one request and waits for its reply body (the bytes after the response header).
    pub(crate) async fn request(
        &self,
        op: i16,
        payload: Vec<Bytes>,
        timeout: Duration,
    ) -> std::result::Result<Bytes, RequestError> {
        let payload_len: usize = payload.iter().map(Bytes::len).sum();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, reply) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if let Some(reason) = &state.closed {
                return Err(RequestError::Closed(reason.clone()));
            }
            state.waiting.insert(id, waiter);
        }
        let _guard = PendingGuard {
            shared: &self.shared,
            id,
        };
        let mut frame = Vec::with_capacity(payload.len() + 1);
        frame.push(protocol::request_header(op, id, payload_len));
        frame.extend(payload);
        let exchange = async {
            self.outgoing
                .send(frame)
                .await
                .map_err(|_| RequestError::Closed("connection writer stopped".to_string()))?;
            reply
                .await
                .map_err(|_| RequestError::Closed("connection closed".to_string()))?
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::Timeout),
        }
    }

    /// A connection over an arbitrary stream that has already done its handshake; used by
    /// unit tests with in-memory streams.
    #[cfg(test)]
    pub(crate) fn from_stream<S>(stream: S, max_frame_bytes: usize) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        Self::start(
            "test".to_string(),
            None,
            Box::new(read),
            Box::new(write),
            max_frame_bytes,
            Arc::new(AtomicU64::new(0)),
        )
    }
}

fn host_of(address: &str) -> String {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

async fn handshake<S>(
    stream: &mut S,
    address: &str,
    credentials: Option<HandshakeCredentials<'_>>,
) -> Result<Option<NodeId>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let lost = |error: std::io::Error| Error::ConnectionLost {
        address: address.to_string(),
        op: "handshake",
        reason: error.to_string(),
    };
    stream
        .write_all(&protocol::handshake_request(credentials))
        .await
        .map_err(lost)?;
    stream.flush().await.map_err(lost)?;
    let len = stream.read_i32_le().await.map_err(lost)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|len| (1..=MAX_HANDSHAKE_REPLY).contains(len))
        .ok_or_else(|| Error::Protocol {
            address: address.to_string(),
            op: "handshake",
            detail: format!("handshake reply length {len} (is this an Ignite thin-client port?)"),
        })?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(lost)?;
    match protocol::decode_handshake_reply(Bytes::from(body)) {
        Ok(HandshakeReply::Accepted { node_id }) => Ok(node_id),
        Ok(HandshakeReply::Rejected {
            server_version: (major, minor, patch),
            message,
        }) => Err(Error::HandshakeRejected {
            address: address.to_string(),
            server_version: format!("{major}.{minor}.{patch}"),
            message,
        }),
        Err(error) => Err(Error::Protocol {
            address: address.to_string(),
            op: "handshake",
            detail: error.0,
        }),
    }
}

async fn read_loop(mut reader: BufReader<BoxRead>, shared: Arc<Shared>, max_frame_bytes: usize) {
    let reason = loop {
        let len = match reader.read_i32_le().await {
            Ok(len) => len,
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                break "connection closed by the node".to_string();
            }
            Err(error) => break format!("read failed: {error}"),
        };
        let len = match usize::try_from(len) {
            Ok(len) if (protocol::MIN_RESPONSE_LEN..=max_frame_bytes).contains(&len) => len,
            _ => {
                break format!(
                    "invalid reply frame length {len} (limit {max_frame_bytes}); stream out of sync"
                )
            }
        };
        let frame = match read_frame(&mut reader, len).await {
            Ok(frame) => frame,
            Err(error) => break format!("read failed mid-frame: {error}"),
        };
        let (header, body) = match protocol::decode_response(frame) {
            Ok(decoded) => decoded,
            Err(error) => break format!("undecodable reply header: {error}"),
        };
        if header.flags & protocol::FLAG_AFFINITY_TOPOLOGY_CHANGED != 0 {
            shared.topology_epoch.fetch_add(1, Ordering::Relaxed);
        }
        if header.flags & protocol::FLAG_NOTIFICATION != 0 {
            continue;
        }
        let result = match header.error {
            Some((status, message)) => Err(RequestError::Server { status, message }),
            None => Ok(body),
        };
        let waiter = shared.lock().waiting.remove(&header.request_id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(result);
        }
    };
    shared.close(reason);
}

async fn read_frame(reader: &mut BufReader<BoxRead>, len: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(len.min(READ_CHUNK));
    while buf.len() < len {
        let remaining = len - buf.len();
        if buf.capacity() == buf.len() {
            buf.reserve(remaining.min(READ_CHUNK));
        }
        let read = reader.read_buf(&mut (&mut buf).limit(remaining)).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf.freeze())
}

async fn write_loop(
    mut writer: BoxWrite,
    mut queue: mpsc::Receiver<Vec<Bytes>>,
    shared: Arc<Shared>,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    while let Some(frame) = queue.recv().await {
        batch.extend(frame);
        // Coalesce whatever else is already queued into the same vectored write.
        while batch.len() < 256 {
            match queue.try_recv() {
                Ok(frame) => batch.extend(frame),
                Err(_) => break,
            }
        }
        let written = async {
            write_all_vectored(&mut writer, &mut batch).await?;
            writer.flush().await
        };
        if let Err(error) = written.await {
            shared.close(format!("write failed: {error}"));
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Writes every segment, in order, with as few system calls as the kernel allows.
async fn write_all_vectored(
    writer: &mut BoxWrite,
    segments: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut first = 0;
    while first < segments.len() {
        let written = {
            let slices: Vec<IoSlice<'_>> = segments[first..]
                .iter()
                .filter(|segment| !segment.is_empty())
                .take(64)
                .map(|segment| IoSlice::new(segment))
                .collect();
            if slices.is_empty() {
                break;
            }
            writer.write_vectored(&slices).await?
        };
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = written;
        while left > 0 {
            let Some(segment) = segments.get_mut(first) else {
                break;
            };
            let step = left.min(segment.len());
            segment.advance(step);
            left -= step;
            if segment.is_empty() {
                first += 1;
            }
        }
        while segments.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
    }
    segments.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Reads one request frame from the fake server side: (op, id, payload).
    async fn read_request(server: &mut DuplexStream) -> (i16, i64, Vec<u8>) {
        let len = server.read_i32_le().await.expect("len") as usize;
        let op = server.read_i16_le().await.expect("op");
        let id = server.read_i64_le().await.expect("id");
        let mut payload = vec![0; len - 10];
        server.read_exact(&mut payload).await.expect("payload");
        (op, id, payload)
    }

    async fn reply(server: &mut DuplexStream, id: i64, body: &[u8]) {
        server
            .write_i32_le((10 + body.len()) as i32)
            .await
            .expect("write");
        server.write_i64_le(id).await.expect("write");
        server.write_i16_le(0).await.expect("write");
        server.write_all(body).await.expect("write");
    }

    #[tokio::test]
    async fn replies_out_of_order_reach_their_requests() {
        let (client, mut server) = duplex(1 << 20);
        let connection = Arc::new(Connection::from_stream(client, 1 << 20));
        let first = tokio::spawn({
            let connection = connection.clone();
            async move {
                connection
                    .request(
                        1000,
                        vec![Bytes::from_static(b"one")],
                        Duration::from_secs(5),
                    )
                    .await
            }
        });
        let (_, id_one, payload) = read_request(&mut server).await;
        assert_eq!(payload, b"one");
        let second = tokio::spawn({
            let connection = connection.clone();
            async move {
                connection
                    .request(
                        1000,
                        vec![Bytes::from_static(b"two")],
                        Duration::from_secs(5),
                    )
                    .await
            }
        });
        let (_, id_two, _) = read_request(&mut server).await;
        reply(&mut server, id_two, b"reply-two").await;
        reply(&mut server, id_one, b"reply-one").await;
        let one = first.await.expect("join").expect("reply");
        let two = second.await.expect("join").expect("reply");
        assert_eq!(&one[..], b"reply-one");
        assert_eq!(&two[..], b"reply-two");
    }

    #[tokio::test]
    async fn bad_frame_length_fails_in_flight_requests_and_closes() {
        let (client, mut server) = duplex(1 << 20);
        let connection = Arc::new(Connection::from_stream(client, 1 << 20));
        let pending = tokio::spawn({
            let connection = connection.clone();
            async move {
                connection
                    .request(1000, vec![], Duration::from_secs(5))
                    .await
            }
        });
        let _ = read_request(&mut server).await;
        server.write_i32_le(-5).await.expect("write");
        let error = pending.await.expect("join").expect_err("must fail");
        assert!(
            matches!(error, RequestError::Closed(ref reason) if reason.contains("out of sync"))
        );
        assert!(connection.is_closed());
        let again = connection
            .request(1000, vec![], Duration::from_secs(1))
            .await;
        assert!(matches!(again, Err(RequestError::Closed(_))));
    }

    #[tokio::test]
    async fn eof_mid_frame_fails_requests() {
        let (client, mut server) = duplex(1 << 20);
        let connection = Arc::new(Connection::from_stream(client, 1 << 20));
        let pending = tokio::spawn({
            let connection = connection.clone();
            async move {
                connection
                    .request(1000, vec![], Duration::from_secs(5))
                    .await
            }
        });
        let (_, id, _) = read_request(&mut server).await;
        server.write_i32_le(1000).await.expect("write");
        server.write_i64_le(id).await.expect("write");
        drop(server);
        let error = pending.await.expect("join").expect_err("must fail");
        assert!(matches!(error, RequestError::Closed(_)));
    }

    #[tokio::test]
    async fn timeout_leaves_connection_usable() {
        let (client, mut server) = duplex(1 << 20);
        let connection = Connection::from_stream(client, 1 << 20);
        let result = connection
            .request(1000, vec![], Duration::from_millis(50))
            .await;
        assert!(matches!(result, Err(RequestError::Timeout)));
        let (_, late_id, _) = read_request(&mut server).await;
        // The late reply is dropped, the next request still works.
        reply(&mut server, late_id, b"late").await;
        let next = tokio::spawn(async move {
            let result = connection
                .request(1000, vec![], Duration::from_secs(5))
                .await;
            (connection, result)
        });
        let (_, id, _) = read_request(&mut server).await;
        reply(&mut server, id, b"ok").await;
        let (_connection, result) = next.await.expect("join");
        assert_eq!(&result.expect("reply")[..], b"ok");
    }

    #[tokio::test]
    async fn large_payload_is_written_whole() {
        let (client, mut server) = duplex(64 * 1024);
        let connection = Arc::new(Connection::from_stream(client, 64 << 20));
        let value = Bytes::from(vec![7u8; 5 * 1024 * 1024 + 3]);
        let pending = tokio::spawn({
            let connection = connection.clone();
            let value = value.clone();
            async move {
                connection
                    .request(
                        1001,
                        vec![Bytes::from_static(b"head"), value, Bytes::new()],
                        Duration::from_secs(20),
                    )
                    .await
            }
        });
        let (op, id, payload) = read_request(&mut server).await;
        assert_eq!(op, 1001);
        assert_eq!(&payload[..4], b"head");
        assert_eq!(&payload[4..], &value[..]);
        reply(&mut server, id, &[]).await;
        pending.await.expect("join").expect("reply");
    }
}
