//! The open panes of `TUMBLE` and `HOP` windows emitting final results, in one hash table keyed
//! by the pane's start and the group keys.
//!
//! ```sql
//! SELECT window_start, k, COUNT(*), SUM(amount) FROM t GROUP BY TUMBLE(ts, INTERVAL '1' SECOND), k
//! -- one table of (pane start, k) groups for every second still open; a batch of rows is
//! -- interned in one pass, whatever the number of windows it spans
//! ```
//!
//! A table per pane costs a table's set-up, growth and emission per pane: with windows of a
//! few rows each (1 s windows over rows 10 ms apart) that was most of the operator's time. A
//! table here holds a *chunk* of [`CHUNK_PANES`] consecutive panes: it interns a batch's rows
//! of those panes at once (DataFusion's vectorised group values and accumulators), stays small
//! enough to be warm in cache even when every window waits for the end of a bounded input, and
//! emits the panes a watermark closes in one go. Rows in time order number their groups in pane
//! order, so the panes that close are the first groups of their chunk ([`EmitTo::First`]); a
//! row that comes back to an older pane of the chunk (within the watermark's delay) breaks that
//! order, and the chunk's next close takes the slower way: every group out, the open ones
//! merged back.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::{partition, sort_to_indices, take};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::common::Result;
use datafusion::logical_expr::EmitTo;

use super::aggregate_exec::Evaluated;
use super::groups::{AggregateSpec, Emitted, Groups};

/// The name of the pane column the table's keys start with.
const PANE_COLUMN: &str = "__ferris_pane";

/// Panes per hash table.
pub const CHUNK_PANES: i64 = 64;

/// The groups of every open pane. See the module documentation.
pub struct PaneTable {
    /// The aggregates, keyed by the pane's start then the query's keys.
    spec: AggregateSpec,
    /// The length of a chunk of panes, in milliseconds.
    chunk: i64,
    /// The chunks with open panes, by the chunk's start.
    chunks: BTreeMap<i64, Chunk>,
    /// The table of the last chunk closed, empty, for the next one to start with (its hash
    /// table has grown to the size a chunk needs already).
    spare: Option<Chunk>,
}

impl PaneTable {
    /// An empty table for the aggregates and keys of `spec`, panes `pane` ms long.
    pub fn new(spec: &AggregateSpec, pane: i64) -> Self {
        let mut fields = vec![Arc::new(Field::new(PANE_COLUMN, DataType::Int64, false))];
        fields.extend(spec.key_schema.fields().iter().cloned());
        let spec = AggregateSpec { aggs: spec.aggs.clone(), key_schema: Arc::new(Schema::new(fields)) };
        Self { spec, chunk: pane.max(1).saturating_mul(CHUNK_PANES), chunks: BTreeMap::new(), spare: None }
    }

    /// The aggregates keyed by a start then the query's keys: for a table of windows (`HOP`
    /// windows merged from their panes) shaped as this one.
    pub fn spec(&self) -> &AggregateSpec {
        &self.spec
    }

    /// Number of hash tables (chunks of panes).
    pub fn tables(&self) -> usize {
        self.chunks.len()
    }

    /// Number of groups over every pane.
    pub fn len(&self) -> usize {
        self.chunks.values().map(|c| c.pane_of.len()).sum()
    }

    /// Whether no pane is open.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Memory held, in bytes (approximate).
    pub fn size(&self) -> usize {
        let counts = |c: &Chunk| c.counts.len() * 2 * std::mem::size_of::<i64>();
        self.chunks.values().chain(&self.spare).map(|c| c.groups.size() + c.pane_of.capacity() * std::mem::size_of::<i64>() + counts(c)).sum()
    }

    fn chunk_of(&self, pane: i64) -> i64 {
        pane.div_euclid(self.chunk).saturating_mul(self.chunk)
    }

    fn chunk_mut(&mut self, start: i64) -> Result<&mut Chunk> {
        Ok(match self.chunks.entry(start) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => v.insert(match self.spare.take() {
                Some(spare) => spare,
                None => Chunk::new(&self.spec)?,
            }),
        })
    }

    /// Adds raw rows: `panes` (each row's pane start) and their evaluated keys, arguments and
    /// filters.
    pub fn update(&mut self, panes: &Int64Array, ev: &Evaluated) -> Result<()> {
        let chunk = self.chunk;
        let chunks: Int64Array = panes.unary(|p| p.div_euclid(chunk).saturating_mul(chunk));
        let (Some(lo), Some(hi)) = (datafusion::arrow::compute::min(&chunks), datafusion::arrow::compute::max(&chunks)) else { return Ok(()) };
        let spec = self.spec.clone();
        if lo == hi {
            return self.chunk_mut(lo)?.update(&spec, panes, ev);
        }
        // rows in time order are in runs of one chunk already: no sort, no copy
        let sorted;
        let (chunks, panes, ev) = if chunks.values().windows(2).all(|w| w[0] <= w[1]) {
            (chunks, panes.clone(), ev)
        } else {
            let order = sort_to_indices(&chunks, None, None)?;
            let pick = |a: &Int64Array| -> Result<Int64Array> { Ok(take(a, &order, None)?.as_primitive::<Int64Type>().clone()) };
            sorted = ev.take(&order)?;
            (pick(&chunks)?, pick(panes)?, &sorted)
        };
        for r in partition(&[Arc::new(chunks.clone()) as ArrayRef])?.ranges() {
            let len = r.end - r.start;
            self.chunk_mut(chunks.value(r.start))?.update(&spec, &panes.slice(r.start, len), &ev.slice(r.start, len))?;
        }
        Ok(())
    }

    /// Adds the partial states of `pane`'s groups (a frozen `HOP` pane a late row opens again).
    pub fn merge_pane(&mut self, pane: i64, state: &Emitted<Vec<ArrayRef>>) -> Result<()> {
        let mut keys = Vec::with_capacity(state.keys.len() + 1);
        keys.push(Arc::new(Int64Array::from_value(pane, state.rows)) as ArrayRef);
        keys.extend(state.keys.iter().cloned());
        let spec = self.spec.clone();
        let start = self.chunk_of(pane);
        self.chunk_mut(start)?.merge(&spec, &Emitted { keys, aggs: state.aggs.clone(), rows: state.rows })
    }

    /// Adds partial states whose first key column is the pane (what [`PaneTable::peek_state`]
    /// gives: a checkpoint restored).
    pub fn merge(&mut self, state: &Emitted<Vec<ArrayRef>>) -> Result<()> {
        let Some(panes) = state.keys.first().and_then(|p| p.as_primitive_opt::<Int64Type>()) else {
            return datafusion::common::internal_err!("pane states without their pane column");
        };
        let chunk = self.chunk;
        let chunks: Int64Array = panes.unary(|p| p.div_euclid(chunk).saturating_mul(chunk));
        let order = sort_to_indices(&chunks, None, None)?;
        let chunks = take(&chunks, &order, None)?;
        let state = pick(state, &order)?;
        let spec = self.spec.clone();
        for r in partition(&[Arc::clone(&chunks)])?.ranges() {
            let start = chunks.as_primitive::<Int64Type>().value(r.start);
            let part = slice(&state, r.start, r.end - r.start);
            self.chunk_mut(start)?.merge(&spec, &part)?;
        }
        Ok(())
    }

    /// The chunks that may hold panes starting before `end`, in order.
    fn chunks_before(&self, end: i64) -> Vec<i64> {
        self.chunks.range(..end).map(|(&s, _)| s).collect()
    }

    /// Takes the final values of every pane starting before `end` out of the table: parts
    /// ordered by pane (the pane is the first key column), and the number of panes.
    pub fn take_final(&mut self, end: i64) -> Result<(Vec<Emitted<ArrayRef>>, usize)> {
        let (mut parts, mut panes) = (Vec::new(), 0);
        for start in self.chunks_before(end) {
            let Some(chunk) = self.chunks.get_mut(&start) else { continue };
            if let Some((e, n)) = chunk.take_final(&self.spec, end)? {
                parts.push(e);
                panes += n;
            }
            if chunk.pane_of.is_empty() {
                self.spare = self.chunks.remove(&start);
            }
        }
        Ok((parts, panes))
    }

    /// Takes the partial states of every pane starting before `end` out of the table, in parts
    /// ordered by pane (the pane is the first key column).
    pub fn take_state(&mut self, end: i64) -> Result<Vec<Emitted<Vec<ArrayRef>>>> {
        let mut parts = Vec::new();
        for start in self.chunks_before(end) {
            let Some(chunk) = self.chunks.get_mut(&start) else { continue };
            if let Some(e) = chunk.take_state(&self.spec, end)? {
                parts.push(e);
            }
            if chunk.pane_of.is_empty() {
                self.spare = self.chunks.remove(&start);
            }
        }
        Ok(parts)
    }

    /// Every group's partial state (the pane first among the keys), in parts, leaving the
    /// table as it was: for a checkpoint.
    pub fn peek_state(&mut self) -> Result<Vec<Emitted<Vec<ArrayRef>>>> {
        let spec = self.spec.clone();
        self.chunks.values_mut().map(|c| c.peek_state(&spec)).collect()
    }

    /// Drops every pane.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.spare = None;
    }
}

/// The open panes of one chunk in one hash table.
struct Chunk {
    /// (emptied by emitting every group when its last pane closes: then it may be used again)
    groups: Groups,
    /// The pane of each group, in group order.
    pane_of: Vec<i64>,
    /// How many groups each open pane has.
    counts: BTreeMap<i64, usize>,
    /// Each group's pane is at or after the pane of the group before it.
    ordered: bool,
}

impl Chunk {
    fn new(spec: &AggregateSpec) -> Result<Self> {
        Ok(Self { groups: Groups::in_row_order(spec)?, pane_of: Vec::new(), counts: BTreeMap::new(), ordered: true })
    }

    /// Records the pane of each group created by the last update or merge (rows `panes`).
    fn note_panes(&mut self, panes: &[i64]) {
        let before = self.pane_of.len();
        let total = self.groups.len();
        if total <= before {
            return;
        }
        // (every row of a group has its pane: the pane is part of the key)
        self.pane_of.resize(total, 0);
        for (row, &g) in self.groups.last_indices().iter().enumerate() {
            if g >= before {
                self.pane_of[g] = panes[row];
            }
        }
        self.note_new_groups(before);
    }

    fn update(&mut self, spec: &AggregateSpec, panes: &Int64Array, ev: &Evaluated) -> Result<()> {
        let mut interned = Vec::with_capacity(ev.keys.len() + 1);
        interned.push(Arc::new(panes.clone()) as ArrayRef);
        interned.extend(ev.keys.iter().cloned());
        self.groups.update(spec, &interned, &ev.args, &ev.filters, ev.rows)?;
        self.note_panes(panes.values());
        Ok(())
    }

    fn merge(&mut self, spec: &AggregateSpec, state: &Emitted<Vec<ArrayRef>>) -> Result<()> {
        let Some(panes) = state.keys.first().and_then(|p| p.as_primitive_opt::<Int64Type>()) else {
            return datafusion::common::internal_err!("pane states without their pane column");
        };
        let panes = panes.clone();
        self.groups.merge(spec, state)?;
        self.note_panes(panes.values());
        Ok(())
    }

    fn note_new_groups(&mut self, before: usize) {
        let mut last = before.checked_sub(1).map(|i| self.pane_of[i]);
        // (runs of one pane: rows in time order come in few)
        for run in self.pane_of[before..].chunk_by(|a, b| a == b) {
            let p = run[0];
            *self.counts.entry(p).or_default() += run.len();
            if last.is_some_and(|l| p < l) {
                self.ordered = false;
            }
            last = Some(p);
        }
    }

    fn take_final(&mut self, spec: &AggregateSpec, end: i64) -> Result<Option<(Emitted<ArrayRef>, usize)>> {
        let Some((to, panes)) = self.close(spec, end)? else { return Ok(None) };
        Ok(Some((
            match to {
                Taken::Emit(to) => self.groups.emit_final_to(spec, to)?,
                Taken::Sorted(order) => pick_final(&self.groups.emit_final(spec)?, &order)?,
                Taken::Out(states) => {
                    let mut closed = Groups::new(spec)?;
                    closed.merge(spec, &states)?;
                    closed.emit_final(spec)?
                }
            },
            panes,
        )))
    }

    fn take_state(&mut self, spec: &AggregateSpec, end: i64) -> Result<Option<Emitted<Vec<ArrayRef>>>> {
        let Some((to, _)) = self.close(spec, end)? else { return Ok(None) };
        Ok(Some(match to {
            Taken::Emit(to) => self.groups.emit_state_to(spec, to)?,
            Taken::Sorted(order) => pick(&self.groups.emit_state(spec)?, &order)?,
            Taken::Out(states) => states,
        }))
    }

    /// How the panes before `end` leave the table, and how many there are; the bookkeeping of
    /// panes and groups is updated.
    fn close(&mut self, spec: &AggregateSpec, end: i64) -> Result<Option<(Taken, usize)>> {
        let n: usize = self.counts.range(..end).map(|(_, n)| n).sum();
        if n == 0 {
            return Ok(None);
        }
        let open = self.counts.split_off(&end);
        let panes = std::mem::replace(&mut self.counts, open).len();
        if self.ordered {
            self.pane_of.drain(..n);
            return Ok(Some((Taken::Emit(if self.pane_of.is_empty() { EmitTo::All } else { EmitTo::First(n) }), panes)));
        }
        // a row went back to an older pane: the groups sorted by pane (stable: each pane's
        // groups in their order)
        let mut order: Vec<u32> = (0..self.pane_of.len() as u32).collect();
        order.sort_by_key(|&i| self.pane_of[i as usize]);
        if n == self.pane_of.len() {
            // all of them go
            self.pane_of.clear();
            self.ordered = true;
            return Ok(Some((Taken::Sorted(UInt32Array::from(order)), panes)));
        }
        // every group out, the open ones back in
        let all = self.groups.emit_state(spec)?;
        let (closed, open): (Vec<u32>, Vec<u32>) = order.into_iter().partition(|&i| self.pane_of[i as usize] < end);
        self.pane_of.clear();
        self.ordered = true;
        self.counts.clear();
        self.merge(spec, &pick(&all, &UInt32Array::from(open))?)?;
        Ok(Some((Taken::Out(pick(&all, &UInt32Array::from(closed))?), panes)))
    }

    fn peek_state(&mut self, spec: &AggregateSpec) -> Result<Emitted<Vec<ArrayRef>>> {
        let state = self.groups.emit_state(spec)?;
        self.pane_of.clear();
        self.counts.clear();
        self.ordered = true;
        self.merge(spec, &state)?;
        Ok(state)
    }
}

/// How closed panes leave a [`Chunk`].
enum Taken {
    /// Emitted from the table (all its groups, or the first n).
    Emit(EmitTo),
    /// Every group emitted, then put in this order.
    Sorted(UInt32Array),
    /// Taken out already, as partial states.
    Out(Emitted<Vec<ArrayRef>>),
}

/// Emitted final values at `indices`, in that order.
fn pick_final(all: &Emitted<ArrayRef>, indices: &UInt32Array) -> Result<Emitted<ArrayRef>> {
    let t = |a: &ArrayRef| take(a.as_ref(), indices, None);
    Ok(Emitted {
        keys: all.keys.iter().map(t).collect::<std::result::Result<_, _>>()?,
        aggs: all.aggs.iter().map(t).collect::<std::result::Result<_, _>>()?,
        rows: indices.len(),
    })
}

/// Groups `at..at + len` of emitted states (zero-copy).
fn slice(e: &Emitted<Vec<ArrayRef>>, at: usize, len: usize) -> Emitted<Vec<ArrayRef>> {
    Emitted {
        keys: e.keys.iter().map(|k| k.slice(at, len)).collect(),
        aggs: e.aggs.iter().map(|s| s.iter().map(|a| a.slice(at, len)).collect()).collect(),
        rows: len,
    }
}

/// The groups at `indices` of emitted states, in that order.
fn pick(all: &Emitted<Vec<ArrayRef>>, indices: &UInt32Array) -> Result<Emitted<Vec<ArrayRef>>> {
    let t = |a: &ArrayRef| take(a.as_ref(), indices, None);
    Ok(Emitted {
        keys: all.keys.iter().map(t).collect::<std::result::Result<_, _>>()?,
        aggs: all.aggs.iter().map(|s| s.iter().map(t).collect::<std::result::Result<_, _>>()).collect::<std::result::Result<_, _>>()?,
        rows: indices.len(),
    })
}

/// Splits emitted groups ordered by their first key column (a pane or window start) into one
/// part per start, without that column (zero-copy).
pub fn split_by_start(e: &Emitted<Vec<ArrayRef>>) -> Result<Vec<(i64, Emitted<Vec<ArrayRef>>)>> {
    let Some(starts) = e.keys.first().and_then(|s| s.as_primitive_opt::<Int64Type>()) else {
        return datafusion::common::internal_err!("states without their start column");
    };
    let ranges = partition(&[Arc::clone(&e.keys[0])])?;
    Ok(ranges
        .ranges()
        .into_iter()
        .map(|r| {
            let mut part = slice(e, r.start, r.end - r.start);
            part.keys.remove(0);
            (starts.value(r.start), part)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;

    fn spec() -> AggregateSpec {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, false), Field::new("v", DataType::Int64, false)]));
        let count = AggregateExprBuilder::new(count_udaf(), vec![col("v", &schema).unwrap()]).schema(Arc::clone(&schema)).alias("n").build().unwrap();
        AggregateSpec { aggs: vec![Arc::new(count)], key_schema: Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, false)])) }
    }

    fn rows(t: &mut PaneTable, panes: &[i64], keys: &[&str]) {
        let v: ArrayRef = Arc::new(Int64Array::from(vec![1i64; panes.len()]));
        let ev = Evaluated { keys: vec![Arc::new(StringArray::from(keys.to_vec()))], args: vec![vec![v]], filters: vec![None], rows: panes.len() };
        t.update(&Int64Array::from(panes.to_vec()), &ev).unwrap();
    }

    /// (pane, key, count) of emitted final values.
    fn out(parts: &[Emitted<ArrayRef>]) -> Vec<(i64, String, i64)> {
        let mut all = Vec::new();
        for e in parts {
            let p = e.keys[0].as_primitive::<Int64Type>();
            let k = e.keys[1].as_string::<i32>();
            let n = e.aggs[0].as_primitive::<Int64Type>();
            all.extend((0..e.rows).map(|i| (p.value(i), k.value(i).to_string(), n.value(i))));
        }
        all
    }

    #[test]
    fn closed_panes_leave_in_pane_order_in_order_or_not() {
        let mut t = PaneTable::new(&spec(), 10);
        rows(&mut t, &[0, 0, 10, 10, 20], &["a", "b", "a", "a", "c"]);
        assert!(t.chunks[&0].ordered);
        let (e, panes) = t.take_final(10).unwrap();
        assert_eq!(panes, 1);
        assert_eq!(out(&e), vec![(0, "a".into(), 1), (0, "b".into(), 1)]);
        assert_eq!((t.len(), t.tables()), (2, 1));
        // a row back in pane 10 after pane 20's group, a new pane 30, one in the next chunk
        rows(&mut t, &[30, 10, 10, 650], &["a", "b", "a", "z"]);
        assert!(!t.chunks[&0].ordered);
        assert_eq!(t.tables(), 2);
        let (e, panes) = t.take_final(30).unwrap();
        assert_eq!(panes, 2);
        assert_eq!(out(&e), vec![(10, "a".into(), 3), (10, "b".into(), 1), (20, "c".into(), 1)]);
        assert!(t.chunks[&0].ordered);
        assert!(t.take_final(30).unwrap().0.is_empty());
        rows(&mut t, &[30], &["a"]);
        let (e, panes) = t.take_final(i64::MAX).unwrap();
        assert_eq!(panes, 2);
        assert_eq!(out(&e), vec![(30, "a".into(), 2), (650, "z".into(), 1)]);
        assert!(t.is_empty());
    }

    /// Random rows, in and out of pane order, over many chunks, closed at random points, the
    /// table saved and restored at times: every (pane, key) count comes out once, when its
    /// pane closes, as a plain count of the rows gives it.
    #[test]
    fn random_rows_and_closes_give_the_counts_of_the_rows() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..50 {
            let mut t = PaneTable::new(&spec(), 10);
            let mut expected: BTreeMap<(i64, String), i64> = BTreeMap::new();
            let mut got: Vec<(i64, String, i64)> = Vec::new();
            let (mut closed_before, mut front) = (i64::MIN, 0i64);
            for _ in 0..20 {
                // rows mostly ahead, some back (never into a closed pane)
                let n = 1 + next(40) as usize;
                let mut panes = Vec::new();
                let mut keys = Vec::new();
                for _ in 0..n {
                    front += next(3) as i64 * 10;
                    let back = next(4) as i64 * 10 * (round % 3);
                    let pane = (front - back).max(closed_before.max(0));
                    let key = ["a", "b", "c", "d", "e"][next(5) as usize];
                    *expected.entry((pane, key.to_string())).or_default() += 1;
                    panes.push(pane);
                    keys.push(key);
                }
                rows(&mut t, &panes, &keys);
                if next(4) == 0 {
                    let mut u = PaneTable::new(&spec(), 10);
                    for state in t.peek_state().unwrap() {
                        u.merge(&state).unwrap();
                    }
                    assert_eq!(u.len(), t.len());
                    t = u;
                }
                let end = front - next(5) as i64 * 10;
                if end > closed_before {
                    let part = out(&t.take_final(end).unwrap().0);
                    assert!(part.windows(2).all(|w| w[0].0 <= w[1].0), "in pane order");
                    assert!(part.iter().all(|r| r.0 < end && r.0 >= closed_before));
                    got.extend(part);
                    closed_before = end;
                }
            }
            got.extend(out(&t.take_final(i64::MAX).unwrap().0));
            assert!(t.is_empty());
            assert_eq!(got.len(), expected.len(), "each group once, round {round}");
            let got: BTreeMap<(i64, String), i64> = got.into_iter().map(|(p, k, n)| ((p, k), n)).collect();
            assert_eq!(got, expected, "round {round}");
        }
    }

    /// Two nullable keys whose values swap places, `(NULL, 5)` and `(5, NULL)`, hash alike
    /// (DataFusion's hashes skip nulls): such groups keep their panes and counts through closes.
    #[test]
    fn keys_whose_hashes_collide_keep_their_panes() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true), Field::new("b", DataType::Int64, true)]));
        let count = AggregateExprBuilder::new(count_udaf(), vec![col("a", &schema).unwrap()]).schema(Arc::clone(&schema)).alias("n").build().unwrap();
        let spec = AggregateSpec { aggs: vec![Arc::new(count)], key_schema: Arc::clone(&schema) };
        let mut t = PaneTable::new(&spec, 10);
        let mut expected: BTreeMap<(i64, Option<i64>, Option<i64>), i64> = BTreeMap::new();
        let mut got: Vec<(i64, Option<i64>, Option<i64>, i64)> = Vec::new();
        let collect = |parts: Vec<Emitted<ArrayRef>>, got: &mut Vec<(i64, Option<i64>, Option<i64>, i64)>| {
            for e in parts {
                let (p, a, b) = (e.keys[0].as_primitive::<Int64Type>(), e.keys[1].as_primitive::<Int64Type>(), e.keys[2].as_primitive::<Int64Type>());
                let n = e.aggs[0].as_primitive::<Int64Type>();
                let opt = |x: &Int64Array, i: usize| x.is_valid(i).then(|| x.value(i));
                got.extend((0..e.rows).map(|i| (p.value(i), opt(a, i), opt(b, i), n.value(i))));
            }
        };
        for step in 0..30i64 {
            let mut panes = Vec::new();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for j in 0..64i64 {
                let pane = (step + j % 3) * 10;
                let v = (j / 2) % 16 + step % 5;
                let (x, y) = if j % 2 == 0 { (None, Some(v)) } else { (Some(v), None) };
                panes.push(pane);
                a.push(x);
                b.push(y);
                *expected.entry((pane, x, y)).or_default() += 1;
            }
            let ev = Evaluated {
                keys: vec![Arc::new(Int64Array::from(a.clone())), Arc::new(Int64Array::from(b.clone()))],
                args: vec![vec![Arc::new(Int64Array::from(vec![Some(1i64); panes.len()])) as ArrayRef]],
                filters: vec![None],
                rows: panes.len(),
            };
            t.update(&Int64Array::from(panes), &ev).unwrap();
            collect(t.take_final(step * 10).unwrap().0, &mut got);
        }
        collect(t.take_final(i64::MAX).unwrap().0, &mut got);
        assert_eq!(got.len(), expected.len(), "each group once");
        let got: BTreeMap<(i64, Option<i64>, Option<i64>), i64> = got.into_iter().map(|(p, a, b, n)| ((p, a, b), n)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn states_taken_out_split_by_pane() {
        let mut t = PaneTable::new(&spec(), 10);
        rows(&mut t, &[20, 0, 0, 20, 700], &["x", "y", "y", "x", "x"]);
        let parts = t.take_state(700).unwrap();
        let split: Vec<(i64, usize)> = parts.iter().flat_map(|p| split_by_start(p).unwrap()).map(|(s, e)| (s, e.rows)).collect();
        assert_eq!(split, vec![(0, 1), (20, 1)]);
        assert_eq!(t.len(), 1);
    }
}
