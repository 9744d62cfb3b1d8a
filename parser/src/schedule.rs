//! As-soon-as-possible schedule over the DAG: each task starts when every task it depends on
//! has ended. Durations come from the caller; [`default_duration_s`] gives the per-kind
//! defaults `kfcache analyze` uses before any history exists.

use crate::dag::Dag;
use crate::model::{Pipeline, Task, TaskKind};

/// Predicted times of one task, in seconds from the pipeline's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskTimes {
    pub start_s: f64,
    pub end_s: f64,
}

/// A simple default duration per task kind, in seconds. GPU tasks are assumed to train for
/// longer than CPU tasks of the same kind.
pub fn default_duration_s(task: &Task) -> f64 {
    let base = match task.kind {
        TaskKind::Container | TaskKind::Script => 60.0,
        TaskKind::Resource => 10.0,
        TaskKind::Importer => 5.0,
        TaskKind::Suspend => 0.0,
        TaskKind::Http | TaskKind::Plugin => 5.0,
        TaskKind::Other => 30.0,
    };
    if task.gpus > 0 {
        base * 10.0
    } else {
        base
    }
}

/// Lay the tasks out as early as their dependencies allow. `duration_s(i)` is the duration of
/// task `i`. The result is indexed like `pipeline.tasks`.
pub fn asap(pipeline: &Pipeline, dag: &Dag, duration_s: impl Fn(usize) -> f64) -> Vec<TaskTimes> {
    let mut times = vec![
        TaskTimes {
            start_s: 0.0,
            end_s: 0.0
        };
        pipeline.tasks.len()
    ];
    for &i in dag.topological_order() {
        let start_s = dag
            .dependencies(i)
            .map(|d| times[d].end_s)
            .fold(0.0, f64::max);
        let duration = duration_s(i).max(0.0);
        times[i] = TaskTimes {
            start_s,
            end_s: start_s + duration,
        };
    }
    times
}

/// [`asap`] with [`default_duration_s`].
pub fn default_schedule(pipeline: &Pipeline, dag: &Dag) -> Vec<TaskTimes> {
    asap(pipeline, dag, |i| default_duration_s(&pipeline.tasks[i]))
}
