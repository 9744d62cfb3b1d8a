//! A TCP proxy in front of an S3-compatible HTTP server that emulates remote storage.
//!
//! `kfcache bench e2e` and the fault tests put the local S3 server (moto) behind a [`Proxy`] so
//! that reading an artifact costs what it costs over a real link:
//!
//! - **Bandwidth.** One token bucket for server→client bytes (downloads) and one for
//!   client→server bytes (uploads), each shared by *all* connections, so parallel connections
//!   share the cap like they share one remote link. Bytes are forwarded in chunks no larger than
//!   the bucket depth. The bucket hands out reservations (it may go into debt, and the caller
//!   sleeps off the debt), so waiting connections are served in turn and timer overshoot is
//!   credited back instead of lost.
//! - **Latency per request.** HTTP/1.1 keep-alive carries many requests on one connection. The
//!   proxy does not parse HTTP; it takes the first client→server bytes of a connection, and any
//!   client→server bytes that arrive after the server has sent response bytes since the last
//!   request began, as the start of a new request, and holds those bytes back for the latency.
//! - **Faults** ([`Fault`]), checked when a connection is accepted and at each request start, so
//!   existing keep-alive connections see a change at their next request.
//!
//! All settings can change while the proxy runs ([`Proxy::set_bandwidth`],
//! [`Proxy::set_latency`], [`Proxy::set_fault`]). The proxy runs as tasks on the current tokio
//! runtime: one accept task that owns every connection task in a [`JoinSet`], so that
//! [`Proxy::shutdown`], or dropping the [`Proxy`], ends all of them.
//!
//! Request detection is a heuristic that fits request/response HTTP/1.1 without pipelining. It
//! miscounts a request body sent after an interim `100 Continue` response as a new request.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// The largest chunk forwarded at once, whatever the bucket depth.
const MAX_CHUNK: usize = 64 * 1024;

/// The bucket holds at least what the rate delivers in this time. tokio's timer has a resolution
/// of one millisecond, so a sleep overshoots by up to that much; without this slack a bucket
/// shallower than `rate × 1 ms` would throw the overshoot away and cut high rates.
const TIMER_SLACK: Duration = Duration::from_millis(5);

/// How long a connection answered with a fault status is drained before it is dropped, so that
/// unread request bytes do not make the kernel reset the connection before the client has read
/// the response.
const LINGER: Duration = Duration::from_secs(1);

/// What can go wrong when starting or configuring the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The proxy could not listen on loopback.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address the proxy tried to listen on.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The listening socket could not report its address.
    #[error("cannot read the address the proxy listens on")]
    LocalAddr {
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A bandwidth that is not a positive, finite number of bytes per second.
    #[error("bandwidth must be a positive, finite number of bytes per second, got {value}")]
    InvalidBandwidth {
        /// The rejected bandwidth.
        value: f64,
    },
    /// A token bucket depth of zero.
    #[error("the token bucket depth (burst) must be at least one byte")]
    InvalidBurst,
    /// A fault status that is not an HTTP status code.
    #[error("a fault status must be an HTTP status code from 100 to 599, got {status}")]
    InvalidStatus {
        /// The rejected status.
        status: u16,
    },
    /// A fault fraction outside 0..=1.
    #[error("a fault fraction must be between 0 and 1, got {fraction}")]
    InvalidFraction {
        /// The rejected fraction.
        fraction: f64,
    },
}

/// The result of the proxy's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the proxy shapes traffic when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProxyConfig {
    /// The cap in bytes per second for each direction, shared by all connections; `None` is
    /// unlimited.
    pub bandwidth: Option<f64>,
    /// The delay added to the start of each HTTP request.
    pub latency: Duration,
    /// The depth of each token bucket in bytes, which is also the largest chunk forwarded at
    /// once (capped at 64 KiB).
    pub burst: u64,
}

impl Default for ProxyConfig {
    /// Unlimited bandwidth, no latency, a 64 KiB bucket.
    fn default() -> Self {
        Self {
            bandwidth: None,
            latency: Duration::ZERO,
            burst: 64 * 1024,
        }
    }
}

/// A fault the proxy injects, see [`Proxy::set_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Fault {
    /// Forward everything.
    #[default]
    None,
    /// Every new request is answered with this HTTP status by the proxy itself (an S3-style
    /// XML error body, `Connection: close`), then the connection is closed. Nothing of the
    /// request is forwarded.
    Status(u16),
    /// A fraction (0..=1) of new requests is answered like [`Fault::Status`]. The choice is a
    /// deterministic counter, not a random draw: counting the requests since the fault was set
    /// from 0, request `n` is answered when `floor((n + 1) × fraction) > floor(n × fraction)`.
    /// So 0.5 answers every second request, 0.25 every fourth, 1 all of them, and over any run
    /// the answered share is the fraction to within one request.
    StatusFraction {
        /// The status to answer with.
        status: u16,
        /// The share of requests to answer, 0..=1.
        fraction: f64,
    },
    /// Accept connections, then close them at once without a response, like a stopped or
    /// resetting server. Existing connections are closed at their next request start.
    Refuse,
    /// A hung server: forward nothing, in either direction and including responses already
    /// under way, until the fault changes. Connections are still accepted.
    Stall,
}

impl Fault {
    fn validate(self) -> Result<Self> {
        let check_status = |status: u16| {
            if (100..=599).contains(&status) {
                Ok(())
            } else {
                Err(Error::InvalidStatus { status })
            }
        };
        match self {
            Fault::Status(status) => check_status(status)?,
            Fault::StatusFraction { status, fraction } => {
                check_status(status)?;
                if !(0.0..=1.0).contains(&fraction) {
                    return Err(Error::InvalidFraction { fraction });
                }
            }
            Fault::None | Fault::Refuse | Fault::Stall => {}
        }
        Ok(self)
    }
}

/// What the proxy has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    /// Connections accepted, including those closed by [`Fault::Refuse`].
    pub connections: u64,
    /// Request starts seen (see the module docs), including those answered by a fault.
    pub requests: u64,
    /// Bytes forwarded from the server to clients; fault responses are not counted.
    pub bytes_down: u64,
    /// Bytes forwarded from clients to the server.
    pub bytes_up: u64,
    /// Requests answered with a fault status, connections closed by [`Fault::Refuse`], and
    /// requests held at their start by [`Fault::Stall`].
    pub faults_injected: u64,
}

/// A running proxy. Dropping it stops the proxy and closes every connection, like
/// [`Proxy::shutdown`] without waiting.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    accept_task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on an ephemeral port of 127.0.0.1 and forwards every connection to `upstream`.
    ///
    /// Must be called within a tokio runtime; the proxy's tasks run on it.
    pub async fn start(upstream: SocketAddr, config: ProxyConfig) -> Result<Proxy> {
        if config.burst == 0 {
            return Err(Error::InvalidBurst);
        }
        let bandwidth = validate_bandwidth(config.bandwidth)?;
        let bind_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let listener = TcpListener::bind(bind_addr)
            .await
            .map_err(|source| Error::Bind {
                addr: bind_addr,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::LocalAddr { source })?;

        let now = Instant::now();
        let burst = config.burst as f64;
        let shared = Arc::new(Shared {
            upstream,
            chunk: usize::try_from(config.burst).map_or(MAX_CHUNK, |burst| burst.min(MAX_CHUNK)),
            latency_nanos: AtomicU64::new(duration_nanos(config.latency)),
            down: Mutex::new(TokenBucket::new(bandwidth, burst, now)),
            up: Mutex::new(TokenBucket::new(bandwidth, burst, now)),
            fault: watch::Sender::new(Fault::None),
            fraction_counter: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let (stop, stopped) = oneshot::channel();
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stopped));
        tracing::debug!(%addr, %upstream, ?config, "proxy started");
        Ok(Proxy {
            addr,
            shared,
            stop: Some(stop),
            accept_task: Some(accept_task),
        })
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy as an HTTP endpoint, `http://127.0.0.1:PORT`, for an S3 client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Changes the cap of both directions; `None` lifts it. Transfers already waiting for
    /// bandwidth finish the wait they were given.
    pub fn set_bandwidth(&self, bandwidth: Option<f64>) -> Result<()> {
        let bandwidth = validate_bandwidth(bandwidth)?;
        let now = Instant::now();
        lock(&self.shared.down).set_rate(bandwidth, now);
        lock(&self.shared.up).set_rate(bandwidth, now);
        Ok(())
    }

    /// The current cap in bytes per second, `None` if unlimited.
    pub fn bandwidth(&self) -> Option<f64> {
        lock(&self.shared.down).rate
    }

    /// Changes the delay added to each request start, from the next request on.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_nanos
            .store(duration_nanos(latency), Ordering::Relaxed);
    }

    /// The current delay per request.
    pub fn latency(&self) -> Duration {
        self.shared.latency()
    }

    /// Injects `fault` from now on; [`Fault::None`] clears it. New connections see it at once,
    /// existing ones at their next request start; [`Fault::Stall`] also holds transfers under
    /// way, and clearing it releases them. Setting a fault restarts the counter of
    /// [`Fault::StatusFraction`].
    pub fn set_fault(&self, fault: Fault) -> Result<()> {
        let fault = fault.validate()?;
        self.shared.fraction_counter.store(0, Ordering::Relaxed);
        self.shared.fault.send_replace(fault);
        tracing::debug!(?fault, "proxy fault set");
        Ok(())
    }

    /// The fault injected now.
    pub fn fault(&self) -> Fault {
        *self.shared.fault.borrow()
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> ProxyStats {
        let counters = &self.shared.counters;
        ProxyStats {
            connections: counters.connections.load(Ordering::Relaxed),
            requests: counters.requests.load(Ordering::Relaxed),
            bytes_down: counters.bytes_down.load(Ordering::Relaxed),
            bytes_up: counters.bytes_up.load(Ordering::Relaxed),
            faults_injected: counters.faults_injected.load(Ordering::Relaxed),
        }
    }

    /// Stops listening, closes every connection and waits until all the proxy's tasks ended.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the accept task already ended.
            let _ = stop.send(());
        }
        if let Some(accept_task) = self.accept_task.take() {
            if let Err(error) = accept_task.await {
                tracing::debug!(%error, "proxy accept task ended abnormally");
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        if let Some(accept_task) = self.accept_task.take() {
            accept_task.abort();
        }
    }
}

/// State shared by the handle, the accept task and the connection tasks.
#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    /// The buffer size of each direction of a connection: min(burst, 64 KiB).
    chunk: usize,
    latency_nanos: AtomicU64,
    /// Server→client bytes.
    down: Mutex<TokenBucket>,
    /// Client→server bytes.
    up: Mutex<TokenBucket>,
    fault: watch::Sender<Fault>,
    /// Requests seen since the fault was last set, for [`Fault::StatusFraction`].
    fraction_counter: AtomicU64,
    counters: Counters,
}

impl Shared {
    fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    faults_injected: AtomicU64,
}

/// A token bucket that hands out reservations: taking more tokens than it holds puts it into
/// debt, and the taker waits until the debt would be paid off. Takers are thereby served in
/// the order they asked, and a late wake-up is credited at the next refill.
#[derive(Debug)]
struct TokenBucket {
    /// Bytes per second; `None` is unlimited.
    rate: Option<f64>,
    /// The configured depth in bytes.
    burst: f64,
    /// Tokens in the bucket; negative while in debt.
    tokens: f64,
    last_refill: Instant,
}

impl TokenBucket {
    fn new(rate: Option<f64>, burst: f64, now: Instant) -> Self {
        let mut bucket = Self {
            rate,
            burst,
            tokens: 0.0,
            last_refill: now,
        };
        bucket.tokens = bucket.depth();
        bucket
    }

    /// The most tokens the bucket holds: the burst, but at least [`TIMER_SLACK`] worth.
    fn depth(&self) -> f64 {
        match self.rate {
            Some(rate) => self.burst.max(rate * TIMER_SLACK.as_secs_f64()),
            None => self.burst,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now
                .saturating_duration_since(self.last_refill)
                .as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(self.depth());
        }
        self.last_refill = now;
    }

    /// Takes `bytes` tokens and returns how long to wait before sending them.
    fn reserve(&mut self, bytes: u64, now: Instant) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        self.refill(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-self.tokens / rate).unwrap_or(Duration::MAX)
        }
    }

    fn set_rate(&mut self, rate: Option<f64>, now: Instant) {
        self.refill(now);
        let was_unlimited = self.rate.is_none();
        self.rate = rate;
        self.tokens = if was_unlimited {
            self.depth()
        } else {
            self.tokens.min(self.depth())
        };
    }
}

fn validate_bandwidth(bandwidth: Option<f64>) -> Result<Option<f64>> {
    match bandwidth {
        Some(value) if !(value.is_finite() && value > 0.0) => {
            Err(Error::InvalidBandwidth { value })
        }
        other => Ok(other),
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn count(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    tracing::trace!(%peer, "proxy accepted a connection");
                    connections.spawn(serve_connection(client, Arc::clone(&shared)));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "proxy cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "proxy connection task ended abnormally");
                }
            }
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// How the two directions of a connection ended.
enum Outcome {
    /// Both sides closed.
    Done,
    /// Answer the client with this status, then close.
    Respond(u16),
    /// Close both sides now.
    Close,
}

/// How the client→server direction ended.
enum UpEnd {
    /// The client closed its side; the server's side was shut down in turn.
    Eof,
    Respond(u16),
    Close,
}

/// What to do with a request that starts.
enum Verdict {
    Forward,
    Respond(u16),
    Close,
}

async fn serve_connection(mut client: TcpStream, shared: Arc<Shared>) {
    count(&shared.counters.connections, 1);
    if matches!(*shared.fault.borrow(), Fault::Refuse) {
        count(&shared.counters.faults_injected, 1);
        return;
    }
    let mut upstream = match TcpStream::connect(shared.upstream).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::debug!(%error, upstream = %shared.upstream, "proxy cannot reach the server");
            return;
        }
    };
    for stream in [&client, &upstream] {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "proxy cannot set TCP_NODELAY");
        }
    }

    // Set by the server→client direction whenever it forwards bytes; taken by the
    // client→server direction, whose next bytes then start a new request.
    let request_boundary = AtomicBool::new(true);
    let outcome = {
        let (mut client_read, mut client_write) = client.split();
        let (mut upstream_read, mut upstream_write) = upstream.split();
        let up = pump_up(
            &mut client_read,
            &mut upstream_write,
            &shared,
            &request_boundary,
        );
        let down = pump_down(
            &mut upstream_read,
            &mut client_write,
            &shared,
            &request_boundary,
        );
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                ended = &mut up, if !up_done => match ended {
                    Ok(UpEnd::Eof) => up_done = true,
                    Ok(UpEnd::Respond(status)) => break Outcome::Respond(status),
                    Ok(UpEnd::Close) => break Outcome::Close,
                    Err(error) => {
                        tracing::debug!(%error, "proxy connection failed client→server");
                        break Outcome::Close;
                    }
                },
                ended = &mut down, if !down_done => match ended {
                    Ok(()) => down_done = true,
                    Err(error) => {
                        tracing::debug!(%error, "proxy connection failed server→client");
                        break Outcome::Close;
                    }
                },
            }
            if up_done && down_done {
                break Outcome::Done;
            }
        }
    };
    drop(upstream);
    if let Outcome::Respond(status) = outcome {
        let request_id = shared.counters.faults_injected.load(Ordering::Relaxed);
        if let Err(error) = respond_with_fault(&mut client, status, request_id).await {
            tracing::debug!(%error, status, "proxy cannot send the fault response");
        }
    }
}

/// Forwards client→server bytes, holding back request starts for the latency and the fault.
async fn pump_up<R, W>(
    client: &mut R,
    upstream: &mut W,
    shared: &Shared,
    request_boundary: &AtomicBool,
) -> io::Result<UpEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut fault = shared.fault.subscribe();
    let mut buffer = vec![0; shared.chunk];
    loop {
        let read = client.read(&mut buffer).await?;
        if read == 0 {
            upstream.shutdown().await?;
            return Ok(UpEnd::Eof);
        }
        if request_boundary.swap(false, Ordering::AcqRel) {
            count(&shared.counters.requests, 1);
            match judge_request(shared, &mut fault).await {
                Verdict::Forward => {}
                Verdict::Respond(status) => return Ok(UpEnd::Respond(status)),
                Verdict::Close => return Ok(UpEnd::Close),
            }
            let latency = shared.latency();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
        }
        wait_while_stalled(&mut fault).await;
        throttle(&shared.up, read).await;
        upstream.write_all(&buffer[..read]).await?;
        count(&shared.counters.bytes_up, read as u64);
    }
}

/// Forwards server→client bytes and marks the request boundary.
async fn pump_down<R, W>(
    upstream: &mut R,
    client: &mut W,
    shared: &Shared,
    request_boundary: &AtomicBool,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut fault = shared.fault.subscribe();
    let mut buffer = vec![0; shared.chunk];
    loop {
        let read = upstream.read(&mut buffer).await?;
        if read == 0 {
            client.shutdown().await?;
            return Ok(());
        }
        wait_while_stalled(&mut fault).await;
        throttle(&shared.down, read).await;
        request_boundary.store(true, Ordering::Release);
        client.write_all(&buffer[..read]).await?;
        count(&shared.counters.bytes_down, read as u64);
    }
}

/// Decides what the fault asks for a request that starts now.
async fn judge_request(shared: &Shared, fault: &mut watch::Receiver<Fault>) -> Verdict {
    loop {
        let current = *fault.borrow_and_update();
        match current {
            Fault::None => return Verdict::Forward,
            Fault::Status(status) => {
                count(&shared.counters.faults_injected, 1);
                return Verdict::Respond(status);
            }
            Fault::StatusFraction { status, fraction } => {
                let seen = shared.fraction_counter.fetch_add(1, Ordering::Relaxed);
                if fraction_hits(seen, fraction) {
                    count(&shared.counters.faults_injected, 1);
                    return Verdict::Respond(status);
                }
                return Verdict::Forward;
            }
            Fault::Refuse => {
                count(&shared.counters.faults_injected, 1);
                return Verdict::Close;
            }
            Fault::Stall => {
                count(&shared.counters.faults_injected, 1);
                if fault.wait_for(|f| *f != Fault::Stall).await.is_err() {
                    // The proxy is gone.
                    return Verdict::Close;
                }
            }
        }
    }
}

/// Whether request `seen` (counted from 0) is answered under a fraction fault.
fn fraction_hits(seen: u64, fraction: f64) -> bool {
    let before = (seen as f64 * fraction).floor();
    let after = ((seen + 1) as f64 * fraction).floor();
    after > before
}

async fn wait_while_stalled(fault: &mut watch::Receiver<Fault>) {
    let stalled = *fault.borrow() == Fault::Stall;
    if stalled {
        // An error means the proxy is gone; its task is about to be aborted.
        let _ = fault.wait_for(|f| *f != Fault::Stall).await;
    }
}

async fn throttle(bucket: &Mutex<TokenBucket>, bytes: usize) {
    let wait = lock(bucket).reserve(bytes as u64, Instant::now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// Answers with an S3-style error, then closes the connection gracefully: the proxy shuts down
/// its side and reads what the client still sends for a while, so that unread request bytes do
/// not turn the close into a reset that could destroy the response.
async fn respond_with_fault(
    client: &mut TcpStream,
    status: u16,
    request_id: u64,
) -> io::Result<()> {
    let code = s3_error_code(status);
    let reason = reason_phrase(status);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{reason} (injected by the kfcache proxy)</Message>\
         <RequestId>kfcache-proxy-{request_id}</RequestId></Error>\n"
    );
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\nx-amz-request-id: kfcache-proxy-{request_id}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await?;
    let mut sink = [0; 4096];
    let drain = async {
        while client.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    // Hitting the deadline is fine: the client had its time to read the response.
    let _ = tokio::time::timeout(LINGER, drain).await;
    Ok(())
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}

fn s3_error_code(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        403 => "AccessDenied",
        404 => "NoSuchKey",
        408 => "RequestTimeout",
        429 => "SlowDown",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_starts_full_then_charges_debt_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Some(1000.0), 100.0, start);
        assert_eq!(bucket.reserve(100, start), Duration::ZERO);
        assert_eq!(bucket.reserve(50, start), Duration::from_millis(50));
        // A second taker queues behind the first one's debt.
        assert_eq!(bucket.reserve(50, start), Duration::from_millis(100));
        // After the debt is paid off, the bucket refills up to its depth only.
        let later = start + Duration::from_secs(10);
        assert_eq!(bucket.reserve(100, later), Duration::ZERO);
        assert_eq!(bucket.reserve(1, later), Duration::from_millis(1));
    }

    #[test]
    fn unlimited_bucket_never_waits() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(None, 10.0, start);
        assert_eq!(bucket.reserve(u64::MAX, start), Duration::ZERO);
        bucket.set_rate(Some(10.0), start);
        assert_eq!(bucket.reserve(10, start), Duration::ZERO);
        assert_eq!(bucket.reserve(10, start), Duration::from_secs(1));
    }

    #[test]
    fn bucket_is_at_least_timer_slack_deep() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Some(1e9), 1024.0, start);
        assert_eq!(bucket.reserve(4_000_000, start), Duration::ZERO);
    }

    #[test]
    fn fraction_answers_every_kth_request() {
        let hits = |fraction| {
            (0..8)
                .map(|seen| fraction_hits(seen, fraction))
                .collect::<Vec<_>>()
        };
        assert_eq!(hits(0.0), [false; 8]);
        assert_eq!(hits(1.0), [true; 8]);
        assert_eq!(
            hits(0.5),
            [false, true, false, true, false, true, false, true]
        );
        assert_eq!(
            hits(0.25),
            [false, false, false, true, false, false, false, true]
        );
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(validate_bandwidth(Some(0.0)).is_err());
        assert!(validate_bandwidth(Some(f64::NAN)).is_err());
        assert!(validate_bandwidth(Some(f64::INFINITY)).is_err());
        assert!(validate_bandwidth(None).is_ok());
        assert!(Fault::Status(99).validate().is_err());
        assert!(Fault::Status(503).validate().is_ok());
        let fraction = |fraction| Fault::StatusFraction {
            status: 503,
            fraction,
        };
        assert!(fraction(1.5).validate().is_err());
        assert!(fraction(f64::NAN).validate().is_err());
        assert!(fraction(0.3).validate().is_ok());
    }
}
