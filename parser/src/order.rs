//! The one topological sort of the parser: tasks in dependency order with ties in declaration
//! order, or one cycle. The Argo and KFP flatteners order DAG tasks with it, and [`crate::dag`]
//! orders the validated graph.

use std::collections::BTreeSet;

/// Task indices in dependency order, by Kahn's algorithm taking the lowest ready index first
/// (so ties keep declaration order); on a cycle, the indices of one cycle, the first repeated
/// at the end. `dependencies[i]` lists the indices task `i` depends on.
pub(crate) fn dependency_order(dependencies: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = dependencies.len();
    let mut remaining: Vec<usize> = dependencies.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, deps) in dependencies.iter().enumerate() {
        for &j in deps {
            if let Some(list) = dependents.get_mut(j) {
                list.push(i);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| remaining.get(i) == Some(&0)).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &k in dependents.get(i).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(count) = remaining.get_mut(k) {
                *count -= 1;
                if *count == 0 {
                    ready.insert(k);
                }
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk dependencies among the unfinished tasks until one repeats.
    let done: BTreeSet<usize> = order.into_iter().collect();
    let Some(mut current) = (0..n).find(|i| !done.contains(i)) else {
        return Err(Vec::new());
    };
    let mut path: Vec<usize> = Vec::new();
    loop {
        if let Some(pos) = path.iter().position(|&p| p == current) {
            let mut cycle: Vec<usize> = path.split_off(pos);
            cycle.reverse();
            if let Some(&first) = cycle.first() {
                cycle.push(first);
            }
            return Err(cycle);
        }
        path.push(current);
        match dependencies
            .get(current)
            .and_then(|deps| deps.iter().find(|d| !done.contains(d)))
        {
            Some(&next) => current = next,
            None => return Err(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_keep_declaration_order_and_a_cycle_is_named() {
        // 0 ← 2, 1 free, 3 ← 1: 0 and 1 first, by index.
        assert_eq!(
            dependency_order(&[vec![], vec![], vec![0], vec![1]]),
            Ok(vec![0, 1, 2, 3])
        );
        assert_eq!(dependency_order(&[vec![1], vec![]]), Ok(vec![1, 0]));
        // 1 → 2 → 0 → 1 (each before the task that depends on it), and 3 outside it.
        assert_eq!(
            dependency_order(&[vec![2], vec![0], vec![1], vec![]]),
            Err(vec![1, 2, 0, 1])
        );
        assert_eq!(dependency_order(&[]), Ok(vec![]));
    }
}
