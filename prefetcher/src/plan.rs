//! The prefetch plan of one pipeline run: which inputs to stage, by when, in what order, and
//! what to evict to stay within the budget.
//!
//! Built from the prediction of the run (each task's predicted start and end, inputs and
//! their sizes) and from what the cache already holds:
//!
//! - Every task that uses GPUs (every task with [`PlanConfig::all_tasks`]) and is predicted
//!   to run contributes its stageable inputs. An input read by several tasks is one item,
//!   staged once and kept while any of them remains.
//! - External sources are stageable at once; an upstream output becomes stageable when its
//!   producer is predicted to end.
//! - An item's deadline is its first remaining reader's predicted start minus the margin; its
//!   latest safe start is the deadline minus its bytes ÷ the bandwidth.
//! - Items are taken earliest deadline first through one staging pipe of the configured
//!   bandwidth, in a simulated clock. Before an item comes in, room is made by
//!   [`choose_victims`](crate::policy::choose_victims): dead entries first, then the furthest
//!   next use; never an entry a running task reads, never one needed sooner. An item that
//!   does not fit waits until readers finish and free room, up to its deadline; then it is
//!   marked [`ItemStatus::NoRoom`] and the plan says so. An entry evicted while a later reader
//!   remains is planned again for that reader.
//!
//! The budget holds at every moment of the plan: the simulated cache never exceeds it.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use serde::Serialize;

use crate::policy::{choose_victims, Resident, Victims};

/// Where a task of the run is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TaskState {
    /// Not started yet: its predicted times hold.
    Pending,
    /// Started (at `started_s` on the plan's clock): its inputs are being read.
    Running { started_s: f64 },
    /// Finished: it reads nothing any more.
    Done,
}

/// One input of a task, as the plan sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanInput {
    /// The artifact's name in the task.
    pub name: String,
    /// Where it is read from (`s3://…`, `pvc://…`, `task://producer/artifact`, …).
    pub uri: String,
    /// Bytes, when known (probed, or from history for upstream outputs).
    pub bytes: Option<u64>,
}

/// One task of the run with its predicted window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanTask {
    pub id: String,
    pub gpus: u32,
    /// Predicted start and end, seconds from the run's start.
    pub start_s: f64,
    pub end_s: f64,
    /// Whether the task is predicted to run at all.
    pub runs: bool,
    pub state: TaskState,
    pub inputs: Vec<PlanInput>,
    /// URIs of the outputs it writes, when the YAML gives their location (or `task://` ids).
    pub outputs: Vec<String>,
}

/// Settings of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanConfig {
    /// Where the run is now, seconds from its start (0 before it starts).
    pub now_s: f64,
    /// Staging must end this long before a reader's predicted start.
    pub margin_s: f64,
    /// Bytes per second the staging pipe moves (measured, or configured).
    pub bandwidth_bytes_per_s: f64,
    /// Most bytes the cache may hold for this plan at any moment.
    pub budget_bytes: u64,
    /// Plan the inputs of every task, not only of the GPU tasks.
    pub all_tasks: bool,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            now_s: 0.0,
            margin_s: 30.0,
            bandwidth_bytes_per_s: 500e6,
            budget_bytes: 64 << 30,
            all_tasks: false,
        }
    }
}

/// An object the cache already holds when the plan is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedEntry {
    pub uri: String,
    pub bytes: u64,
    /// Leased by a running reader: never evicted.
    pub leased: bool,
}

/// What the plan does with an item.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ItemStatus {
    /// Staged in its window, which ends by its deadline.
    Planned,
    /// Staged, but the window ends after the deadline (not enough bandwidth or room in time).
    Late,
    /// Already in the cache; kept while a reader remains.
    Cached,
    /// Cannot fit before its deadline even after every allowed eviction.
    NoRoom { short_bytes: u64 },
    /// An upstream output with no storage location in the YAML: the producer's sidecar
    /// writes it through to the cache, nothing can be staged from an origin.
    WrittenThrough,
    /// A source kfcache cannot read (git, hdfs, oss, artifactory, inline, …).
    Unsupported,
}

impl ItemStatus {
    /// Whether the executor stages this item.
    pub fn stages(&self) -> bool {
        matches!(self, ItemStatus::Planned | ItemStatus::Late)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ItemStatus::Planned => "planned",
            ItemStatus::Late => "late",
            ItemStatus::Cached => "cached",
            ItemStatus::NoRoom { .. } => "no-room",
            ItemStatus::WrittenThrough => "written-through",
            ItemStatus::Unsupported => "unsupported",
        }
    }
}

/// One thing to stage (or not), in plan order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanItem {
    pub uri: String,
    /// Bytes (0 when unknown; see `size_known`).
    pub bytes: u64,
    pub size_known: bool,
    /// The remaining readers this staging serves, in predicted start order.
    pub consumers: Vec<String>,
    /// The task that writes it, for upstream outputs.
    pub producer: Option<String>,
    /// When it can be staged (the producer's predicted end, or now).
    pub ready_s: f64,
    /// The first reader's predicted start minus the margin.
    pub deadline_s: f64,
    /// The deadline minus bytes ÷ bandwidth.
    pub latest_start_s: f64,
    /// The planned staging window, when it is staged.
    pub window: Option<(f64, f64)>,
    /// What is evicted to make room for it, in order.
    pub evicts: Vec<String>,
    /// Whether this is a second staging of an object evicted while a reader remained.
    pub restage: bool,
    #[serde(flatten)]
    pub status: ItemStatus,
}

/// The plan of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub config: PlanConfig,
    /// Items in the order they are staged (earliest deadline first), then the ones that are
    /// not staged.
    pub items: Vec<PlanItem>,
    /// Highest number of bytes the plan holds at any moment (never above the budget).
    pub peak_bytes: u64,
    /// What a user should know: inputs that do not fit, unknown sizes, late items.
    pub notes: Vec<String>,
    /// Every planned object's remaining readers, in start order: what the executor's
    /// evictions look at.
    pub readers: BTreeMap<String, Vec<Reader>>,
}

impl Plan {
    /// Items the executor stages.
    pub fn staged(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| i.status.stages())
    }

    /// Bytes the plan stages in all.
    pub fn staged_bytes(&self) -> u64 {
        self.staged().map(|i| i.bytes).sum()
    }

    /// The readers of a cached object: those of its own URI, or of the planned directory or
    /// prefix (a URI ending in `/`) it lies under.
    pub fn readers_of(&self, uri: &str) -> &[Reader] {
        if let Some(readers) = self.readers.get(uri) {
            return readers;
        }
        self.readers
            .iter()
            .filter(|(prefix, _)| prefix.ends_with('/') && uri.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, readers)| readers.as_slice())
            .unwrap_or(&[])
    }
}

/// Schemes the prefetcher can read (see [`ObjectStoreSource`](crate::ObjectStoreSource)).
pub fn stageable(uri: &str) -> bool {
    let scheme = uri.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    matches!(
        scheme.as_deref(),
        Some(
            "s3" | "s3a"
                | "gs"
                | "az"
                | "azure"
                | "abfs"
                | "abfss"
                | "http"
                | "https"
                | "file"
                | "pvc"
        )
    )
}

/// The run's own reads from the origin at the plan's now: what the tasks under way read that
/// the cache does not hold, over the link staging also uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OriginReads {
    /// Bytes those tasks read from the origin (inputs of unknown size are not counted).
    pub bytes: u64,
    /// When the reads are predicted to end, seconds from the run's start: they share the
    /// link at the plan's bandwidth from the earliest of their tasks' starts.
    pub until_s: f64,
}

/// The run's tasks under way at `config.now_s` (started, or predicted to have started, and not
/// done) and what they read from the origin: their external inputs (not upstream outputs)
/// that `cached` does not hold, directly or under a cached directory. `None` when those reads
/// are predicted to be over, or there are none.
pub fn origin_reads(
    tasks: &[PlanTask],
    cached: &[CachedEntry],
    config: &PlanConfig,
) -> Option<OriginReads> {
    let now = config.now_s;
    let bandwidth = config.bandwidth_bytes_per_s;
    if !(bandwidth > 0.0 && bandwidth.is_finite()) {
        return None;
    }
    let is_cached = |uri: &str| {
        cached.iter().any(|c| {
            c.uri == uri || (uri.ends_with('/') && c.uri.starts_with(uri)) || {
                c.uri.ends_with('/') && uri.starts_with(c.uri.as_str())
            }
        })
    };
    let mut bytes = 0u64;
    let mut first_start = f64::INFINITY;
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for task in tasks.iter().filter(|t| t.runs) {
        let started_s = match task.state {
            TaskState::Running { started_s } => started_s,
            TaskState::Pending if task.start_s <= now => task.start_s,
            TaskState::Pending | TaskState::Done => continue,
        };
        let mut reads = false;
        for input in &task.inputs {
            let Some(size) = input.bytes else { continue };
            if !stageable(&input.uri) || is_cached(&input.uri) || !seen.insert(&input.uri) {
                continue;
            }
            bytes += size;
            reads = true;
        }
        if reads {
            first_start = first_start.min(started_s);
        }
    }
    let until_s = first_start + bytes as f64 / bandwidth;
    (bytes > 0 && until_s > now).then_some(OriginReads { bytes, until_s })
}

/// A task that reads an object: its predicted (or, once started, actual) window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reader {
    pub task: String,
    pub start_s: f64,
    pub end_s: f64,
    /// Started already: its inputs are pinned.
    pub running: bool,
}

impl Reader {
    /// Whether it reads at `t` (started, not finished).
    pub fn reading_at(&self, t: f64) -> bool {
        (self.running || self.start_s <= t) && self.end_s > t
    }
}

/// The eviction rule's view of an entry read by `readers`, at `t`.
pub fn resident_at(bytes: u64, readers: &[Reader], t: f64) -> Resident {
    Resident {
        bytes,
        next_use_s: readers
            .iter()
            .filter(|r| !r.running && r.start_s > t)
            .map(|r| r.start_s)
            .reduce(f64::min),
        pinned: readers.iter().any(|r| r.reading_at(t)),
    }
}

/// An object with every remaining reader of it.
#[derive(Debug, Clone)]
struct Object {
    uri: String,
    bytes: u64,
    size_known: bool,
    producer: Option<String>,
    ready_s: f64,
    /// In start order.
    readers: Vec<Reader>,
}

impl Object {
    fn resident_at(&self, t: f64) -> Resident {
        resident_at(self.bytes, &self.readers, t)
    }
}

/// A pending staging in the queue: the object, and the first reader it serves.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    deadline_s: f64,
    seq: usize,
    object: usize,
    /// Index of the first reader (in the object's reader list) this staging serves.
    first_reader: usize,
    restage: bool,
}

impl Eq for Pending {}

impl Ord for Pending {
    // Earliest deadline first (BinaryHeap is a max-heap), then first queued.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline_s
            .total_cmp(&self.deadline_s)
            .then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Makes the plan of a run of `tasks` (in any order), given what the cache holds.
pub fn plan(tasks: &[PlanTask], cached: &[CachedEntry], config: &PlanConfig) -> Plan {
    let now = config.now_s;
    let bandwidth =
        if config.bandwidth_bytes_per_s > 0.0 && config.bandwidth_bytes_per_s.is_finite() {
            config.bandwidth_bytes_per_s
        } else {
            f64::INFINITY
        };
    let mut notes = Vec::new();

    // Producers of outputs, by URI.
    let mut producers: HashMap<&str, &PlanTask> = HashMap::new();
    for task in tasks {
        for uri in &task.outputs {
            producers.insert(uri.as_str(), task);
        }
    }
    let by_id: HashMap<&str, &PlanTask> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();

    // Objects and their remaining readers.
    let mut objects: Vec<Object> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut unknown_sizes = BTreeSet::new();
    for task in tasks {
        if !task.runs || task.state == TaskState::Done || (task.gpus == 0 && !config.all_tasks) {
            continue;
        }
        let (start_s, running) = match task.state {
            TaskState::Running { started_s } => (started_s.min(now), true),
            _ => (task.start_s.max(now), false),
        };
        let end_s = task.end_s.max(start_s).max(if running { now } else { 0.0 });
        for input in &task.inputs {
            let i = *index.entry(input.uri.clone()).or_insert_with(|| {
                let producer = producers
                    .get(input.uri.as_str())
                    .copied()
                    .or_else(|| {
                        let id = input
                            .uri
                            .strip_prefix(kfcache_parser::model::TASK_URI_SCHEME)?;
                        by_id.get(id.rsplit_once('/')?.0).copied()
                    })
                    .or_else(|| {
                        // A directory (S3 key prefix) that a task writes objects under.
                        let dir = format!("{}/", input.uri.trim_end_matches('/'));
                        producers
                            .iter()
                            .filter(|(output, _)| output.starts_with(&dir))
                            .map(|(_, task)| *task)
                            .min_by(|a, b| a.id.cmp(&b.id))
                    });
                let ready_s = match producer {
                    Some(p) if p.state != TaskState::Done => p.end_s.max(now),
                    _ => now,
                };
                objects.push(Object {
                    uri: input.uri.clone(),
                    bytes: 0,
                    size_known: false,
                    producer: producer.map(|p| p.id.clone()),
                    ready_s,
                    readers: Vec::new(),
                });
                objects.len() - 1
            });
            let object = &mut objects[i];
            if let Some(bytes) = input.bytes {
                object.bytes = object.bytes.max(bytes);
                object.size_known = true;
            }
            if !object.readers.iter().any(|r| r.task == task.id) {
                object.readers.push(Reader {
                    task: task.id.clone(),
                    start_s,
                    end_s: end_s.max(start_s + f64::EPSILON),
                    running,
                });
            }
        }
    }
    for object in &mut objects {
        object
            .readers
            .sort_by(|a, b| a.start_s.total_cmp(&b.start_s).then(a.task.cmp(&b.task)));
        if !object.size_known && stageable(&object.uri) {
            unknown_sizes.insert(object.uri.clone());
        }
    }

    let deadline_of = |object: &Object, reader: usize| -> f64 {
        let r = &object.readers[reader];
        if r.running {
            now
        } else {
            (r.start_s - config.margin_s).max(now)
        }
    };
    let duration_of = |bytes: u64| -> f64 {
        if bandwidth.is_infinite() {
            0.0
        } else {
            bytes as f64 / bandwidth
        }
    };

    let mut items: Vec<PlanItem> = Vec::new();
    let mut unstaged: Vec<PlanItem> = Vec::new();
    let item_of = |object: &Object, first: usize, restage: bool, status: ItemStatus| {
        let deadline_s = deadline_of(object, first);
        PlanItem {
            uri: object.uri.clone(),
            bytes: object.bytes,
            size_known: object.size_known,
            consumers: object.readers[first..]
                .iter()
                .map(|r| r.task.clone())
                .collect(),
            producer: object.producer.clone(),
            ready_s: object.ready_s,
            deadline_s,
            latest_start_s: deadline_s - duration_of(object.bytes),
            window: None,
            evicts: Vec::new(),
            restage,
            status,
        }
    };

    // What the cache holds: objects of this plan that are cached, and other entries that
    // count against the budget (no reader in this run: dead, unless leased).
    let cached_by_uri: HashMap<&str, &CachedEntry> =
        cached.iter().map(|c| (c.uri.as_str(), c)).collect();
    // Residents: (object index or None for a foreign entry, uri, bytes, leased).
    let mut residents: Vec<(Option<usize>, String, u64, bool)> = Vec::new();
    for entry in cached {
        let object = index.get(&entry.uri).copied();
        let bytes = match object {
            Some(i) => {
                // The cache's size is the truth for a cached object.
                objects[i].bytes = entry.bytes;
                objects[i].size_known = true;
                unknown_sizes.remove(&entry.uri);
                entry.bytes
            }
            None => entry.bytes,
        };
        residents.push((object, entry.uri.clone(), bytes, entry.leased));
    }

    let mut queue = BinaryHeap::new();
    let mut seq = 0;
    for (i, object) in objects.iter().enumerate() {
        if object.readers.is_empty() {
            continue;
        }
        if cached_by_uri.contains_key(object.uri.as_str()) {
            items.push(item_of(object, 0, false, ItemStatus::Cached));
            continue;
        }
        if object
            .uri
            .starts_with(kfcache_parser::model::TASK_URI_SCHEME)
        {
            unstaged.push(item_of(object, 0, false, ItemStatus::WrittenThrough));
            continue;
        }
        if !stageable(&object.uri) {
            unstaged.push(item_of(object, 0, false, ItemStatus::Unsupported));
            continue;
        }
        queue.push(Pending {
            deadline_s: deadline_of(object, 0),
            seq,
            object: i,
            first_reader: 0,
            restage: false,
        });
        seq += 1;
    }

    let resident_view = |residents: &[(Option<usize>, String, u64, bool)],
                         objects: &[Object],
                         t: f64|
     -> Vec<Resident> {
        residents
            .iter()
            .map(|(object, _, bytes, leased)| match object {
                Some(i) => {
                    let mut r = objects[*i].resident_at(t);
                    r.pinned |= *leased;
                    r
                }
                None => Resident {
                    bytes: *bytes,
                    next_use_s: None,
                    pinned: *leased,
                },
            })
            .collect()
    };

    let mut pipe_free = now;
    let mut peak: u64 = residents.iter().map(|r| r.2).sum();
    // The pipe takes, among the items that can be staged when it is free, the one with the
    // earliest deadline: an upstream output not written yet does not hold up the others.
    let mut not_ready: Vec<Pending> = Vec::new();
    loop {
        let Some(pending) = queue.pop() else {
            match not_ready
                .iter()
                .map(|p| objects[p.object].ready_s)
                .reduce(f64::min)
            {
                Some(ready) => {
                    pipe_free = pipe_free.max(ready);
                    queue.extend(not_ready.drain(..));
                    continue;
                }
                None => break,
            }
        };
        if objects[pending.object].ready_s > pipe_free {
            not_ready.push(pending);
            continue;
        }
        queue.extend(not_ready.drain(..));
        let object = &objects[pending.object];
        let first_use = object.readers[pending.first_reader].start_s;
        let mut t = pipe_free.max(object.ready_s);
        // Times at which room may appear: readers finishing or starting.
        let mut events: Vec<f64> = residents
            .iter()
            .filter_map(|(o, ..)| o.map(|i| &objects[i]))
            .flat_map(|o| o.readers.iter().flat_map(|r| [r.start_s, r.end_s]))
            .filter(|&e| e > t)
            .collect();
        events.sort_by(f64::total_cmp);
        events.dedup();
        let mut events = events.into_iter();
        let decision = loop {
            let view = resident_view(&residents, &objects, t);
            match choose_victims(&view, config.budget_bytes, object.bytes, first_use) {
                Victims::Evict(victims) => break Ok(victims),
                Victims::Refused { short_bytes } => match events.next() {
                    Some(next) if next <= deadline_of(object, pending.first_reader) => {
                        t = next;
                    }
                    _ => break Err(short_bytes),
                },
            }
        };
        match decision {
            Ok(victims) => {
                let mut item = item_of(
                    object,
                    pending.first_reader,
                    pending.restage,
                    ItemStatus::Planned,
                );
                let mut victims = victims;
                victims.sort_unstable_by(|a, b| b.cmp(a));
                let mut evicted = Vec::new();
                for v in victims {
                    let (victim_object, uri, _, _) = residents.remove(v);
                    // A reader that starts after `t` still needs it: plan it again.
                    if let Some(o) = victim_object {
                        if let Some(next) = objects[o]
                            .readers
                            .iter()
                            .position(|r| !r.running && r.start_s > t)
                        {
                            queue.push(Pending {
                                deadline_s: deadline_of(&objects[o], next),
                                seq,
                                object: o,
                                first_reader: next,
                                restage: true,
                            });
                            seq += 1;
                        }
                    }
                    evicted.push(uri);
                }
                evicted.reverse();
                item.evicts = evicted;
                let end = t + duration_of(object.bytes);
                item.window = Some((t, end));
                if end > item.deadline_s + 1e-9 {
                    item.status = ItemStatus::Late;
                }
                pipe_free = end;
                residents.push((
                    Some(pending.object),
                    object.uri.clone(),
                    object.bytes,
                    false,
                ));
                peak = peak.max(residents.iter().map(|r| r.2).sum());
                items.push(item);
            }
            Err(short_bytes) => {
                unstaged.push(item_of(
                    object,
                    pending.first_reader,
                    pending.restage,
                    ItemStatus::NoRoom { short_bytes },
                ));
                // A later reader may still be served once room frees.
                let later = object
                    .readers
                    .iter()
                    .enumerate()
                    .skip(pending.first_reader + 1)
                    .find(|(_, r)| !r.running && r.start_s > first_use)
                    .map(|(n, _)| n);
                if let Some(next) = later {
                    queue.push(Pending {
                        deadline_s: deadline_of(object, next),
                        seq,
                        object: pending.object,
                        first_reader: next,
                        restage: pending.restage,
                    });
                    seq += 1;
                }
            }
        }
    }

    // Notes for the user.
    for item in &unstaged {
        if let ItemStatus::NoRoom { short_bytes } = item.status {
            notes.push(format!(
                "{} ({} bytes) for {} does not fit in the budget of {} bytes by its deadline: {} bytes short; the other inputs are staged",
                item.uri,
                item.bytes,
                item.consumers.first().map(String::as_str).unwrap_or("?"),
                config.budget_bytes,
                short_bytes
            ));
        }
    }
    let late = items
        .iter()
        .filter(|i| i.status == ItemStatus::Late)
        .count();
    if late > 0 {
        notes.push(format!(
            "{late} item(s) finish staging after their deadline at {:.0} MB/s",
            config.bandwidth_bytes_per_s / 1e6
        ));
    }
    if !unknown_sizes.is_empty() {
        notes.push(format!(
            "{} input(s) have no known size and count as 0 bytes in the plan (`kfcache predict --probe-sizes` stores sizes): {}",
            unknown_sizes.len(),
            unknown_sizes.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    items.extend(unstaged);
    Plan {
        config: config.clone(),
        items,
        peak_bytes: peak,
        notes,
        readers: objects
            .into_iter()
            .filter(|o| !o.readers.is_empty())
            .map(|o| (o.uri, o.readers))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
