//! Schedule invariants over random pipelines and random history (proptest): no task is
//! predicted to start before any of its dependencies' predicted end, and whatever history is
//! added, durations, retry time and windows stay finite and non-negative.

use chrono::{DateTime, Duration, Utc};
use kfcache_parser::{Dag, FanOut, Pipeline, PipelineKind, Task, TaskKind};
use kfcache_predictor::history::PipelineHistory;
use kfcache_predictor::{predict, EstimatorConfig, InputSizes};
use kfcache_schema::{RunObservation, TaskObservation};
use proptest::prelude::*;

/// A task of a random pipeline: dependencies (earlier tasks), fan-out kind, parallelism,
/// GPUs, whether it has a condition.
type TaskShape = (Vec<usize>, u8, Option<u32>, u32, bool);

/// An observation: task, instances, duration s (negative: finished before it started),
/// phase (0 ok, 1 failed, 2 skipped), epochs.
type Observation = (usize, u8, f64, u8, u32);

#[derive(Debug, Clone)]
struct Shape {
    tasks: Vec<TaskShape>,
    parallelism: Option<u32>,
}

fn shape() -> impl Strategy<Value = Shape> {
    (1usize..12, prop::option::of(1u32..4)).prop_flat_map(|(n, parallelism)| {
        let task = |i: usize| {
            (
                prop::collection::vec(0..i.max(1), 0..=i.min(3)),
                0u8..4,
                prop::option::of(1u32..3),
                0u32..3,
                any::<bool>(),
            )
                .prop_map(move |(deps, fan, limit, gpus, cond)| {
                    let deps = if i == 0 { vec![] } else { deps };
                    (deps, fan, limit, gpus, cond)
                })
        };
        let tasks: Vec<_> = (0..n).map(task).collect();
        tasks.prop_map(move |tasks| Shape { tasks, parallelism })
    })
}

fn pipeline(shape: &Shape) -> Pipeline {
    let tasks = shape
        .tasks
        .iter()
        .enumerate()
        .map(|(i, (deps, fan, limit, gpus, cond))| {
            let mut t = Task::new(
                format!("group.t{i}"),
                format!("tpl{i}"),
                TaskKind::Container,
            );
            let mut deps: Vec<String> = deps.iter().map(|d| format!("group.t{d}")).collect();
            deps.sort();
            deps.dedup();
            t.depends_on = deps;
            t.fan_out = match fan {
                1 => Some(FanOut::Count(3)),
                2 => Some(FanOut::Dynamic),
                3 => Some(FanOut::Count(0)),
                _ => None,
            };
            t.parallelism = *limit;
            t.gpus = *gpus;
            t.retries = 2;
            t.condition = cond.then(|| "x == y".to_string());
            t.params.insert("epochs".into(), format!("{}", 10 + i));
            t
        })
        .collect();
    Pipeline {
        name: "random".into(),
        kind: PipelineKind::Workflow,
        schedules: vec![],
        timezone: None,
        source: "random.yaml".into(),
        line: None,
        parameters: Default::default(),
        parallelism: shape.parallelism,
        tasks,
    }
}

fn runs(pipeline: &Pipeline, observations: &[Vec<Observation>]) -> Vec<RunObservation> {
    let base: DateTime<Utc> = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
    observations
        .iter()
        .enumerate()
        .map(|(r, obs)| RunObservation {
            name: format!("random-{r:05}"),
            pipeline_name: "random".into(),
            started_at: Some(base),
            tasks: obs
                .iter()
                .filter(|o| o.0 < pipeline.tasks.len())
                .flat_map(|&(task, instances, d, phase, epochs)| {
                    (0..instances.max(1)).map(move |k| (task, k, d, phase, epochs))
                })
                .map(|(task, k, d, phase, epochs)| TaskObservation {
                    task_key: pipeline.tasks[task].id.clone(),
                    instance: format!("{k}:x"),
                    started_at: Some(base),
                    finished_at: Some(base + Duration::milliseconds((d * 1000.0) as i64)),
                    phase: Some(["Succeeded", "Failed", "Skipped"][phase as usize % 3].into()),
                    parameters: [("epochs".to_string(), epochs.to_string())].into(),
                    ..TaskObservation::default()
                })
                .collect(),
            ..RunObservation::default()
        })
        .collect()
}

fn history_strategy() -> impl Strategy<Value = Vec<Vec<Observation>>> {
    prop::collection::vec(
        prop::collection::vec(
            (0usize..12, 0u8..4, -50.0f64..5000.0, 0u8..3, 0u32..100),
            0..20,
        ),
        0..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_task_starts_before_a_dependency_ends(shape in shape(), observations in history_strategy()) {
        let p = pipeline(&shape);
        let dag = Dag::build(&p).expect("acyclic by construction");
        let history = PipelineHistory::build(&p, &runs(&p, &observations));
        let prediction = predict(&p, &dag, &history, &InputSizes::new(), &EstimatorConfig::default());
        for (i, task) in prediction.tasks.iter().enumerate() {
            for dep in dag.dependencies(i) {
                let dep = &prediction.tasks[dep];
                prop_assert!(task.start_s + 1e-9 >= dep.end_s, "{} starts at {} before {} ends at {}", task.task, task.start_s, dep.task, dep.end_s);
            }
        }
    }

    #[test]
    fn adding_history_never_makes_durations_negative(shape in shape(), observations in history_strategy()) {
        let p = pipeline(&shape);
        let dag = Dag::build(&p).expect("acyclic by construction");
        let all = runs(&p, &observations);
        for k in 0..=all.len() {
            let history = PipelineHistory::build(&p, &all[..k]);
            let prediction = predict(&p, &dag, &history, &InputSizes::new(), &EstimatorConfig::default());
            for t in &prediction.tasks {
                prop_assert!(t.estimate.duration_s.is_finite() && t.estimate.duration_s >= 0.0, "{t:?}");
                prop_assert!(t.estimate.retry_s.is_finite() && t.estimate.retry_s >= 0.0, "{t:?}");
                prop_assert!((0.0..=1.0).contains(&t.estimate.run_probability), "{t:?}");
                prop_assert!(t.start_s >= 0.0 && t.end_s >= t.start_s && t.end_s.is_finite(), "{t:?}");
            }
        }
    }
}
