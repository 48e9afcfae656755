//! What users see when something is wrong: the place, the name, the guide's words.

use crate::common::*;

#[test]
fn syntax_errors_carry_line_column_and_token() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_sql(tmp.path(), "-- a comment\nCREATE STREAM s AS\nSELECT a, FROM orders WHERE\n  b = = 3\nWITH ('orders.type' = 'file_source');");
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("syntax error at line 4, column 7 near '='"), "{}", run.stderr);
    let run = run_sql(tmp.path(), "CREATE STREM s AS SELECT 1");
    assert!(run.stderr.contains("syntax error at line 1, column 8 near 'STREM'"), "{}", run.stderr);
    assert!(run.stderr.contains("STREAM or TABLE"), "{}", run.stderr);
}

#[test]
fn analysis_errors_use_the_guides_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_sql(tmp.path(), "SELECT * FROM orders_source WITH ('orders_source.bootstrap.servers' = 'localhost:9092', 'orders_source.topic' = 'orders');");
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("Source type must be explicitly specified for 'orders_source'. Use: 'orders_source.type' with values like 'kafka_source', 'file_source', 's3_source', 'database_source'"), "{}", run.stderr);
    let run = run_sql(tmp.path(), "CREATE STREAM my_job AS SELECT 100 AS constant_value;");
    assert!(run.stderr.contains("No supported datasource found in query analysis for job 'my_job'"), "{}", run.stderr);
}

#[test]
fn known_but_unbuilt_connectors_say_not_supported_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_sql(tmp.path(), "SELECT * FROM orders WITH ('orders.type' = 'kafka_source', 'orders.topic' = 'raw');");
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains("Failed to create source 'orders': kafka_source 'orders' is not supported yet"), "{}", run.stderr);
}

#[test]
fn missing_files_and_unknown_keys_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_sql(tmp.path(), "SELECT * FROM orders WITH ('orders.type' = 'file_source', 'orders.path' = 'nowhere/orders.jsonl');");
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains("Failed to create source 'orders': nowhere/orders.jsonl: no such file or directory"), "{}", run.stderr);
    let q = "SELECT order_id FROM orders WHERE order_id = 1";
    let run = run_sql(tmp.path(), &format!("{q} WITH ({}, 'orders.pth' = 'x', 'orders.has_header' = 'true');", sources_for(q)));
    assert_ok(&run);
    assert!(run.stderr.contains("unknown key 'orders.pth': file_source 'orders' does not use it"), "{}", run.stderr);
    assert!(run.stderr.contains("unknown key 'orders.has_header'"), "{}", run.stderr);
    assert_eq!(canonical_lines(&run.stdout), vec![r#"{"order_id":1}"#]);
}

#[test]
fn bad_property_values_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let q = "SELECT order_id FROM orders";
    let run = run_sql(tmp.path(), &format!("{q} WITH ({}, 'orders.batch.size' = 'lots');", sources_for(q)));
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains("invalid value for 'orders.batch.size': expected a non-negative integer, got 'lots'"), "{}", run.stderr);
    let run = run_sql(tmp.path(), &format!("CREATE STREAM s AS {q} INTO o WITH ({}, 'o.type' = 'file_sink', 'o.path' = 'x.parquet', 'o.append' = 'true');", sources_for(q)));
    assert!(run.stderr.contains("invalid value for 'o.append': a parquet file cannot be appended to"), "{}", run.stderr);
}
