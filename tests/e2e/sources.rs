//! Source behaviour end to end: formats and options, malformed records, large files read in
//! parallel splits, and tailing a file.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

#[test]
fn malformed_lines_are_counted_named_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bad.jsonl");
    std::fs::write(&input, "{\"id\": 1, \"v\": 10}\n{\"id\": 2, \"v\": oops}\n{\"id\": 3, \"v\": 30}\n{\"id\": \"four\", \"v\": 40}\n{\"id\": 5, \"v\": 50}\n")
        .unwrap();
    let sql = format!(
        "CREATE STREAM clean AS SELECT id, v FROM raw INTO out WITH ('raw.type' = 'file_source', 'raw.path' = '{}', 'raw.schema' = 'id BIGINT, v BIGINT', 'out.type' = 'file_sink', 'out.path' = '{}/out.jsonl');",
        input.display(),
        tmp.path().display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    let rows = file_rows(&tmp.path().join("out.jsonl"));
    assert_eq!(rows, vec![r#"{"id":1,"v":10}"#, r#"{"id":3,"v":30}"#, r#"{"id":5,"v":50}"#]);
    assert!(run.stderr.contains("bad.jsonl:2: malformed record skipped"), "{}", run.stderr);
    assert!(run.stderr.contains("bad.jsonl:4: malformed record skipped"), "{}", run.stderr);
    assert!(run.stderr.contains("raw 3 rows (2 malformed)"), "{}", run.stderr);

    // FailBatch stops the job at the first bad record and says where it is.
    let sql = sql.replace("'out.type'", "'failure_strategy' = 'FailBatch', 'out.type'");
    let run = run_sql(tmp.path(), &sql);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains("bad.jsonl:2: malformed record"), "{}", run.stderr);
}

/// `file://` URLs name local files, for the source and the sink, percent-encoding decoded:
/// DataFusion's answer over the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_urls_name_local_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("with space");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(data("orders.jsonl"), dir.join("orders.jsonl")).unwrap();
    let url = |p: &std::path::Path| format!("file://{}", p.display().to_string().replace(' ', "%20"));
    let query = "SELECT order_id, amount FROM orders WHERE amount > 100";
    let sql = format!(
        "CREATE STREAM s AS {query} INTO out WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'out.type' = 'file_sink', 'out.path' = '{}');",
        url(&dir.join("orders.jsonl")),
        url(&dir.join("big.jsonl"))
    );
    assert_ok(&run_sql(tmp.path(), &sql));
    let want = batch_rows(&batch_context(tmp.path()).await, query).await;
    assert!(!want.is_empty());
    assert_same_rows("file:// in and out", &file_rows(&dir.join("big.jsonl")), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_options_schema_gzip_and_globs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "Hamburg;12.5\nOslo;-3.0\n'Las; Vegas';40.1\n").unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"Oslo;-1.5\nHamburg;7.5\n").unwrap();
    std::fs::write(dir.join("b.txt.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(dir.join("ignored.csv"), "not;matched\n").unwrap();
    let sql = format!(
        "CREATE TABLE stats AS SELECT station, MIN(t) AS lo, MAX(t) AS hi, COUNT(*) AS n FROM m GROUP BY station EMIT FINAL INTO out
         WITH ('m.type' = 'file_source', 'm.path' = '{}/*.txt*', 'm.format' = 'csv', 'm.has_headers' = 'false',
               'm.delimiter' = ';', 'm.quote' = '''', 'm.schema' = 'station VARCHAR, t DOUBLE',
               'out.type' = 'file_sink', 'out.path' = '{}/stats.jsonl');",
        dir.display(),
        tmp.path().display()
    );
    assert_ok(&run_sql(tmp.path(), &sql));
    assert_eq!(
        file_rows(&tmp.path().join("stats.jsonl")),
        vec![
            r#"{"hi":-1.5,"lo":-3,"n":2,"station":"Oslo"}"#,
            r#"{"hi":12.5,"lo":7.5,"n":2,"station":"Hamburg"}"#,
            r#"{"hi":40.1,"lo":40.1,"n":1,"station":"Las; Vegas"}"#,
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_read_in_parallel_splits_without_losing_a_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "id,station,t").unwrap();
    let n = 1_000_000u64; // about 46 MB: above the split threshold
    let mut expected_sum: i128 = 0;
    for i in 0..n {
        writeln!(f, "{i},station-with-a-long-name-{:03},{}.{}", i % 400, (i % 97) as i64 - 40, i % 10).unwrap();
        expected_sum += i as i128;
    }
    drop(f);
    assert!(std::fs::metadata(&path).unwrap().len() > 32 << 20);
    let sql = format!(
        "CREATE TABLE t AS SELECT COUNT(*) AS n, SUM(id) AS s, COUNT(DISTINCT id) AS d FROM big EMIT FINAL INTO out
         WITH ('big.type' = 'file_source', 'big.path' = '{}', 'parallelism' = '4', 'out.type' = 'file_sink', 'out.path' = '{}/out.jsonl');",
        path.display(),
        tmp.path().display()
    );
    assert_ok(&run_sql(tmp.path(), &sql));
    assert_eq!(file_rows(&tmp.path().join("out.jsonl")), vec![format!(r#"{{"d":{n},"n":{n},"s":{expected_sum}}}"#)]);
}

#[test]
fn watch_tails_appended_lines_until_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("events.jsonl");
    std::fs::write(&input, "{\"id\": 1, \"kind\": \"click\"}\n").unwrap();
    let out = tmp.path().join("out.jsonl");
    let sql = format!(
        "CREATE STREAM tail AS SELECT id, kind, CURRENT_TIMESTAMP AS seen_at FROM events WHERE kind = 'click' INTO out WITH (
           'events.type' = 'file_source', 'events.path' = '{}', 'events.watch' = 'true', 'events.schema' = 'id BIGINT, kind VARCHAR',
           'batch.timeout' = '50ms', 'out.type' = 'file_sink', 'out.path' = '{}');",
        input.display(),
        out.display()
    );
    std::fs::write(tmp.path().join("job.sql"), sql).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(["run", "job.sql"])
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
        f.write_all(b"{\"id\": 2, \"kind\": \"view\"}\n{\"id\": 3, \"kind\": \"click\"}\n{\"id\": 4, \"ki").unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        f.write_all(b"nd\": \"click\"}\n").unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "a watching job keeps running");
    let stderr = stop_with_sigint(&mut child);
    assert!(stderr.contains("stopped"), "{stderr}");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![1, 3, 4]);
    assert!(rows.iter().all(|r| r["kind"] == "click"));
    // CURRENT_TIMESTAMP is taken per batch: the appended rows are stamped later than the first.
    let seen = |i: usize| rows[i]["seen_at"].as_str().unwrap().to_string();
    assert!(seen(0) < seen(1), "{} !< {}", seen(0), seen(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_arrays_and_pretty_printed_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let q = "SELECT product_id, product_name, unit_price FROM products WHERE active";
    let run = run_sql(tmp.path(), &format!("{q} WITH ({});", sources_for(q)));
    assert_ok(&run);
    let want = batch_rows(&batch_context(tmp.path()).await, q).await;
    assert_same_rows("products", &canonical_lines(&run.stdout), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_globs_read_only_projected_columns_and_merge_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    // Two Parquet files of one glob with different columns, written by our own sink.
    let q1 = "SELECT order_id, amount, status FROM orders WHERE order_id <= 5";
    let q2 = "SELECT order_id, status, coupon FROM orders WHERE order_id > 235";
    for (i, q) in [q1, q2].iter().enumerate() {
        let sql = format!("CREATE STREAM w{i} AS {q} INTO p{i} WITH ({}, 'p{i}.type' = 'file_sink', 'p{i}.path' = '{d}/pq/part{i}.parquet');", sources_for(q));
        assert_ok(&run_sql(tmp.path(), &sql));
    }
    let run = run_sql(
        tmp.path(),
        &format!(
            "SELECT order_id, amount, coupon FROM parts WHERE status <> 'nothing' WITH ('parts.type' = 'file_source', 'parts.path' = '{d}/pq/*.parquet');"
        ),
    );
    assert_ok(&run);
    let want = batch_rows(
        &batch_context(tmp.path()).await,
        "SELECT order_id, CASE WHEN order_id <= 5 THEN amount END AS amount, CASE WHEN order_id > 235 THEN coupon END AS coupon FROM orders WHERE order_id <= 5 OR order_id > 235",
    )
    .await;
    assert_same_rows("parquet glob", &canonical_lines(&run.stdout), &want);
}

/// A tailed file that is empty when the job starts: the job waits for its first lines to infer
/// the columns from (and reads them all); one that stays empty is refused naming the file and
/// the `schema` key, as is an empty file read once — never a bare "No field named amount".
#[test]
fn an_empty_file_waits_for_lines_or_asks_for_a_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = dir.join("late.jsonl");
    std::fs::write(&input, "").unwrap();
    let sql = format!(
        "CREATE STREAM big AS SELECT id, amount FROM pay WHERE amount > 10 INTO out WITH ('pay.type' = 'file_source', 'pay.path' = '{}', \
         'pay.watch' = 'true', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        input.display()
    );
    std::fs::write(dir.join("job.sql"), &sql).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(["run", "job.sql", "--no-progress"])
        .current_dir(dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
    f.write_all((0..20).map(|i| format!("{{\"id\":{i},\"amount\":{}}}\n", i * 2)).collect::<String>().as_bytes()).unwrap();
    let out = dir.join("out.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) < 14 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    crate::common::stop_with_sigint(&mut child);
    let want: Vec<String> = (6..20).map(|i| format!("{{\"id\":{i},\"amount\":{}}}", i * 2)).collect();
    assert_same_rows("rows of a file empty at start", &file_rows(&out), &canonical_lines(&want.join("\n")));

    // stays empty: refused after schema.inference.timeout, naming the file and the key
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let run = run_sql(
        dir,
        &format!(
            "CREATE STREAM s AS SELECT amount FROM pay INTO out WITH ('pay.type' = 'file_source', 'pay.path' = '{}', 'pay.watch' = 'true', \
             'pay.schema.inference.timeout' = '300ms', 'out.type' = 'stdout');",
            empty.display()
        ),
    );
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("'pay.schema'") && run.stderr.contains("empty.jsonl") && !run.stderr.contains("No field named"), "{}", run.stderr);
    // read once and empty: the same question at once
    let run = run_sql(
        dir,
        &format!(
            "CREATE STREAM s AS SELECT amount FROM pay INTO out WITH ('pay.type' = 'file_source', 'pay.path' = '{}', 'out.type' = 'stdout');",
            empty.display()
        ),
    );
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("'pay.schema'") && run.stderr.contains("is empty"), "{}", run.stderr);
}

/// The predecessor's `file_source_mmap` type runs as `file_source`: the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_predecessors_mmap_file_source_is_the_file_source() {
    let tmp = tempfile::tempdir().unwrap();
    let sql = |t: &str, out: &str| {
        format!(
            "CREATE STREAM s_{out} AS SELECT order_id, amount FROM orders WHERE amount > 500 INTO {out} WITH ('orders.type' = '{t}', 'orders.path' = '{}', \
             '{out}.type' = 'file_sink', '{out}.path' = '{out}.jsonl');",
            data("orders.jsonl")
        )
    };
    assert_ok(&run_sql(tmp.path(), &(sql("file_source_mmap", "a") + &sql("file_source", "b"))));
    let want = batch_rows(&batch_context(tmp.path()).await, "SELECT order_id, amount FROM orders WHERE amount > 500").await;
    assert_same_rows("file_source_mmap", &file_rows(&tmp.path().join("a.jsonl")), &want);
    assert_same_rows("file_source", &file_rows(&tmp.path().join("b.jsonl")), &want);
}

/// Many malformed lines (cut short, and a value of the wrong type), across batch boundaries:
/// every good line arrives, each bad one is counted, and the first are named by their line.
#[test]
fn scattered_malformed_lines_cost_only_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("mixed.jsonl");
    let mut text = String::new();
    let mut want = Vec::new();
    let mut bad_lines = Vec::new();
    for i in 0..2000u64 {
        let line = format!("{{\"id\": {i}, \"v\": {}}}", i * 7);
        if i % 97 == 5 {
            text.push_str(&line[..line.len() / 2]);
            bad_lines.push(i + 1);
        } else if i % 389 == 11 {
            text.push_str(&format!("{{\"id\": {i}, \"v\": \"seven\"}}"));
            bad_lines.push(i + 1);
        } else {
            text.push_str(&line);
            want.push(format!("{{\"id\":{i},\"v\":{}}}", i * 7));
        }
        text.push('\n');
    }
    std::fs::write(&input, text).unwrap();
    let sql = format!(
        "CREATE STREAM clean AS SELECT id, v FROM raw INTO out WITH ('raw.type' = 'file_source', 'raw.path' = '{}', 'raw.schema' = 'id BIGINT, v BIGINT', \
         'raw.batch.size' = '100', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        input.display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    assert_same_rows("good lines", &file_rows(&tmp.path().join("out.jsonl")), &canonical_lines(&want.join("\n")));
    assert!(run.stderr.contains(&format!("raw {} rows ({} malformed)", want.len(), bad_lines.len())), "{}", run.stderr);
    for l in &bad_lines[..3] {
        assert!(run.stderr.contains(&format!("mixed.jsonl:{l}: malformed record skipped")), "line {l}: {}", run.stderr);
    }
    let sql = sql.replace("'out.type'", "'failure_strategy' = 'FailBatch', 'out.type'");
    let run = run_sql(tmp.path(), &sql);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("mixed.jsonl:{}: malformed record", bad_lines[0])), "{}", run.stderr);
}

/// A file large enough to be read in parallel splits, with malformed lines in several of them:
/// each is named by its line in the whole file (counted once per split, not per chunk), and the
/// count and the sum of the good rows are exact.
#[test]
fn malformed_lines_in_parallel_splits_are_named_by_their_file_line() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let n = 1_200_000u64;
    let bad: [u64; 6] = [100, 250_000, 480_001, 700_123, 950_000, 1_199_999];
    let (mut good, mut sum) = (0u64, 0u64);
    for i in 1..=n {
        if bad.contains(&i) {
            writeln!(f, "{{\"id\": {i}, \"station\": \"cut").unwrap();
        } else {
            writeln!(f, "{{\"id\": {i}, \"station\": \"station-{:03}\"}}", i % 400).unwrap();
            good += 1;
            sum += i;
        }
    }
    drop(f);
    assert!(std::fs::metadata(&path).unwrap().len() > 32 << 20);
    let sql = format!(
        "CREATE TABLE t AS SELECT COUNT(*) AS n, SUM(id) AS s FROM big EMIT FINAL INTO out WITH ('big.type' = 'file_source', 'big.path' = '{}', \
         'big.schema' = 'id BIGINT, station VARCHAR', 'parallelism' = '4', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        path.display()
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ok(&run);
    assert_eq!(file_rows(&tmp.path().join("out.jsonl")), vec![format!(r#"{{"n":{good},"s":{sum}}}"#)]);
    for l in bad {
        assert!(run.stderr.contains(&format!("big.jsonl:{l}: malformed record skipped")), "line {l}: {}", run.stderr);
    }
}
