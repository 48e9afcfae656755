//! Redis on a real server (Debian's redis-server, started by `bash tests/services/redis.sh
//! start`; URL in `REDIS_URL`), read and written back with `redis-cli`: a grouped aggregate
//! written as hashes and filtered rows as JSON strings with a TTL hold DataFusion's answer; a
//! changelog's DELETE rows delete their keys; hashes read as a lookup table join the orders file
//! as the CSV of the same customers does, and a tailed stream sees hashes changed mid-run; JSON
//! values are read with an inferred schema. Over TLS: a TLS-only server of the test's own that
//! checks client certificates, written and read back both ways.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{assert_ok, assert_same_rows, batch_context, batch_rows, canonical_lines, data, file_rows, free_port, run_sql, wait_port, Guard};

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://:ferris-redis-pw@127.0.0.1:56379/0".to_string())
}

/// `redis-cli` against the test server, one command; its output lines.
fn cli(args: &[&str]) -> Vec<String> {
    let u = url();
    let rest = u.trim_start_matches("redis://");
    let (auth, hostdb) = rest.split_once('@').unwrap_or(("", rest));
    let password = auth.trim_start_matches(':');
    let host_port = hostdb.split('/').next().unwrap();
    let (host, port) = host_port.split_once(':').unwrap();
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", port, "--no-auth-warning", "-a", password])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli: {e}; install it with 'bash tests/services/redis.sh install'"));
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}{}x{}", std::process::id(), nanos % 1_000_000_000)
}

fn conn(name: &str) -> String {
    format!("'{name}.url' = '{}'", url())
}

/// A hash as a JSON object of strings.
fn hash(key: &str) -> serde_json::Value {
    let lines = cli(&["HGETALL", key]);
    let mut m = serde_json::Map::new();
    for pair in lines.chunks(2) {
        m.insert(pair[0].clone(), serde_json::Value::String(pair.get(1).cloned().unwrap_or_default()));
    }
    serde_json::Value::Object(m)
}

/// Rows of a DataFusion answer with every value as text (as a hash holds them), floats rounded.
fn as_text(rows: &[String]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            let m: serde_json::Map<String, serde_json::Value> = v
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.as_str().map_or_else(|| v.to_string(), str::to_string))))
                .collect();
            serde_json::Value::Object(m).to_string()
        })
        .collect()
}

/// A grouped aggregate as hashes `<p>:{status}` and the big orders as JSON strings with a TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_and_json_values_hold_the_batch_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let p = unique("t");
    let agg = "SELECT status, COUNT(*) AS n, MAX(order_id) AS last_order FROM orders GROUP BY status";
    let big = "SELECT order_id, customer_id, amount, status FROM orders WHERE amount > 1000";
    let job = format!(
        "CREATE STREAM s AS {agg} INTO h WITH (\
         'orders.type' = 'file_source', 'orders.path' = '{d}', \
         'h.type' = 'redis_sink', {c}, 'h.key.template' = '{p}:status:{{status}}', 'h.value.format' = 'hash');\n\
         CREATE STREAM b AS {big} INTO j WITH (\
         'orders.type' = 'file_source', 'orders.path' = '{d}', \
         'j.type' = 'redis_sink', {cj}, 'j.key.field' = 'order_id', 'j.key.prefix' = '{p}:order:', 'j.ttl' = '1h');",
        d = data("orders.jsonl"),
        c = conn("h"),
        cj = conn("j"),
    );
    let run = run_sql(tmp.path(), &job);
    assert_ok(&run);
    assert!(!run.stderr.contains("ferris-redis-pw"), "{}", run.stderr);
    let ctx = batch_context(tmp.path()).await;
    let want = batch_rows(&ctx, agg).await;
    let mut got = Vec::new();
    for key in cli(&["--scan", "--pattern", &format!("{p}:status:*")]) {
        let h = hash(&key);
        // each hash under the key its own row names
        assert_eq!(key, format!("{p}:status:{}", h["status"].as_str().unwrap()));
        got.push(h.to_string());
    }
    assert_same_rows("hashes", &canonical_lines(&got.join("\n")), &canonical_lines(&as_text(&want).join("\n")));
    let want = batch_rows(&ctx, big).await;
    let keys = cli(&["--scan", "--pattern", &format!("{p}:order:*")]);
    assert_eq!(keys.len(), want.len());
    let mut got = Vec::new();
    for key in &keys {
        let value = cli(&["GET", key]);
        let row: serde_json::Value = serde_json::from_str(&value[0]).unwrap();
        assert_eq!(key, &format!("{p}:order:{}", row["order_id"]), "each value under its own key");
        got.extend(value);
        let ttl: i64 = cli(&["PTTL", key])[0].parse().unwrap();
        assert!(ttl > 3_000_000 && ttl <= 3_600_000, "{key}: ttl {ttl} ms");
    }
    assert_same_rows("JSON values", &canonical_lines(&got.join("\n")), &want);
}

/// A changelog: INSERT rows set their key, a later DELETE row deletes it.
#[test]
fn a_changelogs_deletes_remove_their_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let p = unique("cl");
    let input = tmp.path().join("changes.jsonl");
    std::fs::write(
        &input,
        "{\"id\": 1, \"v\": \"a\", \"_op\": \"INSERT\"}\n{\"id\": 2, \"v\": \"b\", \"_op\": \"INSERT\"}\n{\"id\": 3, \"v\": null, \"_op\": \"INSERT\"}\n{\"id\": 1, \"v\": \"a\", \"_op\": \"DELETE\"}\n{\"id\": null, \"v\": \"lost\", \"_op\": \"INSERT\"}\n",
    )
    .unwrap();
    let job = format!(
        "CREATE STREAM s AS SELECT id, v, _op FROM changes INTO r WITH ('changes.type' = 'file_source', 'changes.path' = '{}', \
         'r.type' = 'redis_sink', {}, 'r.key.template' = '{p}:{{id}}', 'r.value.format' = 'hash');",
        input.display(),
        conn("r")
    );
    let run = run_sql(tmp.path(), &job);
    assert_ok(&run);
    assert!(run.stderr.contains("1 of 5 rows have no key (a NULL in a key column)"), "{}", run.stderr);
    let mut keys = cli(&["--scan", "--pattern", &format!("{p}:*")]);
    keys.sort();
    assert_eq!(keys, [format!("{p}:2"), format!("{p}:3")]);
    assert_eq!(hash(&format!("{p}:2")), serde_json::json!({"id": "2", "v": "b"}));
    assert_eq!(hash(&format!("{p}:3")), serde_json::json!({"id": "3"}), "a NULL column is no field");
    // the same changelog as JSON strings
    let job = job.replace("'r.value.format' = 'hash'", "'r.value.format' = 'json'").replace(&format!("'{p}:{{id}}'"), &format!("'{p}:j:{{id}}'"));
    assert_ok(&run_sql(tmp.path(), &job));
    let mut keys = cli(&["--scan", "--pattern", &format!("{p}:j:*")]);
    keys.sort();
    assert_eq!(keys, [format!("{p}:j:2"), format!("{p}:j:3")]);
    assert_eq!(cli(&["GET", &format!("{p}:j:3")]), [r#"{"id":3,"v":null}"#]);
}

/// Customers written as hashes by redis-cli, read as a lookup table (typed by `schema`, the key
/// without its prefix as a column) and joined with the orders file: DataFusion's join with the
/// CSV of the same customers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_read_as_a_table_join_like_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = unique("cust");
    let text = std::fs::read_to_string(data("customers.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for line in lines {
        let cols: Vec<&str> = line.split(',').collect();
        let mut args = vec!["HSET".to_string(), format!("{p}:{}", cols[0])];
        for (h, v) in header.iter().zip(&cols).skip(1) {
            args.push(h.to_string());
            args.push(v.to_string());
        }
        cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    cli(&["SET", &format!("{p}:not-a-hash"), "{}"]);
    cli(&["HSET", &format!("{p}:1"), "vip", "true"]);
    // customer 1's hash also has `vip = true` (a BOOLEAN column read from hash text)
    let sql = "SELECT o.order_id, o.amount, c.customer_name, c.customer_tier, c.risk_score, COALESCE(c.vip, false) AS vip FROM orders o JOIN customers c ON o.customer_id = c.customer_id";
    let batch_sql = "SELECT o.order_id, o.amount, c.customer_name, c.customer_tier, c.risk_score, c.customer_id = 1 AS vip FROM orders o JOIN customers c ON o.customer_id = c.customer_id";
    let job = format!(
        "CREATE STREAM e AS {sql} INTO out WITH (\
         'orders.type' = 'file_source', 'orders.path' = '{}', \
         'customers.type' = 'redis_source', {}, 'customers.value.format' = 'hash', 'customers.key.pattern' = '{p}:*', \
         'customers.key.prefix' = '{p}:', 'customers.key.column' = 'customer_id', \
         'customers.schema' = 'customer_name VARCHAR, customer_tier VARCHAR, email VARCHAR, country VARCHAR, risk_score DOUBLE, vip BOOLEAN', \
         'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        data("orders.jsonl"),
        conn("customers")
    );
    let run = run_sql(tmp.path(), &job);
    assert_ok(&run);
    let ctx = batch_context(tmp.path()).await;
    let want = batch_rows(&ctx, batch_sql).await;
    assert!(want.iter().any(|r| r.contains("\"vip\":true")));
    assert!(tmp.path().join("out.jsonl").exists(), "{}", run.stderr);
    assert_same_rows("enriched orders", &file_rows(&tmp.path().join("out.jsonl")), &want);
}

/// JSON strings read with the columns inferred from them; a value that is not a JSON object is
/// skipped and counted, the rest read exactly.
#[test]
fn json_values_read_with_an_inferred_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let p = unique("px");
    let mut want = Vec::new();
    for i in 0..30 {
        let value = format!("{{\"price\": {}.5, \"active\": {}, \"venue\": \"v{}\"}}", i * 3, i % 2 == 0, i % 4);
        cli(&["SET", &format!("{p}:S{i}"), &value]);
        want.push(format!("{{\"symbol\": \"S{i}\", \"price\": {}.5, \"active\": {}, \"venue\": \"v{}\"}}", i * 3, i % 2 == 0, i % 4));
    }
    cli(&["SET", &format!("{p}:broken"), "not json"]);
    let job = format!(
        "CREATE STREAM s AS SELECT symbol, price, active, venue FROM prices INTO out WITH (\
         'prices.type' = 'redis_source', {}, 'prices.key.pattern' = '{p}:*', 'prices.key.prefix' = '{p}:', 'prices.key.column' = 'symbol', \
         'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        conn("prices")
    );
    let run = run_sql(tmp.path(), &job);
    assert_ok(&run);
    assert!(run.stderr.contains("does not hold a JSON object"), "{}", run.stderr);
    assert_same_rows("prices", &file_rows(&tmp.path().join("out.jsonl")), &canonical_lines(&want.join("\n")));
}

/// The guide's enrichment shape on Redis: a tailed orders file joined with customers kept as
/// hashes, re-read every 300 ms (`refresh_interval`); tiers change and a customer appears while
/// the job runs: orders before carry the old values, orders after the new ones.
#[test]
fn a_lookup_of_hashes_updated_mid_run_is_seen_by_later_rows() {
    use crate::checkpoints::{interrupt, settle, sinks_created, start};
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = unique("lk");
    for c in 1..=10 {
        if c != 5 {
            cli(&["HSET", &format!("{p}:{c}"), "name", &format!("c{c}"), "tier", "bronze"]);
        }
    }
    let orders = dir.join("orders.jsonl");
    let order = |i: usize| format!("{{\"order_id\":{i},\"customer_id\":\"{}\",\"amount\":{}}}\n", i % 10 + 1, i * 3);
    std::fs::write(&orders, (0..100).map(order).collect::<String>()).unwrap();
    let sql = format!(
        "CREATE STREAM enriched AS SELECT o.order_id, c.name, c.tier, o.amount FROM orders o JOIN customers c ON o.customer_id = c.id INTO out WITH (\
         'orders.type' = 'file_source', 'orders.path' = '{}', 'orders.watch' = 'true', 'orders.batch.size' = '10', \
         'customers.type' = 'redis_source', {}, 'customers.value.format' = 'hash', 'customers.key.pattern' = '{p}:*', \
         'customers.key.prefix' = '{p}:', 'customers.key.column' = 'id', 'customers.schema' = 'name VARCHAR, tier VARCHAR', \
         'customers.refresh_interval' = '300', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl');",
        orders.display(),
        conn("customers")
    );
    std::fs::write(dir.join("job.sql"), &sql).unwrap();
    let before = sinks_created(dir);
    let mut child = start(dir, "job.sql", &[]);
    settle(dir, before);
    let out = dir.join("out.jsonl");
    let lines = || std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0);
    let wait = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while lines() < n {
            assert!(Instant::now() < deadline, "waiting for {n} rows; log:\n{}", std::fs::read_to_string(dir.join("job.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // customer 5 has no hash yet: 10 of the 100 orders find no row
    wait(90);
    for c in 1..=3 {
        cli(&["HSET", &format!("{p}:{c}"), "tier", "gold"]);
    }
    cli(&["HSET", &format!("{p}:5"), "name", "c5", "tier", "bronze"]);
    // three refreshes later the join holds the new hashes
    std::thread::sleep(Duration::from_millis(1500));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&orders).unwrap();
        f.write_all((100..200).map(order).collect::<String>().as_bytes()).unwrap();
    }
    wait(190);
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

/// A CA made for the test (`ca.pem`), a server certificate it signed for localhost and
/// 127.0.0.1 (`server.pem`/`server.key`) and a client certificate (`client.pem`/`client.key`).
fn make_certificates(dir: &Path) {
    let script = "set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=ferris-test-ca -keyout ca.key -out ca.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=ferris-client -keyout client.key -out client.csr
printf 'extendedKeyUsage=clientAuth\\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.pem";
    let out = Command::new("bash").args(["-c", script]).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Redis over TLS only (`--port 0`), checking client certificates against the test's CA: a
/// grouped aggregate written as hashes over `rediss://` (trusting the CA, presenting the client
/// certificate) is read back by `redis-cli --tls` as DataFusion's answer, and by a job reading
/// the hashes as a table over TLS; `#insecure` trusts any server; without the CA, or without
/// the client certificate, the job fails at start saying why, and the password is on no output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_go_over_tls_with_certificates_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_certificates(dir);
    let port = free_port();
    let file = |n: &str| dir.join(n).display().to_string();
    let server = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--requirepass", "tls-pw-secret"])
        .args(["--tls-cert-file", &file("server.pem"), "--tls-key-file", &file("server.key"), "--tls-ca-cert-file", &file("ca.pem")])
        .args(["--tls-auth-clients", "yes", "--save", "", "--appendonly", "no"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server: install it with 'bash tests/services/redis.sh install'");
    let _server = Guard(server);
    wait_port(port);
    let url = format!("rediss://:tls-pw-secret@localhost:{port}/0");
    let tls = |n: &str, url: &str, ca: bool, cert: bool| {
        let mut keys = format!("'{n}.url' = '{url}'");
        if ca {
            keys += &format!(", '{n}.ssl.ca.location' = '{}'", file("ca.pem"));
        }
        if cert {
            keys += &format!(", '{n}.ssl.certificate.location' = '{}', '{n}.ssl.key.location' = '{}'", file("client.pem"), file("client.key"));
        }
        keys
    };
    let agg = "SELECT status, COUNT(*) AS n, MAX(order_id) AS last_order FROM orders GROUP BY status";
    let write = |keys: String, prefix: &str| {
        format!(
            "CREATE STREAM s AS {agg} INTO h WITH ('orders.type' = 'file_source', 'orders.path' = '{}', \
             'h.type' = 'redis_sink', {keys}, 'h.key.template' = '{prefix}:{{status}}', 'h.value.format' = 'hash');",
            data("orders.jsonl")
        )
    };
    let run = run_sql(dir, &write(tls("h", &url, true, true), "st"));
    assert_ok(&run);
    assert!(!format!("{}{}", run.stdout, run.stderr).contains("tls-pw-secret"), "{}", run.stderr);
    let ctx = batch_context(dir).await;
    let want = batch_rows(&ctx, agg).await;

    // read back by redis-cli over TLS, with the same certificates
    let cli_tls = |args: &[&str]| -> Vec<String> {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert", &file("ca.pem"), "--cert", &file("client.pem"), "--key", &file("client.key")])
            .args(["-h", "localhost", "-p", &port.to_string(), "--no-auth-warning", "-a", "tls-pw-secret"])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    };
    let mut got = Vec::new();
    for key in cli_tls(&["--scan", "--pattern", "st:*"]) {
        let mut m = serde_json::Map::new();
        for pair in cli_tls(&["HGETALL", &key]).chunks(2) {
            m.insert(pair[0].clone(), serde_json::Value::String(pair.get(1).cloned().unwrap_or_default()));
        }
        assert_eq!(key, format!("st:{}", m["status"].as_str().unwrap()));
        got.push(serde_json::Value::Object(m).to_string());
    }
    assert_same_rows("hashes over TLS", &canonical_lines(&got.join("\n")), &canonical_lines(&as_text(&want).join("\n")));

    // the hashes read back over TLS as a table
    let read = format!(
        "CREATE STREAM r AS SELECT status, n, last_order FROM st INTO out WITH ('st.type' = 'redis_source', {}, \
         'st.value.format' = 'hash', 'st.key.pattern' = 'st:*', 'st.key.prefix' = 'st:', 'st.key.column' = 'status', \
         'st.schema' = 'n BIGINT, last_order BIGINT', 'out.type' = 'file_sink', 'out.path' = 'back.jsonl');",
        tls("st", &url, true, true)
    );
    let run = run_sql(dir, &read);
    assert_ok(&run);
    assert_same_rows("the hashes read over TLS", &file_rows(&dir.join("back.jsonl")), &want);

    // `#insecure`: no CA needed (the client certificate still is)
    let run = run_sql(dir, &write(tls("h", &format!("{url}#insecure"), false, true), "ins"));
    assert_ok(&run);
    assert_eq!(cli_tls(&["--scan", "--pattern", "ins:*"]).len(), want.len());

    // the server's certificate not trusted: the system's CAs do not know the test's
    let run = run_sql(dir, &write(tls("h", &url, false, true), "noca"));
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("redis localhost:{port}/0: cannot connect")) && run.stderr.contains("UnknownIssuer"), "{}", run.stderr);
    assert!(!run.stderr.contains("tls-pw-secret"), "{}", run.stderr);
    // no client certificate: the server ends the handshake
    let run = run_sql(dir, &write(tls("h", &url, true, false), "nocert"));
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("redis localhost:{port}/0")) && run.stderr.contains("'h'"), "{}", run.stderr);
    assert!(!run.stderr.contains("tls-pw-secret"), "{}", run.stderr);
    assert!(cli_tls(&["--scan", "--pattern", "noca:*"]).is_empty() && cli_tls(&["--scan", "--pattern", "nocert:*"]).is_empty());
}
