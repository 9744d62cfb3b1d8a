//! The task graph: a petgraph `DiGraph` whose nodes are indices into `Pipeline::tasks` and
//! whose edges run from a dependency to its dependent.
//!
//! Building it is the last validation step every front end goes through: duplicate task ids,
//! dependencies on unknown tasks and cycles are refused here, the way Argo's
//! `validate.go` (`verifyNoCycles`) refuses them, but with the whole cycle named.

use std::collections::{HashMap, HashSet, VecDeque};

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::error::{Error, Location, Result};
use crate::model::Pipeline;

/// A validated DAG over a pipeline's tasks.
#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<usize, ()>,
    /// Task indices in a topological order (dependencies first; ties in declaration order).
    order: Vec<usize>,
}

impl Dag {
    /// Build and validate the DAG of `pipeline`.
    pub fn build(pipeline: &Pipeline) -> Result<Dag> {
        let at = |line: Option<usize>| Location::at(&pipeline.source, line.or(pipeline.line));
        let mut graph = DiGraph::with_capacity(pipeline.tasks.len(), pipeline.tasks.len());
        let mut by_id: HashMap<&str, NodeIndex> = HashMap::with_capacity(pipeline.tasks.len());
        for (i, task) in pipeline.tasks.iter().enumerate() {
            let node = graph.add_node(i);
            if by_id.insert(task.id.as_str(), node).is_some() {
                return Err(Error::DuplicateTask {
                    at: at(task.line),
                    task: task.id.clone(),
                });
            }
        }
        // One edge per distinct dependency, checked in a set: petgraph's `update_edge` scans the
        // task's edges and would be quadratic in a task depending on thousands of others.
        let mut seen: HashSet<NodeIndex> = HashSet::new();
        for (i, task) in pipeline.tasks.iter().enumerate() {
            seen.clear();
            for dependency in &task.depends_on {
                let Some(&from) = by_id.get(dependency.as_str()) else {
                    return Err(Error::UnknownDependency {
                        at: at(task.line),
                        task: task.id.clone(),
                        dependency: dependency.clone(),
                    });
                };
                if from.index() == i {
                    return Err(Error::Cycle {
                        at: at(task.line),
                        cycle: vec![task.id.clone(), task.id.clone()],
                    });
                }
                if seen.insert(from) {
                    graph.add_edge(from, NodeIndex::new(i), ());
                }
            }
        }
        let order = match toposort(&graph, None) {
            Ok(nodes) => stable_order(&graph, nodes.len()),
            Err(cycle) => {
                let start = cycle.node_id();
                let cycle = cycle_through(&graph, start)
                    .into_iter()
                    .map(|n| pipeline.tasks[graph[n]].id.clone())
                    .collect::<Vec<_>>();
                let line = pipeline.tasks[graph[start]].line;
                return Err(Error::Cycle {
                    at: at(line),
                    cycle,
                });
            }
        };
        Ok(Dag { graph, order })
    }

    /// Task indices, dependencies before dependents; among ready tasks, declaration order.
    pub fn topological_order(&self) -> &[usize] {
        &self.order
    }

    /// Indices of the tasks that `task` directly depends on.
    pub fn dependencies(&self, task: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(task), Direction::Incoming)
            .map(|n| self.graph[n])
    }

    /// Indices of the tasks that directly depend on `task`.
    pub fn dependents(&self, task: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .neighbors_directed(NodeIndex::new(task), Direction::Outgoing)
            .map(|n| self.graph[n])
    }

    /// Every edge as (dependency index, dependent index).
    pub fn edges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.graph
            .raw_edges()
            .iter()
            .map(|e| (self.graph[e.source()], self.graph[e.target()]))
    }

    pub fn graph(&self) -> &DiGraph<usize, ()> {
        &self.graph
    }
}

/// The graph's nodes in dependency order, ties in declaration order
/// ([`crate::order::dependency_order`]); called once the graph is known to be acyclic.
fn stable_order(graph: &DiGraph<usize, ()>, n: usize) -> Vec<usize> {
    let dependencies: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            graph
                .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
                .map(|d| d.index())
                .collect()
        })
        .collect();
    crate::order::dependency_order(&dependencies)
        .map(|order| {
            order
                .into_iter()
                .map(|i| graph[NodeIndex::new(i)])
                .collect()
        })
        .unwrap_or_default()
}

/// The nodes of one shortest cycle through `start`, in edge order, with `start` repeated at the
/// end. A breadth-first search from `start` back to itself: iterative, so a long chain of
/// tasks cannot overflow the stack the way a recursive strongly-connected-components pass
/// could.
fn cycle_through(graph: &DiGraph<usize, ()>, start: NodeIndex) -> Vec<NodeIndex> {
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in graph.neighbors_directed(node, Direction::Outgoing) {
            if next == start {
                let mut path = vec![node];
                let mut cur = node;
                while cur != start {
                    match parent.get(&cur) {
                        Some(&up) => cur = up,
                        None => break,
                    }
                    path.push(cur);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(next) {
                e.insert(node);
                queue.push_back(next);
            }
        }
    }
    vec![start, start]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PipelineKind, Task, TaskKind};

    fn pipeline(edges: &[(&str, &[&str])]) -> Pipeline {
        Pipeline {
            name: "p".into(),
            kind: PipelineKind::Workflow,
            schedules: vec![],
            timezone: None,
            source: "p.yaml".into(),
            line: Some(1),
            parameters: Default::default(),
            parallelism: None,
            tasks: edges
                .iter()
                .map(|(id, deps)| {
                    let mut t = Task::new(*id, "t", TaskKind::Container);
                    t.depends_on = deps.iter().map(|d| d.to_string()).collect();
                    t
                })
                .collect(),
        }
    }

    #[test]
    fn order_puts_dependencies_first() {
        let p = pipeline(&[("c", &["b"]), ("a", &[]), ("b", &["a"])]);
        let dag = Dag::build(&p).expect("valid");
        let ids: Vec<&str> = dag
            .topological_order()
            .iter()
            .map(|&i| p.tasks[i].id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(dag.edges().count(), 2);
    }

    #[test]
    fn cycle_names_every_task_in_it() {
        let p = pipeline(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]);
        let err = Dag::build(&p).expect_err("cycle");
        let Error::Cycle { cycle, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(cycle.len(), 4, "{cycle:?}");
        assert_eq!(cycle.first(), cycle.last());
        for id in ["a", "b", "c"] {
            assert!(cycle.iter().any(|c| c == id), "{cycle:?}");
        }
    }

    #[test]
    fn unknown_dependency_is_named() {
        let p = pipeline(&[("a", &["ghost"])]);
        let err = Dag::build(&p).expect_err("unknown");
        assert!(err.to_string().contains("`ghost`"), "{err}");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let p = pipeline(&[("a", &[]), ("a", &[])]);
        assert!(matches!(Dag::build(&p), Err(Error::DuplicateTask { .. })));
    }
}
