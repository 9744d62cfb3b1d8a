//! The watcher on real processes: children of the test spawned with `sleep` and `sh`, watched
//! as the benchmark watches its workers (the descendants of this process) or by command line.
//!
//! Bounds are generous (1 s: the machine running the tests may be busy with builds): these
//! tests check that starts and ends are seen and attributed right, not how fast; `kfcache bench
//! monitor` measures that. Tests that spawn children take a
//! lock: the tests watching this process's children would take any test's child for theirs.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kfcache_sidecar::watch::{
    self, Detector, DetectorChoice, DetectorKind, GpuProcess, GpuSnapshot, GpuSource, NvmlDetector,
    NvmlGpus, ProcDetector, Selector, WatchConfig, WatchEvent,
};

static CHILDREN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BOUND: Duration = Duration::from_secs(1);

fn config(selector: Selector) -> WatchConfig {
    WatchConfig {
        selector,
        detector: DetectorChoice::Proc,
        ..WatchConfig::default()
    }
}

fn own_children() -> WatchConfig {
    config(Selector::DescendantsOf(std::process::id()))
}

fn spawn(program: &str, args: &[&str]) -> (Child, Instant) {
    let at = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (child, at)
}

async fn next(detector: &mut impl Detector) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), detector.next())
        .await
        .expect("an event within 5 s")
        .unwrap()
}

/// Returns (pid, detected start, detector, already running) of a start, panicking otherwise.
fn started(event: WatchEvent) -> (u32, Instant, DetectorKind, bool) {
    match event {
        WatchEvent::Started {
            pid,
            at,
            detector,
            already_running,
            ..
        } => (pid, at.instant, detector, already_running),
        other => panic!("expected a start, got {other:?}"),
    }
}

struct Ended {
    pid: u32,
    at: Instant,
    started_at: Instant,
    detector: DetectorKind,
    exit_code: Option<i32>,
    gpu_memory_bytes: Option<u64>,
}

fn ended(event: WatchEvent) -> Ended {
    match event {
        WatchEvent::Ended {
            pid,
            at,
            started_at,
            detector,
            exit_code,
            gpu_memory_bytes,
        } => Ended {
            pid,
            at: at.instant,
            started_at: started_at.instant,
            detector,
            exit_code,
            gpu_memory_bytes,
        },
        other => panic!("expected an end, got {other:?}"),
    }
}

fn assert_within(what: &str, detected: Instant, actual: Instant) {
    let late = detected.saturating_duration_since(actual);
    let early = actual.saturating_duration_since(detected);
    assert!(
        late < BOUND && early < Duration::from_millis(20),
        "{what}: detected {late:?} late / {early:?} early"
    );
}

#[tokio::test]
async fn start_and_end_of_a_child_are_detected_and_it_is_left_to_reap() {
    let _lock = CHILDREN.lock().await;
    let mut detector = ProcDetector::new(&own_children()).unwrap();
    let (mut child, spawned) = spawn("sleep", &["0.3"]);
    let (pid, at, detector_kind, already) = started(next(&mut detector).await);
    assert_eq!(pid, child.id());
    assert_eq!(detector_kind, DetectorKind::Proc);
    assert!(!already);
    assert_within("start", at, spawned);
    let end = ended(next(&mut detector).await);
    assert_eq!(end.pid, child.id());
    assert_eq!(end.started_at, at);
    assert_eq!(end.exit_code, Some(0));
    assert_eq!(end.detector, DetectorKind::Proc);
    assert_within("end", end.at, spawned + Duration::from_millis(300));
    // The watcher peeked at the status without reaping: the owner still can.
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn exit_code_of_a_failing_child() {
    let _lock = CHILDREN.lock().await;
    let mut detector = ProcDetector::new(&own_children()).unwrap();
    let (mut child, _) = spawn("sh", &["-c", "sleep 0.1; exit 3"]);
    let (pid, ..) = started(next(&mut detector).await);
    assert_eq!(pid, child.id());
    let end = ended(next(&mut detector).await);
    assert_eq!(end.exit_code, Some(3));
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[tokio::test]
async fn a_signal_is_reported_as_128_plus_its_number() {
    let _lock = CHILDREN.lock().await;
    let mut detector = ProcDetector::new(&own_children()).unwrap();
    let (mut child, _) = spawn("sleep", &["5"]);
    started(next(&mut detector).await);
    child.kill().unwrap();
    let end = ended(next(&mut detector).await);
    assert_eq!(end.exit_code, Some(128 + 9));
    child.wait().unwrap();
}

#[tokio::test]
async fn work_that_forks_ends_when_its_last_process_exits() {
    let _lock = CHILDREN.lock().await;
    let mut detector = ProcDetector::new(&own_children()).unwrap();
    // The shell exits after 0.2 s; the worker it put in the background runs until 0.6 s.
    let (mut child, spawned) = spawn("sh", &["-c", "sleep 0.6 & sleep 0.2; exit 0"]);
    let (pid, at, ..) = started(next(&mut detector).await);
    assert_eq!(pid, child.id());
    assert_within("start", at, spawned);
    let end = ended(next(&mut detector).await);
    assert!(
        end.at >= spawned + Duration::from_millis(600),
        "ended {:?} after the spawn, before the worker did",
        end.at - spawned
    );
    assert_within("end", end.at, spawned + Duration::from_millis(600));
    assert_eq!(end.pid, child.id());
    assert_eq!(end.exit_code, Some(0), "the main process's code");
    child.wait().unwrap();
}

#[tokio::test]
async fn consecutive_runs_are_separate_starts_and_ends() {
    let _lock = CHILDREN.lock().await;
    let mut detector = ProcDetector::new(&own_children()).unwrap();
    for code in [0, 1] {
        let (mut child, spawned) = spawn("sh", &["-c", &format!("sleep 0.1; exit {code}")]);
        let (pid, at, ..) = started(next(&mut detector).await);
        assert_eq!(pid, child.id());
        assert_within("start", at, spawned);
        assert_eq!(ended(next(&mut detector).await).exit_code, Some(code));
        child.wait().unwrap();
    }
}

#[tokio::test]
async fn work_already_running_starts_when_it_started() {
    let _lock = CHILDREN.lock().await;
    let (mut child, spawned) = spawn("sleep", &["0.4"]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut detector = ProcDetector::new(&own_children()).unwrap();
    let (pid, at, _, already) = started(next(&mut detector).await);
    assert_eq!(pid, child.id());
    assert!(already);
    // /proc keeps start times in clock ticks (10 ms).
    let off = if at > spawned {
        at - spawned
    } else {
        spawned - at
    };
    assert!(off < Duration::from_millis(60), "start off by {off:?}");
    ended(next(&mut detector).await);
    child.wait().unwrap();
}

#[tokio::test]
async fn a_command_selector_sees_a_process_that_execs_into_the_work() {
    let _lock = CHILDREN.lock().await;
    // The token appears in the command line only after the exec (the quotes split it before).
    let token = format!("kfcache-watch-test-{}", std::process::id());
    let (head, tail) = token.split_at(4);
    let script = format!("sleep 0.15; exec sh -c 'sleep 0.2' {head}''{tail}");
    let mut detector =
        ProcDetector::new(&config(Selector::CommandContains(token.clone()))).unwrap();
    let (mut child, spawned) = spawn("sh", &["-c", &script]);
    let (pid, at, ..) = started(next(&mut detector).await);
    assert_eq!(pid, child.id());
    assert!(
        at >= spawned + Duration::from_millis(150),
        "matched before the exec"
    );
    assert_within("start", at, spawned + Duration::from_millis(150));
    let end = ended(next(&mut detector).await);
    assert_within("end", end.at, spawned + Duration::from_millis(350));
    child.wait().unwrap();
}

#[test]
fn nvml_fails_cleanly_where_libnvidia_ml_is_absent_and_auto_falls_back() {
    let auto = WatchConfig {
        detector: DetectorChoice::Auto,
        ..own_children()
    };
    match NvmlGpus::open() {
        Err(err) => {
            let message = err.to_string();
            assert!(message.contains("NVML"), "{message}");
            let watcher = watch::open(&auto).unwrap();
            assert_eq!(watcher.kind(), DetectorKind::Proc);
            assert_eq!(watcher.fallback_reason(), Some(message.as_str()));
            assert!(watcher.gpu_snapshot().is_none());
            assert!(watch::gpu_snapshot().is_none());
            let nvml_only = WatchConfig {
                detector: DetectorChoice::Nvml,
                ..own_children()
            };
            assert!(watch::open(&nvml_only).is_err());
        }
        Ok(gpus) => {
            // A machine with a GPU: the same calls work.
            let snapshot = gpus.snapshot().unwrap();
            assert!(snapshot.memory_total_bytes() > 0);
            let watcher = watch::open(&auto).unwrap();
            assert_eq!(watcher.kind(), DetectorKind::Nvml);
            assert!(watcher.fallback_reason().is_none());
            assert!(watch::gpu_snapshot().is_some());
        }
    }
}

/// A GPU whose compute-process list the test sets.
#[derive(Debug, Default)]
struct FakeGpu {
    processes: Mutex<Vec<GpuProcess>>,
}

impl FakeGpu {
    fn set(&self, processes: Vec<GpuProcess>) {
        *self.processes.lock().unwrap() = processes;
    }
}

impl GpuSource for FakeGpu {
    fn compute_processes(&self) -> kfcache_sidecar::Result<Vec<GpuProcess>> {
        Ok(self.processes.lock().unwrap().clone())
    }

    fn snapshot(&self) -> kfcache_sidecar::Result<GpuSnapshot> {
        Ok(GpuSnapshot {
            at: chrono::Utc::now(),
            gpus: Vec::new(),
        })
    }
}

#[tokio::test]
async fn the_gpu_detector_reports_the_gpu_phase_of_real_work_with_its_peak_memory() {
    let _lock = CHILDREN.lock().await;
    let gpu = Arc::new(FakeGpu::default());
    let config = WatchConfig {
        // Long enough for the exit 0.3 s after the GPU end, on a busy machine.
        gpu_end_grace: Duration::from_secs(3),
        // Every step of the fake GPU's 100 ms script is seen.
        gpu_busy_poll_interval: Duration::from_millis(20),
        ..own_children()
    };
    let mut detector = NvmlDetector::with_source(&config, gpu.clone()).unwrap();
    let (mut child, spawned) = spawn("sleep", &["0.6"]);
    let pid = child.id();
    let on_gpu = move |mib: u64| GpuProcess {
        gpu: 0,
        pid,
        used_memory_bytes: Some(mib << 20),
    };
    // Another container's process already on the GPU is not the work.
    let foreign = GpuProcess {
        gpu: 0,
        pid: 1,
        used_memory_bytes: Some(5 << 30),
    };
    gpu.set(vec![foreign.clone()]);
    let script = {
        let gpu = gpu.clone();
        let foreign = foreign.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((spawned + Duration::from_millis(100)).into()).await;
            gpu.set(vec![foreign.clone(), on_gpu(100)]);
            tokio::time::sleep_until((spawned + Duration::from_millis(200)).into()).await;
            gpu.set(vec![foreign.clone(), on_gpu(300)]);
            tokio::time::sleep_until((spawned + Duration::from_millis(300)).into()).await;
            gpu.set(vec![foreign]);
        })
    };
    let (started_pid, at, kind, _) = started(next(&mut detector).await);
    assert_eq!((started_pid, kind), (pid, DetectorKind::Nvml));
    assert_within("GPU start", at, spawned + Duration::from_millis(100));
    let end = ended(next(&mut detector).await);
    assert_eq!(end.detector, DetectorKind::Nvml);
    assert_eq!(end.gpu_memory_bytes, Some(300 << 20));
    assert_within("GPU end", end.at, spawned + Duration::from_millis(300));
    assert!(
        end.at < spawned + Duration::from_millis(600),
        "the GPU end, not the exit"
    );
    // It waited for the exit (within the grace period) to report the exit code.
    assert_eq!(end.exit_code, Some(0));
    script.await.unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn the_gpu_detector_reports_work_that_never_used_a_gpu_from_the_process_table() {
    let _lock = CHILDREN.lock().await;
    let mut detector =
        NvmlDetector::with_source(&own_children(), Arc::new(FakeGpu::default())).unwrap();
    let (mut child, spawned) = spawn("sleep", &["0.2"]);
    let (pid, at, kind, _) = started(next(&mut detector).await);
    assert_eq!((pid, kind), (child.id(), DetectorKind::Proc));
    assert_within("start", at, spawned);
    let end = ended(next(&mut detector).await);
    assert_eq!(end.detector, DetectorKind::Proc);
    assert_eq!(end.gpu_memory_bytes, None);
    assert_eq!(end.exit_code, Some(0));
    child.wait().unwrap();
}
