//! Reading one table over several connections (`connection.pool.max_size`), as `pg_dump -j`
//! does: the table's pages are cut into ranges, each read by its own `COPY` of the query with
//! the table restricted to a `ctid` range (a TID range scan, PostgreSQL 14 and later), all in
//! one snapshot exported by the first connection, so that the parts together are exactly the
//! rows one read would give, even while the table is written.
//!
//! Only a query that is the table's rows one by one can be cut so: `SELECT <columns or
//! expressions> FROM <one table> [WHERE …]` — no join, grouping, aggregate, `DISTINCT`, window,
//! `ORDER BY` or `LIMIT`. The text is checked here, and PostgreSQL's plan (`EXPLAIN`) must be a
//! scan of that table; any other query is read over one connection.
//!
//! Each part is a transaction of its own in the shared snapshot: the rows are one consistent
//! read, but `now()` is each part's start and an uncorrelated subquery calling a volatile
//! function is evaluated once per part. While the parts are joined into the one batch a table
//! is handed over as, it is held twice.
//!
//! ```sql
//! WITH ('customers.type' = 'database_source', 'customers.connection.pool.max_size' = '4',
//!       'customers.query' = 'SELECT id, name, segment FROM customer_profiles WHERE active = true')
//! ```

use datafusion::sql::sqlparser::ast::{GroupByExpr, Query, SetExpr, Statement, TableFactor};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Pages (8 KiB each by default) a part reads at least: smaller tables are not cut.
pub const MIN_PAGES_PER_PART: u64 = 128;

/// A query that can be read in parts: its text, with the table replaced per part.
#[derive(Debug, Clone)]
pub struct Split {
    query: Query,
    /// The table as the query names it (`reference_data.instruments`, quotes kept).
    pub relation: String,
    /// The name the query's columns are qualified with: its alias, or the table's last name.
    alias: String,
}

impl Split {
    /// The query of the pages `from..to` (an end left open reads on to the table's end, pages
    /// added since the size was read included).
    pub fn part(&self, from: Option<u64>, to: Option<u64>) -> Option<String> {
        let mut conds = Vec::new();
        if let Some(f) = from {
            conds.push(format!("ctid >= '({f},0)'::tid"));
        }
        if let Some(t) = to {
            conds.push(format!("ctid < '({t},0)'::tid"));
        }
        let filter = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
        let derived = format!("SELECT * FROM (SELECT * FROM {}{filter}) AS {}", self.relation, self.alias);
        let relation = match parse_query(&derived)?.body.as_ref() {
            SetExpr::Select(s) => s.from.first()?.relation.clone(),
            _ => return None,
        };
        let mut q = self.query.clone();
        let SetExpr::Select(select) = q.body.as_mut() else { return None };
        select.from.first_mut()?.relation = relation;
        Some(q.to_string())
    }
}

fn parse_query(sql: &str) -> Option<Query> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    match statements.pop()? {
        Statement::Query(q) => Some(*q),
        _ => None,
    }
}

/// The split of `query` when its text is one table's rows, filtered and projected; `None` (read
/// over one connection) otherwise, or when the text is not understood.
pub fn plan(query: &str) -> Option<Split> {
    let q = parse_query(query)?;
    if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() || !q.locks.is_empty() || q.for_clause.is_some() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_ref() else { return None };
    let plain_grouping = matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    if select.distinct.is_some() || select.top.is_some() || select.into.is_some() || !plain_grouping || select.having.is_some() || select.qualify.is_some() {
        return None;
    }
    if select.from.len() != 1 || !select.from[0].joins.is_empty() || !select.lateral_views.is_empty() || !select.named_window.is_empty() {
        return None;
    }
    let TableFactor::Table { name, alias, args: None, sample: None, .. } = &select.from[0].relation else { return None };
    let alias = match alias {
        Some(a) if a.columns.is_empty() => a.name.to_string(),
        Some(_) => return None,
        None => name.0.last()?.to_string(),
    };
    Some(Split { relation: name.to_string(), alias, query: q })
}

/// True when PostgreSQL's plan (`EXPLAIN (FORMAT JSON)`) reads one table row by row: a scan at
/// the top, with nothing under it but its index scans and subqueries of its conditions.
pub fn plan_is_a_scan(explain_json: &str) -> bool {
    const SCANS: [&str; 6] = ["Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Tid Scan", "Tid Range Scan"];
    let Ok(v) = serde_json::from_str::<serde_json::Value>(explain_json) else { return false };
    let Some(top) = v.get(0).and_then(|p| p.get("Plan")) else { return false };
    let node = |p: &serde_json::Value| p.get("Node Type").and_then(|t| t.as_str()).unwrap_or("").to_string();
    if !SCANS.contains(&node(top).as_str()) {
        return false;
    }
    top.get("Plans").and_then(|p| p.as_array()).is_none_or(|children| {
        children.iter().all(|c| {
            let relation = c.get("Parent Relationship").and_then(|r| r.as_str()).unwrap_or("");
            matches!(relation, "SubPlan" | "InitPlan") || node(c).starts_with("Bitmap")
        })
    })
}

/// The page ranges of `parts` parts of a table of `pages` pages: the first open at its start,
/// the last at its end.
pub fn page_ranges(pages: u64, parts: usize) -> Vec<(Option<u64>, Option<u64>)> {
    let parts = parts.max(1) as u64;
    (0..parts)
        .map(|i| {
            let from = (i > 0).then(|| pages * i / parts);
            let to = (i + 1 < parts).then(|| pages * (i + 1) / parts);
            (from, to)
        })
        .collect()
}

/// How many parts a table of `pages` pages is read in with at most `pool` connections.
pub fn parts_for(pages: u64, pool: usize) -> usize {
    let by_size = usize::try_from(pages / MIN_PAGES_PER_PART).unwrap_or(usize::MAX);
    pool.min(by_size).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_or_a_filtered_projection_is_cut_other_queries_not() {
        let s = plan("SELECT id, name, email, segment FROM customer_profiles WHERE active = true").unwrap();
        assert_eq!(s.relation, "customer_profiles");
        assert_eq!(
            s.part(Some(10), Some(20)).unwrap(),
            "SELECT id, name, email, segment FROM (SELECT * FROM customer_profiles WHERE ctid >= '(10,0)'::tid AND ctid < '(20,0)'::tid) AS customer_profiles WHERE active = true"
        );
        assert_eq!(
            s.part(None, None).unwrap(),
            "SELECT id, name, email, segment FROM (SELECT * FROM customer_profiles) AS customer_profiles WHERE active = true"
        );
        let s = plan("SELECT * FROM reference_data.instruments i WHERE i.active").unwrap();
        assert_eq!(s.part(Some(5), None).unwrap(), "SELECT * FROM (SELECT * FROM reference_data.instruments WHERE ctid >= '(5,0)'::tid) AS i WHERE i.active");
        let s = plan(r#"SELECT "Id" FROM "Odd Table""#).unwrap();
        assert_eq!(s.part(None, Some(3)).unwrap(), r#"SELECT "Id" FROM (SELECT * FROM "Odd Table" WHERE ctid < '(3,0)'::tid) AS "Odd Table""#);
        for q in [
            "SELECT count(*) FROM t GROUP BY a",
            "SELECT DISTINCT a FROM t",
            "SELECT a FROM t ORDER BY a",
            "SELECT a FROM t LIMIT 5",
            "SELECT a FROM t JOIN u ON t.id = u.id",
            "SELECT a FROM t, u",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SELECT a FROM t UNION SELECT a FROM u",
            "SELECT a FROM generate_series(1, 10) a",
            "SELECT a FROM (SELECT a FROM t) s",
            "SELECT a FROM t FOR UPDATE",
            "SELECT a FROM t AS x (b)",
            "not sql at all",
            "SELECT 1; SELECT 2",
        ] {
            assert!(plan(q).is_none(), "{q}");
        }
    }

    #[test]
    fn only_a_scan_of_the_table_is_read_in_parts() {
        let scan = r#"[{"Plan": {"Node Type": "Seq Scan", "Relation Name": "t"}}]"#;
        assert!(plan_is_a_scan(scan));
        let bitmap = r#"[{"Plan": {"Node Type": "Bitmap Heap Scan", "Plans": [{"Node Type": "Bitmap Index Scan", "Parent Relationship": "Outer"}]}}]"#;
        assert!(plan_is_a_scan(bitmap));
        let sub = r#"[{"Plan": {"Node Type": "Seq Scan", "Plans": [{"Node Type": "Seq Scan", "Parent Relationship": "SubPlan"}]}}]"#;
        assert!(plan_is_a_scan(sub));
        // an aggregate the text did not show (a user's aggregate function), a set-returning function
        assert!(!plan_is_a_scan(r#"[{"Plan": {"Node Type": "Aggregate", "Plans": [{"Node Type": "Seq Scan"}]}}]"#));
        assert!(!plan_is_a_scan(r#"[{"Plan": {"Node Type": "ProjectSet"}}]"#));
        assert!(!plan_is_a_scan("nonsense"));
    }

    #[test]
    fn pages_are_cut_evenly_and_the_ends_stay_open() {
        assert_eq!(page_ranges(100, 1), [(None, None)]);
        assert_eq!(page_ranges(100, 3), [(None, Some(33)), (Some(33), Some(66)), (Some(66), None)]);
        assert_eq!(parts_for(10, 8), 1);
        assert_eq!(parts_for(MIN_PAGES_PER_PART * 3, 8), 3);
        assert_eq!(parts_for(MIN_PAGES_PER_PART * 100, 4), 4);
        assert_eq!(parts_for(MIN_PAGES_PER_PART * 100, 0), 1);
    }
}
