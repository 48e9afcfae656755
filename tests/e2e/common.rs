//! Helpers: run the binary, read outputs, compute batch answers with DataFusion, compare rows.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, SessionContext};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A sample data file.
pub fn data(name: &str) -> String {
    repo().join("data").join(name).display().to_string()
}

/// The result of one run of the binary.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// How long one process a test starts and waits for (a job, a Python client) may run before
/// it is killed and the test fails: `FERRIS_TEST_PROCESS_TIMEOUT_SECS`, 600 s unless set. A
/// hung job then fails its own test, named, with what it printed, instead of holding up
/// the whole run until CI's limit.
fn process_timeout() -> std::time::Duration {
    let secs = std::env::var("FERRIS_TEST_PROCESS_TIMEOUT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    std::time::Duration::from_secs(secs)
}

/// `command.output()`, but killed when it runs longer than [`process_timeout`]: then the test
/// panics with the command and the end of its standard error.
pub fn output_within(command: &mut Command) -> Output {
    output_limited(command, process_timeout())
}

/// `command.output()`, but killed when it runs longer than `limit` (a test's own bound on a job
/// that must end soon): then the test panics with the command, where its threads were and the
/// end of its standard error.
pub fn output_limited(command: &mut Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    // a group of its own, so that what it started is killed with it
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let stacks = stacks_of(child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.kill();
            let _ = child.wait();
            let said = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
            let tail: String = said.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            panic!(
                "{command:?} ran for over {} s and was killed (its test's limit, or FERRIS_TEST_PROCESS_TIMEOUT_SECS); where its threads were:\n{stacks}\nthe end of its stderr:\n{tail}",
                limit.as_secs()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() }
}

/// Where the threads of process `pid` are, by gdb (when it is installed and may attach): each
/// thread's first line and its frames in the project's own code, to show where a hung job
/// waits.
fn stacks_of(pid: u32) -> String {
    let out = Command::new("timeout")
        .args(["60", "gdb", "-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt 40"])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Thread ") || l.contains("ferris")).take(300).collect();
            lines.join("\n")
        }
        Ok(o) => format!("(gdb could not tell: {})", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")),
        Err(e) => format!("(gdb could not run: {e})"),
    }
}

/// The [`Run`] of a finished process.
pub fn finish(out: Output) -> Run {
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `ferris-sql ARGS` in `dir`.
pub fn ferris(dir: &Path, args: &[&str]) -> Run {
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_ferris-sql")).args(args).current_dir(dir).env("RUST_LOG", "warn,ferris_engine=info,ferris_connectors=info"),
    );
    finish(out)
}

/// Runs `ferris-sql ARGS` in `dir` with exactly the environment `env` (plus PATH).
pub fn ferris_in_env(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Run {
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_ferris-sql"))
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied()),
    );
    finish(out)
}

/// Writes `sql` to `dir/job.sql` and runs it.
pub fn run_sql(dir: &Path, sql: &str) -> Run {
    let file = dir.join("job.sql");
    std::fs::write(&file, sql).unwrap();
    ferris(dir, &["run", file.to_str().unwrap()])
}

/// `WITH` entries declaring the sample sources that `sql` mentions, under their usual names.
pub fn sources_for(sql: &str) -> String {
    let all = [
        ("orders", format!("'orders.type' = 'file_source', 'orders.path' = '{}'", data("orders.jsonl"))),
        ("customers", format!("'customers.type' = 'file_source', 'customers.path' = '{}', 'customers.format' = 'csv'", data("customers.csv"))),
        ("products", format!("'products.type' = 'file_source', 'products.path' = '{}', 'products.format' = 'json'", data("products.json"))),
        ("regions", format!("'regions.type' = 'file_source', 'regions.path' = '{}'", data("regions.csv"))),
        ("shipments", format!("'shipments.type' = 'file_source', 'shipments.path' = '{}'", data("shipments.jsonl"))),
    ];
    all.iter().filter(|(n, _)| mentions(sql, n)).map(|(_, w)| w.clone()).collect::<Vec<_>>().join(",\n")
}

/// True when `sql` has `word` (lower case) as a whole word, in any case.
pub fn mentions(sql: &str, word: &str) -> bool {
    sql.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|w| w.eq_ignore_ascii_case(word))
}

/// DataFusion reads newline-delimited JSON only: writes the JSON array of `src` to `dst` as
/// JSON lines and returns `dst`.
pub fn json_array_as_lines(src: &Path, dst: &Path) -> PathBuf {
    let rows: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    std::fs::write(dst, rows.iter().map(|r| r.to_string() + "\n").collect::<String>()).unwrap();
    dst.to_path_buf()
}

/// A DataFusion session with the sample files registered by DataFusion's own readers.
pub async fn batch_context(tmp: &Path) -> SessionContext {
    let ctx = SessionContext::new();
    ferris_engine::planner::functions::register(&ctx);
    let jsonl = JsonReadOptions::default().file_extension(".jsonl");
    ctx.register_json("orders", &data("orders.jsonl"), jsonl.clone()).await.unwrap();
    ctx.register_json("shipments", &data("shipments.jsonl"), jsonl.clone()).await.unwrap();
    ctx.register_csv("customers", &data("customers.csv"), CsvReadOptions::new()).await.unwrap();
    ctx.register_csv("regions", &data("regions.csv"), CsvReadOptions::new()).await.unwrap();
    let nd = json_array_as_lines(Path::new(&data("products.json")), &tmp.join("products_batch.jsonl"));
    ctx.register_json("products", nd.to_str().unwrap(), jsonl).await.unwrap();
    ctx
}

/// Writes `dir/jobs.sql`: one job per `(name, query)`, each reading the tables `sources`
/// declares (its `WITH` properties) and writing its rows to `dir/{name}.jsonl`; returns its path.
pub fn file_sink_jobs<'a>(dir: &Path, sources: &str, cases: impl IntoIterator<Item = (&'a str, &'a str)>) -> PathBuf {
    let mut sql = String::new();
    for (name, query) in cases {
        sql.push_str(&format!(
            "CREATE STREAM {name} AS {query} INTO out_{name} WITH ({sources}, 'out_{name}.type' = 'file_sink', 'out_{name}.path' = '{}/{name}.jsonl');\n",
            dir.display()
        ));
    }
    let job = dir.join("jobs.sql");
    std::fs::write(&job, sql).unwrap();
    job
}

/// Runs `sql` in batch and returns its rows, canonical and sorted.
pub async fn batch_rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.unwrap();
    rows_of_batches(&batches)
}

/// Canonical rows of record batches (as JSON objects).
pub fn rows_of_batches(batches: &[RecordBatch]) -> Vec<String> {
    let mut buf = Vec::new();
    {
        let mut w = arrow_json_writer(&mut buf);
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }
    canonical_lines(&String::from_utf8(buf).unwrap())
}

fn arrow_json_writer(buf: &mut Vec<u8>) -> datafusion::arrow::json::Writer<&mut Vec<u8>, datafusion::arrow::json::writer::LineDelimited> {
    datafusion::arrow::json::WriterBuilder::new().with_explicit_nulls(true).build(buf)
}

/// Rounds floats (sums computed in another order differ in the last bits) and sorts keys.
fn canonical(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap();
            let r = (f * 1e6).round() / 1e6;
            if r.fract() == 0.0 && r.abs() < 1e15 {
                Value::from(r as i64)
            } else {
                serde_json::Number::from_f64(r).map(Value::Number).unwrap_or(Value::Null)
            }
        }
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, canonical(v))).collect()),
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// Canonical, sorted rows of JSON-lines text.
pub fn canonical_lines(text: &str) -> Vec<String> {
    let mut rows: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| canonical(serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}"))).to_string())
        .collect();
    rows.sort();
    rows
}

/// Reads a JSON-lines output file as canonical sorted rows.
pub fn file_rows(path: &Path) -> Vec<String> {
    canonical_lines(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Asserts equal row sets, printing the differences.
pub fn assert_same_rows(name: &str, got: &[String], want: &[String]) {
    if got != want {
        let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
        panic!("{name}: {} rows, expected {}\nmissing: {missing:#?}\nunexpected: {extra:#?}", got.len(), want.len());
    }
}

/// Asserts a run succeeded.
pub fn assert_ok(run: &Run) {
    assert_eq!(run.status, 0, "ferris-sql failed\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
}

/// Stops a running `ferris-sql` with SIGINT (as Ctrl-C would), waits for it to exit (10 s at
/// most), asserts it exited 0 and returns its stderr (the child must have piped stderr).
pub fn stop_with_sigint(child: &mut std::process::Child) -> String {
    let code = interrupt_and_wait(child);
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr);
    match code {
        Some(code) => assert_eq!(code, Some(0), "{stderr}"),
        None => panic!("the job did not stop on SIGINT within 10 s; it said:\n{stderr}"),
    }
    stderr
}

/// SIGINT to `child`, then waits (10 s at most) for it to exit: its exit code, or `None` when
/// it had to be killed.
pub fn interrupt_and_wait(child: &mut std::process::Child) -> Option<Option<i32>> {
    use std::time::{Duration, Instant};
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s.code());
        }
        if Instant::now() >= deadline {
            // killed, so that what it said can be shown
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on loopback (bound and released: free now, not reserved).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process killed when dropped.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 20 s for something to listen on 127.0.0.1:`port`.
pub fn wait_port(port: u16) {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `tests/python/<script>` with `args` (a client library reading back what a job wrote);
/// its standard output. A failure panics with its standard error and `hint` (how to start the
/// service it talks to).
pub fn python_client(script: &str, args: &[&str], hint: &str) -> String {
    let path = repo().join("tests/python").join(script);
    let out = output_within(Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())).arg(&path).args(args));
    assert!(out.status.success(), "{script} {args:?} failed ({hint}): {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
