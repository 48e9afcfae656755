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
fn sinks_that_cannot_be_created_and_unbuilt_connectors_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE STREAM s AS SELECT * FROM orders INTO lake WITH ('orders.type' = 'file_source', 'orders.path' = '{}', \
         'lake.type' = 'iceberg_sink', 'lake.table' = 'db.orders');",
        data("orders.jsonl")
    );
    let run = run_sql(tmp.path(), &sql);
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains("Failed to create sink 'lake' (iceberg_sink): missing required property 'lake.warehouse'"), "{}", run.stderr);
    // a built connector whose server cannot be reached: the source, the server and why
    let run = run_sql(tmp.path(), "SELECT * FROM prices WITH ('prices.type' = 'redis_source', 'prices.url' = 'redis://:pw-secret@127.0.0.1:1/0');");
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains("Failed to create source 'prices'") && run.stderr.contains("redis 127.0.0.1:1/0: cannot connect"), "{}", run.stderr);
    assert!(!run.stderr.contains("pw-secret"), "{}", run.stderr);
    let run = run_sql(tmp.path(), "SELECT * FROM orders WITH ('orders.type' = 'mongodb_source', 'orders.collection' = 'raw');");
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains("mongodb_source 'orders' is not available in this build"), "{}", run.stderr);
}

#[test]
fn kafka_settings_are_checked_before_connecting() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_sql(tmp.path(), "SELECT * FROM orders WITH ('orders.type' = 'kafka_source', 'orders.topic' = 'raw');");
    assert_eq!(run.status, 1);
    assert!(run.stderr.contains("Failed to create source 'orders': missing required property 'orders.bootstrap.servers'"), "{}", run.stderr);
    let run = run_sql(
        tmp.path(),
        "SELECT * FROM orders WITH ('orders.type' = 'kafka_source', 'orders.topic' = 'raw', 'orders.bootstrap.servers' = '127.0.0.1:1', \
         'orders.schema' = 'id BIGINT', 'orders.value.format' = 'xml');",
    );
    assert!(run.stderr.contains("invalid value for 'orders.value.format': unknown value format 'xml'"), "{}", run.stderr);
    let run = run_sql(
        tmp.path(),
        "SELECT * FROM orders INTO k WITH ('orders.type' = 'file_source', 'orders.path' = 'nowhere.jsonl', \
         'k.type' = 'kafka_sink', 'k.topic' = 't', 'k.bootstrap.servers' = '127.0.0.1:1', 'k.sasl.password' = 'hunter2', 'k.acks' = 'lots');",
    );
    assert!(!run.stderr.contains("hunter2"), "a secret reached the output: {}", run.stderr);
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
    let run = run_sql(
        tmp.path(),
        &format!("CREATE STREAM s AS {q} INTO o WITH ({}, 'o.type' = 'file_sink', 'o.path' = 'x.parquet', 'o.append' = 'true');", sources_for(q)),
    );
    assert!(run.stderr.contains("invalid value for 'o.append': a parquet file cannot be appended to"), "{}", run.stderr);
}

#[test]
fn limits_from_the_environment_are_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let q = "SELECT order_id FROM orders";
    std::fs::write(
        tmp.path().join("job.sql"),
        format!("CREATE STREAM s AS {q} INTO a, b WITH ({}, 'a.type' = 'blackhole', 'b.type' = 'blackhole');", sources_for(q)),
    )
    .unwrap();
    let args = ["run".to_string(), "job.sql".to_string()];
    let run = ferris_in_env(tmp.path(), &args, &[("FERRIS_MAX_SINKS_PER_JOB", "1")]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("job 's' writes 2 sinks, more than FERRIS_MAX_SINKS_PER_JOB=1"), "{}", run.stderr);
    let run = ferris_in_env(tmp.path(), &args, &[("FERRIS_MAX_JOBS", "0")]);
    assert!(run.stderr.contains("1 jobs exceed FERRIS_MAX_JOBS=0"), "{}", run.stderr);
    let run = ferris_in_env(tmp.path(), &args, &[("FERRIS_MAX_SINKS_PER_JOB", "2"), ("FERRIS_MAX_MEMORY_MB", "64")]);
    assert_ok(&run);
    assert!(run.stderr.contains("produced 240 rows, wrote [a 240 rows, b 240 rows]"), "{}", run.stderr);
}

#[test]
fn a_bad_value_from_yaml_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("base.yaml"), "format: jsonlines\nmax_files: many\n").unwrap();
    std::fs::write(tmp.path().join("sink.yaml"), "extends: base.yaml\npath: out.jsonl\n").unwrap();
    let q = "SELECT order_id FROM orders";
    let run = run_sql(tmp.path(), &format!("CREATE STREAM s AS {q} INTO a WITH ({}, 'a.type' = 'file_sink', 'a.config_file' = 'sink.yaml');", sources_for(q)));
    assert!(run.stderr.contains("invalid value for 'a.max_files': expected a non-negative integer, got 'many' (set in"), "{}", run.stderr);
    assert!(run.stderr.contains("base.yaml:2"), "{}", run.stderr);
}

#[test]
fn profiles_and_yaml_drive_a_real_run() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("ferris.yaml"),
        "active_profile: dev\nprofiles:\n  base: &b\n    out_dir: out-base\n  dev:\n    <<: *b\n  prod:\n    <<: *b\n    out_dir: out-${REGION}\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join("orders.yaml"), format!("path: \"{}\"\nformat: jsonlines\n", data("orders.jsonl"))).unwrap();
    std::fs::write(
        tmp.path().join("job.sql"),
        "CREATE STREAM s AS SELECT order_id FROM orders WHERE order_id <= 3 INTO o WITH ('orders.type' = 'file_source', 'orders.config_file' = 'orders.yaml', 'o.type' = 'file_sink', 'o.path' = '${out_dir}/rows.jsonl');",
    )
    .unwrap();
    let args = ["run".to_string(), "job.sql".to_string()];
    assert_ok(&ferris_in_env(tmp.path(), &args, &[]));
    assert_eq!(file_rows(&tmp.path().join("out-base/rows.jsonl")).len(), 3);
    assert_ok(&ferris_in_env(tmp.path(), &args, &[("FERRIS_PROFILE", "prod"), ("REGION", "eu")]));
    assert_eq!(file_rows(&tmp.path().join("out-eu/rows.jsonl")).len(), 3);
    let run = ferris_in_env(tmp.path(), &args, &[("FERRIS_PROFILE", "prod")]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("variable 'REGION' is not set") && run.stderr.contains("profiles.prod.out_dir"), "{}", run.stderr);
}

/// Zero where a duration must be longer than zero: refused with the key named, not a panic or a
/// busy loop; negative durations likewise.
#[test]
fn zero_and_negative_durations_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = crate::common::data("orders.jsonl");
    for (key, value, says) in [("poll_interval", "0", "must be longer than 0"), ("poll_interval", "-5s", "expected a duration")] {
        let run = run_sql(
            tmp.path(),
            &format!(
                "SELECT * FROM orders WITH ('orders.type' = 'file_source', 'orders.path' = '{file}', 'orders.watch' = 'true', 'orders.{key}' = '{value}');"
            ),
        );
        assert_ne!(run.status, 0);
        assert!(run.stderr.contains(&format!("'orders.{key}'")) && run.stderr.contains(says) && !run.stderr.contains("panicked"), "{}", run.stderr);
    }
    let run =
        run_sql(tmp.path(), &format!("SELECT * FROM orders WITH ('orders.type' = 'file_source', 'orders.path' = '{file}', 'checkpoint.interval' = '0');"));
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("checkpoint.interval") && !run.stderr.contains("panicked"), "{}", run.stderr);
}

/// A query that would wait for the end of a stream (ORDER BY, a cross join of two streams)
/// is refused with the operator's name and what to write instead, not DataFusion's dump of
/// the whole plan.
#[test]
fn a_query_that_needs_the_end_of_a_stream_says_which_operator_and_what_to_write() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("bids.jsonl"), "{\"auction\":1,\"price\":5}\n").unwrap();
    let with = "WITH ('bids.type' = 'file_source', 'bids.path' = 'bids.jsonl', 'bids.watch' = 'true', 'bids.schema' = 'auction BIGINT, price BIGINT')";
    for (select, operator, hint) in [
        ("SELECT * FROM bids ORDER BY price", "SortExec", "keep a top N per key"),
        ("SELECT a.auction FROM bids a CROSS JOIN bids b", "CrossJoinExec", "WITHIN INTERVAL '5' MINUTES"),
    ] {
        let run = run_sql(tmp.path(), &format!("{select} {with};"));
        assert_ne!(run.status, 0, "{select}");
        let said = format!("this query cannot run on a stream: {operator} would wait for the end of an unbounded input");
        assert!(run.stderr.contains(&said) && run.stderr.contains(hint), "{select}: {}", run.stderr);
        assert!(!run.stderr.contains("PlanProperties") && run.stderr.len() < 2000, "{select}: the plan dumped: {}", run.stderr);
    }
}
