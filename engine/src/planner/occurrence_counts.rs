//! Occurrences of a string counted the way SQL users write it, without building the string
//! that `REPLACE` would return. `CHARACTER_LENGTH(s) - CHARACTER_LENGTH(REPLACE(s, 'c', ''))`
//! (also spelt with `LENGTH` or `CHAR_LENGTH`) is the portable way to count the `'c'`s in `s`,
//! and Flink's Nexmark q14 writes its `count_char` UDF that way. DataFusion evaluates it as
//! written: a new string per row, then two character counts. The rule computes the same number
//! in one pass over `s`: the characters in the non-overlapping matches of the pattern, left to
//! right, which is what `REPLACE` removes.
//!
//! ```sql
//! SELECT CHARACTER_LENGTH(extra) - CHARACTER_LENGTH(REPLACE(extra, 'c', '')) AS c_counts FROM bid
//! -- computed as occurrence_chars(extra, 'c'): 'abcc' gives 2, NULL gives NULL
//! ```
//!
//! Only a non-empty literal pattern and an empty literal replacement, with the same expression
//! on both sides, are rewritten; anything else runs as DataFusion plans it.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, Int64Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The rule: `CHARACTER_LENGTH(s) - CHARACTER_LENGTH(REPLACE(s, p, ''))` becomes
/// `occurrence_chars(s, p)` in every expression of the plan.
#[derive(Debug, Default)]
pub struct OccurrenceCounts;

impl OptimizerRule for OccurrenceCounts {
    fn name(&self) -> &str {
        "occurrence_counts"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        super::fixed_intervals::rewrite_expressions(plan, as_occurrences)
    }
}

/// `rules` with [`OccurrenceCounts`] just before common subexpressions are taken out (which
/// would take `CHARACTER_LENGTH(s)` out of the difference), or last if there is no such rule.
pub fn before_common_expressions(mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>) -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let at = rules.iter().position(|r| r.name() == "common_sub_expression_eliminate").unwrap_or(rules.len());
    rules.insert(at, Arc::new(OccurrenceCounts));
    rules
}

/// `e` as `occurrence_chars(s, p)` when it is `character_length(s) - character_length(replace(s, p, ''))`.
fn as_occurrences(e: Expr) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Minus, right }) = &e else { return Ok(Transformed::no(e)) };
    let (Some([whole]), Some([replaced])) = (char_length_of(left), char_length_of(right)) else { return Ok(Transformed::no(e)) };
    let Expr::ScalarFunction(ScalarFunction { func, args }) = replaced else { return Ok(Transformed::no(e)) };
    let [s, pattern, replacement] = args.as_slice() else { return Ok(Transformed::no(e)) };
    // (a volatile `s`, as `CAST(random() AS VARCHAR)`, is two strings as written)
    if func.name() != "replace" || s != whole || s.is_volatile() || !matches!(text(replacement), Some("")) || text(pattern).is_none_or(str::is_empty) {
        return Ok(Transformed::no(e));
    }
    let call = Expr::ScalarFunction(ScalarFunction { func: occurrence_chars(), args: vec![s.clone(), pattern.clone()] });
    Ok(Transformed::yes(call))
}

/// The argument of a `character_length` call (which the SQL planner names `length(s)` when
/// written `LENGTH(s)`: an alias).
fn char_length_of(e: &Expr) -> Option<&[Expr; 1]> {
    match e {
        Expr::Alias(a) => char_length_of(&a.expr),
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == "character_length" => args.as_slice().try_into().ok(),
        _ => None,
    }
}

/// A non-null string literal's text.
fn text(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _) => Some(s),
        _ => None,
    }
}

/// The function the rule calls.
pub fn occurrence_chars() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(OccurrenceChars::default()))
}

/// `occurrence_chars(s, p)`: the number of characters in the non-overlapping matches of the
/// non-empty literal `p` in `s`, found left to right (what `REPLACE(s, p, '')` removes), typed as
/// `CHARACTER_LENGTH(s)` is (INT, or BIGINT for a large string). Planned by the rule only.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct OccurrenceChars {
    signature: Signature,
}

impl Default for OccurrenceChars {
    fn default() -> Self {
        Self { signature: Signature::any(2, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for OccurrenceChars {
    fn name(&self) -> &str {
        "occurrence_chars"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(DataType::LargeUtf8) => Ok(DataType::Int64),
            Some(DataType::Utf8 | DataType::Utf8View | DataType::Null) => Ok(DataType::Int32),
            other => plan_err!("occurrence_chars takes a string, not {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [s, p] = args.args.as_slice() else { return exec_err!("occurrence_chars takes two arguments") };
        let ColumnarValue::Scalar(p) = p else { return exec_err!("occurrence_chars takes a literal pattern") };
        let pattern = match p {
            ScalarValue::Utf8(Some(p)) | ScalarValue::LargeUtf8(Some(p)) | ScalarValue::Utf8View(Some(p)) if !p.is_empty() => p.as_str(),
            other => return exec_err!("occurrence_chars takes a non-empty literal pattern, not {other}"),
        };
        let scalar = matches!(s, ColumnarValue::Scalar(_));
        let counted = count(&s.to_array(if scalar { 1 } else { args.number_rows })?, pattern)?;
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&counted, 0)?));
        }
        Ok(ColumnarValue::Array(counted))
    }
}

/// The characters of `pattern` matched in each string of `strings`.
fn count(strings: &ArrayRef, pattern: &str) -> Result<ArrayRef> {
    let chars = pattern.chars().count();
    let finder = memchr::memmem::Finder::new(pattern.as_bytes());
    let per_string = |s: &[u8]| -> usize {
        match pattern.as_bytes() {
            // one byte: a loop the compiler vectorises beats a search on short strings
            [b] => s.iter().filter(|c| *c == b).count(),
            _ => finder.find_iter(s).count(),
        }
    };
    let nulls = strings.nulls().cloned();
    Ok(match strings.data_type() {
        DataType::Utf8View => {
            let a = strings.as_string_view();
            int32s((0..a.len()).map(|i| per_string(a.value(i).as_bytes()) * chars), nulls)?
        }
        DataType::Utf8 => {
            let a = strings.as_string::<i32>();
            int32s((0..a.len()).map(|i| per_string(a.value(i).as_bytes()) * chars), nulls)?
        }
        DataType::LargeUtf8 => {
            let a = strings.as_string::<i64>();
            let values = (0..a.len()).map(|i| i64::try_from(per_string(a.value(i).as_bytes()) * chars).unwrap_or(i64::MAX));
            Arc::new(Int64Array::new(values.collect(), nulls))
        }
        DataType::Null => Arc::new(Int32Array::new_null(strings.len())),
        other => return exec_err!("occurrence_chars takes a string, not {other}"),
    })
}

/// Counts as INT (a count of characters no larger than a string's character length, which
/// `CHARACTER_LENGTH` gives as INT too).
fn int32s(values: impl Iterator<Item = usize>, nulls: Option<NullBuffer>) -> Result<ArrayRef> {
    let values: Vec<i32> = values.map(|v| i32::try_from(v).unwrap_or(i32::MAX)).collect();
    Ok(Arc::new(Int32Array::new(values.into(), nulls)))
}

#[cfg(test)]
mod tests {
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    /// A session whose optimizer has the rule where the job's has it, or none.
    fn session(with_rule: bool) -> SessionContext {
        let mut rules = datafusion::optimizer::Optimizer::new().rules;
        if with_rule {
            rules = super::before_common_expressions(rules);
        }
        SessionContext::new_with_state(SessionStateBuilder::new().with_default_features().with_optimizer_rules(rules).build())
    }

    /// Text of the rows `sql` returns, with and without the rule.
    async fn both(sql: &str) -> (Vec<String>, Vec<String>, String) {
        let setup = "CREATE TABLE t (s VARCHAR, v VARCHAR) AS VALUES \
             ('abcc', 'x'), (NULL, 'y'), ('', 'z'), ('cccc', 'w'), ('ééé cé', 'u'), ('aaaa', 'v'), ('abababab', 't'), ('a long string past twelve bytes, cc', 's')";
        let mut out = Vec::new();
        let mut plan = String::new();
        for with_rule in [true, false] {
            let ctx = session(with_rule);
            ctx.sql(setup).await.unwrap();
            for view in ["", "_view"] {
                let table = format!("t{view}");
                if !view.is_empty() {
                    ctx.sql(&format!("CREATE VIEW {table} AS SELECT arrow_cast(s, 'Utf8View') AS s, arrow_cast(v, 'LargeUtf8') AS v FROM t")).await.unwrap();
                }
                let q = sql.replace("FROM t", &format!("FROM {table}"));
                let df = ctx.sql(&q).await.unwrap();
                if with_rule && view.is_empty() {
                    plan = format!("{}", df.clone().into_optimized_plan().unwrap().display_indent());
                }
                let batches = df.collect().await.unwrap();
                out.push(datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string());
            }
        }
        let lines = |t: &[String]| t.iter().flat_map(|t| t.lines().map(str::to_string)).collect::<Vec<_>>();
        (lines(&out[..2]), lines(&out[2..]), plan)
    }

    /// Each query gives DataFusion's rows with the rule, and is rewritten or not as `rewritten`.
    async fn same_rows(queries: &[&str], rewritten: bool) {
        for q in queries {
            let (ours, theirs, plan) = both(q).await;
            assert_eq!(ours, theirs, "{q}");
            assert_eq!(!plan.contains("replace"), rewritten, "{q}:\n{plan}");
        }
    }

    #[tokio::test]
    async fn counts_are_datafusion_s() {
        let queries = [
            "SELECT s, CHARACTER_LENGTH(s) - CHARACTER_LENGTH(REPLACE(s, 'c', '')) AS n FROM t ORDER BY s NULLS FIRST",
            "SELECT s, LENGTH(s) - LENGTH(REPLACE(s, 'ab', '')) AS n, CHAR_LENGTH(s) - CHAR_LENGTH(REPLACE(s, 'é', '')) AS e FROM t ORDER BY s NULLS FIRST",
            "SELECT s FROM t WHERE LENGTH(s) - LENGTH(REPLACE(s, 'aa', '')) > 0 ORDER BY s",
            "SELECT v, LENGTH(v) - LENGTH(REPLACE(v, 'x', '')) AS n FROM t ORDER BY v",
            "SELECT s, LENGTH('cc c') - LENGTH(REPLACE('cc c', 'c', '')) AS k FROM t ORDER BY s NULLS FIRST",
        ];
        same_rows(&queries, true).await;
    }

    #[tokio::test]
    async fn a_volatile_string_stays_two_strings() {
        let ctx = session(true);
        let q = "SELECT LENGTH(CAST(random() AS VARCHAR)) - LENGTH(REPLACE(CAST(random() AS VARCHAR), '1', '')) AS n";
        let plan = format!("{}", ctx.sql(q).await.unwrap().into_optimized_plan().unwrap().display_indent());
        assert!(plan.contains("replace"), "{plan}");
    }

    #[tokio::test]
    async fn other_shapes_stay_as_written() {
        let queries = [
            // a replacement that is not empty, an empty pattern, two different strings
            "SELECT s, LENGTH(s) - LENGTH(REPLACE(s, 'c', 'dd')) AS n FROM t ORDER BY s NULLS FIRST",
            "SELECT s, LENGTH(s) - LENGTH(REPLACE(s, '', '')) AS n FROM t ORDER BY s NULLS FIRST",
            "SELECT s, LENGTH(v) - LENGTH(REPLACE(s, 'c', '')) AS n FROM t ORDER BY s NULLS FIRST",
            "SELECT s, LENGTH(s) - LENGTH(REPLACE(s, v, '')) AS n FROM t ORDER BY s NULLS FIRST",
        ];
        same_rows(&queries, false).await;
    }
}
