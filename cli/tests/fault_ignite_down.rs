//! The whole Ignite cluster is unusable while a pod starts, and `kfcache sidecar init` must
//! neither fail the task nor hold it: its Ignite address is
//!
//! - (a) a closed port;
//! - (b) a proxy in front of the real Ignite that accepts connections and never answers (a
//!   black hole, [`Fault::Stall`]);
//! - (c) a proxy that accepts connections and closes them at once ([`Fault::Refuse`]);
//! - (d) a proxy that goes silent while init is reading staged inputs from the cache.
//!
//! Every input is materialised from the origin with the origin's bytes, init exits 0, and it
//! ends within `--cache-timeout` plus what reading the origin takes (with slack for a loaded
//! machine). Without the bound, (b) waits for the client's connect timeout and (d) for its
//! 60 s request timeout per request, and (d) used to fail the task outright when the lookup of
//! an input in the cache failed.
//!
//! The real clusters are only read through the proxy (d stages into a namespace of its own on
//! kfcache-1 and clears it); nothing here stops a node.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/pods.rs"]
mod pods;

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kfcache_harness::proxy::{Fault, Proxy, ProxyConfig};
use pods::{Dataset, InitRun};

/// The bound the tests configure; small, so that they are quick and the bound is visible.
const BOUND: Duration = Duration::from_secs(2);

/// The tests measure elapsed time: one at a time, so that they do not slow each other down.
static SERIAL: Mutex<()> = Mutex::new(());

struct Setup {
    runtime: tokio::runtime::Runtime,
    db: tempfile::TempDir,
    endpoint: String,
    dataset: Dataset,
    spec: String,
}

impl Setup {
    fn new(shards: &[usize], models: &[usize]) -> Setup {
        let endpoint = common::env("KFCACHE_TEST_S3_ENDPOINT");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dataset = runtime.block_on(Dataset::upload(&endpoint, shards, models));
        let spec = dataset.task_spec();
        Setup {
            runtime,
            db: tempfile::tempdir().unwrap(),
            endpoint,
            dataset,
            spec,
        }
    }

    fn connection(&self, ignite: &str, namespace: &str) -> Vec<String> {
        pods::connection(ignite, &self.endpoint, namespace)
    }

    /// How long init takes when it reads everything from the origin without asking the cache:
    /// the part of the time that is not the cache's.
    fn origin_only(&self) -> Duration {
        let run = InitRun::run(
            self.db.path(),
            &self.spec,
            &self.connection("127.0.0.1:9", "unused"),
            &["--no-cache"],
        );
        let outcomes = run.check(&self.dataset);
        assert_eq!(outcomes.hits, 0);
        run.elapsed
    }

    /// The longest a run may take: the bound, plus the origin's share, plus slack.
    fn limit(&self, origin: Duration) -> Duration {
        BOUND + origin * 2 + Duration::from_secs(5)
    }

    fn proxy_to_ignite(&self, fault: Fault, config: ProxyConfig) -> Proxy {
        let ignite: SocketAddr = common::env("KFCACHE_TEST_IGNITE_1")
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .expect("KFCACHE_TEST_IGNITE_1 is host:port");
        let proxy = self.runtime.block_on(Proxy::start(ignite, config)).unwrap();
        proxy.set_fault(fault).unwrap();
        proxy
    }

    /// init against `ignite`: exit 0, every input from the origin with its bytes, within the
    /// limit.
    fn assert_served_by_origin(&self, ignite: &str, case: &str) {
        let origin = self.origin_only();
        let timeout = format!("{}s", BOUND.as_secs_f64());
        let run = InitRun::run(
            self.db.path(),
            &self.spec,
            &self.connection(ignite, &common::unique("down")),
            &["--cache-timeout", &timeout],
        );
        let outcomes = run.check(&self.dataset);
        eprintln!(
            "{case}: init took {:.2?} (origin only {origin:.2?}, bound {BOUND:?})",
            run.elapsed
        );
        assert_eq!(outcomes.hits, 0, "{case}: {outcomes:?}");
        assert_eq!(outcomes.misses.len(), self.dataset.bytes.len(), "{case}");
        assert!(
            run.stderr().contains("working without the cache"),
            "{case}: {}",
            run.stderr()
        );
        assert!(
            run.elapsed < self.limit(origin),
            "{case}: init held the task {:.2?}, more than the bound {BOUND:?} plus slack \
             (limit {:.2?}):\n{}",
            run.elapsed,
            self.limit(origin),
            run.stderr()
        );
    }
}

#[test]
fn a_closed_port_sends_every_input_to_the_origin() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let setup = Setup::new(&[150_000, 90_000, 200_001], &[1_500_000]);
    // A port nothing listens on: bound, then released.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    setup.assert_served_by_origin(&closed.to_string(), "closed port");
}

#[test]
fn a_black_hole_cluster_holds_the_task_no_longer_than_the_bound() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let setup = Setup::new(&[150_000, 90_000, 200_001], &[1_500_000]);
    let proxy = setup.proxy_to_ignite(Fault::Stall, ProxyConfig::default());
    setup.assert_served_by_origin(&proxy.addr().to_string(), "black hole");
    assert!(
        proxy.stats().connections > 0,
        "init never tried the cache: {:?}",
        proxy.stats()
    );
}

#[test]
fn a_cluster_that_refuses_connections_sends_every_input_to_the_origin() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let setup = Setup::new(&[150_000, 90_000, 200_001], &[1_500_000]);
    let proxy = setup.proxy_to_ignite(Fault::Refuse, ProxyConfig::default());
    setup.assert_served_by_origin(&proxy.addr().to_string(), "refused");
    assert!(
        proxy.stats().connections > 0,
        "init never tried the cache: {:?}",
        proxy.stats()
    );
}

#[test]
fn a_cluster_that_goes_silent_mid_read_costs_one_bound_and_no_failure() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let setup = Setup::new(&[256 << 10; 8], &[1 << 20, 1 << 20]);
    let ignite = common::env("KFCACHE_TEST_IGNITE_1");
    let namespace = common::unique("silent");
    // Staged the way users stage: kfcache prefetch of a pipeline that reads the dataset.
    let pipeline = setup.dataset.pipeline(setup.db.path());
    let mut prefetch = pods::kfcache(
        setup.db.path(),
        &[
            "prefetch",
            pipeline.to_str().unwrap(),
            "--budget",
            "1GiB",
            "--chunk-size",
            "256KiB",
        ],
    );
    prefetch.args(setup.connection(&ignite, &namespace));
    let staged = prefetch.output().unwrap();
    assert!(
        staged.status.success(),
        "prefetch failed: {}",
        String::from_utf8_lossy(&staged.stderr)
    );
    let origin = setup.origin_only();

    // Reading from the cache through a slow link, so that init is mid-read for seconds.
    let proxy = setup.proxy_to_ignite(
        Fault::None,
        ProxyConfig {
            bandwidth: Some(1_000_000.0),
            ..ProxyConfig::default()
        },
    );
    let target = tempfile::tempdir().unwrap();
    let timeout = format!("{}s", BOUND.as_secs_f64());
    let started = Instant::now();
    let child = pods::init_command(
        setup.db.path(),
        &setup.spec,
        target.path(),
        &setup.connection(&proxy.addr().to_string(), &namespace),
        &["--cache-timeout", &timeout],
    )
    .spawn()
    .unwrap();
    // Chunks are flowing: then the cluster goes silent.
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.stats().bytes_down < 600 << 10 {
        assert!(
            Instant::now() < deadline,
            "init read no chunks through the proxy in 60s: {:?}",
            proxy.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.set_fault(Fault::Stall).unwrap();
    let silent_at = Instant::now();
    let output = child.wait_with_output().unwrap();
    let after_silence = silent_at.elapsed();
    let run = InitRun {
        output,
        elapsed: started.elapsed(),
        target,
    };
    let outcomes = run.check(&setup.dataset);
    eprintln!(
        "silent mid-read: {} hits, {} misses; init ended {after_silence:.2?} after the cluster \
         went silent (origin only {origin:.2?}, bound {BOUND:?}); misses: {:?}",
        outcomes.hits,
        outcomes.misses.len(),
        outcomes.misses
    );
    assert!(
        !outcomes.misses.is_empty(),
        "the silent cluster served everything: {outcomes:?}"
    );
    assert!(
        after_silence < setup.limit(origin),
        "init held the task {after_silence:.2?} after the cluster went silent, more than the \
         bound {BOUND:?} plus slack (limit {:.2?}):\n{}",
        setup.limit(origin),
        run.stderr()
    );

    drop(proxy);
    let mut clear = pods::kfcache(setup.db.path(), &["cache", "clear"]);
    clear.args(setup.connection(&ignite, &namespace));
    assert!(clear.output().unwrap().status.success());
}
