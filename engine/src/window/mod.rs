//! Windowed aggregates on streams: `TUMBLE`, `HOP` and `SESSION` in `GROUP BY` (and the
//! predecessor's `WINDOW TUMBLING|SLIDING|SESSION(…)` clause), emitted when the watermark
//! closes each window, and unwindowed `GROUP BY` on unbounded inputs.
//!
//! ```sql
//! CREATE STREAM clicks_per_minute AS
//! SELECT window_start, window_end, user_id, COUNT(*) AS clicks
//! FROM clicks GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), user_id
//! INTO out WITH ('clicks.event_time' = 'ts', 'clicks.watermark.delay' = '5s', …);
//! ```
//!
//! - [`functions`]: the SQL functions and the window value type;
//! - [`sql_rewrite`]: the clause form and `window_start` / `window_end`;
//! - [`planner_rule`]: swaps DataFusion's aggregate for ours; [`cascade`]: a `GROUP BY` of the
//!   windows of a window aggregate below (windows of windows);
//! - [`aggregate_exec`]: the operator; [`groups`]: its hash tables; [`pane_table`]: the open
//!   panes of `TUMBLE`/`HOP` windows in one table; [`pane_keys`]: that table's groups, found
//!   by key number (one text key numbered by `text_keys`); [`hop_windows`]: `HOP` windows merged from their frozen panes;
//!   [`session`]: sessions.

pub mod aggregate_exec;
pub mod cascade;
pub mod functions;
pub mod groups;
pub mod hop_windows;
pub mod pane_keys;
pub mod pane_table;
pub mod planner_rule;
pub mod session;
pub mod spread;
pub mod sql_rewrite;
pub(crate) mod text_keys;

pub use aggregate_exec::{WindowAggregateExec, WindowKind};
pub use planner_rule::StreamingAggregateRule;

/// Tests: numbers below `n` from a xorshift generator started at `seed` (the same sequence in
/// every run).
#[cfg(test)]
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

/// Tests: an emission of a table of `len` groups picked at random (`next` as [`xorshift`]
/// gives): all of them one time in `one_in`, the first n one time in `one_in`, else none.
#[cfg(test)]
pub(crate) fn random_emission(next: &mut impl FnMut(u64) -> u64, len: usize, one_in: u64) -> Option<datafusion::logical_expr::EmitTo> {
    match next(one_in) {
        0 => Some(datafusion::logical_expr::EmitTo::All),
        1 => Some(datafusion::logical_expr::EmitTo::First(next(len as u64 + 1) as usize)),
        _ => None,
    }
}
