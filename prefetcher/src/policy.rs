//! The DAG-aware eviction rule, shared by the planner, the executor and the eviction
//! benchmark.
//!
//! When an object has to come in and the budget is full, kfcache evicts, in this order:
//!
//! 1. entries that no remaining task reads (the DAG says they are dead), largest first;
//! 2. then the entry whose next use is furthest in the future (Belady's rule, made possible
//!    because the DAG and the predicted start times say when each entry is read next).
//!
//! It never evicts a pinned entry (a lease: a running task is reading it), and never an entry
//! that is needed *before* the incoming object: making room for something needed later by
//! throwing out something needed sooner loses a hit to gain one. When the room cannot be made
//! under those rules the object is not admitted ([`Victims::Refused`]), and the caller says so.

/// One entry in the cache, as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resident {
    /// Size in the cache.
    pub bytes: u64,
    /// When a remaining consumer next reads it (seconds on the plan's clock); `None` when no
    /// remaining task reads it.
    pub next_use_s: Option<f64>,
    /// Leased by a running task: never evicted.
    pub pinned: bool,
}

/// What [`choose_victims`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Victims {
    /// Evict these entries (indices into the residents slice), in this order; then the
    /// incoming object fits.
    Evict(Vec<usize>),
    /// The object cannot be admitted without evicting pinned entries or entries needed before
    /// it; `short_bytes` is how much room is missing even after every allowed eviction.
    Refused { short_bytes: u64 },
}

/// Chooses what to evict so that `incoming_bytes` fit in `budget_bytes`, given the entries in
/// the cache. `incoming_next_use_s` is when the incoming object is first read.
pub fn choose_victims(
    residents: &[Resident],
    budget_bytes: u64,
    incoming_bytes: u64,
    incoming_next_use_s: f64,
) -> Victims {
    let used: u64 = residents.iter().map(|r| r.bytes).sum();
    let needed = (used + incoming_bytes).saturating_sub(budget_bytes);
    if needed == 0 {
        return Victims::Evict(Vec::new());
    }
    if incoming_bytes > budget_bytes {
        return Victims::Refused {
            short_bytes: incoming_bytes - budget_bytes,
        };
    }
    let mut candidates: Vec<usize> = (0..residents.len())
        .filter(|&i| {
            let r = &residents[i];
            !r.pinned && !matches!(r.next_use_s, Some(next) if next <= incoming_next_use_s)
        })
        .collect();
    // Dead entries first (largest first), then the furthest next use first.
    candidates.sort_by(|&a, &b| {
        let (ra, rb) = (&residents[a], &residents[b]);
        match (ra.next_use_s, rb.next_use_s) {
            (None, None) => rb.bytes.cmp(&ra.bytes).then(a.cmp(&b)),
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => y
                .total_cmp(&x)
                .then(rb.bytes.cmp(&ra.bytes))
                .then(a.cmp(&b)),
        }
    });
    let mut freed = 0u64;
    let mut victims = Vec::new();
    for i in candidates {
        if freed >= needed {
            break;
        }
        freed += residents[i].bytes;
        victims.push(i);
    }
    if freed >= needed {
        // The greedy pass may have taken more than needed: give back, from the entry needed
        // soonest, every victim whose bytes are not required to make the room.
        for position in (0..victims.len()).rev() {
            let bytes = residents[victims[position]].bytes;
            if freed - bytes >= needed {
                freed -= bytes;
                victims.remove(position);
            }
        }
        Victims::Evict(victims)
    } else {
        Victims::Refused {
            short_bytes: needed - freed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(bytes: u64, next: Option<f64>) -> Resident {
        Resident {
            bytes,
            next_use_s: next,
            pinned: false,
        }
    }

    #[test]
    fn nothing_is_evicted_while_the_object_fits() {
        let residents = [r(40, Some(10.0)), r(40, None)];
        assert_eq!(
            choose_victims(&residents, 100, 20, 5.0),
            Victims::Evict(vec![])
        );
    }

    #[test]
    fn dead_entries_go_first_then_the_furthest_next_use() {
        let residents = [
            r(30, Some(50.0)),
            r(30, None),
            r(30, Some(90.0)),
            r(10, Some(20.0)),
        ];
        // 100 used of 100; 50 more needed: the dead entry (30) then the one read at 90 (30).
        assert_eq!(
            choose_victims(&residents, 100, 50, 5.0),
            Victims::Evict(vec![1, 2])
        );
    }

    #[test]
    fn no_entry_is_evicted_that_the_room_does_not_need() {
        // Greedily the entry read at 90 goes first, but the one read at 50 alone makes room.
        let residents = [r(10, Some(90.0)), r(100, Some(50.0))];
        assert_eq!(
            choose_victims(&residents, 110, 50, 5.0),
            Victims::Evict(vec![1])
        );
    }

    #[test]
    fn pinned_and_sooner_needed_entries_are_never_evicted() {
        let mut pinned = r(60, None);
        pinned.pinned = true;
        let residents = [pinned, r(40, Some(3.0))];
        // The incoming object is read at 5 s; the other entry is read at 3 s: neither may go.
        assert_eq!(
            choose_victims(&residents, 100, 30, 5.0),
            Victims::Refused { short_bytes: 30 }
        );
    }

    #[test]
    fn an_object_larger_than_the_budget_is_refused() {
        assert_eq!(
            choose_victims(&[], 100, 130, 0.0),
            Victims::Refused { short_bytes: 30 }
        );
    }
}
