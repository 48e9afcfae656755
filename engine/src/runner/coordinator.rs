//! The bookkeeping of one checkpoint in flight: who has passed barrier *n* (source leaves,
//! stateful operators, the runner's inputs) and who has prepared it (sinks); when all have,
//! the checkpoint can be written. Kept free of I/O so that it can be tested on its own.
//!
//! ```sql
//! WITH ('checkpoint.interval' = '10s')   -- one barrier in flight at a time, every 10 s
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use ferris_connectors::checkpoint::{Positions, Prepared};

use crate::checkpoint::OperatorState;

/// A source leaf's positions: its source, its partition, where it was.
pub type LeafPositions = (String, usize, Positions);

/// A checkpoint in flight.
#[derive(Debug)]
pub struct Pending {
    /// Its number.
    pub n: u64,
    /// When it started.
    pub started: Instant,
    /// Source leaves that passed it, with their positions.
    pub leaves: HashMap<usize, LeafPositions>,
    /// Operators' states at it.
    pub ops: HashMap<usize, OperatorState>,
    /// Every output partition delivered its barrier (or ended): the sinks were asked to prepare.
    pub aligned: bool,
    /// Sinks that prepared it, with what they prepared.
    pub prepared: HashMap<usize, Option<Prepared>>,
    /// The checkpoint at the end of the input (no barrier: everything has ended).
    pub last: bool,
}

/// The checkpoints of one run.
#[derive(Debug, Default)]
pub struct Coordinator {
    /// The next checkpoint's number.
    pub next: u64,
    /// The one in flight.
    pub pending: Option<Pending>,
    /// Leaves whose stream ended, with their last positions.
    pub finished_leaves: HashMap<usize, LeafPositions>,
    /// Operators that ended.
    pub finished_ops: HashSet<usize>,
    /// Source leaves of the run.
    pub leaves: usize,
    /// Stateful operators of the plan.
    pub ops: usize,
    /// Sinks that take part (their indices).
    pub sinks: Vec<usize>,
}

impl Coordinator {
    /// A coordinator whose first checkpoint is `next`.
    pub fn new(next: u64, leaves: usize, ops: usize, sinks: Vec<usize>) -> Self {
        Self { next, leaves, ops, sinks, ..Self::default() }
    }

    /// Starts the next checkpoint; `last` at the end of the input.
    pub fn start(&mut self, last: bool) -> u64 {
        let n = self.next;
        self.next += 1;
        self.pending =
            Some(Pending { n, started: Instant::now(), leaves: HashMap::new(), ops: HashMap::new(), aligned: false, prepared: HashMap::new(), last });
        n
    }

    fn pending_at(&mut self, n: u64) -> Option<&mut Pending> {
        self.pending.as_mut().filter(|p| p.n == n)
    }

    /// A source leaf passed barrier `n`.
    pub fn leaf_passed(&mut self, leaf: usize, n: u64, positions: LeafPositions) {
        if let Some(p) = self.pending_at(n) {
            p.leaves.insert(leaf, positions);
        }
    }

    /// A source leaf ended.
    pub fn leaf_finished(&mut self, leaf: usize, positions: LeafPositions) {
        self.finished_leaves.insert(leaf, positions);
    }

    /// An operator's state at barrier `n`.
    pub fn snapshot(&mut self, op: usize, n: u64, state: OperatorState) {
        if let Some(p) = self.pending_at(n) {
            p.ops.insert(op, state);
        }
    }

    /// An operator ended.
    pub fn op_finished(&mut self, op: usize) {
        self.finished_ops.insert(op);
    }

    /// Every output partition has delivered barrier `n`.
    pub fn aligned(&mut self, n: u64) {
        if let Some(p) = self.pending_at(n) {
            p.aligned = true;
        }
    }

    /// A sink prepared checkpoint `n`.
    pub fn prepared(&mut self, sink: usize, n: u64, prepared: Option<Prepared>) {
        if let Some(p) = self.pending_at(n) {
            p.prepared.insert(sink, prepared);
        }
    }

    /// True when a checkpoint is in flight and has everything it needs.
    pub fn complete(&self) -> bool {
        self.missing().is_some_and(|m| m.is_empty())
    }

    /// Who the checkpoint in flight still waits for (empty: nobody); `None` when none is.
    pub fn missing(&self) -> Option<Vec<String>> {
        let p = self.pending.as_ref()?;
        let mut out = Vec::new();
        let leaves_done = (0..self.leaves).filter(|l| p.leaves.contains_key(l) || self.finished_leaves.contains_key(l)).count();
        if leaves_done < self.leaves {
            out.push(format!("{} of {} source partitions", self.leaves - leaves_done, self.leaves));
        }
        let ops: Vec<usize> = (0..self.ops).filter(|o| !p.ops.contains_key(o) && !self.finished_ops.contains(o)).collect();
        if !ops.is_empty() {
            out.push(format!("operators {ops:?}"));
        }
        if !p.aligned {
            out.push("the job's output partitions".to_string());
        }
        let sinks: Vec<usize> = self.sinks.iter().copied().filter(|s| !p.prepared.contains_key(s)).collect();
        if !sinks.is_empty() {
            out.push(format!("sinks {sinks:?}"));
        }
        Some(out)
    }

    /// The positions of each source at the checkpoint in flight: every leaf's, merged by
    /// `merge(source, into, other)`.
    pub fn positions(&self, merge: impl Fn(&str, &mut Positions, Positions)) -> BTreeMap<String, Positions> {
        let mut out: BTreeMap<String, Positions> = BTreeMap::new();
        let Some(p) = &self.pending else { return out };
        let mut leaves: Vec<(&usize, &LeafPositions)> = p.leaves.iter().collect();
        leaves.extend(self.finished_leaves.iter().filter(|(l, _)| !p.leaves.contains_key(l)));
        leaves.sort_by_key(|(l, _)| **l);
        for (_, (source, _, positions)) in leaves {
            match out.get_mut(source) {
                Some(into) => merge(source, into, positions.clone()),
                None => {
                    out.insert(source.clone(), positions.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_checkpoint_completes_when_every_participant_has_passed_it() {
        let mut c = Coordinator::new(1, 2, 1, vec![0, 1]);
        let n = c.start(false);
        assert_eq!(n, 1);
        assert!(!c.complete());
        c.leaf_passed(0, 1, ("k".into(), 0, [("t/0".to_string(), json!(5))].into()));
        c.leaf_finished(1, ("k".into(), 1, [("t/1".to_string(), json!(9))].into()));
        c.snapshot(0, 1, OperatorState::default());
        c.aligned(1);
        c.prepared(0, 1, None);
        assert_eq!(c.missing().unwrap(), vec!["sinks [1]".to_string()]);
        c.prepared(1, 2, None); // another checkpoint's: ignored
        assert!(!c.complete());
        c.prepared(1, 1, Some(json!({"files": []})));
        assert!(c.complete());
        let pos = c.positions(|_, into, other| ferris_connectors::checkpoint::merge_earliest(into, other));
        assert_eq!(pos["k"], [("t/0".to_string(), json!(5)), ("t/1".to_string(), json!(9))].into());
        assert_eq!(c.start(false), 2);
        assert!(c.missing().unwrap().iter().any(|m| m.contains("1 of 2 source partitions")), "the finished leaf counts, the other must pass again");
    }
}
