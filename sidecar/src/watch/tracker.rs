//! Which processes are the task's work, and when the work as a whole starts and ends.
//!
//! Pure bookkeeping over what the process table showed: the driver ([`super::process`]) feeds
//! it the processes it had not seen before, exits, and re-read command lines; the tracker
//! classifies each process once and turns "the set of live work processes went from empty to
//! non-empty" into [`WatchEvent::Started`] and "back to empty" into [`WatchEvent::Ended`].
//!
//! A process is work when the selector matches it or when its parent is work (so workers forked
//! by the task extend it). The watcher itself and its ancestors never are. A process the
//! selector did not match may still `exec` into one it matches (Argo's emissary forks, then
//! execs the user command), so such processes stay "unsettled" for a short while after they
//! were first seen, and the driver re-reads their command line; see [`ProcTracker::recheck`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{DetectorKind, Selector, Stamp, WatchEvent};

/// What a scan read about a process it had not seen before.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Candidate {
    pub pid: u32,
    pub ppid: u32,
    pub argv: Vec<String>,
    /// When it started, where that is known better than "when the scan saw it": for processes
    /// already running when the watcher started.
    pub started: Option<Stamp>,
    /// A zombie: it exited before the scan saw it.
    pub exited: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Work,
    Other,
    Watcher,
}

#[derive(Debug)]
struct Known {
    class: Class,
    ppid: u32,
    first_seen: Instant,
    /// An `exec` could change its class: re-read its command line now and then.
    may_change: bool,
}

#[derive(Debug)]
struct Episode {
    started: Stamp,
    main_pid: u32,
    main_exit_code: Option<i32>,
    last_exit: Option<Stamp>,
}

#[derive(Debug)]
pub(crate) struct ProcTracker {
    selector: Selector,
    watcher_pids: HashSet<u32>,
    settle: Duration,
    known: HashMap<u32, Known>,
    /// Live work processes.
    work: BTreeSet<u32>,
    episode: Option<Episode>,
}

impl ProcTracker {
    /// `watcher_pids`: the watcher's own pid and its ancestors, never work.
    pub fn new(selector: Selector, watcher_pids: HashSet<u32>, settle: Duration) -> ProcTracker {
        ProcTracker {
            selector,
            watcher_pids,
            settle,
            known: HashMap::new(),
            work: BTreeSet::new(),
            episode: None,
        }
    }

    /// The listed pids the tracker has not seen yet.
    pub fn unknown(&self, listed: &[u32]) -> Vec<u32> {
        listed
            .iter()
            .copied()
            .filter(|pid| !self.known.contains_key(pid))
            .collect()
    }

    /// Forgets processes no longer listed, so a reused pid is classified afresh. Live work
    /// processes stay: they leave through [`ProcTracker::observe_exit`] (an orphan reparented
    /// out of a watched subtree is still work).
    pub fn forget_unlisted(&mut self, listed: &[u32]) {
        let listed: HashSet<u32> = listed.iter().copied().collect();
        let work = &self.work;
        self.known
            .retain(|pid, _| listed.contains(pid) || work.contains(pid));
    }

    /// The live work processes.
    pub fn work(&self) -> &BTreeSet<u32> {
        &self.work
    }

    pub fn is_main(&self, pid: u32) -> bool {
        self.episode.as_ref().is_some_and(|e| e.main_pid == pid)
    }

    pub fn work_is_empty(&self) -> bool {
        self.work.is_empty()
    }

    pub fn in_episode(&self) -> bool {
        self.episode.is_some()
    }

    /// Classifies processes seen for the first time at `seen`. Returns the live ones that are
    /// work (to be watched for their exit) and the start of the work, if this began it.
    pub fn observe_new(
        &mut self,
        seen: Stamp,
        candidates: Vec<Candidate>,
    ) -> (Vec<u32>, Option<WatchEvent>) {
        let mut new_work = Vec::new();
        let mut started = None;
        let batch: HashSet<u32> = candidates.iter().map(|c| c.pid).collect();
        let mut pending = candidates;
        // Parents before children: a candidate waits while its parent is in the batch and not
        // yet classified. Each pass classifies at least one, or the rest go without parent.
        while !pending.is_empty() {
            let mut deferred = Vec::new();
            let before = pending.len();
            for candidate in pending {
                let parent_pending = candidate.ppid != candidate.pid
                    && batch.contains(&candidate.ppid)
                    && !self.known.contains_key(&candidate.ppid);
                if parent_pending {
                    deferred.push(candidate);
                } else {
                    self.admit(seen, &candidate, &mut new_work, &mut started);
                }
            }
            if deferred.len() == before {
                for candidate in deferred {
                    self.admit(seen, &candidate, &mut new_work, &mut started);
                }
                break;
            }
            pending = deferred;
        }
        (new_work, started)
    }

    fn admit(
        &mut self,
        seen: Stamp,
        candidate: &Candidate,
        new_work: &mut Vec<u32>,
        started: &mut Option<WatchEvent>,
    ) {
        let parent = self.known.get(&candidate.ppid).map(|k| k.class);
        let class = if self.watcher_pids.contains(&candidate.pid) {
            Class::Watcher
        } else if parent == Some(Class::Work) || self.selector_matches(candidate) {
            Class::Work
        } else {
            Class::Other
        };
        let may_change = class == Class::Other
            && !candidate.exited
            && self.selector.depends_on_command()
            && candidate.pid > 2
            && candidate.ppid != 2; // kernel threads never exec
        self.known.insert(
            candidate.pid,
            Known {
                class,
                ppid: candidate.ppid,
                first_seen: seen.instant,
                may_change,
            },
        );
        if class == Class::Work && !candidate.exited {
            new_work.push(candidate.pid);
            let event = self.begin(seen, candidate);
            if started.is_none() {
                *started = event;
            }
        }
    }

    /// Adds a live work process; returns the start of the work if it began it.
    fn begin(&mut self, seen: Stamp, candidate: &Candidate) -> Option<WatchEvent> {
        self.work.insert(candidate.pid);
        if self.episode.is_some() {
            return None;
        }
        let at = candidate.started.unwrap_or(seen);
        self.episode = Some(Episode {
            started: at,
            main_pid: candidate.pid,
            main_exit_code: None,
            last_exit: None,
        });
        Some(WatchEvent::Started {
            pid: candidate.pid,
            command: candidate.argv.join(" "),
            at,
            detector: DetectorKind::Proc,
            already_running: candidate.started.is_some(),
        })
    }

    fn selector_matches(&self, candidate: &Candidate) -> bool {
        match &self.selector {
            Selector::Default { ignore } => {
                candidate.pid != 1
                    && candidate.ppid != 2
                    && !candidate.argv.is_empty()
                    && !ignore
                        .iter()
                        .any(|name| program_name(&candidate.argv) == name)
            }
            Selector::DescendantsOf(root) => candidate.ppid == *root,
            Selector::CommandContains(needle) => candidate.argv.join(" ").contains(needle.as_str()),
            Selector::CommandMatches(regex) => regex.is_match(&candidate.argv.join(" ")),
        }
    }

    /// Processes whose command line should be read again at `now`: the unsettled ones (first
    /// seen less than the settle time ago), or with `all`, every one that could still `exec`
    /// into work.
    pub fn to_recheck(&self, now: Instant, all: bool) -> Vec<u32> {
        self.known
            .iter()
            .filter(|(_, k)| {
                k.class == Class::Other
                    && k.may_change
                    && (all || now.saturating_duration_since(k.first_seen) < self.settle)
            })
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Whether any process is unsettled at `now`.
    pub fn has_unsettled(&self, now: Instant) -> bool {
        self.known.values().any(|k| {
            k.class == Class::Other
                && k.may_change
                && now.saturating_duration_since(k.first_seen) < self.settle
        })
    }

    /// A process's command line read again at `seen` (after an `exec`, say). If it now matches,
    /// it becomes work, and so do its known descendants.
    pub fn recheck(
        &mut self,
        seen: Stamp,
        pid: u32,
        argv: Vec<String>,
    ) -> (Vec<u32>, Option<WatchEvent>) {
        let Some(known) = self.known.get(&pid) else {
            return (Vec::new(), None);
        };
        let candidate = Candidate {
            pid,
            ppid: known.ppid,
            argv,
            started: None,
            exited: false,
        };
        if known.class != Class::Other || !self.selector_matches(&candidate) {
            return (Vec::new(), None);
        }
        let mut new_work = Vec::new();
        let mut started = None;
        let mut queue = vec![candidate];
        while let Some(candidate) = queue.pop() {
            if let Some(known) = self.known.get_mut(&candidate.pid) {
                known.class = Class::Work;
                known.may_change = false;
            }
            new_work.push(candidate.pid);
            let event = self.begin(seen, &candidate);
            if started.is_none() {
                started = event;
            }
            for (child, known) in &self.known {
                if known.ppid == candidate.pid && known.class == Class::Other {
                    queue.push(Candidate {
                        pid: *child,
                        ppid: candidate.pid,
                        argv: Vec::new(),
                        started: None,
                        exited: false,
                    });
                }
            }
        }
        (new_work, started)
    }

    /// A work process exited at `at`.
    pub fn observe_exit(&mut self, pid: u32, at: Stamp, exit_code: Option<i32>) {
        if !self.work.remove(&pid) {
            return;
        }
        if let Some(episode) = &mut self.episode {
            if episode.main_pid == pid {
                episode.main_exit_code = exit_code;
            }
            let later = match episode.last_exit {
                Some(last) => last.instant < at.instant,
                None => true,
            };
            if later {
                episode.last_exit = Some(at);
            }
        }
    }

    /// The end of the work, once no work process is left.
    pub fn finish_if_idle(&mut self) -> Option<WatchEvent> {
        if !self.work.is_empty() {
            return None;
        }
        let episode = self.episode.take()?;
        Some(WatchEvent::Ended {
            pid: episode.main_pid,
            at: episode.last_exit.unwrap_or_else(Stamp::now),
            started_at: episode.started,
            detector: DetectorKind::Proc,
            exit_code: episode.main_exit_code,
            gpu_memory_bytes: None,
        })
    }
}

/// The program's file name: `argv[0]` without its directory.
pub(crate) fn program_name(argv: &[String]) -> &str {
    let first = argv.first().map(String::as_str).unwrap_or_default();
    first.rsplit('/').next().unwrap_or(first)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn candidate(pid: u32, ppid: u32, line: &str) -> Candidate {
        Candidate {
            pid,
            ppid,
            argv: argv(line),
            started: None,
            exited: false,
        }
    }

    fn default_selector() -> Selector {
        Selector::default_for_pod()
    }

    /// The process table of an Argo pod with the emissary executor, the sidecar and a pause
    /// container sharing one pid namespace.
    fn argo_pod() -> Vec<Candidate> {
        vec![
            candidate(1, 0, "/pause"),
            candidate(7, 0, "/var/run/argo/argoexec emissary -- python train.py"),
            candidate(9, 0, "argoexec wait --loglevel info"),
            candidate(12, 0, "kfcache sidecar watch"),
        ]
    }

    #[test]
    fn argo_executor_pause_and_watcher_are_not_work() {
        let mut tracker = ProcTracker::new(default_selector(), HashSet::from([12]), Duration::ZERO);
        let (work, started) = tracker.observe_new(Stamp::now(), argo_pod());
        assert!(work.is_empty());
        assert!(started.is_none());
    }

    #[test]
    fn the_emissary_child_is_the_work_and_its_end_is_the_last_workers_exit() {
        let mut tracker = ProcTracker::new(default_selector(), HashSet::from([12]), Duration::ZERO);
        tracker.observe_new(Stamp::now(), argo_pod());
        let t0 = Stamp::now();
        let (work, started) =
            tracker.observe_new(t0, vec![candidate(20, 7, "python train.py --epochs 3")]);
        assert_eq!(work, [20]);
        let Some(WatchEvent::Started {
            pid, command, at, ..
        }) = started
        else {
            panic!("no start: {started:?}");
        };
        assert_eq!((pid, command.as_str()), (20, "python train.py --epochs 3"));
        assert_eq!(at, t0);
        // A data-loader worker forked by the task, then the main process exits first.
        let (work, started) = tracker.observe_new(Stamp::now(), vec![candidate(21, 20, "python")]);
        assert_eq!(work, [21]);
        assert!(started.is_none());
        tracker.observe_exit(20, Stamp::now(), Some(0));
        assert!(tracker.finish_if_idle().is_none(), "the worker still runs");
        let t1 = Stamp::now();
        tracker.observe_exit(21, t1, Some(1));
        let Some(WatchEvent::Ended {
            pid,
            at,
            started_at,
            exit_code,
            ..
        }) = tracker.finish_if_idle()
        else {
            panic!("no end");
        };
        assert_eq!((pid, at, started_at, exit_code), (20, t1, t0, Some(0)));
        assert!(tracker.finish_if_idle().is_none(), "one end per start");
    }

    #[test]
    fn children_are_classified_after_their_parents_in_one_batch() {
        let selector = Selector::CommandContains("train.py".into());
        let mut tracker = ProcTracker::new(selector, HashSet::new(), Duration::ZERO);
        // Listed child first (pids wrapped around).
        let (mut work, started) = tracker.observe_new(
            Stamp::now(),
            vec![
                candidate(5, 30000, "sleep 10"),
                candidate(30000, 1, "python train.py"),
                candidate(6, 1, "sleep 10"),
            ],
        );
        work.sort_unstable();
        assert_eq!(work, [5, 30000]);
        assert!(matches!(
            started,
            Some(WatchEvent::Started { pid: 30000, .. })
        ));
    }

    #[test]
    fn a_process_that_execs_into_the_work_is_found_on_recheck() {
        let mut tracker =
            ProcTracker::new(default_selector(), HashSet::new(), Duration::from_secs(1));
        // The pod's processes were seen long ago: settled.
        tracker.observe_new(Stamp::now().minus(Duration::from_secs(5)), argo_pod());
        // Forked by the emissary, not yet exec'd: still argoexec's command line.
        let (work, _) = tracker.observe_new(
            Stamp::now(),
            vec![candidate(
                20,
                7,
                "/var/run/argo/argoexec emissary -- python train.py",
            )],
        );
        assert!(work.is_empty());
        let now = Instant::now();
        assert_eq!(tracker.to_recheck(now, false), [20]);
        assert!(tracker.has_unsettled(now));
        assert!(!tracker.has_unsettled(now + Duration::from_secs(2)));
        let seen = Stamp::now();
        let (work, started) = tracker.recheck(seen, 20, argv("python train.py"));
        assert_eq!(work, [20]);
        assert!(matches!(started, Some(WatchEvent::Started { pid: 20, at, .. }) if at == seen));
        assert!(tracker.to_recheck(now, true).iter().all(|pid| *pid != 20));
    }

    #[test]
    fn descendants_selector_takes_the_roots_children_and_theirs() {
        let mut tracker =
            ProcTracker::new(Selector::DescendantsOf(100), HashSet::new(), Duration::ZERO);
        let (work, _) = tracker.observe_new(
            Stamp::now(),
            vec![
                candidate(101, 100, "sh -c x"),
                candidate(102, 101, "sleep 1"),
                candidate(103, 1, "unrelated"),
            ],
        );
        assert_eq!(work, [101, 102]);
        assert!(tracker.to_recheck(Instant::now(), true).is_empty());
    }

    #[test]
    fn processes_already_running_start_when_they_started() {
        let mut tracker =
            ProcTracker::new(Selector::DescendantsOf(100), HashSet::new(), Duration::ZERO);
        let earlier = Stamp::now();
        let mut c = candidate(101, 100, "sleep 5");
        c.started = Some(earlier);
        let (_, started) = tracker.observe_new(Stamp::now(), vec![c]);
        assert!(matches!(
            started,
            Some(WatchEvent::Started { at, already_running: true, .. }) if at == earlier
        ));
    }

    #[test]
    fn zombies_and_forgotten_pids() {
        let mut tracker =
            ProcTracker::new(Selector::DescendantsOf(100), HashSet::new(), Duration::ZERO);
        let mut zombie = candidate(101, 100, "");
        zombie.exited = true;
        let (work, started) = tracker.observe_new(Stamp::now(), vec![zombie]);
        assert!(work.is_empty() && started.is_none());
        assert!(tracker.unknown(&[101, 102]) == [102]);
        tracker.forget_unlisted(&[102]);
        assert_eq!(
            tracker.unknown(&[101]),
            [101],
            "a reused pid is looked at again"
        );
    }

    #[test]
    fn program_name_drops_the_directory() {
        assert_eq!(
            program_name(&argv("/var/run/argo/argoexec emissary")),
            "argoexec"
        );
        assert_eq!(program_name(&argv("pause")), "pause");
        assert_eq!(program_name(&[]), "");
    }
}
