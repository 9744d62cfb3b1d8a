//! `kfcache-cluster-bench`: the end-to-end benchmark on the real control plane.
//!
//! Where `kfcache bench e2e` replays a pipeline with its own processes, this submits it as a
//! real Workflow to the real Argo workflow-controller, `--reps` times in each of three
//! interleaved arms (the order rotates each rep; every run has a namespace and a cache of its
//! own, cleared afterwards). The node agent runs the pods, and Argo's own `argoexec`
//! downloads the inputs and uploads the outputs:
//! - `nocache`: the workflow as it is; Argo reads every input from the origin;
//! - `lru`: `kfcache inject --gateway` and a gateway with `--fill-budget B
//!   --no-write-through`, an on-demand cache that fills on first read;
//! - `kfcache`: `kfcache inject --gateway`, a gateway writing uploads through, and `kfcache
//!   prefetch FILE --run NAME --follow --lead 5 --budget B` started with the run, predicting
//!   from the history of the earlier runs.
//!
//! Origin reads go through the throttling proxy ([`kfcache_harness::proxy`]), as in the
//! replay: one token bucket of `--bandwidth` for every reader, `--latency` per request. What
//! each container did is replaced (see [`workflow`]): `main` checks that its inputs arrived
//! whole, sleeps for the rep's drawn compute time, and writes outputs of the profile's sizes.
//!
//! The measures come from where they happened (see [`measure`]): the pods' containers as the
//! agent ran them, the gateway's log, and the origin's access log. Finished runs join the
//! history as the replay's do (every arm's until the first kfcache run has finished, then
//! kfcache's). The report is the replay's ([`kfcache_harness::e2e_report`]), with the line
//! `e2e-cluster: … origin_gets_cached=… p_vs_lru=…`.

pub mod measure;
pub mod workflow;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use kfcache_harness::e2e_report::{self as report, ArmName, RepResult, TaskResult};
use kfcache_harness::proxy::{Proxy, ProxyConfig};
use kfcache_harness::replay::{content, split_s3, Profile};
use kfcache_harness::units::{human_size, parse_size};
use kfcache_parser::model::TASK_URI_SCHEME;
use kfcache_parser::{ParseOptions, Pipeline, Task};
use kfcache_schema::{ObservationSource, RunObservation, Store, TaskObservation};
use kube::Client;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, PutPayload};
use rand::SeedableRng;
use tokio::process::{Child, Command};

use crate::cluster;
use crate::pod::STATE_DIR_ANNOTATION;

/// The image `kfcache inject` gives kfcache's containers; the agent maps it to the binary.
pub const KFCACHE_IMAGE: &str = "kfcache.test/kfcache:bench";
/// Argo's executor image, mapped to the locally built `argoexec`.
pub const ARGOEXEC_IMAGE: &str = "quay.io/argoproj/argoexec";

/// The settings of a benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The pipeline (an Argo Workflow with a DAG entrypoint).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "fixtures/e2e/replay-pipeline.yaml"
    )]
    pub pipeline: PathBuf,
    /// Sizes and compute times [default: FILE with `.profile.yaml` in place of `.yaml`].
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Runs of each arm.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub reps: usize,
    /// The arms to run, comma-separated.
    #[arg(
        long,
        value_name = "ARMS",
        default_value = "nocache,lru,kfcache",
        value_delimiter = ','
    )]
    pub arms: Vec<ArmName>,
    /// Bandwidth of the emulated remote storage, shared by every reader (`100MB/s`).
    #[arg(long, value_name = "RATE", default_value = "100MB/s")]
    pub bandwidth: String,
    /// Milliseconds added to every request to the remote storage.
    #[arg(long, value_name = "MS", default_value_t = 20.0)]
    pub latency_ms: f64,
    /// Cache budget of the on-demand and kfcache arms [default: 80 % of the bytes a run reads].
    #[arg(long, value_name = "SIZE")]
    pub budget: Option<String>,
    /// Multiplies every size of the profile.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub scale: f64,
    /// Multiplies every compute time of the profile.
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Seed of the compute times and the data.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Where the report, results, plots and logs go.
    #[arg(long, value_name = "DIR", default_value = "bench-e2e-cluster")]
    pub out: PathBuf,
    /// The `kfcache` binary [default: beside this one].
    #[arg(long, value_name = "FILE")]
    pub kfcache: Option<PathBuf>,
    /// The node agent [default: `kfcache-node-agent` beside this one].
    #[arg(long, value_name = "FILE")]
    pub node_agent: Option<PathBuf>,
    /// The directory of the locally built Argo binaries (`argoexec`).
    #[arg(long, value_name = "DIR", env = "KFCACHE_TEST_K8S_BIN")]
    pub argo_bin: PathBuf,
    /// The Ignite cluster (`host:port,…`).
    #[arg(long, value_name = "ADDRS", env = "KFCACHE_TEST_IGNITE_3")]
    pub ignite: String,
    /// The S3 server (the origin).
    #[arg(long, value_name = "URL", env = "KFCACHE_TEST_S3_ENDPOINT")]
    pub s3_endpoint: String,
    /// The S3 server's access log (moto's), to count the origin's GETs.
    #[arg(long, value_name = "FILE", env = "KFCACHE_TEST_S3_LOG")]
    pub s3_log: PathBuf,
    /// Where the node agent keeps the pods' volumes [default: under /dev/shm, memory-backed
    /// like the replay's, else OUT/agent].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds a run may take before it counts as failed.
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    pub run_timeout: u64,
}

/// Everything the runs share.
struct Bench {
    args: BenchArgs,
    client: Client,
    pipeline: Pipeline,
    workflow: serde_yaml::Value,
    profile: Profile,
    bucket: String,
    proxy: Proxy,
    kfcache: PathBuf,
    node: String,
    work: PathBuf,
    budget: u64,
    db: PathBuf,
}

/// Beside the running binary.
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    Ok(exe.with_file_name(name))
}

/// Runs the benchmark; returns the report's last line.
pub async fn run(args: BenchArgs) -> Result<String> {
    crate::install_crypto_provider();
    if args.reps == 0 || args.arms.is_empty() {
        bail!("--reps must be at least 1 and --arms name an arm");
    }
    let bandwidth = parse_size(args.bandwidth.trim_end_matches("/s"))
        .map_err(|e| anyhow::anyhow!("--bandwidth: {e}"))? as f64;
    let kfcache = match &args.kfcache {
        Some(path) => path.clone(),
        None => sibling("kfcache")?,
    };
    let agent_bin = match &args.node_agent {
        Some(path) => path.clone(),
        None => sibling("kfcache-node-agent")?,
    };
    for (what, path) in [("kfcache", &kfcache), ("the node agent", &agent_bin)] {
        if !path.is_file() {
            bail!("{what} is not at {} (build it, or name it)", path.display());
        }
    }
    if !args.argo_bin.join("argoexec").is_file() {
        bail!(
            "{}/argoexec does not exist: --argo-bin (KFCACHE_TEST_K8S_BIN from `scripts/k8s.sh env`) names the built Argo binaries",
            args.argo_bin.display()
        );
    }
    if !args.s3_log.is_file() {
        bail!(
            "the S3 server's access log {} does not exist",
            args.s3_log.display()
        );
    }
    let client = Client::try_default()
        .await
        .context("no Kubernetes client (KUBECONFIG from `scripts/k8s.sh env`)")?;

    let text = std::fs::read_to_string(&args.pipeline)
        .with_context(|| format!("cannot read {}", args.pipeline.display()))?;
    let workflow: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not YAML", args.pipeline.display()))?;
    let mut pipelines = kfcache_parser::parse_file(&args.pipeline, &ParseOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if pipelines.len() != 1 {
        bail!("{} must hold one pipeline", args.pipeline.display());
    }
    let pipeline = pipelines.remove(0);
    let profile_path = args.profile.clone().or_else(|| {
        let candidate = args.pipeline.with_extension("profile.yaml");
        candidate.exists().then_some(candidate)
    });
    let profile = Profile::load(profile_path.as_deref(), args.scale, args.time_scale)?;

    // The objects the pipeline reads, at the origin.
    let external = external_objects(&pipeline, &profile);
    let bucket = external
        .keys()
        .find_map(|uri| split_s3(uri).map(|(b, _)| b.to_string()))
        .context("the pipeline reads nothing from S3")?;
    if external
        .keys()
        .any(|u| !u.starts_with(&format!("s3://{bucket}/")))
    {
        bail!("the benchmark reads one bucket; the pipeline names several");
    }
    std::fs::create_dir_all(&args.out)?;
    let work = std::fs::canonicalize(&args.out)?.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let upstream = tokio::net::lookup_host(
        args.s3_endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/'),
    )
    .await
    .with_context(|| format!("cannot resolve {}", args.s3_endpoint))?
    .next()
    .context("the S3 endpoint has no address")?;
    let proxy = Proxy::start(
        upstream,
        ProxyConfig {
            bandwidth: Some(bandwidth),
            latency: Duration::from_secs_f64(args.latency_ms / 1000.0),
            ..ProxyConfig::default()
        },
    )
    .await?;
    upload(&args.s3_endpoint, &bucket, &external, args.seed).await?;
    let upstream_bytes: u64 = pipeline
        .tasks
        .iter()
        .flat_map(|t| {
            t.outputs
                .iter()
                .map(|o| profile.output_size(&t.id, &o.name))
        })
        .sum();
    let budget = match &args.budget {
        Some(text) => parse_size(text).map_err(|e| anyhow::anyhow!("--budget: {e}"))?,
        None => ((external.values().sum::<u64>() + upstream_bytes) as f64 * 0.8) as u64,
    };

    // The node and its agent.
    let nonce: u32 = rand::random();
    let node = format!("kfcache-bench-{nonce:08x}");
    cluster::fake_node(&client, &node).await?;
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from(format!(
            "/dev/shm/kfcache-cluster-bench-{}",
            std::process::id()
        )),
        None => work.join("agent"),
    };
    let kfcache_dir = kfcache
        .parent()
        .context("kfcache's directory")?
        .to_path_buf();
    let agent_log = std::fs::File::create(work.join("agent.log"))?;
    let mut agent = Command::new(&agent_bin)
        .args(["--node", &node, "--state-dir"])
        .arg(&state_dir)
        .arg("--image-bin")
        .arg(format!("{ARGOEXEC_IMAGE}={}", args.argo_bin.display()))
        .arg("--image-bin")
        .arg(format!("kfcache.test/kfcache={}", kfcache_dir.display()))
        .env("KFCACHE_LOG", "info,kube=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(agent_log.try_clone()?))
        .stderr(Stdio::from(agent_log))
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the node agent")?;

    let db = std::fs::canonicalize(&args.out)?.join("history.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    eprintln!(
        "cluster bench: {} ({} tasks) on node {node}, {} objects ({}) in {bucket}, budget {}, {:.0} MB/s and {} ms per request through {}",
        pipeline.name,
        pipeline.tasks.len(),
        external.len(),
        human_size(external.values().sum()),
        human_size(budget),
        bandwidth / 1e6,
        args.latency_ms,
        proxy.endpoint()
    );
    let bench = Bench {
        client: client.clone(),
        pipeline,
        workflow,
        profile,
        bucket,
        proxy,
        kfcache,
        node: node.clone(),
        work,
        budget,
        db: db.clone(),
        args: args.clone(),
    };
    let outcome = bench.runs(&state_dir).await;
    let _ = agent.start_kill();
    let _ = agent.wait().await;
    cluster::remove_node(&client, &node).await;
    if args.state_dir.is_none() {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    let (results, failed) = outcome?;
    if results.is_empty() {
        bail!(
            "every run failed; the first: {}",
            failed.first().map_or("", |f| f.error.as_str())
        );
    }
    let config = report::Config {
        pipeline: args.pipeline.display().to_string(),
        profile: profile_path.map(|p| p.display().to_string()),
        reps: args.reps,
        bandwidth_bytes_per_s: bandwidth,
        latency_ms: args.latency_ms,
        budget_bytes: budget,
        scale: args.scale,
        time_scale: args.time_scale,
        seed: args.seed,
        ignite: args.ignite.clone(),
        ignite_nodes: args.ignite.split(',').count(),
        input_bytes: external.values().sum(),
        scratch: state_dir.display().to_string(),
        cluster: Some(
            "kube-apiserver, kube-scheduler and Argo's workflow-controller built by scripts/k8s.sh; pods run by kfcache-node-agent with Argo's argoexec".to_string(),
        ),
    };
    let line = report::write(&args.out, &config, &results, &failed)?;
    if !failed.is_empty() {
        eprintln!(
            "cluster bench: {} run(s) failed (listed in {})",
            failed.len(),
            args.out.join("report.md").display()
        );
    }
    Ok(line)
}

/// The instance inputs of a task: (input, URI) with `{{item}}` of fan-out instances resolved
/// by the parser (one input per item).
fn s3_inputs(task: &Task) -> impl Iterator<Item = &str> {
    task.inputs
        .iter()
        .filter_map(|i| i.source.as_deref())
        .filter(|s| s.starts_with("s3://"))
}

/// Every object the pipeline reads at the origin, with its size.
fn external_objects(pipeline: &Pipeline, profile: &Profile) -> BTreeMap<String, u64> {
    pipeline
        .tasks
        .iter()
        .flat_map(s3_inputs)
        .flat_map(|uri| profile.objects(uri))
        .collect()
}

/// Puts the objects at the origin (directly, not through the proxy); objects of the bucket
/// under the inputs' prefixes that are not inputs go (a directory holds exactly its objects).
async fn upload(
    endpoint: &str,
    bucket: &str,
    objects: &BTreeMap<String, u64>,
    seed: u64,
) -> Result<()> {
    let store: AmazonS3 = AmazonS3Builder::from_env()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_allow_http(true)
        .with_region("us-east-1")
        .build()?;
    create_bucket(endpoint, bucket).await?;
    let keys: BTreeSet<String> = objects
        .keys()
        .filter_map(|u| split_s3(u).map(|(_, k)| k.to_string()))
        .collect();
    let prefixes: BTreeSet<String> = keys
        .iter()
        .filter_map(|k| k.rsplit_once('/').map(|(p, _)| format!("{p}/")))
        .collect();
    for prefix in &prefixes {
        use futures::TryStreamExt;
        let listed: Vec<object_store::ObjectMeta> = store
            .list(Some(&object_store::path::Path::from(prefix.as_str())))
            .try_collect()
            .await?;
        for meta in listed {
            if !keys.contains(meta.location.as_ref()) {
                store.delete(&meta.location).await?;
            }
        }
    }
    for (uri, size) in objects {
        let (_, key) = split_s3(uri).context("an S3 URI")?;
        let path = object_store::path::Path::from(key);
        if store.head(&path).await.is_ok_and(|m| m.size == *size) {
            continue;
        }
        store
            .put(&path, PutPayload::from_bytes(content(uri, *size, seed)))
            .await
            .with_context(|| format!("cannot upload {uri}"))?;
    }
    Ok(())
}

/// Creates `bucket` with an unsigned `PUT /bucket` (the test S3 server accepts it; an existing
/// bucket is fine).
async fn create_bucket(endpoint: &str, bucket: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host)
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
            "cannot create bucket {bucket}: {}",
            answer.lines().next().unwrap_or("")
        );
    }
    Ok(())
}

/// A child process stopped with SIGTERM (then killed) when the run is over.
async fn stop(child: &mut Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A plain HTTP GET on loopback: the body when the status is 200.
async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200").then(|| body.to_string())
}

/// The sum of a metric's samples whose line contains `labels`.
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One run's identity.
struct RunId {
    arm: ArmName,
    rep: usize,
    name: String,
    namespace: String,
    recorded: bool,
}

impl Bench {
    async fn runs(&self, state_dir: &Path) -> Result<(Vec<RepResult>, Vec<report::FailedRep>)> {
        let store = Store::open(&self.db)
            .await
            .with_context(|| format!("cannot open {}", self.db.display()))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.args.seed);
        let mut results: Vec<RepResult> = Vec::new();
        let mut failed = Vec::new();
        let total = self.args.reps * self.args.arms.len();
        for rep in 0..self.args.reps {
            let compute: BTreeMap<String, f64> = self
                .pipeline
                .tasks
                .iter()
                .map(|t| (t.id.clone(), self.profile.compute(&t.id, t.gpus, &mut rng)))
                .collect();
            let mut order = self.args.arms.clone();
            let arms = order.len();
            order.rotate_left(rep % arms);
            for arm in order {
                let done = results.len() + failed.len() + 1;
                eprintln!("cluster bench: run {done}/{total}: {arm} rep {}", rep + 1);
                let nonce: u32 = rand::random();
                let base: String = self
                    .pipeline
                    .name
                    .to_ascii_lowercase()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .take(30)
                    .collect();
                let id = RunId {
                    arm,
                    rep,
                    name: format!("{}-{arm}-{}-{nonce:08x}", base.trim_matches('-'), rep + 1),
                    namespace: format!("kfb-{arm}-{}-{nonce:08x}", rep + 1),
                    recorded: arm == ArmName::Kfcache
                        || !results.iter().any(|r| r.arm == ArmName::Kfcache),
                };
                let outcome = self.run_once(&store, &id, &compute, state_dir).await;
                cluster::delete_namespace(&self.client, &id.namespace).await;
                match outcome {
                    Ok(result) => {
                        eprintln!(
                            "cluster bench:   GPU input wait {:.2}s, makespan {:.2}s, hit ratio {:.2}, {} over the link, {} origin GET(s) of cached objects",
                            result.gpu_wait_s,
                            result.makespan_s,
                            result.hit_ratio,
                            human_size(result.origin_bytes),
                            result.origin_gets_cached.unwrap_or(0)
                        );
                        results.push(result);
                    }
                    Err(error) => {
                        eprintln!(
                            "cluster bench:   the {arm} arm's rep {} failed: {error:#}",
                            rep + 1
                        );
                        failed.push(report::FailedRep {
                            arm,
                            rep,
                            error: format!("{error:#}"),
                        });
                    }
                }
            }
        }
        store.close().await;
        Ok((results, failed))
    }

    /// Runs `kfcache` to completion; its stdout.
    async fn kfcache(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(&self.kfcache)
            .args(args)
            .env("KFCACHE_DB", &self.db)
            .stdin(Stdio::null())
            .output()
            .await
            .context("cannot run kfcache")?;
        if !output.status.success() {
            bail!(
                "kfcache {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// What each DAG task does in this rep.
    fn plans(&self, compute: &BTreeMap<String, f64>) -> BTreeMap<String, workflow::TaskPlan> {
        let mut plans = BTreeMap::new();
        for task in &self.pipeline.tasks {
            let mut expect: Vec<(String, u64)> = Vec::new();
            for input in &task.inputs {
                let (Some(source), Some(path)) = (input.source.as_deref(), input.path.as_deref())
                else {
                    continue;
                };
                // A fan-out lists one input per item under one path; each instance reads one.
                if expect.iter().any(|(p, _)| p == path) {
                    continue;
                }
                let bytes = match source.strip_prefix(TASK_URI_SCHEME) {
                    Some(rest) => {
                        let (producer, artifact) = rest.split_once('/').unwrap_or((rest, ""));
                        self.profile.output_size(producer, artifact)
                    }
                    None => self.profile.input_size(source),
                };
                expect.push((path.to_string(), bytes));
            }
            let outputs = task
                .outputs
                .iter()
                .filter_map(|o| {
                    Some((o.path.clone()?, self.profile.output_size(&task.id, &o.name)))
                })
                .collect();
            plans.insert(
                task.name.clone(),
                workflow::TaskPlan {
                    compute_s: compute.get(&task.id).copied().unwrap_or(1.0),
                    expect,
                    outputs,
                },
            );
        }
        plans
    }

    /// The workflow of one run, as JSON for the API: runnable, named, pinned to the node, and
    /// for the cache arms routed through the gateway at `gateway`.
    async fn workflow(
        &self,
        id: &RunId,
        compute: &BTreeMap<String, f64>,
        gateway: Option<&str>,
    ) -> Result<serde_json::Value> {
        let runnable = workflow::runnable(&self.workflow, &self.plans(compute))?;
        let file = self.work.join(format!("{}.yaml", id.name));
        std::fs::write(&file, serde_yaml::to_string(&runnable)?)?;
        let text = match gateway {
            None => serde_yaml::to_string(&runnable)?,
            Some(gateway) => {
                let repository = self.work.join(format!("{}-repository.yaml", id.name));
                std::fs::write(
                    &repository,
                    cluster::repository_yaml(&self.proxy.endpoint(), &self.bucket),
                )?;
                let injected = file.with_extension("injected.yaml");
                self.kfcache(&[
                    "inject",
                    &file.display().to_string(),
                    "--all-tasks",
                    "--gateway",
                    gateway,
                    "--artifact-repository",
                    &repository.display().to_string(),
                    "--image",
                    KFCACHE_IMAGE,
                    "--pod-ignite",
                    &self.args.ignite,
                    "-o",
                    &injected.display().to_string(),
                ])
                .await?;
                std::fs::read_to_string(&injected)?
            }
        };
        let mut workflow: serde_json::Value = serde_yaml::from_str(&text)?;
        let metadata = workflow["metadata"]
            .as_object_mut()
            .context("the workflow has no metadata")?;
        metadata.remove("generateName");
        metadata.insert("name".into(), id.name.clone().into());
        let spec = &mut workflow["spec"];
        spec["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": self.node});
        spec["tolerations"] = serde_json::json!([
            {"key": cluster::TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
        ]);
        Ok(workflow)
    }

    async fn start_gateway(&self, id: &RunId) -> Result<(Child, String, String, PathBuf)> {
        let port = free_port()?;
        let admin = format!("127.0.0.1:{}", free_port()?);
        let log = self.work.join(format!("{}-gateway.log", id.name));
        let file = std::fs::File::create(&log)?;
        let mut command = Command::new(&self.kfcache);
        command
            .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &admin])
            .args([
                "--k8s-namespace",
                &id.namespace,
                "--ignite",
                &self.args.ignite,
            ])
            .args(["--s3-endpoint", &self.proxy.endpoint()])
            .args(["--cache-timeout", "2s"])
            .env("RUST_LOG", "info,kfcache_gateway=debug")
            .env("NO_COLOR", "1")
            .env("KFCACHE_DB", &self.db)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        if id.arm == ArmName::Lru {
            command
                .args(["--fill-budget", &self.budget.to_string()])
                .arg("--no-write-through");
        }
        let mut child = command.spawn().context("cannot start kfcache gateway")?;
        let started = std::time::Instant::now();
        while http_get(&admin, "/healthz").await.is_none() {
            if started.elapsed() > Duration::from_secs(30) || child.try_wait()?.is_some() {
                stop(&mut child).await;
                bail!(
                    "the gateway did not come up: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok((child, format!("127.0.0.1:{port}"), admin, log))
    }

    fn start_prefetch(&self, id: &RunId) -> Result<(Child, PathBuf)> {
        let log = self.work.join(format!("{}-prefetch.jsonl", id.name));
        let child = Command::new(&self.kfcache)
            .arg("prefetch")
            .arg(&self.args.pipeline)
            .args([
                "--run",
                &id.name,
                "--follow",
                "--poll",
                "0.5",
                "--progress",
                "json",
            ])
            .args(["--budget", &self.budget.to_string(), "--margin", "2"])
            .args(["--lead", "5", "--per-source", "2"])
            .args([
                "--ignite",
                &self.args.ignite,
                "--k8s-namespace",
                &id.namespace,
            ])
            .args(["--s3-endpoint", &self.proxy.endpoint()])
            .env("KFCACHE_DB", &self.db)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start kfcache prefetch")?;
        Ok((child, log))
    }

    fn observation(
        &self,
        id: &RunId,
        started: DateTime<Utc>,
        finished: Option<DateTime<Utc>>,
        tasks: Vec<TaskObservation>,
    ) -> RunObservation {
        RunObservation {
            name: id.name.clone(),
            namespace: None,
            uid: None,
            pipeline_name: self.pipeline.name.clone(),
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

    async fn run_once(
        &self,
        store: &Store,
        id: &RunId,
        compute: &BTreeMap<String, f64>,
        state_dir: &Path,
    ) -> Result<RepResult> {
        cluster::prepare_namespace(
            &self.client,
            &id.namespace,
            &self.proxy.endpoint(),
            &self.bucket,
        )
        .await?;
        let mut gateway = None;
        if id.arm != ArmName::Nocache {
            gateway = Some(self.start_gateway(id).await?);
        }
        let workflow = self
            .workflow(id, compute, gateway.as_ref().map(|g| g.1.as_str()))
            .await?;
        let log_offset = std::fs::metadata(&self.args.s3_log)
            .map(|m| m.len())
            .unwrap_or(0);
        let before = self.proxy.stats();
        let started = Utc::now();
        let mut prefetch = None;
        if id.arm == ArmName::Kfcache {
            store
                .import_runs(&[self.observation(id, started, None, Vec::new())])
                .await?;
            prefetch = Some(self.start_prefetch(id)?);
        }
        let outcome = async {
            cluster::submit_workflow(&self.client, &id.namespace, workflow).await?;
            match cluster::follow_workflow(
                &self.client,
                &id.namespace,
                &id.name,
                Duration::from_secs(self.args.run_timeout),
                Duration::from_millis(250),
            )
            .await
            {
                cluster::Outcome::Succeeded(wf) => Ok(wf),
                cluster::Outcome::Failed { message, last } => {
                    let path = self.work.join(format!("{}-status.yaml", id.name));
                    let _ = std::fs::write(&path, serde_yaml::to_string(&last).unwrap_or_default());
                    bail!("{message} (status in {})", path.display())
                }
            }
        }
        .await;
        let mut staging = Vec::new();
        if let Some((mut child, log)) = prefetch {
            stop(&mut child).await;
            staging = report::staging_from_log(&log, started).unwrap_or_default();
        }
        // moto writes its access-log line after the response.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = self.proxy.stats();
        let mut served = (0.0, 0.0);
        let mut reads = Vec::new();
        if let Some((mut child, _, admin, log)) = gateway {
            let text = http_get(&admin, "/metrics").await.unwrap_or_default();
            served = (
                metric(&text, "kfcache_gateway_served_bytes", "source=\"cache\""),
                metric(&text, "kfcache_gateway_served_bytes", "source=\"origin\""),
            );
            stop(&mut child).await;
            reads = measure::gateway_reads(&std::fs::read_to_string(&log).unwrap_or_default());
        }
        let staged = if id.arm == ArmName::Nocache {
            BTreeMap::new()
        } else {
            let listed = self
                .kfcache(&[
                    "cache",
                    "ls",
                    "-o",
                    "json",
                    "--ignite",
                    &self.args.ignite,
                    "--k8s-namespace",
                    &id.namespace,
                ])
                .await
                .unwrap_or_default();
            let _ = self
                .kfcache(&[
                    "cache",
                    "clear",
                    "--ignite",
                    &self.args.ignite,
                    "--k8s-namespace",
                    &id.namespace,
                ])
                .await;
            measure::staged_times(&listed)
        };
        let pods = cluster::workflow_pods(&self.client, &id.namespace, &id.name).await;
        let mut times = Vec::new();
        for pod in &pods {
            let annotations = pod.metadata.annotations.clone().unwrap_or_default();
            let node = annotations
                .get("workflows.argoproj.io/node-name")
                .cloned()
                .unwrap_or_default();
            let dir = annotations.get(STATE_DIR_ANNOTATION).map(PathBuf::from);
            let timeline = dir
                .as_ref()
                .map(|d| std::fs::read_to_string(crate::pod::timeline_path(d)).unwrap_or_default())
                .unwrap_or_default();
            if let Some(dir) = dir.filter(|d| d.starts_with(state_dir)) {
                let _ = std::fs::remove_dir_all(dir);
            }
            if let Some((task, instance)) = measure::task_of_node(&id.name, &node) {
                times.push((task, instance, measure::pod_times(&timeline)));
            }
        }
        outcome?;
        let gets = measure::origin_gets(&measure::read_from(&self.args.s3_log, log_offset));
        let origin_gets_cached = measure::gets_of_cached(&gets, &staged);
        let result = self.result(
            id,
            started,
            compute,
            &times,
            &reads,
            staging,
            (before, after),
            served,
            origin_gets_cached,
        )?;
        if id.recorded {
            let observations = result
                .tasks
                .iter()
                .map(|t| TaskObservation {
                    task_key: t.task.clone(),
                    instance: t.instance.clone(),
                    attempt: 0,
                    started_at: Some(
                        started + chrono::Duration::milliseconds((t.start_s * 1000.0) as i64),
                    ),
                    finished_at: Some(
                        started + chrono::Duration::milliseconds((t.end_s * 1000.0) as i64),
                    ),
                    phase: Some("Succeeded".to_string()),
                    source: ObservationSource::Argo,
                    template: self
                        .pipeline
                        .tasks
                        .iter()
                        .find(|p| p.id == t.task)
                        .map(|p| p.template.clone()),
                    input_bytes: Some(t.bytes_from_cache + t.bytes_from_origin),
                    ..TaskObservation::default()
                })
                .collect();
            let ended =
                started + chrono::Duration::milliseconds((result.makespan_s * 1000.0) as i64);
            store
                .import_runs(&[self.observation(id, started, Some(ended), observations)])
                .await?;
        }
        Ok(result)
    }

    #[allow(clippy::too_many_arguments)]
    fn result(
        &self,
        id: &RunId,
        started: DateTime<Utc>,
        compute: &BTreeMap<String, f64>,
        times: &[(String, String, measure::PodTimes)],
        reads: &[measure::GatewayRead],
        staging: Vec<report::Staging>,
        (before, after): (
            kfcache_harness::proxy::ProxyStats,
            kfcache_harness::proxy::ProxyStats,
        ),
        served: (f64, f64),
        origin_gets_cached: u64,
    ) -> Result<RepResult> {
        let seconds =
            |at: DateTime<Utc>| (at - started).num_microseconds().unwrap_or(0) as f64 / 1e6;
        let plans = self.plans(compute);
        let mut windows = Vec::new();
        let mut tasks = Vec::new();
        for (index, (task_name, instance, pod)) in times.iter().enumerate() {
            let task = self
                .pipeline
                .tasks
                .iter()
                .find(|t| &t.name == task_name || &t.id == task_name)
                .with_context(|| format!("the run has a pod of an unknown task {task_name}"))?;
            let (Some(start), Some(ready), Some(compute_end), Some(end)) =
                (pod.start, pod.main_start, pod.main_exit, pod.end)
            else {
                bail!("the pod of {task_name}({instance}) has an incomplete timeline");
            };
            let item = instance
                .split(':')
                .next()
                .and_then(|i| i.parse::<u32>().ok());
            windows.push(measure::Window {
                start,
                end: ready,
                inputs: task
                    .inputs
                    .iter()
                    .filter(|i| i.item.is_none() || i.item == item)
                    .filter_map(|i| i.source.clone())
                    .filter(|s| s.starts_with("s3://"))
                    .collect(),
            });
            let plan = plans.get(&task.name);
            let expected: u64 = plan.map_or(0, |p| p.expect.iter().map(|(_, b)| b).sum());
            let output_bytes: u64 = plan.map_or(0, |p| p.outputs.iter().map(|(_, b)| b).sum());
            tasks.push(TaskResult {
                index,
                task: task.id.clone(),
                instance: instance.clone(),
                gpus: task.gpus,
                start_s: seconds(start),
                ready_s: seconds(ready),
                compute_end_s: seconds(compute_end),
                end_s: seconds(end),
                compute_s: compute.get(&task.id).copied().unwrap_or(0.0),
                bytes_from_cache: 0,
                bytes_from_origin: expected,
                misses: task
                    .inputs
                    .iter()
                    .filter(|i| i.item.is_none() || i.item == item)
                    .count() as u32,
                output_bytes,
                write_through_error: None,
            });
        }
        if id.arm != ArmName::Nocache {
            for (task, (from_cache, misses)) in
                tasks.iter_mut().zip(measure::attribute(reads, &windows))
            {
                let expected = task.bytes_from_origin;
                task.bytes_from_cache = from_cache.min(expected);
                task.bytes_from_origin = expected - task.bytes_from_cache;
                task.misses = misses;
            }
        }
        let makespan_s = tasks.iter().map(|t| t.end_s).fold(0.0, f64::max);
        let mut result = RepResult::new(
            id.arm,
            id.rep,
            id.name.clone(),
            makespan_s,
            tasks,
            staging,
            after.bytes_down.saturating_sub(before.bytes_down),
            after.bytes_up.saturating_sub(before.bytes_up),
            after.requests.saturating_sub(before.requests),
        );
        if id.arm != ArmName::Nocache && served.0 + served.1 > 0.0 {
            // The gateway counted every byte it served, by source.
            result.hit_ratio = served.0 / (served.0 + served.1);
        }
        result.origin_gets_cached = Some(origin_gets_cached);
        Ok(result)
    }
}
