//! `HOP` windows merged from the partial states of their frozen panes, the keys of each pane
//! numbered once, so merging a window hashes nothing.
//!
//! ```sql
//! SELECT window_start, k, COUNT(*) FROM t GROUP BY HOP(ts, INTERVAL '1' SECOND, INTERVAL '5' SECOND), k
//! -- a 5 s window is the merge of its five 1 s panes; each pane's keys are numbered once, when
//! -- the first window holding it is merged, and each of its five windows finds its groups by
//! -- those numbers in an array
//! ```
//!
//! Each pane's groups are in five windows (size / slide of them in general). Merging each
//! window's panes in a hash table keyed by (window start, keys) hashed every pane group once per
//! window: with windows of a few hundred groups (1 s panes of ~100 rows) that was nearly half of
//! the operator's time. Here the distinct keys of the frozen panes get numbers (DataFusion's
//! group values, one hash a pane group, once), and a window's groups are found by number in an
//! array of slots reset after each window. A window's key values are taken from the panes they
//! first came from when the windows are emitted.
//!
//! The numbering keeps every key it has seen until it holds many more than the frozen panes
//! (a stream whose keys change over time); then it starts again and the panes are numbered anew
//! as they are next merged.

use std::sync::Arc;

use datafusion::arrow::array::{new_empty_array, Array, ArrayRef, Int64Array};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{internal_err, Result};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use super::groups::{AggregateSpec, Emitted};

/// A slot without a group.
const NONE: u32 = u32::MAX;

/// The numbering starts again when it holds more than twice the frozen panes' groups and this
/// many keys besides.
const RENUMBER_SLACK: usize = 1 << 16;

/// A complete `HOP` pane: its groups' partial states (keys without the pane start), and the
/// numbers [`HopWindows`] gave their keys.
pub struct FrozenPane {
    /// The groups' keys and partial states.
    pub state: Emitted<Vec<ArrayRef>>,
    /// The number of each group's keys, and the numbering they belong to.
    numbers: Option<(u64, Vec<u32>)>,
}

impl FrozenPane {
    /// A pane whose keys are not numbered yet.
    pub fn new(state: Emitted<Vec<ArrayRef>>) -> Self {
        Self { state, numbers: None }
    }

    /// Number of groups.
    pub fn rows(&self) -> usize {
        self.state.rows
    }

    /// Memory held, in bytes.
    pub fn size(&self) -> usize {
        let arrays = self.state.aggs.iter().flatten().chain(&self.state.keys).map(|a| a.get_array_memory_size()).sum::<usize>();
        arrays + self.numbers.as_ref().map_or(0, |(_, n)| n.capacity() * std::mem::size_of::<u32>())
    }
}

/// The windows one close emits, merged from their panes: groups numbered (window, key) in the
/// order they are first seen, windows in the order they are added.
pub struct HopWindows {
    /// The schema the numbering interns (the keys, or one constant column without keys).
    interned: SchemaRef,
    /// Numbers the keys of the frozen panes.
    numbering: Box<dyn GroupValues>,
    /// Which numbering the panes' numbers must come from.
    generation: u64,
    /// Scratch: the numbering's output for one pane.
    numbered: Vec<usize>,
    /// The accumulators of every window added since the last emission.
    accs: Vec<Box<dyn GroupsAccumulator>>,
    /// By key number: its group in the window being added, or [`NONE`].
    slot: Vec<u32>,
    /// The key numbers of the window being added (their slots are reset after it).
    open: Vec<u32>,
    /// Per group: the window's start.
    starts: Vec<i64>,
    /// Per group: where its key values are (a source, a row of it).
    key_at: Vec<(usize, usize)>,
    /// The key columns of the panes groups took their keys from.
    sources: Vec<Vec<ArrayRef>>,
    /// Scratch: each pane group's group.
    indices: Vec<usize>,
    /// Whether the query has keys (without, every window has one group).
    keyed: bool,
    /// Keys the numbering may hold beyond twice the live groups ([`RENUMBER_SLACK`]).
    slack: usize,
}

impl HopWindows {
    /// Empty, for the aggregates and keys of `spec`.
    pub fn new(spec: &AggregateSpec) -> Result<Self> {
        let interned = spec.interned_schema();
        Ok(Self {
            numbering: new_group_values(Arc::clone(&interned), &GroupOrdering::None)?,
            interned,
            generation: 0,
            numbered: Vec::new(),
            accs: spec.aggs.iter().map(AggregateSpec::accumulator).collect::<Result<Vec<_>>>()?,
            slot: Vec::new(),
            open: Vec::new(),
            starts: Vec::new(),
            key_at: Vec::new(),
            sources: Vec::new(),
            indices: Vec::new(),
            keyed: !spec.key_schema.fields().is_empty(),
            slack: RENUMBER_SLACK,
        })
    }

    /// Number of groups added since the last emission.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether no group was added since the last emission.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Memory held, in bytes (approximate).
    pub fn size(&self) -> usize {
        self.numbering.size()
            + self.slot.capacity() * std::mem::size_of::<u32>()
            + self.accs.iter().map(|a| a.size()).sum::<usize>()
            + self.starts.capacity() * std::mem::size_of::<i64>()
            + self.key_at.capacity() * std::mem::size_of::<(usize, usize)>()
    }

    /// Number of distinct keys numbered.
    pub fn numbered_keys(&self) -> usize {
        self.numbering.len()
    }

    /// Starts the numbering again when it holds many more keys than the `live` groups of the
    /// frozen panes: the panes are numbered anew when next merged.
    pub fn renumber_if_sparse(&mut self, live: usize) -> Result<()> {
        if self.numbering.len() <= live.saturating_mul(2).saturating_add(self.slack) {
            return Ok(());
        }
        self.numbering = new_group_values(Arc::clone(&self.interned), &GroupOrdering::None)?;
        self.generation += 1;
        self.slot = Vec::new();
        Ok(())
    }

    /// Numbers the keys of `pane`, unless the current numbering has.
    fn number(&mut self, spec: &AggregateSpec, pane: &mut FrozenPane) -> Result<()> {
        if matches!(&pane.numbers, Some((g, _)) if *g == self.generation) {
            return Ok(());
        }
        let keys = spec.interned_keys(&pane.state.keys, pane.state.rows);
        self.numbering.intern(&keys, &mut self.numbered)?;
        let Ok(count) = u32::try_from(self.numbering.len()) else {
            return internal_err!("more than 2^32 - 1 distinct keys in the panes of HOP windows");
        };
        if count as usize > self.slot.len() {
            self.slot.resize(count as usize, NONE);
        }
        // (each number is below the count, which fits)
        let numbers = self.numbered.iter().map(|&n| n as u32).collect();
        pane.numbers = Some((self.generation, numbers));
        Ok(())
    }

    /// Adds the window starting at `start`: the merge of `panes` (the frozen panes it spans).
    pub fn add_window<'a>(&mut self, spec: &AggregateSpec, start: i64, panes: impl Iterator<Item = &'a mut FrozenPane>) -> Result<()> {
        let result = self.merge_panes(spec, start, panes);
        for n in self.open.drain(..) {
            if let Some(s) = self.slot.get_mut(n as usize) {
                *s = NONE;
            }
        }
        result
    }

    fn merge_panes<'a>(&mut self, spec: &AggregateSpec, start: i64, panes: impl Iterator<Item = &'a mut FrozenPane>) -> Result<()> {
        for pane in panes {
            if pane.state.rows == 0 {
                continue;
            }
            self.number(spec, pane)?;
            let Some((_, numbers)) = &pane.numbers else { return internal_err!("a HOP pane merged without its keys numbered") };
            let source = self.sources.len();
            let before = self.starts.len();
            if before.saturating_add(numbers.len()) >= NONE as usize {
                return internal_err!("more than 2^32 - 2 groups in HOP windows");
            }
            // (the vectors apart, so the loop keeps them in registers)
            let (slot, open, key_at, indices) = (&mut self.slot, &mut self.open, &mut self.key_at, &mut self.indices);
            indices.clear();
            indices.reserve(numbers.len());
            let mut groups = before;
            for (row, &n) in numbers.iter().enumerate() {
                let Some(s) = slot.get_mut(n as usize) else { return internal_err!("a HOP pane's key number beyond the numbering") };
                if *s == NONE {
                    // (below NONE: checked above)
                    *s = groups as u32;
                    groups += 1;
                    open.push(n);
                    key_at.push((source, row));
                }
                indices.push(*s as usize);
            }
            if groups > before {
                // every new group is this window's
                self.starts.resize(groups, start);
                self.sources.push(pane.state.keys.clone());
            }
            let total = self.starts.len();
            for (acc, states) in self.accs.iter_mut().zip(&pane.state.aggs) {
                acc.merge_batch(states, &self.indices, total)?;
            }
        }
        Ok(())
    }

    /// Emits the final values of every window added since the last emission: the window's
    /// start is the first key column, then the query's keys.
    pub fn emit(&mut self, spec: &AggregateSpec) -> Result<Emitted<ArrayRef>> {
        let rows = self.starts.len();
        let mut keys = vec![Arc::new(Int64Array::from(std::mem::take(&mut self.starts))) as ArrayRef];
        if self.keyed {
            for (col, field) in spec.key_schema.fields().iter().enumerate() {
                if rows == 0 {
                    keys.push(new_empty_array(field.data_type()));
                    continue;
                }
                let arrays: Vec<&dyn Array> = self.sources.iter().map(|s| s[col].as_ref()).collect();
                keys.push(interleave(&arrays, &self.key_at)?);
            }
        }
        self.key_at.clear();
        self.sources.clear();
        let aggs = self.accs.iter_mut().map(|a| a.evaluate(EmitTo::All)).collect::<Result<Vec<_>>>()?;
        Ok(Emitted { keys, aggs, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::groups::Groups;
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;
    use std::collections::BTreeMap;

    /// `COUNT(v)`, `SUM(v)` keyed by a nullable text `k` (or by nothing).
    fn spec(keyed: bool) -> AggregateSpec {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("v", DataType::Int64, true)]));
        let v = col("v", &schema).unwrap();
        let count = AggregateExprBuilder::new(count_udaf(), vec![Arc::clone(&v)]).schema(Arc::clone(&schema)).alias("n").build().unwrap();
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![v]).schema(Arc::clone(&schema)).alias("s").build().unwrap();
        let keys = if keyed { vec![Field::new("k", DataType::Utf8, true)] } else { Vec::new() };
        AggregateSpec { aggs: vec![Arc::new(count), Arc::new(sum)], key_schema: Arc::new(Schema::new(keys)) }
    }

    /// A pane of rows (key, value) aggregated and frozen, as the operator freezes one.
    fn pane(spec: &AggregateSpec, rows: &[(Option<&str>, Option<i64>)]) -> FrozenPane {
        let mut g = Groups::new(spec).unwrap();
        let keys: Vec<ArrayRef> =
            if spec.key_schema.fields().is_empty() { Vec::new() } else { vec![Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>()))] };
        let v: ArrayRef = Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()));
        g.update(spec, &keys, &[vec![Arc::clone(&v)], vec![v]], &[None, None], rows.len()).unwrap();
        FrozenPane::new(g.emit_state(spec).unwrap())
    }

    type Row = (i64, Option<String>, i64, Option<i64>);

    /// (start, key, count, sum) of emitted windows.
    fn out(e: &Emitted<ArrayRef>) -> Vec<Row> {
        let starts = e.keys[0].as_primitive::<Int64Type>();
        let k = e.keys.get(1).map(|k| k.as_string::<i32>());
        let (n, s) = (e.aggs[0].as_primitive::<Int64Type>(), e.aggs[1].as_primitive::<Int64Type>());
        (0..e.rows)
            .map(|i| (starts.value(i), k.and_then(|k| k.is_valid(i).then(|| k.value(i).to_string())), n.value(i), s.is_valid(i).then(|| s.value(i))))
            .collect()
    }

    /// Random panes over windows of 1 to 6 panes, emitted at random points, the numbering
    /// started again at times: every window's groups are the merge of its panes' rows, computed
    /// directly; keys include NULL and values NULL.
    #[test]
    fn windows_merged_by_number_equal_the_rows_counted_directly() {
        let mut next = crate::window::xorshift(0x853c_49e6_748f_ea9bu64);
        let names: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
        for round in 0..60 {
            let keyed = round % 4 != 3;
            let spec = spec(keyed);
            let mut w = HopWindows::new(&spec).unwrap();
            w.slack = 0;
            let span = 1 + next(6) as usize;
            let mut rows_of: Vec<Vec<(Option<&str>, Option<i64>)>> = Vec::new();
            let mut panes: Vec<FrozenPane> = Vec::new();
            for _ in 0..30 {
                let n = next(12) as usize;
                let rows: Vec<(Option<&str>, Option<i64>)> = (0..n)
                    .map(|_| {
                        let k = if next(9) == 0 { None } else { Some(names[next(names.len() as u64) as usize].as_str()) };
                        let v = if next(7) == 0 { None } else { Some(next(100) as i64) };
                        (k, v)
                    })
                    .collect();
                panes.push(pane(&spec, &rows));
                rows_of.push(rows);
            }
            let mut got: Vec<Row> = Vec::new();
            let mut expected: Vec<Row> = Vec::new();
            for first in 0..panes.len() - span + 1 {
                let start = first as i64 * 1000;
                w.add_window(&spec, start, panes[first..first + span].iter_mut()).unwrap();
                let mut direct: BTreeMap<Option<String>, (i64, Option<i64>)> = BTreeMap::new();
                for (k, v) in rows_of[first..first + span].iter().flatten() {
                    let key = if keyed { k.map(str::to_string) } else { None };
                    let e = direct.entry(key).or_insert((0, None));
                    if let Some(v) = v {
                        e.0 += 1;
                        e.1 = Some(e.1.unwrap_or(0) + v);
                    }
                }
                expected.extend(direct.into_iter().map(|(k, (n, s))| (start, k, n, s)));
                match next(5) {
                    0 => got.extend(out(&w.emit(&spec).unwrap())),
                    1 => {
                        // more keys than twice the live groups: started again; not otherwise
                        let before = w.numbered_keys();
                        w.renumber_if_sparse(usize::MAX).unwrap();
                        assert_eq!(w.numbered_keys(), before);
                        w.renumber_if_sparse(0).unwrap();
                        assert_eq!(w.numbered_keys(), 0);
                    }
                    _ => {}
                }
            }
            got.extend(out(&w.emit(&spec).unwrap()));
            assert!(w.is_empty());
            assert!(got.windows(2).all(|p| p[0].0 <= p[1].0), "windows in order, round {round}");
            got.sort();
            expected.sort();
            assert_eq!(got, expected, "round {round}");
        }
    }

    /// Groups come out in window order, each window's in the order of its first pane's groups;
    /// the numbering only starts again when it is much larger than the live groups, and the
    /// panes then get new numbers.
    #[test]
    fn groups_keep_first_seen_order_and_numbering_restarts_only_when_sparse() {
        let spec = spec(true);
        let mut w = HopWindows::new(&spec).unwrap();
        let mut a = pane(&spec, &[(Some("b"), Some(1)), (Some("a"), Some(2))]);
        let mut b = pane(&spec, &[(Some("c"), Some(3)), (Some("a"), Some(4))]);
        w.add_window(&spec, 0, [&mut a, &mut b].into_iter()).unwrap();
        w.add_window(&spec, 1000, [&mut b].into_iter()).unwrap();
        assert_eq!(w.numbered_keys(), 3);
        w.renumber_if_sparse(0).unwrap();
        assert_eq!(w.numbered_keys(), 3, "3 keys are within the slack");
        w.slack = 1;
        w.renumber_if_sparse(1).unwrap();
        assert_eq!(w.numbered_keys(), 3, "3 keys: at most twice 1 live group and 1 more");
        let e = w.emit(&spec).unwrap();
        assert_eq!(
            out(&e),
            vec![
                (0, Some("b".into()), 1, Some(1)),
                (0, Some("a".into()), 2, Some(6)),
                (0, Some("c".into()), 1, Some(3)),
                (1000, Some("c".into()), 1, Some(3)),
                (1000, Some("a".into()), 1, Some(4)),
            ]
        );
        w.renumber_if_sparse(0).unwrap();
        assert_eq!(w.numbered_keys(), 0);
        w.add_window(&spec, 2000, [&mut b].into_iter()).unwrap();
        assert_eq!(w.numbered_keys(), 2, "b numbered anew");
        assert_eq!(out(&w.emit(&spec).unwrap()), vec![(2000, Some("c".into()), 1, Some(3)), (2000, Some("a".into()), 1, Some(4))]);
        assert_eq!(w.emit(&spec).unwrap().rows, 0);
    }
}
