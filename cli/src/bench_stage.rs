//! `kfcache bench stage`: how fast the prefetcher stages, next to what its two ends can do,
//! in one run.
//!
//! For large objects it measures, side by side: (a) the raw source read rate (the ranged
//! reads the stager makes, at its concurrency, bytes discarded), (b) the raw Ignite put rate
//! (`putAll` of chunk-sized values at the stager's write concurrency, nothing read) and (c)
//! the end-to-end staging rate of `stage_prefix`, from a local directory the bench fills and,
//! with `--s3-bucket`, from S3. For many small files (default 100 000 of 10 KiB, from a local
//! directory) it measures the staging rate, with the raw rates of reading the files and of
//! putting values of their size for context. Each measurement is repeated `--repeat` times in
//! alternating order (forward, then backward, ...) after an untimed warm-up; the medians are
//! compared and the spread (min–max) shown, following the repeated side-by-side method of the
//! container-runtime comparison the project's benchmarks follow.
//!
//! Every measurement that writes uses an Ignite cache of its own, destroyed right after, so
//! runs do not see each other's data and the cluster ends as it was; the files and S3 objects
//! the bench creates are removed at the end. Progress goes to stderr. The last stdout lines are
//! machine-readable:
//!
//! ```text
//! s3: source_mbps=<f> sink_mbps=<f> stage_mbps=<f> ratio=<stage/min(source,sink)>
//! small-files: count=<n> size=<bytes> small_mbps=<f> large_mbps=<f> ratio=<small/large>
//! case: large objects from a local directory (<n> × <size>)
//! stage-bench: source_mbps=<f> sink_mbps=<f> stage_mbps=<f> ratio=<stage/min(source,sink)>
//! ```
//!
//! (`s3: skipped ...` without `--s3-bucket`). MB/s are 10^6 bytes per second.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kfcache_ignite::Client;
use kfcache_prefetcher::{
    stage_prefix, ArtifactSource, CacheSink, IgniteSink, IgniteSinkConfig, LayoutConfig,
    ObjectCache, ObjectStoreSource, PrefixOptions, SourceConfig, SourceObject, Space,
    StageObserver, StageOptions,
};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use rand::{RngCore, SeedableRng};

use crate::config::{human_size, parse_size, ConnectionArgs};

#[derive(Debug, Args)]
pub struct StageBenchArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Large objects per set.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub large_count: usize,
    /// Size of each large object.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub large_size: u64,
    /// Small files in the small-files set.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub small_count: usize,
    /// Size of each small file.
    #[arg(long, value_name = "SIZE", default_value = "10KiB", value_parser = parse_size)]
    pub small_size: u64,
    /// Times each measurement is taken (the median is reported).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeat: usize,
    /// S3 bucket for the S3 case (its endpoint from --s3-endpoint, else AWS_ENDPOINT_URL;
    /// credentials from the AWS environment). Without it the S3 case is skipped.
    #[arg(long, value_name = "BUCKET", env = "KFCACHE_BENCH_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Large objects uploaded to S3 for the S3 case (of --large-size each).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub s3_count: usize,
    /// Directory in which the local sets are created [default: the system's temporary
    /// directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Ranged reads in flight per large object.
    #[arg(long, value_name = "N", default_value_t = PrefixOptions::default().large.read_concurrency)]
    pub read_concurrency: usize,
    /// `putAll` requests in flight per large object.
    #[arg(long, value_name = "N", default_value_t = PrefixOptions::default().large.write_concurrency)]
    pub write_concurrency: usize,
    /// Chunks per `putAll`.
    #[arg(long, value_name = "N", default_value_t = PrefixOptions::default().large.write_batch)]
    pub write_batch: usize,
    /// Large objects staged at once.
    #[arg(long, value_name = "N", default_value_t = PrefixOptions::default().large_object_concurrency)]
    pub large_object_concurrency: usize,
    /// Small objects per batch.
    #[arg(long, value_name = "N", default_value_t = PrefixOptions::default().batch_objects)]
    pub batch_objects: usize,
    /// Bytes per batch [default: the stager's, 16MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub batch_bytes: Option<u64>,
    /// Small-object reads in flight.
    #[arg(long, value_name = "N", default_value_t = PrefixOptions::default().small_read_concurrency)]
    pub small_read_concurrency: usize,
    /// Batches written at once.
    #[arg(long, value_name = "N", default_value_t = PrefixOptions::default().batch_concurrency)]
    pub batch_concurrency: usize,
}

impl StageBenchArgs {
    fn options(&self) -> PrefixOptions {
        let defaults = PrefixOptions::default();
        PrefixOptions {
            large: StageOptions {
                read_concurrency: self.read_concurrency,
                write_concurrency: self.write_concurrency,
                write_batch: self.write_batch,
            },
            large_object_concurrency: self.large_object_concurrency,
            small_object_max: defaults.small_object_max,
            batch_objects: self.batch_objects,
            batch_bytes: self.batch_bytes.unwrap_or(defaults.batch_bytes),
            small_read_concurrency: self.small_read_concurrency,
            batch_concurrency: self.batch_concurrency,
        }
    }
}

/// Bytes of distinct values the raw put cycles through: beyond the CPU caches.
const CHUNK_POOL_BYTES: u64 = 256 << 20;

/// A directory removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            eprintln!("warning: cannot remove {}: {error}", self.0.display());
        }
    }
}

/// One set of objects to stage: where it is listed from and what it holds.
struct ObjectSet {
    /// The directory or prefix URI given to `stage_prefix`.
    prefix: String,
    objects: Vec<SourceObject>,
    bytes: u64,
}

impl ObjectSet {
    async fn list(source: &dyn ArtifactSource, prefix: String) -> Result<ObjectSet> {
        let objects = source
            .list(&prefix)
            .await
            .with_context(|| format!("cannot list {prefix}"))?;
        let bytes = objects.iter().map(|o| o.size).sum();
        Ok(ObjectSet {
            prefix,
            objects,
            bytes,
        })
    }

    fn describe(&self) -> String {
        let each = self.objects.first().map(|o| o.size).unwrap_or_default();
        format!(
            "{} × {} = {}",
            self.objects.len(),
            human_size(each),
            human_size(self.bytes)
        )
    }
}

/// What is measured; a repeat runs every one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Measure {
    LocalSource,
    LocalSink,
    LocalStage,
    S3Source,
    S3Sink,
    S3Stage,
    SmallSource,
    SmallSink,
    SmallStage,
}

impl Measure {
    fn label(self) -> &'static str {
        match self {
            Measure::LocalSource | Measure::S3Source | Measure::SmallSource => "source read",
            Measure::LocalSink | Measure::S3Sink | Measure::SmallSink => "Ignite put",
            Measure::LocalStage | Measure::S3Stage | Measure::SmallStage => "stage",
        }
    }
}

fn mbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
}

/// Median, minimum and maximum.
fn stats(samples: &[f64]) -> (f64, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

fn bar(length: u64, message: String) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:40} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Staging progress onto a bar.
struct BarObserver(ProgressBar);

impl StageObserver for BarObserver {
    fn on_bytes(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// The Ignite side: a client and a fresh cache per measurement.
struct Cluster {
    client: Client,
    sink: IgniteSinkConfig,
    layout: LayoutConfig,
    run: String,
    caches: AtomicUsize,
}

impl Cluster {
    /// A new, empty cache (chunks and metadata) for one measurement.
    async fn fresh(&self) -> Result<IgniteSink> {
        let index = self.caches.fetch_add(1, Ordering::Relaxed);
        let config = IgniteSinkConfig {
            cache_name: format!("{}-bench-{}-{index}", self.sink.cache_name, self.run),
            ..self.sink.clone()
        };
        IgniteSink::open(self.client.clone(), &config)
            .await
            .with_context(|| format!("cannot create the bench cache {}", config.cache_name))
    }
}

/// (a) Reads every object the way the stager does — chunk-sized ranges, `read_concurrency`
/// in flight per object, `large_object_concurrency` objects at once — and discards the bytes.
async fn read_large(
    source: &dyn ArtifactSource,
    set: &ObjectSet,
    chunk_size: u64,
    options: &PrefixOptions,
    bar: &ProgressBar,
) -> Result<Duration> {
    let started = Instant::now();
    let mut objects = futures::stream::iter(&set.objects)
        .map(|object| async move {
            let ranges = (0..object.size.div_ceil(chunk_size))
                .map(move |index| index * chunk_size..((index + 1) * chunk_size).min(object.size));
            let mut reads = futures::stream::iter(ranges)
                .map(|range| source.read_range(&object.uri, range, Some(&object.version)))
                .buffered(options.large.read_concurrency.max(1));
            while let Some(chunk) = reads.next().await {
                bar.inc(chunk?.len() as u64);
            }
            Ok::<_, kfcache_prefetcher::Error>(())
        })
        .buffer_unordered(options.large_object_concurrency.max(1));
    while let Some(result) = objects.next().await {
        result?;
    }
    Ok(started.elapsed())
}

/// (b) Puts the same bytes as chunk-sized values the way the stager writes them — `putAll`
/// of `write_batch` chunks, `write_concurrency` in flight per object,
/// `large_object_concurrency` objects at once — reading nothing. The values cycle through a
/// pool of distinct chunks larger than any CPU cache, so that they come from memory as the
/// stager's freshly read chunks do (one value sent over and over would stay in cache and
/// flatter the baseline).
async fn put_large(
    sink: &Arc<IgniteSink>,
    set: &ObjectSet,
    pool: &[Bytes],
    options: &PrefixOptions,
    bar: &ProgressBar,
) -> Result<Duration> {
    let chunk_size = pool.first().map_or(1, |c| c.len() as u64);
    let started = Instant::now();
    let mut objects = futures::stream::iter(set.objects.iter().enumerate())
        .map(|(number, object)| async move {
            let chunks = object.size.div_ceil(chunk_size);
            let mut writes = tokio::task::JoinSet::new();
            let mut index = 0;
            while index < chunks {
                let last = chunks.min(index + options.large.write_batch.max(1) as u64);
                let entries: Vec<(String, Bytes)> = (index..last)
                    .map(|i| {
                        let len = chunk_size.min(object.size - i * chunk_size) as usize;
                        let chunk = &pool[(number * 7 + i as usize) % pool.len()];
                        (format!("raw/{number}/{i}"), chunk.slice(..len))
                    })
                    .collect();
                let bytes: u64 = entries.iter().map(|(_, v)| v.len() as u64).sum();
                while writes.len() >= options.large.write_concurrency.max(1) {
                    join_write(&mut writes, bar).await?;
                }
                let sink = sink.clone();
                writes.spawn(
                    async move { sink.put_all(Space::Chunks, entries).await.map(|()| bytes) },
                );
                index = last;
            }
            while !writes.is_empty() {
                join_write(&mut writes, bar).await?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .buffer_unordered(options.large_object_concurrency.max(1));
    while let Some(result) = objects.next().await {
        result?;
    }
    Ok(started.elapsed())
}

async fn join_write(
    writes: &mut tokio::task::JoinSet<kfcache_prefetcher::Result<u64>>,
    bar: &ProgressBar,
) -> Result<()> {
    if let Some(joined) = writes.join_next().await {
        bar.inc(joined.context("a put task failed")??);
    }
    Ok(())
}

/// Reads every small object whole, `small_read_concurrency` in flight, bytes discarded.
async fn read_small(
    source: &dyn ArtifactSource,
    set: &ObjectSet,
    options: &PrefixOptions,
    bar: &ProgressBar,
) -> Result<Duration> {
    let started = Instant::now();
    let mut reads = futures::stream::iter(&set.objects)
        .map(|object| source.read_range(&object.uri, 0..object.size, Some(&object.version)))
        .buffer_unordered(options.small_read_concurrency.max(1));
    while let Some(data) = reads.next().await {
        bar.inc(data?.len() as u64);
    }
    Ok(started.elapsed())
}

/// Puts values of the small objects' size, `batch_objects` per `putAll`, `batch_concurrency`
/// requests in flight, reading nothing.
async fn put_small(
    sink: &Arc<IgniteSink>,
    set: &ObjectSet,
    value: &Bytes,
    options: &PrefixOptions,
    bar: &ProgressBar,
) -> Result<Duration> {
    let started = Instant::now();
    let mut writes = tokio::task::JoinSet::new();
    for (batch, objects) in set.objects.chunks(options.batch_objects.max(1)).enumerate() {
        let entries: Vec<(String, Bytes)> = objects
            .iter()
            .enumerate()
            .map(|(i, object)| {
                let len = (object.size as usize).min(value.len());
                (format!("raw-small/{batch}/{i}"), value.slice(..len))
            })
            .collect();
        let bytes: u64 = entries.iter().map(|(_, v)| v.len() as u64).sum();
        while writes.len() >= options.batch_concurrency.max(1) {
            join_write(&mut writes, bar).await?;
        }
        let sink = sink.clone();
        writes.spawn(async move { sink.put_all(Space::Chunks, entries).await.map(|()| bytes) });
    }
    while !writes.is_empty() {
        join_write(&mut writes, bar).await?;
    }
    Ok(started.elapsed())
}

/// (c) Stages the set end to end (listing included) into a fresh cache.
async fn stage(
    source: &dyn ArtifactSource,
    cluster: &Cluster,
    set: &ObjectSet,
    options: &PrefixOptions,
    bar: &ProgressBar,
) -> Result<(Duration, IgniteSink)> {
    let sink = cluster.fresh().await?;
    let cache = ObjectCache::new(Arc::new(sink.clone()), cluster.layout.clone())?;
    let observer = BarObserver(bar.clone());
    let started = Instant::now();
    let summary = stage_prefix(source, &cache, &set.prefix, *options, &observer)
        .await
        .with_context(|| format!("staging {} failed", set.prefix))?;
    let elapsed = started.elapsed();
    if summary.objects_staged != set.objects.len() as u64 || summary.bytes_staged != set.bytes {
        bail!(
            "staging {} staged {} objects ({} bytes), expected {} ({} bytes)",
            set.prefix,
            summary.objects_staged,
            summary.bytes_staged,
            set.objects.len(),
            set.bytes
        );
    }
    Ok((elapsed, sink))
}

fn random_bytes(rng: &mut rand::rngs::StdRng, len: u64) -> Result<Vec<u8>> {
    let mut data = vec![0u8; usize::try_from(len).context("size too large")?];
    rng.fill_bytes(&mut data);
    Ok(data)
}

/// Writes `count` files of `size` random bytes under `dir` (1000 per subdirectory when there
/// are many, as datasets are laid out).
fn write_files(dir: &Path, count: usize, size: u64, seed: u64, label: &str) -> Result<()> {
    let bar = bar(count as u64 * size, format!("writing {label}"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for index in 0..count {
        let path = if count > 1000 {
            dir.join(format!("d{:04}/f{index:06}.bin", index / 1000))
        } else {
            dir.join(format!("f{index:06}.bin"))
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, random_bytes(&mut rng, size)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        bar.inc(size);
    }
    bar.finish_and_clear();
    Ok(())
}

/// The S3 side of the S3 case.
struct S3Set {
    store: Arc<dyn ObjectStore>,
    keys: Vec<StorePath>,
    source: ObjectStoreSource,
    set: ObjectSet,
    endpoint: String,
}

impl S3Set {
    async fn upload(
        bucket: &str,
        endpoint: &str,
        region: Option<&str>,
        prefix: &str,
        count: usize,
        size: u64,
    ) -> Result<S3Set> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(endpoint.starts_with("http://"));
        if let Some(region) = region {
            builder = builder.with_region(region);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(
            builder
                .build()
                .with_context(|| format!("cannot reach S3 bucket {bucket} at {endpoint}"))?,
        );
        let progress = bar(count as u64 * size, format!("uploading to s3://{bucket}"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut keys = Vec::with_capacity(count);
        for index in 0..count {
            let key = StorePath::from(format!("{prefix}/large-{index:03}.bin"));
            let data = random_bytes(&mut rng, size)?;
            store
                .put(&key, PutPayload::from(data))
                .await
                .with_context(|| format!("cannot upload s3://{bucket}/{key}"))?;
            keys.push(key);
            progress.inc(size);
        }
        progress.finish_and_clear();
        let source = ObjectStoreSource::new(SourceConfig {
            s3_endpoint: Some(endpoint.to_string()),
            s3_region: region.map(str::to_string),
            ..SourceConfig::default()
        });
        let set = ObjectSet::list(&source, format!("s3://{bucket}/{prefix}/")).await?;
        Ok(S3Set {
            store,
            keys,
            source,
            set,
            endpoint: endpoint.to_string(),
        })
    }

    async fn remove(&self) {
        for key in &self.keys {
            if let Err(error) = self.store.delete(key).await {
                eprintln!("warning: cannot remove the bench object {key} from S3: {error}");
            }
        }
    }
}

pub async fn run(args: StageBenchArgs) -> Result<()> {
    if args.repeat == 0 || args.large_count == 0 || args.large_size == 0 {
        bail!("--repeat, --large-count and --large-size must be greater than zero");
    }
    let settings = args.connection.resolve()?;
    let options = args.options();
    let chunk_size = settings.layout.chunk_size;
    let run_id = format!("{}-{}", std::process::id(), chrono_free_stamp());
    let client = Client::connect(settings.client.clone())
        .await
        .with_context(|| {
            format!(
                "cannot reach the Ignite cluster: tried {} (from {})",
                settings.client.addresses.join(","),
                settings.addresses_origin
            )
        })?;
    let cluster = Cluster {
        client,
        sink: settings.sink.clone(),
        layout: LayoutConfig {
            namespace: "bench".to_string(),
            ..settings.layout.clone()
        },
        run: run_id.clone(),
        caches: AtomicUsize::new(0),
    };

    // The local sets, in a scratch directory removed at the end.
    let root = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = ScratchDir(root.join(format!("kfcache-bench-stage-{run_id}")));
    let large_dir = scratch.0.join("large");
    let small_dir = scratch.0.join("small");
    std::fs::create_dir_all(&large_dir)
        .with_context(|| format!("cannot create {}", large_dir.display()))?;
    std::fs::create_dir_all(&small_dir)
        .with_context(|| format!("cannot create {}", small_dir.display()))?;
    write_files(
        &large_dir,
        args.large_count,
        args.large_size,
        1,
        "large files",
    )?;
    write_files(
        &small_dir,
        args.small_count,
        args.small_size,
        2,
        "small files",
    )?;
    let local = ObjectStoreSource::new(settings.source.clone());
    let large = ObjectSet::list(&local, format!("file://{}/", large_dir.display())).await?;
    let small = if args.small_count > 0 {
        let started = Instant::now();
        let set = ObjectSet::list(&local, format!("file://{}/", small_dir.display())).await?;
        eprintln!(
            "bench stage: listing {} small files takes {:.2}s (part of each small-files stage)",
            set.objects.len(),
            started.elapsed().as_secs_f64()
        );
        Some(set)
    } else {
        None
    };

    // The S3 set, when a bucket is given.
    let endpoint = settings
        .source
        .s3_endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|e| !e.trim().is_empty());
    let s3 = match (&args.s3_bucket, &endpoint) {
        (Some(bucket), Some(endpoint)) if args.s3_count > 0 => Some(
            S3Set::upload(
                bucket,
                endpoint,
                settings.source.s3_region.as_deref(),
                &format!("kfcache-bench-stage-{run_id}"),
                args.s3_count,
                args.large_size,
            )
            .await?,
        ),
        (Some(_), None) => bail!("--s3-bucket needs --s3-endpoint or AWS_ENDPOINT_URL"),
        _ => None,
    };

    let outcome = measure_all(
        &args,
        &options,
        &cluster,
        &local,
        &large,
        small.as_ref(),
        s3.as_ref(),
    )
    .await;
    if let Some(s3) = &s3 {
        s3.remove().await;
    }
    drop(scratch);
    let results = outcome?;
    report(
        &args,
        &settings.client.addresses,
        &options,
        chunk_size,
        &large,
        small.as_ref(),
        s3.as_ref(),
        &results,
    );
    Ok(())
}

/// A stamp that tells runs apart (seconds and nanoseconds of the clock).
fn chrono_free_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}{:09}", now.as_secs(), now.subsec_nanos())
}

/// Runs the warm-up, then every measurement `--repeat` times in alternating order; returns the
/// MB/s of each.
async fn measure_all(
    args: &StageBenchArgs,
    options: &PrefixOptions,
    cluster: &Cluster,
    local: &ObjectStoreSource,
    large: &ObjectSet,
    small: Option<&ObjectSet>,
    s3: Option<&S3Set>,
) -> Result<BTreeMap<Measure, Vec<f64>>> {
    let chunk_size = cluster.layout.chunk_size;
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let pool_size = (CHUNK_POOL_BYTES / chunk_size).clamp(2, 1024);
    let pool = (0..pool_size)
        .map(|_| random_bytes(&mut rng, chunk_size).map(Bytes::from))
        .collect::<Result<Vec<Bytes>>>()?;
    let small_value = Bytes::from(random_bytes(&mut rng, args.small_size.max(1))?);

    // Untimed warm-up: the JIT of a fresh node and the page cache.
    eprintln!("bench stage: warm-up");
    let hidden = ProgressBar::hidden();
    let warm = ObjectSet {
        prefix: large.prefix.clone(),
        objects: large.objects.clone(),
        bytes: large.bytes,
    };
    read_large(local, &warm, chunk_size, options, &hidden).await?;
    let (_, sink) = stage(local, cluster, &warm, options, &hidden).await?;
    sink.destroy().await?;
    if let Some(small) = small {
        read_small(local, small, options, &hidden).await?;
    }

    let mut order = vec![
        Measure::LocalSource,
        Measure::LocalSink,
        Measure::LocalStage,
    ];
    if s3.is_some() {
        order.extend([Measure::S3Source, Measure::S3Sink, Measure::S3Stage]);
    }
    if small.is_some() {
        order.extend([
            Measure::SmallSource,
            Measure::SmallSink,
            Measure::SmallStage,
        ]);
    }
    let mut results: BTreeMap<Measure, Vec<f64>> = BTreeMap::new();
    for round in 0..args.repeat {
        let mut this_round = order.clone();
        if round % 2 == 1 {
            this_round.reverse();
        }
        for measure in this_round {
            let (set, source): (&ObjectSet, &dyn ArtifactSource) = match measure {
                Measure::LocalSource | Measure::LocalSink | Measure::LocalStage => (large, local),
                Measure::S3Source | Measure::S3Sink | Measure::S3Stage => match s3 {
                    Some(s3) => (&s3.set, &s3.source),
                    None => continue,
                },
                Measure::SmallSource | Measure::SmallSink | Measure::SmallStage => match small {
                    Some(small) => (small, local),
                    None => continue,
                },
            };
            let case = match measure {
                Measure::LocalSource | Measure::LocalSink | Measure::LocalStage => "large local",
                Measure::S3Source | Measure::S3Sink | Measure::S3Stage => "large s3",
                _ => "small files",
            };
            let progress = bar(
                set.bytes,
                format!(
                    "[{}/{}] {case}: {}",
                    round + 1,
                    args.repeat,
                    measure.label()
                ),
            );
            let elapsed = match measure {
                Measure::LocalSource | Measure::S3Source => {
                    read_large(source, set, chunk_size, options, &progress).await?
                }
                Measure::SmallSource => read_small(source, set, options, &progress).await?,
                Measure::LocalSink | Measure::S3Sink | Measure::SmallSink => {
                    let sink = Arc::new(cluster.fresh().await?);
                    let timed = if measure == Measure::SmallSink {
                        put_small(&sink, set, &small_value, options, &progress).await
                    } else {
                        put_large(&sink, set, &pool, options, &progress).await
                    };
                    sink.destroy().await?;
                    timed?
                }
                Measure::LocalStage | Measure::S3Stage | Measure::SmallStage => {
                    let (elapsed, sink) = stage(source, cluster, set, options, &progress).await?;
                    sink.destroy().await?;
                    elapsed
                }
            };
            progress.finish_and_clear();
            let rate = mbps(set.bytes, elapsed);
            eprintln!(
                "  [{}/{}] {case}: {} {rate:.1} MB/s ({:.2}s)",
                round + 1,
                args.repeat,
                measure.label(),
                elapsed.as_secs_f64()
            );
            results.entry(measure).or_default().push(rate);
        }
    }
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &StageBenchArgs,
    addresses: &[String],
    options: &PrefixOptions,
    chunk_size: u64,
    large: &ObjectSet,
    small: Option<&ObjectSet>,
    s3: Option<&S3Set>,
    results: &BTreeMap<Measure, Vec<f64>>,
) {
    let median = |measure: Measure| stats(results.get(&measure).map_or(&[][..], Vec::as_slice)).0;
    let line = |measure: Measure| {
        let samples = results.get(&measure).map_or(&[][..], Vec::as_slice);
        let (median, min, max) = stats(samples);
        println!(
            "  {:<12} {median:>9.1} MB/s  (min {min:.1}, max {max:.1}, spread {:.1}%)",
            measure.label(),
            if median > 0.0 {
                (max - min) / median * 100.0
            } else {
                0.0
            }
        );
    };
    println!(
        "stage bench: Ignite {}, chunk {}, {} repeats in alternating order, medians",
        addresses.join(","),
        human_size(chunk_size),
        args.repeat
    );
    println!(
        "  large objects: {} ranged reads and {} putAll of {} chunks in flight per object, {} objects at once",
        options.large.read_concurrency,
        options.large.write_concurrency,
        options.large.write_batch,
        options.large_object_concurrency
    );
    println!(
        "  small objects: batches of {} objects / {}, {} reads and {} batches in flight",
        options.batch_objects,
        human_size(options.batch_bytes),
        options.small_read_concurrency,
        options.batch_concurrency
    );
    println!("large objects, local directory ({}):", large.describe());
    for measure in [
        Measure::LocalSource,
        Measure::LocalSink,
        Measure::LocalStage,
    ] {
        line(measure);
    }
    if let Some(s3) = s3 {
        println!(
            "large objects, S3 at {} ({}):",
            s3.endpoint,
            s3.set.describe()
        );
        for measure in [Measure::S3Source, Measure::S3Sink, Measure::S3Stage] {
            line(measure);
        }
    }
    if let Some(small) = small {
        println!("small files, local directory ({}):", small.describe());
        for measure in [
            Measure::SmallSource,
            Measure::SmallSink,
            Measure::SmallStage,
        ] {
            line(measure);
        }
        let stage = median(Measure::SmallStage);
        println!(
            "  {:<12} {:>9.0} objects/s",
            "stage",
            stage * 1e6 / args.small_size.max(1) as f64
        );
    }
    let ratio = |stage: f64, source: f64, sink: f64| stage / source.min(sink).max(1e-9);
    // The same ratio within each repeat: the measurements of one repeat ran next to each
    // other, so a load that drifts over the run moves them together.
    let per_repeat = |source: Measure, sink: Measure, stage: Measure| -> Vec<f64> {
        let get = |m: Measure| results.get(&m).cloned().unwrap_or_default();
        let (source, sink, stage) = (get(source), get(sink), get(stage));
        (0..stage.len().min(source.len()).min(sink.len()))
            .map(|r| ratio(stage[r], source[r], sink[r]))
            .collect()
    };
    let show = |name: &str, ratios: &[f64]| {
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "{name} stage/min(source, sink) per repeat: {} (median {:.3})",
            listed.join(" "),
            stats(ratios).0
        );
    };
    show(
        "large local",
        &per_repeat(
            Measure::LocalSource,
            Measure::LocalSink,
            Measure::LocalStage,
        ),
    );
    if s3.is_some() {
        show(
            "large s3",
            &per_repeat(Measure::S3Source, Measure::S3Sink, Measure::S3Stage),
        );
    }
    if small.is_some() {
        let get = |m: Measure| results.get(&m).cloned().unwrap_or_default();
        let (small_stage, large_stage) = (get(Measure::SmallStage), get(Measure::LocalStage));
        let ratios: Vec<f64> = small_stage
            .iter()
            .zip(&large_stage)
            .map(|(small, large)| small / large.max(1e-9))
            .collect();
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "small/large stage per repeat: {} (median {:.3})",
            listed.join(" "),
            stats(&ratios).0
        );
    }
    match s3 {
        Some(_) => {
            let (source, sink, stage) = (
                median(Measure::S3Source),
                median(Measure::S3Sink),
                median(Measure::S3Stage),
            );
            println!(
                "s3: source_mbps={source:.1} sink_mbps={sink:.1} stage_mbps={stage:.1} ratio={:.3}",
                ratio(stage, source, sink)
            );
        }
        None => println!("s3: skipped (no --s3-bucket)"),
    }
    let (source, sink, stage) = (
        median(Measure::LocalSource),
        median(Measure::LocalSink),
        median(Measure::LocalStage),
    );
    if small.is_some() {
        let small_stage = median(Measure::SmallStage);
        println!(
            "small-files: count={} size={} small_mbps={small_stage:.1} large_mbps={stage:.1} ratio={:.3}",
            args.small_count,
            args.small_size,
            small_stage / stage.max(1e-9)
        );
    } else {
        println!("small-files: skipped (--small-count 0)");
    }
    println!(
        "case: large objects from a local directory ({})",
        large.describe()
    );
    println!(
        "stage-bench: source_mbps={source:.1} sink_mbps={sink:.1} stage_mbps={stage:.1} ratio={:.3}",
        ratio(stage, source, sink)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert_eq!(stats(&[]), (0.0, 0.0, 0.0));
        assert!((mbps(2_000_000, Duration::from_secs(2)) - 1.0).abs() < 1e-9);
    }
}
