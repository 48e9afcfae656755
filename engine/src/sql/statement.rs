//! The statements of our dialect, as parsed.

use std::time::Duration;

use datafusion::sql::sqlparser::ast::{Expr, Query};

/// What a statement creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// `CREATE STREAM name AS SELECT …`
    Stream(String),
    /// `CREATE TABLE name AS SELECT …`
    Table(String),
    /// A bare `SELECT …`.
    Select,
}

/// When results are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitMode {
    /// `EMIT CHANGES`: updated rows as input arrives.
    Changes,
    /// `EMIT FINAL`: each result once, when it is final.
    Final,
}

/// A `WITHIN INTERVAL` clause attached to a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Within {
    /// The largest difference between the joined rows' event times.
    pub interval: Duration,
    /// The clause as written (`INTERVAL '5' MINUTES`).
    pub text: String,
}

/// The window kinds of the `WINDOW …` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowClauseKind {
    /// `WINDOW TUMBLING(size)`
    Tumbling,
    /// `WINDOW SLIDING(size, advance)`
    Sliding,
    /// `WINDOW SESSION(gap)`
    Session,
}

/// The predecessor's clause form of a window, written after `GROUP BY`:
///
/// ```sql
/// SELECT user_id, COUNT(*) FROM clicks GROUP BY user_id WINDOW TUMBLING(INTERVAL '1' MINUTE)
/// ```
///
/// The arguments are the intervals, optionally preceded by the time column
/// (`WINDOW TUMBLING(ts, INTERVAL '1' MINUTE)`); without one the source's `event_time` is used.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowClause {
    /// Tumbling, sliding or session.
    pub kind: WindowClauseKind,
    /// The arguments as written.
    pub args: Vec<Expr>,
    /// The clause as written, for messages.
    pub text: String,
    /// 1-based line of the clause.
    pub line: u64,
}

/// `WATERMARK FOR [source.]column AS column - INTERVAL '5' SECOND`, written after the query:
/// names a source's event-time column and the out-of-orderness its watermark allows (the same
/// as `'source.event_time' = 'column'` and `'source.watermark.delay' = '5s'`).
///
/// ```sql
/// SELECT … FROM clicks GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE)
/// WATERMARK FOR clicks.ts AS clicks.ts - INTERVAL '5' SECOND
/// WITH ('clicks.type' = 'file_source', …)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkClause {
    /// The source, when written (`clicks` of `clicks.ts`); otherwise every source.
    pub relation: Option<String>,
    /// The event-time column.
    pub column: String,
    /// The allowed delay.
    pub delay: Duration,
    /// The clause as written.
    pub text: String,
}

/// One statement of a SQL file.
#[derive(Debug, Clone, PartialEq)]
pub struct FerrisStatement {
    /// Stream, table or bare select.
    pub kind: StatementKind,
    /// The query, with `WITHIN` markers removed.
    pub query: Box<Query>,
    /// `EMIT CHANGES` / `EMIT FINAL`, if written.
    pub emit: Option<EmitMode>,
    /// The `INTO` list, in order.
    pub into: Vec<String>,
    /// The `WITH` pairs in the order written.
    pub with: Vec<(String, String)>,
    /// `WITHIN INTERVAL` clauses of the query's joins.
    pub within: Vec<Within>,
    /// `WATERMARK FOR …` clauses.
    pub watermarks: Vec<WatermarkClause>,
    /// The `WINDOW TUMBLING|SLIDING|SESSION(…)` clause, if written.
    pub window: Option<WindowClause>,
    /// Output columns marked `PRIMARY KEY` in the select list (the predecessor's form,
    /// `SELECT category PRIMARY KEY, COUNT(*) …`): the key an upserting sink uses.
    pub primary_key: Vec<String>,
    /// 1-based line where the statement starts.
    pub line: u64,
}

impl FerrisStatement {
    /// The statement's own name, if it creates something.
    pub fn name(&self) -> Option<&str> {
        match &self.kind {
            StatementKind::Stream(n) | StatementKind::Table(n) => Some(n),
            StatementKind::Select => None,
        }
    }
}
