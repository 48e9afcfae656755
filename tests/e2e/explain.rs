//! `ferris-sql explain`: the analysed jobs as text and JSON, secrets masked, unreachable
//! sources reported where the plan would be.

use crate::common::*;

fn explain_json(dir: &std::path::Path, sql: &str) -> (Run, serde_json::Value) {
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    let run = ferris(dir, &["explain", "job.sql", "--json"]);
    let v = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    (run, v)
}

#[test]
fn json_shape_and_masked_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE STREAM enriched AS SELECT o.order_id, c.name FROM orders o JOIN customer_db c ON o.customer_id = c.id
         INTO kafka_out, archive
         WITH ('orders.type' = 'file_source', 'orders.path' = '{}',
               'customer_db.type' = 'database_source', 'customer_db.connection.password' = 'hunter2', 'customer_db.table' = 'customers',
               'kafka_out.type' = 'kafka_sink', 'kafka_out.sasl.password' = 's3cr3t', 'kafka_out.topic' = 'out',
               'archive.type' = 'file_sink', 'archive.path' = 'out.jsonl',
               'failure_strategy' = 'LogAndContinue', 'auth_token' = 'tok');",
        data("orders.jsonl")
    );
    let (run, v) = explain_json(tmp.path(), &sql);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(!run.stdout.contains("hunter2") && !run.stdout.contains("s3cr3t") && !run.stdout.contains("\"tok\""), "secrets leak: {}", run.stdout);
    let job = &v["jobs"][0];
    assert_eq!(job["name"], "enriched");
    assert_eq!(job["sources"][0]["name"], "orders");
    assert_eq!(job["sources"][0]["type"], "file_source");
    assert_eq!(job["sources"][1]["type"], "database_source");
    assert_eq!(job["sources"][1]["properties"]["connection.password"], "****");
    assert_eq!(job["sinks"][0]["properties"]["sasl.password"], "****");
    assert_eq!(job["sinks"][1]["properties"]["path"], "out.jsonl");
    assert_eq!(job["options"]["failure_strategy"], "LogAndContinue");
    assert_eq!(job["options"]["auth_token"], "****");
    // The database source has no connection.url: reported where the plan would be.
    assert!(job["plan"].is_null());
    assert!(job["plan_error"].as_str().unwrap().contains("missing required property 'customer_db.connection.url'"), "{}", job["plan_error"]);
}

/// `explain` says when the processes of a job hand their windows over by reading them again:
/// `TUMBLE` windows over one Kafka source in simple mode, not `HOP`, not under transactions.
#[test]
fn explain_says_how_windows_move_between_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let job = |group_by: &str, extra: &str| {
        format!(
            "CREATE STREAM w AS SELECT k, COUNT(*) AS n FROM orders GROUP BY {group_by}, k INTO out \
             WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '127.0.0.1:9', 'orders.topic' = 't', \
                   'orders.schema' = 'k VARCHAR, ts BIGINT', 'orders.event_time' = 'ts', 'orders.consumers' = '2', \
                   'out.type' = 'file_sink', 'out.path' = 'out.jsonl'{extra});"
        )
    };
    let (run, v) = explain_json(tmp.path(), &job("TUMBLE(ts, INTERVAL '1' SECOND)", ""));
    assert_eq!(run.status, 0, "{}", run.stderr);
    let across = &v["jobs"][0]["processing"]["across_processes"];
    assert!(across.as_str().is_some_and(|a| a.contains("read again")), "{}", run.stdout);
    let (_, v) = explain_json(tmp.path(), &job("HOP(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND)", ""));
    let across = |v: &serde_json::Value| v["jobs"][0]["processing"]["across_processes"].as_str().unwrap_or_default().to_string();
    assert!(across(&v).contains("read again"), "{v}");
    // sessions keep their state where they are: one process per group
    let (_, v) = explain_json(tmp.path(), &job("SESSION(ts, INTERVAL '1' SECOND)", ""));
    assert!(across(&v).contains("one process of this job per consumer group"), "{v}");
    let (_, v) = explain_json(tmp.path(), &job("TUMBLE(ts, INTERVAL '1' SECOND)", ", 'use_transactions' = 'true'"));
    assert!(across(&v).contains("one process of this job per consumer group"), "{v}");
}

/// Under `use_transactions`, `explain` says whose transactions carry a Kafka source's group
/// offsets: the job's one sink when it is a Kafka sink on the same brokers (named in another
/// order here) as the same user; otherwise they are committed once every sink has committed.
#[test]
fn explain_says_which_transactions_carry_the_kafka_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let job = |sink_keys: &str, more_sinks: &str| {
        format!(
            "CREATE STREAM c AS SELECT k FROM orders INTO out{more_sinks} \
             WITH ('orders.type' = 'kafka_source', 'orders.bootstrap.servers' = '127.0.0.1:9,127.0.0.2:9', 'orders.topic' = 't', \
                   'orders.schema' = 'k VARCHAR', 'use_transactions' = 'true', \
                   'out.type' = 'kafka_sink', {sink_keys}, 'out.topic' = 'o', 'copy.type' = 'file_sink', 'copy.path' = 'c.jsonl');"
        )
    };
    let source = |v: &serde_json::Value| v["jobs"][0]["processing"]["sources"]["orders"].as_str().unwrap_or_default().to_string();
    let (run, v) = explain_json(tmp.path(), &job("'out.bootstrap.servers' = '127.0.0.2:9, 127.0.0.1:9'", ""));
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(source(&v).contains("the group's offsets are committed inside the transactions of sink 'out'"), "{v}");
    let after = "committed once every sink has committed the checkpoint";
    for (keys, more) in [
        ("'out.bootstrap.servers' = '127.0.0.3:9'", ""),
        ("'out.bootstrap.servers' = '127.0.0.1:9,127.0.0.2:9', 'out.security.protocol' = 'SASL_PLAINTEXT', 'out.sasl.username' = 'u'", ""),
        ("'out.bootstrap.servers' = '127.0.0.1:9,127.0.0.2:9'", ", copy"),
    ] {
        let (_, v) = explain_json(tmp.path(), &job(keys, more));
        assert!(source(&v).contains(after), "{keys}{more}: {v}");
    }
}

#[test]
fn text_output_shows_the_physical_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let q = "SELECT o.order_id FROM orders o LEFT JOIN customers c ON o.customer_id = c.customer_id WHERE o.amount > 100";
    std::fs::write(tmp.path().join("job.sql"), format!("{q} WITH ({});", sources_for(q))).unwrap();
    let run = ferris(tmp.path(), &["explain", "job.sql"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("Job 'select_1' (select at line 1)"), "{}", run.stdout);
    assert!(run.stdout.contains("HashJoinExec"), "{}", run.stdout);
    // the sources' sizes put the smaller side (customers.csv) on the build side: the LEFT join
    // runs as a RIGHT join with the sides swapped
    assert!(run.stdout.contains("join_type=Right"), "{}", run.stdout);
    assert!(run.stdout.contains("SizedScanExec: rows=?, bytes≈195"), "{}", run.stdout);
    assert!(run.stdout.contains("orders: file jsonlines"), "{}", run.stdout);
}

#[test]
fn missing_files_do_not_stop_the_analysis() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, v) = explain_json(
        tmp.path(),
        "SELECT * FROM a INTO b WITH ('a.type' = 'file_source', 'a.path' = '/nonexistent/a.csv', 'b.type' = 'file_sink', 'b.path' = 'b.csv');",
    );
    assert_eq!(run.status, 0);
    assert_eq!(v["jobs"][0]["sinks"][0]["name"], "b");
    assert!(v["jobs"][0]["plan_error"].as_str().unwrap().contains("/nonexistent/a.csv"));
}
