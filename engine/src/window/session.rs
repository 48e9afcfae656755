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

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::compute::kernels::cmp::{distinct, gt_eq};
use datafusion::arrow::compute::kernels::numeric::sub_wrapping;
use datafusion::arrow::compute::{concat, filter, lexsort_to_indices, min, not, take, SortColumn};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::common::Result;

use super::aggregate_exec::Evaluated;
use super::functions::window_array;
use super::groups::{aggregate_numbered, AggregateSpec, Emitted};

/// The rows of open sessions.
pub struct SessionBuffer {
    gap: i64,
    chunks: Vec<(Int64Array, Evaluated)>,
    rows: usize,
    min_time: Option<i64>,
}

fn concat_arrays(parts: &[&ArrayRef]) -> Result<ArrayRef> {
    let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
    Ok(concat(&refs)?)
}

impl SessionBuffer {
    /// An empty buffer for sessions ending after `gap` ms of inactivity.
    pub fn new(gap: i64) -> Self {
        Self { gap, chunks: Vec::new(), rows: 0, min_time: None }
    }

    /// Rows buffered.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Memory held by the buffered arrays, in bytes.
    pub fn memory_size(&self) -> usize {
        self.chunks
            .iter()
            .map(|(t, e)| {
                t.get_array_memory_size()
                    + e.keys.iter().chain(e.args.iter().flatten()).map(|a| a.get_array_memory_size()).sum::<usize>()
            })
            .sum()
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
        self.chunks.push((times, ev));
    }

    /// Concatenates the buffered chunks into one.
    fn take_all(&mut self) -> Result<Option<(Int64Array, Evaluated)>> {
        let chunks = std::mem::take(&mut self.chunks);
        self.rows = 0;
        self.min_time = None;
        if chunks.len() <= 1 {
            return Ok(chunks.into_iter().next());
        }
        let Some((_, first_ev)) = chunks.first() else { return Ok(None) };
        let times: Vec<&dyn Array> = chunks.iter().map(|(t, _)| t as &dyn Array).collect();
        let times = concat(&times)?.as_primitive::<Int64Type>().clone();
        let keys = (0..first_ev.keys.len())
            .map(|k| concat_arrays(&chunks.iter().map(|(_, e)| &e.keys[k]).collect::<Vec<_>>()))
            .collect::<Result<Vec<_>>>()?;
        let args = (0..first_ev.args.len())
            .map(|a| {
                (0..first_ev.args[a].len())
                    .map(|i| concat_arrays(&chunks.iter().map(|(_, e)| &e.args[a][i]).collect::<Vec<_>>()))
                    .collect::<Result<Vec<_>>>()
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

    /// Emits every session that ends at or before `watermark`: the window column and the
    /// sessions' keys and aggregates.
    pub fn close(&mut self, spec: &AggregateSpec, watermark: i64) -> Result<Vec<(ArrayRef, Emitted<ArrayRef>)>> {
        let Some(min_time) = self.min_time else { return Ok(Vec::new()) };
        if min_time.saturating_add(self.gap) > watermark {
            return Ok(Vec::new());
        }
        let Some((times, ev)) = self.take_all()? else { return Ok(Vec::new()) };
        let n = times.len();
        // sort by keys, then time
        let mut sort_cols: Vec<SortColumn> = ev.keys.iter().map(|k| SortColumn { values: k.clone(), options: None }).collect();
        let times_ref: ArrayRef = std::sync::Arc::new(times);
        sort_cols.push(SortColumn { values: times_ref.clone(), options: None });
        let order = lexsort_to_indices(&sort_cols, None)?;
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
        // session bounds; which are closed
        let t = times.values();
        let mut session_of_row = vec![0usize; n];
        let mut first_rows: Vec<u32> = Vec::new();
        let mut bounds: Vec<(i64, i64)> = Vec::new();
        let mut closed_flags: Vec<bool> = Vec::new();
        let mut i = 0;
        while i < n {
            let mut j = i + 1;
            while j < n && !starts[j] {
                j += 1;
            }
            let end = t[j - 1].saturating_add(self.gap);
            let closed = end <= watermark;
            let id = closed_flags.len();
            session_of_row[i..j].iter_mut().for_each(|s| *s = id);
            first_rows.push(i as u32);
            bounds.push((t[i], end));
            closed_flags.push(closed);
            i = j;
        }
        // dense numbering of the closed sessions
        let mut dense = vec![usize::MAX; closed_flags.len()];
        let mut closed_first = Vec::new();
        let (mut w_start, mut w_end) = (Vec::new(), Vec::new());
        for (s, &closed) in closed_flags.iter().enumerate() {
            if closed {
                dense[s] = closed_first.len();
                closed_first.push(first_rows[s]);
                w_start.push(bounds[s].0);
                w_end.push(bounds[s].1);
            }
        }
        let closed_rows = BooleanArray::from(session_of_row.iter().map(|&s| closed_flags[s]).collect::<Vec<bool>>());
        let groups: Vec<usize> = session_of_row.iter().filter(|&&s| closed_flags[s]).map(|&s| dense[s]).collect();
        let mut out = Vec::new();
        let total = closed_first.len();
        if total > 0 {
            let sel = |a: &ArrayRef| filter(a.as_ref(), &closed_rows);
            let c_args = args.iter().map(|a| a.iter().map(sel).collect::<std::result::Result<Vec<_>, _>>()).collect::<std::result::Result<Vec<_>, _>>()?;
            let c_filters = filters
                .iter()
                .map(|f| f.as_ref().map(|b| filter(b, &closed_rows).map(|a| a.as_boolean().clone())).transpose())
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let aggs = aggregate_numbered(spec, &c_args, &c_filters, &groups, total)?;
            let first_idx = datafusion::arrow::array::UInt32Array::from(closed_first);
            let c_keys = keys.iter().map(|k| take(k.as_ref(), &first_idx, None)).collect::<std::result::Result<Vec<_>, _>>()?;
            out.push((window_array(w_start, w_end), Emitted { keys: c_keys, aggs, rows: total }));
        }
        // keep the rows of open sessions
        let open = not(&closed_rows)?;
        let remaining = open.true_count();
        if remaining > 0 {
            let sel = |a: &ArrayRef| filter(a.as_ref(), &open);
            let r_times = filter(&times, &open)?.as_primitive::<Int64Type>().clone();
            let r_keys = keys.iter().map(sel).collect::<std::result::Result<Vec<_>, _>>()?;
            let r_args = args.iter().map(|a| a.iter().map(sel).collect::<std::result::Result<Vec<_>, _>>()).collect::<std::result::Result<Vec<_>, _>>()?;
            let r_filters = filters
                .iter()
                .map(|f| f.as_ref().map(|b| filter(b, &open).map(|a| a.as_boolean().clone())).transpose())
                .collect::<std::result::Result<Vec<_>, _>>()?;
            self.push(r_times, Evaluated { keys: r_keys, args: r_args, filters: r_filters, rows: remaining });
        }
        Ok(out)
    }
}
