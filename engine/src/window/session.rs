//! Session windows: rows of a group belong to one session while each follows the previous one
//! by less than the gap; a session ends `gap` after its last row.
//!
//! ```sql
//! SELECT window_start, window_end, user_id, COUNT(*) AS clicks
//! FROM clicks GROUP BY SESSION(ts, INTERVAL '30' SECOND), user_id
//! ```
//!
//! A session's extent depends on rows that may still arrive out of order, so the buffer keeps
//! the evaluated inputs (keys, aggregate arguments and event times — not whole rows) of open
//! sessions. When the watermark passes the earliest possible end, the buffer is sorted by key
//! and time with Arrow's kernels, cut into sessions where the key changes or the gap is
//! reached, and every session whose end is at or before the watermark is aggregated and
//! emitted; the rows of the others stay.
//!
//! With `EMIT CHANGES` the open sessions are aggregated at each flush and compared with what
//! was emitted before (in Arrow's row format): a new session is upserted; a changed one, or one
//! that a late row merged into a larger one, is first retracted (`_op = 'DELETE'`, with the
//! values it was emitted with), so a keyed sink — or a filter such as HAVING above — ends with
//! exactly the final sessions.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::kernels::cmp::{distinct, gt_eq};
use datafusion::arrow::compute::kernels::numeric::sub_wrapping;
use datafusion::arrow::compute::{concat, filter, lexsort_to_indices, min, not, take, SortColumn};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::Result;

use super::aggregate_exec::Evaluated;
use super::functions::window_array;
use super::groups::{aggregate_numbered, AggregateSpec, Emitted};
use crate::ordered_bits::{order_class, ordered_bits, signed_bits};
use crate::radix_sort::radix_order;

/// The rows of open sessions.
pub struct SessionBuffer {
    gap: i64,
    chunks: Vec<(Int64Array, Evaluated)>,
    rows: usize,
    /// Memory the chunks hold, summed as they are pushed (the state's size is read after every
    /// batch: summed over every chunk, that was 6% of Nexmark q11 from JSON Lines).
    bytes: usize,
    min_time: Option<i64>,
    /// `EMIT CHANGES`: the open sessions as last emitted.
    emitted: Option<EmittedSessions>,
    /// `EMIT CHANGES`: rows arrived since the last [`SessionBuffer::changes`].
    pushed_since_changes: bool,
}

/// The aggregate arguments and filters of the rows `mask` selects.
type AggInputs = (Vec<Vec<ArrayRef>>, Vec<Option<BooleanArray>>);

fn select_agg_inputs(ev: &Evaluated, mask: &BooleanArray) -> Result<AggInputs> {
    let sel = |a: &ArrayRef| filter(a.as_ref(), mask);
    let args = ev.args.iter().map(|a| a.iter().map(sel).collect::<std::result::Result<Vec<_>, _>>()).collect::<std::result::Result<Vec<_>, _>>()?;
    let filters = ev
        .filters
        .iter()
        .map(|f| f.as_ref().map(|b| filter(b, mask).map(|a| a.as_boolean().clone())).transpose())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((args, filters))
}

/// Per session, whether it ends at or before `watermark`; per row, whether its session does.
fn closed_by(seg: &Segmented, watermark: i64) -> (Vec<bool>, BooleanArray) {
    let sessions: Vec<bool> = seg.bounds.iter().map(|&(_, end)| end <= watermark).collect();
    let rows = BooleanArray::from(seg.session_of_row.iter().map(|&s| sessions[s]).collect::<Vec<bool>>());
    (sessions, rows)
}

fn concat_arrays(parts: &[&ArrayRef]) -> Result<ArrayRef> {
    let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
    Ok(concat(&refs)?)
}

/// The order of the rows by key, then time (Arrow's default: ascending, nulls first).
///
/// One integer key without nulls and times without nulls (Nexmark q11's `bidder`) are sorted
/// inline: packed into one number when the spans of the keys and of the times fit in 64 bits
/// together, and radix sorted ([`packed_order`]); else as (key, time, row) triples. Arrow's
/// `lexsort_to_indices` compares each pair through a dynamic comparator per column, which was
/// more than half of q11's time. Rows of equal key and time keep their order.
fn key_time_order(keys: &[ArrayRef], times: &Int64Array) -> Result<UInt32Array> {
    if let ([key], 0) = (keys, times.null_count()) {
        if key.data_type().is_integer() && key.null_count() == 0 && key.len() <= u32::MAX as usize {
            if let Some(class) = order_class(key.data_type()) {
                let key = datafusion::arrow::compute::cast(key, &class)?;
                if let Some(order) = packed_order(key.as_ref(), times) {
                    return Ok(UInt32Array::from(order));
                }
                let bits = ordered_bits(key.as_ref());
                if let Some(bits) = bits {
                    let mut rows: Vec<(u64, i64, u32)> = bits.zip(times.values().iter()).zip(0u32..).map(|((k, &t), i)| (k, t, i)).collect();
                    rows.sort_unstable();
                    return Ok(UInt32Array::from_iter_values(rows.into_iter().map(|r| r.2)));
                }
            }
        }
    }
    let mut sort_cols: Vec<SortColumn> = keys.iter().map(|k| SortColumn { values: Arc::clone(k), options: None }).collect();
    sort_cols.push(SortColumn { values: Arc::new(times.clone()), options: None });
    Ok(lexsort_to_indices(&sort_cols, None)?)
}

/// The order of the rows by `key` (of an order class, no nulls), then `times` (no nulls), with
/// each row's pair packed into one number, (key − the smallest key) above (time − the
/// earliest time), and radix sorted; None when the two spans need more than 64 bits together.
///
/// Nexmark q11 at 10M events: about 18 bits of bidders and 20 of milliseconds.
fn packed_order(key: &dyn Array, times: &Int64Array) -> Option<Vec<u32>> {
    let span = |(lo, hi): (u64, u64)| if lo > hi { 0 } else { u64::BITS - (hi - lo).leading_zeros() };
    let bounds = |(lo, hi): (u64, u64), x: u64| (lo.min(x), hi.max(x));
    let (k_lo, k_hi) = ordered_bits(key)?.fold((u64::MAX, 0), bounds);
    let (t_lo, t_hi) = times.values().iter().map(|&t| signed_bits(t)).fold((u64::MAX, 0), bounds);
    let time_width = span((t_lo, t_hi));
    if span((k_lo, k_hi)) + time_width > u64::BITS {
        return None;
    }
    // (a shift of 64 only where every key is the smallest)
    let packed = ordered_bits(key)?.zip(times.values()).map(|(k, &t)| (k - k_lo).checked_shl(time_width).unwrap_or(0) | (signed_bits(t) - t_lo)).collect();
    radix_order(packed)
}

impl SessionBuffer {
    /// An empty buffer for sessions ending after `gap` ms of inactivity.
    pub fn new(gap: i64) -> Self {
        Self { gap, chunks: Vec::new(), rows: 0, bytes: 0, min_time: None, emitted: None, pushed_since_changes: false }
    }

    /// Rows buffered.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Memory held by the buffered arrays, in bytes.
    pub fn memory_size(&self) -> usize {
        self.bytes
    }

    /// Buffers rows with their event times.
    pub fn push(&mut self, times: Int64Array, ev: Evaluated) {
        if ev.rows == 0 {
            return;
        }
        if let Some(m) = min(&times) {
            self.min_time = Some(self.min_time.map_or(m, |x| x.min(m)));
        }
        self.rows += ev.rows;
        // text as views is kept with its own bytes only: views into a whole decoded page (a
        // Parquet source's), or into the buffers of every chunk a flush concatenated and
        // kept part of, would hold them all, and each checkpoint would write them all
        let own = crate::memory::own_bytes;
        let ev =
            Evaluated { keys: ev.keys.into_iter().map(own).collect(), args: ev.args.into_iter().map(|a| a.into_iter().map(own).collect()).collect(), ..ev };
        self.bytes += times.get_array_memory_size() + ev.keys.iter().chain(ev.args.iter().flatten()).map(|a| a.get_array_memory_size()).sum::<usize>();
        self.chunks.push((times, ev));
        self.pushed_since_changes = true;
    }

    /// The buffered rows, concatenated, leaving the buffer as it is (for a checkpoint).
    pub fn snapshot_rows(&self) -> Result<Option<(Int64Array, Evaluated)>> {
        let Some((_, first)) = self.chunks.first() else { return Ok(None) };
        let cat = |f: &dyn Fn(&(Int64Array, Evaluated)) -> ArrayRef| -> Result<ArrayRef> {
            let parts: Vec<ArrayRef> = self.chunks.iter().map(f).collect();
            // (views of many chunks: one buffer of the text they show, not every chunk's)
            concat_arrays(&parts.iter().collect::<Vec<_>>()).map(crate::memory::own_bytes)
        };
        let times = cat(&|c| Arc::new(c.0.clone()) as ArrayRef)?.as_primitive::<Int64Type>().clone();
        let keys = (0..first.keys.len()).map(|k| cat(&|c| Arc::clone(&c.1.keys[k]))).collect::<Result<Vec<_>>>()?;
        let args = (0..first.args.len())
            .map(|a| (0..first.args[a].len()).map(|j| cat(&|c| Arc::clone(&c.1.args[a][j]))).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let filters = (0..first.filters.len())
            .map(|f| match &first.filters[f] {
                None => Ok(None),
                Some(_) => {
                    let parts: Vec<ArrayRef> = self
                        .chunks
                        .iter()
                        .map(|c| {
                            c.1.filters[f].clone().map_or_else(|| Arc::new(BooleanArray::from(vec![true; c.1.rows])) as ArrayRef, |b| Arc::new(b) as ArrayRef)
                        })
                        .collect();
                    Ok(Some(concat_arrays(&parts.iter().collect::<Vec<_>>())?.as_boolean().clone()))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = times.len();
        Ok(Some((times, Evaluated { keys, args, filters, rows })))
    }

    /// The sessions last emitted (`EMIT CHANGES`): keys, window, aggregates.
    pub fn snapshot_emitted(&self) -> Option<(Vec<ArrayRef>, ArrayRef, Vec<ArrayRef>)> {
        self.emitted.as_ref().map(|e| (e.keys.clone(), Arc::clone(&e.window), e.aggs.clone()))
    }

    /// Restores a buffer from [`SessionBuffer::snapshot_rows`] and
    /// [`SessionBuffer::snapshot_emitted`].
    pub fn restore(&mut self, rows: Option<(Int64Array, Evaluated)>, emitted: Option<(Vec<ArrayRef>, ArrayRef, Vec<ArrayRef>)>) -> Result<()> {
        if let Some((times, ev)) = rows {
            self.push(times, ev);
        }
        if let Some((keys, window, aggs)) = emitted {
            self.emitted = Some(EmittedSessions::new(keys, window, aggs)?);
        }
        self.pushed_since_changes = true;
        Ok(())
    }

    /// Concatenates the buffered chunks into one.
    fn take_all(&mut self) -> Result<Option<(Int64Array, Evaluated)>> {
        let chunks = std::mem::take(&mut self.chunks);
        self.rows = 0;
        self.bytes = 0;
        self.min_time = None;
        if chunks.len() <= 1 {
            return Ok(chunks.into_iter().next());
        }
        let Some((_, first_ev)) = chunks.first() else { return Ok(None) };
        let times: Vec<&dyn Array> = chunks.iter().map(|(t, _)| t as &dyn Array).collect();
        let times = concat(&times)?.as_primitive::<Int64Type>().clone();
        let keys = (0..first_ev.keys.len()).map(|k| concat_arrays(&chunks.iter().map(|(_, e)| &e.keys[k]).collect::<Vec<_>>())).collect::<Result<Vec<_>>>()?;
        let args = (0..first_ev.args.len())
            .map(|a| {
                (0..first_ev.args[a].len()).map(|i| concat_arrays(&chunks.iter().map(|(_, e)| &e.args[a][i]).collect::<Vec<_>>())).collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let filters = (0..first_ev.filters.len())
            .map(|f| {
                if first_ev.filters[f].is_none() {
                    return Ok(None);
                }
                let parts: Vec<&dyn Array> = chunks.iter().filter_map(|(_, e)| e.filters[f].as_ref().map(|b| b as &dyn Array)).collect();
                Ok(Some(concat(&parts)?.as_boolean().clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = times.len();
        Ok(Some((times, Evaluated { keys, args, filters, rows })))
    }

    /// Sorts the buffered rows by key and time and cuts them into sessions.
    fn segment(&mut self) -> Result<Option<Segmented>> {
        let Some((times, ev)) = self.take_all()? else { return Ok(None) };
        let n = times.len();
        // sort by keys, then time
        let order = key_time_order(&ev.keys, &times)?;
        let times_ref: ArrayRef = std::sync::Arc::new(times);
        let pick = |a: &ArrayRef| take(a.as_ref(), &order, None);
        let times = pick(&times_ref)?.as_primitive::<Int64Type>().clone();
        let keys = ev.keys.iter().map(pick).collect::<std::result::Result<Vec<_>, _>>()?;
        let args = ev.args.iter().map(|a| a.iter().map(pick).collect::<std::result::Result<Vec<_>, _>>()).collect::<std::result::Result<Vec<_>, _>>()?;
        let filters = ev
            .filters
            .iter()
            .map(|f| f.as_ref().map(|b| take(b, &order, None).map(|a| a.as_boolean().clone())).transpose())
            .collect::<std::result::Result<Vec<_>, _>>()?;

        // a new session starts where the key changes or the gap is reached
        let mut starts = vec![true; n];
        if n > 1 {
            let later = times.slice(1, n - 1);
            let earlier = times.slice(0, n - 1);
            let gap_break = gt_eq(&sub_wrapping(&later, &earlier)?, &Int64Array::new_scalar(self.gap))?;
            let mut breaks = gap_break;
            for k in &keys {
                let changed = distinct(&k.slice(1, n - 1), &k.slice(0, n - 1))?;
                breaks = datafusion::arrow::compute::or(&breaks, &changed)?;
            }
            for (i, b) in breaks.iter().enumerate() {
                starts[i + 1] = b.unwrap_or(true);
            }
        }
        let t = times.values();
        let mut session_of_row = vec![0usize; n];
        let mut first_rows: Vec<u32> = Vec::new();
        let mut bounds: Vec<(i64, i64)> = Vec::new();
        let mut i = 0;
        while i < n {
            let mut j = i + 1;
            while j < n && !starts[j] {
                j += 1;
            }
            let id = bounds.len();
            session_of_row[i..j].iter_mut().for_each(|s| *s = id);
            first_rows.push(i as u32);
            bounds.push((t[i], t[j - 1].saturating_add(self.gap)));
            i = j;
        }
        Ok(Some(Segmented { times, ev: Evaluated { keys, args, filters, rows: n }, session_of_row, first_rows, bounds }))
    }

    /// Keeps the rows of `seg` whose session is open (`closed[s]` false).
    fn keep_open(&mut self, seg: Segmented, closed_rows: &BooleanArray) -> Result<()> {
        let open = not(closed_rows)?;
        let remaining = open.true_count();
        if remaining == 0 {
            return Ok(());
        }
        let r_times = filter(&seg.times, &open)?.as_primitive::<Int64Type>().clone();
        let r_keys = seg.ev.keys.iter().map(|k| filter(k.as_ref(), &open)).collect::<std::result::Result<Vec<_>, _>>()?;
        let (r_args, r_filters) = select_agg_inputs(&seg.ev, &open)?;
        self.push(r_times, Evaluated { keys: r_keys, args: r_args, filters: r_filters, rows: remaining });
        Ok(())
    }

    /// Emits every session that ends at or before `watermark`: the window column and the
    /// sessions' keys and aggregates.
    pub fn close(&mut self, spec: &AggregateSpec, watermark: i64) -> Result<Vec<(ArrayRef, Emitted<ArrayRef>)>> {
        let Some(min_time) = self.min_time else { return Ok(Vec::new()) };
        if min_time.saturating_add(self.gap) > watermark {
            return Ok(Vec::new());
        }
        let Some(seg) = self.segment()? else { return Ok(Vec::new()) };
        let (closed_flags, closed_rows) = closed_by(&seg, watermark);
        // dense numbering of the closed sessions
        let mut dense = vec![usize::MAX; closed_flags.len()];
        let mut closed_first = Vec::new();
        let (mut w_start, mut w_end) = (Vec::new(), Vec::new());
        for (s, &closed) in closed_flags.iter().enumerate() {
            if closed {
                dense[s] = closed_first.len();
                closed_first.push(seg.first_rows[s]);
                w_start.push(seg.bounds[s].0);
                w_end.push(seg.bounds[s].1);
            }
        }
        let groups: Vec<usize> = seg.session_of_row.iter().filter(|&&s| closed_flags[s]).map(|&s| dense[s]).collect();
        let mut out = Vec::new();
        let total = closed_first.len();
        if total > 0 {
            let (c_args, c_filters) = select_agg_inputs(&seg.ev, &closed_rows)?;
            let aggs = aggregate_numbered(spec, &c_args, &c_filters, &groups, total)?;
            let first_idx = UInt32Array::from(closed_first);
            let c_keys = seg.ev.keys.iter().map(|k| take(k.as_ref(), &first_idx, None)).collect::<std::result::Result<Vec<_>, _>>()?;
            out.push((window_array(w_start, w_end), Emitted { keys: c_keys, aggs, rows: total }));
        }
        self.keep_open(seg, &closed_rows)?;
        Ok(out)
    }

    /// `EMIT CHANGES`: the sessions that changed since the last call. Returns the sessions
    /// emitted before that no longer hold (merged into a larger one, or changed: to retract,
    /// with the values they were emitted with), then every new or changed session (to upsert), and the
    /// number of sessions the watermark closed. Sessions ending at or before `watermark` close:
    /// their rows and their record go.
    pub fn changes(&mut self, spec: &AggregateSpec, watermark: i64) -> Result<SessionChanges> {
        // nothing new and nothing to close: nothing can have changed (an idle stream's ticks)
        let can_close = self.min_time.is_some_and(|m| m.saturating_add(self.gap) <= watermark);
        if !self.pushed_since_changes && !can_close {
            return Ok(SessionChanges::default());
        }
        let Some(seg) = self.segment()? else { return Ok(SessionChanges::default()) };
        let total = seg.bounds.len();
        let aggs = aggregate_numbered(spec, &seg.ev.args, &seg.ev.filters, &seg.session_of_row, total)?;
        let first_idx = UInt32Array::from(seg.first_rows.clone());
        let keys = seg.ev.keys.iter().map(|k| take(k.as_ref(), &first_idx, None)).collect::<std::result::Result<Vec<_>, _>>()?;
        let starts: Vec<i64> = seg.bounds.iter().map(|b| b.0).collect();
        let ends: Vec<i64> = seg.bounds.iter().map(|b| b.1).collect();
        let now = EmittedSessions::new(keys, window_array(starts, ends), aggs)?;
        let prev = self.emitted.take();
        let prev_rows: HashSet<&[u8]> = prev.as_ref().map(|p| p.rows.iter().map(|r| r.as_ref()).collect()).unwrap_or_default();
        let now_rows: HashSet<&[u8]> = now.rows.iter().map(|r| r.as_ref()).collect();
        let upserts: Vec<u32> = (0..total as u32).filter(|&i| !prev_rows.contains(now.rows[i as usize].as_ref())).collect();
        // a session merged away, or changed: its old row goes (a filter above sees the old
        // values, so what it let through is withdrawn)
        let retracted = match &prev {
            Some(p) => {
                let gone: Vec<u32> = (0..p.rows.len() as u32).filter(|&i| !now_rows.contains(p.rows[i as usize].as_ref())).collect();
                p.take(&gone)?
            }
            None => None,
        };
        let upserted = now.take(&upserts)?;
        let (closed_flags, closed_rows) = closed_by(&seg, watermark);
        let closed = closed_flags.iter().filter(|&&c| c).count();
        let still_open: Vec<u32> = (0..total as u32).filter(|&i| !closed_flags[i as usize]).collect();
        drop((prev_rows, now_rows));
        self.emitted = if still_open.len() == total { Some(now) } else { now.keep(&still_open)? };
        self.keep_open(seg, &closed_rows)?;
        self.pushed_since_changes = false;
        Ok(SessionChanges { retracted, upserted, closed })
    }

    /// Memory held by the record of emitted sessions (`EMIT CHANGES`), in bytes.
    pub fn emitted_memory_size(&self) -> usize {
        self.emitted.as_ref().map_or(0, EmittedSessions::memory_size)
    }
}

/// The buffer sorted and cut into sessions.
struct Segmented {
    times: Int64Array,
    ev: Evaluated,
    session_of_row: Vec<usize>,
    first_rows: Vec<u32>,
    bounds: Vec<(i64, i64)>,
}

/// What [`SessionBuffer::changes`] found: each part the window column and the sessions.
#[derive(Default)]
pub struct SessionChanges {
    /// Sessions emitted before that were merged away or changed, with the values they were emitted with.
    pub retracted: Option<(ArrayRef, Emitted<ArrayRef>)>,
    /// New or changed sessions, current values.
    pub upserted: Option<(ArrayRef, Emitted<ArrayRef>)>,
    /// Sessions the watermark closed.
    pub closed: usize,
}

/// Sessions as last emitted (`EMIT CHANGES`), with each one's whole row (keys, bounds and
/// aggregates) in Arrow's row format, to find what changed.
struct EmittedSessions {
    keys: Vec<ArrayRef>,
    window: ArrayRef,
    aggs: Vec<ArrayRef>,
    rows: Vec<Box<[u8]>>,
}

fn encode_rows(columns: &[ArrayRef]) -> Result<Vec<Box<[u8]>>> {
    let fields = columns.iter().map(|c| SortField::new(c.data_type().clone())).collect();
    let converter = RowConverter::new(fields)?;
    let rows = converter.convert_columns(columns)?;
    Ok(rows.iter().map(|r| r.as_ref().into()).collect())
}

impl EmittedSessions {
    fn new(keys: Vec<ArrayRef>, window: ArrayRef, aggs: Vec<ArrayRef>) -> Result<Self> {
        let columns: Vec<ArrayRef> = keys.iter().cloned().chain(std::iter::once(Arc::clone(&window))).chain(aggs.iter().cloned()).collect();
        let rows = encode_rows(&columns)?;
        Ok(Self { keys, window, aggs, rows })
    }

    /// The sessions at `idx`, as output parts; None when `idx` is empty.
    fn take(&self, idx: &[u32]) -> Result<Option<(ArrayRef, Emitted<ArrayRef>)>> {
        if idx.is_empty() {
            return Ok(None);
        }
        let idx = UInt32Array::from(idx.to_vec());
        let pick = |a: &ArrayRef| take(a.as_ref(), &idx, None);
        let keys = self.keys.iter().map(pick).collect::<std::result::Result<Vec<_>, _>>()?;
        let aggs = self.aggs.iter().map(pick).collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Some((pick(&self.window)?, Emitted { keys, aggs, rows: idx.len() })))
    }

    /// Only the sessions at `idx`; None when none.
    fn keep(self, idx: &[u32]) -> Result<Option<Self>> {
        let Some((window, e)) = self.take(idx)? else { return Ok(None) };
        let rows = idx.iter().map(|&i| self.rows[i as usize].clone()).collect();
        Ok(Some(Self { keys: e.keys, window, aggs: e.aggs, rows }))
    }

    fn memory_size(&self) -> usize {
        self.keys.iter().chain(&self.aggs).chain(std::iter::once(&self.window)).map(|a| a.get_array_memory_size()).sum::<usize>()
            + self.rows.iter().map(|r| r.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray, UInt64Array};

    /// The rows' (key, time) in `order`.
    fn sorted(key: &ArrayRef, times: &Int64Array, order: &UInt32Array) -> Vec<(Option<String>, Option<i64>)> {
        let key = datafusion::arrow::compute::cast(key, &datafusion::arrow::datatypes::DataType::Utf8).unwrap();
        let key = key.as_string::<i32>();
        order
            .values()
            .iter()
            .map(|&i| (key.is_valid(i as usize).then(|| key.value(i as usize).to_string()), times.is_valid(i as usize).then(|| times.value(i as usize))))
            .collect()
    }

    /// One integer key and times sort to the rows a stable sort by (key, time) gives, row for
    /// row (equal pairs in their order): packed and radix sorted where the spans fit in 64
    /// bits, as triples where they do not, with negative keys and times, one key, one time.
    #[test]
    fn one_integer_key_sorts_as_a_stable_sort_by_key_and_time() {
        let mut next = crate::window::xorshift(0x9E37_79B9_7F4A_7C15u64);
        // (rows, keys span, times span, packed into 64 bits)
        for (n, k_span, t_span, packed) in
            [(5000usize, 1000u64, 50u64, true), (3000, 1, 1_000_000, true), (3000, 40, 1, true), (2000, 1 << 40, 1 << 30, false), (200, 30, 30, true)]
        {
            let keys: Vec<i64> = (0..n).map(|_| next(k_span) as i64 - (k_span / 2) as i64).collect();
            let times: Vec<i64> = (0..n).map(|_| next(t_span) as i64 - 1_000).collect();
            let mut want: Vec<u32> = (0..n as u32).collect();
            want.sort_by_key(|&i| (keys[i as usize], times[i as usize]));
            let (key, t): (ArrayRef, Int64Array) = (Arc::new(Int64Array::from(keys)), Int64Array::from(times));
            assert_eq!(packed_order(key.as_ref(), &t).is_some(), packed, "{n} rows");
            assert_eq!(key_time_order(&[key], &t).unwrap().values().to_vec(), want, "{n} rows, keys over {k_span}, times over {t_span}");
        }
    }

    /// The inline sort of one integer key orders rows as Arrow's lexicographic sort does, for
    /// every integer type and the extremes of each; keys of other types, several keys and nulls
    /// go through Arrow's sort; equal rows keep their order.
    #[test]
    fn rows_sorted_by_key_and_time_as_arrow_sorts_them() {
        let n = 5000usize;
        let mut next = crate::window::xorshift(0x9E37_79B9_7F4A_7C15u64);
        let raw: Vec<u64> = (0..n).map(|_| next(u64::MAX)).collect();
        let times = Int64Array::from_iter_values((0..n).map(|_| next(50) as i64 - 25));
        let extremes = |i: usize, v: i64| match i % 97 {
            0 => i64::MIN,
            1 => i64::MAX,
            _ => v,
        };
        let keys: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(raw.iter().enumerate().map(|(i, &r)| extremes(i, (r % 40) as i64 - 20)))),
            Arc::new(Int32Array::from_iter_values(raw.iter().enumerate().map(|(i, &r)| if i % 89 == 0 { i32::MIN } else { (r % 40) as i32 - 20 }))),
            Arc::new(UInt64Array::from_iter_values(raw.iter().enumerate().map(|(i, &r)| if i % 89 == 0 { u64::MAX } else { r % 40 }))),
            Arc::new(StringArray::from_iter_values(raw.iter().map(|&r| format!("k{}", r % 40)))),
            Arc::new(Int64Array::from_iter(raw.iter().map(|&r| (r % 7 != 0).then_some((r % 40) as i64)))),
        ];
        for key in &keys {
            let order = key_time_order(std::slice::from_ref(key), &times).unwrap();
            let arrow = lexsort_to_indices(
                &[SortColumn { values: Arc::clone(key), options: None }, SortColumn { values: Arc::new(times.clone()), options: None }],
                None,
            )
            .unwrap();
            assert_eq!(sorted(key, &times, &order), sorted(key, &times, &arrow), "{}", key.data_type());
            let mut seen = order.values().to_vec();
            seen.sort_unstable();
            assert_eq!(seen, (0..n as u32).collect::<Vec<_>>(), "every row once");
        }
        // equal (key, time): in their order
        let key: ArrayRef = Arc::new(Int64Array::from(vec![3, 1, 3, 1, 3]));
        let same = Int64Array::from(vec![7, 7, 7, 7, 7]);
        assert_eq!(key_time_order(&[key], &same).unwrap().values().to_vec(), vec![1, 3, 0, 2, 4]);
        // two keys, and times with a null: Arrow's sort
        let (a, b): (ArrayRef, ArrayRef) = (Arc::new(Int64Array::from(vec![2, 1, 2, 1])), Arc::new(Int64Array::from(vec![1, 2, 0, 2])));
        let t = Int64Array::from(vec![Some(5), Some(4), None, Some(3)]);
        assert_eq!(key_time_order(&[Arc::clone(&a), b], &t).unwrap().values().to_vec(), vec![3, 1, 2, 0]);
        assert_eq!(key_time_order(&[a], &t).unwrap().values().to_vec(), vec![3, 1, 2, 0]);
    }
}
