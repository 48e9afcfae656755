//! A timestamp plus or minus an interval of fixed length is added as a duration. An interval
//! without months (and without days, on a timestamp with a time zone, where a day may be 23 or
//! 25 hours) is a fixed number of nanoseconds; Arrow adds a duration of the timestamp's own unit
//! with one integer addition per row, where an interval goes through the calendar (chrono) for
//! every row. Time bands of joins, window bounds and filters on event time are written this way
//! (an interval join of the Nexmark bids with their auctions spent half its time there).
//!
//! ```sql
//! SELECT b.auction, a.seller FROM bid b JOIN auction a ON b.auction = a.id
//!   AND b.date_time BETWEEN a.date_time - INTERVAL '10' SECOND AND a.date_time + INTERVAL '10' SECOND
//! -- a.date_time - 10000 ms (a duration), not a.date_time - INTERVAL '0 days 10 secs'
//! ```
//!
//! `INTERVAL '1' MONTH`, and days on a timestamp with a zone, stay intervals, as does an amount
//! the timestamp's unit cannot hold exactly (half a second on a timestamp in seconds).

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The rule: `ts ± INTERVAL '…'` of a fixed length becomes `ts ± duration`, in every
/// expression of the plan.
#[derive(Debug, Default)]
pub struct FixedIntervals;

impl OptimizerRule for FixedIntervals {
    fn name(&self) -> &str {
        "fixed_intervals"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let schema = merge_schema(&plan.inputs());
        rewrite_expressions(plan, |e| as_duration(e, &schema))
    }
}

/// `plan` with `f` applied, bottom up, to every expression of its own (not its inputs'), each
/// keeping its output name. A scan is left as it is: its filters name the table's columns,
/// not an input's.
pub fn rewrite_expressions(plan: LogicalPlan, mut f: impl FnMut(Expr) -> Result<Transformed<Expr>>) -> Result<Transformed<LogicalPlan>> {
    if matches!(plan, LogicalPlan::TableScan(_)) {
        return Ok(Transformed::no(plan));
    }
    let names = NamePreserver::new(&plan);
    plan.map_expressions(|expr| {
        let name = names.save(&expr);
        expr.transform_up(&mut f).map(|t| t.update_data(|e| name.restore(e)))
    })
}

/// `e` with its interval as a duration, when `e` is `timestamp ± fixed interval`.
fn as_duration(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else { return Ok(Transformed::no(e)) };
    let (time, interval, interval_first) = match (left.as_ref(), right.as_ref()) {
        (_, Expr::Literal(v, _)) if matches!(op, Operator::Plus | Operator::Minus) => (left, v, false),
        (Expr::Literal(v, _), _) if *op == Operator::Plus => (right, v, true),
        _ => return Ok(Transformed::no(e)),
    };
    let Ok(DataType::Timestamp(unit, zone)) = time.get_type(schema) else { return Ok(Transformed::no(e)) };
    let Some(duration) = fixed_length(interval, unit, zone.is_some()) else { return Ok(Transformed::no(e)) };
    let duration = Box::new(Expr::Literal(duration, None));
    let (left, right) = if interval_first { (duration, time.clone()) } else { (time.clone(), duration) };
    Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr { left, op: *op, right })))
}

/// `interval` as a duration of `unit`, if it is a fixed length of time that `unit` holds
/// exactly (days count as 24 hours only on a timestamp without a zone).
fn fixed_length(interval: &ScalarValue, unit: TimeUnit, zoned: bool) -> Option<ScalarValue> {
    const DAY_NS: i128 = 86_400_000_000_000;
    let nanos: i128 = match interval {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 && (v.days == 0 || !zoned) => i128::from(v.days) * DAY_NS + i128::from(v.nanoseconds),
        ScalarValue::IntervalDayTime(Some(v)) if v.days == 0 || !zoned => i128::from(v.days) * DAY_NS + i128::from(v.milliseconds) * 1_000_000,
        _ => return None,
    };
    let per: i128 = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    if nanos % per != 0 {
        return None;
    }
    let n = i64::try_from(nanos / per).ok()?;
    Some(match unit {
        TimeUnit::Second => ScalarValue::DurationSecond(Some(n)),
        TimeUnit::Millisecond => ScalarValue::DurationMillisecond(Some(n)),
        TimeUnit::Microsecond => ScalarValue::DurationMicrosecond(Some(n)),
        TimeUnit::Nanosecond => ScalarValue::DurationNanosecond(Some(n)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{IntervalDayTime, IntervalMonthDayNano};

    #[test]
    fn fixed_lengths_become_durations_of_the_timestamps_unit() {
        let ten_s = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 0, 10_000_000_000)));
        assert_eq!(fixed_length(&ten_s, TimeUnit::Millisecond, false), Some(ScalarValue::DurationMillisecond(Some(10_000))));
        assert_eq!(fixed_length(&ten_s, TimeUnit::Second, true), Some(ScalarValue::DurationSecond(Some(10))));
        let day = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 1, 0)));
        assert_eq!(fixed_length(&day, TimeUnit::Microsecond, false), Some(ScalarValue::DurationMicrosecond(Some(86_400_000_000))));
        // a day in a zone may be 23 or 25 hours; a month is no fixed length
        assert_eq!(fixed_length(&day, TimeUnit::Microsecond, true), None);
        let month = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(1, 0, 0)));
        assert_eq!(fixed_length(&month, TimeUnit::Nanosecond, false), None);
        // half a second is not a whole number of seconds
        let half = ScalarValue::IntervalDayTime(Some(IntervalDayTime::new(0, 500)));
        assert_eq!(fixed_length(&half, TimeUnit::Second, false), None);
        assert_eq!(fixed_length(&half, TimeUnit::Millisecond, false), Some(ScalarValue::DurationMillisecond(Some(500))));
        assert_eq!(fixed_length(&ScalarValue::IntervalMonthDayNano(None), TimeUnit::Millisecond, false), None);
    }
}
