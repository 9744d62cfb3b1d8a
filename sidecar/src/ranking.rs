//! Node list ranking: Algorithm 2 of the GPU task monitoring and node ranking paper
//! (`gpu-task-monitoring-and-node-ranking`, §5.2), as pure functions.
//!
//! - **Worker side** ([`node_report`]): a node is *provisionable* only when none of its tasks
//!   missed its deadline, its GPU cores are below 100 % and its GPU memory is not full; its
//!   *float time* is the sum of the deadline slack (deadline − end) of the tasks that finished on
//!   it. The paper sends only the state, the float time and the GPU memory usage to the master.
//! - **Master side** ([`rank`], [`pick`]): nodes are ranked by available GPU memory, most first,
//!   because running out of GPU memory fails a task outright while a missed deadline only makes
//!   it late; the new task goes to the first node of that list whose float time exceeds the
//!   task's deadline ("if new container's deadline < nodeFloattime then candidate; break").
//!
//! Two choices the paper leaves open are made here: non-provisionable nodes stay in the ranked
//! list, after every provisionable one and flagged, so `kfcache nodes` can show why a node is
//! out; and the master re-checks the reported metrics (a miss, full cores, full memory) rather
//! than trusting the state bit alone, so a report from an older worker cannot place a task on a
//! full node. [`preference_weights`] turns the ranking into the weights of Kubernetes
//! node-affinity preferences for `kfcache inject --placement`.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{Event, EventKind, NodeReport};

/// GPU core utilisation at which the cores count as full. nvidia-smi cannot report more than
/// 100 %, so at 100 % nobody knows how oversubscribed the GPU already is.
pub const FULL_UTILIZATION_PCT: f64 = 100.0;

/// The highest weight of a Kubernetes preferred scheduling term (weights are 1..=100).
pub const MAX_WEIGHT: i32 = 100;

/// One GPU of a node at report time (NVML's memory info and utilisation rates).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    /// Core utilisation, percent.
    pub utilization_pct: f64,
}

/// Worker side of Algorithm 2: the report a node sends, from its GPUs now and the deadline
/// slack (float time, seconds; negative when missed) of every task that finished on it.
///
/// Several GPUs add up their memory; the core utilisation is the busiest GPU's, so one full GPU
/// makes the node full, as in the single-GPU paper. A node without GPUs (no memory at all) is
/// never provisionable for a GPU task. Slack values that are not finite are ignored.
pub fn node_report(
    node: impl Into<String>,
    at: DateTime<Utc>,
    gpus: &[GpuSample],
    slacks_s: &[f64],
) -> NodeReport {
    let memory_total = gpus
        .iter()
        .fold(0u64, |sum, g| sum.saturating_add(g.memory_total_bytes));
    let memory_used = gpus
        .iter()
        .fold(0u64, |sum, g| sum.saturating_add(g.memory_used_bytes));
    let utilization = gpus
        .iter()
        .map(|g| {
            if g.utilization_pct.is_nan() {
                // Unknown counts as full: never place work on a GPU nobody can read.
                FULL_UTILIZATION_PCT
            } else {
                g.utilization_pct
            }
        })
        .fold(0.0, f64::max);
    let finished = slacks_s.iter().copied().filter(|s| s.is_finite());
    let deadline_misses = finished.clone().filter(|s| *s < 0.0).count();
    let float_time_s: f64 = finished.sum();
    let mut report = NodeReport {
        node: node.into(),
        at,
        // Decided below from the metrics alone.
        provisionable: true,
        gpu_memory_total_bytes: memory_total,
        gpu_memory_used_bytes: memory_used,
        gpu_utilization_pct: utilization,
        float_time_s,
        deadline_misses: u32::try_from(deadline_misses).unwrap_or(u32::MAX),
    };
    report.provisionable = unprovisionable_reason(&report).is_none();
    report
}

/// The slack of every task that ended on Kubernetes node `node`, from the events the sidecars
/// published (`ended` events that carry a deadline slack).
pub fn slacks_on(events: &[Event], node: &str) -> Vec<f64> {
    events
        .iter()
        .filter(|e| e.who.node.as_deref() == Some(node))
        .filter_map(|e| match &e.kind {
            EventKind::Ended { slack_s, .. } => *slack_s,
            _ => None,
        })
        .collect()
}

/// Why a node cannot take another GPU task, or `None` when it can. Checks the reported state
/// bit and the metrics behind it.
pub fn unprovisionable_reason(report: &NodeReport) -> Option<&'static str> {
    if report.deadline_misses > 0 {
        Some("deadline missed")
    } else if report.gpu_memory_total_bytes == 0 {
        Some("no GPU memory")
    } else if report.gpu_memory_used_bytes >= report.gpu_memory_total_bytes {
        Some("GPU memory full")
    } else if report.gpu_utilization_pct.is_nan()
        || report.gpu_utilization_pct >= FULL_UTILIZATION_PCT
    {
        Some("GPU cores full")
    } else if !report.provisionable {
        Some("reported full")
    } else {
        None
    }
}

/// Whether the node can take another GPU task (see [`unprovisionable_reason`]).
pub fn is_provisionable(report: &NodeReport) -> bool {
    unprovisionable_reason(report).is_none()
}

/// A node's place in the ranked list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// 1-based position: every provisionable node comes before every other one.
    pub rank: usize,
    pub provisionable: bool,
    /// Why the node is out, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub report: NodeReport,
}

/// Master side of Algorithm 2: provisionable nodes by available GPU memory, most first, then
/// the others the same way. Ties go to the larger float time, then to the node name, so the
/// order never depends on the order reports arrived in.
pub fn rank(reports: &[NodeReport]) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = reports
        .iter()
        .map(|report| {
            let reason = unprovisionable_reason(report);
            Ranked {
                rank: 0,
                provisionable: reason.is_none(),
                reason,
                report: report.clone(),
            }
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.provisionable
            .cmp(&a.provisionable)
            .then_with(|| {
                b.report
                    .gpu_memory_free_bytes()
                    .cmp(&a.report.gpu_memory_free_bytes())
            })
            .then_with(|| float_order(b.report.float_time_s, a.report.float_time_s))
            .then_with(|| a.report.node.cmp(&b.report.node))
    });
    for (i, node) in ranked.iter_mut().enumerate() {
        node.rank = i + 1;
    }
    ranked
}

fn float_order(a: f64, b: f64) -> Ordering {
    a.total_cmp(&b)
}

/// The node for a new GPU task whose deadline is `deadline_s` seconds: the first provisionable
/// node of the ranking whose float time exceeds the deadline, or `None` when no node has that
/// much room (the scheduler then decides on its own).
pub fn pick(ranked: &[Ranked], deadline_s: f64) -> Option<&NodeReport> {
    ranked
        .iter()
        .find(|n| n.provisionable && deadline_s < n.report.float_time_s)
        .map(|n| &n.report)
}

/// Node-affinity preference weights from the ranking, strongest first: provisionable nodes
/// only, at most `max_nodes` of them; with a deadline, the nodes whose float time exceeds it
/// (the ones [`pick`] would choose, in ranking order) come before the others. Weights fall
/// evenly from [`MAX_WEIGHT`] and stay at least 1, so the picked node is always preferred most.
pub fn preference_weights(
    ranked: &[Ranked],
    deadline_s: Option<f64>,
    max_nodes: usize,
) -> Vec<(String, i32)> {
    let provisionable = ranked.iter().filter(|n| n.provisionable);
    let ordered: Vec<&Ranked> = match deadline_s {
        Some(deadline) => {
            let (meets, rest): (Vec<&Ranked>, Vec<&Ranked>) =
                provisionable.partition(|n| deadline < n.report.float_time_s);
            meets.into_iter().chain(rest).collect()
        }
        None => provisionable.collect(),
    };
    let count = ordered.len().min(max_nodes);
    if count == 0 {
        return Vec::new();
    }
    ordered
        .into_iter()
        .take(count)
        .enumerate()
        .map(|(i, n)| {
            // i < count, so the weight stays within 1..=100.
            let step = (i * MAX_WEIGHT as usize) / count;
            let weight = i32::try_from(MAX_WEIGHT as usize - step)
                .unwrap_or(1)
                .max(1);
            (n.report.node.clone(), weight)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Identity;

    const GIB: u64 = 1 << 30;

    fn at() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().expect("time")
    }

    fn gpu(total_gib: u64, used_gib: u64, utilization_pct: f64) -> GpuSample {
        GpuSample {
            memory_total_bytes: total_gib * GIB,
            memory_used_bytes: used_gib * GIB,
            utilization_pct,
        }
    }

    fn report(node: &str, free_gib: u64, float_time_s: f64) -> NodeReport {
        node_report(node, at(), &[gpu(80, 80 - free_gib, 50.0)], &[float_time_s])
    }

    /// The worker-side rules of Algorithm 2, one row per rule.
    #[test]
    fn worker_side_follows_the_papers_rules() {
        struct Case {
            name: &'static str,
            gpus: Vec<GpuSample>,
            slacks: Vec<f64>,
            provisionable: bool,
            float_time_s: f64,
            misses: u32,
        }
        let cases = [
            Case {
                name: "room everywhere and every deadline met",
                gpus: vec![gpu(80, 20, 60.0)],
                slacks: vec![120.0, 30.0],
                provisionable: true,
                float_time_s: 150.0,
                misses: 0,
            },
            Case {
                name: "a task that missed its deadline makes the node unprovisionable",
                gpus: vec![gpu(80, 20, 60.0)],
                slacks: vec![120.0, -5.0],
                provisionable: false,
                float_time_s: 115.0,
                misses: 1,
            },
            Case {
                name: "a deadline met exactly is a hit",
                gpus: vec![gpu(80, 20, 60.0)],
                slacks: vec![0.0],
                provisionable: true,
                float_time_s: 0.0,
                misses: 0,
            },
            Case {
                name: "GPU cores at 100 % are full",
                gpus: vec![gpu(80, 20, 100.0)],
                slacks: vec![60.0],
                provisionable: false,
                float_time_s: 60.0,
                misses: 0,
            },
            Case {
                name: "one full GPU of several makes the node full",
                gpus: vec![gpu(80, 10, 10.0), gpu(80, 10, 100.0)],
                slacks: vec![],
                provisionable: false,
                float_time_s: 0.0,
                misses: 0,
            },
            Case {
                name: "GPU memory at 100 % is full",
                gpus: vec![gpu(80, 80, 30.0)],
                slacks: vec![60.0],
                provisionable: false,
                float_time_s: 60.0,
                misses: 0,
            },
            Case {
                name: "an unreadable utilisation counts as full",
                gpus: vec![gpu(80, 10, f64::NAN)],
                slacks: vec![],
                provisionable: false,
                float_time_s: 0.0,
                misses: 0,
            },
            Case {
                name: "a node without GPUs takes no GPU task",
                gpus: vec![],
                slacks: vec![],
                provisionable: false,
                float_time_s: 0.0,
                misses: 0,
            },
            Case {
                name: "a fresh node with room is provisionable with no float time",
                gpus: vec![gpu(40, 0, 0.0), gpu(40, 0, 0.0)],
                slacks: vec![f64::NAN],
                provisionable: true,
                float_time_s: 0.0,
                misses: 0,
            },
        ];
        for case in cases {
            let r = node_report("n", at(), &case.gpus, &case.slacks);
            assert_eq!(r.provisionable, case.provisionable, "{}", case.name);
            assert_eq!(r.float_time_s, case.float_time_s, "{}", case.name);
            assert_eq!(r.deadline_misses, case.misses, "{}", case.name);
            assert_eq!(is_provisionable(&r), case.provisionable, "{}", case.name);
        }
        let two = node_report("n", at(), &[gpu(40, 10, 5.0), gpu(80, 30, 50.0)], &[]);
        assert_eq!(two.gpu_memory_free_bytes(), 80 * GIB);
        assert_eq!(two.gpu_utilization_pct, 50.0);
    }

    #[test]
    fn ranking_orders_by_free_gpu_memory_with_unprovisionable_nodes_last() {
        let mut missed = report("missed", 79, 500.0);
        missed.deadline_misses = 1;
        missed.provisionable = false;
        let reports = vec![
            report("small", 10, 900.0),
            missed,
            report("large", 60, 10.0),
            report("medium-b", 30, 50.0),
            report("medium-a", 30, 50.0),
            report("medium-more-float", 30, 70.0),
        ];
        let ranked = rank(&reports);
        let order: Vec<(&str, usize, bool)> = ranked
            .iter()
            .map(|r| (r.report.node.as_str(), r.rank, r.provisionable))
            .collect();
        assert_eq!(
            order,
            vec![
                ("large", 1, true),
                ("medium-more-float", 2, true),
                ("medium-a", 3, true),
                ("medium-b", 4, true),
                ("small", 5, true),
                ("missed", 6, false),
            ]
        );
        assert_eq!(ranked[5].reason, Some("deadline missed"));
    }

    /// A report whose state bit says provisionable but whose metrics say full is not trusted.
    #[test]
    fn the_master_rechecks_the_metrics_behind_the_state_bit() {
        let mut lying = report("lying", 70, 900.0);
        lying.gpu_utilization_pct = 100.0;
        assert!(lying.provisionable);
        let ranked = rank(&[lying, report("honest", 10, 900.0)]);
        assert_eq!(ranked[0].report.node, "honest");
        assert_eq!(ranked[1].reason, Some("GPU cores full"));
        assert_eq!(pick(&ranked, 60.0).map(|n| n.node.as_str()), Some("honest"));
    }

    #[test]
    fn pick_takes_the_first_ranked_node_with_more_float_time_than_the_deadline() {
        let mut full = report("full-but-idle", 75, 10_000.0);
        full.gpu_memory_used_bytes = full.gpu_memory_total_bytes;
        full.provisionable = false;
        let ranked = rank(&[
            report("most-memory", 70, 100.0),
            report("enough-float", 40, 1_000.0),
            report("lots-of-float", 20, 5_000.0),
            full,
        ]);
        let picked = |deadline: f64| pick(&ranked, deadline).map(|n| n.node.clone());
        // Deadline below the first node's float time: the most free memory wins.
        assert_eq!(picked(30.0).as_deref(), Some("most-memory"));
        // Equal is not enough: the paper asks for deadline < float time.
        assert_eq!(picked(100.0).as_deref(), Some("enough-float"));
        assert_eq!(picked(1_800.0).as_deref(), Some("lots-of-float"));
        // No provisionable node has that much float time: no candidate.
        assert_eq!(picked(9_000.0), None);
        assert_eq!(pick(&[], 1.0), None);
    }

    #[test]
    fn preference_weights_put_the_pick_first_and_stay_within_kubernetes_bounds() {
        let mut missed = report("missed", 79, 500.0);
        missed.deadline_misses = 2;
        let ranked = rank(&[
            report("a", 70, 100.0),
            report("b", 40, 1_000.0),
            report("c", 20, 5_000.0),
            missed,
        ]);
        assert_eq!(
            preference_weights(&ranked, None, 10),
            vec![("a".into(), 100), ("b".into(), 67), ("c".into(), 34)]
        );
        let with_deadline = preference_weights(&ranked, Some(600.0), 10);
        assert_eq!(
            with_deadline,
            vec![("b".into(), 100), ("c".into(), 67), ("a".into(), 34)]
        );
        assert_eq!(
            with_deadline.first().map(|(n, _)| n.as_str()),
            pick(&ranked, 600.0).map(|n| n.node.as_str())
        );
        assert_eq!(
            preference_weights(&ranked, None, 1),
            vec![("a".into(), 100)]
        );
        let many: Vec<NodeReport> = (0..300)
            .map(|i| report(&format!("n{i:03}"), 1 + i % 70, 10.0))
            .collect();
        let weights = preference_weights(&rank(&many), None, 300);
        assert_eq!(weights.len(), 300);
        assert!(weights.iter().all(|(_, w)| (1..=MAX_WEIGHT).contains(w)));
        assert!(weights.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(preference_weights(&rank(&[]), Some(1.0), 10).is_empty());
    }

    #[test]
    fn slacks_come_from_the_ended_events_of_the_node() {
        let on = |node: Option<&str>, slack: Option<f64>| {
            let mut who = Identity::resolve("wf", "p", Some("fit"), None).expect("identity");
            who.node = node.map(str::to_string);
            Event {
                who,
                at: at(),
                kind: EventKind::Ended {
                    started_at: at(),
                    detector: "proc".into(),
                    exit_code: Some(0),
                    gpu_memory_bytes: None,
                    deadline: None,
                    slack_s: slack,
                },
            }
        };
        let started = Event {
            kind: EventKind::Started {
                detector: "proc".into(),
                pid: 1,
            },
            ..on(Some("gpu-1"), None)
        };
        let events = vec![
            on(Some("gpu-1"), Some(30.0)),
            on(Some("gpu-2"), Some(-4.0)),
            on(Some("gpu-1"), None),
            on(None, Some(99.0)),
            on(Some("gpu-1"), Some(-1.5)),
            started,
        ];
        assert_eq!(slacks_on(&events, "gpu-1"), vec![30.0, -1.5]);
        let r = node_report(
            "gpu-1",
            at(),
            &[gpu(80, 1, 1.0)],
            &slacks_on(&events, "gpu-1"),
        );
        assert!(!r.provisionable);
        assert_eq!(r.deadline_misses, 1);
    }
}
