//! The process-table detector: finds the work's processes in `/proc` and learns of their exit
//! from the kernel, on one thread of its own.
//!
//! Designed for a small detection error at almost no idle cost:
//!
//! - **One thread, one wait.** The detector runs on a dedicated thread blocked in `epoll_wait`
//!   on the work processes' pidfds and an eventfd that stops it, with the time to the next
//!   poll as timeout. Every wake-up is one `epoll_wait` return; nothing else runs while nothing
//!   happens. Measured on the Firecracker VM we develop on, a wake-up costs 50–100 µs of CPU
//!   whatever it does, and tokio's timer adds an eventfd write and a second `epoll_wait` per
//!   tick (about 0.75 % of a core at 10 ms against 0.5 % for the bare loop). The wake-up rate
//!   is what the idle cost is made of, so the thread keeps it at one per poll interval, and the
//!   default interval is 25 ms (0.3 % of a core there; 20 ms measured 0.35–0.58 % on a busy
//!   machine, over the 0.5 % goal). Detection times do not
//!   depend on how busy the caller's runtime is; events reach [`ProcDetector::next`] over a
//!   channel.
//! - **Start.** Every `poll_interval` (25 ms by default) it reads the pid namespace's allocation
//!   cursor ([`PidCursor`], one `pread`). Only when the cursor moved, which happens when any
//!   process or thread is created, does it list processes (`/proc`, or the `children` files of
//!   the subtree for [`Selector::DescendantsOf`]) and read `stat` and `cmdline` of the pids it
//!   has not seen. The tick after a move scans once more, in case the scan ran between the
//!   pid's allocation and the process becoming visible. The expected start error is half the
//!   interval plus one scan. While work runs, ticks only pick up the processes it forks (so the
//!   end waits for them), and come every `busy_poll_interval` (100 ms) instead: a worker
//!   forked and orphaned within that time before its parent's exit can be missed under
//!   [`Selector::DescendantsOf`], which loses orphans from the subtree.
//! - **End.** Each work process gets a pidfd (`pidfd_open`, Linux 5.3+) in the thread's epoll
//!   set; the kernel makes it readable when the process exits, so the end costs nothing while
//!   the work runs and is stamped the moment the thread wakes. Where `pidfd_open` is refused (an
//!   old kernel, a seccomp profile), those processes are polled on every tick instead.
//! - **Exit code.** `waitid(P_PIDFD, WNOWAIT)` reads the status of our own child without reaping
//!   it (its owner can still `wait`); for other processes, field 52 of `/proc/PID/stat` while
//!   the exited process is a zombie, where this process may read it. Otherwise unknown.
//!
//! Why not tokio's `AsyncFd` for the pidfds: since tokio 1.54 registering a raw descriptor with
//! its reactor is `unsafe` (the safe constructors are deprecated as unsound), and this crate
//! forbids unsafe code; rustix's epoll and eventfd are safe over `OwnedFd`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::{epoll, eventfd, EventfdFlags};
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions};
use tokio::sync::mpsc;

use super::procfs::{self, PidCursor, PROC};
use super::tracker::{Candidate, ProcTracker};
use super::{Detector, DetectorKind, Selector, Stamp, WatchConfig, WatchEvent};
use crate::error::{Error, Result};

/// The epoll key of the eventfd that stops the thread; pidfds use their pid.
const STOP_KEY: u64 = u64::MAX;

/// How the detector lists processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Every process in the pid namespace.
    All,
    /// The subtree under a pid, from its `children` files.
    Descendants(u32),
}

/// What the detector's thread shares with the handle.
#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    stop_fd: OwnedFd,
    /// The thread's id, for its CPU time.
    thread_id: AtomicU32,
    /// The live work processes, for the GPU detector's attribution.
    work: Mutex<HashSet<u32>>,
}

/// Detects the work's start and end in the process table. See the module documentation.
#[derive(Debug)]
pub struct ProcDetector {
    events: mpsc::UnboundedReceiver<Result<WatchEvent>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ProcDetector {
    /// A detector for `config`'s selector, on a thread of its own. Takes the first look at the
    /// process table before returning: work already running then is reported by the first
    /// [`ProcDetector::next`] with its real start time and `already_running` set.
    pub fn new(config: &WatchConfig) -> Result<ProcDetector> {
        if config.poll_interval.is_zero() {
            return Err(Error::Monitor("the poll interval must be positive".into()));
        }
        let epoll =
            epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|err| monitor("epoll", err))?;
        let stop_fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|err| monitor("eventfd", err))?;
        epoll::add(
            &epoll,
            &stop_fd,
            epoll::EventData::new_u64(STOP_KEY),
            epoll::EventFlags::IN,
        )
        .map_err(|err| monitor("epoll_ctl", err))?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stop_fd,
            thread_id: AtomicU32::new(0),
            work: Mutex::new(HashSet::new()),
        });
        let (sender, events) = mpsc::unbounded_channel();
        let mut engine = Engine::new(config, epoll, Arc::clone(&shared), sender);
        engine.last_cursor = engine.cursor.as_ref().and_then(|c| c.read().ok());
        engine.scan(true)?;
        engine.publish();
        let thread = std::thread::Builder::new()
            .name("kfcache-watch".into())
            .spawn(move || engine.run())
            .map_err(|err| monitor("cannot start the watcher thread", err))?;
        Ok(ProcDetector {
            events,
            shared,
            thread: Some(thread),
        })
    }

    /// Whether `pid` is one of the work's live processes.
    pub fn is_work(&self, pid: u32) -> bool {
        self.shared
            .work
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&pid)
    }

    /// CPU time the detector's thread has used so far (`/proc/self/task/TID/schedstat`), or
    /// `None` where the kernel does not keep it. Everything the detector does runs on that
    /// thread.
    pub fn cpu_time(&self) -> Option<Duration> {
        let tid = self.shared.thread_id.load(Ordering::SeqCst);
        if tid == 0 {
            return None;
        }
        let path = Path::new(PROC)
            .join("self/task")
            .join(tid.to_string())
            .join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_nanos(nanos))
    }

    /// The next start or end. Cancel-safe: events wait in a channel until taken.
    pub async fn next(&mut self) -> Result<WatchEvent> {
        match self.events.recv().await {
            Some(event) => event,
            None => Err(Error::Monitor("the watcher thread stopped".into())),
        }
    }
}

impl Drop for ProcDetector {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = rustix::io::write(&self.shared.stop_fd, &1u64.to_ne_bytes());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Detector for ProcDetector {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Proc
    }

    async fn next(&mut self) -> Result<WatchEvent> {
        ProcDetector::next(self).await
    }
}

/// A work process waited on through its pidfd.
#[derive(Debug)]
struct Watched {
    fd: OwnedFd,
    /// Read the exit code (the main process).
    want_code: bool,
    /// The zombie's `stat` shows the real status to this process.
    stat_readable: bool,
}

/// The detector's state, owned by its thread.
#[derive(Debug)]
struct Engine {
    tracker: ProcTracker,
    listing: Listing,
    cursor: Option<PidCursor>,
    last_cursor: Option<u64>,
    rescan_next_tick: bool,
    poll_interval: Duration,
    busy_poll_interval: Duration,
    recheck_interval: Duration,
    last_full_recheck: Option<Instant>,
    epoll: OwnedFd,
    watched: HashMap<u32, Watched>,
    /// Work processes without a pidfd, checked on every tick.
    polled: BTreeSet<u32>,
    pending: Vec<WatchEvent>,
    work_changed: bool,
    pidfd_refused: bool,
    shared: Arc<Shared>,
    sender: mpsc::UnboundedSender<Result<WatchEvent>>,
}

impl Engine {
    fn new(
        config: &WatchConfig,
        epoll: OwnedFd,
        shared: Arc<Shared>,
        sender: mpsc::UnboundedSender<Result<WatchEvent>>,
    ) -> Engine {
        let mut watcher_pids: HashSet<u32> = procfs::own_ancestors().into_iter().collect();
        watcher_pids.insert(std::process::id());
        if let Selector::DescendantsOf(root) = config.selector {
            // The root and its ancestors are the benchmark's or the test's own processes.
            watcher_pids.remove(&root);
        }
        let listing = match config.selector {
            Selector::DescendantsOf(root) if procfs::children_files_supported() => {
                Listing::Descendants(root)
            }
            Selector::DescendantsOf(_) => {
                tracing::info!("no /proc/PID/task/TID/children: listing all of /proc instead");
                Listing::All
            }
            _ => Listing::All,
        };
        let cursor = match PidCursor::open() {
            Ok(cursor) => Some(cursor),
            Err(err) => {
                tracing::info!("no pid cursor in /proc/loadavg ({err}): listing on every tick");
                None
            }
        };
        Engine {
            tracker: ProcTracker::new(config.selector.clone(), watcher_pids, config.settle),
            listing,
            cursor,
            last_cursor: None,
            rescan_next_tick: false,
            poll_interval: config.poll_interval,
            busy_poll_interval: config.busy_poll_interval.max(config.poll_interval),
            recheck_interval: config.recheck_interval,
            last_full_recheck: None,
            epoll,
            watched: HashMap::new(),
            polled: BTreeSet::new(),
            pending: Vec::new(),
            work_changed: false,
            pidfd_refused: false,
            shared,
            sender,
        }
    }

    fn run(mut self) {
        let tid = rustix::thread::gettid()
            .as_raw_nonzero()
            .get()
            .unsigned_abs();
        self.shared.thread_id.store(tid, Ordering::SeqCst);
        let mut ready = Vec::with_capacity(16);
        let mut next_tick = Instant::now() + self.poll_interval;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            let timeout = rustix::time::Timespec {
                tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(timeout.subsec_nanos()),
            };
            ready.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut ready), Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(err) => {
                    let _ = self
                        .sender
                        .send(Err(Error::Monitor(format!("epoll_wait failed: {err}"))));
                    return;
                }
            }
            let step = self.step(&ready, &mut next_tick);
            if let Err(err) = step {
                let _ = self.sender.send(Err(err));
                return;
            }
            if self.shared.stop.load(Ordering::SeqCst) || !self.publish() {
                return;
            }
        }
    }

    /// Handles what woke the thread: exits, then the tick if it is due.
    fn step(&mut self, ready: &[epoll::Event], next_tick: &mut Instant) -> Result<()> {
        if !ready.is_empty() {
            let at = Stamp::now();
            for event in ready {
                let key = event.data.u64();
                if let Ok(pid) = u32::try_from(key) {
                    self.on_exit(pid, at);
                }
            }
            self.end_if_idle()?;
        }
        let now = Instant::now();
        if now >= *next_tick {
            self.on_tick()?;
            // Waiting for a start, latency matters; while work runs, ticks only pick up the
            // processes it forks (its end comes from the pidfds).
            let interval = if self.tracker.work_is_empty() {
                self.poll_interval
            } else {
                self.busy_poll_interval
            };
            *next_tick += interval;
            if *next_tick <= now {
                // Late (a busy machine): no burst of catch-up ticks.
                *next_tick = now + interval;
            }
        }
        Ok(())
    }

    /// Sends pending events and the work set; false when nobody listens any more.
    fn publish(&mut self) -> bool {
        if self.work_changed {
            self.work_changed = false;
            let mut work = self
                .shared
                .work
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            work.clear();
            work.extend(self.tracker.work().iter().copied());
        }
        for event in self.pending.drain(..) {
            if self.sender.send(Ok(event)).is_err() {
                return false;
            }
        }
        true
    }

    fn on_tick(&mut self) -> Result<()> {
        let cursor = self.cursor.as_ref().and_then(|c| c.read().ok());
        let moved = cursor.is_none() || cursor != self.last_cursor;
        self.last_cursor = cursor;
        // Re-read command lines first: a process that just exec'd into the work should start
        // it, rather than the child it forked a moment later.
        self.recheck_commands();
        if moved || self.rescan_next_tick {
            self.rescan_next_tick = moved;
            self.scan(false)?;
        }
        if !self.polled.is_empty() {
            self.poll_exits()?;
        }
        // Work whose last process was already gone when it was found ends here.
        self.end_if_idle()
    }

    /// Lists processes and classifies the ones not seen before.
    fn scan(&mut self, initial: bool) -> Result<()> {
        let seen = Stamp::now();
        let listed = match self.listing {
            Listing::All => procfs::list_all_pids().map_err(Error::io("list", PROC))?,
            Listing::Descendants(root) => procfs::list_descendants(root),
        };
        self.tracker.forget_unlisted(&listed);
        let unknown = self.tracker.unknown(&listed);
        if unknown.is_empty() {
            return Ok(());
        }
        let candidates = unknown
            .into_iter()
            .filter_map(|pid| {
                // Gone since the listing: nothing to classify.
                let stat = procfs::read_stat(pid).ok()?;
                let started = if initial {
                    procfs::age_of(stat.start_ticks).map(|age| seen.minus(age))
                } else {
                    None
                };
                Some(Candidate {
                    pid,
                    ppid: stat.ppid,
                    argv: procfs::read_cmdline(pid).unwrap_or_default(),
                    started,
                    exited: stat.exited(),
                })
            })
            .collect();
        let (new_work, started) = self.tracker.observe_new(seen, candidates);
        self.admit(new_work, started);
        Ok(())
    }

    /// Re-reads the command line of processes that may have `exec`'d into the work.
    fn recheck_commands(&mut self) {
        let now = Instant::now();
        let all = match self.last_full_recheck {
            Some(last) => now.saturating_duration_since(last) >= self.recheck_interval,
            None => true,
        };
        if !all && !self.tracker.has_unsettled(now) {
            return;
        }
        if all {
            self.last_full_recheck = Some(now);
        }
        for pid in self.tracker.to_recheck(now, all) {
            let Ok(argv) = procfs::read_cmdline(pid) else {
                continue;
            };
            let (new_work, started) = self.tracker.recheck(Stamp::now(), pid, argv);
            self.admit(new_work, started);
        }
    }

    fn admit(&mut self, new_work: Vec<u32>, started: Option<WatchEvent>) {
        if let Some(event) = started {
            self.pending.push(event);
        }
        for pid in new_work {
            self.work_changed = true;
            self.watch_exit(pid);
        }
    }

    /// Adds `pid`'s pidfd to the epoll set, or polls it where pidfds are refused.
    fn watch_exit(&mut self, pid: u32) {
        let want_code = self.tracker.is_main(pid);
        let stat_readable = want_code && procfs::exit_status_readable(pid);
        let opened = match i32::try_from(pid).ok().and_then(Pid::from_raw) {
            Some(raw) => rustix::process::pidfd_open(raw, PidfdFlags::empty()),
            None => Err(rustix::io::Errno::INVAL),
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => {
                // Gone between the scan and now; the next tick ends the work if it was the last.
                self.tracker.observe_exit(pid, Stamp::now(), None);
                self.work_changed = true;
                return;
            }
            Err(err) => {
                if !self.pidfd_refused {
                    self.pidfd_refused = true;
                    tracing::warn!("pidfd_open refused ({err}): polling work processes");
                }
                self.polled.insert(pid);
                return;
            }
        };
        // One-shot: an exited process stays readable, and is reported once.
        let added = epoll::add(
            &self.epoll,
            &fd,
            epoll::EventData::new_u64(u64::from(pid)),
            epoll::EventFlags::IN | epoll::EventFlags::ONESHOT,
        );
        match added {
            Ok(()) => {
                self.watched.insert(
                    pid,
                    Watched {
                        fd,
                        want_code,
                        stat_readable,
                    },
                );
            }
            Err(err) => {
                tracing::warn!(pid, "cannot wait on the pidfd ({err}): polling");
                self.polled.insert(pid);
            }
        }
    }

    /// `pid`'s pidfd became readable at `at`: it exited.
    fn on_exit(&mut self, pid: u32, at: Stamp) {
        let Some(watched) = self.watched.remove(&pid) else {
            return;
        };
        let _ = epoll::delete(&self.epoll, &watched.fd);
        let exit_code = if watched.want_code {
            exit_code(pid, &watched.fd, watched.stat_readable)
        } else {
            None
        };
        self.tracker.observe_exit(pid, at, exit_code);
        self.work_changed = true;
    }

    /// Exit checks for the processes without a pidfd: gone or a zombie means exited.
    fn poll_exits(&mut self) -> Result<()> {
        let polled: Vec<u32> = self.polled.iter().copied().collect();
        for pid in polled {
            let at = Stamp::now();
            let exit_code = match procfs::read_stat(pid) {
                Ok(stat) if !stat.exited() => continue,
                Ok(stat) => stat.wait_status.map(procfs::exit_code_from_wait_status),
                Err(_) => None,
            };
            self.polled.remove(&pid);
            self.tracker.observe_exit(pid, at, exit_code);
            self.work_changed = true;
        }
        self.end_if_idle()
    }

    /// When the last work process is gone, scans once more (a worker forked just before the
    /// exit may not have been seen yet) and reports the end if still nothing is left.
    fn end_if_idle(&mut self) -> Result<()> {
        if !self.tracker.work_is_empty() || !self.tracker.in_episode() {
            return Ok(());
        }
        self.scan(false)?;
        if let Some(event) = self.tracker.finish_if_idle() {
            self.pending.push(event);
        }
        Ok(())
    }
}

fn monitor(what: &str, err: impl std::fmt::Display) -> Error {
    Error::Monitor(format!("{what}: {err}"))
}

/// The exit code of an exited process: `waitid(WNOWAIT)` for our own child (leaving it to be
/// reaped by its owner), else the zombie's `stat` where readable.
fn exit_code(pid: u32, fd: &OwnedFd, stat_readable: bool) -> Option<i32> {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
    if let Ok(Some(status)) = rustix::process::waitid(WaitId::PidFd(fd.as_fd()), options) {
        if let Some(code) = status.exit_status() {
            return Some(code);
        }
        if let Some(signal) = status.terminating_signal() {
            return Some(128 + signal);
        }
    }
    if !stat_readable {
        return None;
    }
    let stat = procfs::read_stat(pid).ok()?;
    if !stat.exited() {
        return None;
    }
    stat.wait_status.map(procfs::exit_code_from_wait_status)
}
