//! Several `COUNT(DISTINCT x)` of one integer column in one `GROUP BY`, each with its own
//! `FILTER`, counted from one set. DataFusion keeps a set of `(group, value)` per aggregate and
//! hashes every row into each of them (Nexmark q16: six sets, two columns; half of the
//! query's time). Here the aggregates of one column share one set whose entries carry a bit
//! per aggregate (the filters the value has passed in its group): one lookup per row and
//! column, a count per aggregate raised when its bit is first set.
//!
//! ```sql
//! SELECT channel, COUNT(DISTINCT bidder) AS total_bidders,
//!        COUNT(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders,
//!        COUNT(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders
//! FROM bid GROUP BY channel
//! -- Aggregate: gby=[channel], aggr=[count_distinct_sets(bidder, true, price < 10000, price >= 1000000)]
//! -- and a projection taking the three counts out of its struct, under their own names
//! ```
//!
//! Used on bounded input only (the planner adds the rule to jobs without barriers and without
//! `EMIT CHANGES`), for 2 to [`MAX_SETS`] counts of one column of a signed integer type (or an
//! unsigned one narrower than 64 bits) with a `GROUP BY` that names no window.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, StructArray, UInt8Array};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Int64Type};
use datafusion::common::hash_utils::RandomState;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_err, Column, Result, ScalarValue};
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, Aggregate, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, ExprSchemable, GroupsAccumulator, LogicalPlan, Projection, Signature, Volatility,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The most counts of one column that share a set (a byte of bits per entry).
pub const MAX_SETS: usize = 8;

/// The planner rule: see the module documentation.
#[derive(Debug, Default)]
pub struct CountDistinctSetsRule;

impl OptimizerRule for CountDistinctSetsRule {
    fn name(&self) -> &str {
        "count_distinct_sets"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = plan else { return Ok(Transformed::no(plan)) };
        match rewrite_aggregate(&agg)? {
            Some(p) => Ok(Transformed::yes(p)),
            None => Ok(Transformed::no(LogicalPlan::Aggregate(agg))),
        }
    }
}

/// The column of `COUNT(DISTINCT column)` (no `ORDER BY` in the call), and its filter.
fn distinct_count(e: &Expr) -> Option<(&Expr, Option<&Expr>)> {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = e else { return None };
    let AggregateFunctionParams { args, distinct, filter, order_by, .. } = params;
    match args.as_slice() {
        [arg] if func.name() == "count" && *distinct && order_by.is_empty() => Some((arg, filter.as_deref())),
        _ => None,
    }
}

/// Whether `e` calls a window function (`TUMBLE`, `HOP`, `SESSION`).
fn names_a_window(e: &Expr) -> bool {
    let mut found = false;
    let _ = e.apply(|e| {
        found |= matches!(e, Expr::ScalarFunction(f) if crate::window::functions::WindowFunction::from_name(f.name()).is_some());
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

fn countable(t: &DataType) -> bool {
    matches!(t, DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32)
}

fn rewrite_aggregate(agg: &Aggregate) -> Result<Option<LogicalPlan>> {
    // (windows' aggregates are ours: they keep DataFusion's counts)
    // (nor GROUPING SETS, ROLLUP and CUBE: their output has a column per grouping column)
    if agg.group_expr.is_empty() || agg.group_expr.iter().any(|e| names_a_window(e) || matches!(e, Expr::GroupingSet(_))) {
        return Ok(None);
    }
    let input_schema = agg.input.schema();
    // the aggregates of each column that are counted distinct, in order
    let mut columns: Vec<(&Expr, Vec<usize>)> = Vec::new();
    for (i, e) in agg.aggr_expr.iter().enumerate() {
        let Some((arg, _)) = distinct_count(e) else { continue };
        if !arg.get_type(input_schema).is_ok_and(|t| countable(&t)) {
            continue;
        }
        match columns.iter_mut().find(|(a, _)| *a == arg) {
            Some((_, at)) => at.push(i),
            None => columns.push((arg, vec![i])),
        }
    }
    columns.retain(|(_, at)| (2..=MAX_SETS).contains(&at.len()));
    if columns.is_empty() {
        return Ok(None);
    }
    let udaf = Arc::new(AggregateUDF::from(CountDistinctSets::new()));
    // each replaced aggregate: (set, position in it)
    let mut replaced: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut aggr_expr: Vec<Expr> =
        agg.aggr_expr.iter().enumerate().filter(|(i, _)| !columns.iter().any(|(_, at)| at.contains(i))).map(|(_, e)| e.clone()).collect();
    let mut set_names = Vec::new();
    for (set, (arg, at)) in columns.iter().enumerate() {
        let mut args = vec![(*arg).clone()];
        for (pos, i) in at.iter().enumerate() {
            let filter = distinct_count(&agg.aggr_expr[*i]).and_then(|(_, f)| f.cloned());
            args.push(filter.unwrap_or(Expr::Literal(ScalarValue::Boolean(Some(true)), None)));
            replaced.insert(*i, (set, pos));
        }
        let name = format!("__count_distinct_sets_{set}");
        aggr_expr.push(Expr::AggregateFunction(AggregateFunction::new_udf(Arc::clone(&udaf), args, false, None, vec![], None)).alias(&name));
        set_names.push(name);
    }
    let new = Aggregate::try_new(Arc::clone(&agg.input), agg.group_expr.clone(), aggr_expr)?;
    // the old aggregate's columns, in its order and under its names
    let groups = agg.group_expr.len();
    let mut exprs = Vec::with_capacity(agg.schema.fields().len());
    for (i, (qualifier, field)) in agg.schema.iter().enumerate() {
        let name = field.name();
        let e = match i.checked_sub(groups).and_then(|a| replaced.get(&a)) {
            Some((set, pos)) => datafusion::functions::core::expr_fn::get_field(Expr::Column(Column::from_name(&set_names[*set])), format!("c{pos}"))
                .alias_qualified(qualifier.cloned(), name),
            None => Expr::Column(Column::new(qualifier.cloned(), name)),
        };
        exprs.push(e);
    }
    Ok(Some(LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(new)))?)))
}

/// `count_distinct_sets(x, f0, f1, …)`: a struct of the numbers of distinct non-null `x`
/// among the rows where `f0`, `f1`, … hold (fields `c0`, `c1`, …).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CountDistinctSets {
    signature: Signature,
}

impl CountDistinctSets {
    /// The function.
    pub fn new() -> Self {
        Self { signature: Signature::variadic_any(Volatility::Immutable) }
    }
}

impl Default for CountDistinctSets {
    fn default() -> Self {
        Self::new()
    }
}

fn counts_type(k: usize) -> DataType {
    DataType::Struct((0..k).map(|i| Field::new(format!("c{i}"), DataType::Int64, false)).collect::<Fields>())
}

fn sets_of(t: &DataType) -> Result<usize> {
    match t {
        DataType::Struct(f) if (1..=MAX_SETS).contains(&f.len()) => Ok(f.len()),
        _ => internal_err!("count_distinct_sets returns a struct of 1 to {MAX_SETS} counts, not {t}"),
    }
}

impl AggregateUDFImpl for CountDistinctSets {
    fn name(&self) -> &str {
        "count_distinct_sets"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.len().checked_sub(1) {
            Some(k) if (1..=MAX_SETS).contains(&k) => Ok(counts_type(k)),
            _ => internal_err!("count_distinct_sets takes a column and 1 to {MAX_SETS} conditions"),
        }
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(format!("{}[values]", args.name), DataType::new_list(DataType::Int64, true), true)),
            Arc::new(Field::new(format!("{}[sets]", args.name), DataType::new_list(DataType::UInt8, true), true)),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(Sets::new(sets_of(args.return_field.data_type())?))))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Sets::new(sets_of(args.return_field.data_type())?)))
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        let k = sets_of(data_type)?;
        Ok(ScalarValue::Struct(Arc::new(counts_array(k, &vec![0; k]))))
    }
}

/// `k` count columns of `counts` (group by group, `k` each) as a struct array.
fn counts_array(k: usize, counts: &[i64]) -> StructArray {
    let groups = counts.len() / k.max(1);
    let columns: Vec<ArrayRef> = (0..k).map(|s| Arc::new(Int64Array::from_iter_values((0..groups).map(|g| counts[g * k + s]))) as ArrayRef).collect();
    let fields = match counts_type(k) {
        DataType::Struct(f) => f,
        _ => Fields::empty(),
    };
    StructArray::new(fields, columns, None)
}

/// Rows an accumulator lists before it looks whether they repeat (see [`Sets`]).
#[cfg(not(test))]
const PROBE_ROWS: usize = 1 << 20;
/// (Few, so that the tests see both ways of taking rows.)
#[cfg(test)]
const PROBE_ROWS: usize = 1000;

/// The most rows listed at once.
const LIST_ROWS: usize = 8 * PROBE_ROWS;

/// How the rows of `update_batch` are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taking {
    /// Listed, until [`PROBE_ROWS`] are: then they go into the set, and the share that was
    /// new decides.
    Probing,
    /// Listed: most were new to the set, so a partial aggregate hands them on unhashed and
    /// the final one (`merge_batch`) hashes each once, rather than both hashing them. Once
    /// [`LIST_ROWS`] are listed they go into the set, and the share that was new decides
    /// again (the list never holds more, however long the input).
    Listing,
    /// Into the set: they repeat, and the set holds them in less room than a list.
    Hashing,
}

/// The shared set: each `(group, value)` seen, with the bits of the counts it is in, each
/// group's counts, and the rows listed but not yet in the set.
#[derive(Debug)]
struct Sets {
    k: usize,
    seen: HashMap<(usize, i64), u8, RandomState>,
    counts: Vec<i64>,
    taking: Taking,
    listed: Listed,
}

/// Rows listed, column by column: group, value, bits.
#[derive(Debug, Default)]
struct Listed {
    groups: Vec<u32>,
    values: Vec<i64>,
    bits: Vec<u8>,
}

impl Listed {
    fn push(&mut self, group: u32, value: i64, bits: u8) {
        self.groups.push(group);
        self.values.push(value);
        self.bits.push(bits);
    }

    /// The rows, in the order they were listed.
    fn into_rows(self) -> impl Iterator<Item = (u32, i64, u8)> {
        self.groups.into_iter().zip(self.values).zip(self.bits).map(|((g, v), b)| (g, v, b))
    }
}

impl Sets {
    fn new(k: usize) -> Self {
        Self { k, seen: HashMap::default(), counts: Vec::new(), taking: Taking::Probing, listed: Listed::default() }
    }

    /// Puts the listed rows into the set.
    fn fold(&mut self) {
        for (g, v, b) in std::mem::take(&mut self.listed).into_rows() {
            self.add(g as usize, v, b);
        }
    }

    fn grow(&mut self, groups: usize) {
        if self.counts.len() < groups * self.k {
            self.counts.resize(groups * self.k, 0);
        }
    }

    /// `value` of `group` passed the conditions of the bits in `bits`.
    #[inline]
    fn add(&mut self, group: usize, value: i64, bits: u8) {
        let held = self.seen.entry((group, value)).or_insert(0);
        let mut new = bits & !*held;
        if new == 0 {
            return;
        }
        *held |= new;
        let base = group * self.k;
        while new != 0 {
            self.counts[base + new.trailing_zeros() as usize] += 1;
            new &= new - 1;
        }
    }

    /// The value column as i64 and each row's bits (0 where the row counts nowhere: its value
    /// is NULL or the aggregate's filter drops it).
    fn rows(&self, values: &[ArrayRef], filter: Option<&BooleanArray>) -> Result<(ArrayRef, Vec<u8>)> {
        let x = cast(&values[0], &DataType::Int64)?;
        let held = |c: &BooleanArray| match c.nulls() {
            Some(n) => c.values() & n.inner(),
            None => c.values().clone(),
        };
        let keep = match (x.nulls(), filter.map(held)) {
            (Some(n), Some(f)) => Some(n.inner() & &f),
            (Some(n), None) => Some(n.inner().clone()),
            (None, f) => f,
        };
        let mut bits = vec![0u8; x.len()];
        for (s, c) in values[1..].iter().enumerate().take(self.k) {
            let mut passed = held(c.as_boolean());
            if let Some(k) = &keep {
                passed = &passed & k;
            }
            for row in passed.set_indices() {
                bits[row] |= 1 << s;
            }
        }
        Ok((x, bits))
    }

    fn take_counts(&mut self, emit_to: EmitTo) -> Vec<i64> {
        match emit_to {
            EmitTo::All => std::mem::take(&mut self.counts),
            EmitTo::First(n) => {
                let rest = self.counts.split_off((n * self.k).min(self.counts.len()));
                std::mem::replace(&mut self.counts, rest)
            }
        }
    }

    /// Takes the entries of the groups `emit_to` emits (`groups` of them) out of the set and
    /// the list, as each group's values and bits one after the other (and where each group's
    /// start).
    fn take_entries(&mut self, emit_to: EmitTo, groups: usize) -> (Vec<i32>, Vec<i64>, Vec<u8>) {
        let n = match emit_to {
            EmitTo::All => groups,
            EmitTo::First(n) => n.min(groups),
        };
        let mut offsets = vec![0i32; n + 1];
        for g in self.listed.groups.iter().map(|&g| g as usize).chain(self.seen.keys().map(|(g, _)| *g)) {
            if g < n {
                offsets[g + 1] += 1;
            }
        }
        for g in 0..n {
            offsets[g + 1] += offsets[g];
        }
        let total = offsets[n] as usize;
        let (mut values, mut bits) = (vec![0i64; total], vec![0u8; total]);
        let mut at: Vec<usize> = offsets[..n].iter().map(|&o| o as usize).collect();
        let mut put = |g: usize, v: i64, b: u8| {
            values[at[g]] = v;
            bits[at[g]] = b;
            at[g] += 1;
        };
        // the rows listed, as they are (the final aggregate's set takes out repeats)
        for (g, v, b) in std::mem::take(&mut self.listed).into_rows() {
            if (g as usize) < n {
                put(g as usize, v, b);
            } else if matches!(emit_to, EmitTo::First(_)) {
                self.listed.push(g - n as u32, v, b);
            }
        }
        let mut rest = HashMap::default();
        for ((g, v), b) in self.seen.drain() {
            if g < n {
                put(g, v, b);
            } else if matches!(emit_to, EmitTo::First(_)) {
                rest.insert((g - n, v), b);
            }
        }
        self.seen = rest;
        (offsets, values, bits)
    }

    fn merge_lists(&mut self, values: &[ArrayRef], group_of: impl Fn(usize) -> usize) -> Result<()> {
        let (Some(v), Some(s)) = (values.first(), values.get(1)) else { return internal_err!("count_distinct_sets: a state has two lists") };
        let (v, s): (&ListArray, &ListArray) = (v.as_list::<i32>(), s.as_list::<i32>());
        let inner = v.values().as_primitive::<Int64Type>();
        let sets = s.values().as_primitive::<datafusion::arrow::datatypes::UInt8Type>();
        let offsets = v.offsets();
        for row in 0..v.len() {
            if v.is_null(row) {
                continue;
            }
            let g = group_of(row);
            for i in offsets[row] as usize..offsets[row + 1] as usize {
                self.add(g, inner.value(i), sets.value(i));
            }
        }
        Ok(())
    }
}

/// The state of each group: its values and their bits, as two lists (`offsets`: where each
/// group's start).
fn state_lists((offsets, values, bits): (Vec<i32>, Vec<i64>, Vec<u8>)) -> Vec<ArrayRef> {
    let offsets = OffsetBuffer::new(offsets.into());
    let list = |values: ArrayRef, t: DataType| -> ArrayRef {
        Arc::new(ListArray::new(Arc::new(Field::new_list_field(t, true)), offsets.clone(), values, None::<NullBuffer>))
    };
    vec![list(Arc::new(Int64Array::from(values)), DataType::Int64), list(Arc::new(UInt8Array::from(bits)), DataType::UInt8)]
}

impl GroupsAccumulator for Sets {
    fn update_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], opt_filter: Option<&BooleanArray>, total_num_groups: usize) -> Result<()> {
        self.grow(total_num_groups);
        let (x, bits) = self.rows(values, opt_filter)?;
        let x = x.as_primitive::<Int64Type>().values();
        let rows = group_indices.iter().zip(x.iter()).zip(&bits).filter(|(_, &b)| b != 0);
        if self.taking == Taking::Hashing || u32::try_from(total_num_groups).is_err() {
            for ((&g, &v), &b) in rows {
                self.add(g, v, b);
            }
            return Ok(());
        }
        for ((&g, &v), &b) in rows {
            self.listed.push(g as u32, v, b);
        }
        let probe = match self.taking {
            Taking::Probing => PROBE_ROWS,
            _ => LIST_ROWS,
        };
        if self.listed.groups.len() >= probe {
            let (before, rows) = (self.seen.len(), self.listed.groups.len());
            self.fold();
            self.taking = if (self.seen.len() - before) * 2 < rows { Taking::Hashing } else { Taking::Listing };
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.fold();
        let counts = self.take_counts(emit_to);
        let groups = counts.len() / self.k;
        match emit_to {
            EmitTo::All => self.seen.clear(),
            EmitTo::First(_) => drop(self.take_entries(emit_to, groups)),
        }
        Ok(Arc::new(counts_array(self.k, &counts)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let counts = self.take_counts(emit_to);
        let groups = counts.len() / self.k;
        Ok(state_lists(self.take_entries(emit_to, groups)))
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.grow(total_num_groups);
        self.merge_lists(values, |row| group_indices[row])
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let (x, bits) = self.rows(values, opt_filter)?;
        let x = x.as_primitive::<Int64Type>().values();
        let mut offsets = Vec::with_capacity(bits.len() + 1);
        offsets.push(0i32);
        let (mut kept, mut kept_bits) = (Vec::new(), Vec::new());
        for (&b, &v) in bits.iter().zip(x.iter()) {
            if b != 0 {
                kept.push(v);
                kept_bits.push(b);
            }
            offsets.push(kept.len() as i32);
        }
        Ok(state_lists((offsets, kept, kept_bits)))
    }

    fn size(&self) -> usize {
        self.seen.capacity() * (std::mem::size_of::<((usize, i64), u8)>() + 1)
            + self.counts.capacity() * 8
            + self.listed.groups.capacity() * 4
            + self.listed.values.capacity() * 8
            + self.listed.bits.capacity()
            + std::mem::size_of::<Self>()
    }
}

/// The same counting for an aggregate over no `GROUP BY` (one group).
#[derive(Debug)]
struct OneGroup(Sets);

impl Accumulator for OneGroup {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = values.first().map_or(0, |v| v.len());
        GroupsAccumulator::update_batch(&mut self.0, values, &vec![0; rows], None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.grow(1);
        self.0.fold();
        let counts = self.0.counts.clone();
        Ok(ScalarValue::Struct(Arc::new(counts_array(self.0.k, &counts))))
    }

    fn size(&self) -> usize {
        GroupsAccumulator::size(&self.0)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.grow(1);
        self.0.fold();
        let (values, bits): (Vec<i64>, Vec<u8>) = self.0.seen.iter().map(|((_, v), b)| (*v, *b)).unzip();
        state_lists((vec![0, values.len() as i32], values, bits)).iter().map(|a| ScalarValue::try_from_array(a, 0)).collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.0.grow(1);
        self.0.merge_lists(states, |_| 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Rows in `parts` partitions of batches of 97: skewed keys, repeated values, NULLs in
    /// the key, the value and the filtered column.
    fn table(rows: usize, parts: usize) -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Int32, true),
            Field::new("p", DataType::Int64, true),
        ]));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut partitions = vec![Vec::new(); parts];
        let mut i = 0;
        while i < rows {
            let n = 97.min(rows - i);
            let mut k = Vec::new();
            let (mut x, mut y, mut p) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..n {
                let r = next();
                k.push((r % 11 != 0).then(|| format!("k{}", (r >> 8) % 1.max((r >> 20) % 40 + 1))));
                x.push((r % 13 != 0).then_some(((r >> 12) % 300) as i64 - 150));
                y.push(((r >> 30) % 50) as i32);
                p.push((r % 17 != 0).then_some(((r >> 40) % 1000) as i64));
            }
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(StringArray::from(k)), Arc::new(Int64Array::from(x)), Arc::new(Int32Array::from(y)), Arc::new(Int64Array::from(p))],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            partitions[(i / 97) % parts].push(batch);
            i += n;
        }
        MemTable::try_new(schema, partitions).unwrap_or_else(|e| panic!("{e}"))
    }

    async fn answer(sql: &str, with_rule: bool, skip_partial: bool) -> (String, String) {
        let mut config = SessionConfig::new().with_target_partitions(3);
        if skip_partial {
            // every partial aggregate hands its rows on as states (convert_to_state)
            config.options_mut().execution.skip_partial_aggregation_probe_rows_threshold = 1;
            config.options_mut().execution.skip_partial_aggregation_probe_ratio_threshold = 0.0;
        }
        let ctx = SessionContext::new_with_config(config);
        if with_rule {
            ctx.add_optimizer_rule(Arc::new(CountDistinctSetsRule));
        }
        ctx.register_table("t", Arc::new(table(20_000, 3))).unwrap_or_else(|e| panic!("{e}"));
        let df = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{e}"));
        let plan = format!("{}", df.clone().into_optimized_plan().unwrap_or_else(|e| panic!("{e}")).display_indent());
        let batches = df.collect().await.unwrap_or_else(|e| panic!("{e}"));
        (pretty_format_batches(&batches).unwrap_or_else(|e| panic!("{e}")).to_string(), plan)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_sets_count_what_datafusion_counts() {
        let queries = [
            // Nexmark q16's shape: three filters and the total, two columns
            "SELECT k, COUNT(*) AS n, COUNT(DISTINCT x) AS dx, COUNT(DISTINCT x) FILTER (WHERE p < 300) AS dx1, \
             COUNT(DISTINCT x) FILTER (WHERE p >= 300 AND p < 700) AS dx2, COUNT(DISTINCT x) FILTER (WHERE p >= 700) AS dx3, \
             COUNT(DISTINCT y) AS dy, COUNT(DISTINCT y) FILTER (WHERE p < 300) AS dy1, MAX(p) AS mp FROM t GROUP BY k ORDER BY k",
            // an Int32 column, a filter on the counted column itself, two keys, an expression as key
            "SELECT k, y % 3 AS g, COUNT(DISTINCT y) FILTER (WHERE y > 10) AS a, COUNT(DISTINCT y) AS b, SUM(x) AS s \
             FROM t GROUP BY k, y % 3 ORDER BY k, g",
            // one of the counts in HAVING, and one of another column alone (left to DataFusion)
            "SELECT k, COUNT(DISTINCT x) AS a, COUNT(DISTINCT x) FILTER (WHERE x > 0) AS b, COUNT(DISTINCT p) AS c FROM t GROUP BY k \
             HAVING COUNT(DISTINCT x) > 250 ORDER BY k",
        ];
        for sql in queries {
            for skip_partial in [false, true] {
                let (want, plain) = answer(sql, false, skip_partial).await;
                let (got, plan) = answer(sql, true, skip_partial).await;
                assert!(!plain.contains("count_distinct_sets"), "{plain}");
                assert!(plan.contains("count_distinct_sets"), "the rule did not apply to {sql}:\n{plan}");
                assert_eq!(got, want, "{sql} (skip_partial {skip_partial})\n{plan}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn left_alone_where_it_does_not_apply() {
        for sql in [
            // one count per column
            "SELECT k, COUNT(DISTINCT x) AS a, COUNT(DISTINCT y) AS b FROM t GROUP BY k ORDER BY k",
            // no GROUP BY
            "SELECT COUNT(DISTINCT x) AS a, COUNT(DISTINCT x) FILTER (WHERE p < 10) AS b FROM t",
            // ROLLUP (a column per grouping column, and the grouping id)
            "SELECT k, y, COUNT(DISTINCT x) AS a, COUNT(DISTINCT x) FILTER (WHERE p < 10) AS b FROM t GROUP BY ROLLUP(k, y) ORDER BY k, y, a, b",
            // text
            "SELECT p % 5 AS g, COUNT(DISTINCT k) AS a, COUNT(DISTINCT k) FILTER (WHERE p < 10) AS b FROM t GROUP BY p % 5 ORDER BY g",
        ] {
            let (want, _) = answer(sql, false, false).await;
            let (got, plan) = answer(sql, true, false).await;
            assert!(!plan.contains("count_distinct_sets"), "{sql}:\n{plan}");
            assert_eq!(got, want, "{sql}");
        }
    }
}
