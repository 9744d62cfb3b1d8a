//! What the gateway's tests share: finding the real servers `scripts/services.sh` starts
//! (a missing variable fails the test with instructions, never passes it silently), a counting
//! HTTP proxy in front of the origin, and a running gateway wired to real Ignite and moto.
//!
//! The origin chain is `gateway → counting proxy → harness proxy → moto`. The counting proxy
//! records the method and target of every request, so a test can assert that no GET of a
//! cached object reached the origin (the harness proxy counts request starts but not
//! methods). Ignite is reached through another harness proxy, so a test can make the cache
//! refuse or hang without touching the shared cluster.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kfcache_gateway::{Gateway, GatewayConfig, Origin, OriginConfig, S3Credentials};
use kfcache_harness::proxy::{Proxy, ProxyConfig};
use kfcache_ignite::{Client, ClientConfig};
use kfcache_prefetcher::{
    stage_object, CacheSink, IgniteSink, IgniteSinkConfig, LayoutConfig, Manifest, ObjectCache,
    ObjectStoreSource, SourceConfig, StageOptions,
};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub fn env(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "{variable} is not set. This test needs the real Ignite and S3 servers: run \
             `bash scripts/test.sh`, or `scripts/services.sh up && eval \"$(scripts/services.sh env)\"` \
             before `cargo test -p kfcache-gateway`."
        ),
    }
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Builds the Go S3 client in `tests/NAME` (`go build`) into the test binary's scratch folder
/// and returns its path; fails with instructions when Go is missing.
pub fn go_client(name: &str) -> std::path::PathBuf {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name);
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&source)
        .status()
        .unwrap_or_else(|error| {
            panic!("cannot run `go build` ({error}): this test needs Go (1.26 or later) and the Go module proxy, or the modules in the module cache")
        });
    assert!(built.success(), "`go build` of {} failed", source.display());
    out
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 11) as u8))
        .collect()
}

pub fn credentials() -> S3Credentials {
    S3Credentials {
        access_key_id: env("AWS_ACCESS_KEY_ID"),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
    }
}

pub fn addr_of(endpoint: &str) -> SocketAddr {
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    hostport
        .parse()
        .unwrap_or_else(|_| panic!("{endpoint} is not http://IP:PORT"))
}

/// One request as the origin saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: Method,
    pub target: String,
}

/// An HTTP/1.1 forward proxy that records every request.
pub struct CountingProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _stop: oneshot::Sender<()>,
}

impl CountingProxy {
    pub async fn start(upstream: SocketAddr) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let client: HttpClient<_, Incoming> =
            HttpClient::builder(TokioExecutor::new()).build_http();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = &mut stopped => return,
                };
                let client = client.clone();
                let log = log.clone();
                let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    let client = client.clone();
                    let log = log.clone();
                    async move {
                        let target = request
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_default();
                        log.lock().unwrap().push(Seen {
                            method: request.method().clone(),
                            target: target.clone(),
                        });
                        *request.uri_mut() = format!("http://{upstream}{target}").parse().unwrap();
                        let response: Response<Incoming> = match client.request(request).await {
                            Ok(response) => response,
                            Err(error) => {
                                panic!("the counting proxy cannot reach {upstream}: {error}")
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CountingProxy {
            addr,
            seen,
            _stop: stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// Requests with `method` whose path is `/BUCKET/KEY` (any query).
    pub fn count(&self, method: &Method, bucket: &str, key: &str) -> usize {
        let path = format!("/{bucket}/{key}");
        self.seen()
            .iter()
            .filter(|s| s.method == *method && s.target.split('?').next() == Some(path.as_str()))
            .count()
    }
}

/// A running gateway in front of moto and Ignite, for one test.
pub struct Setup {
    pub bucket: String,
    pub prefix: String,
    pub tenant: String,
    /// moto, directly.
    pub moto: AmazonS3,
    pub moto_endpoint: String,
    /// What the origin sees.
    pub origin: CountingProxy,
    pub origin_link: Proxy,
    /// Ignite as the gateway reaches it (faults go here).
    pub ignite_link: Proxy,
    /// The tenant's cache on the real cluster, reached directly (for staging).
    pub cache: ObjectCache<IgniteSink>,
    pub gateway: Gateway,
    pub gateway_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<kfcache_gateway::Result<()>>>,
}

impl Setup {
    /// The object's bytes at the origin, read from moto directly.
    pub async fn at_origin(&self, key: &str) -> bytes::Bytes {
        self.moto
            .get(&object_store::path::Path::from(key))
            .await
            .expect("get from moto")
            .bytes()
            .await
            .expect("read from moto")
    }
}

pub const CHUNK: u64 = 1 << 20;

pub fn layout(namespace: &str) -> LayoutConfig {
    LayoutConfig {
        namespace: namespace.to_string(),
        chunk_size: CHUNK,
        read_batch_bytes: 4 * CHUNK,
        ..LayoutConfig::default()
    }
}

async fn ignite_cache(
    addresses: Vec<String>,
    cache_name: &str,
    layout: LayoutConfig,
    request_timeout: Duration,
) -> ObjectCache<IgniteSink> {
    let client = Client::connect(
        ClientConfig::new(addresses)
            .with_connect_timeout(Duration::from_secs(2))
            .with_request_timeout(request_timeout),
    )
    .await
    .unwrap_or_else(|error| panic!("cannot connect to KFCACHE_TEST_IGNITE_1: {error}"));
    let sink = IgniteSink::open(
        client,
        &IgniteSinkConfig {
            cache_name: cache_name.to_string(),
            backups: 0,
        },
    )
    .await
    .unwrap();
    ObjectCache::new(Arc::new(sink), layout).unwrap()
}

pub fn as_dyn(cache: &ObjectCache<IgniteSink>) -> ObjectCache<dyn CacheSink> {
    let sink: Arc<dyn CacheSink> = cache.sink().clone();
    ObjectCache::new(sink, cache.config().clone()).unwrap()
}

pub fn s3_store(endpoint: &str, bucket: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .with_access_key_id(env("AWS_ACCESS_KEY_ID"))
        .with_secret_access_key(env("AWS_SECRET_ACCESS_KEY"))
        .build()
        .unwrap()
}

pub fn source_config(endpoint: &str) -> SourceConfig {
    SourceConfig {
        s3_endpoint: Some(endpoint.to_string()),
        s3_region: Some("us-east-1".to_string()),
        s3_allow_http: Some(true),
        max_retries: Some(1),
        request_timeout: Some(Duration::from_secs(10)),
        ..SourceConfig::default()
    }
}

impl Setup {
    /// A gateway for a fresh tenant, in its own Ignite cache.
    pub async fn start(name: &str) -> Setup {
        Setup::start_with(name, |_| {}).await
    }

    pub async fn start_with(name: &str, adjust: impl FnOnce(&mut GatewayConfig)) -> Setup {
        Setup::start_with_layout(name, adjust, layout).await
    }

    /// [`Setup::start_with`], with the cache layout `layout(namespace)`.
    pub async fn start_with_layout(
        name: &str,
        adjust: impl FnOnce(&mut GatewayConfig),
        layout: fn(&str) -> LayoutConfig,
    ) -> Setup {
        let moto_endpoint = env("KFCACHE_TEST_S3_ENDPOINT");
        let bucket = env("KFCACHE_TEST_S3_BUCKET");
        let ignite: Vec<String> =
            ClientConfig::from_address_list(&env("KFCACHE_TEST_IGNITE_1")).addresses;
        let tenant = "team-a".to_string();
        let namespace = format!("default.{tenant}");
        let cache_name = unique(&format!("test-gateway-{name}"));
        let cache = ignite_cache(
            ignite.clone(),
            &cache_name,
            layout(&namespace),
            Duration::from_secs(30),
        )
        .await;
        let ignite_addr: SocketAddr = ignite[0].parse().unwrap();
        let ignite_link = Proxy::start(ignite_addr, ProxyConfig::default())
            .await
            .unwrap();
        let gateway_cache = ignite_cache(
            vec![ignite_link.addr().to_string()],
            &cache_name,
            layout(&namespace),
            Duration::from_secs(10),
        )
        .await;

        let origin_link = Proxy::start(addr_of(&moto_endpoint), ProxyConfig::default())
            .await
            .unwrap();
        let origin = CountingProxy::start(origin_link.addr()).await;
        let mut config = GatewayConfig::new(tenant.clone(), credentials());
        config.cache_timeout = Duration::from_secs(1);
        config.cache_cooldown = Duration::from_secs(2);
        config.freshness_timeout = Duration::from_secs(5);
        config.virtual_host_domains = vec!["s3.kfcache.test".to_string()];
        adjust(&mut config);
        let gateway = Gateway::new(
            config,
            Some(as_dyn(&gateway_cache)),
            Origin::new(
                &OriginConfig {
                    endpoint: Some(origin.endpoint()),
                    region: "us-east-1".to_string(),
                    credentials: credentials(),
                    connect_timeout: Duration::from_secs(2),
                },
                Arc::new(ObjectStoreSource::new(source_config(&origin.endpoint()))),
            ),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = gateway.clone();
        let served = tokio::spawn(async move {
            serving
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Setup {
            moto: s3_store(&moto_endpoint, &bucket),
            moto_endpoint,
            prefix: unique(name),
            bucket,
            tenant,
            origin,
            origin_link,
            ignite_link,
            cache,
            gateway,
            gateway_addr,
            stop: Some(stop),
            served: Some(served),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.gateway_addr)
    }

    /// object_store's S3 client pointed at the gateway.
    pub fn client(&self) -> AmazonS3 {
        s3_store(&self.endpoint(), &self.bucket)
    }

    /// aws-sdk-s3 pointed at the gateway.
    pub fn aws_client(&self) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let credentials = credentials();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                credentials.access_key_id,
                credentials.secret_access_key,
                None,
                None,
                "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    pub async fn put_origin(&self, key: &str, data: Vec<u8>) {
        self.moto
            .put(&Path::from(key), PutPayload::from(data))
            .await
            .unwrap();
    }

    /// Stages `key` with kfcache's own staging, reading moto directly.
    pub async fn stage(&self, key: &str) -> Manifest {
        let source = ObjectStoreSource::new(source_config(&self.moto_endpoint));
        stage_object(
            &source,
            &self.cache,
            &self.uri(key),
            StageOptions::default(),
        )
        .await
        .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            tokio::time::timeout(Duration::from_secs(40), served)
                .await
                .expect("the gateway did not stop")
                .unwrap()
                .unwrap();
        }
        let _ = self.cache.sink().destroy().await;
    }
}
