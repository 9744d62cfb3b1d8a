//! The GPU side: NVML's compute-process list as a start/end detector, and the node's GPU memory
//! and utilisation for the node report.
//!
//! NVML is reached through [`GpuSource`], a trait at the I/O seam, so the logic (diffing the
//! process list over time, start and end, peak memory) runs in tests against a fake source.
//! [`NvmlGpus`] is the real one: `nvml-wrapper` loads `libnvidia-ml.so` at run time, and
//! [`NvmlGpus::open`] fails with [`Error::Monitor`] where the library or a GPU is absent.
//!
//! Unlike the paper's monitor, which queries the GPU process list every 0.2 s whether or not a
//! task runs, [`NvmlDetector`] queries NVML only while a work process is alive: the process
//! table ([`ProcDetector`]) tells it a candidate started, then it polls the GPU list every
//! `gpu_poll_interval` (20 ms) until the GPU process appears, and every `gpu_busy_poll_interval`
//! (100 ms) while it runs, for its memory and its disappearance (when the GPU process is a
//! process of ours, its exit, seen at once through the process table, usually ends it first).
//! Idle, it costs what the process-table detector costs.
//!
//! Which GPU processes are the task's: NVML reports pids, which match the pod's pids where the
//! driver translates them into the caller's pid namespace (or the pod shares the host's). A pid
//! that is a live work process is ours; a pid visible here that is not work (another container's
//! process) is not; a pid not visible at all (a host pid) is ours unless it was already on the
//! GPU when our work started. With the device plugin a container's GPUs are its own, so the
//! last rule only errs when GPUs are shared.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;
use tokio::time::{Interval, MissedTickBehavior};

use super::process::ProcDetector;
use super::procfs::{self, PROC};
use super::{Detector, DetectorKind, Stamp, WatchConfig, WatchEvent};
use crate::error::{Error, Result};

/// One process on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuProcess {
    /// The GPU's NVML index.
    pub gpu: u32,
    pub pid: u32,
    /// GPU memory the process uses, where the driver reports it.
    pub used_memory_bytes: Option<u64>,
}

/// One GPU's memory and utilisation.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuState {
    pub index: u32,
    pub name: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    /// Percent of the last sample period in which a kernel ran.
    pub utilization_pct: u32,
}

/// The node's GPUs at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSnapshot {
    pub at: chrono::DateTime<chrono::Utc>,
    pub gpus: Vec<GpuState>,
}

impl GpuSnapshot {
    pub fn memory_total_bytes(&self) -> u64 {
        self.gpus.iter().map(|g| g.memory_total_bytes).sum()
    }

    pub fn memory_used_bytes(&self) -> u64 {
        self.gpus.iter().map(|g| g.memory_used_bytes).sum()
    }

    /// The busiest GPU's utilisation, percent (as `NodeReport::gpu_utilization_pct` wants).
    pub fn max_utilization_pct(&self) -> f64 {
        self.gpus
            .iter()
            .map(|g| f64::from(g.utilization_pct))
            .fold(0.0, f64::max)
    }
}

/// Where GPU processes and GPU state come from. Calls block (NVML calls are `ioctl`s into the
/// driver, about a millisecond); [`NvmlDetector`] makes them on tokio's blocking pool.
pub trait GpuSource: Send + Sync + fmt::Debug {
    /// Compute processes on every GPU; a process on two GPUs appears twice.
    fn compute_processes(&self) -> Result<Vec<GpuProcess>>;

    /// Memory and utilisation of every GPU.
    fn snapshot(&self) -> Result<GpuSnapshot>;
}

/// NVML, loaded at run time.
pub struct NvmlGpus {
    nvml: Nvml,
    devices: u32,
}

impl fmt::Debug for NvmlGpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmlGpus")
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

fn nvml_error(context: &str) -> impl FnOnce(nvml_wrapper::error::NvmlError) -> Error + '_ {
    move |err| Error::Monitor(format!("NVML: {context}: {err}"))
}

impl NvmlGpus {
    /// Loads `libnvidia-ml.so` and initialises NVML. Fails cleanly ([`Error::Monitor`]) where the
    /// library is absent or sees no GPU. Initialising takes up to a second on some drivers:
    /// call it from a blocking context.
    pub fn open() -> Result<NvmlGpus> {
        let nvml = Nvml::init().map_err(nvml_error("cannot load or initialise libnvidia-ml"))?;
        let devices = nvml.device_count().map_err(nvml_error("device count"))?;
        if devices == 0 {
            return Err(Error::Monitor("NVML sees no GPU".into()));
        }
        Ok(NvmlGpus { nvml, devices })
    }
}

impl GpuSource for NvmlGpus {
    fn compute_processes(&self) -> Result<Vec<GpuProcess>> {
        let mut out = Vec::new();
        for index in 0..self.devices {
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(nvml_error("device"))?;
            let processes = device
                .running_compute_processes()
                .map_err(nvml_error("compute processes"))?;
            out.extend(processes.into_iter().map(|p| GpuProcess {
                gpu: index,
                pid: p.pid,
                used_memory_bytes: match p.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => Some(bytes),
                    UsedGpuMemory::Unavailable => None,
                },
            }));
        }
        Ok(out)
    }

    fn snapshot(&self) -> Result<GpuSnapshot> {
        let at = chrono::Utc::now();
        let mut gpus = Vec::new();
        for index in 0..self.devices {
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(nvml_error("device"))?;
            let memory = device.memory_info().map_err(nvml_error("memory"))?;
            let utilization = device
                .utilization_rates()
                .map_err(nvml_error("utilisation"))?;
            gpus.push(GpuState {
                index,
                name: device.name().unwrap_or_default(),
                memory_total_bytes: memory.total,
                memory_used_bytes: memory.used,
                utilization_pct: utilization.gpu,
            });
        }
        Ok(GpuSnapshot { at, gpus })
    }
}

/// The node's GPUs now, through an NVML handle opened on first use and kept for the process's
/// life. `None` where NVML is absent or sees no GPU (why is logged once), or the query failed.
/// Blocks: call it from a blocking context.
pub fn gpu_snapshot() -> Option<GpuSnapshot> {
    static NVML: OnceLock<Option<NvmlGpus>> = OnceLock::new();
    let gpus = NVML.get_or_init(|| match NvmlGpus::open() {
        Ok(gpus) => Some(gpus),
        Err(err) => {
            tracing::info!("no GPU state for the node report: {err}");
            None
        }
    });
    match gpus.as_ref()?.snapshot() {
        Ok(snapshot) => Some(snapshot),
        Err(err) => {
            tracing::warn!("GPU snapshot failed: {err}");
            None
        }
    }
}

/// Whose a GPU process is, as far as this pod can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A live work process.
    Work,
    /// Visible here, and not work.
    Foreign,
    /// Not in this pid namespace.
    Invisible,
}

/// A change in the task's GPU processes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GpuTransition {
    Started {
        pid: u32,
        at: Stamp,
    },
    Ended {
        pid: u32,
        started_at: Stamp,
        at: Stamp,
        peak_memory_bytes: Option<u64>,
    },
}

#[derive(Debug)]
struct GpuEpisode {
    pid: u32,
    started: Stamp,
    pids: BTreeSet<u32>,
    peak: Option<u64>,
}

/// Diffs successive GPU process lists into the task's GPU start and end, with the peak of the
/// memory its processes used together.
#[derive(Debug, Default)]
pub(crate) struct GpuTracker {
    baseline: HashSet<u32>,
    active: Option<GpuEpisode>,
}

impl GpuTracker {
    /// Work began: invisible processes already on the GPU are someone else's.
    pub fn arm(&mut self, current: &[GpuProcess], owner: impl Fn(u32) -> Owner) {
        self.baseline = current
            .iter()
            .filter(|p| owner(p.pid) == Owner::Invisible)
            .map(|p| p.pid)
            .collect();
    }

    /// Whether the task is on a GPU now.
    pub fn active(&self) -> bool {
        self.active.is_some()
    }

    /// One look at the GPU process list at `at`.
    pub fn observe(
        &mut self,
        at: Stamp,
        list: &[GpuProcess],
        owner: impl Fn(u32) -> Owner,
    ) -> Option<GpuTransition> {
        let ours: Vec<&GpuProcess> = list
            .iter()
            .filter(|p| match owner(p.pid) {
                Owner::Work => true,
                Owner::Foreign => false,
                Owner::Invisible => !self.baseline.contains(&p.pid),
            })
            .collect();
        let pids: BTreeSet<u32> = ours.iter().map(|p| p.pid).collect();
        let memory = ours
            .iter()
            .filter_map(|p| p.used_memory_bytes)
            .reduce(|a, b| a.saturating_add(b));
        match &mut self.active {
            None if pids.is_empty() => None,
            None => {
                let pid = ours.first().map(|p| p.pid).unwrap_or_default();
                self.active = Some(GpuEpisode {
                    pid,
                    started: at,
                    pids,
                    peak: memory,
                });
                Some(GpuTransition::Started { pid, at })
            }
            Some(episode) if !pids.is_empty() => {
                episode.pids = pids;
                episode.peak = episode.peak.max(memory);
                None
            }
            Some(_) => self.finish(at),
        }
    }

    /// Ends the GPU episode now (its processes exited).
    pub fn finish(&mut self, at: Stamp) -> Option<GpuTransition> {
        let episode = self.active.take()?;
        Some(GpuTransition::Ended {
            pid: episode.pid,
            started_at: episode.started,
            at,
            peak_memory_bytes: episode.peak,
        })
    }
}

/// The work the process table reported, while the GPU detector watches for its GPU processes.
#[derive(Debug)]
struct Candidate {
    started: WatchEvent,
    gpu_seen: bool,
    /// A GPU end waiting up to the grace period for the process's exit code.
    gpu_ended: Option<(GpuTransition, Instant)>,
}

/// Detects the work's start and end as its GPU processes appearing and disappearing. See the
/// module documentation. Work that never touched a GPU is reported by the process table's
/// times, with [`DetectorKind::Proc`], once it ends.
#[derive(Debug)]
pub struct NvmlDetector {
    procs: ProcDetector,
    gpus: Arc<dyn GpuSource>,
    tracker: GpuTracker,
    poll_interval: Duration,
    busy_poll_interval: Duration,
    grace: Duration,
    ticker: Option<Interval>,
    work: Option<Candidate>,
    pending: VecDeque<WatchEvent>,
}

impl NvmlDetector {
    /// With NVML; fails where NVML is absent (see [`NvmlGpus::open`]).
    pub fn open(config: &WatchConfig) -> Result<NvmlDetector> {
        let gpus = NvmlGpus::open()?;
        NvmlDetector::with_source(config, Arc::new(gpus))
    }

    /// With any GPU source (tests use a fake one).
    pub fn with_source(config: &WatchConfig, gpus: Arc<dyn GpuSource>) -> Result<NvmlDetector> {
        if config.gpu_poll_interval.is_zero() {
            return Err(Error::Monitor(
                "the GPU poll interval must be positive".into(),
            ));
        }
        Ok(NvmlDetector {
            procs: ProcDetector::new(config)?,
            gpus,
            tracker: GpuTracker::default(),
            poll_interval: config.gpu_poll_interval,
            busy_poll_interval: config.gpu_busy_poll_interval.max(config.gpu_poll_interval),
            grace: config.gpu_end_grace,
            ticker: None,
            work: None,
            pending: VecDeque::new(),
        })
    }

    /// The GPU source, for [`GpuSource::snapshot`] in the node report.
    pub fn gpus(&self) -> &Arc<dyn GpuSource> {
        &self.gpus
    }

    /// The next start or end. Cancel-safe like [`ProcDetector::next`].
    pub async fn next(&mut self) -> Result<WatchEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let Some(work) = &self.work else {
                let event = self.procs.next().await?;
                self.on_process_event(event).await?;
                continue;
            };
            let grace_until = work.gpu_ended.as_ref().map(|(_, until)| *until);
            // Fast until the GPU process appears; slower while it runs (its end usually comes
            // with its exit, which the process table sees at once).
            let period = if self.tracker.active() {
                self.busy_poll_interval
            } else {
                self.poll_interval
            };
            if self.ticker.as_ref().is_some_and(|t| t.period() != period) {
                self.ticker = None;
            }
            let ticker = self.ticker.get_or_insert_with(|| {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                ticker
            });
            let grace = async {
                match grace_until {
                    Some(until) => tokio::time::sleep_until(until.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                event = self.procs.next() => {
                    let event = event?;
                    self.on_process_event(event).await?;
                }
                () = grace => self.flush_gpu_end(None),
                _ = ticker.tick() => self.poll_gpus().await?,
            }
        }
    }

    async fn on_process_event(&mut self, event: WatchEvent) -> Result<()> {
        match event {
            WatchEvent::Started {
                already_running, ..
            } => {
                self.work = Some(Candidate {
                    started: event,
                    gpu_seen: false,
                    gpu_ended: None,
                });
                let list = self.list_gpu_processes().await?;
                if !already_running {
                    let procs = &self.procs;
                    self.tracker.arm(&list, |pid| owner(procs, pid));
                }
                self.observe(Stamp::now(), &list);
            }
            WatchEvent::Ended {
                at,
                exit_code,
                detector: _,
                ..
            } => {
                if let Some(transition) = self.tracker.finish(at) {
                    // Still on the GPU at the last poll: it ended with its processes.
                    self.emit_gpu_end(transition, exit_code);
                } else if self.work.as_ref().is_some_and(|w| w.gpu_ended.is_some()) {
                    self.flush_gpu_end(exit_code);
                } else if let Some(work) = &self.work {
                    if !work.gpu_seen {
                        // Never on a GPU: report what the process table saw.
                        self.pending.push_back(work.started.clone());
                        self.pending.push_back(event);
                    }
                }
                self.work = None;
                self.ticker = None;
            }
        }
        Ok(())
    }

    async fn list_gpu_processes(&self) -> Result<Vec<GpuProcess>> {
        let gpus = Arc::clone(&self.gpus);
        tokio::task::spawn_blocking(move || gpus.compute_processes())
            .await
            .map_err(|err| Error::Monitor(format!("GPU query task failed: {err}")))?
    }

    async fn poll_gpus(&mut self) -> Result<()> {
        let list = self.list_gpu_processes().await?;
        self.observe(Stamp::now(), &list);
        Ok(())
    }

    fn observe(&mut self, at: Stamp, list: &[GpuProcess]) {
        let procs = &self.procs;
        let Some(transition) = self.tracker.observe(at, list, |pid| owner(procs, pid)) else {
            return;
        };
        match transition {
            GpuTransition::Started { pid, at } => {
                // A GPU end still waiting for an exit code is final now.
                self.flush_gpu_end(None);
                let Some(work) = &mut self.work else {
                    return;
                };
                let already_running = !work.gpu_seen
                    && matches!(
                        work.started,
                        WatchEvent::Started {
                            already_running: true,
                            ..
                        }
                    );
                work.gpu_seen = true;
                let command = procfs::read_cmdline(pid)
                    .ok()
                    .filter(|argv| !argv.is_empty())
                    .map(|argv| argv.join(" "))
                    .unwrap_or_else(|| match &work.started {
                        WatchEvent::Started { command, .. } => command.clone(),
                        WatchEvent::Ended { .. } => String::new(),
                    });
                self.pending.push_back(WatchEvent::Started {
                    pid,
                    command,
                    at,
                    detector: DetectorKind::Nvml,
                    already_running,
                });
            }
            ended @ GpuTransition::Ended { .. } => {
                if let Some(work) = &mut self.work {
                    work.gpu_ended = Some((ended, Instant::now() + self.grace));
                }
            }
        }
    }

    /// Reports a GPU end that was waiting for the process's exit code.
    fn flush_gpu_end(&mut self, exit_code: Option<i32>) {
        let Some(ended) = self.work.as_mut().and_then(|w| w.gpu_ended.take()) else {
            return;
        };
        self.emit_gpu_end(ended.0, exit_code);
    }

    fn emit_gpu_end(&mut self, transition: GpuTransition, exit_code: Option<i32>) {
        if let GpuTransition::Ended {
            pid,
            started_at,
            at,
            peak_memory_bytes,
        } = transition
        {
            self.pending.push_back(WatchEvent::Ended {
                pid,
                at,
                started_at,
                detector: DetectorKind::Nvml,
                exit_code,
                gpu_memory_bytes: peak_memory_bytes,
            });
        }
    }
}

impl Detector for NvmlDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Nvml
    }

    async fn next(&mut self) -> Result<WatchEvent> {
        NvmlDetector::next(self).await
    }
}

fn owner(procs: &ProcDetector, pid: u32) -> Owner {
    if procs.is_work(pid) {
        Owner::Work
    } else if Path::new(PROC).join(pid.to_string()).exists() {
        Owner::Foreign
    } else {
        Owner::Invisible
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn on_gpu(gpu: u32, pid: u32, mib: u64) -> GpuProcess {
        GpuProcess {
            gpu,
            pid,
            used_memory_bytes: Some(mib << 20),
        }
    }

    /// pids 100.. are the work, 50 is another container's, 9000.. are host pids.
    fn owner(pid: u32) -> Owner {
        match pid {
            100..=199 => Owner::Work,
            9000.. => Owner::Invisible,
            _ => Owner::Foreign,
        }
    }

    #[test]
    fn start_end_and_peak_memory_over_several_gpus() {
        let mut tracker = GpuTracker::default();
        tracker.arm(&[on_gpu(0, 50, 1000)], owner);
        let t = |_: u32| Stamp::now();
        assert_eq!(tracker.observe(t(0), &[on_gpu(0, 50, 1000)], owner), None);
        let t1 = t(1);
        assert_eq!(
            tracker.observe(t1, &[on_gpu(0, 50, 1000), on_gpu(0, 100, 200)], owner),
            Some(GpuTransition::Started { pid: 100, at: t1 })
        );
        // Grows, spreads to a second GPU (its own 300 + a worker's 500), shrinks.
        assert_eq!(tracker.observe(t(2), &[on_gpu(0, 100, 400)], owner), None);
        assert_eq!(
            tracker.observe(
                t(3),
                &[
                    on_gpu(0, 100, 400),
                    on_gpu(1, 100, 300),
                    on_gpu(1, 101, 500)
                ],
                owner
            ),
            None
        );
        assert_eq!(tracker.observe(t(4), &[on_gpu(0, 101, 100)], owner), None);
        let t5 = t(5);
        assert_eq!(
            tracker.observe(t5, &[on_gpu(0, 50, 1000)], owner),
            Some(GpuTransition::Ended {
                pid: 100,
                started_at: t1,
                at: t5,
                peak_memory_bytes: Some(1200 << 20),
            })
        );
        assert!(tracker.finish(Stamp::now()).is_none());
    }

    #[test]
    fn host_pids_already_on_the_gpu_when_work_began_are_not_ours() {
        let mut tracker = GpuTracker::default();
        tracker.arm(&[on_gpu(0, 9001, 100)], owner);
        assert_eq!(
            tracker.observe(Stamp::now(), &[on_gpu(0, 9001, 100)], owner),
            None
        );
        let at = Stamp::now();
        assert_eq!(
            tracker.observe(at, &[on_gpu(0, 9001, 100), on_gpu(0, 9002, 100)], owner),
            Some(GpuTransition::Started { pid: 9002, at })
        );
    }

    #[test]
    fn memory_unknown_stays_unknown_and_finish_ends_early() {
        let mut tracker = GpuTracker::default();
        let unknown = GpuProcess {
            gpu: 0,
            pid: 100,
            used_memory_bytes: None,
        };
        assert!(tracker.observe(Stamp::now(), &[unknown], owner).is_some());
        let at = Stamp::now();
        let Some(GpuTransition::Ended {
            peak_memory_bytes, ..
        }) = tracker.finish(at)
        else {
            panic!("no end");
        };
        assert_eq!(peak_memory_bytes, None);
        assert_eq!(tracker.finish(at), None);
    }

    #[test]
    fn snapshot_sums_memory_and_takes_the_busiest_gpu() {
        let gpu = |index, used, util| GpuState {
            index,
            name: "H100".into(),
            memory_total_bytes: 80 << 30,
            memory_used_bytes: used,
            utilization_pct: util,
        };
        let snapshot = GpuSnapshot {
            at: chrono::Utc::now(),
            gpus: vec![gpu(0, 10 << 30, 35), gpu(1, 5 << 30, 90)],
        };
        assert_eq!(snapshot.memory_total_bytes(), 160 << 30);
        assert_eq!(snapshot.memory_used_bytes(), 15 << 30);
        assert_eq!(snapshot.max_utilization_pct(), 90.0);
    }
}
