//! Text cast to a timestamp is read by the connectors' reader of ISO-8601 times where it can
//! be: `CAST(text AS TIMESTAMP)`, written or put in by type coercion (`DATE_FORMAT(date_time,
//! …)`, `HOUR(date_time)` of a JSON field inferred as text), becomes
//! `cast_text_to_timestamp(text)`, which gives the cast's values and its errors.
//!
//! ```sql
//! SELECT DATE_FORMAT(date_time, 'yyyy-MM-dd') AS dt, DATE_FORMAT(date_time, 'HH:mm') AS hm FROM bid
//! -- date_format(CAST(date_time AS Timestamp(ns)), …) twice, the cast shared by DataFusion's
//! -- common subexpressions, becomes date_format(cast_text_to_timestamp(date_time), …)
//! ```
//!
//! Arrow's cast reads each string with its general parser and chrono's calendar: 14% of
//! Nexmark q15's CPU over JSON Lines, whose `date_time` is text. The common shape
//! `YYYY-MM-DD[T| ]HH:MM:SS[.f][Z]` is read directly (`IsoTimes`: the date, hour and minute
//! once while the next string starts with the same ones); a column with any other shape (an
//! offset, a date alone) goes through arrow's cast whole, as the cast would, so the values,
//! and the error for text the cast cannot read, are the cast's. The rewrite is of the plan,
//! not inside each function that takes a time, so that a cast DataFusion shares between two
//! expressions stays shared. `TRY_CAST` and casts to a timestamp with a zone or another unit
//! are left to arrow.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit, TimestampNanosecondType};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{exec_err, DFSchema, Result, ScalarValue};
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use ferris_connectors::format::iso_time::read_text_column;

use super::fixed_intervals::rewrite_expressions;

/// The rule: `CAST(text AS TIMESTAMP)` (nanoseconds, no zone) becomes
/// `cast_text_to_timestamp(text)` in every expression of the plan.
#[derive(Debug, Default)]
pub struct TextCasts;

impl OptimizerRule for TextCasts {
    fn name(&self) -> &str {
        "text_casts"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let schema = merge_schema(&plan.inputs());
        rewrite_expressions(plan, |e| read_directly(e, &schema))
    }
}

/// `e` as a call of [`CastTextToTimestamp`], when it casts text to a timestamp in nanoseconds
/// without a zone.
fn read_directly(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::Cast(Cast { expr, field }) = &e else { return Ok(Transformed::no(e)) };
    // (a field with metadata may be an extension type: left to arrow)
    if field.data_type() != &DataType::Timestamp(TimeUnit::Nanosecond, None) || !field.metadata().is_empty() {
        return Ok(Transformed::no(e));
    }
    match expr.get_type(schema) {
        Ok(t) if is_text(&t) => Ok(Transformed::yes(ScalarUDF::from(CastTextToTimestamp::default()).call(vec![expr.as_ref().clone()]))),
        _ => Ok(Transformed::no(e)),
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// `cast_text_to_timestamp(text)`: `CAST(text AS TIMESTAMP)`, the common ISO-8601 shape read
/// directly (see the module docs); put in by [`TextCasts`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CastTextToTimestamp {
    signature: Signature,
}

impl Default for CastTextToTimestamp {
    fn default() -> Self {
        Self { signature: Signature::uniform(1, vec![DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View], Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for CastTextToTimestamp {
    fn name(&self) -> &str {
        "cast_text_to_timestamp"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Nanosecond, None))
    }

    /// As the cast's: nullable when the text is.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.first().is_none_or(|f| f.is_nullable());
        Ok(Arc::new(Field::new(self.name(), DataType::Timestamp(TimeUnit::Nanosecond, None), nullable)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(arg) = args.args.first() else { return exec_err!("cast_text_to_timestamp takes one argument") };
        let array = match arg {
            ColumnarValue::Array(a) => Arc::clone(a),
            ColumnarValue::Scalar(v) => v.to_array()?,
        };
        if !is_text(array.data_type()) {
            return exec_err!("cast_text_to_timestamp takes text, not {}", array.data_type());
        }
        let read = read_text_column::<TimestampNanosecondType>(array.as_ref(), TimeUnit::Nanosecond);
        let times: ArrayRef = match read {
            Some(times) => Arc::new(times),
            None => {
                // DataFusion's own casts fail on text they cannot read
                let strict = datafusion::arrow::compute::CastOptions { safe: false, ..Default::default() };
                datafusion::arrow::compute::cast_with_options(&array, &DataType::Timestamp(TimeUnit::Nanosecond, None), &strict)?
            }
        };
        Ok(match arg {
            ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&times, 0)?),
            ColumnarValue::Array(_) => ColumnarValue::Array(times),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::context::SessionContext;

    /// A context as the engine's planner builds it, with `with_rule` or without the rewrite.
    fn context(with_rule: bool) -> SessionContext {
        let ctx = SessionContext::new();
        if with_rule {
            ctx.add_optimizer_rule(Arc::new(TextCasts));
        }
        super::super::flink_functions::register(&ctx);
        ctx
    }

    async fn all(ctx: &SessionContext, sql: &str) -> std::result::Result<String, String> {
        let batches = ctx.sql(sql).await.map_err(|e| e.to_string())?.collect().await.map_err(|e| e.to_string())?;
        Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches).map_err(|e| e.to_string())?.to_string())
    }

    /// Casts of text to `TIMESTAMP`, written and put in by `DATE_FORMAT` and `HOUR`, give what
    /// arrow's cast gives: the common shape (read directly), other shapes (offsets, a date alone:
    /// by arrow's cast), both in one column, NULLs, as `Utf8`, `LargeUtf8`, views and a literal;
    /// text the cast cannot read fails with the cast's error. The plan calls the reader, once
    /// for two functions of the same column.
    #[tokio::test]
    async fn text_cast_to_a_timestamp_reads_as_the_cast_does() {
        let (ours, arrows) = (context(true), context(false));
        let common = "('2026-12-07T21:14:35.075'), ('2026-12-07T21:14:59.999999999'), ('2026-12-07 21:15:00'), (NULL), ('1969-12-31T23:59:59.5Z'), ('2024-02-29T00:00:00')";
        let other = "('2026-12-07T21:14:35.075'), ('2026-12-07T23:30:00+02:00'), ('2026-12-07'), ('2026-12-07T21:14:35.075')";
        // (VARCHAR is a view in DataFusion's SQL: the other two types by arrow_cast)
        for rows in [common, other] {
            for text in ["CAST(column1 AS VARCHAR)", "arrow_cast(column1, 'Utf8')", "arrow_cast(column1, 'LargeUtf8')", "arrow_cast(column1, 'Utf8View')"] {
                for f in [
                    "CAST({} AS TIMESTAMP)",
                    "DATE_FORMAT({}, 'yyyy-MM-dd HH:mm:ss.SSS')",
                    "DATE_FORMAT({}, 'EEE yyyy')",
                    "HOUR({})",
                    "CAST({} AS TIMESTAMP) + INTERVAL '1' DAY",
                ] {
                    let sql = format!("SELECT {} AS v FROM (VALUES {rows})", f.replace("{}", text));
                    let got = all(&ours, &sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                    assert_eq!(Ok(&got), all(&arrows, &sql).await.as_ref(), "{sql}");
                    assert!(got.lines().count() > 5, "{got}");
                }
            }
        }
        let plan = all(&ours, "EXPLAIN SELECT DATE_FORMAT(column1, 'yyyy') AS d, HOUR(column1) AS h FROM (VALUES ('2026-12-07T21:14:35'))").await.unwrap();
        assert_eq!(plan.matches("cast_text_to_timestamp(").count(), 2, "logical and physical plans, the call shared in each: {plan}");
        assert!(!plan.contains("CAST(column1"), "{plan}");
        assert_eq!(
            all(&ours, "SELECT HOUR('2026-12-07T23:30:00+02:00') AS v").await.unwrap(),
            all(&arrows, "SELECT HOUR('2026-12-07T23:30:00+02:00') AS v").await.unwrap()
        );
        for bad in ["DATE_FORMAT(column1, 'yyyy')", "HOUR(column1)", "CAST(column1 AS TIMESTAMP)"] {
            let sql = format!("SELECT {bad} FROM (VALUES ('2026-12-07T21:14:35'), ('yesterday'))");
            let err = all(&ours, &sql).await.unwrap_err();
            assert_eq!(err, "Arrow error: Parser error: Error parsing timestamp from 'yesterday': timestamp must contain at least 10 characters", "{bad}");
            assert_eq!(Err(err), all(&arrows, &sql).await, "{bad}");
        }
        // a cast to a timestamp with a zone, and TRY_CAST, are arrow's
        let zoned =
            all(&ours, "EXPLAIN SELECT TRY_CAST(column1 AS TIMESTAMP), arrow_cast(column1, 'Timestamp(Millisecond, None)') FROM (VALUES ('x'))").await.unwrap();
        assert!(!zoned.contains("cast_text_to_timestamp"), "{zoned}");
    }
}
