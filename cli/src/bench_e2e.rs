//! `kfcache bench e2e`: a pipeline replayed on a real local stack, with and without kfcache.
//!
//! The stack is the Ignite cluster given with `--ignite` (3 nodes in `scripts/bench-e2e.sh`)
//! and the S3 server given with `--s3-endpoint`, reached through a throttling proxy
//! ([`kfcache_harness::proxy`]) that emulates remote storage: one token bucket of
//! `--bandwidth` shared by every connection, and `--latency` added to every request.
//!
//! The pipeline's DAG is replayed task by task, each task when the tasks it depends on have
//! finished (every instance of a fan-out). A task is:
//! 1. `kfcache sidecar init` (a process) materialising its inputs into the task's directory;
//!    an upstream output that nothing cached is then copied from the origin, as Argo's
//!    executor would;
//! 2. its compute: a `sleep` process for a time drawn from the profile (log-normal around
//!    the profile's median, relative spread `jitter`);
//! 3. its outputs: files of the profile's sizes, uploaded to the origin through the proxy (the
//!    artifact repository) and, in the kfcache arm, written through to the cache at the same
//!    time (in a pod, Argo's wait container uploads while the kfcache sidecar writes through).
//!
//! Three arms, interleaved (the order rotates each rep) and each rep with a cold cache (a new
//! namespace, cleared afterwards):
//! - `nocache`: `sidecar init --no-cache`, every input from the origin;
//! - `lru`: `sidecar init --fill-budget B`, an on-demand cache that fills on first read;
//! - `kfcache`: `kfcache prefetch FILE --run RUN --follow --lead 5 --budget B` started with
//!   the run, predicting from the history of the earlier reps, and sidecar write-through of
//!   outputs.
//!
//! Finished runs are recorded in the history (as `kfcache history import` would record their
//! Argo status), so later kfcache reps predict from the earlier ones: every arm's runs until
//! the first kfcache run has finished (the past runs a new user imports from Argo before
//! installing kfcache), then only kfcache's (the runs a deployment with kfcache records; a
//! cache shortens the tasks, and no-cache runs would keep predicting them long). The report (see
//! [`kfcache_harness::e2e_report`]) gives, per arm, the GPU tasks' input wait, the makespan, the
//! hit ratio, bytes moved and deadline misses with mean, standard deviation, 95 % confidence
//! interval and Welch's t-test of kfcache against each other arm.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use kfcache_harness::proxy::{Proxy, ProxyConfig};
use kfcache_parser::model::TASK_URI_SCHEME;
use kfcache_parser::{Dag, FanOut, ParseOptions, Pipeline};
use kfcache_prefetcher::{IgniteSink, ObjectCache};
use kfcache_schema::{ObservationSource, RunObservation, Store, TaskObservation};
use kfcache_sidecar::{Event, EventKind, EventLog, Identity, TaskSpec};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, PutPayload};
use rand::SeedableRng;
use serde::Deserialize;

use crate::cache::open_cache;
use crate::config::{human_size, parse_size, CacheSettings, ConnectionArgs};
use kfcache_harness::e2e_report::{self as report, ArmName, RepResult, TaskResult};
use kfcache_harness::replay::{content, split_s3, Profile};

/// The pipeline replayed when `--pipeline` is not given.
pub const DEFAULT_PIPELINE: &str = "fixtures/e2e/replay-pipeline.yaml";

#[derive(Debug, Args)]
pub struct E2eBenchArgs {
    /// The pipeline to replay (Argo or KFP YAML).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PIPELINE)]
    pub pipeline: PathBuf,
    /// Sizes and compute times of the replay [default: FILE with `.profile.yaml` in place of
    /// `.yaml` when it exists; otherwise 64 MiB per input, 16 MiB per output, 5 s per GPU task
    /// and 2 s per other task].
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Runs of each arm.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub reps: usize,
    /// Bandwidth of the emulated remote storage, shared by every reader (`100MB/s`, `50MiB/s`).
    #[arg(long, value_name = "RATE", default_value = "100MB/s", value_parser = parse_rate)]
    pub bandwidth: f64,
    /// Latency added to every request to the remote storage.
    #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = parse_latency)]
    pub latency: Duration,
    /// Cache budget of the on-demand and kfcache arms [default: 80 % of the bytes a run reads
    /// from the origin without a cache].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub budget: Option<u64>,
    /// Multiplies every size of the profile.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub scale: f64,
    /// Multiplies every compute time of the profile.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Seed of the compute times and the data.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// The arms to run, comma-separated.
    #[arg(
        long,
        value_name = "ARMS",
        default_value = "nocache,lru,kfcache",
        value_delimiter = ','
    )]
    pub arms: Vec<ArmName>,
    /// Replay against this S3 bucket instead of the one the pipeline names (its every
    /// mention in the file and the profile is replaced), so that replays can run side by
    /// side on one S3 server.
    #[arg(long, value_name = "NAME")]
    pub bucket: Option<String>,
    /// Where the report, results and plots go.
    #[arg(long, value_name = "DIR", default_value = "bench-e2e")]
    pub out: PathBuf,
    /// Run nothing: write the report, results and plots of an earlier run into --out again,
    /// from the results.json it wrote (after a change to the report, without running the
    /// reps again).
    #[arg(long, value_name = "FILE")]
    pub from_results: Option<PathBuf>,
    /// Where the replayed pods' volumes live, into which their inputs are written [default: a
    /// directory under /dev/shm where there is one (a memory-backed `emptyDir`, or a GPU
    /// node's local NVMe, which outpaces the remote link many times over); else OUT/work].
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Seconds a task's step may take before the replay gives up.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub task_timeout: u64,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

fn parse_rate(text: &str) -> std::result::Result<f64, String> {
    let size = text.trim().trim_end_matches("/s");
    let bytes = parse_size(size)? as f64;
    if bytes <= 0.0 {
        return Err(format!("bandwidth {text:?} must be above zero"));
    }
    Ok(bytes)
}

fn parse_latency(text: &str) -> std::result::Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    kfcache_sidecar::spec::parse_duration(text)
        .ok_or_else(|| format!("invalid latency {text:?} (examples: 20ms, 0.1s, 0)"))
}

/// One process of the replay: a task, or one instance of a fan-out.
#[derive(Debug, Clone)]
struct Instance {
    task: usize,
    /// `0:0` for the first instance of a fan-out, empty otherwise.
    instance: String,
    /// Instances (indices into the replay's list) it waits for.
    after: Vec<usize>,
}

fn instances(pipeline: &Pipeline, dag: &Dag) -> Vec<Instance> {
    let mut out: Vec<Instance> = Vec::new();
    let mut of_task: HashMap<usize, Vec<usize>> = HashMap::new();
    for &task in dag.topological_order() {
        let after: Vec<usize> = dag
            .dependencies(task)
            .flat_map(|d| of_task.get(&d).cloned().unwrap_or_default())
            .collect();
        let count = match pipeline.tasks[task].fan_out {
            Some(FanOut::Count(n)) => n.max(1),
            _ => 1,
        };
        let fan_out = pipeline.tasks[task].fan_out.is_some();
        for i in 0..count {
            of_task.entry(task).or_default().push(out.len());
            out.push(Instance {
                task,
                instance: if fan_out {
                    format!("{i}:{i}")
                } else {
                    String::new()
                },
                after: after.clone(),
            });
        }
    }
    out
}

/// Where a task's output goes at the origin in a run (the artifact repository).
fn origin_output_uri(
    bucket: &str,
    run: &str,
    task: &str,
    instance: &str,
    artifact: &str,
) -> String {
    let instance = if instance.is_empty() {
        String::new()
    } else {
        format!("{}/", instance.replace(':', "-"))
    };
    format!("s3://{bucket}/runs/{run}/{task}/{instance}{artifact}")
}

/// The pods' volumes when `--scratch` is not given: memory-backed under /dev/shm where it
/// exists, else beside the logs.
fn default_scratch(work: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join(format!("kfcache-e2e-{}", std::process::id()))
    } else {
        work.join("pods")
    }
}

/// The task as one of its instances runs it: of the inputs listed once per loop item, only
/// its own item's (an instance `i:i` runs item `i`).
fn instance_task(task: &kfcache_parser::Task, instance: &str) -> kfcache_parser::Task {
    let item = item_of(instance).parse::<u32>().ok();
    let mut task = task.clone();
    task.inputs
        .retain(|input| input.item.is_none() || input.item == item);
    task
}

/// `{{item}}` of a fan-out instance's input is its instance number.
fn instance_uri(uri: &str, instance: &str) -> String {
    uri.replace("{{item}}", item_of(instance))
}

/// The item a fan-out instance (`i:i`) runs: its instance number.
fn item_of(instance: &str) -> &str {
    instance.split(':').next().unwrap_or("")
}

/// The first `bucket:` named in a pipeline file.
fn bucket_of(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("bucket:")?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// Everything a rep needs, shared by its tasks.
struct Stack {
    exe: PathBuf,
    pipeline_file: PathBuf,
    pipeline: Pipeline,
    profile: Profile,
    settings: CacheSettings,
    ignite: String,
    proxy: Proxy,
    /// S3 client through the proxy (uploads of outputs, copies of upstream outputs).
    remote: HashMap<String, Arc<AmazonS3>>,
    db: PathBuf,
    /// Logs of the replay's processes.
    work: PathBuf,
    /// The pods' volumes, one directory per run.
    scratch: PathBuf,
    budget: u64,
    task_timeout: Duration,
}

fn s3_client(endpoint: &str, bucket: &str, region: &str) -> Result<AmazonS3> {
    AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_region(region)
        .with_allow_http(true)
        .build()
        .with_context(|| format!("cannot build an S3 client for {endpoint}"))
}

fn region(settings: &CacheSettings) -> String {
    settings
        .source
        .s3_region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_string())
}

/// Creates `bucket` (an unsigned `PUT /bucket`; S3 servers for tests accept it, and an
/// existing bucket is fine).
async fn create_bucket(endpoint: &str, bucket: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = tokio::net::TcpStream::connect(&host)
        .await
        .with_context(|| format!("cannot reach the S3 server at {host}"))?;
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    if !(answer.starts_with("HTTP/1.1 200") || answer.contains("BucketAlreadyOwnedByYou")) {
        bail!(
            "cannot create bucket {bucket} at {endpoint}: {}",
            answer.lines().next().unwrap_or("")
        );
    }
    Ok(())
}

pub async fn run(args: E2eBenchArgs) -> Result<()> {
    if let Some(results) = &args.from_results {
        println!("{}", report::rewrite(results, &args.out)?);
        return Ok(());
    }
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if !(args.scale > 0.0 && args.scale.is_finite() && args.time_scale >= 0.0) {
        bail!("--scale must be positive and --time-scale not negative");
    }
    if args.arms.is_empty() {
        bail!("--arms names no arm");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let profile_path = args.profile.clone().or_else(|| {
        let candidate = args.pipeline.with_extension("profile.yaml");
        candidate.exists().then_some(candidate)
    });
    // With --bucket, the replay reads a copy of the pipeline that names it.
    let pipeline_file = match &args.bucket {
        Some(bucket) => {
            let text = std::fs::read_to_string(&args.pipeline)
                .with_context(|| format!("cannot read {}", args.pipeline.display()))?;
            let original = bucket_of(&text).with_context(|| {
                format!("{} names no S3 bucket to replace", args.pipeline.display())
            })?;
            let copy = args.out.join("pipeline.yaml");
            std::fs::write(&copy, text.replace(&original, bucket))?;
            copy
        }
        None => args.pipeline.clone(),
    };
    let options = ParseOptions::default();
    let mut pipelines = kfcache_parser::parse_file(&pipeline_file, &options)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot replay {}", args.pipeline.display()))?;
    if pipelines.len() != 1 {
        bail!(
            "{} holds {} pipelines; the replay takes a file with one",
            args.pipeline.display(),
            pipelines.len()
        );
    }
    let pipeline = pipelines.remove(0);
    let dag = Dag::build(&pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut profile = Profile::load(profile_path.as_deref(), args.scale, args.time_scale)?;
    if let Some(bucket) = &args.bucket {
        profile.inputs = profile
            .inputs
            .into_iter()
            .map(|(uri, size)| match split_s3(&uri) {
                Some((_, key)) => (format!("s3://{bucket}/{key}"), size),
                None => (uri, size),
            })
            .collect();
    }

    let mut settings = args.connection.resolve()?;
    let Some(origin_endpoint) = settings.source.s3_endpoint.clone() else {
        bail!("give the S3 server with --s3-endpoint (or AWS_ENDPOINT_URL)");
    };
    let upstream: std::net::SocketAddr = tokio::net::lookup_host(
        origin_endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/'),
    )
    .await
    .with_context(|| format!("cannot resolve {origin_endpoint}"))?
    .next()
    .with_context(|| format!("{origin_endpoint} has no address"))?;
    let proxy = Proxy::start(
        upstream,
        ProxyConfig {
            bandwidth: Some(args.bandwidth),
            latency: args.latency,
            ..ProxyConfig::default()
        },
    )
    .await?;
    settings.source.s3_endpoint = Some(proxy.endpoint());
    settings.source.s3_allow_http = Some(true);
    let region = region(&settings);
    let instances = instances(&pipeline, &dag);

    // The objects a run reads at the origin: external inputs of every instance.
    let mut external: BTreeMap<String, u64> = BTreeMap::new();
    for inst in &instances {
        for input in &instance_task(&pipeline.tasks[inst.task], &inst.instance).inputs {
            if let Some(source) = input.source.as_deref() {
                if split_s3(source).is_some() {
                    let uri = instance_uri(source, &inst.instance);
                    for (object, size) in profile.objects(&uri) {
                        external.insert(object, size);
                    }
                }
            }
        }
    }
    if external.is_empty() {
        bail!(
            "{} reads nothing from S3; the replay needs s3:// inputs",
            args.pipeline.display()
        );
    }
    let upstream_bytes: u64 = pipeline
        .tasks
        .iter()
        .flat_map(|t| {
            let profile = &profile;
            t.outputs
                .iter()
                .map(move |o| profile.output_size(&t.id, &o.name))
        })
        .sum();
    let read_bytes: u64 = external.values().sum::<u64>() + upstream_bytes;
    let budget = args.budget.unwrap_or((read_bytes as f64 * 0.8) as u64);

    let work = args.out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("logs"))?;
    let scratch = match &args.scratch {
        Some(dir) => dir.clone(),
        None => default_scratch(&work),
    };
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create the pods' scratch {}", scratch.display()))?;
    let db = args.out.join("history.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }

    // The pipeline's inputs at the origin (written directly, not through the proxy).
    let buckets: std::collections::BTreeSet<String> = external
        .keys()
        .filter_map(|u| split_s3(u).map(|(b, _)| b.to_string()))
        .collect();
    let mut direct = HashMap::new();
    let mut remote = HashMap::new();
    for bucket in &buckets {
        create_bucket(&origin_endpoint, bucket).await?;
        direct.insert(
            bucket.clone(),
            s3_client(&origin_endpoint, bucket, &region)?,
        );
        remote.insert(
            bucket.clone(),
            Arc::new(s3_client(&proxy.endpoint(), bucket, &region)?),
        );
    }
    eprintln!(
        "bench e2e: {} ({} tasks, {} processes), {} objects ({}) at {}, budget {}, {:.0} MB/s and {:?} per request through {}",
        pipeline.name,
        pipeline.tasks.len(),
        instances.len(),
        external.len(),
        human_size(external.values().sum()),
        origin_endpoint,
        human_size(budget),
        args.bandwidth / 1e6,
        args.latency,
        proxy.endpoint()
    );
    // Objects of earlier replays that are not inputs now (a directory must hold exactly its
    // objects) go.
    for (bucket, client) in &direct {
        use futures::TryStreamExt;
        let listed: Vec<object_store::ObjectMeta> = client
            .list(None)
            .try_collect()
            .await
            .with_context(|| format!("cannot list bucket {bucket}"))?;
        for meta in listed {
            let uri = format!("s3://{bucket}/{}", meta.location);
            if !external.contains_key(&uri) {
                client.delete(&meta.location).await?;
            }
        }
    }
    for (uri, size) in &external {
        let (bucket, key) = split_s3(uri).context("an s3 URI")?;
        let client = direct.get(bucket).context("a client per bucket")?;
        let path = object_store::path::Path::from(key);
        if let Ok(meta) = client.head(&path).await {
            if meta.size == *size {
                continue;
            }
        }
        client
            .put(
                &path,
                PutPayload::from_bytes(content(uri, *size, args.seed)),
            )
            .await
            .with_context(|| format!("cannot upload {uri} to the S3 server"))?;
    }

    let stack = Arc::new(Stack {
        exe: std::env::current_exe().context("cannot find the kfcache binary")?,
        pipeline_file,
        pipeline: pipeline.clone(),
        profile,
        ignite: settings.client.addresses.join(","),
        settings,
        proxy,
        remote,
        db: db.clone(),
        work,
        scratch: scratch.clone(),
        budget,
        task_timeout: Duration::from_secs(args.task_timeout),
    });
    let store = Store::open(&db)
        .await
        .with_context(|| format!("cannot open the database {}", db.display()))?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut results: Vec<RepResult> = Vec::new();
    let mut failed: Vec<report::FailedRep> = Vec::new();
    let total_runs = args.reps * args.arms.len();
    for rep in 0..args.reps {
        // The same compute times for every arm of a rep.
        let compute: Vec<f64> = instances
            .iter()
            .map(|i| {
                let task = &pipeline.tasks[i.task];
                stack.profile.compute(&task.id, task.gpus, &mut rng)
            })
            .collect();
        let mut order = args.arms.clone();
        order.rotate_left(rep % args.arms.len());
        for arm in order {
            let done = results.len() + failed.len() + 1;
            eprintln!("bench e2e: run {done}/{total_runs}: {arm} rep {}", rep + 1);
            // A run that fails (a task, the cache, the stack) is recorded and the benchmark
            // goes on: one stalled request should not throw away an hour of reps.
            // See the module doc: the imported past, then kfcache's own runs.
            let recorded =
                arm == ArmName::Kfcache || !results.iter().any(|r| r.arm == ArmName::Kfcache);
            let this = (arm, rep, recorded);
            let result = match run_once(&stack, &store, &instances, &compute, this).await {
                Ok(result) => result,
                Err(error) => {
                    eprintln!(
                        "bench e2e:   the {arm} arm's rep {} failed: {error:#}",
                        rep + 1
                    );
                    failed.push(report::FailedRep {
                        arm,
                        rep,
                        error: format!("{error:#}"),
                    });
                    continue;
                }
            };
            eprintln!(
                "bench e2e:   GPU input wait {:.2}s, makespan {:.2}s, hit ratio {:.2}, {} from the origin",
                result.gpu_wait_s,
                result.makespan_s,
                result.hit_ratio,
                human_size(result.origin_bytes)
            );
            results.push(result);
        }
    }
    if args.scratch.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let config = report::Config {
        pipeline: args.pipeline.display().to_string(),
        profile: profile_path.map(|p| p.display().to_string()),
        reps: args.reps,
        bandwidth_bytes_per_s: args.bandwidth,
        latency_ms: args.latency.as_secs_f64() * 1000.0,
        budget_bytes: budget,
        scale: args.scale,
        time_scale: args.time_scale,
        seed: args.seed,
        ignite: stack.ignite.clone(),
        ignite_nodes: stack.settings.client.addresses.len(),
        input_bytes: external.values().sum(),
        scratch: scratch.display().to_string(),
        cluster: None,
    };
    if results.is_empty() {
        store.close().await;
        let first = failed.first().map_or("", |f| f.error.as_str());
        bail!("every run failed; the first: {first}");
    }
    let line = report::write(&args.out, &config, &results, &failed)?;
    println!("{line}");
    store.close().await;
    if !failed.is_empty() {
        bail!(
            "{} of {total_runs} runs failed (listed in {}); the report covers the other {}",
            failed.len(),
            args.out.join("report.md").display(),
            results.len()
        );
    }
    Ok(())
}

/// One run of the pipeline in one arm.
async fn run_once(
    stack: &Arc<Stack>,
    store: &Store,
    instances: &[Instance],
    compute: &[f64],
    (arm, rep, recorded): (ArmName, usize, bool),
) -> Result<RepResult> {
    let nonce: u32 = rand::random();
    let run = format!("{}-{arm}-{rep}-{nonce:08x}", stack.pipeline.name);
    let namespace = format!("e2e-{arm}-{rep}-{nonce:08x}");
    let mut settings = stack.settings.clone();
    settings.layout.namespace = namespace.clone();
    let cache = match arm {
        ArmName::Nocache => None,
        _ => Some(open_cache(&settings).await?),
    };
    let this = RunId {
        arm,
        rep,
        run,
        namespace,
        recorded,
    };
    let outcome = replay(stack, store, instances, compute, &this, &cache).await;
    // Whether the run completed or failed, what it staged or wrote must not crowd the next
    // runs out of the cache.
    if let Some(cache) = &cache {
        if let Err(error) = cache.clear().await {
            eprintln!(
                "warning: cannot clear the namespace {}: {:#}",
                this.namespace,
                anyhow::Error::new(error)
            );
        }
    }
    let _ = tokio::fs::remove_dir_all(stack.scratch.join(&this.run)).await;
    outcome
}

/// Which run of which arm [`replay`] plays, and its cache namespace.
struct RunId {
    arm: ArmName,
    rep: usize,
    run: String,
    namespace: String,
    /// Whether the finished run joins the history (see the module doc).
    recorded: bool,
}

/// The body of [`run_once`]: the replay of one run and its history.
async fn replay(
    stack: &Arc<Stack>,
    store: &Store,
    instances: &[Instance],
    compute: &[f64],
    this: &RunId,
    cache: &Option<ObjectCache<IgniteSink>>,
) -> Result<RepResult> {
    let (arm, rep, run, namespace) = (this.arm, this.rep, this.run.clone(), &this.namespace);
    let before = stack.proxy.stats();
    let started = Utc::now();
    let clock = std::time::Instant::now();

    // kfcache: the run is known to the history store, and the prefetcher follows it.
    let mut prefetch = None;
    if arm == ArmName::Kfcache {
        store
            .import_runs(&[run_observation(stack, &run, started, None, Vec::new())])
            .await?;
        let log = stack
            .work
            .join("logs")
            .join(format!("{run}-prefetch.jsonl"));
        let child = tokio::process::Command::new(&stack.exe)
            .arg("prefetch")
            .arg(&stack.pipeline_file)
            .args([
                "--run",
                &run,
                "--follow",
                "--poll",
                "0.5",
                "--progress",
                "json",
            ])
            .args(["--budget", &stack.budget.to_string(), "--margin", "2"])
            // Each item is staged when due, 5 s before its latest safe start, not at once:
            // the first tasks read their inputs from the origin over the same link.
            .args(["--lead", "5"])
            // Two streams: the staging shares the link with the tasks already running.
            .args(["--per-source", "2"])
            .args(["--ignite", &stack.ignite, "--key-prefix", namespace])
            .args(["--s3-endpoint", &stack.proxy.endpoint()])
            .env("KFCACHE_DB", &stack.db)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start kfcache prefetch")?;
        prefetch = Some((child, log));
    }

    let mut finished: Vec<Option<TaskResult>> = vec![None; instances.len()];
    let mut running = tokio::task::JoinSet::new();
    let mut launched = vec![false; instances.len()];
    loop {
        for (index, inst) in instances.iter().enumerate() {
            if !launched[index] && inst.after.iter().all(|d| finished[*d].is_some()) {
                launched[index] = true;
                let task = Task {
                    stack: stack.clone(),
                    cache: cache.clone(),
                    run: run.clone(),
                    arm,
                    index,
                    instance: inst.clone(),
                    compute_s: compute[index],
                    started,
                };
                running.spawn(task.run());
            }
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let result = joined.context("a replayed task stopped")??;
        let index = result.index;
        finished[index] = Some(result);
    }
    let makespan_s = clock.elapsed().as_secs_f64();
    let tasks: Vec<TaskResult> = finished.into_iter().flatten().collect();

    let mut staging = Vec::new();
    if let Some((mut child, log)) = prefetch {
        // It stops once every GPU task has started; a few seconds more at most.
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill().await;
            }
        }
        staging = report::staging_from_log(&log, started)?;
    }
    let after = stack.proxy.stats();
    // The finished run joins the history the next reps predict from (see the module doc).
    let observations = tasks
        .iter()
        .map(|t| TaskObservation {
            task_key: t.task.clone(),
            instance: t.instance.clone(),
            attempt: 0,
            started_at: Some(started + chrono::Duration::milliseconds((t.start_s * 1000.0) as i64)),
            finished_at: Some(started + chrono::Duration::milliseconds((t.end_s * 1000.0) as i64)),
            phase: Some("Succeeded".to_string()),
            source: ObservationSource::Argo,
            template: Some(
                stack.pipeline.tasks[instances[t.index].task]
                    .template
                    .clone(),
            ),
            input_bytes: Some(t.bytes_from_cache + t.bytes_from_origin),
            ..TaskObservation::default()
        })
        .collect();
    let ended = started + chrono::Duration::milliseconds((makespan_s * 1000.0) as i64);
    if this.recorded {
        store
            .import_runs(&[run_observation(
                stack,
                &run,
                started,
                Some(ended),
                observations,
            )])
            .await?;
    }
    Ok(RepResult::new(
        arm,
        rep,
        run,
        makespan_s,
        tasks,
        staging,
        after.bytes_down.saturating_sub(before.bytes_down),
        after.bytes_up.saturating_sub(before.bytes_up),
        after.requests.saturating_sub(before.requests),
    ))
}

fn run_observation(
    stack: &Stack,
    run: &str,
    started: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
    tasks: Vec<TaskObservation>,
) -> RunObservation {
    RunObservation {
        name: run.to_string(),
        namespace: None,
        uid: None,
        pipeline_name: stack.pipeline.name.clone(),
        started_at: Some(started),
        finished_at: finished,
        phase: Some(
            if finished.is_some() {
                "Succeeded"
            } else {
                "Running"
            }
            .to_string(),
        ),
        parameters: BTreeMap::new(),
        source: ObservationSource::Argo,
        tasks,
    }
}

/// One task instance of one run.
struct Task {
    stack: Arc<Stack>,
    cache: Option<ObjectCache<IgniteSink>>,
    run: String,
    arm: ArmName,
    index: usize,
    instance: Instance,
    compute_s: f64,
    started: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct InitReport {
    files: Vec<InitFile>,
    bytes_from_cache: u64,
    bytes_from_origin: u64,
}

#[derive(Debug, Deserialize)]
struct InitFile {
    input: String,
    path: PathBuf,
    outcome: String,
}

impl Task {
    fn since_start(&self) -> f64 {
        (Utc::now() - self.started).num_microseconds().unwrap_or(0) as f64 / 1e6
    }

    async fn run(self) -> Result<TaskResult> {
        let stack = self.stack.clone();
        let task = &instance_task(
            &stack.pipeline.tasks[self.instance.task],
            &self.instance.instance,
        );
        let label = if self.instance.instance.is_empty() {
            task.id.clone()
        } else {
            format!("{}({})", task.id, self.instance.instance)
        };
        let dir = stack
            .scratch
            .join(&self.run)
            .join(label.replace(['(', ')', ':'], "_"));
        let target = dir.join("root");
        tokio::fs::create_dir_all(&target).await?;
        let node_name = if self.instance.instance.is_empty() {
            format!("{}.{}", &self.run, task.id)
        } else {
            format!("{}.{}({})", &self.run, task.id, self.instance.instance)
        };
        let bucket = stack
            .remote
            .keys()
            .next()
            .cloned()
            .context("a bucket for the outputs")?;

        // The task description, as `kfcache inject` writes it, with this instance's inputs.
        let mut spec = TaskSpec::of_task(&stack.pipeline.name, task, true);
        let mut upstream: HashMap<String, String> = HashMap::new();
        for input in &mut spec.inputs {
            let Some(source) = input.source.clone() else {
                continue;
            };
            if let Some(rest) = source.strip_prefix(TASK_URI_SCHEME) {
                let (producer, artifact) = rest.split_once('/').unwrap_or((rest, ""));
                let origin = origin_output_uri(&bucket, &self.run, producer, "", artifact);
                upstream.insert(input.name.clone(), origin.clone());
                if self.arm != ArmName::Kfcache {
                    // Without write-through, an upstream output is read where the producer
                    // stored it.
                    input.source = Some(origin);
                }
            } else {
                input.source = Some(instance_uri(&source, &self.instance.instance));
            }
        }
        let spec_path = dir.join("task.json");
        tokio::fs::write(&spec_path, serde_json::to_vec(&spec)?).await?;

        // 1. Inputs.
        let start_s = self.since_start();
        let mut init = tokio::process::Command::new(&stack.exe);
        init.args(["sidecar", "init", "--format", "json"])
            .arg("--spec")
            .arg(format!("@{}", spec_path.display()))
            .args(["--run", &self.run, "--node-name", &node_name])
            .arg("--target")
            .arg(&target)
            .args(["--ignite", &stack.ignite])
            .args(["--key-prefix", &stack_namespace(self.cache.as_ref())])
            .args(["--s3-endpoint", &stack.proxy.endpoint()])
            .env("KFCACHE_DB", &stack.db)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        match self.arm {
            ArmName::Nocache => {
                init.arg("--no-cache");
            }
            ArmName::Lru => {
                init.args(["--fill-budget", &stack.budget.to_string()]);
            }
            ArmName::Kfcache => {}
        }
        let output = tokio::time::timeout(stack.task_timeout, init.output())
            .await
            .with_context(|| format!("sidecar init of {label} took longer than the task timeout"))?
            .context("cannot run kfcache sidecar init")?;
        if !output.status.success() {
            bail!(
                "sidecar init of {label} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if !output.stderr.is_empty() {
            let log = stack.work.join("logs").join(format!(
                "{}-{}-init.log",
                self.run,
                label.replace(['(', ')', ':'], "_")
            ));
            tokio::fs::write(&log, &output.stderr).await?;
        }
        let report: InitReport = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("sidecar init of {label} printed no JSON report"))?;
        let bytes_from_cache = report.bytes_from_cache;
        let mut bytes_from_origin = report.bytes_from_origin;
        let mut misses = report.files.iter().filter(|f| f.outcome == "miss").count();
        // Upstream outputs nothing cached: Argo's executor copies them from the repository.
        for file in &report.files {
            if file.outcome == "hit" || file.outcome == "miss" {
                continue;
            }
            let Some(origin) = upstream.get(&file.input) else {
                continue;
            };
            let bytes = self.download(origin, &file.path).await?;
            bytes_from_origin += bytes;
            misses += 1;
        }
        // Every input is there, whole.
        for input in &task.inputs {
            let Some(source) = input.source.as_deref() else {
                continue;
            };
            let expected = if let Some(rest) = source.strip_prefix(TASK_URI_SCHEME) {
                let (producer, artifact) = rest.split_once('/').unwrap_or((rest, ""));
                stack.profile.output_size(producer, artifact)
            } else {
                stack
                    .profile
                    .input_size(&instance_uri(source, &self.instance.instance))
            };
            let path = kfcache_sidecar::init::destination(
                &target,
                &kfcache_sidecar::SpecInput {
                    name: input.name.clone(),
                    source: None,
                    path: input.path.clone(),
                },
            )?;
            let found = bytes_under(&path)
                .await
                .with_context(|| format!("{label}: input {} was not materialised", input.name))?;
            if found != expected {
                bail!(
                    "{label}: input {} has {found} bytes, {expected} expected",
                    input.name
                );
            }
        }
        let ready_s = self.since_start();

        // 2. Compute.
        let identity = Identity::resolve(&self.run, &stack.pipeline.name, None, Some(&node_name))?;
        let events = self
            .cache
            .as_ref()
            .filter(|_| self.arm == ArmName::Kfcache)
            .map(|c| EventLog::new(c.sink().clone(), c.config().namespace.clone()));
        let compute_start = Utc::now();
        if let Some(events) = &events {
            publish(
                events,
                &identity,
                EventKind::Started {
                    detector: "proc".to_string(),
                    pid: std::process::id(),
                },
            )
            .await;
        }
        let status = tokio::process::Command::new("sleep")
            .arg(format!("{:.3}", self.compute_s))
            .kill_on_drop(true)
            .status()
            .await
            .context("cannot run the compute step (sleep)")?;
        if !status.success() {
            bail!("{label}: the compute step failed ({status})");
        }
        let compute_end_s = self.since_start();
        if let Some(events) = &events {
            publish(
                events,
                &identity,
                EventKind::Ended {
                    started_at: compute_start,
                    detector: "proc".to_string(),
                    exit_code: Some(0),
                    gpu_memory_bytes: None,
                    deadline: None,
                    slack_s: None,
                },
            )
            .await;
        }

        // 3. Outputs: written by the task, then uploaded to the artifact repository and, with
        // kfcache, written through to the cache at the same time, as the pod's wait container
        // and the kfcache sidecar do once the main container has ended.
        let mut output_bytes = 0;
        let mut uploads = Vec::new();
        for output in &task.outputs {
            let Some(declared) = output.path.as_deref() else {
                continue;
            };
            let path = kfcache_sidecar::spec::contained_path(&target, &output.name, declared)?;
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            let uri = origin_output_uri(
                &bucket,
                &self.run,
                &task.id,
                &self.instance.instance,
                &output.name,
            );
            let size = stack.profile.output_size(&task.id, &output.name);
            let data = {
                let uri = uri.clone();
                tokio::task::spawn_blocking(move || content(&uri, size, 0)).await?
            };
            tokio::fs::write(&path, &data).await?;
            output_bytes += size;
            uploads.push((output.name.clone(), uri, data));
        }
        let upload = async {
            for (name, uri, data) in uploads {
                let (bucket, key) = split_s3(&uri).context("an s3 URI")?;
                let client = stack
                    .remote
                    .get(bucket)
                    .context("a client per bucket")?
                    .clone();
                let key = object_store::path::Path::from(key);
                client
                    .put(&key, PutPayload::from_bytes(data))
                    .await
                    .with_context(|| format!("{label}: cannot upload output {name}"))?;
            }
            Ok::<(), anyhow::Error>(())
        };
        // As the sidecar does: a cache that cannot take the outputs is logged, and the task
        // still succeeds, since its outputs are at the origin.
        let write_through = async {
            match (&self.cache, self.arm) {
                (Some(cache), ArmName::Kfcache) => {
                    kfcache_sidecar::outputs::write_through(cache, &spec, &identity, &target)
                        .await
                        .err()
                        .map(|error| {
                            // The whole chain: the layout's context, then the client's reason.
                            let error = anyhow::Error::new(error);
                            eprintln!(
                                "bench e2e:   warning: {label}: write-through failed: {error:#}"
                            );
                            format!("{error:#}")
                        })
                }
                _ => None,
            }
        };
        let (uploaded, write_through_error) = tokio::join!(upload, write_through);
        uploaded?;
        let end_s = self.since_start();
        let _ = tokio::fs::remove_dir_all(&target).await;
        Ok(TaskResult {
            index: self.index,
            task: task.id.clone(),
            instance: self.instance.instance.clone(),
            gpus: task.gpus,
            start_s,
            ready_s,
            compute_end_s,
            end_s,
            compute_s: self.compute_s,
            bytes_from_cache,
            bytes_from_origin,
            misses: misses as u32,
            output_bytes,
            write_through_error,
        })
    }

    /// Copies an upstream output from the artifact repository (through the proxy).
    async fn download(&self, uri: &str, path: &Path) -> Result<u64> {
        let (bucket, key) = split_s3(uri).context("an s3 URI")?;
        let client = self
            .stack
            .remote
            .get(bucket)
            .context("a client per bucket")?;
        let data = client
            .get(&object_store::path::Path::from(key))
            .await
            .with_context(|| format!("cannot read {uri}"))?
            .bytes()
            .await?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(path, &data).await?;
        Ok(data.len() as u64)
    }
}

/// The size of a file, or of every file under a directory.
async fn bytes_under(path: &Path) -> std::io::Result<u64> {
    let meta = tokio::fs::metadata(path).await?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let meta = entry.metadata().await?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

fn stack_namespace(cache: Option<&ObjectCache<IgniteSink>>) -> String {
    cache
        .map(|c| c.config().namespace.clone())
        .unwrap_or_else(|| "e2e-nocache".to_string())
}

async fn publish(events: &EventLog<IgniteSink>, who: &Identity, kind: EventKind) {
    let event = Event {
        who: who.clone(),
        at: Utc::now(),
        kind,
    };
    if let Err(error) = events.publish(&event).await {
        eprintln!(
            "warning: cannot publish the {} event: {error}",
            event.kind.name()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_latencies_parse() {
        assert_eq!(parse_rate("100MB/s"), Ok(100e6));
        assert_eq!(parse_rate("1MiB/s"), Ok(1048576.0));
        assert!(parse_rate("0MB/s").is_err());
        assert_eq!(parse_latency("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_latency("0"), Ok(Duration::ZERO));
        assert!(parse_latency("fast").is_err());
    }

    #[test]
    fn fan_out_instances_wait_for_every_instance_before_them() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/e2e/replay-pipeline.yaml");
        let pipeline = kfcache_parser::parse_file(&path, &ParseOptions::default())
            .expect("fixture parses")
            .remove(0);
        let dag = Dag::build(&pipeline).expect("fixture is a DAG");
        let list = instances(&pipeline, &dag);
        let id = |i: &Instance| pipeline.tasks[i.task].id.clone();
        let preprocess: Vec<usize> = (0..list.len())
            .filter(|&i| id(&list[i]) == "preprocess")
            .collect();
        assert_eq!(preprocess.len(), 3);
        let train = list
            .iter()
            .find(|i| id(i) == "train-resnet")
            .expect("train-resnet");
        for p in &preprocess {
            assert!(
                train.after.contains(p),
                "train-resnet waits for instance {p}"
            );
        }
        assert_eq!(list[preprocess[1]].instance, "1:1");
        assert_eq!(
            instance_uri("s3://b/shards/shard-{{item}}.bin", "1:1"),
            "s3://b/shards/shard-1.bin"
        );
    }

    #[test]
    fn content_is_deterministic_and_differs_per_object() {
        assert_eq!(content("s3://b/a", 1000, 1), content("s3://b/a", 1000, 1));
        assert_ne!(content("s3://b/a", 1000, 1), content("s3://b/b", 1000, 1));
        assert_eq!(content("s3://b/a", 1000, 1).len(), 1000);
    }
}
