//! Tests of the remote-storage proxy against a tiny HTTP/1.1 server started in each test.
//!
//! The server answers `GET /size/N` with an `N`-byte body and reads (and discards) any request
//! body, on keep-alive connections. The client is hand-written HTTP over raw TCP, so that the
//! tests see exactly the bytes and closes the proxy produces.

use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kfcache_harness::proxy::{Fault, Proxy, ProxyConfig, ProxyStats};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

type TestResult = Result<(), Box<dyn Error>>;

const MIB: usize = 1024 * 1024;

/// Starts the test server on an ephemeral port; it lives as long as the test's runtime.
async fn start_upstream() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // A failing test connection is the test client's business.
                let _ = serve(stream).await;
            });
        }
    });
    Ok(addr)
}

/// The status line and headers the test server sends for a body of `size` bytes.
fn response_head(size: usize) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n")
}

async fn serve(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let mut content_length = 0;
        loop {
            let mut header = String::new();
            if stream.read_line(&mut header).await? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut request_body = (&mut stream).take(content_length);
        tokio::io::copy(&mut request_body, &mut tokio::io::sink()).await?;

        let size = request_line
            .split_whitespace()
            .nth(1)
            .and_then(|path| path.strip_prefix("/size/"))
            .and_then(|size| size.parse::<usize>().ok())
            .unwrap_or(0);
        let stream = stream.get_mut();
        stream.write_all(response_head(size).as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let now = left.min(chunk.len());
            stream.write_all(&chunk[..now]).await?;
            left -= now;
        }
    }
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

/// An HTTP/1.1 client over one keep-alive connection.
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream: BufReader::new(stream),
        })
    }

    async fn get(&mut self, size: usize) -> io::Result<Response> {
        self.stream
            .get_mut()
            .write_all(get_request(size).as_bytes())
            .await?;
        self.read_response().await
    }

    async fn put(&mut self, body: &[u8]) -> io::Result<Response> {
        let head = format!(
            "PUT /upload HTTP/1.1\r\nHost: s3\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> io::Result<Response> {
        let mut status_line = String::new();
        if self.stream.read_line(&mut status_line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut content_length = 0;
        loop {
            let mut header = String::new();
            if self.stream.read_line(&mut header).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value
                        .trim()
                        .parse()
                        .map_err(|_| io::Error::other(format!("bad header {header:?}")))?;
                }
            }
        }
        let mut body = vec![0; content_length];
        self.stream.read_exact(&mut body).await?;
        Ok(Response { status, body })
    }

    /// Whether the proxy closed the connection: end of stream or a reset.
    async fn is_closed(&mut self) -> bool {
        let mut byte = [0; 1];
        match tokio::time::timeout(Duration::from_secs(2), self.stream.read(&mut byte)).await {
            Ok(Ok(read)) => read == 0,
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }
}

fn get_request(size: usize) -> String {
    format!("GET /size/{size} HTTP/1.1\r\nHost: s3\r\n\r\n")
}

fn limited(bandwidth: f64) -> ProxyConfig {
    ProxyConfig {
        bandwidth: Some(bandwidth),
        ..ProxyConfig::default()
    }
}

fn assert_rate(bytes: usize, elapsed: Duration, cap: f64) {
    let measured = bytes as f64 / elapsed.as_secs_f64();
    let error = (measured - cap).abs() / cap;
    eprintln!(
        "measured {measured:.0} B/s against a cap of {cap:.0} B/s ({bytes} bytes in {elapsed:?})"
    );
    assert!(
        error <= 0.10,
        "measured {measured:.0} B/s against a cap of {cap:.0} B/s ({:.1} % off, {bytes} bytes in {elapsed:?})",
        error * 100.0
    );
}

#[tokio::test]
async fn download_is_capped_at_the_bandwidth() -> TestResult {
    let cap = 2_000_000.0;
    let proxy = Proxy::start(start_upstream().await?, limited(cap)).await?;
    let mut client = Client::connect(proxy.addr()).await?;

    let start = Instant::now();
    let response = client.get(4 * MIB).await?;
    let elapsed = start.elapsed();

    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), 4 * MIB);
    assert_rate(4 * MIB, elapsed, cap);
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn parallel_downloads_share_the_bandwidth() -> TestResult {
    let cap = 2_000_000.0;
    let proxy = Proxy::start(start_upstream().await?, limited(cap)).await?;
    let mut first = Client::connect(proxy.addr()).await?;
    let mut second = Client::connect(proxy.addr()).await?;

    let start = Instant::now();
    let (first, second) = tokio::join!(first.get(2 * MIB), second.get(2 * MIB));
    let elapsed = start.elapsed();

    assert_eq!(first?.body.len(), 2 * MIB);
    assert_eq!(second?.body.len(), 2 * MIB);
    assert_rate(4 * MIB, elapsed, cap);
    assert_eq!(proxy.stats().connections, 2);
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn upload_is_capped_at_the_bandwidth() -> TestResult {
    let cap = 4_000_000.0;
    let proxy = Proxy::start(start_upstream().await?, limited(cap)).await?;
    let mut client = Client::connect(proxy.addr()).await?;
    let body = vec![b'u'; 2 * MIB];

    let start = Instant::now();
    let response = client.put(&body).await?;
    let elapsed = start.elapsed();

    assert_eq!(response.status, 200);
    assert_rate(2 * MIB, elapsed, cap);
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn latency_is_added_to_each_request_on_a_keep_alive_connection() -> TestResult {
    let latency = Duration::from_millis(50);
    let requests = 10;
    let config = ProxyConfig {
        latency,
        ..ProxyConfig::default()
    };
    let proxy = Proxy::start(start_upstream().await?, config).await?;
    let mut client = Client::connect(proxy.addr()).await?;

    let start = Instant::now();
    for _ in 0..requests {
        assert_eq!(client.get(100).await?.status, 200);
    }
    let delayed = start.elapsed();
    assert!(
        delayed >= latency * requests,
        "{requests} requests took {delayed:?}"
    );
    assert!(
        delayed < latency * requests * 2,
        "{requests} requests took {delayed:?}, more than one latency each"
    );

    proxy.set_latency(Duration::ZERO);
    let start = Instant::now();
    for _ in 0..requests {
        assert_eq!(client.get(100).await?.status, 200);
    }
    let undelayed = start.elapsed();
    assert!(
        undelayed < latency * requests / 5,
        "{requests} requests without latency took {undelayed:?}"
    );

    let stats = proxy.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.requests, 2 * u64::from(requests));
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn status_fault_answers_new_and_existing_connections_until_cleared() -> TestResult {
    let proxy = Proxy::start(start_upstream().await?, ProxyConfig::default()).await?;
    let mut existing = Client::connect(proxy.addr()).await?;
    assert_eq!(existing.get(10).await?.status, 200);

    proxy.set_fault(Fault::Status(503))?;
    let response = existing.get(10).await?;
    assert_eq!(response.status, 503);
    let body = String::from_utf8(response.body)?;
    assert!(
        body.contains("<Error><Code>ServiceUnavailable</Code>"),
        "{body}"
    );
    assert!(existing.is_closed().await, "a fault response closes");

    let mut fresh = Client::connect(proxy.addr()).await?;
    assert_eq!(fresh.get(10).await?.status, 503);
    assert!(fresh.is_closed().await);
    assert_eq!(proxy.stats().faults_injected, 2);

    proxy.set_fault(Fault::None)?;
    let mut restored = Client::connect(proxy.addr()).await?;
    let response = restored.get(10).await?;
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), 10);
    assert_eq!(proxy.stats().faults_injected, 2);
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn status_fraction_answers_every_kth_request() -> TestResult {
    let proxy = Proxy::start(start_upstream().await?, ProxyConfig::default()).await?;
    proxy.set_fault(Fault::StatusFraction {
        status: 500,
        fraction: 0.5,
    })?;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let mut client = Client::connect(proxy.addr()).await?;
        statuses.push(client.get(10).await?.status);
    }
    assert_eq!(statuses, [200, 500, 200, 500, 200, 500]);
    assert_eq!(proxy.stats().faults_injected, 3);
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn refuse_closes_connections_without_a_response_until_cleared() -> TestResult {
    let proxy = Proxy::start(start_upstream().await?, ProxyConfig::default()).await?;
    let mut existing = Client::connect(proxy.addr()).await?;
    assert_eq!(existing.get(10).await?.status, 200);

    proxy.set_fault(Fault::Refuse)?;
    assert!(existing.get(10).await.is_err(), "existing connection");
    let mut fresh = Client::connect(proxy.addr()).await?;
    // The proxy closes at once; writing the request may already fail.
    let answered = match fresh.get(10).await {
        Ok(response) => Some(response.status),
        Err(_) => None,
    };
    assert_eq!(answered, None, "new connection");
    assert_eq!(proxy.stats().faults_injected, 2);

    proxy.set_fault(Fault::None)?;
    let mut restored = Client::connect(proxy.addr()).await?;
    assert_eq!(restored.get(10).await?.status, 200);
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn stall_holds_a_request_until_cleared() -> TestResult {
    let proxy = Proxy::start(start_upstream().await?, ProxyConfig::default()).await?;
    proxy.set_fault(Fault::Stall)?;
    let addr = proxy.addr();
    let mut request = tokio::spawn(async move {
        let mut client = Client::connect(addr).await?;
        client.get(1000).await
    });

    let held = tokio::time::timeout(Duration::from_millis(300), &mut request).await;
    assert!(held.is_err(), "the request completed during the stall");
    assert_eq!(proxy.stats().bytes_up, 0);

    proxy.set_fault(Fault::None)?;
    let response = tokio::time::timeout(Duration::from_secs(2), request).await???;
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), 1000);
    assert_eq!(proxy.stats().faults_injected, 1);
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn stall_holds_a_download_under_way() -> TestResult {
    let proxy = Proxy::start(start_upstream().await?, limited(4_000_000.0)).await?;
    let addr = proxy.addr();
    let download = tokio::spawn(async move {
        let mut client = Client::connect(addr).await?;
        client.get(MIB).await
    });

    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.set_fault(Fault::Stall)?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stalled_at = proxy.stats().bytes_down;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.stats().bytes_down, stalled_at);
    assert!(stalled_at > 0 && stalled_at < MIB as u64, "{stalled_at}");

    proxy.set_fault(Fault::None)?;
    let response = tokio::time::timeout(Duration::from_secs(2), download).await???;
    assert_eq!(response.body.len(), MIB);
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn stats_count_forwarded_bytes_and_requests() -> TestResult {
    let proxy = Proxy::start(start_upstream().await?, ProxyConfig::default()).await?;
    let mut client = Client::connect(proxy.addr()).await?;
    for size in [1000, 5000] {
        assert_eq!(client.get(size).await?.body.len(), size);
    }
    let up = get_request(1000).len() + get_request(5000).len();
    let down = response_head(1000).len() + 1000 + response_head(5000).len() + 5000;
    assert_eq!(
        proxy.stats(),
        ProxyStats {
            connections: 1,
            requests: 2,
            bytes_down: down as u64,
            bytes_up: up as u64,
            faults_injected: 0,
        }
    );
    proxy.shutdown().await;
    Ok(())
}

// A client that half-closes after its request must still get the whole response.
#[tokio::test]
async fn half_close_from_the_client_still_delivers_the_response() -> TestResult {
    let proxy = Proxy::start(start_upstream().await?, ProxyConfig::default()).await?;
    let mut stream = TcpStream::connect(proxy.addr()).await?;
    stream.write_all(get_request(3000).as_bytes()).await?;
    stream.shutdown().await?;
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut received)).await??;
    assert_eq!(received.len(), response_head(3000).len() + 3000);
    proxy.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops_listening() -> TestResult {
    let proxy = Proxy::start(start_upstream().await?, ProxyConfig::default()).await?;
    let addr = proxy.addr();
    assert_eq!(proxy.endpoint(), format!("http://{addr}"));
    assert!(addr.ip().is_loopback());
    let mut client = Client::connect(addr).await?;
    assert_eq!(client.get(10).await?.status, 200);

    proxy.shutdown().await;
    assert!(client.is_closed().await);
    assert!(TcpStream::connect(addr).await.is_err());
    Ok(())
}

#[tokio::test]
async fn dropping_the_proxy_closes_connections() -> TestResult {
    let proxy = Proxy::start(start_upstream().await?, ProxyConfig::default()).await?;
    let addr = proxy.addr();
    let mut client = Client::connect(addr).await?;
    assert_eq!(client.get(10).await?.status, 200);

    drop(proxy);
    assert!(client.is_closed().await);
    assert!(TcpStream::connect(addr).await.is_err());
    Ok(())
}

#[tokio::test]
async fn invalid_settings_are_rejected() -> TestResult {
    let upstream = start_upstream().await?;
    assert!(Proxy::start(upstream, limited(0.0)).await.is_err());
    let no_burst = ProxyConfig {
        burst: 0,
        ..ProxyConfig::default()
    };
    assert!(Proxy::start(upstream, no_burst).await.is_err());

    let proxy = Proxy::start(upstream, ProxyConfig::default()).await?;
    assert!(proxy.set_bandwidth(Some(-1.0)).is_err());
    assert!(proxy.set_fault(Fault::Status(42)).is_err());
    proxy.set_bandwidth(Some(1e6))?;
    assert_eq!(proxy.bandwidth(), Some(1e6));
    proxy.shutdown().await;
    Ok(())
}
