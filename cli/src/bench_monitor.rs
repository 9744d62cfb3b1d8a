//! `kfcache bench monitor`: how late `kfcache sidecar watch` sees work start and end, and what
//! it costs while nothing runs.
//!
//! The watcher is the library's process-table detector ([`ProcDetector`]) watching this
//! process's children ([`Selector::DescendantsOf`]). It runs on a thread of its own, which does
//! all its work (polling, scanning, waiting on exits), so its CPU time is that thread's
//! ([`ProcDetector::cpu_time`], from `schedstat`, in nanoseconds).
//!
//! 1. Idle: the watcher runs `--idle-seconds` with no work; its CPU time over the wall time is
//!    the idle cost (goal: under 0.5 % of one core).
//! 2. Work: `--workers` `sleep` processes run one after another, each for 200–800 ms with a
//!    100–300 ms gap (seeded). The start error is the detected start minus the instant just
//!    before `spawn`; the end error is the detected end minus the instant a thread blocked in
//!    `waitpid` on the worker returned (goal: p50 within 50 ms). Both observers wake on the same
//!    exit, so an end seen first gives a negative error in the table; the summary counts it as
//!    zero, the true error being non-negative.
//!
//! The last line is machine-readable:
//! `monitor-bench: start_err_ms_p50=<f> start_err_ms_p99=<f> end_err_ms_p50=<f> idle_cpu_pct=<f>`.

use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use kfcache_sidecar::watch::{DetectorChoice, ProcDetector, Selector, WatchConfig, WatchEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Args)]
pub struct MonitorBenchArgs {
    /// Worker processes, run one after another.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub workers: usize,
    /// Seconds the watcher runs with no work, to measure its idle CPU.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub idle_seconds: f64,
    /// Seed of the workers' durations and gaps.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The watcher's poll interval in milliseconds (default: the watcher's own, 25).
    #[arg(long, value_name = "MS")]
    pub poll_ms: Option<u64>,
}

/// One worker's figures.
#[derive(Debug)]
struct Worker {
    pid: u32,
    work: Duration,
    start_err_ms: f64,
    end_err_ms: f64,
}

pub async fn run(args: MonitorBenchArgs) -> Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    if !(args.idle_seconds.is_finite() && args.idle_seconds > 0.0) {
        bail!("--idle-seconds must be a positive number of seconds");
    }
    let mut config = WatchConfig {
        selector: Selector::DescendantsOf(std::process::id()),
        detector: DetectorChoice::Proc,
        ..WatchConfig::default()
    };
    if let Some(ms) = args.poll_ms {
        if ms == 0 {
            bail!("--poll-ms must be at least 1");
        }
        config.poll_interval = Duration::from_millis(ms);
    }
    let mut watcher = ProcDetector::new(&config).context("cannot start the watcher")?;
    eprintln!(
        "bench monitor: watcher polling every {} ms; {:.1} s idle, then {} workers",
        config.poll_interval.as_millis(),
        args.idle_seconds,
        args.workers
    );
    // The thread records its id as it starts.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cpu_time = |watcher: &ProcDetector| {
        watcher
            .cpu_time()
            .context("no CPU time for the watcher's thread (/proc/self/task/TID/schedstat)")
    };

    // 1. Idle.
    let idle_wall = Duration::from_secs_f64(args.idle_seconds);
    let cpu_before = cpu_time(&watcher)?;
    let wall_before = Instant::now();
    if let Ok(event) = tokio::time::timeout(idle_wall, watcher.next()).await {
        bail!("the watcher reported work while none ran: {event:?}");
    }
    let idle_elapsed = wall_before.elapsed();
    let cpu_idle = cpu_time(&watcher)?.saturating_sub(cpu_before);
    let idle_cpu_pct = percent(cpu_idle, idle_elapsed);

    // 2. Work.
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut workers = Vec::with_capacity(args.workers);
    let cpu_before = cpu_time(&watcher)?;
    let wall_before = Instant::now();
    for _ in 0..args.workers {
        let work = Duration::from_millis(rng.gen_range(200..=800));
        let gap = Duration::from_millis(rng.gen_range(100..=300));
        workers.push(run_worker(&mut watcher, work).await?);
        tokio::time::sleep(gap).await;
    }
    let busy_elapsed = wall_before.elapsed();
    let cpu_busy = cpu_time(&watcher)?.saturating_sub(cpu_before);
    drop(watcher);

    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "worker",
        "pid",
        "work ms",
        "start error ms",
        "end error ms",
    ]);
    for (i, w) in workers.iter().enumerate() {
        table.add_row([
            (i + 1).to_string(),
            w.pid.to_string(),
            w.work.as_millis().to_string(),
            format!("{:.3}", w.start_err_ms),
            format!("{:.3}", w.end_err_ms),
        ]);
    }
    println!("{table}");
    let starts: Vec<f64> = workers.iter().map(|w| w.start_err_ms.max(0.0)).collect();
    let ends: Vec<f64> = workers.iter().map(|w| w.end_err_ms.max(0.0)).collect();
    let start_p50 = percentile(&starts, 50.0);
    let start_p99 = percentile(&starts, 99.0);
    let end_p50 = percentile(&ends, 50.0);
    let end_p99 = percentile(&ends, 99.0);
    println!(
        "start error: p50 {start_p50:.3} ms, p99 {start_p99:.3} ms, max {:.3} ms",
        percentile(&starts, 100.0)
    );
    println!(
        "end error:   p50 {end_p50:.3} ms, p99 {end_p99:.3} ms, max {:.3} ms",
        percentile(&ends, 100.0)
    );
    println!(
        "watcher CPU: idle {:.3} ms in {:.1} s = {idle_cpu_pct:.3} % of one core; \
         with work {:.3} ms in {:.1} s = {:.3} %",
        cpu_idle.as_secs_f64() * 1e3,
        idle_elapsed.as_secs_f64(),
        cpu_busy.as_secs_f64() * 1e3,
        busy_elapsed.as_secs_f64(),
        percent(cpu_busy, busy_elapsed),
    );
    println!(
        "goals: start and end p50 <= 50 ms: {}; idle CPU < 0.5 %: {}",
        met(start_p50 <= 50.0 && end_p50 <= 50.0),
        met(idle_cpu_pct < 0.5)
    );
    println!(
        "monitor-bench: start_err_ms_p50={start_p50:.3} start_err_ms_p99={start_p99:.3} \
         end_err_ms_p50={end_p50:.3} idle_cpu_pct={idle_cpu_pct:.3}"
    );
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// Spawns one `sleep` worker, waits for the watcher to report its start and end, and measures
/// both errors.
async fn run_worker(watcher: &mut ProcDetector, work: Duration) -> Result<Worker> {
    let spawned_at = Instant::now();
    let mut child = Command::new("sleep")
        .arg(format!("{:.3}", work.as_secs_f64()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot spawn a `sleep` worker")?;
    let pid = child.id();
    let reaper: JoinHandle<std::io::Result<Instant>> = std::thread::spawn(move || {
        child.wait()?;
        Ok(Instant::now())
    });
    let timeout = work + Duration::from_secs(10);
    let started = match next_event(watcher, timeout).await? {
        WatchEvent::Started { pid: seen, at, .. } if seen == pid => at.instant,
        other => bail!("expected the start of worker {pid}, got {other:?}"),
    };
    let ended = match next_event(watcher, timeout).await? {
        WatchEvent::Ended { pid: seen, at, .. } if seen == pid => at.instant,
        other => bail!("expected the end of worker {pid}, got {other:?}"),
    };
    let exited_at = tokio::task::spawn_blocking(move || reaper.join())
        .await
        .context("waiting for the reaper thread")?
        .map_err(|_| anyhow!("the thread waiting for worker {pid} panicked"))?
        .with_context(|| format!("waiting for worker {pid} failed"))?;
    Ok(Worker {
        pid,
        work,
        start_err_ms: signed_ms(started, spawned_at),
        end_err_ms: signed_ms(ended, exited_at),
    })
}

async fn next_event(watcher: &mut ProcDetector, timeout: Duration) -> Result<WatchEvent> {
    tokio::time::timeout(timeout, watcher.next())
        .await
        .map_err(|_| anyhow!("the watcher reported nothing in {timeout:?}"))?
        .context("the watcher failed")
}

/// `a - b` in milliseconds, negative when `a` is earlier.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64() * 1e3
    } else {
        -(b - a).as_secs_f64() * 1e3
    }
}

fn percent(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
}

/// The `q`-th percentile of `values` (`q` in 0..=100), as every kfcache benchmark computes it
/// ([`kfcache_harness::stats::percentile`]); 0 for none.
fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    kfcache_harness::stats::percentile(values, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_and_none_is_zero() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.5);
        assert!((percentile(&values, 99.0) - 99.01).abs() < 1e-9);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn signed_milliseconds() {
        let a = Instant::now();
        let b = a + Duration::from_millis(5);
        assert!((signed_ms(b, a) - 5.0).abs() < 1e-9);
        assert!((signed_ms(a, b) + 5.0).abs() < 1e-9);
    }
}
