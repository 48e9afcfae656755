//! PostgreSQL on a real server (Debian's package, started by `bash tests/services/postgres.sh
//! start`; URL in `PG_URL`, default postgresql://ferris:ferris-test-pw@127.0.0.1:55432/ferris),
//! read back with psycopg (tests/python/pg.py): types mapped exactly, the guide's enrichment
//! shape with the table updated mid-run, an incremental source resumed after a restart, insert
//! and upsert sinks against DataFusion's batch answer, exactly once through SIGKILLs, a database
//! restart mid-run, and the errors a refused connection or a wrong password gives.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::checkpoints::{assert_exactly_once_rows, chaos_seed, crash_and_finish, interrupt, kill_test_input, settle, sinks_created, start, WINDOW_SQL};
use crate::common::{assert_ok, assert_same_rows, batch_context, batch_rows, canonical_lines, file_rows, run_sql};

pub(crate) fn url() -> String {
    std::env::var("PG_URL").unwrap_or_else(|_| "postgresql://ferris:ferris-test-pw@127.0.0.1:55432/ferris".to_string())
}

/// A table name no other test uses.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

fn pg(args: &[&str]) -> String {
    let url = url();
    let mut all = vec![url.as_str()];
    all.extend_from_slice(args);
    crate::common::python_client("pg.py", &all, "is PostgreSQL up? 'bash tests/services/postgres.sh start'")
}

pub(crate) fn exec(sql: &str) {
    pg(&["exec", sql]);
}

pub(crate) fn rows(sql: &str) -> Vec<String> {
    canonical_lines(&pg(&["rows", sql]))
}

/// `c` of a query's one row `{"c": n}` (a `count(*) AS c`).
fn count_of(sql: &str) -> usize {
    let got = rows(sql);
    got.first().and_then(|r| r.strip_prefix("{\"c\":")?.strip_suffix('}')?.parse().ok()).unwrap_or_else(|| panic!("a count from {sql}, not {got:?}"))
}

/// The WITH entries that reach the test server, as the guide writes them (a JDBC URL and the
/// user and password keys).
fn conn(name: &str) -> String {
    let (user, password, hostpath) = parts();
    format!("'{name}.connection.url' = 'jdbc:postgresql://{hostpath}', '{name}.connection.username' = '{user}', '{name}.connection.password' = '{password}'")
}

/// The test URL's user, password and `host:port/db`.
fn parts() -> (String, String, String) {
    let u = url();
    let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r).to_string();
    let (auth, hostpath) = rest.split_once('@').unwrap_or(("", &rest));
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    (user.to_string(), password.to_string(), hostpath.to_string())
}

/// Writes `sql` to `dir/job.sql`, starts it, and waits until its sinks are created.
fn launch(dir: &Path, sql: &str) -> std::process::Child {
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    let before = sinks_created(dir);
    let child = start(dir, "job.sql", &[]);
    settle(dir, before);
    child
}

/// A window's start as epoch milliseconds, as the batch answer computes it.
const EPOCH_MS: &str = "(extract(epoch from window_start) * 1000)::bigint";

fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// Every mapped type, NULLs, a query that wins over the table: the rows as the file sink writes
/// them, written out by hand.
#[test]
fn types_map_exactly_and_the_query_wins_over_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let t = unique("typed");
    exec(&format!(
        "CREATE TABLE {t} (id int2, big int8, f4 real, f8 float8, amount numeric(10,2), name varchar(20), code char(3), ok bool, \
         at timestamptz, local timestamp, day date, tags text[], nums int4[], doc jsonb, raw bytea, u uuid, hidden text);
         INSERT INTO {t} VALUES
         (1, 9000000000, 1.5, 2.25, 1234.50, 'Ann', 'abc', true, '2024-01-02 03:04:05.5+00', '2024-01-02 03:04:05', '1990-05-06', '{{a,NULL,c}}', '{{1,2}}', '{{\"x\": 1}}', '\\x0102', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'no'),
         (2, NULL, NULL, NULL, -0.05, NULL, NULL, false, NULL, NULL, NULL, '{{}}', NULL, NULL, NULL, NULL, 'no'),
         (3, -1, -0.5, 1e100, 99999999.99, 'Cy', 'x', NULL, '1999-12-31 23:59:59.123456+00', '2000-01-01 00:00:00', '2000-01-01', NULL, '{{NULL}}', '[]', '', NULL, 'yes')"
    ));
    let sql = format!(
        "CREATE STREAM s AS SELECT id, big, f4, f8, amount, name, code, ok, at, local, day, tags, nums, doc, u FROM typed INTO out WITH (\
         'typed.type' = 'database_source', {}, 'typed.table' = '{t}', 'typed.query' = 'SELECT * FROM {t} WHERE hidden = ''no''', \
         'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        conn("typed")
    );
    assert_ok(&run_sql(tmp.path(), &sql));
    let want = canonical_lines(
        r#"{"id":1,"big":9000000000,"f4":1.5,"f8":2.25,"amount":1234.5,"name":"Ann","code":"abc","ok":true,"at":"2024-01-02T03:04:05.500Z","local":"2024-01-02T03:04:05","day":"1990-05-06","tags":["a",null,"c"],"nums":[1,2],"doc":"{\"x\": 1}","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}
{"id":2,"big":null,"f4":null,"f8":null,"amount":-0.05,"name":null,"code":null,"ok":false,"at":null,"local":null,"day":null,"tags":[],"nums":null,"doc":null,"u":null}"#,
    );
    assert_same_rows("typed rows", &file_rows(&tmp.path().join("out.jsonl")), &want);
    // the type the query cannot be read with is named, with the column
    exec(&format!("CREATE TABLE {t}_geo (id int, p point); INSERT INTO {t}_geo VALUES (1, '(1,2)')"));
    let sql = format!(
        "CREATE STREAM s AS SELECT * FROM geo INTO out WITH ('geo.type' = 'postgres', {}, 'geo.table' = '{t}_geo', 'out.type' = 'stdout');",
        conn("geo")
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("column 'p'") && run.stderr.contains("'point'") && run.stderr.contains("::text"), "{}", run.stderr);
}

/// `connection.pool.max_size`: a table of 60,000 rows (about 8 MB) read in 4 parts over 4
/// connections in one snapshot while another session keeps updating it (new row versions land
/// on other pages): each read holds every id exactly once, as one read in one snapshot does.
/// The guide's form, a query filtering the table, is read in parts too and equals psycopg's
/// answer; an aggregate is read over one connection (the log says why) and is one exact row.
#[test]
fn a_table_is_read_in_parts_over_a_pool_of_connections_in_one_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let t = unique("pooled");
    exec(&format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, v bigint NOT NULL, pad text NOT NULL, active boolean NOT NULL) WITH (fillfactor = 100);
         INSERT INTO {t} SELECT g, 0, repeat('x', 80), g % 3 <> 0 FROM generate_series(1, 60000) g; ANALYZE {t}"
    ));
    let job = |source: &str, out: &str| {
        format!(
            "CREATE STREAM s AS SELECT * FROM p INTO out WITH ('p.type' = 'database_source', {}, {source}, \
             'p.connection.pool.max_size' = '4', 'out.type' = 'file_sink', 'out.path' = '{out}');",
            conn("p")
        )
    };
    let script = crate::common::repo().join("tests/python/pg.py");
    let churn = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(&script)
        .arg(url())
        .args(["churn", "60", &format!("UPDATE {t} SET v = v + 1 WHERE id % 499 = (random() * 498)::int")])
        .spawn()
        .expect("python3");
    let churn = crate::common::Guard(churn);
    for i in 0..4 {
        let out = format!("all{i}.jsonl");
        let run = run_sql(tmp.path(), &job(&format!("'p.table' = '{t}'"), &out));
        assert_ok(&run);
        assert!(run.stderr.contains("in 4 parts over 4 connections, one snapshot"), "{}", run.stderr);
        let mut ids: Vec<i64> =
            file_rows(&tmp.path().join(&out)).iter().map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["id"].as_i64().unwrap()).collect();
        ids.sort_unstable();
        assert_eq!(ids.len(), 60_000, "read {i}: every row once");
        assert!(ids.iter().copied().eq(1..=60_000), "read {i}: ids 1..=60000 each once");
    }
    drop(churn);
    // the guide's form: a query that filters the table, with its columns
    let query = format!("'p.table' = '{t}', 'p.query' = 'SELECT id, v, active FROM {t} WHERE active = true'");
    let run = run_sql(tmp.path(), &job(&query, "active.jsonl"));
    assert_ok(&run);
    assert!(run.stderr.contains("in 4 parts over 4 connections"), "{}", run.stderr);
    assert_same_rows("the filtered table", &file_rows(&tmp.path().join("active.jsonl")), &rows(&format!("SELECT id, v, active FROM {t} WHERE active")));
    // an aggregate is not cut into parts
    let run = run_sql(tmp.path(), &job(&format!("'p.query' = 'SELECT count(*) AS n, sum(v) AS total FROM {t}'"), "count.jsonl"));
    assert_ok(&run);
    assert!(run.stderr.contains("read over one connection") && !run.stderr.contains(" parts over "), "{}", run.stderr);
    assert_same_rows("the count", &file_rows(&tmp.path().join("count.jsonl")), &rows(&format!("SELECT count(*) AS n, sum(v) AS total FROM {t}")));
}

/// `connection.pool.max_size` on the sink: batches of 20,000 rows cut into 4 parts written at
/// once over 4 connections. Inserted, the table holds every row once; upserted (a changelog
/// whose keys come again in both batches, and DELETE rows last), each key holds its last row
/// and deleted keys are gone — the rows of a key go over one connection in their order.
#[test]
fn a_sink_writes_a_batch_in_parts_over_a_pool_of_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let t = unique("pooled_sink");
    let mut lines = String::new();
    for i in 0..40_000 {
        lines += &format!("{{\"k\": {}, \"v\": {i}, \"_op\": \"INSERT\"}}\n", i % 5000);
    }
    for k in 0..100 {
        lines += &format!("{{\"k\": {k}, \"v\": -1, \"_op\": \"DELETE\"}}\n");
    }
    std::fs::write(tmp.path().join("changes.jsonl"), &lines).unwrap();
    let job = |select: &str, table: &str, mode: &str| {
        format!(
            "CREATE STREAM s AS {select} FROM changes INTO db WITH ('changes.type' = 'file_source', 'changes.path' = 'changes.jsonl', \
             'changes.batch.size' = '20000', 'db.type' = 'database_sink', {}, 'db.table' = '{table}', {mode}, 'db.connection.pool.max_size' = '4');",
            conn("db")
        )
    };
    let run = run_sql(tmp.path(), &job("SELECT k, v", &format!("{t}_ins"), "'db.mode' = 'insert'"));
    assert_ok(&run);
    assert!(run.stderr.contains("written in 4 parts over 4 connections"), "{}", run.stderr);
    let want: Vec<String> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::json!({"k": v["k"], "v": v["v"]}).to_string()
        })
        .collect();
    assert_same_rows("inserted in parts", &rows(&format!("SELECT k, v FROM {t}_ins")), &canonical_lines(&want.join("\n")));
    let run = run_sql(tmp.path(), &job("SELECT k, v, _op", &format!("{t}_up"), "'db.mode' = 'upsert', 'db.primary_key' = 'k'"));
    assert_ok(&run);
    assert!(run.stderr.contains("written in 4 parts over 4 connections"), "{}", run.stderr);
    let want: Vec<String> = (100..5000).map(|k| serde_json::json!({"k": k, "v": 35_000 + k}).to_string()).collect();
    assert_same_rows("upserted in parts", &rows(&format!("SELECT k, v FROM {t}_up")), &canonical_lines(&want.join("\n")));

    // all or nothing, as over one connection: the first batch has a row the table refuses, so
    // none of its parts stays (LogAndContinue drops it whole); the others are written
    exec(&format!("CREATE TABLE {t}_chk (k bigint, v bigint CHECK (v <> 12345))"));
    let run = run_sql(tmp.path(), &job("SELECT k, v", &format!("{t}_chk"), "'db.mode' = 'insert'"));
    assert_ok(&run);
    assert!(run.stderr.contains("violates check constraint"), "{}", run.stderr);
    let kept: Vec<String> = lines
        .lines()
        .skip(20_000)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::json!({"k": v["k"], "v": v["v"]}).to_string()
        })
        .collect();
    assert_same_rows("a refused batch left out whole", &rows(&format!("SELECT k, v FROM {t}_chk")), &canonical_lines(&kept.join("\n")));

    // parts waiting on each other's rows (a second unique key, values shared across parts): no
    // hang — the lock wait times out, the batch goes over one connection, and the database's
    // refusal is the error
    exec(&format!("CREATE TABLE {t}_uq (k bigint PRIMARY KEY, v bigint, u bigint UNIQUE)"));
    let shared: String = (0..20_000).map(|i| format!("{{\"k\": {i}, \"v\": {i}, \"u\": {}}}\n", i % 10_000)).collect();
    std::fs::write(tmp.path().join("changes.jsonl"), shared).unwrap();
    let started = Instant::now();
    let run = run_sql(tmp.path(), &job("SELECT k, v, u", &format!("{t}_uq"), "'db.mode' = 'upsert', 'db.primary_key' = 'k'"));
    assert_ok(&run);
    assert!(run.stderr.contains("duplicate key value violates unique constraint"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(40), "took {:?}", started.elapsed());
    assert_eq!(rows(&format!("SELECT count(*) AS n FROM {t}_uq")), ["{\"n\":0}"]);
}

/// The guide's enrichment shape: orders from a tailed file joined with a customers table whose
/// tiers change while the job runs (`refresh_interval`): orders before the update carry the old
/// tier, orders after it the new one.
#[test]
fn a_lookup_table_updated_mid_run_is_seen_by_later_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = unique("customers");
    exec(&format!(
        "CREATE TABLE {t} (id int primary key, name text, tier text, active bool);
         INSERT INTO {t} SELECT i, 'c' || i, 'bronze', i <> 5 FROM generate_series(1, 10) i"
    ));
    let orders = dir.join("orders.jsonl");
    let order = |i: usize| format!("{{\"order_id\":{i},\"customer_id\":{},\"amount\":{}}}\n", i % 10 + 1, i * 3);
    std::fs::write(&orders, (0..100).map(order).collect::<String>()).unwrap();
    let sql = format!(
        "CREATE STREAM enriched AS SELECT o.order_id, c.name, c.tier, o.amount FROM orders o JOIN customers c ON o.customer_id = c.id INTO out WITH (\
         'orders.type' = 'file_source', 'orders.path' = '{}', 'orders.watch' = 'true', 'orders.batch.size' = '10', \
         'customers.type' = 'database_source', {}, 'customers.table' = '{t}', \
         'customers.query' = 'SELECT id, name, tier FROM {t} WHERE active = true', 'customers.refresh_interval' = '300', \
         'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        orders.display(),
        conn("customers")
    );
    let mut child = launch(dir, &sql);
    let out = dir.join("out.jsonl");
    // customer 5 is inactive: 10 of the 100 orders find no row
    wait_for("the first 90 rows", 30, || lines_in(&out) >= 90);
    exec(&format!("UPDATE {t} SET tier = 'gold' WHERE id <= 3; UPDATE {t} SET active = true WHERE id = 5"));
    // three refreshes later the join holds the new table
    std::thread::sleep(Duration::from_millis(1500));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&orders).unwrap();
        f.write_all((100..200).map(order).collect::<String>().as_bytes()).unwrap();
    }
    wait_for("all 190 rows", 30, || lines_in(&out) >= 190);
    std::thread::sleep(Duration::from_millis(500));
    interrupt(&mut child, dir);
    let mut want = Vec::new();
    for i in 0..200usize {
        let c = i % 10 + 1;
        if i < 100 && c == 5 {
            continue;
        }
        let tier = if i >= 100 && c <= 3 { "gold" } else { "bronze" };
        want.push(format!("{{\"order_id\":{i},\"name\":\"c{c}\",\"tier\":\"{tier}\",\"amount\":{}}}", i * 3));
    }
    assert_same_rows("enriched orders", &file_rows(&out), &canonical_lines(&want.join("\n")));
}

/// `incremental.column`: rows inserted while the job runs arrive; stopped and started again, the
/// job goes on after the last id it read (kept in its checkpoint): every row once.
#[test]
fn an_incremental_source_polls_and_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = unique("events");
    exec(&format!("CREATE TABLE {t} (id bigserial primary key, v text); INSERT INTO {t} (v) SELECT 'a' || i FROM generate_series(1, 100) i"));
    let sql = format!(
        "CREATE STREAM copy AS SELECT id, v FROM events INTO out WITH (\
         'events.type' = 'database_source', {}, 'events.table' = '{t}', 'events.incremental.column' = 'id', 'events.poll_interval' = '100ms', \
         'checkpoint.interval' = '200ms', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        conn("events")
    );
    let out = dir.join("out.jsonl");
    let mut child = launch(dir, &sql);
    wait_for("100 rows", 30, || lines_in(&out) >= 100);
    exec(&format!("INSERT INTO {t} (v) SELECT 'b' || i FROM generate_series(1, 50) i"));
    wait_for("150 rows", 30, || lines_in(&out) >= 150);
    interrupt(&mut child, dir);
    exec(&format!("INSERT INTO {t} (v) SELECT 'c' || i FROM generate_series(1, 30) i"));
    let mut child = launch(dir, &sql);
    wait_for("180 rows", 30, || lines_in(&out) >= 180);
    std::thread::sleep(Duration::from_millis(500));
    interrupt(&mut child, dir);
    let lines: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    assert_exactly_once_rows("incremental rows over two runs", &lines, &rows(&format!("SELECT id, v FROM {t}")));
}

/// Insert and upsert sinks against DataFusion's batch answer on the same file: a windowed
/// aggregate inserted, an EMIT CHANGES table upserted (its last value per key), both read back
/// with psycopg; the tables are created from the query's columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_and_upsert_sinks_hold_the_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ins, ups) = (unique("per_window"), unique("per_customer"));
    let input = dir.join("clicks.jsonl");
    crate::windows::write_clicks(&input, 7, 3000, 25, 0, 7);
    let sql = format!(
        "CREATE STREAM w AS {WINDOW_SQL} INTO db WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.event_time' = 'ts', \
         'db.type' = 'database_sink', {}, 'db.table' = '{ins}');",
        input.display(),
        conn("db")
    );
    assert_ok(&run_sql(dir, &sql));
    let ctx = datafusion::prelude::SessionContext::new();
    let opts = datafusion::prelude::JsonReadOptions::default().file_extension(".jsonl");
    ctx.register_json("clicks", input.to_str().unwrap(), opts).await.unwrap();
    let want = batch_rows(&ctx, "SELECT ts / 10000 * 10000 AS ws, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks GROUP BY 1, 2").await;
    let got = rows(&format!("SELECT {EPOCH_MS} AS ws, user_id, n, total FROM {ins}"));
    assert_same_rows("windows inserted", &got, &want);

    let sql = format!(
        "CREATE STREAM t AS SELECT customer_id, COUNT(*) AS n, SUM(amount) AS total, MAX(status) AS last_status FROM orders GROUP BY customer_id EMIT CHANGES \
         INTO db WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'orders.batch.size' = '7', \
         'db.type' = 'database_sink', {}, 'db.table' = '{ups}', 'db.mode' = 'upsert', 'db.primary_key' = 'customer_id');",
        crate::common::data("orders.jsonl"),
        conn("db")
    );
    assert_ok(&run_sql(dir, &sql));
    let bctx = batch_context(dir).await;
    let want = batch_rows(&bctx, "SELECT customer_id, COUNT(*) AS n, SUM(amount) AS total, MAX(status) AS last_status FROM orders GROUP BY customer_id").await;
    assert_same_rows("upserted totals", &rows(&format!("SELECT * FROM {ups}")), &want);
    // the table's key is the primary key given
    let key = rows(&format!(
        "SELECT a.attname AS k FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{ups}'::regclass AND i.indisprimary"
    ));
    assert_eq!(key, vec![r#"{"k":"customer_id"}"#.to_string()]);
}

/// A windowed aggregate over a tailed file into PostgreSQL under `use_transactions`, killed five
/// times at random moments: the table holds every window exactly once (DataFusion's answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_five_times_a_transactional_job_inserts_each_window_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seed = chaos_seed();
    let t = unique("eo_windows");
    let (input, lines, _) = kill_test_input(dir, 20_000).await;
    let ctx = datafusion::prelude::SessionContext::new();
    let opts = datafusion::prelude::JsonReadOptions::default().file_extension(".jsonl");
    ctx.register_json("clicks", input.to_str().unwrap(), opts).await.unwrap();
    let want =
        batch_rows(&ctx, "SELECT ts / 10000 * 10000 AS ws, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks WHERE user_id <> 'sentinel' GROUP BY 1, 2")
            .await;
    let sql = format!(
        "CREATE STREAM w AS {WINDOW_SQL} INTO db WITH ('clicks.type' = 'file_source', 'clicks.path' = '{}', 'clicks.format' = 'jsonlines', \
         'clicks.event_time' = 'ts', 'clicks.watch' = 'true', 'clicks.batch.size' = '100', 'checkpoint.interval' = '200ms', 'use_transactions' = 'true', \
         'db.type' = 'database_sink', {}, 'db.table' = '{t}');",
        input.display(),
        conn("db")
    );
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    let query = format!("SELECT {EPOCH_MS} AS ws, user_id, n, total FROM {t}");
    let count = format!("SELECT count(*) AS c FROM {t}");
    let expected = want.len();
    crash_and_finish(dir, 5, seed, &input, &lines, |_| {
        // the table appears with the first sink start
        let out = Command::new("python3").arg(crate::common::repo().join("tests/python/pg.py")).arg(url()).args(["rows", &count]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().strip_prefix("{\"c\": ").and_then(|s| s.strip_suffix('}')).and_then(|s| s.parse::<usize>().ok()).is_some_and(|n| n >= expected)
    });
    let got: Vec<String> = pg(&["rows", &query]).lines().map(str::to_string).collect();
    assert_exactly_once_rows(&format!("PostgreSQL exactly once after 5 kills (seed {seed})"), &got, &want);
    // nothing is left staged, and the commit record names the job
    assert_eq!(rows("SELECT count(*) AS c FROM _ferris_stage_w_db"), vec![r#"{"c":0}"#.to_string()]);
    assert_eq!(rows("SELECT sink FROM _ferris_sink_commits WHERE job = 'w'"), vec![r#"{"sink":"db"}"#.to_string()]);
}

/// A restored job stages its rows under its own checkpoints' numbers. The job restores
/// checkpoint k, stages new rows, and is killed before its next checkpoint completes (a slow
/// second sink holds it): the next run applies what checkpoint k staged, drops the rest, and
/// reads those rows again, so the table holds every row once. (A run that staged them under
/// checkpoint 1, as the restored job's boundaries once numbered their first barrier, had them
/// applied at the restore and then again: 150 rows of 100.)
#[test]
fn killed_before_its_first_checkpoint_after_a_restore_a_transactional_job_inserts_each_row_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (job, t) = (unique("restored"), unique("after_restore"));
    let input = dir.join("ids.jsonl");
    let ids = |range: std::ops::Range<usize>| range.map(|i| format!("{{\"id\":{i}}}\n")).collect::<String>();
    std::fs::write(&input, ids(0..50)).unwrap();
    let sql = format!(
        "CREATE STREAM {job} AS SELECT id FROM src INTO db, slow WITH ('src.type' = 'file_source', 'src.path' = '{}', 'src.watch' = 'true', \
         'src.batch.size' = '25', 'checkpoint.interval' = '200ms', 'use_transactions' = 'true', \
         'db.type' = 'database_sink', {}, 'db.table' = '{t}', 'slow.type' = 'blackhole', 'slow.delay' = '2s');",
        input.display(),
        conn("db")
    );
    let count = format!("SELECT count(*) AS c FROM {t}");
    let staged = format!("SELECT count(*) AS c FROM _ferris_stage_{job}_db");
    // the first run commits 50 rows, then a few empty checkpoints, and is killed
    let mut child = launch(dir, &sql);
    wait_for("50 rows committed", 60, || count_of(&count) == 50);
    std::thread::sleep(Duration::from_millis(1000));
    crate::checkpoints::kill9(&mut child);
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    // the second run restores its last checkpoint, stages new rows, and is killed while the
    // slow sink holds that checkpoint
    {
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(&input).unwrap().write_all(ids(50..100).as_bytes()).unwrap();
    }
    let mut child = launch(dir, &sql);
    wait_for("rows staged", 60, || count_of(&staged) > 0);
    crate::checkpoints::kill9(&mut child);
    let second = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default()[log.len()..].to_string();
    assert!(second.contains("restoring checkpoint"), "the second run restored a checkpoint:\n{second}");
    assert_eq!(count_of(&count), 50, "the second run's rows were not committed:\n{second}");
    // the third run restores the same checkpoint and goes on to the end of the file
    let mut child = launch(dir, &sql);
    wait_for("100 rows committed", 60, || count_of(&count) >= 100 && count_of(&staged) == 0);
    // a duplicate would show by now: its checkpoint waits for the slow sink (two batches)
    std::thread::sleep(Duration::from_millis(5000));
    interrupt(&mut child, dir);
    let want: Vec<String> = (0..100).map(|i| format!("{{\"id\":{i}}}")).collect();
    assert_exactly_once_rows("rows after a restore and a kill", &rows(&format!("SELECT id FROM {t}")), &canonical_lines(&want.join("\n")));
}

/// The server ends the sink's connections mid-run (as a restart does): the sink reconnects and
/// every row arrives, once.
#[test]
fn the_sink_reconnects_when_the_server_drops_its_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = unique("reconnect");
    let input = dir.join("rows.jsonl");
    std::fs::write(&input, (0..50).map(|i| format!("{{\"id\":{i}}}\n")).collect::<String>()).unwrap();
    let sql = format!(
        "CREATE STREAM c AS SELECT id FROM src INTO db WITH ('src.type' = 'file_source', 'src.path' = '{}', 'src.watch' = 'true', \
         'db.type' = 'database_sink', {}, 'db.table' = '{t}');",
        input.display(),
        conn("db")
    );
    let mut child = launch(dir, &sql);
    let count = format!("SELECT count(*) AS c FROM {t}");
    wait_for("50 rows in the table", 30, || rows(&count) == vec![r#"{"c":50}"#.to_string()]);
    pg(&["kill-connections"]);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
        f.write_all((50..120).map(|i| format!("{{\"id\":{i}}}\n")).collect::<String>().as_bytes()).unwrap();
    }
    wait_for("120 rows in the table", 30, || rows(&count) == vec![r#"{"c":120}"#.to_string()]);
    interrupt(&mut child, dir);
    let want: Vec<String> = (0..120).map(|i| format!("{{\"id\":{i}}}")).collect();
    assert_same_rows("rows after the reconnect", &rows(&format!("SELECT id FROM {t}")), &canonical_lines(&want.join("\n")));
}

/// A refused connection and a wrong password stop the job at start, naming the relation, the
/// server and the reason, and never printing the password.
#[test]
fn refused_connections_and_wrong_passwords_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let sql = "CREATE STREAM s AS SELECT * FROM c INTO out WITH ('c.type' = 'database_source', \
               'c.connection.url' = 'jdbc:postgresql://127.0.0.1:1/shop', 'c.connection.username' = 'app', 'c.connection.password' = 'hunter2-secret', \
               'c.table' = 'customers', 'out.type' = 'stdout');";
    let run = run_sql(tmp.path(), sql);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("127.0.0.1:1/shop") && run.stderr.contains("cannot connect"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2-secret") && !run.stdout.contains("hunter2-secret"), "{}", run.stderr);

    let (user, _, hostpath) = parts();
    let sql = format!(
        "CREATE STREAM s AS SELECT * FROM src INTO db WITH ('src.type' = 'file_source', 'src.path' = '{}', \
         'db.type' = 'database_sink', 'db.connection.url' = 'postgresql://{hostpath}', 'db.connection.username' = '{user}', \
         'db.connection.password' = 'wrong-pass-xyz', 'db.table' = 'never_written');",
        crate::common::data("orders.jsonl"),
    );
    let run = run_sql(tmp.path(), &sql);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("Failed to create sink 'db' (database_sink)") && run.stderr.contains("password authentication failed"), "{}", run.stderr);
    assert!(!run.stderr.contains("wrong-pass-xyz") && !run.stdout.contains("wrong-pass-xyz"), "{}", run.stderr);
    // explain masks the password too, also where a URL carries it
    let run = crate::common::ferris(tmp.path(), &["explain", tmp.path().join("job.sql").to_str().unwrap()]);
    assert!(!run.stdout.contains("wrong-pass-xyz") && !run.stderr.contains("wrong-pass-xyz"), "{}", run.stdout);
    let sql = "CREATE STREAM s AS SELECT * FROM c INTO out WITH ('c.type' = 'database_source', \
               'c.connection' = 'postgresql://app:url-secret-77@127.0.0.1:1/shop', 'c.table' = 'customers', 'out.type' = 'stdout');";
    std::fs::write(tmp.path().join("url.sql"), sql).unwrap();
    let run = crate::common::ferris(tmp.path(), &["explain", tmp.path().join("url.sql").to_str().unwrap()]);
    assert!(run.stdout.contains("postgresql://app:****@127.0.0.1:1/shop"), "{}\n{}", run.stdout, run.stderr);
    let run = run_sql(tmp.path(), sql);
    assert_ne!(run.status, 0);
    assert!(!run.stdout.contains("url-secret-77") && !run.stderr.contains("url-secret-77"), "{}", run.stderr);
}

/// An `EMIT CHANGES` session changelog (late rows merge sessions already written: their rows
/// are retracted with `_op = 'DELETE'`) upserted into a table: the table ends as the batch
/// answer, every merged session's old row deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upserted_changelog_deletes_retracted_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = unique("sessions");
    let data = dir.join("clicks.jsonl");
    crate::windows::write_clicks(&data, 11, 3000, 700, 4000, 6);
    let sql = format!(
        "CREATE STREAM s AS SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(amount) AS total FROM clicks \
         GROUP BY SESSION(ts, INTERVAL '3' SECOND), user_id EMIT CHANGES INTO db, log \
         WITH ({}, 'clicks.watermark.delay' = '5s', 'batch.size' = '40', 'emit.interval' = '0ms', \
         'db.type' = 'database_sink', {}, 'db.table' = '{t}', 'db.mode' = 'upsert', 'db.primary_key' = 'user_id, window_start, window_end', \
         'log.type' = 'file_sink', 'log.path' = 'changes.jsonl');",
        crate::windows::source(&data, ""),
        conn("db")
    );
    assert_ok(&run_sql(dir, &sql));
    let changes = std::fs::read_to_string(dir.join("changes.jsonl")).unwrap();
    assert!(changes.contains("\"_op\":\"DELETE\""), "merged sessions are retracted in the changelog");
    let ctx = crate::windows::clicks_context(&data).await;
    let batch = crate::windows::CASES.iter().find(|c| c.0 == "session").unwrap().2;
    let want = batch_rows(&ctx, &format!("SELECT CAST(window_start AS BIGINT) AS ws, user_id, n, total FROM ({batch})")).await;
    assert!(want.len() > 50, "{} sessions, too few to test", want.len());
    let got = rows(&format!("SELECT {EPOCH_MS} AS ws, user_id, n, total FROM {t}"));
    assert_same_rows("sessions upserted", &got, &want);
    // `_op` is how rows arrive, not a column of the table
    assert!(rows(&format!("SELECT column_name AS c FROM information_schema.columns WHERE table_name = '{t}' AND column_name = '_op'")).is_empty());
}

/// A transactional job whose first checkpoints find nothing to stage (its input is empty at
/// first), and an unaliased aggregate column (`sum(src.amount)`, a name with a dot): the
/// commits go through and the rows arrive once.
#[test]
fn a_transactional_sink_commits_empty_checkpoints_and_odd_column_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = unique("idle_start");
    let input = dir.join("rows.jsonl");
    std::fs::write(&input, "").unwrap();
    let sql = format!(
        "CREATE STREAM idle AS SELECT id, amount * 2, 'x' AS \"a.b\" FROM src INTO db WITH ('src.type' = 'file_source', 'src.path' = '{}', 'src.watch' = 'true', \
         'src.schema' = 'id BIGINT, amount DOUBLE', 'use_transactions' = 'true', 'checkpoint.interval' = '100ms', \
         'db.type' = 'database_sink', {}, 'db.table' = '{t}');",
        input.display(),
        conn("db")
    );
    let mut child = launch(dir, &sql);
    // several empty checkpoints commit
    std::thread::sleep(Duration::from_millis(800));
    std::fs::write(&input, (0..30).map(|i| format!("{{\"id\":{i},\"amount\":{i}.5}}\n")).collect::<String>()).unwrap();
    let count = format!("SELECT count(*) AS c FROM {t}");
    wait_for("30 rows committed", 30, || rows(&count) == vec![r#"{"c":30}"#.to_string()]);
    interrupt(&mut child, dir);
    let log = std::fs::read_to_string(dir.join("job.log")).unwrap_or_default();
    assert!(!log.contains("ERROR"), "{log}");
    let want: Vec<String> = (0..30).map(|i| format!("{{\"id\":{i},\"v\":{},\"ab\":\"x\"}}", 2 * i + 1)).collect();
    let got = rows(&format!("SELECT id, \"src.amount * Int64(2)\" AS v, \"a.b\" AS ab FROM {t}"));
    assert_same_rows("rows after empty checkpoints", &got, &canonical_lines(&want.join("\n")));
}

/// An existing table whose columns are not the query's types (integer for BIGINT, numeric for
/// DOUBLE, varchar for text): rows go through the staging table and are cast on the way in;
/// a table with exactly the query's types takes them by COPY straight in. Both hold every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_into_existing_tables_of_other_and_same_types() {
    let tmp = tempfile::tempdir().unwrap();
    let (other, same) = (unique("cast_in"), unique("copy_in"));
    exec(&format!(
        "CREATE TABLE {other} (order_id integer, amount numeric(12,2), status varchar(20), note text DEFAULT 'kept'); \
         CREATE TABLE {same} (order_id bigint, amount double precision, status text)"
    ));
    let file = crate::common::data("orders.jsonl");
    for t in [&other, &same] {
        let sql = format!(
            "CREATE STREAM s AS SELECT order_id, amount, status FROM orders INTO db WITH ('orders.type' = 'file_source', 'orders.path' = '{file}', \
             'orders.batch.size' = '50', 'db.type' = 'database_sink', {}, 'db.table' = '{t}', 'db.create_table' = 'false');",
            conn("db")
        );
        assert_ok(&run_sql(tmp.path(), &sql));
    }
    let want = batch_rows(&batch_context(tmp.path()).await, "SELECT order_id, amount, status FROM orders").await;
    assert_eq!(want.len(), 240);
    assert_same_rows("copied straight in", &rows(&format!("SELECT order_id, amount, status FROM {same}")), &want);
    assert_same_rows("cast through staging", &rows(&format!("SELECT order_id, amount::float8 AS amount, status FROM {other}")), &want);
    assert_eq!(rows(&format!("SELECT DISTINCT note FROM {other}")), vec![r#"{"note":"kept"}"#.to_string()]);
}

/// The predecessor's `CREATE TABLE … AS SELECT status PRIMARY KEY, …`: a database sink without
/// `mode` or `primary_key` upserts on the key marked in the select list, created as the table's
/// primary key; the changelog's updates leave one row per status = DataFusion's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_in_the_select_list_is_the_sinks_upsert_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = unique("by_status");
    let sql = format!(
        "CREATE TABLE totals AS SELECT status PRIMARY KEY, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY status \
         INTO db WITH ('orders.type' = 'file_source', 'orders.path' = '{}', 'orders.batch.size' = '11', \
         'db.type' = 'database_sink', {}, 'db.table' = '{t}');",
        crate::common::data("orders.jsonl"),
        conn("db")
    );
    let run = run_sql(dir, &sql);
    assert_ok(&run);
    assert!(!run.stderr.contains("unknown key"), "{}", run.stderr);
    let want = batch_rows(&batch_context(dir).await, "SELECT status, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY status").await;
    assert_same_rows("totals upserted by status", &rows(&format!("SELECT * FROM {t}")), &want);
    let key = rows(&format!(
        "SELECT a.attname AS k FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{t}'::regclass AND i.indisprimary"
    ));
    assert_eq!(key, vec![r#"{"k":"status"}"#.to_string()]);
    // explain says where the sink's key came from
    std::fs::write(dir.join("job.sql"), &sql).unwrap();
    let explained = crate::common::ferris(dir, &["explain", "job.sql"]);
    assert!(explained.stdout.contains("primary_key = status   [PRIMARY KEY status in the select list]"), "{}", explained.stdout);
}

/// The test server's certificate (`bash tests/services/postgres.sh ca`), which a
/// `verify-full` client trusts as its CA.
fn server_ca() -> String {
    let out = Command::new("bash").arg(crate::common::repo().join("tests/services/postgres.sh")).arg("ca").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// TLS to the database as libpq and JDBC URLs ask for it. The test server's role `ferris_tls`
/// may log in over TLS only (pg_hba `hostssl`): with `sslmode=disable` the server refuses it by
/// name; `require`, JDBC's `ssl=true` and `verify-full` with the server's certificate as
/// `sslrootcert` read the table (rows exact) and write a sink table (read back with psycopg);
/// `verify-full` without the CA fails at start saying the certificate could not be verified,
/// and no password is printed on the way.
#[test]
fn connections_use_tls_as_the_url_asks() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, hostpath) = parts();
    let (src, dst) = (unique("tls_src"), unique("tls_dst"));
    exec(&format!("CREATE TABLE {src} (id INT PRIMARY KEY, name TEXT); INSERT INTO {src} SELECT g, 'n' || g FROM generate_series(1, 40) g"));
    let ca = server_ca();
    assert!(Path::new(&ca).exists(), "no server certificate at '{ca}' (restart the server: 'bash tests/services/postgres.sh stop; … start')");
    let job = |url: &str, sink: &str| {
        format!(
            "CREATE STREAM s AS SELECT id, name FROM c INTO db WITH ('c.type' = 'database_source', 'c.connection.url' = '{url}', \
             'c.connection.username' = 'ferris_tls', 'c.connection.password' = 'ferris-tls-pw', 'c.table' = '{src}', \
             'db.type' = 'database_sink', 'db.connection.url' = '{url}', 'db.connection.username' = 'ferris_tls', \
             'db.connection.password' = 'ferris-tls-pw', 'db.table' = '{sink}');"
        )
    };
    let want = rows(&format!("SELECT id, name FROM {src}"));
    assert_eq!(want.len(), 40);
    let urls = [
        format!("postgresql://{hostpath}?sslmode=require"),
        format!("jdbc:postgresql://{hostpath}?ssl=true&sslmode=require"),
        format!("postgresql://{hostpath}?sslmode=verify-full&sslrootcert={ca}"),
    ];
    for (i, url) in urls.iter().enumerate() {
        let sink = format!("{dst}_{i}");
        let run = run_sql(tmp.path(), &job(url, &sink));
        assert_ok(&run);
        assert!(!run.stderr.contains("ferris-tls-pw"), "{}", run.stderr);
        assert_same_rows(&format!("rows written over TLS ({url})"), &rows(&format!("SELECT id, name FROM {sink}")), &want);
    }
    // the role may not log in without TLS: the server says so
    let run = run_sql(tmp.path(), &job(&format!("postgresql://{hostpath}?sslmode=disable"), &format!("{dst}_x")));
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("no encryption"), "{}", run.stderr);
    // verify-full checks the certificate: without the CA it cannot be verified
    let run = run_sql(tmp.path(), &job(&format!("postgresql://{hostpath}?sslmode=verify-full"), &format!("{dst}_y")));
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("certificate verify failed"), "{}", run.stderr);
    assert!(!run.stderr.contains("ferris-tls-pw") && !run.stdout.contains("ferris-tls-pw"), "{}", run.stderr);
    // a CA that is not a certificate is named at start
    let run = run_sql(tmp.path(), &job(&format!("postgresql://{hostpath}?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"), &format!("{dst}_z")));
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("sslrootcert=/nonexistent/ca.pem"), "{}", run.stderr);
}
