//! `JOIN … ON … WITHIN INTERVAL 'n' UNIT` on bounded inputs: once both sides name their
//! event-time column (`'orders.event_time' = 'ts'`), the clause becomes the join predicate
//! `b.ts BETWEEN a.ts - n AND a.ts + n`, between the first relation of the FROM clause and each
//! relation joined to it. A Kafka source that names no event-time column uses the message
//! timestamp (`_timestamp`); any other source without one is an error that says which key to set
//! — unless it is a table a stream looks rows up in (a bounded source, in a job that reads a
//! stream, with no event-time column named): the clause bounds streams, and a lookup join with
//! a table has no time band (the guide's financial example joins a Kafka stream with database,
//! S3 and HTTP tables `WITHIN INTERVAL '5' MINUTES`).
//!
//! ```sql
//! SELECT * FROM clicks c JOIN purchases p ON c.user_id = p.user_id WITHIN INTERVAL '30' MINUTES
//! WITH ('clicks.event_time' = 'ts', 'purchases.event_time' = 'ts', …)
//! -- ON c.user_id = p.user_id AND p.ts BETWEEN c.ts - INTERVAL '1800000 milliseconds'
//! --                                        AND c.ts + INTERVAL '1800000 milliseconds'
//! ```

use std::collections::HashMap;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, JoinConstraint, JoinOperator, Query, SetExpr, TableFactor};
use datafusion::sql::sqlparser::parser::Parser;

use crate::job::analysis::normalized_name;
use crate::job::JobSpec;
use crate::sql::dialect::FerrisDialect;
use crate::sql::interval::format_duration;

/// The relation name and the qualifier the query uses for it (its alias, else its name).
fn relation_of(factor: &TableFactor) -> Option<(String, String)> {
    match factor {
        TableFactor::Table { name, alias, .. } => {
            let qualifier = alias.as_ref().map(|a| a.name.to_string()).unwrap_or_else(|| name.to_string());
            Some((normalized_name(name), qualifier))
        }
        _ => None,
    }
}

fn constraint_mut(op: &mut JoinOperator) -> Option<&mut JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c) => Some(c),
        _ => None,
    }
}

/// The SQL for `col` of `qualifier` as an event time comparable with an interval of `ms`.
fn time_expr(qualifier: &str, column: &str, dt: &DataType, format: Option<&str>) -> Result<(String, Option<i64>), String> {
    let col = format!("{qualifier}.\"{column}\"");
    Ok(match (dt, format.map(str::to_ascii_lowercase).as_deref()) {
        (DataType::Timestamp(..) | DataType::Date32 | DataType::Date64, _) => (col, None),
        (DataType::Int64 | DataType::Int32 | DataType::UInt64 | DataType::UInt32, Some("epoch_seconds")) => (col, Some(1000)),
        (DataType::Int64 | DataType::Int32 | DataType::UInt64 | DataType::UInt32, _) => (col, Some(1)),
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, _) => (format!("CAST({col} AS TIMESTAMP)"), None),
        (other, _) => return Err(format!("event-time column '{column}' has type {other}, which is not a time")),
    })
}

/// Applies the job's WITHIN clauses to `query`; returns notes for explain, or an error.
/// `tables` are the bounded sources of a job that reads a stream (lookup tables).
pub fn apply_within(
    query: &mut Query,
    spec: &JobSpec,
    schemas: &HashMap<String, SchemaRef>,
    tables: &std::collections::HashSet<String>,
) -> Result<Vec<String>, String> {
    let Some(within) = spec.statement.within.last() else { return Ok(Vec::new()) };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err("WITHIN INTERVAL needs a SELECT with joins".into());
    };
    let Some(from) = select.from.first_mut() else { return Err("WITHIN INTERVAL needs a FROM clause".into()) };
    if from.joins.is_empty() {
        return Err("WITHIN INTERVAL applies to a JOIN, and the query has none".into());
    }
    let Some((left_name, left_q)) = relation_of(&from.relation) else {
        return Ok(vec!["WITHIN INTERVAL is carried but not applied: the first relation is not a named source".into()]);
    };
    // the source's event-time column; a Kafka message's own timestamp when none is named
    let event_time = |name: &str| -> Option<(String, Option<String>)> {
        let rel = spec.source(name)?;
        if let Some(col) = rel.properties.get("event_time") {
            return Some((col.to_string(), rel.properties.get("event_time.format").map(str::to_string)));
        }
        let has_timestamp = schemas.get(name).is_some_and(|s| s.field_with_name("_timestamp").is_ok());
        (rel.connector.kind == ferris_connectors::ConnectorKind::Kafka && has_timestamp).then(|| ("_timestamp".to_string(), None))
    };
    let missing = |name: &str| -> String {
        let columns = schemas.get(name).map(|s| s.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default();
        format!("'{name}.event_time' (one of its columns: {columns})")
    };
    let mut notes = Vec::new();
    let ms = within.interval.as_millis() as i64;
    for join in from.joins.iter_mut() {
        let Some((right_name, right_q)) = relation_of(&join.relation) else { continue };
        let (l, r) = (event_time(&left_name), event_time(&right_name));
        // a relation that is not a source (a CTE, a view): no key can name its time
        if spec.source(&left_name).is_none() || spec.source(&right_name).is_none() {
            notes.push(format!(
                "WITHIN {} on the join of '{left_name}' and '{right_name}' is carried but not applied: only sources have event-time columns",
                within.text
            ));
            continue;
        }
        // a lookup table without a time: the pair is a lookup join, with no band
        let table = [(&l, &left_name), (&r, &right_name)].into_iter().find(|(t, n)| t.is_none() && tables.contains(n.as_str())).map(|(_, n)| n.clone());
        if let Some(table) = table {
            notes.push(format!(
                "WITHIN {} does not bound the join of '{left_name}' and '{right_name}': '{table}' is a table the stream looks rows up in (read whole, no event-time column named)",
                within.text
            ));
            continue;
        }
        let (Some((lcol, lfmt)), Some((rcol, rfmt))) = (l.clone(), r.clone()) else {
            let unset: Vec<String> = [(l.is_none(), &left_name), (r.is_none(), &right_name)].into_iter().filter(|(m, _)| *m).map(|(_, n)| missing(n)).collect();
            return Err(format!(
                "WITHIN {} on the join of '{left_name}' and '{right_name}' bounds their event times, and no event-time column is named: set {}",
                within.text,
                unset.join(" and ")
            ));
        };
        let ltype = schemas.get(&left_name).and_then(|s| s.field_with_name(&lcol).ok().map(|f| f.data_type().clone()));
        let rtype = schemas.get(&right_name).and_then(|s| s.field_with_name(&rcol).ok().map(|f| f.data_type().clone()));
        let (Some(ltype), Some(rtype)) = (ltype, rtype) else {
            return Err(format!("event-time column '{left_name}.{lcol}' or '{right_name}.{rcol}' does not exist"));
        };
        let (l, lscale) = time_expr(&left_q, &lcol, &ltype, lfmt.as_deref())?;
        let (r, rscale) = time_expr(&right_q, &rcol, &rtype, rfmt.as_deref())?;
        let predicate = match (lscale, rscale) {
            (Some(ls), Some(rs)) => format!("{r} * {rs} BETWEEN {l} * {ls} - {ms} AND {l} * {ls} + {ms}"),
            (None, None) => format!("{r} BETWEEN {l} - INTERVAL '{ms} milliseconds' AND {l} + INTERVAL '{ms} milliseconds'"),
            _ => {
                let why = |name: &str, col: &str| {
                    if col == "_timestamp" && spec.source(name).is_some_and(|s| !s.properties.contains("event_time")) {
                        format!(" ('{name}._timestamp' is the Kafka message timestamp, used because '{name}.event_time' is not set)")
                    } else {
                        String::new()
                    }
                };
                return Err(format!(
                    "event-time columns '{left_name}.{lcol}' ({ltype}) and '{right_name}.{rcol}' ({rtype}) are not comparable{}{}",
                    why(&left_name, &lcol),
                    why(&right_name, &rcol)
                ));
            }
        };
        let dialect = FerrisDialect::default();
        let expr =
            Parser::new(&dialect).try_with_sql(&predicate).and_then(|mut p| p.parse_expr()).map_err(|e| format!("building the WITHIN predicate: {e}"))?;
        let Some(JoinConstraint::On(on)) = constraint_mut(&mut join.join_operator) else {
            return Err(format!("WITHIN INTERVAL needs an ON condition on the join of '{right_name}'"));
        };
        let old = std::mem::replace(on, Expr::Value(datafusion::sql::sqlparser::ast::Value::Null.into()));
        *on = Expr::BinaryOp { left: Box::new(Expr::Nested(Box::new(old))), op: BinaryOperator::And, right: Box::new(expr) };
        notes.push(format!("WITHIN {}: {right_name} joins {left_name} within ±{}", within.text, format_duration(within.interval)));
    }
    Ok(notes)
}
