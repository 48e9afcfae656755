//! Rewrites of the query text for windows, before DataFusion plans it:
//!
//! - the predecessor's clause form becomes a window function in `GROUP BY`:
//!   `GROUP BY user_id WINDOW TUMBLING(INTERVAL '1' MINUTE)` →
//!   `GROUP BY TUMBLE(<event time>, INTERVAL '1' MINUTE), user_id`, where the event time is the
//!   clause's first argument if it names a column, else the source's `event_time`;
//!   `SLIDING(size, advance)` becomes `HOP(t, advance, size)`;
//! - `window_start` and `window_end`, in a SELECT whose `GROUP BY` holds a window function,
//!   become fields of that window: `get_field(TUMBLE(ts, …), 'window_start') AS window_start`.
//!
//! ```sql
//! SELECT window_start, window_end, user_id, COUNT(*) FROM clicks
//! GROUP BY user_id WINDOW SLIDING(INTERVAL '1' MINUTE, INTERVAL '10' SECOND)
//! ```

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr, GroupByExpr, Query, Select, SelectItem, SetExpr, TableFactor, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::parser::Parser;

use super::functions::WindowFunction;
use crate::job::analysis::normalized_name;
use crate::job::JobSpec;
use crate::sql::dialect::FerrisDialect;
use crate::sql::statement::{WindowClause, WindowClauseKind};

fn parse_expr(sql: &str) -> Result<Expr, String> {
    let dialect = FerrisDialect::default();
    Parser::new(&dialect).try_with_sql(sql).and_then(|mut p| p.parse_expr()).map_err(|e| format!("building `{sql}`: {e}"))
}

/// The event-time column of the query's sources, qualified as the query names it.
fn source_event_time(select: &Select, spec: &JobSpec) -> Option<String> {
    let from = select.from.first()?;
    let factors = std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation));
    for factor in factors {
        if let TableFactor::Table { name, alias, .. } = factor {
            let rel = normalized_name(name);
            if let Some(col) = spec.source(&rel).and_then(|s| s.properties.get("event_time")) {
                let qualifier = alias.as_ref().map(|a| a.name.to_string()).unwrap_or_else(|| name.to_string());
                return Some(format!("{qualifier}.\"{col}\""));
            }
        }
    }
    None
}

/// Turns the statement's `WINDOW …` clause into a window function in the GROUP BY.
pub fn apply_window_clause(query: &mut Query, clause: &WindowClause, spec: &JobSpec) -> Result<String, String> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(format!("{} needs a SELECT with GROUP BY", clause.text));
    };
    let intervals = match clause.kind {
        WindowClauseKind::Sliding => 2,
        _ => 1,
    };
    let args: Vec<String> = clause.args.iter().map(|a| a.to_string()).collect();
    let (time, rest) = if args.len() == intervals + 1 {
        (args[0].clone(), &args[1..])
    } else if args.len() == intervals {
        let Some(t) = source_event_time(select, spec) else {
            return Err(format!(
                "{} needs an event-time column: name it first in the clause ({}) or set '<source>.event_time'",
                clause.text,
                match clause.kind {
                    WindowClauseKind::Tumbling => "WINDOW TUMBLING(ts, INTERVAL '1' MINUTE)",
                    WindowClauseKind::Sliding => "WINDOW SLIDING(ts, INTERVAL '1' MINUTE, INTERVAL '10' SECOND)",
                    WindowClauseKind::Session => "WINDOW SESSION(ts, INTERVAL '30' SECOND)",
                }
            ));
        };
        (t, &args[..])
    } else {
        return Err(format!("{} takes {} interval(s), optionally after the time column", clause.text, intervals));
    };
    let call = match clause.kind {
        WindowClauseKind::Tumbling => format!("TUMBLE({time}, {})", rest[0]),
        WindowClauseKind::Sliding => format!("HOP({time}, {}, {})", rest[1], rest[0]),
        WindowClauseKind::Session => format!("SESSION({time}, {})", rest[0]),
    };
    let expr = parse_expr(&call)?;
    match &mut select.group_by {
        GroupByExpr::Expressions(exprs, _) => exprs.insert(0, expr),
        GroupByExpr::All(_) => return Err(format!("{} cannot be combined with GROUP BY ALL", clause.text)),
    }
    Ok(format!("{} → GROUP BY {call}", clause.text))
}

/// The window function call of a SELECT's GROUP BY, if any.
fn window_call(select: &Select) -> Option<Expr> {
    let GroupByExpr::Expressions(exprs, _) = &select.group_by else { return None };
    exprs.iter().find(|e| matches!(e, Expr::Function(f) if WindowFunction::from_name(&f.name.to_string()).is_some())).cloned()
}

fn bound_name(expr: &Expr) -> Option<&'static str> {
    match expr {
        Expr::Identifier(id) if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("window_start") => Some("window_start"),
        Expr::Identifier(id) if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("window_end") => Some("window_end"),
        _ => None,
    }
}

fn replace_bounds<V: VisitMut>(node: &mut V, window: &Expr) -> Result<(), String> {
    let mut error = None;
    let _ = visit_expressions_mut(node, |e: &mut Expr| {
        if let Some(name) = bound_name(e) {
            match parse_expr(&format!("get_field({window}, '{name}')")) {
                Ok(new) => *e = new,
                Err(m) => error = Some(m),
            }
        }
        ControlFlow::<()>::Continue(())
    });
    error.map_or(Ok(()), Err)
}

fn rewrite_select(select: &mut Select) -> Result<Option<Expr>, String> {
    let Some(window) = window_call(select) else { return Ok(None) };
    for item in select.projection.iter_mut() {
        if let SelectItem::UnnamedExpr(e) = item {
            if let Some(name) = bound_name(e) {
                let expr = std::mem::replace(e, Expr::Value(datafusion::sql::sqlparser::ast::Value::Null.into()));
                *item = SelectItem::ExprWithAlias { expr, alias: datafusion::sql::sqlparser::ast::Ident::new(name) };
            }
        }
        replace_bounds(item, &window)?;
    }
    if let Some(h) = select.having.as_mut() {
        replace_bounds(h, &window)?;
    }
    if let Some(q) = select.qualify.as_mut() {
        replace_bounds(q, &window)?;
    }
    Ok(Some(window))
}

struct BoundsRewriter {
    error: Option<String>,
}

impl BoundsRewriter {
    fn set_expr(&mut self, body: &mut SetExpr) -> Option<Expr> {
        match body {
            SetExpr::Select(select) => match rewrite_select(select) {
                Ok(w) => w,
                Err(e) => {
                    self.error = Some(e);
                    None
                }
            },
            SetExpr::SetOperation { left, right, .. } => {
                let l = self.set_expr(left);
                let r = self.set_expr(right);
                l.or(r)
            }
            _ => None,
        }
    }
}

impl VisitorMut for BoundsRewriter {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let Some(window) = self.set_expr(query.body.as_mut()) {
            if let Some(order) = query.order_by.as_mut() {
                if let Err(e) = replace_bounds(order, &window) {
                    self.error = Some(e);
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Makes `window_start` / `window_end` refer to the window of every SELECT that groups by one.
pub fn rewrite_window_bounds(query: &mut Query) -> Result<(), String> {
    let mut r = BoundsRewriter { error: None };
    let _ = query.visit(&mut r);
    r.error.map_or(Ok(()), Err)
}
