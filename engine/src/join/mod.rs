//! Temporal joins of streams: `JOIN … WITHIN INTERVAL` and joins whose condition bounds the
//! difference of the two sides' event times, run by [`IntervalJoinExec`] with state evicted as
//! the watermarks advance.
//!
//! ```sql
//! SELECT c.user_id, p.amount FROM clicks c JOIN purchases p
//!   ON c.user_id = p.user_id AND p.ts BETWEEN c.ts - INTERVAL '10' SECOND AND c.ts + INTERVAL '5' SECOND
//! ```

pub mod group_join;
pub mod interval_join_exec;
pub mod planner_rule;
pub mod refresh;
pub mod small_build_side;
pub mod time_band;

pub use group_join::GroupJoinExec;
pub use interval_join_exec::IntervalJoinExec;
pub use planner_rule::IntervalJoinRule;
pub use small_build_side::SmallBuildSideRule;
