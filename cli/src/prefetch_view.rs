//! What `kfcache prefetch` shows while it stages: progress bars on a terminal, JSON lines
//! otherwise, nothing when asked to be quiet.
//!
//! A [`Reporter`] listens to the executor's [`Event`]s, which arrive from many tokio tasks at
//! once; it takes `&self` and keeps its state behind one mutex. [`Event::Progress`] arrives
//! for every chunk read, so its handling is a map look-up and two bar moves (terminal) or a
//! throttle check (JSON lines).
//!
//! - **Terminal** ([`ReportMode::Tty`]): an indicatif `MultiProgress` on stderr with one
//!   overall bar (bytes staged of the plan's staged bytes; objects, rate, ETA and the counts
//!   of what went differently in its message) and one bar per object being staged. Hits,
//!   evictions, retries, objects without room, failures and deadline misses are printed as
//!   lines above the bars.
//! - **JSON lines** ([`ReportMode::JsonLines`]): one object per line on stdout, each
//!   event's serde form (`{"event":"staged",…}`) plus `"time"` (RFC 3339). Progress is
//!   throttled to about one line per object per second or per tenth of the object; the run
//!   ends with `{"event":"summary",…}`; notes are `{"event":"note","text":…}`.
//! - **Quiet** ([`ReportMode::Quiet`]): nothing.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kfcache_prefetcher::execute::{Event, EvictReason, Summary};
use kfcache_prefetcher::plan::Plan;
use serde_json::{Map, Value};

use crate::config::human_size;
use kfcache_ops::units::duration;

/// Longest object name shown beside a transfer's bar.
const BAR_NAME_WIDTH: usize = 36;
/// A JSON progress line at least this often per object…
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// …or when this share of the object has been read since the last one.
const PROGRESS_FRACTION: f64 = 0.1;

/// Where and how progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportMode {
    /// Progress bars on stderr.
    Tty,
    /// One JSON object per line on stdout.
    JsonLines,
    /// Nothing.
    Quiet,
}

impl ReportMode {
    /// Bars when stderr is a terminal, JSON lines otherwise (logs, CI, pipes).
    pub fn detect() -> ReportMode {
        if std::io::stderr().is_terminal() {
            ReportMode::Tty
        } else {
            ReportMode::JsonLines
        }
    }
}

/// Shows the events of one prefetch as they happen. Shareable between tasks (`Send + Sync`).
#[derive(Debug)]
pub struct Reporter {
    view: View,
}

#[derive(Debug)]
enum View {
    Tty(Box<TtyView>),
    Json(JsonView),
    Quiet,
}

impl Reporter {
    /// A reporter for `plan`: bars on stderr, JSON lines on stdout, or nothing.
    pub fn new(plan: &Plan, mode: ReportMode) -> Reporter {
        Reporter::with_outputs(
            plan,
            mode,
            Box::new(std::io::stdout()),
            ProgressDrawTarget::stderr(),
        )
    }

    /// A reporter writing JSON lines to `out` and drawing bars on `bars`.
    fn with_outputs(
        plan: &Plan,
        mode: ReportMode,
        out: Box<dyn Write + Send>,
        bars: ProgressDrawTarget,
    ) -> Reporter {
        let view = match mode {
            ReportMode::Tty => View::Tty(Box::new(TtyView::new(plan, bars))),
            ReportMode::JsonLines => View::Json(JsonView::new(out)),
            ReportMode::Quiet => View::Quiet,
        };
        Reporter { view }
    }

    /// Shows one event.
    pub fn event(&self, event: &Event) {
        match &self.view {
            View::Tty(view) => view.event(event),
            View::Json(view) => view.event(event),
            View::Quiet => {}
        }
    }

    /// Follows a further plan of the same run (a re-plan in `--follow`): what it stages is
    /// added to the overall bar.
    pub fn replan(&self, plan: &Plan) {
        if let View::Tty(view) = &self.view {
            let mut state = lock(&view.state);
            let length = state.overall.length().unwrap_or(0);
            state
                .overall
                .set_length(length.saturating_add(plan.staged_bytes()));
            state.staging.extend(TtyView::staging(plan));
        }
    }

    /// Shows a free-form note (a re-plan, a pause in `--follow`).
    pub fn message(&self, text: &str) {
        match &self.view {
            View::Tty(view) => view.line("note", text),
            View::Json(view) => {
                let mut object = Map::new();
                object.insert("event".into(), "note".into());
                object.insert("text".into(), text.into());
                view.write(object);
            }
            View::Quiet => {}
        }
    }

    /// Shows the totals of the execution and ends the bars.
    pub fn finish(&self, summary: &Summary) {
        match &self.view {
            View::Tty(view) => view.finish(summary),
            View::Json(view) => {
                let mut object = match serde_json::to_value(summary) {
                    Ok(Value::Object(fields)) => fields,
                    _ => Map::new(),
                };
                object.insert("event".into(), "summary".into());
                view.write(object);
            }
            View::Quiet => {}
        }
    }
}

/// `uri` cut to at most `max` characters from its end (what the object is), starting at a
/// path segment where that keeps enough of it, with `…` for what is left out.
pub(crate) fn uri_tail(uri: &str, max: usize) -> String {
    let count = uri.chars().count();
    if count <= max {
        return uri.to_string();
    }
    let keep = max.saturating_sub(1);
    let tail: String = uri.chars().skip(count - keep).collect();
    // Start at a `/` when what follows it is still at least half the room.
    let body = tail.trim_end_matches('/');
    let tail = match body.find('/') {
        Some(slash) if tail[slash..].chars().count() * 2 >= keep => tail[slash..].to_string(),
        _ => tail,
    };
    format!("…{tail}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn overall_style() -> ProgressStyle {
    style(
        "{prefix:.bold} [{bar:32.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} \
         ETA {eta} {wide_msg}",
    )
}

fn transfer_style() -> ProgressStyle {
    style("  {prefix} [{bar:24}] {bytes}/{total_bytes} {binary_bytes_per_sec}")
}

/// What went differently, shown in the overall bar's message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    staged: u64,
    hits: u64,
    evictions: u64,
    retries: u64,
    no_room: u64,
    waiting: u64,
    failed: u64,
    late: u64,
}

impl Counts {
    fn message(&self) -> String {
        let mut parts = vec![format!("{} staged", self.staged)];
        for (n, what) in [
            (self.hits, "hit"),
            (self.evictions, "evicted"),
            (self.retries, "retried"),
            (self.no_room, "no room"),
            (self.waiting, "waiting"),
            (self.failed, "failed"),
            (self.late, "late"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.join(" · ")
    }
}

/// One object being staged, with its bar.
#[derive(Debug)]
struct Transfer {
    bar: ProgressBar,
    /// Its bytes credited to the overall bar so far.
    counted: u64,
}

#[derive(Debug)]
struct TtyState {
    overall: ProgressBar,
    /// Plan item URI → bytes, for the items the plan stages (what the overall bar totals).
    staging: HashMap<String, u64>,
    transfers: HashMap<String, Transfer>,
    counts: Counts,
}

#[derive(Debug)]
struct TtyView {
    multi: MultiProgress,
    state: Mutex<TtyState>,
}

impl TtyView {
    fn new(plan: &Plan, target: ProgressDrawTarget) -> TtyView {
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(Self::overall_bar(plan));
        TtyView {
            multi,
            state: Mutex::new(TtyState {
                overall,
                staging: Self::staging(plan),
                transfers: HashMap::new(),
                counts: Counts::default(),
            }),
        }
    }

    fn overall_bar(plan: &Plan) -> ProgressBar {
        let bar = ProgressBar::new(plan.staged_bytes())
            .with_style(overall_style())
            .with_prefix("staging")
            .with_message(Counts::default().message());
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }

    fn staging(plan: &Plan) -> HashMap<String, u64> {
        plan.staged().map(|i| (i.uri.clone(), i.bytes)).collect()
    }

    /// A line above the bars: `what` in a fixed-width column, then the text.
    fn line(&self, what: &str, text: &str) {
        // A terminal that went away is not worth failing a prefetch for.
        let _ = self.multi.println(format!("{what:<8} {text}"));
    }

    /// Moves the overall bar by `delta` bytes (negative: back), keeping its total at least
    /// its position.
    fn credit(overall: &ProgressBar, delta: i128) {
        let position = (i128::from(overall.position()) + delta).max(0);
        let position = u64::try_from(position).unwrap_or(u64::MAX);
        overall.set_position(position);
        if overall.length().is_some_and(|length| position > length) {
            overall.set_length(position);
        }
    }

    /// Takes `bytes` off the overall bar's total (work that will not happen).
    fn shrink(overall: &ProgressBar, bytes: u64) {
        if let Some(length) = overall.length() {
            overall.set_length(length.saturating_sub(bytes).max(overall.position()));
        }
    }

    fn end_transfer(&self, state: &mut TtyState, uri: &str) -> Option<Transfer> {
        let transfer = state.transfers.remove(uri)?;
        transfer.bar.finish_and_clear();
        self.multi.remove(&transfer.bar);
        Some(transfer)
    }

    fn event(&self, event: &Event) {
        let mut state = lock(&self.state);
        match event {
            Event::Progress { uri, done, .. } => {
                let state = &mut *state;
                if let Some(transfer) = state.transfers.get_mut(uri) {
                    // Ranges are read in parallel: their reports can arrive out of order.
                    if *done > transfer.counted {
                        Self::credit(&state.overall, i128::from(done - transfer.counted));
                        transfer.counted = *done;
                        transfer.bar.set_position(*done);
                    }
                }
                // Progress does not change the counts.
                return;
            }
            Event::Start { uri, bytes, .. } => {
                if let Some(old) = self.end_transfer(&mut state, uri) {
                    Self::credit(&state.overall, -i128::from(old.counted));
                }
                let bar = self.multi.add(
                    ProgressBar::new(*bytes)
                        .with_style(transfer_style())
                        .with_prefix(format!(
                            "{:<BAR_NAME_WIDTH$}",
                            uri_tail(uri, BAR_NAME_WIDTH)
                        )),
                );
                state
                    .transfers
                    .insert(uri.clone(), Transfer { bar, counted: 0 });
            }
            Event::Staged {
                uri,
                bytes,
                seconds,
                finished_s,
                deadline_s,
                met_deadline,
                ..
            } => {
                let counted = self.end_transfer(&mut state, uri).map_or(0, |t| t.counted);
                Self::credit(&state.overall, i128::from(*bytes) - i128::from(counted));
                state.counts.staged += 1;
                if !met_deadline {
                    state.counts.late += 1;
                    self.line(
                        "late",
                        &format!(
                            "{uri} ({}) staged in {}, {} after its deadline",
                            human_size(*bytes),
                            duration(*seconds),
                            duration(finished_s - deadline_s)
                        ),
                    );
                }
            }
            Event::Hit { uri, item, bytes } => {
                state.counts.hits += 1;
                // A hit on an item the plan stages is work done; a cached item never was in
                // the total.
                if state.staging.contains_key(item) {
                    Self::credit(&state.overall, i128::from(*bytes));
                }
                // A directory being staged reports its current objects as one hit once its
                // copy ends: they are not copied, and when nothing else was, no `Staged`
                // follows.
                let remaining = state.transfers.get(uri).map(|transfer| {
                    let length = transfer.bar.length().unwrap_or(0).saturating_sub(*bytes);
                    transfer.bar.set_length(length);
                    length
                });
                if remaining == Some(0) {
                    self.end_transfer(&mut state, uri);
                }
                self.line(
                    "hit",
                    &format!("{uri} ({}) is already current", human_size(*bytes)),
                );
            }
            Event::Evicted {
                uri,
                bytes,
                reason,
                for_uri,
            } => {
                state.counts.evictions += 1;
                let why = match reason {
                    EvictReason::Dead => "no task reads it any more",
                    EvictReason::FurthestNextUse => "its next read is the furthest",
                };
                self.line(
                    "evicted",
                    &format!("{uri} ({}) for {for_uri}: {why}", human_size(*bytes)),
                );
            }
            Event::Retry {
                uri,
                attempt,
                delay_ms,
                error,
            } => {
                // An object read again from its start moves its bars again only past what
                // was read before: the bytes are counted once.
                state.counts.retries += 1;
                self.line(
                    "retry",
                    &format!(
                        "{uri}: try {} in {}: {error}",
                        attempt + 1,
                        duration_ms(*delay_ms)
                    ),
                );
            }
            Event::NoRoom {
                uri,
                item,
                bytes,
                short_bytes,
            } => {
                state.counts.no_room += 1;
                if state.staging.contains_key(item) {
                    Self::shrink(&state.overall, *bytes);
                }
                self.line(
                    "no room",
                    &format!(
                        "{uri} ({}) does not fit the budget now: {} short",
                        human_size(*bytes),
                        human_size(*short_bytes)
                    ),
                );
            }
            Event::Waiting {
                uri,
                producer,
                ready_s,
            } => {
                state.counts.waiting += 1;
                if let Some(bytes) = state.staging.get(uri).copied() {
                    Self::shrink(&state.overall, bytes);
                }
                self.line(
                    "waiting",
                    &format!(
                        "{uri}: {producer} has not written it yet (predicted at {} from the \
                         run's start); a later plan stages it",
                        duration(*ready_s)
                    ),
                );
            }
            Event::Failed { uri, item, error } => {
                state.counts.failed += 1;
                let planned = state.staging.get(item).copied();
                match self.end_transfer(&mut state, uri) {
                    Some(transfer) => {
                        Self::credit(&state.overall, -i128::from(transfer.counted));
                        Self::shrink(&state.overall, transfer.bar.length().unwrap_or(0));
                    }
                    // The item itself failed (listing, size) before any object started.
                    None if uri == item => Self::shrink(&state.overall, planned.unwrap_or(0)),
                    None => {}
                }
                self.line("failed", &format!("{uri}: {error}"));
            }
        }
        state.overall.set_message(state.counts.message());
    }

    fn finish(&self, summary: &Summary) {
        let mut state = lock(&self.state);
        let uris: Vec<String> = state.transfers.keys().cloned().collect();
        for uri in uris {
            self.end_transfer(&mut state, &uri);
        }
        state.overall.finish_and_clear();
        self.multi.remove(&state.overall);
        for line in summary_lines(summary) {
            self.line("done", &line);
        }
    }
}

fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        duration(ms as f64 / 1000.0)
    }
}

/// The totals of an execution, for people.
fn summary_lines(summary: &Summary) -> Vec<String> {
    let mut first = format!(
        "staged {} object(s), {} in {}",
        summary.objects_staged,
        human_size(summary.bytes_staged),
        duration(summary.seconds)
    );
    if summary.hits > 0 {
        first.push_str(&format!(
            "; {} already current ({})",
            summary.hits,
            human_size(summary.hit_bytes)
        ));
    }
    if summary.evictions > 0 {
        first.push_str(&format!(
            "; evicted {} ({})",
            summary.evictions,
            human_size(summary.evicted_bytes)
        ));
    }
    first.push_str(&format!("; cache peak {}", human_size(summary.peak_bytes)));
    let mut lines = vec![first];
    let mut trouble = Vec::new();
    for (n, what) in [
        (summary.deadline_misses, "missed its deadline"),
        (summary.retries, "retried"),
        (summary.no_room, "found no room"),
        (summary.waiting, "waited for their producer"),
        (summary.failed, "failed"),
    ] {
        if n > 0 {
            trouble.push(format!("{n} {what}"));
        }
    }
    if !trouble.is_empty() {
        lines.push(trouble.join(", "));
    }
    if !summary.deferred.is_empty() {
        const SHOWN: usize = 5;
        let mut text = format!(
            "not staged (a later run tries again): {}",
            summary
                .deferred
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        if summary.deferred.len() > SHOWN {
            text.push_str(&format!(" and {} more", summary.deferred.len() - SHOWN));
        }
        lines.push(text);
    }
    lines
}

/// The last progress line written for an object.
#[derive(Debug, Clone, Copy)]
struct Throttle {
    at: Instant,
    done: u64,
}

struct JsonView {
    out: Mutex<Box<dyn Write + Send>>,
    throttle: Mutex<HashMap<String, Throttle>>,
    /// Set when a line could not be written (stdout closed): nothing more is tried.
    broken: AtomicBool,
}

impl std::fmt::Debug for JsonView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonView").finish_non_exhaustive()
    }
}

impl JsonView {
    fn new(out: Box<dyn Write + Send>) -> JsonView {
        JsonView {
            out: Mutex::new(out),
            throttle: Mutex::new(HashMap::new()),
            broken: AtomicBool::new(false),
        }
    }

    /// Whether a progress report of `uri` is due, and if so, remembers it as written.
    fn progress_due(&self, uri: &str, done: u64, bytes: u64) -> bool {
        let now = Instant::now();
        let mut throttle = lock(&self.throttle);
        let Some(last) = throttle.get_mut(uri) else {
            throttle.insert(uri.to_string(), Throttle { at: now, done });
            return true;
        };
        let step = (bytes as f64 * PROGRESS_FRACTION).max(1.0) as u64;
        let due = done > last.done
            && (now.duration_since(last.at) >= PROGRESS_INTERVAL || done - last.done >= step);
        if due {
            *last = Throttle { at: now, done };
        }
        due
    }

    fn event(&self, event: &Event) {
        match event {
            Event::Progress { uri, done, bytes } => {
                if !self.progress_due(uri, *done, *bytes) {
                    return;
                }
            }
            Event::Start { uri, .. } => {
                lock(&self.throttle).insert(
                    uri.clone(),
                    Throttle {
                        at: Instant::now(),
                        done: 0,
                    },
                );
            }
            Event::Retry { uri, .. } => {
                if let Some(last) = lock(&self.throttle).get_mut(uri) {
                    last.done = 0;
                }
            }
            Event::Staged { uri, .. } | Event::Failed { uri, .. } => {
                lock(&self.throttle).remove(uri);
            }
            Event::Hit { .. }
            | Event::Evicted { .. }
            | Event::NoRoom { .. }
            | Event::Waiting { .. } => {}
        }
        if let Ok(Value::Object(object)) = serde_json::to_value(event) {
            self.write(object);
        }
    }

    /// Writes `object` with the time as one line, and flushes it.
    fn write(&self, mut object: Map<String, Value>) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        object.insert(
            "time".into(),
            Utc::now()
                .to_rfc3339_opts(SecondsFormat::Millis, true)
                .into(),
        );
        let mut line = match serde_json::to_vec(&object) {
            Ok(line) => line,
            Err(_) => return,
        };
        line.push(b'\n');
        let mut out = lock(&self.out);
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            // The reader went away (a closed pipe): staging goes on without output.
            self.broken.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kfcache_prefetcher::plan::{plan, PlanConfig, PlanInput, PlanTask, TaskState};
    use std::sync::Arc;

    /// A `Write` whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<Value> {
            String::from_utf8(lock(&self.0).clone())
                .expect("JSON lines are UTF-8")
                .lines()
                .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
                .collect()
        }
    }

    fn task(id: &str, start_s: f64, inputs: &[(&str, u64)]) -> PlanTask {
        PlanTask {
            id: id.to_string(),
            gpus: 1,
            start_s,
            end_s: start_s + 600.0,
            runs: true,
            state: TaskState::Pending,
            inputs: inputs
                .iter()
                .map(|(uri, bytes)| PlanInput {
                    name: "data".to_string(),
                    uri: uri.to_string(),
                    bytes: Some(*bytes),
                })
                .collect(),
            outputs: Vec::new(),
        }
    }

    fn sample_plan() -> Plan {
        let tasks = [
            task("train", 600.0, &[("s3://bucket/data/train.parquet", 4_000)]),
            task("eval", 1800.0, &[("s3://bucket/data/eval.parquet", 1_000)]),
        ];
        plan(&tasks, &[], &PlanConfig::default())
    }

    fn reporter(plan: &Plan, mode: ReportMode) -> (Reporter, Buffer) {
        let buffer = Buffer::default();
        let reporter = Reporter::with_outputs(
            plan,
            mode,
            Box::new(buffer.clone()),
            ProgressDrawTarget::hidden(),
        );
        (reporter, buffer)
    }

    fn start(uri: &str, bytes: u64) -> Event {
        Event::Start {
            uri: uri.to_string(),
            item: uri.to_string(),
            bytes,
            deadline_s: 570.0,
        }
    }

    fn progress(uri: &str, done: u64, bytes: u64) -> Event {
        Event::Progress {
            uri: uri.to_string(),
            done,
            bytes,
        }
    }

    fn staged(uri: &str, bytes: u64, met_deadline: bool) -> Event {
        Event::Staged {
            uri: uri.to_string(),
            item: uri.to_string(),
            bytes,
            seconds: 2.0,
            finished_s: if met_deadline { 100.0 } else { 700.0 },
            deadline_s: 570.0,
            met_deadline,
        }
    }

    fn every_kind_but_progress(uri: &str) -> Vec<Event> {
        vec![
            start(uri, 10),
            staged(uri, 10, true),
            Event::Hit {
                uri: uri.to_string(),
                item: uri.to_string(),
                bytes: 10,
            },
            Event::Evicted {
                uri: uri.to_string(),
                bytes: 10,
                reason: EvictReason::FurthestNextUse,
                for_uri: "s3://bucket/other".to_string(),
            },
            Event::Retry {
                uri: uri.to_string(),
                attempt: 1,
                delay_ms: 200,
                error: "503".to_string(),
            },
            Event::NoRoom {
                uri: uri.to_string(),
                item: uri.to_string(),
                bytes: 10,
                short_bytes: 5,
            },
            Event::Waiting {
                uri: uri.to_string(),
                producer: "prepare".to_string(),
                ready_s: 60.0,
            },
            Event::Failed {
                uri: uri.to_string(),
                item: uri.to_string(),
                error: "gone".to_string(),
            },
        ]
    }

    #[test]
    fn prefetch_view_reporter_is_shareable_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Reporter>();
    }

    #[test]
    fn prefetch_view_json_lines_carry_each_event_with_its_serde_form_and_time() {
        let plan = sample_plan();
        let (reporter, out) = reporter(&plan, ReportMode::JsonLines);
        let events = every_kind_but_progress("s3://bucket/data/train.parquet");
        for event in &events {
            reporter.event(event);
        }
        let lines = out.lines();
        assert_eq!(lines.len(), events.len());
        for (line, event) in lines.iter().zip(&events) {
            let mut line = line.as_object().expect("an object").clone();
            let time = line.remove("time").expect("a time field");
            chrono::DateTime::parse_from_rfc3339(time.as_str().expect("a string"))
                .expect("RFC 3339");
            assert_eq!(
                Value::Object(line),
                serde_json::to_value(event).expect("events serialize")
            );
        }
    }

    #[test]
    fn prefetch_view_json_summary_and_notes() {
        let plan = sample_plan();
        let (reporter, out) = reporter(&plan, ReportMode::JsonLines);
        let summary = Summary {
            objects_staged: 2,
            bytes_staged: 5_000,
            deferred: vec!["s3://bucket/big".to_string()],
            ..Summary::default()
        };
        reporter.message("re-planned after train started");
        reporter.finish(&summary);
        let lines = out.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "note");
        assert_eq!(lines[0]["text"], "re-planned after train started");
        assert_eq!(lines[1]["event"], "summary");
        let expected = serde_json::to_value(&summary).expect("summaries serialize");
        for (field, value) in expected.as_object().expect("an object") {
            assert_eq!(&lines[1][field], value, "summary field {field}");
        }
    }

    #[test]
    fn prefetch_view_json_progress_is_throttled_per_tenth_of_the_object() {
        let plan = sample_plan();
        let (reporter, out) = reporter(&plan, ReportMode::JsonLines);
        let uri = "s3://bucket/data/train.parquet";
        let bytes = 1_000;
        reporter.event(&start(uri, bytes));
        let chunks = 200;
        for i in 1..=chunks {
            reporter.event(&progress(uri, i * bytes / chunks, bytes));
        }
        reporter.event(&staged(uri, bytes, true));
        let lines = out.lines();
        let progress: Vec<u64> = lines
            .iter()
            .filter(|l| l["event"] == "progress")
            .map(|l| l["done"].as_u64().expect("done is a count"))
            .collect();
        // Reported, at most about once per tenth, and always forward.
        assert!(!progress.is_empty());
        assert!(progress.len() <= 11, "{} progress lines", progress.len());
        assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
        assert!(progress.windows(2).all(|w| w[1] - w[0] >= bytes / 10));
        assert_eq!(lines.first().map(|l| &l["event"]), Some(&"start".into()));
        assert_eq!(lines.last().map(|l| &l["event"]), Some(&"staged".into()));
    }

    #[test]
    fn prefetch_view_json_progress_comes_at_least_each_second() {
        let plan = sample_plan();
        let (reporter, out) = reporter(&plan, ReportMode::JsonLines);
        let uri = "s3://bucket/data/train.parquet";
        reporter.event(&start(uri, 1_000_000));
        reporter.event(&progress(uri, 1, 1_000_000));
        std::thread::sleep(PROGRESS_INTERVAL + Duration::from_millis(50));
        reporter.event(&progress(uri, 2, 1_000_000));
        let progress = out
            .lines()
            .iter()
            .filter(|l| l["event"] == "progress")
            .count();
        assert_eq!(progress, 1, "a small step is reported once a second passed");
    }

    #[test]
    fn prefetch_view_quiet_writes_nothing() {
        let plan = sample_plan();
        let (reporter, out) = reporter(&plan, ReportMode::Quiet);
        for event in every_kind_but_progress("s3://bucket/data/train.parquet") {
            reporter.event(&event);
        }
        reporter.message("note");
        reporter.finish(&Summary::default());
        assert!(out.lines().is_empty());
    }

    fn tty_state(reporter: &Reporter) -> MutexGuard<'_, TtyState> {
        match &reporter.view {
            View::Tty(view) => lock(&view.state),
            _ => panic!("not a terminal view"),
        }
    }

    #[test]
    fn prefetch_view_overall_bar_reaches_the_plan_total() {
        let plan = sample_plan();
        let (reporter, _) = reporter(&plan, ReportMode::Tty);
        let total = plan.staged_bytes();
        assert_eq!(tty_state(&reporter).overall.length(), Some(total));
        let train = "s3://bucket/data/train.parquet";
        let eval = "s3://bucket/data/eval.parquet";
        let train_bytes = plan.items.iter().find(|i| i.uri == train).map(|i| i.bytes);
        let eval_bytes = plan.items.iter().find(|i| i.uri == eval).map(|i| i.bytes);
        let (train_bytes, eval_bytes) = (
            train_bytes.expect("train is planned"),
            eval_bytes.expect("eval is planned"),
        );

        reporter.event(&start(train, train_bytes));
        reporter.event(&progress(train, train_bytes / 2, train_bytes));
        // A report that arrives after a later one does not move the bars back.
        reporter.event(&progress(train, train_bytes / 4, train_bytes));
        {
            let state = tty_state(&reporter);
            assert_eq!(state.overall.position(), train_bytes / 2);
            assert_eq!(state.transfers[train].bar.position(), train_bytes / 2);
        }
        reporter.event(&staged(train, train_bytes, true));
        reporter.event(&Event::Hit {
            uri: eval.to_string(),
            item: eval.to_string(),
            bytes: eval_bytes,
        });
        let state = tty_state(&reporter);
        assert!(
            state.transfers.is_empty(),
            "finished transfers lose their bar"
        );
        assert_eq!(state.overall.position(), total);
        assert_eq!(state.counts.staged, 1);
        assert_eq!(state.counts.hits, 1);
    }

    #[test]
    fn prefetch_view_bytes_read_again_count_once_and_a_failure_takes_them_back() {
        let plan = sample_plan();
        let (reporter, _) = reporter(&plan, ReportMode::Tty);
        let total = plan.staged_bytes();
        let uri = "s3://bucket/data/train.parquet";
        reporter.event(&start(uri, 4_000));
        reporter.event(&progress(uri, 3_000, 4_000));
        reporter.event(&Event::Retry {
            uri: uri.to_string(),
            attempt: 1,
            delay_ms: 100,
            error: "connection reset".to_string(),
        });
        // The retry reads from the start again.
        reporter.event(&progress(uri, 1_000, 4_000));
        assert_eq!(tty_state(&reporter).overall.position(), 3_000);
        reporter.event(&progress(uri, 3_500, 4_000));
        assert_eq!(tty_state(&reporter).overall.position(), 3_500);
        reporter.event(&Event::Failed {
            uri: uri.to_string(),
            item: uri.to_string(),
            error: "gone".to_string(),
        });
        let state = tty_state(&reporter);
        assert_eq!(state.overall.position(), 0);
        assert_eq!(state.overall.length(), Some(total - 4_000));
        assert_eq!((state.counts.retries, state.counts.failed), (1, 1));
        let message = state.overall.message();
        assert!(
            message.contains("1 retried") && message.contains("1 failed"),
            "{message}"
        );
    }

    #[test]
    fn prefetch_view_late_and_no_room_are_counted() {
        let plan = sample_plan();
        let (reporter, _) = reporter(&plan, ReportMode::Tty);
        let total = plan.staged_bytes();
        let uri = "s3://bucket/data/eval.parquet";
        reporter.event(&Event::NoRoom {
            uri: uri.to_string(),
            item: uri.to_string(),
            bytes: 1_000,
            short_bytes: 10,
        });
        reporter.event(&start("s3://bucket/data/train.parquet", 4_000));
        reporter.event(&staged("s3://bucket/data/train.parquet", 4_000, false));
        let state = tty_state(&reporter);
        assert_eq!(state.overall.length(), Some(total - 1_000));
        assert_eq!((state.counts.no_room, state.counts.late), (1, 1));
        let message = state.overall.message();
        assert!(
            message.contains("1 no room") && message.contains("1 late"),
            "{message}"
        );
    }

    #[test]
    fn prefetch_view_replan_adds_the_new_work_to_the_overall_bar() {
        let plan = sample_plan();
        let (reporter, _) = reporter(&plan, ReportMode::Tty);
        let total = plan.staged_bytes();
        reporter.event(&start("s3://bucket/data/train.parquet", 4_000));
        reporter.event(&staged("s3://bucket/data/train.parquet", 4_000, true));
        let shards = "s3://bucket/shards/";
        let next = plan_of(&[task("finetune", 3600.0, &[(shards, 2_000)])]);
        reporter.replan(&next);
        // A hit on an item of the new plan is work done.
        reporter.event(&Event::Hit {
            uri: shards.to_string(),
            item: shards.to_string(),
            bytes: 2_000,
        });
        let state = tty_state(&reporter);
        assert_eq!(state.overall.length(), Some(total + next.staged_bytes()));
        assert_eq!(state.overall.position(), 4_000 + 2_000);
        assert_eq!((state.counts.staged, state.counts.hits), (1, 1));
    }

    fn plan_of(tasks: &[PlanTask]) -> Plan {
        plan(tasks, &[], &PlanConfig::default())
    }

    #[test]
    fn prefetch_view_directory_with_current_objects_ends_its_bar() {
        let shards = "s3://bucket/shards/";
        let plan = plan_of(&[task("train", 600.0, &[(shards, 5_000)])]);
        let (reporter, _) = reporter(&plan, ReportMode::Tty);
        // Some objects copied, the others current: a hit, then `Staged` for the copied.
        reporter.event(&start(shards, 5_000));
        reporter.event(&progress(shards, 2_000, 5_000));
        reporter.event(&Event::Hit {
            uri: shards.to_string(),
            item: shards.to_string(),
            bytes: 3_000,
        });
        assert!(tty_state(&reporter).transfers.contains_key(shards));
        reporter.event(&staged(shards, 2_000, true));
        {
            let state = tty_state(&reporter);
            assert!(state.transfers.is_empty());
            assert_eq!(state.overall.position(), plan.staged_bytes());
        }
        // Every object current: the hit alone ends the bar.
        reporter.event(&start(shards, 5_000));
        reporter.event(&Event::Hit {
            uri: shards.to_string(),
            item: shards.to_string(),
            bytes: 5_000,
        });
        assert!(tty_state(&reporter).transfers.is_empty());
    }

    #[test]
    fn prefetch_view_waiting_output_leaves_the_total() {
        let output = "s3://bucket/features/part-0.parquet";
        let mut train = task("train", 3600.0, &[(output, 7_000)]);
        train.id = "train".to_string();
        let mut prepare = task("prepare", 0.0, &[]);
        prepare.gpus = 0;
        prepare.end_s = 3000.0;
        prepare.outputs = vec![output.to_string()];
        let plan = plan_of(&[prepare, train]);
        let (reporter, _) = reporter(&plan, ReportMode::Tty);
        let total = plan.staged_bytes();
        reporter.event(&Event::Waiting {
            uri: output.to_string(),
            producer: "prepare".to_string(),
            ready_s: 3000.0,
        });
        let state = tty_state(&reporter);
        assert_eq!(state.overall.length(), Some(total - 7_000));
        assert_eq!(state.counts.waiting, 1);
        assert!(state.overall.message().contains("1 waiting"));
    }

    #[test]
    fn prefetch_view_summary_lines_name_what_was_not_staged() {
        let deferred: Vec<String> = (0..7).map(|i| format!("s3://bucket/part-{i}")).collect();
        let summary = Summary {
            objects_staged: 3,
            bytes_staged: 3 << 20,
            no_room: 7,
            deferred: deferred.clone(),
            ..Summary::default()
        };
        let text = summary_lines(&summary).join("\n");
        assert!(text.contains(&human_size(3 << 20)), "{text}");
        assert!(text.contains("7 found no room"), "{text}");
        assert!(
            text.contains(&deferred[0]) && !text.contains(&deferred[6]),
            "{text}"
        );
        assert!(text.contains("2 more"), "{text}");
    }

    #[test]
    fn prefetch_view_uri_tail_keeps_the_end_within_the_width() {
        let uri = "s3://a-very-long-bucket-name/datasets/imagenet/2024/shards/train-00017.tar";
        for max in [12, 24, 36, 48] {
            let tail = uri_tail(uri, max);
            assert!(tail.chars().count() <= max, "{tail:?} is longer than {max}");
            assert!(tail.starts_with('…'), "{tail:?}");
            assert!(uri.ends_with(tail.trim_start_matches('…')), "{tail:?}");
        }
        assert_eq!(uri_tail("s3://b/k", 36), "s3://b/k");
        // Cut at a path segment when that keeps at least half the room.
        assert!(uri_tail(uri, 36).starts_with("…/"));
    }
}
