//! A hash aggregation table built from DataFusion's parts: its group-key hash table
//! ([`GroupValues`]) and its vectorised accumulators ([`GroupsAccumulator`]). One table holds
//! the groups of one window (or pane); it can be updated with raw rows, merged with the
//! partial states of other tables, and emitted as final values or as partial states.
//!
//! ```sql
//! SELECT user_id, COUNT(*), AVG(amount) FROM orders GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), user_id
//! -- one table per minute; keys: user_id; accumulators: COUNT, AVG
//! ```

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt8Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::GroupsAccumulatorAdapter;
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

/// The name of a key column of pane or window starts (`BIGINT`, no nulls). Keyed by it alone
/// (windows without `GROUP BY` keys), a table numbers its groups without hashing: see
/// [`StartRuns`].
pub const START_COLUMN: &str = "__ferris_pane";

/// The aggregate functions of an operator and the schema of its group keys.
#[derive(Debug, Clone)]
pub struct AggregateSpec {
    /// The aggregate functions, in output order.
    pub aggs: Vec<Arc<AggregateFunctionExpr>>,
    /// The schema of the group keys (window excluded); empty for none.
    pub key_schema: SchemaRef,
}

impl AggregateSpec {
    /// The schema the hash table interns: the keys, or one constant column when there are none.
    pub(crate) fn interned_schema(&self) -> SchemaRef {
        if self.key_schema.fields().is_empty() {
            Arc::new(Schema::new(vec![Field::new("__ferris_no_keys", DataType::UInt8, false)]))
        } else {
            Arc::clone(&self.key_schema)
        }
    }

    /// Keys to intern for `rows` rows: the keys, or the constant column.
    pub(crate) fn interned_keys(&self, keys: &[ArrayRef], rows: usize) -> Vec<ArrayRef> {
        if self.key_schema.fields().is_empty() {
            vec![Arc::new(UInt8Array::from(vec![0u8; rows])) as ArrayRef]
        } else {
            keys.to_vec()
        }
    }

    /// An accumulator for `agg`: its vectorised one, or its row accumulator behind an adapter
    /// (`COUNT(DISTINCT …)`).
    pub(crate) fn accumulator(agg: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
        if agg.groups_accumulator_supported() {
            agg.create_groups_accumulator()
        } else {
            let agg = Arc::clone(agg);
            Ok(Box::new(GroupsAccumulatorAdapter::new(move || agg.create_accumulator())))
        }
    }
}

/// One hash aggregation table.
pub struct Groups {
    values: Box<dyn GroupValues>,
    accs: Vec<Box<dyn GroupsAccumulator>>,
    indices: Vec<usize>,
    /// Groups changed since the last [`Groups::take_touched`] (for `EMIT CHANGES`).
    touched: Vec<u32>,
    seen: Vec<bool>,
}

/// The groups of a table, emitted: key columns (empty when there are no keys) and one array per
/// aggregate (final values), or one list of state arrays per aggregate (partial states).
#[derive(Clone)]
pub struct Emitted<T> {
    /// Group key columns.
    pub keys: Vec<ArrayRef>,
    /// Per aggregate.
    pub aggs: Vec<T>,
    /// Number of groups.
    pub rows: usize,
}

impl Groups {
    /// An empty table.
    pub fn new(spec: &AggregateSpec) -> Result<Self> {
        Self::with_ordering(spec, &GroupOrdering::None)
    }

    /// An empty table that numbers new groups in the order of their first rows and can emit its
    /// first groups ([`EmitTo::First`]) safely: DataFusion's multi-column table for unordered
    /// input numbers rows whose hashes collide after the others, and its `First` emission can
    /// mix up the lists it keeps for such collisions; the one for ordered input does neither.
    pub fn in_row_order(spec: &AggregateSpec) -> Result<Self> {
        Self::with_ordering(spec, &GroupOrdering::Full(datafusion::physical_plan::aggregates::order::GroupOrderingFull::new()))
    }

    fn with_ordering(spec: &AggregateSpec, ordering: &GroupOrdering) -> Result<Self> {
        let schema = spec.interned_schema();
        let values: Box<dyn GroupValues> = match schema.fields().first() {
            Some(f) if f.name() == START_COLUMN && *f.data_type() == DataType::Int64 && !f.is_nullable() => {
                if schema.fields().len() == 1 {
                    Box::new(StartRuns::default())
                } else {
                    // (it numbers groups in the order of their first rows, whatever the ordering)
                    let keys = Schema::new(schema.fields().iter().skip(1).cloned().collect::<Vec<_>>());
                    Box::new(super::pane_keys::PaneKeys::new(Arc::new(keys))?)
                }
            }
            _ => new_group_values(schema, ordering)?,
        };
        let accs = spec.aggs.iter().map(AggregateSpec::accumulator).collect::<Result<Vec<_>>>()?;
        Ok(Self { values, accs, indices: Vec::new(), touched: Vec::new(), seen: Vec::new() })
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the table has no group.
    pub fn is_empty(&self) -> bool {
        self.values.len() == 0
    }

    /// Notes the groups of the last [`Groups::update`] as changed.
    pub fn mark_touched(&mut self) {
        distinct_groups(&self.indices, &mut self.seen, &mut self.touched);
    }

    /// The groups changed since the last call, in first-changed order.
    pub fn take_touched(&mut self) -> Vec<u32> {
        for &g in &self.touched {
            self.seen[g as usize] = false;
        }
        std::mem::take(&mut self.touched)
    }

    /// Memory held, in bytes (approximate).
    pub fn size(&self) -> usize {
        self.values.size() + self.accs.iter().map(|a| a.size()).sum::<usize>()
    }

    /// Adds raw rows: `keys` (evaluated group keys), `args` (evaluated arguments per aggregate)
    /// and `filters` (per aggregate `FILTER (WHERE …)`). Returns the group of each row.
    pub fn update(
        &mut self,
        spec: &AggregateSpec,
        keys: &[ArrayRef],
        args: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
        rows: usize,
    ) -> Result<&[usize]> {
        let interned = spec.interned_keys(keys, rows);
        self.values.intern(&interned, &mut self.indices)?;
        let total = self.values.len();
        for ((acc, values), filter) in self.accs.iter_mut().zip(args).zip(filters) {
            acc.update_batch(values, &self.indices, filter.as_ref(), total)?;
        }
        Ok(&self.indices)
    }

    /// The group of each row of the last [`Groups::update`] or [`Groups::merge`].
    pub fn last_indices(&self) -> &[usize] {
        &self.indices
    }

    /// Adds partial states emitted by [`Groups::emit_state`] of another table.
    pub fn merge(&mut self, spec: &AggregateSpec, emitted: &Emitted<Vec<ArrayRef>>) -> Result<()> {
        let interned = spec.interned_keys(&emitted.keys, emitted.rows);
        self.values.intern(&interned, &mut self.indices)?;
        let total = self.values.len();
        for (acc, states) in self.accs.iter_mut().zip(&emitted.aggs) {
            acc.merge_batch(states, &self.indices, total)?;
        }
        Ok(())
    }

    fn emit_keys(&mut self, spec: &AggregateSpec, to: EmitTo) -> Result<(Vec<ArrayRef>, usize)> {
        let rows = match to {
            EmitTo::All => self.values.len(),
            EmitTo::First(n) => n.min(self.values.len()),
        };
        let keys = self.values.emit(to)?;
        if let EmitTo::All = to {
            // (DataFusion's multi-column table keeps its hash map after emitting everything,
            // for its caller to clear: the table is used again)
            self.values.clear_shrink(rows);
        }
        Ok((if spec.key_schema.fields().is_empty() { Vec::new() } else { keys }, rows))
    }

    /// Emits every group's final values, emptying the table.
    pub fn emit_final(&mut self, spec: &AggregateSpec) -> Result<Emitted<ArrayRef>> {
        self.emit_final_to(spec, EmitTo::All)
    }

    /// Emits the final values of the groups `to` names (all, or the first n in group order),
    /// removing them; the groups left are numbered from 0 again.
    pub fn emit_final_to(&mut self, spec: &AggregateSpec, to: EmitTo) -> Result<Emitted<ArrayRef>> {
        let (keys, rows) = self.emit_keys(spec, to)?;
        let aggs = self.accs.iter_mut().map(|a| a.evaluate(to)).collect::<Result<Vec<_>>>()?;
        Ok(Emitted { keys, aggs, rows })
    }

    /// Emits every group's partial state, emptying the table.
    pub fn emit_state(&mut self, spec: &AggregateSpec) -> Result<Emitted<Vec<ArrayRef>>> {
        self.emit_state_to(spec, EmitTo::All)
    }

    /// Emits the partial states of the groups `to` names, removing them (see
    /// [`Groups::emit_final_to`]).
    pub fn emit_state_to(&mut self, spec: &AggregateSpec, to: EmitTo) -> Result<Emitted<Vec<ArrayRef>>> {
        let (keys, rows) = self.emit_keys(spec, to)?;
        let aggs = self.accs.iter_mut().map(|a| a.state(to)).collect::<Result<Vec<_>>>()?;
        Ok(Emitted { keys, aggs, rows })
    }

    /// Every group's partial state, leaving the table as it was.
    pub fn peek_state(&mut self, spec: &AggregateSpec) -> Result<Emitted<Vec<ArrayRef>>> {
        let state = self.emit_state(spec)?;
        let touched = std::mem::take(&mut self.touched);
        let seen = std::mem::take(&mut self.seen);
        let mut restored = Groups::new(spec)?;
        restored.merge(spec, &state)?;
        restored.touched = touched;
        restored.seen = seen;
        *self = restored;
        Ok(state)
    }

    /// The current final values of the groups `touched` (group indices), leaving the table as
    /// it was: for `EMIT CHANGES`.
    pub fn snapshot(&mut self, spec: &AggregateSpec, touched: &[u32]) -> Result<Emitted<ArrayRef>> {
        let state = self.emit_state(spec)?;
        // put everything back, in the same group order
        let mut restored = Groups::new(spec)?;
        restored.merge(spec, &state)?;
        *self = restored;
        let idx = datafusion::arrow::array::UInt32Array::from(touched.to_vec());
        let pick = |a: &ArrayRef| take(a.as_ref(), &idx, None);
        let picked = Emitted {
            keys: state.keys.iter().map(pick).collect::<std::result::Result<Vec<_>, _>>()?,
            aggs: state.aggs.iter().map(|s| s.iter().map(pick).collect::<std::result::Result<Vec<_>, _>>()).collect::<std::result::Result<Vec<_>, _>>()?,
            rows: touched.len(),
        };
        let mut out = Groups::new(spec)?;
        out.merge(spec, &picked)?;
        let emitted = out.emit_final(spec)?;
        debug_assert_eq!(emitted.rows, picked.rows);
        Ok(emitted)
    }
}

/// The group values of a table keyed by window or pane starts alone (`GROUP BY TUMBLE(…)`
/// without keys): rows come ordered by start (a batch is put in pane order first), so a row
/// with the start of the row before it takes that row's group, and the few starts a table holds
/// are found by a linear search; nothing is hashed. Groups are numbered in first-seen order, as
/// DataFusion's tables number them.
#[derive(Default)]
struct StartRuns {
    /// The start of each group, in group order.
    starts: Vec<i64>,
    /// Starts by group beyond [`StartRuns::SCAN`] groups.
    index: std::collections::HashMap<i64, usize>,
}

impl StartRuns {
    /// Groups found by a linear search (a table holds at most 64 panes, or one batch's windows).
    const SCAN: usize = 64;

    fn group_of(&mut self, start: i64) -> usize {
        let found = if self.starts.len() <= Self::SCAN { self.starts.iter().rposition(|&s| s == start) } else { self.index.get(&start).copied() };
        found.unwrap_or_else(|| {
            let g = self.starts.len();
            self.starts.push(start);
            if self.index.is_empty() {
                self.reindex();
            } else {
                self.index.insert(start, g);
            }
            g
        })
    }

    /// Indexes every start once there are more than [`StartRuns::SCAN`] (none otherwise).
    fn reindex(&mut self) {
        self.index.clear();
        if self.starts.len() > Self::SCAN {
            self.index.extend(self.starts.iter().enumerate().map(|(g, &s)| (s, g)));
        }
    }
}

impl GroupValues for StartRuns {
    fn intern(&mut self, cols: &[ArrayRef], groups: &mut Vec<usize>) -> Result<()> {
        let Some(starts) = cols.first().and_then(|c| c.as_primitive_opt::<Int64Type>()) else {
            return datafusion::common::internal_err!("a table of starts interns one BIGINT column");
        };
        if starts.null_count() > 0 {
            return datafusion::common::internal_err!("a table of starts interns no NULL start");
        }
        groups.clear();
        groups.reserve(starts.len());
        let mut last: Option<(i64, usize)> = None;
        for &s in starts.values() {
            let g = match last {
                Some((l, g)) if l == s => g,
                _ => self.group_of(s),
            };
            last = Some((s, g));
            groups.push(g);
        }
        Ok(())
    }

    fn size(&self) -> usize {
        self.starts.capacity() * std::mem::size_of::<i64>() + self.index.capacity() * 2 * std::mem::size_of::<usize>()
    }

    fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    fn emit(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let out: Vec<i64> = match emit_to {
            EmitTo::All => std::mem::take(&mut self.starts),
            EmitTo::First(n) => {
                let rest = self.starts.split_off(n.min(self.starts.len()));
                std::mem::replace(&mut self.starts, rest)
            }
        };
        self.reindex();
        Ok(vec![Arc::new(Int64Array::from(out)) as ArrayRef])
    }

    fn clear_shrink(&mut self, _num_rows: usize) {
        self.starts.clear();
        self.index.clear();
    }
}

/// The distinct group indices of `indices`, in first-seen order.
pub fn distinct_groups(indices: &[usize], seen: &mut Vec<bool>, out: &mut Vec<u32>) {
    for &g in indices {
        if g >= seen.len() {
            seen.resize(g + 1, false);
        }
        if !seen[g] {
            seen[g] = true;
            out.push(g as u32);
        }
    }
}

/// Aggregates raw rows whose groups are already numbered (`groups[i]` < `total`), without a
/// hash table: for windows whose groups are found otherwise (sessions). Returns one final array
/// per aggregate, `total` rows each.
pub fn aggregate_numbered(
    spec: &AggregateSpec,
    args: &[Vec<ArrayRef>],
    filters: &[Option<BooleanArray>],
    groups: &[usize],
    total: usize,
) -> Result<Vec<ArrayRef>> {
    let mut out = Vec::with_capacity(spec.aggs.len());
    for ((agg, values), filter) in spec.aggs.iter().zip(args).zip(filters) {
        let mut acc = AggregateSpec::accumulator(agg)?;
        acc.update_batch(values, groups, filter.as_ref(), total)?;
        out.push(acc.evaluate(EmitTo::All)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts in runs, out of order, past the linear search's reach, with the first groups and
    /// then all emitted at random: the same groups and the same keys as DataFusion's table.
    #[test]
    fn starts_are_numbered_as_datafusions_table_numbers_them() {
        let schema = Arc::new(Schema::new(vec![Field::new(START_COLUMN, DataType::Int64, false)]));
        let mut next = crate::window::xorshift(0x9e37_79b9_7f4a_7c15u64);
        for round in 0..40 {
            let mut ours = StartRuns::default();
            let mut theirs = new_group_values(Arc::clone(&schema), &GroupOrdering::None).unwrap();
            let spread = [3u64, 50, 200][round % 3];
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..30 {
                let mut starts = Vec::new();
                while starts.len() < 100 {
                    let s = next(spread) as i64 * 10;
                    starts.extend(std::iter::repeat_n(s, 1 + next(5) as usize));
                }
                let col: ArrayRef = Arc::new(Int64Array::from(starts));
                ours.intern(std::slice::from_ref(&col), &mut a).unwrap();
                theirs.intern(std::slice::from_ref(&col), &mut b).unwrap();
                assert_eq!(a, b, "round {round}");
                assert_eq!(ours.len(), theirs.len());
                let to = crate::window::random_emission(&mut next, ours.len(), 4);
                if let Some(to) = to {
                    let (x, y) = (ours.emit(to).unwrap(), theirs.emit(to).unwrap());
                    assert_eq!(x[0].as_primitive::<Int64Type>(), y[0].as_primitive::<Int64Type>(), "round {round}");
                }
            }
        }
        assert!(StartRuns::default().intern(&[Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef], &mut Vec::new()).is_err());
    }
}
