//! Kafka over TLS and with SASL logins. TLS (`security.protocol = 'SSL'`): a broker of the
//! project's own (tansu) behind a TLS-terminating proxy (socat, OpenSSL) with a certificate made
//! for the test, advertising the proxy's address, so that every connection the clients make is
//! TLS. A job reads a topic and writes another through it, trusting the test's CA
//! (`ssl.ca.location`); the same job without the CA fails with an error that says the
//! certificate could not be verified. SASL (`SASL_PLAINTEXT`, `SCRAM-SHA-512`): tansu with
//! `--authentication` and a user it stores; a job logs in and reads every message, a wrong
//! password stops the job at start with the broker's refusal and the password nowhere. Both at
//! once (`SASL_SSL`): the SCRAM broker behind the TLS proxy.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::common::{assert_same_rows, canonical_lines, free_port, run_sql, stop_with_sigint, wait_port, Guard};

fn tansu() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = format!("{home}/.cargo/bin/tansu");
    if Path::new(&cargo_bin).exists() {
        cargo_bin
    } else {
        "tansu".into()
    }
}

/// A certificate for `localhost` and 127.0.0.1, made for the test: `cert.pem` (also the CA the
/// clients trust) and `key.pem` in `dir`.
fn make_certificate(dir: &Path) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A TLS-terminating proxy on 127.0.0.1:`tls` in front of 127.0.0.1:`plain`, with the
/// certificate of [`make_certificate`].
fn tls_proxy(dir: &Path, tls: u16, plain: u16) -> Guard {
    let proxy = Command::new("socat")
        .arg(format!(
            "openssl-listen:{tls},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ))
        .arg(format!("tcp:127.0.0.1:{plain}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat: install it with 'bash tests/services/kafka.sh install'");
    let proxy = Guard(proxy);
    wait_port(tls);
    proxy
}

/// Starts tansu on a plain port and the TLS proxy in front of it; the TLS address and guards.
fn tls_broker(dir: &Path) -> (String, Vec<Guard>) {
    make_certificate(dir);
    let (plain, tls) = (free_port(), free_port());
    let broker = Command::new(tansu())
        .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{plain}"), "--advertised-listener-url", &format!("tcp://localhost:{tls}")])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu: install it with 'bash tests/services/kafka.sh install'");
    let broker = Guard(broker);
    wait_port(plain);
    (format!("localhost:{tls}"), vec![tls_proxy(dir, tls, plain), broker])
}

/// Runs `sql` in `dir` until `out.jsonl` has `rows` lines (60 s at most), then stops it with
/// SIGINT; the output file and what the job said.
fn run_until_rows(dir: &Path, sql: &str, rows: usize) -> (std::path::PathBuf, String) {
    std::fs::write(dir.join("job.sql"), sql).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
        .args(["run", "job.sql", "--no-progress"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = dir.join("out.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&out).map(|t| t.lines().count()).unwrap_or(0) < rows && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(400));
    let stderr = stop_with_sigint(&mut child);
    (out, stderr)
}

fn tls_client(servers: &str, ca: &Path) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers).set("security.protocol", "ssl").set("ssl.ca.location", ca.to_str().unwrap());
    c
}

/// The values of `topic` from its start, read by a client of `config` (30 s at most, until
/// `want` have come).
fn read_back(mut config: ClientConfig, topic: &str, want: usize) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let c: BaseConsumer = config.set("group.id", format!("{topic}-check")).set("auto.offset.reset", "earliest").create().unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut back = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while back.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            back.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    back
}

/// Reads a topic and writes another over TLS only; both hold the messages produced.
#[test]
fn a_job_reads_and_writes_kafka_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (servers, _guards) = tls_broker(dir);
    let ca = dir.join("cert.pem");
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = tls_client(&servers, &ca).create().unwrap();
        let topics = [NewTopic::new("tls-in", 1, TopicReplication::Fixed(1)), NewTopic::new("tls-out", 1, TopicReplication::Fixed(1))];
        let made = futures::executor::block_on(admin.create_topics(&topics, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))
            .expect("create topics over TLS");
        for r in made {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t} over TLS: {e}"));
        }
    }
    let p: BaseProducer = tls_client(&servers, &ca).create().unwrap();
    let rows: Vec<String> = (0..200).map(|i| format!("{{\"id\": {i}, \"v\": \"m{}\"}}", i % 7)).collect();
    for r in &rows {
        let mut rec = Some(BaseRecord::<(), str>::to("tls-in").payload(r.as_str()));
        while let Some(x) = rec.take() {
            if let Err((_, back)) = p.send(x) {
                p.poll(Duration::from_millis(10));
                rec = Some(back);
            }
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let sql = format!(
        "CREATE STREAM s AS SELECT id, v FROM src INTO out, copy WITH (\
         'src.type' = 'kafka_source', 'src.bootstrap.servers' = '{servers}', 'src.topic' = 'tls-in', 'src.group.id' = 'tls-group', \
         'src.security.protocol' = 'SSL', 'src.ssl.ca.location' = '{ca}', 'src.schema' = 'id BIGINT, v VARCHAR', \
         'out.type' = 'file_sink', 'out.path' = 'out.jsonl', \
         'copy.type' = 'kafka_sink', 'copy.bootstrap.servers' = '{servers}', 'copy.topic' = 'tls-out', \
         'copy.security.protocol' = 'SSL', 'copy.ssl.ca.location' = '{ca}');",
        ca = ca.display()
    );
    let (out, stderr) = run_until_rows(dir, &sql, rows.len());
    let want = canonical_lines(&rows.join("\n"));
    assert_same_rows("rows read over TLS", &canonical_lines(&std::fs::read_to_string(&out).unwrap_or_default()), &want);
    // the copy, read back over TLS by the test's own client
    let back = read_back(tls_client(&servers, &ca), "tls-out", rows.len());
    assert_same_rows("rows written over TLS", &canonical_lines(&back.join("\n")), &want);
    assert!(!stderr.contains("SSL handshake failed"), "{stderr}");

    // without the CA the broker's certificate cannot be verified: a clear error at start, not a
    // client retrying for ever
    let no_ca = format!(
        "SELECT id FROM src WITH ('src.type' = 'kafka_source', 'src.bootstrap.servers' = '{servers}', 'src.topic' = 'tls-in', \
         'src.group.id' = 'tls-bad', 'src.security.protocol' = 'SSL', 'src.schema' = 'id BIGINT');"
    );
    let run = run_sql(dir, &no_ca);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("kafka source 'src': cannot reach the brokers over SSL") && run.stderr.contains("certificate verify failed"), "{}", run.stderr);
}

/// A tansu that requires SCRAM logins, with user `alice` created before authentication is on
/// (tansu's own `user create`); with `tls`, reached only through a TLS proxy in front of it.
/// Its address and guards.
fn sasl_broker(dir: &Path, tls: bool) -> (String, Vec<Guard>) {
    let port = free_port();
    let outside = if tls { free_port() } else { port };
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let start = |auth: bool| {
        let mut c = Command::new(tansu());
        let advertised = if auth { outside } else { port };
        c.args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{port}"), "--advertised-listener-url", &format!("tcp://localhost:{advertised}")])
            // relative to the broker's directory: tansu reads `sqlite://dir/file`
            .args(["--storage-engine", "sqlite://data/tansu.db"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join(if auth { "tansu-auth.log" } else { "tansu.log" })).unwrap()));
        if auth {
            c.arg("--authentication");
        }
        let g = Guard(c.spawn().expect("tansu: install it with 'bash tests/services/kafka.sh install'"));
        wait_port(port);
        g
    };
    let open = start(false);
    let out = Command::new(tansu())
        .args(["user", "create", "--broker", &format!("tcp://localhost:{port}"), "--mechanism", "scram512", "alice", "wonder-land-pw"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tansu user create: {}", String::from_utf8_lossy(&out.stderr));
    drop(open);
    let mut guards = vec![start(true)];
    if tls {
        make_certificate(dir);
        guards.insert(0, tls_proxy(dir, outside, port));
    }
    (format!("localhost:{outside}"), guards)
}

fn sasl_client(servers: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers)
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", "alice")
        .set("sasl.password", password);
    c
}

/// [`sasl_client`] over TLS, trusting `ca`.
fn sasl_ssl_client(servers: &str, password: &str, ca: &Path) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers)
        .set("security.protocol", "sasl_ssl")
        .set("ssl.ca.location", ca.to_str().unwrap())
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", "alice")
        .set("sasl.password", password);
    c
}

/// A SCRAM login: the job reads every message; a wrong password is refused at start, by name.
#[test]
fn a_job_logs_in_with_scram_and_a_wrong_password_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (servers, _broker) = sasl_broker(dir, false);
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = sasl_client(&servers, "wonder-land-pw").create().unwrap();
        let made =
            futures::executor::block_on(admin.create_topics(
                &[NewTopic::new("sasl-in", 1, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ))
            .expect("create a topic with SASL");
        for r in made {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    }
    let p: BaseProducer = sasl_client(&servers, "wonder-land-pw").create().unwrap();
    let rows: Vec<String> = (0..100).map(|i| format!("{{\"id\": {i}}}")).collect();
    for r in &rows {
        p.send(BaseRecord::<(), str>::to("sasl-in").payload(r.as_str())).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let job = |password: &str| {
        format!(
            "CREATE STREAM s AS SELECT id FROM src INTO out WITH ('src.type' = 'kafka_source', 'src.bootstrap.servers' = '{servers}', \
             'src.topic' = 'sasl-in', 'src.group.id' = 'sasl-group', 'src.schema' = 'id BIGINT', 'src.security.protocol' = 'SASL_PLAINTEXT', \
             'src.sasl.mechanism' = 'SCRAM-SHA-512', 'src.sasl.username' = 'alice', 'src.sasl.password' = '{password}', \
             'out.type' = 'file_sink', 'out.path' = 'out.jsonl');"
        )
    };
    let run = run_sql(dir, &job("not-the-pw"));
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(run.stderr.contains("cannot reach the brokers over SASL_PLAINTEXT") && run.stderr.contains("SASL authentication error"), "{}", run.stderr);
    assert!(!run.stderr.contains("not-the-pw"), "{}", run.stderr);
    let (out, stderr) = run_until_rows(dir, &job("wonder-land-pw"), rows.len());
    assert!(!stderr.contains("wonder-land-pw"), "{stderr}");
    assert_same_rows("rows read after a SCRAM login", &canonical_lines(&std::fs::read_to_string(&out).unwrap_or_default()), &canonical_lines(&rows.join("\n")));
}

/// Both at once (`SASL_SSL`): a SCRAM login over TLS only. The job reads every message and
/// writes them to another topic, both with `SASL_SSL`; the copy read back by the test's own
/// client is exact. A wrong password, and a missing CA, each stop the job at start by name.
#[test]
fn a_job_logs_in_with_scram_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (servers, _guards) = sasl_broker(dir, true);
    let ca = dir.join("cert.pem");
    let client = |password: &str| sasl_ssl_client(&servers, password, &ca);
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = client("wonder-land-pw").create().unwrap();
        let topics = [NewTopic::new("both-in", 1, TopicReplication::Fixed(1)), NewTopic::new("both-out", 1, TopicReplication::Fixed(1))];
        let made = futures::executor::block_on(admin.create_topics(&topics, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))
            .expect("create topics with SASL_SSL");
        for r in made {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    }
    let p: BaseProducer = client("wonder-land-pw").create().unwrap();
    let rows: Vec<String> = (0..150).map(|i| format!("{{\"id\": {i}, \"v\": \"s{}\"}}", i % 5)).collect();
    for r in &rows {
        p.send(BaseRecord::<(), str>::to("both-in").payload(r.as_str())).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let job = |password: &str, with_ca: bool| {
        let secure = |n: &str| {
            format!(
                "'{n}.bootstrap.servers' = '{servers}', '{n}.security.protocol' = 'SASL_SSL', '{n}.sasl.mechanism' = 'SCRAM-SHA-512', \
                 '{n}.sasl.username' = 'alice', '{n}.sasl.password' = '{password}'{}",
                if with_ca { format!(", '{n}.ssl.ca.location' = '{}'", ca.display()) } else { String::new() }
            )
        };
        format!(
            "CREATE STREAM s AS SELECT id, v FROM src INTO out, copy WITH ('src.type' = 'kafka_source', {}, 'src.topic' = 'both-in', \
             'src.group.id' = 'both-group', 'src.schema' = 'id BIGINT, v VARCHAR', 'out.type' = 'file_sink', 'out.path' = 'out.jsonl', \
             'copy.type' = 'kafka_sink', {}, 'copy.topic' = 'both-out');",
            secure("src"),
            secure("copy")
        )
    };
    let refused = run_sql(dir, &job("not-the-pw", true));
    assert_ne!(refused.status, 0, "{}", refused.stderr);
    assert!(refused.stderr.contains("cannot reach the brokers over SASL_SSL") && refused.stderr.contains("SASL authentication error"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("not-the-pw"), "{}", refused.stderr);
    let unverified = run_sql(dir, &job("wonder-land-pw", false));
    assert_ne!(unverified.status, 0, "{}", unverified.stderr);
    assert!(unverified.stderr.contains("certificate verify failed"), "{}", unverified.stderr);
    let (out, stderr) = run_until_rows(dir, &job("wonder-land-pw", true), rows.len());
    assert!(!stderr.contains("wonder-land-pw"), "{stderr}");
    let want = canonical_lines(&rows.join("\n"));
    assert_same_rows("rows read with SASL_SSL", &canonical_lines(&std::fs::read_to_string(&out).unwrap_or_default()), &want);
    let back = read_back(client("wonder-land-pw"), "both-out", rows.len());
    assert_same_rows("rows written with SASL_SSL", &canonical_lines(&back.join("\n")), &want);
}
