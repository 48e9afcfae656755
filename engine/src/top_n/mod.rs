//! Top-N per key and deduplication on streams: `ROW_NUMBER() OVER (PARTITION BY … ORDER BY …)`
//! filtered to its first rows, over an unbounded input, in any order (not only event time).
//! The result is a changelog: a row that enters a key's top N is written with
//! `_op = 'UPSERT'`, a row pushed out (or whose rank changed, when the rank is selected) with
//! `_op = 'DELETE'` and the values it was written with — as Flink's `Rank` operator retracts.
//!
//! ```sql
//! -- Nexmark q19: the ten highest bids of every auction
//! SELECT * FROM (
//!   SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid
//! ) WHERE rank_number <= 10
//! -- Nexmark q18: the last bid of each bidder on each auction (deduplication)
//! SELECT auction, bidder, price FROM (
//!   SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rn FROM bid
//! ) WHERE rn = 1
//! ```
//!
//! - [`top_n_exec`]: the operator and its state (the kept rows of each key, as Arrow rows);
//! - [`bounded_top_n_exec`]: the same query over bounded input (files), in one pass without
//!   sorting, the final rows only;
//! - [`key_numbers`]: the bounded operator's group numbers, one integer key by direct index;
//! - [`order_keys`]: the bounded operator's `ORDER BY` keys, numbers compared inline or
//!   row-format bytes (text, decimals, three columns or more);
//! - [`planner_rule`]: finds the pattern in DataFusion's plan and swaps an operator in;
//! - [`late_payload`]: over a join, the build side's text held aside and gathered for the
//!   kept rows only;
//! - [`read_twice`]: over Parquet files, the keys read first and the kept rows read again,
//!   nothing but their positions held.

pub mod bounded_top_n_exec;
mod key_numbers;
pub mod late_payload;
pub(crate) mod order_keys;
pub mod planner_rule;
pub mod read_twice;
pub mod top_n_exec;

pub use bounded_top_n_exec::BoundedTopNExec;
pub use late_payload::LatePayloadRule;
pub use planner_rule::StreamTopNRule;
pub use read_twice::{ReadKeptRowsExec, ReadTwiceRule, RowPositionsExec};
pub use top_n_exec::StreamTopNExec;

use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

/// Visits the `PARTITION BY` expressions, then the `ORDER BY` ones, with `f`, stopping when it
/// says so: what both operators' `apply_expressions` do.
pub(crate) fn visit_keys_and_order(
    partition_by: &[Arc<dyn PhysicalExpr>],
    order_by: &[PhysicalSortExpr],
    f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::common::Result<TreeNodeRecursion>,
) -> datafusion::common::Result<TreeNodeRecursion> {
    datafusion::physical_plan::apply_expression_roots(partition_by.iter().chain(order_by.iter().map(|o| &o.expr)), f)
}
