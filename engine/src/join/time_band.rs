//! Finds the time band of a join condition: the bounds on `right time − left time` that
//! `WITHIN INTERVAL` or an explicit `BETWEEN` puts on matching rows. The band tells the
//! interval join how long a row can still find a partner, so its state can be evicted.
//!
//! ```sql
//! ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '10' SECOND AND b.ts + INTERVAL '5' SECOND
//! -- right time − left time ∈ [−5 s, +10 s]
//! ON c.user_id = p.user_id WITHIN INTERVAL '30' MINUTES
//! -- right time − left time ∈ [−30 min, +30 min]
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinSide, Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_expr::utils::{collect_columns, split_conjunction};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::joins::utils::JoinFilter;

/// The band of a join: `right_time − left_time ∈ [lo, hi]` (milliseconds).
#[derive(Debug, Clone)]
pub struct TimeBand {
    /// The left side's event time, over the left input's columns.
    pub left_time: Arc<dyn PhysicalExpr>,
    /// The right side's event time, over the right input's columns.
    pub right_time: Arc<dyn PhysicalExpr>,
    /// Multiplier to milliseconds of an integer left time (1000 for epoch seconds).
    pub left_scale: i64,
    /// The same for the right time.
    pub right_scale: i64,
    /// Smallest `right − left`, in ms.
    pub lo: i64,
    /// Largest `right − left`, in ms.
    pub hi: i64,
    /// `Some((lo, hi))` when the band is the whole of the join's filter and decides it
    /// exactly on the sides' times in milliseconds: `lo ≤ right − left ≤ hi` (both
    /// inclusive, strict comparisons already moved by a millisecond). Both times are
    /// timestamps in milliseconds and every offset is whole milliseconds,
    /// so the probe compares the times it already has instead of evaluating the filter.
    ///
    /// ```sql
    /// ON b.auction = a.id WITHIN INTERVAL '10' SECONDS   -- exact: [-10000, 10000]
    /// ON a.k = b.k AND b.ts > a.ts AND b.ts <= a.ts + INTERVAL '5' SECOND  -- exact: [1, 5000]
    /// ON a.k = b.k AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '5' SECOND AND b.x > a.x  -- not
    /// ```
    pub exact: Option<(i64, i64)>,
}

/// True when casting a `from` value to `to` keeps every instant as it is: timestamps in the
/// same time zone, to a unit at least as fine (milliseconds to nanoseconds, not to seconds).
fn exact_timestamp_cast(from: &DataType, to: &DataType) -> bool {
    use datafusion::arrow::datatypes::TimeUnit;
    let rank = |u: &TimeUnit| match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    };
    match (from, to) {
        (DataType::Timestamp(fu, ftz), DataType::Timestamp(tu, ttz)) => ftz == ttz && rank(fu) <= rank(tu),
        _ => false,
    }
}

/// An expression's `± constant`, peeled off by [`peel`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Offset {
    /// ms for intervals, as written for numbers.
    value: i64,
    /// Some constant was an interval (or a duration).
    interval: bool,
    /// Every constant was a whole number of ms (or an integer): `value` is not rounded.
    exact: bool,
}

/// An expression without its `± constant`, and the constant, over the columns of `schema`.
/// A cast that keeps instants as they are is looked through: comparing a text column with a
/// timestamp casts both sides to nanoseconds, `CAST(w.window_end - INTERVAL '10' SECOND AS
/// Timestamp(ns))`.
fn peel(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> (Arc<dyn PhysicalExpr>, Offset) {
    if let Some(c) = expr.downcast_ref::<CastExpr>() {
        if c.expr().data_type(schema).is_ok_and(|from| exact_timestamp_cast(&from, c.cast_type())) {
            let (base, off) = peel(c.expr(), schema);
            if off.interval {
                let cast: Arc<dyn PhysicalExpr> = Arc::new(CastExpr::new(base, c.cast_type().clone(), Some(c.cast_options().clone())));
                return (cast, off);
            }
        }
    }
    if let Some(b) = expr.downcast_ref::<BinaryExpr>() {
        if matches!(b.op(), Operator::Plus | Operator::Minus) {
            if let Some(c) = constant(b.right()) {
                let (base, inner) = peel(b.left(), schema);
                let value = if *b.op() == Operator::Minus { -c.value } else { c.value };
                return (base, Offset { value: inner.value + value, interval: inner.interval || c.interval, exact: inner.exact && c.exact });
            }
        }
    }
    (Arc::clone(expr), Offset { value: 0, interval: false, exact: true })
}

/// A literal's value in ms (intervals, rounded toward zero) or as written (integers).
fn constant(expr: &Arc<dyn PhysicalExpr>) -> Option<Offset> {
    let lit = expr.downcast_ref::<Literal>()?;
    let interval = |value: i64, exact: bool| Offset { value, interval: true, exact };
    let number = |value: i64| Offset { value, interval: false, exact: true };
    Some(match lit.value() {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            interval(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000, whole_millis(v.nanoseconds))
        }
        ScalarValue::IntervalDayTime(Some(v)) => interval(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds), true),
        // (fixed intervals are added as durations: planner::fixed_intervals)
        ScalarValue::DurationSecond(Some(v)) => interval(v.checked_mul(1000)?, true),
        ScalarValue::DurationMillisecond(Some(v)) => interval(*v, true),
        ScalarValue::DurationMicrosecond(Some(v)) => interval(v / 1000, v % 1000 == 0),
        ScalarValue::DurationNanosecond(Some(v)) => interval(v / 1_000_000, whole_millis(*v)),
        ScalarValue::Int64(Some(v)) => number(*v),
        ScalarValue::Int32(Some(v)) => number(i64::from(*v)),
        ScalarValue::UInt32(Some(v)) => number(i64::from(*v)),
        ScalarValue::UInt64(Some(v)) => number(i64::try_from(*v).ok()?),
        _ => return None,
    })
}

/// True when `nanos` is a whole number of milliseconds.
fn whole_millis(nanos: i64) -> bool {
    nanos % 1_000_000 == 0
}

/// True when `expr`'s values are whole milliseconds since the epoch, and adding a whole
/// number of ms to them is exact: a timestamp in milliseconds without a time zone (or in UTC,
/// where a day is always 86 400 s), or one cast to a finer unit without moving its instants.
/// Not seconds: Arrow adds an interval of 500 ms to a timestamp in seconds by rounding the
/// result down to a whole second.
fn in_whole_millis(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> bool {
    use datafusion::arrow::datatypes::TimeUnit;
    if let Some(c) = expr.downcast_ref::<CastExpr>() {
        let from = c.expr().data_type(schema);
        return from.is_ok_and(|from| exact_timestamp_cast(&from, c.cast_type())) && in_whole_millis(c.expr(), schema);
    }
    match expr.data_type(schema) {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, tz)) => tz.as_deref().is_none_or(|z| matches!(z, "UTC" | "+00:00")),
        _ => false,
    }
}

/// The one side every column of `expr` comes from.
fn side_of(expr: &Arc<dyn PhysicalExpr>, filter: &JoinFilter) -> Option<JoinSide> {
    let mut side = None;
    for c in collect_columns(expr) {
        let s = filter.column_indices().get(c.index())?.side;
        match side {
            None => side = Some(s),
            Some(x) if x == s => {}
            Some(_) => return None,
        }
    }
    side.filter(|s| *s != JoinSide::None)
}

/// `expr` over the filter's columns, rewritten over its side's input columns.
fn to_input_columns(expr: &Arc<dyn PhysicalExpr>, filter: &JoinFilter) -> Result<Arc<dyn PhysicalExpr>> {
    Arc::clone(expr)
        .transform(|e| {
            if let Some(c) = e.downcast_ref::<Column>() {
                if let Some(ci) = filter.column_indices().get(c.index()) {
                    return Ok(Transformed::yes(Arc::new(Column::new(c.name(), ci.index)) as Arc<dyn PhysicalExpr>));
                }
            }
            Ok(Transformed::no(e))
        })
        .map(|t| t.data)
}

fn scale_of(expr: &Arc<dyn PhysicalExpr>, scales: &HashMap<String, i64>) -> i64 {
    expr.downcast_ref::<Column>().and_then(|c| scales.get(c.name())).copied().unwrap_or(1)
}

/// The band of `filter`, if its conjuncts bound the time difference from both sides.
/// `int_scales` names integer event-time columns in epoch seconds.
pub fn find_time_band(filter: &JoinFilter, int_scales: &HashMap<String, i64>) -> Result<Option<TimeBand>> {
    let mut left_time: Option<Arc<dyn PhysicalExpr>> = None;
    let mut right_time: Option<Arc<dyn PhysicalExpr>> = None;
    let (mut lo, mut hi): (Option<i64>, Option<i64>) = (None, None);
    // the band as inclusive bounds in ms, while every conjunct is a band conjunct decided
    // exactly on whole-millisecond times
    let (mut exact_lo, mut exact_hi) = (i64::MIN, i64::MAX);
    let mut exact = true;
    for conjunct in split_conjunction(filter.expression()) {
        let Some(b) = conjunct.downcast_ref::<BinaryExpr>() else {
            exact = false;
            continue;
        };
        let op = *b.op();
        if !matches!(op, Operator::Gt | Operator::GtEq | Operator::Lt | Operator::LtEq) {
            exact = false;
            continue;
        }
        let (a, a_off) = peel(b.left(), filter.schema());
        let (c, c_off) = peel(b.right(), filter.schema());
        let (ca, cc) = (a_off.value, c_off.value);
        let (Some(sa), Some(sc)) = (side_of(&a, filter), side_of(&c, filter)) else {
            exact = false;
            continue;
        };
        if sa == sc {
            exact = false;
            continue;
        }
        // offsets are whole ms of intervals (not numbers) and both times whole ms: the
        // comparison is one of ms
        let offsets_exact = [a_off, c_off].iter().all(|o| o.exact && (o.value == 0 || o.interval));
        exact &= offsets_exact && in_whole_millis(&a, filter.schema()) && in_whole_millis(&c, filter.schema());
        // write it as: right + r_off  op'  left + l_off
        let (r, r_off, l, l_off, op) = if sa == JoinSide::Right { (a, ca, c, cc, op) } else { (c, cc, a, ca, op.swap().unwrap_or(op)) };
        let same = |slot: &Option<Arc<dyn PhysicalExpr>>, e: &Arc<dyn PhysicalExpr>| slot.as_ref().is_none_or(|s| s.as_ref() == e.as_ref());
        if !same(&left_time, &l) || !same(&right_time, &r) {
            exact = false;
            continue;
        }
        // right − left  op'  l_off − r_off
        let bound = l_off - r_off;
        match op {
            Operator::Gt | Operator::GtEq => lo = Some(lo.map_or(bound, |x| x.max(bound))),
            _ => hi = Some(hi.map_or(bound, |x| x.min(bound))),
        }
        match op {
            Operator::GtEq => exact_lo = exact_lo.max(bound),
            Operator::Gt => exact_lo = exact_lo.max(bound.saturating_add(1)),
            Operator::LtEq => exact_hi = exact_hi.min(bound),
            _ => exact_hi = exact_hi.min(bound.saturating_sub(1)),
        }
        left_time = Some(l);
        right_time = Some(r);
    }
    let (Some(l), Some(r), Some(lo), Some(hi)) = (left_time, right_time, lo, hi) else { return Ok(None) };
    let left_time = to_input_columns(&l, filter)?;
    let right_time = to_input_columns(&r, filter)?;
    let left_scale = scale_of(&left_time, int_scales);
    let right_scale = scale_of(&right_time, int_scales);
    // integer offsets are in the columns' unit
    let unit = left_scale.max(right_scale);
    let exact = (exact && unit == 1).then_some((exact_lo, exact_hi));
    Ok(Some(TimeBand { left_time, right_time, left_scale, right_scale, lo: lo.saturating_mul(unit), hi: hi.saturating_mul(unit), exact }))
}

/// A band of width zero from an equi-join key on timestamps: two windowed aggregates joined on
/// their window (`p.window_start = a.window_start`) match only rows of the same instant.
///
/// ```sql
/// … ON p.id = a.seller AND p.window_start = a.window_start
/// ```
pub fn equi_time_band(
    on: &[crate::join::planner_rule::JoinOn],
    left: &datafusion::arrow::datatypes::Schema,
    right: &datafusion::arrow::datatypes::Schema,
) -> Option<TimeBand> {
    on.iter().find_map(|(l, r)| {
        let is_time = |e: &Arc<dyn PhysicalExpr>, s: &datafusion::arrow::datatypes::Schema| {
            matches!(e.data_type(s), Ok(datafusion::arrow::datatypes::DataType::Timestamp(..)))
        };
        (is_time(l, left) && is_time(r, right)).then(|| TimeBand {
            left_time: Arc::clone(l),
            right_time: Arc::clone(r),
            left_scale: 1,
            right_scale: 1,
            lo: 0,
            hi: 0,
            exact: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, TimeUnit};
    use datafusion::common::JoinSide;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::joins::utils::ColumnIndex;

    fn ten_seconds() -> Arc<dyn PhysicalExpr> {
        Arc::new(Literal::new(ScalarValue::new_interval_mdn(0, 0, 10_000_000_000)))
    }

    /// `CAST(b.t AS to) >= CAST(m.wend - INTERVAL '10' SECOND AS to) AND CAST(b.t AS to) <
    /// CAST(m.wend AS to)`, `b.t` of type `left`, `m.wend` a millisecond timestamp.
    fn band_through_casts(left: DataType, to: DataType) -> Option<(i64, i64)> {
        let schema = Arc::new(Schema::new(vec![Field::new("t", left, true), Field::new("wend", DataType::Timestamp(TimeUnit::Millisecond, None), true)]));
        let cast = |e: Arc<dyn PhysicalExpr>| -> Arc<dyn PhysicalExpr> { Arc::new(CastExpr::new(e, to.clone(), None)) };
        let t = col("t", &schema).unwrap();
        let wend = col("wend", &schema).unwrap();
        let start = Arc::new(BinaryExpr::new(Arc::clone(&wend), Operator::Minus, ten_seconds()));
        let lower = Arc::new(BinaryExpr::new(cast(Arc::clone(&t)), Operator::GtEq, cast(start)));
        let upper = Arc::new(BinaryExpr::new(cast(t), Operator::Lt, cast(wend)));
        let expression = Arc::new(BinaryExpr::new(lower, Operator::And, upper));
        let indices = vec![ColumnIndex { index: 2, side: JoinSide::Left }, ColumnIndex { index: 1, side: JoinSide::Right }];
        find_time_band(&JoinFilter::new(expression, indices, schema), &HashMap::new()).unwrap().map(|b| (b.lo, b.hi))
    }

    /// Nexmark q7 as Flink writes it, over a text `date_time`: both sides are cast to
    /// nanoseconds, and the window's end minus 10 seconds is seen through the cast.
    #[test]
    fn a_band_is_found_through_a_cast_that_keeps_instants() {
        let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
        assert_eq!(band_through_casts(DataType::Utf8, ns.clone()), Some((0, 10_000)));
        assert_eq!(band_through_casts(DataType::Timestamp(TimeUnit::Millisecond, None), ns), Some((0, 10_000)));
        // to seconds, `wend - 10 s` and `wend` would be truncated: no band is read from it
        assert_eq!(band_through_casts(DataType::Utf8, DataType::Timestamp(TimeUnit::Second, None)), None);
        // into a time zone: instants move by the zone's offset
        assert_eq!(band_through_casts(DataType::Utf8, DataType::Timestamp(TimeUnit::Nanosecond, Some("+02:00".into()))), None);
    }

    /// `u op1 t - lower AND u op2 t + upper (AND extra)` over timestamps `t` (left) and `u`
    /// (right) of the given types, the offsets as durations of `unit`: the band's exact bounds.
    fn exact_of(t: DataType, u: DataType, ops: (Operator, Operator), lower: ScalarValue, upper: ScalarValue, extra: bool) -> Option<(i64, i64)> {
        let schema = Arc::new(Schema::new(vec![Field::new("t", t, true), Field::new("u", u, true)]));
        let (tc, uc) = (col("t", &schema).unwrap(), col("u", &schema).unwrap());
        let lo = Arc::new(BinaryExpr::new(Arc::clone(&tc), Operator::Minus, Arc::new(Literal::new(lower))));
        let hi = Arc::new(BinaryExpr::new(Arc::clone(&tc), Operator::Plus, Arc::new(Literal::new(upper))));
        let mut expression: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(BinaryExpr::new(Arc::clone(&uc), ops.0, lo)),
            Operator::And,
            Arc::new(BinaryExpr::new(Arc::clone(&uc), ops.1, hi)),
        ));
        if extra {
            expression = Arc::new(BinaryExpr::new(expression, Operator::And, Arc::new(BinaryExpr::new(uc, Operator::NotEq, tc))));
        }
        let indices = vec![ColumnIndex { index: 0, side: JoinSide::Left }, ColumnIndex { index: 0, side: JoinSide::Right }];
        let band = find_time_band(&JoinFilter::new(expression, indices, schema), &HashMap::new()).unwrap().expect("a band");
        band.exact
    }

    /// The band decides the filter alone only when it is all of it, over whole-millisecond
    /// times and offsets; strict comparisons move the bounds by a millisecond.
    #[test]
    fn an_exact_band_has_inclusive_bounds_in_milliseconds() {
        let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
        let (ge, le, gt, lt) = (Operator::GtEq, Operator::LtEq, Operator::Gt, Operator::Lt);
        let d = |v: i64| ScalarValue::DurationMillisecond(Some(v));
        assert_eq!(exact_of(ms.clone(), ms.clone(), (ge, le), d(10_000), d(5_000), false), Some((-10_000, 5_000)));
        assert_eq!(exact_of(ms.clone(), ms.clone(), (gt, lt), d(10_000), d(5_000), false), Some((-9_999, 4_999)));
        // times in seconds: an offset of ms is added by rounding down to a second
        let secs = DataType::Timestamp(TimeUnit::Second, None);
        assert_eq!(exact_of(secs, ms.clone(), (ge, lt), ScalarValue::DurationSecond(Some(2)), d(0), false), None);
        let utc = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        assert_eq!(exact_of(utc.clone(), utc, (ge, le), d(1), d(1), false), Some((-1, 1)));
        // a condition beyond the band: the filter is evaluated
        assert_eq!(exact_of(ms.clone(), ms.clone(), (ge, le), d(10_000), d(5_000), true), None);
        // times finer than ms, or in a zone with days of other lengths
        let us = DataType::Timestamp(TimeUnit::Microsecond, None);
        assert_eq!(exact_of(us.clone(), us, (ge, le), d(1), d(1), false), None);
        let zoned = DataType::Timestamp(TimeUnit::Millisecond, Some("Europe/Paris".into()));
        assert_eq!(exact_of(zoned.clone(), zoned, (ge, le), d(1), d(1), false), None);
        // an offset that is not whole ms: the band (rounded) still evicts, the filter decides
        let half = ScalarValue::DurationMicrosecond(Some(1_500));
        assert_eq!(exact_of(ms.clone(), ms.clone(), (ge, le), half, d(1), false), None);
        let nanos = ScalarValue::new_interval_mdn(0, 0, 2_000_000);
        assert_eq!(exact_of(ms.clone(), ms, (ge, le), nanos, d(1), false), Some((-2, 1)));
    }
}
