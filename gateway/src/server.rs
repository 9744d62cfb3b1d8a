//! The [`Gateway`]: builds the s3s service (SigV4 with the origin's key, path-style and
//! virtual-host-style addressing, the cache-or-origin [`crate::service`]) and serves it on a
//! listener until a shutdown signal, then lets requests in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use kfcache_prefetcher::{ArtifactSource, CacheSink, ObjectCache};
use s3s::auth::SimpleAuth;
use s3s::host::{S3Host, VirtualHost};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::S3Result;
use tokio::net::TcpListener;

use crate::config::{GatewayConfig, OriginConfig};
use crate::error::{Error, Result};
use crate::metrics::GatewayMetrics;
use crate::service::{CacheSlot, GatewayS3, Shared};
use crate::write::{Buffers, Uploads};

/// How long requests in flight may take to finish after the shutdown signal.
const GRACE: Duration = Duration::from_secs(30);

/// The origin: an aws-sdk-s3 client for forwarding, and kfcache's artifact source for the
/// freshness checks (configured for the same endpoint and key).
#[derive(Debug, Clone)]
pub struct Origin {
    client: aws_sdk_s3::Client,
    source: Arc<dyn ArtifactSource>,
}

impl Origin {
    /// A client of the origin `config` describes, path-style, that computes and validates
    /// checksums only where S3 requires them (what the client sent is forwarded as it is).
    pub fn new(config: &OriginConfig, source: Arc<dyn ArtifactSource>) -> Origin {
        use aws_sdk_s3::config::{
            timeout::TimeoutConfig, BehaviorVersion, Credentials, Region,
            RequestChecksumCalculation, ResponseChecksumValidation,
        };
        let credentials = Credentials::new(
            config.credentials.access_key_id.clone(),
            config.credentials.secret_access_key.clone(),
            None,
            None,
            "kfcache-gateway",
        );
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        Origin {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            source,
        }
    }

    /// An origin from a client built elsewhere.
    pub fn from_parts(client: aws_sdk_s3::Client, source: Arc<dyn ArtifactSource>) -> Origin {
        Origin { client, source }
    }
}

/// Virtual-host-style addressing for `BUCKET.DOMAIN` with one of the configured domains;
/// path-style for every other host (IP addresses, service names).
#[derive(Debug)]
struct Hosts {
    domains: Vec<String>,
}

impl S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        for domain in &self.domains {
            if let Some(bucket) = name
                .strip_suffix(domain.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .filter(|bucket| !bucket.is_empty())
            {
                return Ok(VirtualHost::new(domain.as_str()).with_bucket(bucket));
            }
        }
        Ok(VirtualHost::new(host))
    }
}

/// The S3 gateway of one tenant. Cheap to clone; clones share the cache slot and metrics.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
    service: S3Service,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("tenant", &self.shared.config.tenant)
            .field("cache_connected", &self.shared.cache.is_set())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway reading `cache` (none: every request goes to the origin until
    /// [`Gateway::set_cache`]) in front of `origin`.
    pub fn new(
        config: GatewayConfig,
        cache: Option<ObjectCache<dyn CacheSink>>,
        origin: Origin,
    ) -> Result<Gateway> {
        if config.credentials.access_key_id.is_empty()
            || config.credentials.secret_access_key.is_empty()
        {
            return Err(Error::Config {
                reason: "the access key and secret clients sign with must not be empty".to_string(),
            });
        }
        if config.cache_timeout.is_zero() {
            return Err(Error::Config {
                reason: "the cache timeout must be above zero".to_string(),
            });
        }
        for domain in &config.virtual_host_domains {
            let valid = !domain.is_empty()
                && domain.split('.').all(|part| {
                    !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                return Err(Error::Domain {
                    domain: domain.clone(),
                });
            }
        }
        let metrics = GatewayMetrics::new();
        metrics.cache_connected(cache.is_some());
        let shared = Arc::new(Shared {
            cache: CacheSlot::new(cache, config.cache_timeout, config.cache_cooldown),
            buffers: Buffers::new(config.write_through_buffer, metrics.clone()),
            uploads: Uploads::default(),
            proxy: s3s_aws::Proxy::from(origin.client),
            source: origin.source,
            metrics,
            config,
        });
        let mut builder = S3ServiceBuilder::new(GatewayS3 {
            shared: shared.clone(),
        });
        builder.set_auth(SimpleAuth::from_single(
            shared.config.credentials.access_key_id.clone(),
            shared.config.credentials.secret_access_key.clone(),
        ));
        builder.set_host(Hosts {
            domains: shared.config.virtual_host_domains.clone(),
        });
        Ok(Gateway {
            shared,
            service: builder.build(),
        })
    }

    /// The gateway's metrics (serve them with [`crate::serve_admin`]).
    pub fn metrics(&self) -> GatewayMetrics {
        self.shared.metrics.clone()
    }

    /// The gateway's settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.shared.config
    }

    /// Replaces the cache read (a cluster that came up after the gateway, or `None` to stop
    /// reading it).
    pub fn set_cache(&self, cache: Option<ObjectCache<dyn CacheSink>>) {
        self.shared.metrics.cache_connected(cache.is_some());
        self.shared.cache.set(cache);
    }

    /// Whether a cache is connected.
    pub fn has_cache(&self) -> bool {
        self.shared.cache.is_set()
    }

    /// The s3s service, for embedding it in another server.
    pub fn service(&self) -> S3Service {
        self.service.clone()
    }

    /// Serves S3 over HTTP/1.1 on `listener` until `shutdown` completes; then stops accepting
    /// and waits up to 30 s for requests in flight.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        let addr = listener.local_addr().ok();
        tracing::info!(?addr, tenant = %self.shared.config.tenant, "kfcache S3 gateway listening");
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.keep_alive(true);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors and the like: wait, do not spin.
                            tracing::warn!(%error, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let connection = http.serve_connection(TokioIo::new(stream), self.service.clone());
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        tracing::info!("stopping: waiting for requests in flight");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("stopped"),
            () = tokio::time::sleep(GRACE) => tracing::warn!(grace = ?GRACE, "requests still in flight after the grace period; stopping anyway"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_path_style_unless_under_a_virtual_host_domain() {
        let hosts = Hosts {
            domains: vec!["s3.kfcache.local".to_string()],
        };
        let virtual_host = hosts
            .parse_host_header("models.s3.kfcache.local:9000")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(virtual_host.bucket(), Some("models"));
        for host in [
            "127.0.0.1:9000",
            "s3.kfcache.local",
            "kfcache-gateway.team-a.svc:9000",
            "[::1]:9000",
        ] {
            let parsed = hosts
                .parse_host_header(host)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.bucket(), None, "{host}");
        }
    }
}
