//! The rules that shape a prefetch plan beyond kfcache-prefetcher's `plan`: the budget as
//! people give it, the plan's view of a run (its tasks' predicted windows and their states
//! from the history), and which of the plan's items are staged now — those read before a
//! horizon (`starting_before`, the cron's window) or those due within a lead (`due_within`,
//! `--follow --lead`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kfcache_parser::Pipeline;
use kfcache_predictor::Prediction;
use kfcache_prefetcher::plan::{OriginReads, Plan, PlanInput, PlanItem, PlanTask, TaskState};
use kfcache_schema::{Store, TaskObservation};

use crate::error::{Context as _, Result};
use crate::units::{duration, parse_size, seconds_since};

/// A budget as people give it: bytes (`64GiB`), or a fraction of the data region (`0.5`,
/// `50%`) when its size is known.
pub fn parse_budget(text: &str, data_region: Option<u64>) -> Result<u64, String> {
    let trimmed = text.trim();
    let fraction = if let Some(percent) = trimmed.strip_suffix('%') {
        Some(percent.trim().parse::<f64>().map(|p| p / 100.0))
    } else if trimmed.contains('.') && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        Some(trimmed.parse::<f64>())
    } else {
        None
    };
    let bytes = match fraction {
        Some(fraction) => {
            let fraction = fraction
                .ok()
                .filter(|f| *f > 0.0 && *f <= 1.0)
                .ok_or_else(|| {
                    format!("--budget {text:?}: a fraction must be in (0, 1] or (0%, 100%]")
                })?;
            let region = data_region.ok_or_else(|| {
                format!("--budget {text:?} is a fraction of the data region: give its size with --data-region")
            })?;
            (region as f64 * fraction) as u64
        }
        None => parse_size(trimmed).map_err(|e| format!("--budget {text:?}: {e}"))?,
    };
    if bytes == 0 {
        return Err(format!("--budget {text:?} is 0 bytes"));
    }
    Ok(bytes)
}

/// The run's task states from the history store, and when the run started.
pub(crate) struct RunState {
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) tasks: HashMap<String, Vec<TaskObservation>>,
}

pub(crate) async fn run_state(
    store: &Store,
    pipeline: &Pipeline,
    run: &str,
) -> Result<Option<RunState>> {
    let runs = store
        .runs_of_pipeline(&pipeline.name, 10_000)
        .await
        .context(|| format!("cannot read the runs of `{}`", pipeline.name))?;
    let Some(stored) = runs.into_iter().find(|r| r.run.name == run) else {
        return Ok(None);
    };
    let mut tasks: HashMap<String, Vec<TaskObservation>> = HashMap::new();
    for task in stored.run.tasks {
        tasks.entry(task.task_key.clone()).or_default().push(task);
    }
    Ok(Some(RunState {
        started_at: stored.run.started_at,
        tasks,
    }))
}

fn task_state(observations: Option<&Vec<TaskObservation>>, anchor: DateTime<Utc>) -> TaskState {
    let Some(observations) = observations.filter(|o| !o.is_empty()) else {
        return TaskState::Pending;
    };
    if observations
        .iter()
        .all(|o| o.finished_at.is_some() || o.skipped())
    {
        return TaskState::Done;
    }
    let started = observations.iter().filter_map(|o| o.started_at).min();
    match started {
        Some(started) => TaskState::Running {
            started_s: seconds_since(anchor, started),
        },
        None => TaskState::Pending,
    }
}

/// The plan's view of the predicted run.
pub(crate) fn plan_tasks(
    pipeline: &Pipeline,
    prediction: &Prediction,
    run: Option<&RunState>,
    anchor: DateTime<Utc>,
) -> Vec<PlanTask> {
    pipeline
        .tasks
        .iter()
        .zip(&prediction.tasks)
        .map(|(task, predicted)| PlanTask {
            id: task.id.clone(),
            gpus: task.gpus,
            start_s: predicted.start_s,
            end_s: predicted.end_s,
            runs: predicted.runs,
            state: run
                .map(|r| task_state(r.tasks.get(&task.id), anchor))
                .unwrap_or(TaskState::Pending),
            inputs: predicted
                .inputs
                .iter()
                .filter_map(|i| {
                    Some(PlanInput {
                        name: i.name.clone(),
                        uri: i.uri.clone()?,
                        bytes: i.size_bytes,
                    })
                })
                .collect(),
            outputs: task
                .outputs
                .iter()
                .map(|o| {
                    o.location.clone().unwrap_or_else(|| {
                        kfcache_parser::model::task_output_uri(&task.id, &o.name)
                    })
                })
                .collect(),
        })
        .collect()
}

/// `--starting-before`: the plan without the items whose first reader starts after
/// `horizon_s`.
pub fn starting_before(plan: &Plan, horizon_s: f64) -> Plan {
    holding_back(
        plan,
        |i| i.deadline_s + plan.config.margin_s <= horizon_s,
        |later| {
            Some(format!(
                "{later} item(s) read only after {} left for a later prefetch",
                duration(horizon_s)
            ))
        },
    )
}

/// `--lead`: the plan without the items that are not due yet, those whose latest safe start
/// is more than `lead_s` after the plan's now (a later re-plan stages them). While the run's
/// tasks read from the origin (`reads`, from [`origin_reads`] at the plan's now), the lead is
/// 0: staging leaves them the link and takes only what must start now to be in time. With
/// `note`, the plan says how many were held.
pub fn due_within(plan: &Plan, lead_s: f64, reads: Option<&OriginReads>, note: bool) -> Plan {
    let now_s = plan.config.now_s;
    let due_by = if reads.is_some() {
        now_s
    } else {
        now_s + lead_s
    };
    holding_back(
        plan,
        |i| i.latest_start_s <= due_by,
        |held| {
            note.then(|| match reads {
                Some(reads) => format!(
                    "{held} item(s) held while the run's tasks read {:.0} MB from the origin \
                     (until about {}), then until {} before their latest safe start",
                    reads.bytes as f64 / 1e6,
                    duration(reads.until_s),
                    duration(lead_s)
                ),
                None => format!(
                    "{held} item(s) held until {} before their latest safe start",
                    duration(lead_s)
                ),
            })
        },
    )
}

/// The plan with only the items to stage now that `now` accepts (items not to stage stay);
/// those held back keep their readers in `readers`, so evictions still see them. `note` is
/// told how many were held, when any were, and may add a note to the plan.
pub fn holding_back(
    plan: &Plan,
    now: impl Fn(&PlanItem) -> bool,
    note: impl FnOnce(usize) -> Option<String>,
) -> Plan {
    let mut kept = plan.clone();
    kept.items.retain(|i| !i.status.stages() || now(i));
    let held = plan.items.len() - kept.items.len();
    if held > 0 {
        kept.notes.extend(note(held));
    }
    kept
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kfcache_prefetcher::plan::{origin_reads, plan, PlanConfig};

    #[test]
    fn budgets_are_sizes_or_fractions_of_the_data_region() {
        assert_eq!(parse_budget("64GiB", None).unwrap(), 64 << 30);
        assert_eq!(parse_budget("50%", Some(8 << 30)).unwrap(), 4 << 30);
        assert_eq!(parse_budget("0.25", Some(8 << 30)).unwrap(), 2 << 30);
        let error = parse_budget("0.5", None).unwrap_err();
        assert!(error.contains("--data-region"), "{error}");
        assert!(parse_budget("150%", Some(1 << 30)).is_err());
        assert!(parse_budget("0", None).is_err());
        assert!(parse_budget("lots", None).is_err());
    }

    fn gpu_task(id: &str, start_s: f64, uri: &str, bytes: u64) -> PlanTask {
        PlanTask {
            id: id.to_string(),
            gpus: 1,
            start_s,
            end_s: start_s + 60.0,
            runs: true,
            state: TaskState::Pending,
            inputs: vec![PlanInput {
                name: "data".to_string(),
                uri: uri.to_string(),
                bytes: Some(bytes),
            }],
            outputs: Vec::new(),
        }
    }

    /// Two GPU tasks reading 100 MB each, from 30 s and from 100 s.
    fn soon_and_later() -> Vec<PlanTask> {
        vec![
            gpu_task("soon", 30.0, "s3://b/soon", 100_000_000),
            gpu_task("later", 100.0, "s3://b/later", 100_000_000),
        ]
    }

    /// 10 MB/s with a 5 s margin, planned at `now_s`: latest safe starts of
    /// [`soon_and_later`] at 15 s and 85 s.
    fn config_at(now_s: f64) -> PlanConfig {
        PlanConfig {
            now_s,
            margin_s: 5.0,
            bandwidth_bytes_per_s: 10e6,
            budget_bytes: 1 << 30,
            all_tasks: false,
        }
    }

    #[test]
    fn lead_holds_items_until_they_are_due_and_keeps_their_readers() {
        // 100 MB at 10 MB/s with a 5 s margin: latest safe starts at 15 s and 85 s.
        let tasks = soon_and_later();
        let full = plan(&tasks, &[], &config_at(0.0));
        let latest: Vec<f64> = full.staged().map(|i| i.latest_start_s).collect();
        assert_eq!(latest, [15.0, 85.0]);

        // Due within 20 s of now: the first only; the second keeps its reader for evictions.
        let due = due_within(&full, 20.0, None, true);
        let staged: Vec<&str> = due.staged().map(|i| i.uri.as_str()).collect();
        assert_eq!(staged, ["s3://b/soon"]);
        assert_eq!(due.readers_of("s3://b/later").len(), 1);
        assert!(
            due.notes.iter().any(|n| n.contains("1 item(s) held")),
            "{:?}",
            due.notes
        );

        // A re-plan at 70 s finds the second due; an item is never held past its latest start.
        let later = plan(&tasks, &[], &config_at(70.0));
        let due = due_within(&later, 20.0, None, false);
        let staged: Vec<&str> = due.staged().map(|i| i.uri.as_str()).collect();
        assert!(staged.contains(&"s3://b/later"), "{staged:?}");
        let late = plan(&tasks, &[], &config_at(90.0));
        assert!(due_within(&late, 0.0, None, false)
            .staged()
            .any(|i| i.uri == "s3://b/later"));
    }

    #[test]
    fn while_tasks_read_from_the_origin_only_items_that_must_start_now_are_staged() {
        // Latest safe starts at 15 s and 85 s, as above; a CPU task reads 200 MB from the
        // origin from 0 s, until 20 s at 10 MB/s.
        let mut tasks = soon_and_later();
        let mut first = gpu_task("first", 0.0, "s3://b/raw", 200_000_000);
        first.gpus = 0;
        tasks.push(first);
        let staged = |now_s: f64| {
            let config = config_at(now_s);
            let full = plan(&tasks, &[], &config);
            let reads = origin_reads(&tasks, &[], &config);
            let due = due_within(&full, 80.0, reads.as_ref(), true);
            let uris: Vec<String> = due.staged().map(|i| i.uri.clone()).collect();
            (uris, due.notes)
        };
        // At 1 s a lead of 80 s would stage both; the origin reads hold both back.
        let (uris, notes) = staged(1.0);
        assert!(uris.is_empty(), "{uris:?}");
        assert!(
            notes.iter().any(|n| n.contains("2 item(s) held while")),
            "{notes:?}"
        );
        // At 15 s the first must start to be in time: it goes, the link shared or not.
        assert_eq!(staged(15.0).0, ["s3://b/soon"]);
        // At 21 s the reads are over and the lead applies again.
        assert_eq!(staged(21.0).0, ["s3://b/soon", "s3://b/later"]);
    }

    #[test]
    fn starting_before_leaves_later_readers_items_for_a_later_prefetch() {
        let within = starting_before(&plan(&soon_and_later(), &[], &config_at(0.0)), 60.0);
        let staged: Vec<&str> = within.staged().map(|i| i.uri.as_str()).collect();
        assert_eq!(staged, ["s3://b/soon"]);
        assert_eq!(within.readers_of("s3://b/later").len(), 1);
        assert!(
            within
                .notes
                .iter()
                .any(|n| n.contains("1 item(s) read only after")),
            "{:?}",
            within.notes
        );
    }
}
