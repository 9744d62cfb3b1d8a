//! `kfcache gateway`: runs the kfcache S3 gateway of one tenant (see kfcache-gateway): an
//! S3 endpoint that answers reads of staged objects from the Ignite cache and forwards
//! everything else to the origin. This file only parses, resolves settings, calls the library
//! and reports.
//!
//! The origin is the S3 endpoint kfcache already reads (`--s3-endpoint`, `[s3] endpoint`,
//! else AWS S3 in `--s3-region`); clients sign with the origin's own key, taken from
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` as for every other command. The cache is the
//! one `--k8s-namespace NS` (or `KFCACHE_K8S_NAMESPACE`) scopes to: `NAMESPACE.NS`, where
//! `kfcache prefetch` stages that namespace's objects. One gateway serves one namespace.
//!
//! Uploads through the gateway (Argo's `wait` saving a task's outputs) are written through into
//! the cache unless `--no-write-through`, so that the next task's download is a hit.
//! `--fill-budget SIZE` makes the gateway an on-demand LRU cache instead of (or beside) a
//! prefetched one: misses are written into the cache as they pass, within SIZE.
//!
//! When Ignite cannot be reached at start, the gateway serves everything from the origin and
//! tries the cluster again every 30 s. It stops on SIGTERM or Ctrl-C, letting requests in
//! flight finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use kfcache_gateway::{Gateway, GatewayConfig, Origin, OriginConfig, S3Credentials};
use kfcache_prefetcher::{CacheSink, IgniteSink, ObjectCache, ObjectStoreSource};
use tokio::net::TcpListener;

use crate::cache::open_cache;
use crate::config::{parse_size, CacheSettings, ConnectionArgs};

/// How often a gateway that started without the cache tries to reach it.
const RECONNECT_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// Where S3 clients connect.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9000")]
    pub listen: SocketAddr,

    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Longest wait for one cache call; past it the request is answered from the origin and
    /// the cache is skipped for --cache-cooldown.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = kfcache_ops::units::parse_duration)]
    pub cache_timeout: Duration,

    /// How long a cache that timed out is skipped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = kfcache_ops::units::parse_duration)]
    pub cache_cooldown: Duration,

    /// Base domain for virtual-host-style requests (BUCKET.DOMAIN); repeatable. Other hosts
    /// are path-style.
    #[arg(long = "virtual-host", value_name = "DOMAIN")]
    pub virtual_hosts: Vec<String>,

    /// Do not write objects uploaded through the gateway (PutObject, multipart uploads) into
    /// the cache. By default they are, once the origin has stored them, so that the next
    /// task's read of an output is a hit; the copy never delays nor fails the upload.
    #[arg(long)]
    pub no_write_through: bool,

    /// Objects larger than SIZE are not written through (nor filled).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub write_through_max_object: u64,

    /// Most bytes of upload bodies (and fills) held in memory at once to be written into the
    /// cache; uploads past it are not written through.
    #[arg(long, value_name = "SIZE", default_value = "2GiB", value_parser = parse_size)]
    pub write_through_buffer: u64,

    /// On-demand fill: a full GET that misses (not cached, or stale) is written into the cache
    /// as it passes, evicting the least recently used objects of the namespace to stay within
    /// SIZE (the rule of `kfcache sidecar init --fill-budget`). Off by default: `kfcache
    /// prefetch` stages ahead instead.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub fill_budget: Option<u64>,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

async fn try_cache(settings: &CacheSettings, bound: Duration) -> Option<ObjectCache<IgniteSink>> {
    match tokio::time::timeout(bound, open_cache(settings)).await {
        Ok(Ok(cache)) => Some(cache),
        Ok(Err(error)) => {
            tracing::warn!("the gateway works without the cache for now: {error:#}");
            None
        }
        Err(_) => {
            tracing::warn!(
                "the gateway works without the cache for now: no answer from {} in {bound:?}",
                settings.client.addresses.join(",")
            );
            None
        }
    }
}

fn as_dyn(cache: ObjectCache<IgniteSink>) -> Result<ObjectCache<dyn CacheSink>> {
    let sink: Arc<dyn CacheSink> = cache.sink().clone();
    Ok(ObjectCache::new(sink, cache.config().clone())?)
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what}"))
}

pub async fn run(args: GatewayArgs) -> Result<()> {
    let mut settings = args.connection.resolve()?;
    let Some(tenant) = settings.tenant.clone() else {
        bail!("--k8s-namespace NS (or KFCACHE_K8S_NAMESPACE) is required: one gateway serves the objects one Kubernetes namespace staged");
    };
    let (Some(access_key_id), Some(secret_access_key)) = (
        env_var("AWS_ACCESS_KEY_ID"),
        env_var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        bail!("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set: clients sign with the origin's key, and the gateway signs with it towards the origin");
    };
    let credentials = S3Credentials {
        access_key_id,
        secret_access_key,
    };
    let region = settings
        .source
        .s3_region
        .clone()
        .or_else(|| env_var("AWS_REGION"))
        .or_else(|| env_var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_string());
    let origin = Origin::new(
        &OriginConfig {
            endpoint: settings.source.s3_endpoint.clone(),
            region,
            credentials: credentials.clone(),
            connect_timeout: settings
                .source
                .connect_timeout
                .unwrap_or(Duration::from_secs(5)),
        },
        Arc::new(ObjectStoreSource::new(settings.source.clone())),
    );
    let bound = args.cache_timeout.max(Duration::from_millis(1));
    settings.client.connect_timeout = bound;
    settings.client.request_timeout = bound;
    let cache = match try_cache(&settings, bound).await {
        Some(cache) => Some(as_dyn(cache)?),
        None => None,
    };
    let mut config = GatewayConfig::new(tenant.clone(), credentials);
    config.cache_timeout = bound;
    config.cache_cooldown = args.cache_cooldown;
    config.virtual_host_domains = args.virtual_hosts.clone();
    config.write_through = !args.no_write_through;
    config.write_through_max_object = args.write_through_max_object;
    config.write_through_buffer = args.write_through_buffer;
    config.fill_budget = args.fill_budget;
    let gateway = Gateway::new(config, cache, origin)?;
    if !gateway.has_cache() {
        let gateway = gateway.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECONNECT_EVERY).await;
                if let Some(cache) = try_cache(&settings, bound).await {
                    if let Ok(cache) = as_dyn(cache) {
                        gateway.set_cache(Some(cache));
                        tracing::info!("the cache is reachable again");
                        return;
                    }
                }
            }
        });
    }

    let listener = bind(args.listen, "S3").await?;
    let admin = bind(args.admin_listen, "metrics").await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop.send(true);
    });
    let signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    eprintln!(
        "kfcache gateway for namespace {tenant}: S3 on http://{}, metrics on http://{}/metrics (cache {})",
        listener.local_addr().unwrap_or(args.listen),
        admin.local_addr().unwrap_or(args.admin_listen),
        if gateway.has_cache() { "connected" } else { "not reachable yet" },
    );
    let metrics = tokio::spawn(kfcache_gateway::serve_admin(
        gateway.metrics(),
        admin,
        signal(stopped.clone()),
    ));
    gateway
        .serve(listener, signal(stopped))
        .await
        .context("the S3 gateway failed")?;
    metrics
        .await
        .context("the metrics server panicked")?
        .context("the metrics server failed")?;
    eprintln!("kfcache gateway stopped");
    Ok(())
}
