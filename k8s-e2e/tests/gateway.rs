//! Staged inputs reach a real Argo pod through kfcache's S3 gateway without an origin GET.
//!
//! `fixtures/k8s/gateway-workflow.yaml` goes through `kfcache inject --gateway` and is submitted
//! to the real workflow-controller; the test node agent runs its pods with Argo's own
//! `argoexec`, so Argo's code decides what is downloaded and from where. The origin is moto,
//! whose access log records every request it answers:
//! - objects staged with `kfcache cache put` (one file, a directory of shards) are read by
//!   Argo's `init` through the gateway and never GET from the origin;
//! - an object changed at the origin after it was staged, and the `from:` output of an earlier
//!   task that was never staged, come from the origin;
//! - `main` sees byte-identical data at the paths it declares;
//! - with the cache away, the same workflow succeeds with every input from the origin.
//!
//! Needs `scripts/k8s.sh up`, `scripts/services.sh up` (their `env` output in the environment)
//! and the `kfcache` binary beside this test's (`cargo test --workspace` builds it, as does
//! `cargo build -p kfcache-cli`); fails with a clear message when any is missing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{diagnostics, env, prepare_namespace, run_workflow, start_agent, unique, Agent};
use object_store::aws::AmazonS3Builder;
use object_store::ObjectStore;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// The image name `kfcache inject` gives kfcache's containers here; the agent maps it to the
/// locally built binary.
const KFCACHE_IMAGE: &str = "kfcache.test/kfcache:e2e";

/// The `kfcache` binary of this build: `target/<profile>/kfcache`, next to `deps/` where this
/// test runs from, unless `KFCACHE_TEST_BIN` names one.
fn kfcache_bin() -> PathBuf {
    if let Ok(path) = std::env::var("KFCACHE_TEST_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("kfcache"))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first (`cargo build -p kfcache-cli`, or run the whole \
         workspace's tests) or name it with KFCACHE_TEST_BIN",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `kfcache gateway` process, stopped when dropped.
struct Gateway {
    child: Child,
    endpoint: String,
    admin: SocketAddr,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(work: &Path, tenant: &str, ignite: &str, origin: &str) -> Gateway {
        let port = free_port();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("admin address");
        let log = work.join(format!("gateway-{port}.log"));
        let file = std::fs::File::create(&log).expect("gateway log");
        let child = Command::new(kfcache_bin())
            .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &admin.to_string()])
            .args([
                "--k8s-namespace",
                tenant,
                "--ignite",
                ignite,
                "--s3-endpoint",
                origin,
            ])
            .args(["--cache-timeout", "2s"])
            .env("KFCACHE_CONFIG", work.join("config.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("log clone")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start kfcache gateway");
        let gateway = Gateway {
            child,
            endpoint: format!("127.0.0.1:{port}"),
            admin,
            log,
        };
        let started = Instant::now();
        while http_get(gateway.admin, "/healthz").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the gateway did not answer /healthz within 30 s:\n{}",
                std::fs::read_to_string(&gateway.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        gateway
    }

    /// The sum of a counter's samples whose line contains `labels`.
    fn counter(&self, name: &str, labels: &str) -> f64 {
        let text = http_get(self.admin, "/metrics").unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A plain HTTP GET on loopback: the body when the status is 200.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// Runs `kfcache` with the test's settings; panics with its output when it fails.
fn kfcache(work: &Path, args: &[&str]) -> String {
    let output = Command::new(kfcache_bin())
        .args(args)
        .env("KFCACHE_CONFIG", work.join("config.toml"))
        .env("KFCACHE_DB", work.join("kfcache.db"))
        .output()
        .expect("run kfcache");
    assert!(
        output.status.success(),
        "kfcache {} failed: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::from_entropy().fill(&mut data[..]);
    data
}

fn digest(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// How many GETs of `bucket/key` the origin's access log holds past `offset` (moto logs
/// `"GET /bucket/key HTTP/1.1" 200`; listings are `GET /bucket/?…` and do not match).
fn origin_gets(log: &Path, offset: usize, bucket: &str, key: &str) -> usize {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(text.get(offset..).unwrap_or_default());
    let request = format!("GET /{bucket}/{key}");
    text.lines()
        .filter(|line| {
            line.match_indices(&request)
                .any(|(at, _)| matches!(line.as_bytes().get(at + request.len()), Some(b' ' | b'?')))
        })
        .count()
}

/// The injected fixture for this run, pinned to the test's node.
fn injected_workflow(
    s: &Setup,
    prefix: &str,
    gateway: &str,
    repository: &Path,
    pod_ignite: &str,
) -> serde_json::Value {
    let work = s.work.path();
    let origin_host = s.endpoint.trim_start_matches("http://");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/k8s/gateway-workflow.yaml");
    let text = std::fs::read_to_string(&fixture)
        .expect("fixture")
        .replace("ORIGIN_ENDPOINT", origin_host)
        .replace("BUCKET", &s.bucket)
        .replace("PREFIX", prefix);
    let input = work.join(format!("workflow-{gateway}.yaml").replace(':', "-"));
    std::fs::write(&input, text).expect("write workflow");
    let output = input.with_extension("injected.yaml");
    kfcache(
        work,
        &[
            "inject",
            input.to_str().expect("path"),
            "--gateway",
            gateway,
            "--artifact-repository",
            repository.to_str().expect("path"),
            "--image",
            KFCACHE_IMAGE,
            "--pod-ignite",
            pod_ignite,
            "-o",
            output.to_str().expect("path"),
        ],
    );
    let text = std::fs::read_to_string(&output).expect("injected workflow");
    let mut workflow: serde_json::Value = serde_yaml::from_str(&text).expect("injected YAML");
    let spec = &mut workflow["spec"];
    spec["nodeSelector"] = serde_json::json!({"kubernetes.io/hostname": s.node});
    spec["tolerations"] = serde_json::json!([
        {"key": common::TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
    ]);
    workflow
}

/// `train`'s output parameter `digests` (`sha256sum` lines) as (file, digest) pairs.
fn reported_digests(workflow: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let nodes = workflow["status"]["nodes"]
        .as_object()
        .ok_or("the workflow has no nodes")?;
    let train = nodes
        .values()
        .find(|n| n["displayName"] == "train")
        .ok_or("the workflow has no node train")?;
    let text = train["outputs"]["parameters"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "digests"))
        .and_then(|p| p["value"].as_str())
        .ok_or("train has no output parameter digests")?;
    let mut pairs: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let (sum, file) = l.split_once("  ")?;
            Some((file.to_string(), sum.to_string()))
        })
        .collect();
    pairs.sort();
    Ok(pairs)
}

struct Setup {
    client: kube::Client,
    namespace: String,
    node: String,
    work: tempfile::TempDir,
    agent: Agent,
    endpoint: String,
    bucket: String,
    ignite: String,
    moto_log: PathBuf,
}

async fn setup(name: &str) -> Setup {
    let client = common::client().await;
    let [argo_flag, argo_mapping] = common::argoexec_image_bin();
    let endpoint = env("KFCACHE_TEST_S3_ENDPOINT", "the S3 server");
    let bucket = env("KFCACHE_TEST_S3_BUCKET", "the S3 server");
    let ignite = env("KFCACHE_TEST_IGNITE_1", "the 1-node Ignite cluster");
    let moto_log = PathBuf::from(env("KFCACHE_TEST_S3_LOG", "the S3 server's access log"));
    assert!(moto_log.is_file(), "{} does not exist", moto_log.display());
    let kfcache_dir = kfcache_bin()
        .parent()
        .expect("kfcache's directory")
        .to_path_buf();
    let namespace = unique(name);
    let node = format!("kfcache-{namespace}");
    prepare_namespace(&client, &namespace, &endpoint, &bucket).await;
    common::node(&client, &node).await;
    let work = tempfile::tempdir().expect("tempdir");
    // An empty config file: the test's flags and environment say everything.
    std::fs::write(work.path().join("config.toml"), "").expect("config file");
    let agent = start_agent(
        &node,
        work.path(),
        &[
            argo_flag,
            argo_mapping,
            "--image-bin".into(),
            format!("kfcache.test/kfcache={}", kfcache_dir.display()),
        ],
    );
    Setup {
        client,
        namespace,
        node,
        work,
        agent,
        endpoint,
        bucket,
        ignite,
        moto_log,
    }
}

/// The objects of one run under `prefix`: (key, bytes).
fn objects(prefix: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        (format!("{prefix}/raw.bin"), random_bytes(64 * 1024)),
        (
            format!("{prefix}/dataset.bin"),
            random_bytes(6 * 1024 * 1024 + 17),
        ),
        (format!("{prefix}/shards/0.bin"), random_bytes(300 * 1024)),
        (format!("{prefix}/shards/1.bin"), random_bytes(1024 * 1024)),
        (format!("{prefix}/shards/2.bin"), random_bytes(5)),
        (format!("{prefix}/extra.bin"), random_bytes(200 * 1024)),
    ]
}

/// What `train` must report: each input's digest under the name it has in `/data`.
fn expected_digests(prefix: &str, objects: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    let find = |key: &str| {
        objects
            .iter()
            .find(|(k, _)| k == &format!("{prefix}/{key}"))
            .map(|(_, v)| v.clone())
            .expect("object")
    };
    let raw = find("raw.bin");
    let mut features = format!("{}\n", digest(&raw)).into_bytes();
    features.extend_from_slice(&raw);
    let mut pairs = vec![
        ("features.bin".to_string(), digest(&features)),
        ("dataset.bin".to_string(), digest(&find("dataset.bin"))),
        ("extra.bin".to_string(), digest(&find("extra.bin"))),
    ];
    for shard in 0..3 {
        let name = format!("shards/{shard}.bin");
        pairs.push((name.clone(), digest(&find(&name))));
    }
    pairs.sort();
    pairs
}

impl Setup {
    fn store(&self) -> object_store::aws::AmazonS3 {
        AmazonS3Builder::from_env()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.bucket)
            .with_allow_http(true)
            .with_region("us-east-1")
            .build()
            .expect("S3 client")
    }

    async fn put(&self, objects: &[(String, Vec<u8>)]) {
        let store = self.store();
        for (key, data) in objects {
            store
                .put(&key.as_str().into(), data.clone().into())
                .await
                .expect("put object");
        }
    }
}

/// One injected run of the fixture: its name, how it ended, its pods, and where the origin's
/// access log stood when it was submitted.
struct Run {
    name: String,
    outcome: Result<serde_json::Value, (String, Option<serde_json::Value>)>,
    pods: Vec<k8s_openapi::api::core::v1::Pod>,
    log_offset: usize,
    started: Instant,
}

impl Run {
    /// Injects the fixture for `gateway` (whose pods' sidecars reach the cache at
    /// `pod_ignite`), submits it and waits for its end.
    async fn submit(s: &Setup, prefix: &str, gateway: &Gateway, pod_ignite: &str) -> Run {
        let repository = s.work.path().join("repository.yaml");
        std::fs::write(&repository, common::repository_yaml(&s.endpoint, &s.bucket))
            .expect("repository file");
        let workflow = injected_workflow(s, prefix, &gateway.endpoint, &repository, pod_ignite);
        let log_offset = std::fs::metadata(&s.moto_log)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let started = Instant::now();
        let (name, outcome) =
            run_workflow(&s.client, &s.namespace, workflow, Duration::from_secs(180)).await;
        // moto writes its access log line after the response; give the last ones a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pods = common::workflow_pods(&s.client, &s.namespace, &name).await;
        Run {
            name,
            outcome,
            pods,
            log_offset,
            started,
        }
    }

    /// GETs of `prefix/key` the origin answered during the run.
    fn origin_gets(&self, s: &Setup, prefix: &str, key: &str) -> usize {
        origin_gets(
            &s.moto_log,
            self.log_offset,
            &s.bucket,
            &format!("{prefix}/{key}"),
        )
    }

    /// The succeeded workflow whose `main` saw exactly `expected`, or what went wrong.
    fn checked(
        &self,
        expected: &[(String, String)],
    ) -> Result<serde_json::Value, (String, Option<serde_json::Value>)> {
        let wf = self.outcome.clone()?;
        match reported_digests(&wf) {
            Ok(reported) if reported == expected => Ok(wf),
            Ok(reported) => Err((
                format!(
                    "main saw other bytes than the origin holds:\n  reported {reported:?}\n  expected {expected:?}"
                ),
                Some(wf),
            )),
            Err(message) => Err((message, Some(wf))),
        }
    }

    /// Removes the test's node, then fails with every log when `checked` is an error.
    async fn finish(
        &self,
        s: &Setup,
        gateway: &Gateway,
        checked: Result<(), (String, Option<serde_json::Value>)>,
    ) {
        common::remove_node(&s.client, &s.node).await;
        if let Err((message, last)) = checked {
            panic!(
                "{message} (after {:?})\n=== gateway log\n{}\n{}",
                self.started.elapsed(),
                std::fs::read_to_string(&gateway.log).unwrap_or_default(),
                diagnostics(&s.agent, last.as_ref(), &self.pods)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_inputs_reach_argo_through_the_gateway_without_an_origin_get() {
    let s = setup("gw").await;
    let prefix = format!("kfcache-k8s-e2e/{}", s.namespace);
    let mut objects = objects(&prefix);
    s.put(&objects).await;
    // Stage the dataset, the shards and `extra` for this namespace, as `kfcache prefetch` would.
    let work = s.work.path();
    let staged = [
        "dataset.bin",
        "shards/0.bin",
        "shards/1.bin",
        "shards/2.bin",
    ];
    for key in staged.iter().chain(&["extra.bin"]) {
        let uri = format!("s3://{}/{prefix}/{key}", s.bucket);
        kfcache(
            work,
            &[
                "cache",
                "put",
                &uri,
                "--ignite",
                &s.ignite,
                "--k8s-namespace",
                &s.namespace,
                "--s3-endpoint",
                &s.endpoint,
            ],
        );
    }
    // `extra` changes at the origin after it was staged: the cached copy is stale.
    let extra = objects
        .iter_mut()
        .find(|(k, _)| k.ends_with("/extra.bin"))
        .expect("extra");
    extra.1 = random_bytes(150 * 1024 + 3);
    s.put(std::slice::from_ref(extra)).await;
    let expected = expected_digests(&prefix, &objects);

    let gateway = Gateway::start(work, &s.namespace, &s.ignite, &s.endpoint);
    let run = Run::submit(&s, &prefix, &gateway, &s.ignite).await;
    let hits = gateway.counter("kfcache_gateway_cache_hits", "GetObject");
    let from_cache = gateway.counter("kfcache_gateway_served_bytes", "source=\"cache\"");
    let stale_misses = gateway.counter("kfcache_gateway_cache_misses", "stale");
    let staged_bytes: usize = objects
        .iter()
        .filter(|(k, _)| staged.iter().any(|key| k.ends_with(&format!("/{key}"))))
        .map(|(_, v)| v.len())
        .sum();
    let checked = run.checked(&expected).and_then(|wf| {
        let fail = |message: String| Err((message, Some(wf.clone())));
        for key in staged {
            let gets = run.origin_gets(&s, &prefix, key);
            if gets != 0 {
                return fail(format!("{key} was staged, yet the origin answered {gets} GET(s) for it"));
            }
        }
        if run.origin_gets(&s, &prefix, "extra.bin") == 0 {
            return fail("the changed object was not read from the origin".into());
        }
        if run.origin_gets(&s, &prefix, "raw.bin") == 0 {
            return fail("prepare's input was not read from the origin (is the log read right?)".into());
        }
        if hits < 4.0 || from_cache < staged_bytes as f64 || stale_misses < 1.0 {
            return fail(format!(
                "the gateway's metrics disagree: {hits} GetObject hits (want ≥ 4), {from_cache} \
                 bytes from the cache (want ≥ {staged_bytes}), {stale_misses} stale misses (want ≥ 1)"
            ));
        }
        Ok(())
    });
    run.finish(&s, &gateway, checked).await;
    eprintln!(
        "workflow {} succeeded in {:?}: {hits} hits, {from_cache} bytes from the cache, no origin GET of a staged object",
        run.name,
        run.started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_away_the_injected_workflow_reads_the_origin_and_succeeds() {
    let s = setup("gw-down").await;
    let prefix = format!("kfcache-k8s-e2e/{}", s.namespace);
    let objects = objects(&prefix);
    s.put(&objects).await;
    let expected = expected_digests(&prefix, &objects);
    // Nothing listens on this port: the gateway and the pods' sidecars find no cache.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::start(s.work.path(), &s.namespace, &nowhere, &s.endpoint);
    let run = Run::submit(&s, &prefix, &gateway, &nowhere).await;
    let checked = run.checked(&expected).and_then(|wf| {
        if run.origin_gets(&s, &prefix, "dataset.bin") == 0 {
            return Err((
                "with no cache, the dataset did not come from the origin".to_string(),
                Some(wf),
            ));
        }
        Ok(())
    });
    run.finish(&s, &gateway, checked).await;
    eprintln!(
        "workflow {} succeeded without a cache in {:?}",
        run.name,
        run.started.elapsed()
    );
}
