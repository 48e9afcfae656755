//! No panic on any input: the SQL front end (our dialect's rewrites of `WINDOW TUMBLING(…)`,
//! `PRIMARY KEY` markers, `ROWS WINDOW BUFFER`, `WITHIN`, `#` comments, then sqlparser) and
//! job analysis get token soup built from the words they look for, and arbitrary text; each
//! must answer with statements or an error, never a panic.
//!
//! `PROPTEST_CASES=20000 cargo test --workspace --test no_panic_on_any_input` for a longer run.

use ferris_engine::job::analysis::analyze_sql;
use ferris_engine::sql::parse_sql;
use proptest::prelude::*;

const WORDS: &[&str] = &[
    "SELECT",
    "a",
    "b.c",
    "PRIMARY",
    "KEY",
    "ROWS",
    "WINDOW",
    "BUFFER",
    "0",
    "3",
    "-1",
    "99999999999999999999",
    "(",
    ")",
    ",",
    "FROM",
    "t",
    "OVER",
    "PARTITION",
    "ORDER",
    "BY",
    "WITH",
    "'t.type'",
    "'file_source'",
    "=",
    "CREATE",
    "STREAM",
    "TABLE",
    "AS",
    "INTO",
    ";",
    "WITHIN",
    "INTERVAL",
    "'5'",
    "MINUTES",
    "TUMBLING",
    "SLIDING",
    "SESSION",
    "EMIT",
    "CHANGES",
    "FINAL",
    "#",
    "--",
    "/*",
    "*/",
    "\n",
    "'",
    "\"",
    "JOIN",
    "ON",
    "GROUP",
    "HAVING",
    "COUNT(*)",
    "*",
    "WATERMARK",
    "FOR",
    "-",
    "BETWEEN",
    "PRECEDING",
    "AND",
    "CURRENT",
    "ROW",
    "é",
    "\u{0}",
    "$",
    "${X}",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..40).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000), ..ProptestConfig::default() })]

    #[test]
    fn token_soup_parses_or_errs(sql in soup()) {
        let _ = parse_sql(&sql);
        let _ = analyze_sql(&sql);
    }

    #[test]
    fn arbitrary_text_parses_or_errs(sql in "\\PC{0,200}") {
        let _ = parse_sql(&sql);
    }
}

/// Inputs at the edges of the rewrites, always replayed.
#[test]
fn known_hard_inputs() {
    for sql in [
        "SELECT a PRIMARY KEY",
        "PRIMARY KEY",
        "SELECT PRIMARY KEY FROM t",
        "ROWS WINDOW BUFFER 99999999999999999999 ROWS",
        "SELECT AVG(a) OVER (ROWS WINDOW BUFFER 1 ROWS) FROM t",
        "WINDOW TUMBLING(",
        "SELECT * FROM a JOIN b ON a.x = b.x WITHIN INTERVAL",
        "CREATE STREAM s AS SELECT a PRIMARY KEY, b PRIMARY KEY FROM t INTO x WITH ('x.type' = 'redis_sink')",
    ] {
        let _ = parse_sql(sql);
        let _ = analyze_sql(sql);
    }
}
