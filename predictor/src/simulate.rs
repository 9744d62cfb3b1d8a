//! List scheduling of a pipeline's task instances: the schedule Argo would produce if every
//! task took its predicted time.
//!
//! A task becomes ready when every task it depends on has finished all its instances. Ready
//! instances start in (ready time, declaration order, instance) order as soon as the limits
//! allow: the workflow's `parallelism` caps running pods across the run, and a task's own
//! `parallelism` (Argo template or loop `parallelism`, KFP `ParallelFor(parallelism=…)`)
//! caps the running pods of its group — the tasks with the same parent and the same limit.
//! A task starts with its first instance and ends with its last. A task with no instances
//! (a loop over nothing) ends the moment it is ready.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use kfcache_parser::schedule::TaskTimes;
use kfcache_parser::{Dag, Pipeline};

/// What the simulation needs of each task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskLoad {
    /// Seconds each instance runs (non-negative).
    pub instance_s: f64,
    pub instances: u32,
}

#[derive(Debug, PartialEq)]
struct Running {
    end: f64,
    task: usize,
}

impl Eq for Running {}

impl Ord for Running {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on end time, then task index.
        other
            .end
            .total_cmp(&self.end)
            .then(other.task.cmp(&self.task))
    }
}

impl PartialOrd for Running {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Simulate the run; the result is indexed like `pipeline.tasks`.
pub fn simulate(pipeline: &Pipeline, dag: &Dag, loads: &[TaskLoad]) -> Vec<TaskTimes> {
    let durations: Vec<Vec<f64>> = (0..pipeline.tasks.len())
        .map(|i| {
            let l = loads.get(i).copied().unwrap_or(TaskLoad {
                instance_s: 0.0,
                instances: 1,
            });
            vec![l.instance_s; l.instances as usize]
        })
        .collect();
    simulate_instances(pipeline, dag, &durations)
}

/// Simulate with each instance's own duration: `durations[task][instance]` seconds (an empty
/// list is a loop over nothing).
pub fn simulate_instances(
    pipeline: &Pipeline,
    dag: &Dag,
    durations: &[Vec<f64>],
) -> Vec<TaskTimes> {
    let n = pipeline.tasks.len();
    let mut times = vec![
        TaskTimes {
            start_s: 0.0,
            end_s: 0.0
        };
        n
    ];
    if n == 0 {
        return times;
    }
    // Groups of the per-template / per-loop parallelism limits.
    let mut group_of: Vec<Option<usize>> = vec![None; n];
    let mut group_limits: Vec<u32> = Vec::new();
    let mut group_ids: HashMap<(String, u32), usize> = HashMap::new();
    for (i, task) in pipeline.tasks.iter().enumerate() {
        if let Some(limit) = task.parallelism.filter(|l| *l > 0) {
            let parent = task.id.rsplit_once('.').map_or("", |(p, _)| p).to_string();
            let next = group_limits.len();
            let g = *group_ids.entry((parent, limit)).or_insert(next);
            if g == next {
                group_limits.push(limit);
            }
            group_of[i] = Some(g);
        }
    }
    let global_limit = pipeline
        .parallelism
        .filter(|l| *l > 0)
        .map_or(u32::MAX, |l| l);
    let mut group_running = vec![0u32; group_limits.len()];
    let mut global_running = 0u32;

    let position: Vec<usize> = {
        let mut p = vec![0; n];
        for (k, &i) in dag.topological_order().iter().enumerate() {
            p[i] = k;
        }
        p
    };
    let mut waiting: Vec<usize> = (0..n).map(|i| dag.dependencies(i).count()).collect();
    let mut ready_at = vec![0.0f64; n];
    let mut to_start = vec![0u32; n];
    let mut unfinished = vec![0u32; n];
    let mut started = vec![false; n];
    // Ready tasks with instances left to start.
    let mut ready: Vec<usize> = Vec::new();
    let mut running: BinaryHeap<Running> = BinaryHeap::new();
    let mut done = 0usize;
    let mut now = 0.0f64;

    let empty: Vec<f64> = Vec::new();
    let instance_s = |i: usize, k: usize| -> f64 {
        let d = durations
            .get(i)
            .unwrap_or(&empty)
            .get(k)
            .copied()
            .unwrap_or(0.0);
        if d.is_finite() {
            d.max(0.0)
        } else {
            0.0
        }
    };
    let load = |i: usize| -> TaskLoad {
        TaskLoad {
            instance_s: 0.0,
            instances: durations.get(i).map_or(1, |d| d.len() as u32),
        }
    };

    // Tasks that finish at `at` (no instances) cascade immediately.
    let mut finished: Vec<(usize, f64)> = Vec::new();
    let roots: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    for i in roots {
        become_ready(
            i,
            0.0,
            &load,
            &mut times,
            &mut to_start,
            &mut unfinished,
            &mut ready,
            &mut finished,
            &mut ready_at,
        );
    }
    loop {
        // Propagate finished tasks.
        while let Some((task, at)) = finished.pop() {
            done += 1;
            times[task].end_s = at.max(times[task].start_s);
            for next in dag.dependents(task) {
                waiting[next] -= 1;
                if waiting[next] == 0 {
                    let at = dag
                        .dependencies(next)
                        .map(|d| times[d].end_s)
                        .fold(0.0, f64::max);
                    become_ready(
                        next,
                        at,
                        &load,
                        &mut times,
                        &mut to_start,
                        &mut unfinished,
                        &mut ready,
                        &mut finished,
                        &mut ready_at,
                    );
                }
            }
        }
        // Start what the limits allow, in priority order.
        ready.sort_by(|&a, &b| {
            ready_at[a]
                .total_cmp(&ready_at[b])
                .then(position[a].cmp(&position[b]))
        });
        let mut k = 0;
        while k < ready.len() {
            let i = ready[k];
            if ready_at[i] > now {
                k += 1;
                continue;
            }
            while to_start[i] > 0
                && global_running < global_limit
                && group_of[i].map_or(true, |g| group_running[g] < group_limits[g])
            {
                if !started[i] {
                    started[i] = true;
                    times[i].start_s = now;
                }
                to_start[i] -= 1;
                global_running += 1;
                if let Some(g) = group_of[i] {
                    group_running[g] += 1;
                }
                let k = (load(i).instances - to_start[i] - 1) as usize;
                running.push(Running {
                    end: now + instance_s(i, k),
                    task: i,
                });
            }
            if to_start[i] == 0 {
                ready.remove(k);
            } else {
                k += 1;
            }
        }
        // Advance to the next event: an instance ending or a task becoming ready.
        let next_ready = ready
            .iter()
            .map(|&i| ready_at[i])
            .filter(|t| *t > now)
            .fold(f64::INFINITY, f64::min);
        let next_end = running.peek().map_or(f64::INFINITY, |r| r.end);
        if next_end.is_infinite() && next_ready.is_infinite() {
            break;
        }
        if next_ready < next_end {
            now = next_ready;
            continue;
        }
        now = next_end;
        while let Some(r) = running.peek() {
            if r.end > now {
                break;
            }
            let Some(r) = running.pop() else { break };
            global_running -= 1;
            if let Some(g) = group_of[r.task] {
                group_running[g] -= 1;
            }
            unfinished[r.task] -= 1;
            if unfinished[r.task] == 0 {
                finished.push((r.task, r.end));
            }
        }
    }
    debug_assert!(done <= n);
    times
}

#[allow(clippy::too_many_arguments)]
fn become_ready(
    i: usize,
    at: f64,
    load: &dyn Fn(usize) -> TaskLoad,
    times: &mut [TaskTimes],
    to_start: &mut [u32],
    unfinished: &mut [u32],
    ready: &mut Vec<usize>,
    finished: &mut Vec<(usize, f64)>,
    ready_at: &mut [f64],
) {
    let l = load(i);
    ready_at[i] = at;
    times[i].start_s = at;
    if l.instances == 0 {
        finished.push((i, at));
        return;
    }
    to_start[i] = l.instances;
    unfinished[i] = l.instances;
    ready.push(i);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kfcache_parser::{FanOut, Task, TaskKind};

    fn pipeline(tasks: Vec<Task>, parallelism: Option<u32>) -> Pipeline {
        Pipeline {
            parallelism,
            ..Pipeline::workflow("p", tasks)
        }
    }

    fn task(id: &str, deps: &[&str]) -> Task {
        let mut t = Task::new(id, "t", TaskKind::Container);
        t.depends_on = deps.iter().map(|d| d.to_string()).collect();
        t
    }

    #[test]
    fn loop_parallelism_serialises_instances() {
        let mut fan = task("loop.work", &["a"]);
        fan.fan_out = Some(FanOut::Count(5));
        fan.parallelism = Some(2);
        let p = pipeline(vec![task("a", &[]), fan, task("b", &["loop.work"])], None);
        let dag = Dag::build(&p).expect("dag");
        let loads = [
            TaskLoad {
                instance_s: 10.0,
                instances: 1,
            },
            TaskLoad {
                instance_s: 10.0,
                instances: 5,
            },
            TaskLoad {
                instance_s: 1.0,
                instances: 1,
            },
        ];
        let t = simulate(&p, &dag, &loads);
        assert_eq!(t[1].start_s, 10.0);
        assert_eq!(t[1].end_s, 40.0, "5 instances, 2 at a time: 3 waves");
        assert_eq!(t[2].start_s, 40.0);
    }

    #[test]
    fn workflow_parallelism_limits_independent_tasks() {
        let p = pipeline(
            vec![task("a", &[]), task("b", &[]), task("c", &[])],
            Some(1),
        );
        let dag = Dag::build(&p).expect("dag");
        let loads = [TaskLoad {
            instance_s: 5.0,
            instances: 1,
        }; 3];
        let t = simulate(&p, &dag, &loads);
        let mut starts: Vec<f64> = t.iter().map(|t| t.start_s).collect();
        starts.sort_by(f64::total_cmp);
        assert_eq!(starts, [0.0, 5.0, 10.0]);
    }

    #[test]
    fn empty_loops_end_when_ready() {
        let p = pipeline(
            vec![task("a", &[]), task("b", &["a"]), task("c", &["b"])],
            None,
        );
        let dag = Dag::build(&p).expect("dag");
        let loads = [
            TaskLoad {
                instance_s: 3.0,
                instances: 1,
            },
            TaskLoad {
                instance_s: 100.0,
                instances: 0,
            },
            TaskLoad {
                instance_s: 1.0,
                instances: 1,
            },
        ];
        let t = simulate(&p, &dag, &loads);
        assert_eq!((t[1].start_s, t[1].end_s), (3.0, 3.0));
        assert_eq!(t[2].start_s, 3.0);
    }
}
