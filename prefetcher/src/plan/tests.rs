#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

const MB: u64 = 1_000_000;

fn task(id: &str, gpus: u32, start: f64, end: f64, inputs: &[(&str, u64)]) -> PlanTask {
    PlanTask {
        id: id.to_string(),
        gpus,
        start_s: start,
        end_s: end,
        runs: true,
        state: TaskState::Pending,
        inputs: inputs
            .iter()
            .map(|(uri, bytes)| PlanInput {
                name: uri.rsplit('/').next().unwrap().to_string(),
                uri: uri.to_string(),
                bytes: Some(*bytes),
            })
            .collect(),
        outputs: Vec::new(),
    }
}

fn config(budget: u64) -> PlanConfig {
    PlanConfig {
        now_s: 0.0,
        margin_s: 10.0,
        bandwidth_bytes_per_s: 100.0 * MB as f64,
        budget_bytes: budget,
        all_tasks: false,
    }
}

fn item<'a>(plan: &'a Plan, uri: &str) -> Vec<&'a PlanItem> {
    plan.items.iter().filter(|i| i.uri == uri).collect()
}

#[test]
fn an_input_shared_by_two_gpu_tasks_is_one_item_serving_both() {
    let tasks = [
        task("a", 1, 100.0, 200.0, &[("s3://b/shared", 500 * MB)]),
        task("b", 2, 300.0, 400.0, &[("s3://b/shared", 500 * MB)]),
    ];
    let plan = plan(&tasks, &[], &config(10_000 * MB));
    let shared = item(&plan, "s3://b/shared");
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].consumers, ["a", "b"]);
    assert_eq!(shared[0].status, ItemStatus::Planned);
    // Deadline: first reader's start minus the margin; latest start: minus 5 s at 100 MB/s.
    assert_eq!(shared[0].deadline_s, 90.0);
    assert_eq!(shared[0].latest_start_s, 85.0);
    assert_eq!(shared[0].window, Some((0.0, 5.0)));
}

#[test]
fn only_gpu_tasks_inputs_are_planned_unless_all_tasks() {
    let tasks = [
        task("prep", 0, 0.0, 50.0, &[("s3://b/raw", MB)]),
        task("train", 1, 50.0, 500.0, &[("s3://b/features", MB)]),
    ];
    let gpu_only = plan(&tasks, &[], &config(100 * MB));
    let uris: Vec<&str> = gpu_only.items.iter().map(|i| i.uri.as_str()).collect();
    assert_eq!(uris, ["s3://b/features"]);
    let mut all = config(100 * MB);
    all.all_tasks = true;
    let every = plan(&tasks, &[], &all);
    let uris: BTreeSet<&str> = every.items.iter().map(|i| i.uri.as_str()).collect();
    assert_eq!(uris, BTreeSet::from(["s3://b/raw", "s3://b/features"]));
}

#[test]
fn items_are_staged_earliest_deadline_first() {
    let tasks = [
        task("late", 1, 900.0, 1000.0, &[("s3://b/late", 10 * MB)]),
        task("early", 1, 100.0, 200.0, &[("s3://b/early", 10 * MB)]),
        task("middle", 1, 400.0, 500.0, &[("s3://b/middle", 10 * MB)]),
    ];
    let plan = plan(&tasks, &[], &config(1000 * MB));
    let order: Vec<&str> = plan.items.iter().map(|i| i.uri.as_str()).collect();
    assert_eq!(order, ["s3://b/early", "s3://b/middle", "s3://b/late"]);
    let windows: Vec<(f64, f64)> = plan.items.iter().map(|i| i.window.unwrap()).collect();
    assert!(windows.windows(2).all(|w| w[0].1 <= w[1].0));
}

#[test]
fn an_upstream_output_is_stageable_when_its_producer_ends() {
    let mut producer = task("preprocess", 0, 0.0, 300.0, &[]);
    producer.outputs = vec!["s3://b/features.parquet".to_string()];
    let tasks = [
        producer,
        task(
            "train",
            1,
            300.0,
            900.0,
            &[("s3://b/features.parquet", 100 * MB)],
        ),
    ];
    let plan = plan(&tasks, &[], &config(1000 * MB));
    let features = item(&plan, "s3://b/features.parquet")[0];
    assert_eq!(features.producer.as_deref(), Some("preprocess"));
    assert_eq!(features.ready_s, 300.0);
    // It cannot start before it exists, so it ends after the deadline: late.
    assert_eq!(features.window, Some((300.0, 301.0)));
    assert_eq!(features.status, ItemStatus::Late);
}

#[test]
fn task_outputs_without_location_are_written_through_not_staged() {
    let tasks = [
        task("a", 1, 0.0, 100.0, &[]),
        task("b", 1, 100.0, 200.0, &[("task://a/model", 10 * MB)]),
    ];
    let plan = plan(&tasks, &[], &config(1000 * MB));
    let model = item(&plan, "task://a/model")[0];
    assert_eq!(model.status, ItemStatus::WrittenThrough);
    assert_eq!(model.producer.as_deref(), Some("a"));
    assert_eq!(plan.staged().count(), 0);
}

#[test]
fn an_input_larger_than_the_budget_is_refused_with_a_note_and_the_rest_staged() {
    let tasks = [task(
        "train",
        1,
        100.0,
        200.0,
        &[("s3://b/huge", 900 * MB), ("s3://b/small", 10 * MB)],
    )];
    let plan = plan(&tasks, &[], &config(500 * MB));
    assert_eq!(
        item(&plan, "s3://b/huge")[0].status,
        ItemStatus::NoRoom {
            short_bytes: 400 * MB
        }
    );
    assert_eq!(item(&plan, "s3://b/small")[0].status, ItemStatus::Planned);
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("s3://b/huge") && n.contains("train")));
}

#[test]
fn room_is_made_by_evicting_the_furthest_next_use_and_that_input_is_planned_again() {
    // Room for two objects. `a` is read at 100 and again at 3000, `b` at 120, `c` at 500.
    let tasks = [
        task("t1", 1, 100.0, 150.0, &[("s3://b/a", 100 * MB)]),
        task("t2", 1, 120.0, 170.0, &[("s3://b/b", 100 * MB)]),
        task("t3", 1, 500.0, 600.0, &[("s3://b/c", 100 * MB)]),
        task("t4", 1, 3000.0, 3100.0, &[("s3://b/a", 100 * MB)]),
    ];
    let plan = plan(&tasks, &[], &config(200 * MB));
    assert!(plan.peak_bytes <= 200 * MB);
    // `c` waits until t1 is done with `a` (150 s), then evicts `a`, next read at 3000 s;
    // never `b`, which t2 reads until 170 s.
    let c = item(&plan, "s3://b/c")[0];
    assert_eq!(c.window.unwrap().0, 150.0);
    assert_eq!(c.evicts, ["s3://b/a"]);
    assert_eq!(c.status, ItemStatus::Planned);
    // `a` is planned again for t4, once t2 is done with `b` (dead, so evicted first).
    let a = item(&plan, "s3://b/a");
    assert_eq!(a.len(), 2);
    assert!(a[1].restage);
    assert_eq!(a[1].consumers, ["t4"]);
    assert_eq!(a[1].window.unwrap().0, 170.0);
    assert_eq!(a[1].evicts, ["s3://b/b"]);
}

#[test]
fn a_running_tasks_inputs_are_never_evicted() {
    let mut running = task("running", 1, 0.0, 1000.0, &[("s3://b/in-use", 300 * MB)]);
    running.state = TaskState::Running { started_s: 0.0 };
    let tasks = [
        running,
        task("next", 1, 100.0, 200.0, &[("s3://b/next", 300 * MB)]),
    ];
    let cached = [CachedEntry {
        uri: "s3://b/in-use".to_string(),
        bytes: 300 * MB,
        leased: false,
    }];
    let mut cfg = config(500 * MB);
    cfg.now_s = 50.0;
    let plan = plan(&tasks, &cached, &cfg);
    assert_eq!(item(&plan, "s3://b/in-use")[0].status, ItemStatus::Cached);
    assert!(matches!(
        item(&plan, "s3://b/next")[0].status,
        ItemStatus::NoRoom { .. }
    ));
}

#[test]
fn cached_entries_no_task_reads_are_evicted_first() {
    let cached = [
        CachedEntry {
            uri: "s3://b/old".to_string(),
            bytes: 400 * MB,
            leased: false,
        },
        CachedEntry {
            uri: "s3://b/leased".to_string(),
            bytes: 100 * MB,
            leased: true,
        },
    ];
    let tasks = [task("t", 1, 100.0, 200.0, &[("s3://b/new", 300 * MB)])];
    let plan = plan(&tasks, &cached, &config(500 * MB));
    let new = item(&plan, "s3://b/new")[0];
    assert_eq!(new.evicts, ["s3://b/old"]);
    assert_eq!(new.status, ItemStatus::Planned);
}

#[test]
fn unknown_sizes_are_named_in_the_notes() {
    let mut t = task("t", 1, 100.0, 200.0, &[]);
    t.inputs.push(PlanInput {
        name: "data".to_string(),
        uri: "s3://b/unknown".to_string(),
        bytes: None,
    });
    let plan = plan(&[t], &[], &config(MB));
    assert!(!plan.items[0].size_known);
    assert!(plan.notes.iter().any(|n| n.contains("s3://b/unknown")));
}

/// Replays the plan's windows in time order and returns the most bytes held at once.
fn replay_peak(plan: &Plan, cached: &[CachedEntry]) -> u64 {
    let mut held: HashMap<String, u64> = cached.iter().map(|c| (c.uri.clone(), c.bytes)).collect();
    let mut peak: u64 = held.values().sum();
    for item in plan.staged() {
        for victim in &item.evicts {
            assert!(
                held.remove(victim).is_some(),
                "evicts {victim}, which is not held"
            );
        }
        held.insert(item.uri.clone(), item.bytes);
        peak = peak.max(held.values().sum());
    }
    peak
}

proptest! {
    #[test]
    fn the_budget_holds_at_every_moment(
        specs in prop::collection::vec(
            (0u32..3, 0.0f64..3000.0, 1.0f64..600.0, prop::collection::vec((0usize..8, 1u64..400), 1..4)),
            1..12,
        ),
        budget in 100u64..1500,
        cached_sizes in prop::collection::vec(1u64..300, 0..3),
    ) {
        let sizes: Vec<u64> = (0..8).map(|n| 50 + n as u64 * 37).collect();
        let tasks: Vec<PlanTask> = specs
            .iter()
            .enumerate()
            .map(|(n, (gpus, start, length, inputs))| {
                let inputs: Vec<(String, u64)> = inputs
                    .iter()
                    .map(|(d, _)| (format!("s3://b/d{d}"), sizes[*d] * MB))
                    .collect();
                let refs: Vec<(&str, u64)> = inputs.iter().map(|(u, b)| (u.as_str(), *b)).collect();
                task(&format!("t{n}"), *gpus, *start, start + length, &refs)
            })
            .collect();
        let cached: Vec<CachedEntry> = cached_sizes
            .iter()
            .enumerate()
            .map(|(n, b)| CachedEntry { uri: format!("s3://b/foreign{n}"), bytes: b * MB, leased: false })
            .collect();
        let budget = budget * MB;
        let plan = plan(&tasks, &cached, &config(budget));
        let start: u64 = cached.iter().map(|c| c.bytes).sum();
        let peak = replay_peak(&plan, &cached);
        prop_assert!(peak <= budget.max(start), "peak {peak} > budget {budget}");
        prop_assert!(plan.peak_bytes <= budget.max(start));
        // Every planned input of a GPU task appears in the plan, staged or with a reason.
        for t in tasks.iter().filter(|t| t.gpus > 0) {
            for input in &t.inputs {
                prop_assert!(plan.items.iter().any(|i| i.uri == input.uri
                    && (i.consumers.contains(&t.id) || i.status.stages())));
            }
        }
    }
}

#[test]
fn a_task_that_started_early_moves_its_inputs_to_the_front() {
    let mut early = task(
        "early",
        1,
        3000.0,
        3600.0,
        &[("s3://b/late-input", 10 * MB)],
    );
    let tasks_before = [
        task("first", 1, 600.0, 700.0, &[("s3://b/first-input", 10 * MB)]),
        early.clone(),
    ];
    let before = plan(&tasks_before, &[], &config(1000 * MB));
    assert_eq!(before.items[0].uri, "s3://b/first-input");

    // The run's events say `early` started at 100 s, long before its predicted start.
    early.state = TaskState::Running { started_s: 100.0 };
    let mut cfg = config(1000 * MB);
    cfg.now_s = 120.0;
    let after = plan(
        &[
            task("first", 1, 600.0, 700.0, &[("s3://b/first-input", 10 * MB)]),
            early,
        ],
        &[],
        &cfg,
    );
    assert_eq!(after.items[0].uri, "s3://b/late-input");
    assert_eq!(after.items[0].deadline_s, 120.0);
    assert_eq!(after.items[0].window.unwrap().0, 120.0);
}

#[test]
fn a_directory_written_object_by_object_waits_for_its_writer() {
    let mut shard = task("preprocess", 0, 0.0, 300.0, &[]);
    shard.outputs = vec!["s3://b/preprocessed/{{inputs.parameters.shard}}".to_string()];
    let tasks = [
        shard,
        task(
            "train",
            1,
            300.0,
            900.0,
            &[("s3://b/preprocessed", 100 * MB)],
        ),
    ];
    let plan = plan(&tasks, &[], &config(1000 * MB));
    let dir = item(&plan, "s3://b/preprocessed")[0];
    assert_eq!(dir.producer.as_deref(), Some("preprocess"));
    assert_eq!(dir.ready_s, 300.0);
}

#[test]
fn an_output_not_written_yet_does_not_hold_up_inputs_that_exist() {
    let mut producer = task("prepare", 0, 0.0, 300.0, &[]);
    producer.outputs = vec!["s3://b/features".to_string()];
    let tasks = [
        producer,
        task(
            "train",
            1,
            300.0,
            900.0,
            &[("s3://b/features", 100 * MB), ("s3://b/weights", 100 * MB)],
        ),
    ];
    let plan = plan(&tasks, &[], &config(1000 * MB));
    let weights = item(&plan, "s3://b/weights")[0];
    assert_eq!(weights.window, Some((0.0, 1.0)));
    assert_eq!(weights.status, ItemStatus::Planned);
    assert_eq!(
        item(&plan, "s3://b/features")[0].window,
        Some((300.0, 301.0))
    );
}

#[test]
fn origin_reads_are_what_tasks_under_way_read_that_the_cache_does_not_hold() {
    let mut running = task(
        "prepare",
        0,
        0.0,
        30.0,
        &[("s3://b/raw/", 300 * MB), ("task://up/out", 50 * MB)],
    );
    running.state = TaskState::Running { started_s: 1.0 };
    let tasks = [
        running,
        // Predicted to have started at 2 s; one input cached under a cached directory.
        task(
            "split",
            0,
            2.0,
            20.0,
            &[("s3://b/shard", 100 * MB), ("s3://d/x/y", 700 * MB)],
        ),
        // Shares the first task's input: its bytes count once, with the first reader.
        task("again", 0, 0.5, 20.0, &[("s3://b/raw/", 300 * MB)]),
        // Not started yet, and done: neither reads now.
        task("train", 1, 40.0, 90.0, &[("s3://b/images/", 900 * MB)]),
        {
            let mut done = task("old", 0, 0.0, 1.0, &[("s3://b/old", 900 * MB)]);
            done.state = TaskState::Done;
            done
        },
    ];
    let cached = [CachedEntry {
        uri: "s3://d/x/".to_string(),
        bytes: 700 * MB,
        leased: false,
    }];
    let at = |now_s: f64| PlanConfig {
        now_s,
        ..config(10_000 * MB)
    };
    // 400 MB from 1 s (the earliest start of a task counted) at 100 MB/s: until 5 s.
    let reads = origin_reads(&tasks, &cached, &at(3.0)).unwrap();
    assert_eq!(reads.bytes, 400 * MB);
    assert!((reads.until_s - 5.0).abs() < 1e-9, "{reads:?}");
    // Before `split` is predicted to start, only the raw input counts.
    assert_eq!(
        origin_reads(&tasks, &cached, &at(1.5)).unwrap().bytes,
        300 * MB
    );
    // Once the reads are predicted to be over, nothing holds staging back.
    assert_eq!(origin_reads(&tasks, &cached, &at(5.5)), None);
    // Nothing under way reads uncached bytes: none.
    assert_eq!(origin_reads(&tasks[3..], &cached, &at(3.0)), None);
}
