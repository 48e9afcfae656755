//! The open panes of `TUMBLE` and `HOP` windows emitting final results, in hash tables keyed by
//! the pane's start and the group keys.
//!
//! ```sql
//! SELECT window_start, k, COUNT(*), SUM(amount) FROM t GROUP BY TUMBLE(ts, INTERVAL '1' SECOND), k
//! -- one table of (pane start, k) groups for every second still open; a batch of rows is
//! -- interned in one pass, whatever the number of windows it spans
//! ```
//!
//! A table per pane costs a table's set-up, growth and emission per pane: with windows of a
//! few rows each (1 s windows over rows 10 ms apart) that was most of the operator's time. A
//! table here holds a *chunk* of consecutive panes — as many as hold about 16K groups, judged
//! by the chunk before, at most [`CHUNK_PANES`]: it interns a batch's rows of those panes at
//! once (its groups found by key number, [`super::pane_keys`], and DataFusion's vectorised
//! accumulators), stays small enough to be warm in cache even when every window waits for the
//! end of a bounded input, and emits the panes a watermark closes in one go. A chunk of one pane (panes of many groups) keys its table by the
//! query's keys alone, which DataFusion interns faster (one `BIGINT` key: its single-column
//! table). Rows in time order number their groups in pane
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
use super::groups::{AggregateSpec, Emitted, Groups, START_COLUMN};

/// Panes per hash table, at most.
const CHUNK_PANES: i64 = 64;

/// Groups a hash table is meant to hold: a chunk spans as many panes as hold about this many
/// groups (as many as the last chunk's panes held on average), from one to [`CHUNK_PANES`].
const CHUNK_GROUPS: usize = 1 << 14;

/// Panes of this many groups or more get a chunk each, keyed by the query's keys alone: a
/// table's set-up is small beside their groups, and one key column interns faster than two.
const ONE_PANE_GROUPS: usize = 512;

/// The groups of every open pane. See the module documentation.
pub struct PaneTable {
    /// The aggregates, keyed by the pane's start then the query's keys.
    spec: AggregateSpec,
    /// The aggregates keyed by the query's keys alone: for chunks of one pane.
    plain: AggregateSpec,
    /// The length of a pane, in milliseconds.
    pane: i64,
    /// How many panes the next chunk spans.
    chunk_panes: i64,
    /// The chunks with open panes, by the chunk's start.
    chunks: BTreeMap<i64, Chunk>,
    /// The table of the last chunk closed, empty, for the next one to start with (its hash
    /// table has grown to the size a chunk needs already).
    spare: Option<Chunk>,
}

impl PaneTable {
    /// An empty table for the aggregates and keys of `spec`, panes `pane` ms long.
    pub fn new(spec: &AggregateSpec, pane: i64) -> Self {
        let mut fields = vec![Arc::new(Field::new(START_COLUMN, DataType::Int64, false))];
        fields.extend(spec.key_schema.fields().iter().cloned());
        let plain = spec.clone();
        let spec = AggregateSpec { aggs: spec.aggs.clone(), key_schema: Arc::new(Schema::new(fields)) };
        Self { spec, plain, pane: pane.max(1), chunk_panes: 1, chunks: BTreeMap::new(), spare: None }
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

    /// The start of the chunk that holds `pane`, made when there is none: it spans
    /// `chunk_panes` panes, up to the next chunk. The chunk before it tells how many panes
    /// make a table of about [`CHUNK_GROUPS`] groups.
    fn chunk_for(&mut self, pane: i64) -> Result<i64> {
        if let Some((&start, c)) = self.chunks.range(..=pane).next_back() {
            if pane < c.end {
                return Ok(start);
            }
            let per_pane = (c.pane_of.len() / c.counts.len().max(1)).max(1);
            self.chunk_panes =
                if per_pane >= ONE_PANE_GROUPS { 1 } else { i64::try_from(CHUNK_GROUPS / per_pane).unwrap_or(CHUNK_PANES).clamp(1, CHUNK_PANES) };
        }
        let next = self.chunks.range(pane..).next().map_or(i64::MAX, |(&s, _)| s);
        let end = pane.saturating_add(self.chunk_panes.saturating_mul(self.pane)).min(next);
        let one_pane = end <= pane.saturating_add(self.pane);
        let mut chunk = match self.spare.take() {
            Some(spare) if spare.one_pane == one_pane => spare,
            _ => Chunk::new(if one_pane { &self.plain } else { &self.spec }, one_pane)?,
        };
        chunk.start = pane;
        chunk.end = end;
        self.chunks.insert(pane, chunk);
        Ok(pane)
    }

    /// Hands rows ordered by pane to their chunks, a slice per chunk: `apply(chunk, at, len)`.
    fn by_chunk(&mut self, panes: &Int64Array, mut apply: impl FnMut(&mut Chunk, &Specs, usize, usize) -> Result<()>) -> Result<()> {
        let ranges = partition(&[Arc::new(panes.clone()) as ArrayRef])?.ranges();
        let mut i = 0;
        while i < ranges.len() {
            let start = self.chunk_for(panes.value(ranges[i].start))?;
            let Some(end) = self.chunks.get(&start).map(|c| c.end) else { return datafusion::common::internal_err!("pane chunk {start} missing") };
            // the runs of panes the chunk holds
            let mut j = i + 1;
            while j < ranges.len() && panes.value(ranges[j].start) < end {
                j += 1;
            }
            let (at, len) = (ranges[i].start, ranges[j - 1].end - ranges[i].start);
            let specs = Specs { paned: &self.spec, plain: &self.plain };
            let Some(chunk) = self.chunks.get_mut(&start) else { return datafusion::common::internal_err!("pane chunk {start} missing") };
            apply(chunk, &specs, at, len)?;
            i = j;
        }
        Ok(())
    }

    /// Adds raw rows: `panes` (each row's pane start) and their evaluated keys, arguments and
    /// filters.
    pub fn update(&mut self, panes: Int64Array, ev: Evaluated) -> Result<()> {
        if panes.is_empty() {
            return Ok(());
        }
        let (panes, ev) = ev.in_pane_order(panes)?;
        self.by_chunk(&panes, |c, spec, at, len| c.update(spec, &panes.slice(at, len), &ev.slice(at, len)))
    }

    /// Adds the partial states of `pane`'s groups (a frozen `HOP` pane a late row opens again).
    pub fn merge_pane(&mut self, pane: i64, state: Emitted<Vec<ArrayRef>>) -> Result<()> {
        self.merge(&with_start(pane, state))
    }

    /// Adds partial states whose first key column is the pane (what [`PaneTable::peek_state`]
    /// gives: a checkpoint restored).
    pub fn merge(&mut self, state: &Emitted<Vec<ArrayRef>>) -> Result<()> {
        let Some(panes) = state.keys.first().and_then(|p| p.as_primitive_opt::<Int64Type>()) else {
            return datafusion::common::internal_err!("pane states without their pane column");
        };
        if panes.is_empty() {
            return Ok(());
        }
        let order = sort_to_indices(panes, None, None)?;
        let sorted = take(panes, &order, None)?.as_primitive::<Int64Type>().clone();
        let state = pick(state, &order)?;
        self.by_chunk(&sorted, |c, spec, at, len| c.merge(spec, &slice(&state, at, len)))
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
            if let Some((e, n)) = chunk.take_final(&Specs { paned: &self.spec, plain: &self.plain }, end)? {
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
            if let Some(e) = chunk.take_state(&Specs { paned: &self.spec, plain: &self.plain }, end)? {
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
        let specs = Specs { paned: &self.spec, plain: &self.plain };
        self.chunks.values_mut().map(|c| c.peek_state(&specs)).collect()
    }

    /// Drops every pane.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.spare = None;
    }
}

/// The open panes of one chunk in one hash table.
struct Chunk {
    /// The panes it holds: `start..end`.
    start: i64,
    end: i64,
    /// It spans one pane: its table is keyed by the query's keys alone, and its groups leave all
    /// at once, never the first n of them, so the table may be DataFusion's faster one for
    /// unordered input (see [`Groups::in_row_order`]).
    one_pane: bool,
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
    fn new(spec: &AggregateSpec, one_pane: bool) -> Result<Self> {
        let groups = if one_pane { Groups::new(spec)? } else { Groups::in_row_order(spec)? };
        Ok(Self { start: i64::MIN, end: i64::MAX, one_pane, groups, pane_of: Vec::new(), counts: BTreeMap::new(), ordered: true })
    }

    /// The spec of its table.
    fn spec<'a>(&self, specs: &Specs<'a>) -> &'a AggregateSpec {
        if self.one_pane {
            specs.plain
        } else {
            specs.paned
        }
    }

    /// Groups emitted from its table, with the pane as their first key column.
    fn with_pane<T>(&self, e: Emitted<T>) -> Emitted<T> {
        if self.one_pane {
            with_start(self.start, e)
        } else {
            e
        }
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

    fn update(&mut self, specs: &Specs, panes: &Int64Array, ev: &Evaluated) -> Result<()> {
        if self.one_pane {
            self.groups.update(specs.plain, &ev.keys, &ev.args, &ev.filters, ev.rows)?;
        } else {
            let mut interned = Vec::with_capacity(ev.keys.len() + 1);
            interned.push(Arc::new(panes.clone()) as ArrayRef);
            interned.extend(ev.keys.iter().cloned());
            self.groups.update(specs.paned, &interned, &ev.args, &ev.filters, ev.rows)?;
        }
        self.note_panes(panes.values());
        Ok(())
    }

    fn merge(&mut self, specs: &Specs, state: &Emitted<Vec<ArrayRef>>) -> Result<()> {
        let Some(panes) = state.keys.first().and_then(|p| p.as_primitive_opt::<Int64Type>()) else {
            return datafusion::common::internal_err!("pane states without their pane column");
        };
        let panes = panes.clone();
        if self.one_pane {
            let plain = Emitted { keys: state.keys[1..].to_vec(), aggs: state.aggs.clone(), rows: state.rows };
            self.groups.merge(specs.plain, &plain)?;
        } else {
            self.groups.merge(specs.paned, state)?;
        }
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

    fn take_final(&mut self, specs: &Specs, end: i64) -> Result<Option<(Emitted<ArrayRef>, usize)>> {
        let Some((to, panes)) = self.close(specs, end)? else { return Ok(None) };
        let spec = self.spec(specs);
        Ok(Some((
            match to {
                Taken::Emit(to) => {
                    let e = self.groups.emit_final_to(spec, to)?;
                    self.with_pane(e)
                }
                Taken::Sorted(order) => {
                    let e = self.groups.emit_final(spec)?;
                    pick_final(&self.with_pane(e), &order)?
                }
                Taken::Out(states) => {
                    let mut closed = Groups::new(spec)?;
                    closed.merge(spec, &states)?;
                    closed.emit_final(spec)?
                }
            },
            panes,
        )))
    }

    fn take_state(&mut self, specs: &Specs, end: i64) -> Result<Option<Emitted<Vec<ArrayRef>>>> {
        let Some((to, _)) = self.close(specs, end)? else { return Ok(None) };
        let spec = self.spec(specs);
        Ok(Some(match to {
            Taken::Emit(to) => {
                let e = self.groups.emit_state_to(spec, to)?;
                self.with_pane(e)
            }
            Taken::Sorted(order) => {
                let e = self.groups.emit_state(spec)?;
                pick(&self.with_pane(e), &order)?
            }
            Taken::Out(states) => states,
        }))
    }

    /// How the panes before `end` leave the table, and how many there are; the bookkeeping of
    /// panes and groups is updated.
    fn close(&mut self, specs: &Specs, end: i64) -> Result<Option<(Taken, usize)>> {
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
        // every group out, the open ones back in (a chunk of one pane never comes here: its
        // groups are in order)
        let all = self.groups.emit_state(self.spec(specs))?;
        let all = self.with_pane(all);
        let (closed, open): (Vec<u32>, Vec<u32>) = order.into_iter().partition(|&i| self.pane_of[i as usize] < end);
        self.pane_of.clear();
        self.ordered = true;
        self.counts.clear();
        self.merge(specs, &pick(&all, &UInt32Array::from(open))?)?;
        Ok(Some((Taken::Out(pick(&all, &UInt32Array::from(closed))?), panes)))
    }

    fn peek_state(&mut self, specs: &Specs) -> Result<Emitted<Vec<ArrayRef>>> {
        let state = self.groups.emit_state(self.spec(specs))?;
        let state = self.with_pane(state);
        self.pane_of.clear();
        self.counts.clear();
        self.ordered = true;
        self.merge(specs, &state)?;
        Ok(state)
    }
}

/// The specs of a [`PaneTable`]'s chunks.
struct Specs<'a> {
    /// Keyed by (pane, keys).
    paned: &'a AggregateSpec,
    /// Keyed by the keys alone (one-pane chunks).
    plain: &'a AggregateSpec,
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

/// Emitted groups with `start` (a pane's or window's) as their first key column.
fn with_start<T>(start: i64, mut e: Emitted<T>) -> Emitted<T> {
    e.keys.insert(0, Arc::new(Int64Array::from_value(start, e.rows)));
    e
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
        spec_keyed(true)
    }

    /// `COUNT(v)` keyed by a text `k`, or by nothing (`keyed` false: a table of panes alone).
    fn spec_keyed(keyed: bool) -> AggregateSpec {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, false), Field::new("v", DataType::Int64, false)]));
        let count = AggregateExprBuilder::new(count_udaf(), vec![col("v", &schema).unwrap()]).schema(Arc::clone(&schema)).alias("n").build().unwrap();
        let keys = if keyed { vec![Field::new("k", DataType::Utf8, false)] } else { Vec::new() };
        AggregateSpec { aggs: vec![Arc::new(count)], key_schema: Arc::new(Schema::new(keys)) }
    }

    fn rows(t: &mut PaneTable, panes: &[i64], keys: &[&str]) {
        let v: ArrayRef = Arc::new(Int64Array::from(vec![1i64; panes.len()]));
        let keyed = !t.plain.key_schema.fields().is_empty();
        let keys: Vec<ArrayRef> = if keyed { vec![Arc::new(StringArray::from(keys.to_vec()))] } else { Vec::new() };
        let ev = Evaluated { keys, args: vec![vec![v]], filters: vec![None], rows: panes.len() };
        t.update(Int64Array::from(panes.to_vec()), ev).unwrap();
    }

    /// (pane, key, count) of emitted final values (key "" without keys).
    fn out(parts: &[Emitted<ArrayRef>]) -> Vec<(i64, String, i64)> {
        let mut all = Vec::new();
        for e in parts {
            let p = e.keys[0].as_primitive::<Int64Type>();
            let k = e.keys.get(1).map(|k| k.as_string::<i32>());
            let n = e.aggs[0].as_primitive::<Int64Type>();
            all.extend((0..e.rows).map(|i| (p.value(i), k.map_or(String::new(), |k| k.value(i).to_string()), n.value(i))));
        }
        all
    }

    #[test]
    fn closed_panes_leave_in_pane_order_in_order_or_not() {
        let mut t = PaneTable::new(&spec(), 10);
        rows(&mut t, &[0, 0, 10, 10, 20], &["a", "b", "a", "a", "c"]);
        // the first chunk spans one pane; two groups a pane make the next span 64
        assert_eq!(t.chunks.iter().map(|(s, c)| (*s, c.end)).collect::<Vec<_>>(), vec![(0, 10), (10, 650)]);
        assert!(t.chunks[&10].ordered);
        let (e, panes) = t.take_final(10).unwrap();
        assert_eq!(panes, 1);
        assert_eq!(out(&e), vec![(0, "a".into(), 1), (0, "b".into(), 1)]);
        assert_eq!((t.len(), t.tables()), (2, 1));
        // a row back in pane 10 after pane 20's group, a new pane 30, one in the next chunk
        rows(&mut t, &[30, 10, 10, 650], &["a", "b", "a", "z"]);
        assert!(!t.chunks[&10].ordered);
        assert_eq!(t.tables(), 2);
        let (e, panes) = t.take_final(30).unwrap();
        assert_eq!(panes, 2);
        assert_eq!(out(&e), vec![(10, "a".into(), 3), (10, "b".into(), 1), (20, "c".into(), 1)]);
        assert!(t.chunks[&10].ordered);
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
        let mut next = crate::window::xorshift(0x2545_f491_4f6c_dd1du64);
        for round in 0..100 {
            // keyed, and (odd rounds) by panes alone: groups numbered without hashing
            let keyed = round % 2 == 0;
            let spec = spec_keyed(keyed);
            let mut t = PaneTable::new(&spec, 10);
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
                    let key = if keyed { ["a", "b", "c", "d", "e"][next(5) as usize] } else { "" };
                    *expected.entry((pane, key.to_string())).or_default() += 1;
                    panes.push(pane);
                    keys.push(key);
                }
                rows(&mut t, &panes, &keys);
                if next(4) == 0 {
                    let mut u = PaneTable::new(&spec, 10);
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
            t.update(Int64Array::from(panes), ev).unwrap();
            collect(t.take_final(step * 10).unwrap().0, &mut got);
        }
        collect(t.take_final(i64::MAX).unwrap().0, &mut got);
        assert_eq!(got.len(), expected.len(), "each group once");
        let got: BTreeMap<(i64, Option<i64>, Option<i64>), i64> = got.into_iter().map(|(p, a, b, n)| ((p, a, b), n)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn chunks_span_fewer_panes_when_panes_hold_more_groups() {
        let mut t = PaneTable::new(&spec(), 10);
        let many: Vec<String> = (0..4096).map(|i| format!("k{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        // 4096 groups a pane: a chunk each; 300: a chunk of 16384 groups spans 54 such panes;
        // one group a pane: 64
        rows(&mut t, &vec![0; 4096], &many);
        rows(&mut t, &vec![10; 300], &many[..300]);
        rows(&mut t, &[100, 1000], &["a", "b"]);
        assert_eq!(
            t.chunks.iter().map(|(s, c)| (*s, c.end, c.one_pane)).collect::<Vec<_>>(),
            vec![(0, 10, true), (10, 20, true), (100, 640, false), (1000, 1640, false)]
        );
        // a pane before every chunk gets one up to the first
        rows(&mut t, &[-20], &["z"]);
        assert_eq!(t.chunks[&-20].end, 0);
        assert_eq!(t.len(), 4096 + 300 + 3);
        let (parts, panes) = t.take_final(i64::MAX).unwrap();
        assert_eq!(panes, 5);
        assert_eq!(out(&parts).iter().map(|r| r.0).collect::<std::collections::BTreeSet<_>>(), [-20, 0, 10, 100, 1000].into());
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
