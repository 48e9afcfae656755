//! Window functions over a stream whose state is checkpointed: `LAG`, `LEAD`, `ROW_NUMBER`,
//! `RANK`, `DENSE_RANK`, `FIRST_VALUE`, `LAST_VALUE`, `NTH_VALUE`, any running aggregate (`SUM`,
//! `AVG`, `COUNT(DISTINCT x)`, …) and any aggregate over a `ROWS` frame of so many rows before
//! and after the current one,
//! on rows put in event-time order by [`crate::event_time::watermark_sort::WatermarkSortExec`].
//!
//! The common functions (`ROW_NUMBER`, ranks, `LAG`/`LEAD` without a default, running
//! `COUNT`, `SUM` and integer `MIN`/`MAX`) are computed for all keys of a batch in one pass; the
//! others are evaluated by DataFusion itself, a key at a time, over each batch of new rows. What a key
//! carries from one batch to the next is small and kept as Arrow data (see [`Carry`]), so a
//! checkpoint holds it and a restart goes on exactly where it was. A function
//! that reads later rows (`LEAD(x, n)`, a frame ending `n FOLLOWING`) holds each key's last rows
//! back until that many later rows of the key have come (or the input ends, or `state.ttl`
//! forgets the key): their values are final when written, never corrected, and the rows of
//! other keys after them wait for them, so that the output stays in event-time order.
//!
//! ```sql
//! SELECT device_id, ts, temperature,
//!        LAG(temperature, 1) OVER (PARTITION BY device_id ORDER BY ts) AS previous,
//!        LEAD(temperature, 1) OVER (PARTITION BY device_id ORDER BY ts) AS next,
//!        ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY ts) AS n,
//!        AVG(temperature) OVER (PARTITION BY device_id ORDER BY ts ROWS BETWEEN 9 PRECEDING AND 2 FOLLOWING) AS avg12
//! FROM readings
//! ```
//!
//! A running aggregate that no shift gives (`AVG(x) OVER (PARTITION BY k ORDER BY ts)`,
//! `STDDEV`, `COUNT(DISTINCT x)`, …) keeps DataFusion's accumulator per key, its state in
//! checkpoints ([`Carry::Accumulate`]).
//!
//! What is not carried — frames ending `UNBOUNDED FOLLOWING`, `RANGE`/`GROUPS` frames with a
//! bounded start or end, aggregates from the partition's start ending before or after the
//! current row or with a `FILTER`, `PERCENT_RANK`, `CUME_DIST`, `NTILE`, `IGNORE NULLS` — runs
//! on DataFusion's own operator, whose state a checkpoint cannot hold (a job under
//! `use_transactions` is refused, naming it).

pub mod exec;
pub mod sliding_rows;

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::window::{PlainAggregateWindowExpr, SlidingAggregateWindowExpr, StandardWindowExpr, WindowExpr};
use datafusion::physical_plan::windows::WindowUDFExpr;

pub use exec::StreamWindowFunctionExec;
pub use sliding_rows::{SlidingRowsExec, SlidingRowsRule};

/// How a window function's value for new rows follows from what its key carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// Evaluated over the key's first `head` rows and last `tail` rows, then the new rows, a
    /// row's value written once `ahead` later rows of its key have come: `LAG(x, tail)`,
    /// `LEAD(x, ahead)`, `FIRST_VALUE` (head 1), `NTH_VALUE(x, head)`, an aggregate over
    /// `ROWS BETWEEN tail PRECEDING AND ahead FOLLOWING`.
    Context {
        /// Rows from the key's start it needs.
        head: usize,
        /// Rows before the new ones it needs.
        tail: usize,
        /// Rows after a row it needs before that row's value is known.
        ahead: usize,
    },
    /// Evaluated over the new rows alone, then shifted by the key's state.
    Shift(Shift),
    /// A running aggregate from the key's first row to the current one that no shift gives:
    /// `AVG(x) OVER (PARTITION BY k ORDER BY ts)`, `STDDEV`, `BOOL_AND`, `COUNT(DISTINCT x)`, …
    /// Each key keeps DataFusion's accumulator, onto which its new rows are accumulated; a
    /// checkpoint holds the accumulator's state (`AVG`'s count and sum).
    Accumulate {
        /// Rows of one time share one value (`RANGE` and `GROUPS` frames, the default with an
        /// `ORDER BY`); under `ROWS` each row has its own.
        peers: bool,
    },
}

/// What shifts a value evaluated over the new rows alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shift {
    /// `ROW_NUMBER()` and `RANK()`: plus the key's rows so far (ranks of new rows never tie
    /// with older ones: rows of one time leave the watermark sort together).
    Rows,
    /// `DENSE_RANK()`: plus the key's distinct times so far.
    Times,
    /// Running `SUM`: plus the key's last sum.
    Sum,
    /// Running `COUNT`: plus the key's last count.
    Count,
    /// Running `MIN`: the smaller of it and the key's last minimum.
    Min,
    /// Running `MAX`: the larger of it and the key's last maximum.
    Max,
}

/// The most rows a function may read before or after a row and be carried: each key keeps
/// that many.
pub const MAX_ROWS: usize = 100_000;

/// A frame bound's number of rows or units (`n PRECEDING`), or `None` for `UNBOUNDED`.
fn bound_units(v: &ScalarValue) -> Result<Option<usize>, String> {
    if v.is_null() {
        return Ok(None);
    }
    match v.cast_to(&DataType::UInt64) {
        Ok(ScalarValue::UInt64(Some(n))) => usize::try_from(n).map(Some).map_err(|_| format!("a frame bound of {n} rows")),
        _ => Err(format!("a frame bound of {v} that is not a number of rows")),
    }
}

impl Carry {
    /// How `expr` is carried, or why it cannot be.
    pub fn of(expr: &Arc<dyn WindowExpr>) -> Result<Carry, String> {
        match Self::of_any(expr)? {
            Carry::Context { head, tail, ahead } if head.max(tail).max(ahead) > MAX_ROWS => {
                Err(format!("{}: reads {} rows before or after a row (at most {MAX_ROWS} are carried)", expr.name(), head.max(tail).max(ahead)))
            }
            carry => Ok(carry),
        }
    }

    /// [`Carry::of`] for any number of rows.
    fn of_any(expr: &Arc<dyn WindowExpr>) -> Result<Carry, String> {
        let frame = expr.get_window_frame();
        let name = expr.name().to_string();
        let rows = frame.units == WindowFrameUnits::Rows;
        // where the frame starts: `None` for the partition's start, else rows back (ROWS only)
        let start_back: Option<usize> = match &frame.start_bound {
            WindowFrameBound::Preceding(v) => match bound_units(v)? {
                None => None,
                Some(n) if rows => Some(n),
                Some(_) => return Err(format!("{name}: a RANGE or GROUPS frame with a bounded start")),
            },
            WindowFrameBound::CurrentRow => Some(0),
            // a ROWS frame starting after the current row (its end is after it too)
            WindowFrameBound::Following(v) if rows && bound_units(v)?.is_some() => Some(0),
            WindowFrameBound::Following(_) => return Err(format!("{name}: its frame starts after the current row")),
        };
        // where it ends, in rows back (0 for the current row, with its peers under RANGE/GROUPS)
        // or rows ahead (ROWS only)
        let (end_back, end_ahead): (usize, usize) = match &frame.end_bound {
            WindowFrameBound::CurrentRow => (0, 0),
            WindowFrameBound::Preceding(v) => match bound_units(v)? {
                Some(0) => (0, 0),
                Some(k) if rows => (k, 0),
                _ => return Err(format!("{name}: a RANGE or GROUPS frame ending before the current row")),
            },
            WindowFrameBound::Following(v) => match bound_units(v)? {
                Some(0) => (0, 0),
                Some(k) if rows => (0, k),
                Some(_) => return Err(format!("{name}: a RANGE or GROUPS frame ending after the current row")),
                None => return Err(format!("{name}: its frame ends at the partition's end (UNBOUNDED FOLLOWING)")),
            },
        };
        if expr.as_any().downcast_ref::<StandardWindowExpr>().is_some() {
            let Some(udf) = window_udf(expr) else {
                return Err(format!("{name} is not a window function it knows"));
            };
            // (neither is public: the expression's Debug text says them)
            let debug = format!("{udf:?}");
            if debug.contains("ignore_nulls: true") || name.to_ascii_uppercase().contains("IGNORE NULLS") {
                return Err(format!("{name} looks back past any number of rows (IGNORE NULLS)"));
            }
            if debug.contains("is_reversed: true") {
                return Err(format!("{name} is evaluated in reverse order"));
            }
            let literal = |i: usize| -> Option<i64> {
                let arg = udf.args().get(i)?;
                match arg.downcast_ref::<Literal>()?.value().cast_to(&DataType::Int64) {
                    Ok(ScalarValue::Int64(Some(v))) => Some(v),
                    _ => None,
                }
            };
            let function = udf.fun().name();
            return match function {
                "row_number" | "rank" => Ok(Carry::Shift(Shift::Rows)),
                "dense_rank" => Ok(Carry::Shift(Shift::Times)),
                // LAG(x, -k) is LEAD(x, k) and the other way round
                "lag" | "lead" => {
                    let k = literal(1).unwrap_or(1);
                    let back = if function == "lag" { k } else { k.checked_neg().unwrap_or(i64::MAX) };
                    let n = usize::try_from(back.unsigned_abs()).map_err(|_| format!("{name}: an offset of {back} rows"))?;
                    Ok(if back >= 0 { Carry::Context { head: 0, tail: n, ahead: 0 } } else { Carry::Context { head: 0, tail: 0, ahead: n } })
                }
                // the first rows of the key, and the rows the frame's end looks back over
                "first_value" | "nth_value" if start_back.is_none() => {
                    let n = if function == "nth_value" { literal(1).unwrap_or(1) } else { 1 };
                    match usize::try_from(n) {
                        Ok(n) if n >= 1 => Ok(Carry::Context { head: n, tail: end_back, ahead: end_ahead }),
                        _ => Err(format!("{name}: the row number must be positive")),
                    }
                }
                "first_value" | "nth_value" | "last_value" => match start_back {
                    Some(n) => Ok(Carry::Context { head: 0, tail: n.max(end_back), ahead: end_ahead }),
                    // LAST_VALUE from the partition's start: the frame's last row
                    None => Ok(Carry::Context { head: 0, tail: end_back, ahead: end_ahead }),
                },
                other => Err(format!("{name}: {other} needs the whole partition")),
            };
        }
        let Some(aggregate) = aggregate_of(expr) else { return Err(format!("{name} is not a window function it knows")) };
        let filtered = has_filter(expr);
        let running = start_back.is_none() && end_back == 0 && end_ahead == 0;
        if aggregate.is_distinct() && !running {
            return Err(format!("{name}: DISTINCT in a window aggregate over a frame that is not from the partition's start to the current row"));
        }
        match start_back {
            // a running aggregate: its last value is the key's up to its last row, so the frame
            // must end at the current row
            None if end_back > 0 => Err(format!("{name}: a frame from the partition's start ending before the current row")),
            None if end_ahead > 0 => {
                Err(format!("{name}: a frame from the partition's start ending after the current row (ROWS BETWEEN n PRECEDING AND k FOLLOWING is carried)"))
            }
            None => match aggregate.fun().name() {
                "sum" if !aggregate.is_distinct() => Ok(Carry::Shift(Shift::Sum)),
                "count" if !aggregate.is_distinct() => Ok(Carry::Shift(Shift::Count)),
                "min" => Ok(Carry::Shift(Shift::Min)),
                "max" => Ok(Carry::Shift(Shift::Max)),
                other if filtered => Err(format!("{name}: {other} with a FILTER from the partition's start")),
                _ => Ok(Carry::Accumulate { peers: !rows }),
            },
            Some(n) => Ok(Carry::Context { head: 0, tail: n.max(end_back), ahead: end_ahead }),
        }
    }
}

/// The window function of a `LAG(x)`, `ROW_NUMBER()`, … expression, if it is one.
pub(crate) fn window_udf(expr: &Arc<dyn WindowExpr>) -> Option<&WindowUDFExpr> {
    expr.as_any().downcast_ref::<StandardWindowExpr>()?.get_standard_func_expr().as_any().downcast_ref::<WindowUDFExpr>()
}

/// Whether a window aggregate has a `FILTER (WHERE …)` (not public in DataFusion: the
/// expression's Debug text says it).
pub(crate) fn has_filter(expr: &Arc<dyn WindowExpr>) -> bool {
    format!("{expr:?}").contains("filter: Some(")
}

/// The aggregate of a window aggregate expression (`AVG(x) OVER (…)`), if it is one.
pub(crate) fn aggregate_of(expr: &Arc<dyn WindowExpr>) -> Option<&AggregateFunctionExpr> {
    expr.as_any()
        .downcast_ref::<PlainAggregateWindowExpr>()
        .map(|a| a.get_aggregate_expr())
        .or_else(|| expr.as_any().downcast_ref::<SlidingAggregateWindowExpr>().map(|a| a.get_aggregate_expr()))
}

/// How every expression of an `OVER` operator is carried, or why one cannot be. They must
/// share their `PARTITION BY` (DataFusion plans one operator per partitioning).
pub fn carries(exprs: &[Arc<dyn WindowExpr>]) -> Result<Vec<Carry>, String> {
    if exprs.iter().any(|e| e.order_by().len() != 1) {
        // (rows leave the watermark sort in time order alone: a second ORDER BY column would
        // order rows of one time, which a batch of new rows does not)
        return Err("an ORDER BY of more than the event time".into());
    }
    if let Some(first) = exprs.first() {
        let same = |e: &Arc<dyn WindowExpr>| {
            e.partition_by().len() == first.partition_by().len() && e.partition_by().iter().zip(first.partition_by()).all(|(a, b)| a.eq(b))
        };
        if !exprs.iter().all(same) {
            return Err("window functions with different PARTITION BY in one operator".into());
        }
    }
    exprs.iter().map(Carry::of).collect()
}
