//! Kafka end to end: Nexmark bids produced to a topic, `ferris-sql run` filtering and projecting
//! them into another topic. Prints throughput (records/s), end-to-end latency percentiles under
//! the `low_latency` batch strategy, and the job's peak RSS.
//!
//! ```text
//! bash tests/services/kafka.sh start
//! cargo run --release -p ferris-bench --bin nexmark-gen -- --events 1000000 --out target/nexmark/1000000
//! cargo build --release --bin ferris-sql
//! cargo run --release -p ferris-bench --bin kafka-bench -- --bids target/nexmark/1000000/bid.jsonl --records 500000
//! ```
//!
//! `KAFKA_BENCH_LOG=info` shows the job's log (default: warnings only).
//! `KAFKA_BENCH_WITH="'bid.commit.interval' = '10s'"` adds keys to the job's WITH clause.
//! `KAFKA_BENCH_PIPE_FIRST=1` runs the bare pipe before the job rather than after it (the broker
//! slows as what it holds grows).
//! `--records 0` runs only the latency runs; `--mock` runs against librdkafka's mock cluster
//! (in this process) instead of the broker, to separate what the job adds from the broker's own
//! latency (the first latency row measures that floor: one hop with no job).
//!
//! The throughput run ends with librdkafka's bare pipe through the same broker (consume every
//! message of the input topic, produce it again unchanged): the most any job could do here.
//! Both are timed first to last record and over the middle 90% of the records (from 5% to 95%:
//! the steady rate, without the start and without the job's final partial batch, which waits
//! `batch.timeout` for rows that never come).
//!
//! The job's query (Nexmark q1's shape, into Kafka):
//! `SELECT auction, bidder, price * 908 / 1000 AS price_eur, date_time, sent_us FROM bid WHERE price > 1000`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Kafka benchmark options.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// The broker.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Nexmark bids as JSON Lines (from nexmark-gen).
    #[arg(long, default_value = "target/nexmark/1000000/bid.jsonl")]
    bids: PathBuf,
    /// Records for the throughput run (0: the latency runs only).
    #[arg(long, default_value_t = 500_000)]
    records: usize,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Messages per second in the latency run.
    #[arg(long, default_value_t = 2000)]
    rate: usize,
    /// Seconds of the latency run (0: none).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of a back-pressure run after the others: the whole backlog in a topic, the job
    /// writing to a slow sink (a blackhole taking 1 s per batch); prints the job's RSS over
    /// time (0: no such run).
    #[arg(long, default_value_t = 0)]
    backpressure: u64,
    /// Use librdkafka's mock cluster (in this process, over TCP) instead of `--bootstrap`: a
    /// broker with next to no latency of its own, to see what the job adds.
    #[arg(long)]
    mock: bool,
    /// The ferris-sql binary.
    #[arg(long, default_value = "target/release/ferris-sql")]
    ferris: PathBuf,
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn topic(name: &str) -> String {
    format!("bench-{name}-{}", now_us() % 1_000_000_000)
}

fn create(args: &Args, name: &str, partitions: i32) {
    if let Some(m) = MOCK.get() {
        m.0.create_topic(name, partitions, 1).expect("create topic on the mock cluster");
        return;
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &args.bootstrap).create().expect("admin client");
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let res = ferris_bench::block_on(admin.create_topics([&t], &AdminOptions::new())).expect("create topic");
    for r in res {
        r.expect("create topic");
    }
}

fn producer(args: &Args) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, topic: &str, value: &str) {
    let mut rec = Some(BaseRecord::<(), str>::to(topic).payload(value));
    while let Some(r) = rec.take() {
        if let Err((_, back)) = p.send(r) {
            p.poll(Duration::from_millis(5));
            rec = Some(back);
        }
    }
}

/// Adds `"sent_us": N` to a JSON object line.
fn stamped(line: &str) -> String {
    format!("{}, \"sent_us\": {}}}", line.trim_end().trim_end_matches('}'), now_us())
}

fn price_of(line: &str) -> i64 {
    line.split("\"price\":").nth(1).and_then(|r| r.split(',').next()).and_then(|p| p.trim().parse().ok()).unwrap_or(0)
}

/// The job of every run: Nexmark q1's shape, from `input` into `output`. Each run has a
/// consumer group of its own: on tansu, a group whose earlier members read another topic was
/// seen never to rebalance for a new member (100 s without an assignment).
fn job_sql(args: &Args, input: &str, output: &str, batch: &str) -> String {
    format!(
        "CREATE STREAM kafka_bench AS SELECT auction, bidder, price * 908 / 1000 AS price_eur, date_time, sent_us FROM bid WHERE price > 1000 \
         INTO out WITH ('bid.type' = 'kafka_source', 'bid.bootstrap.servers' = '{b}', 'bid.topic' = '{input}', 'bid.group.id' = 'group-{input}', \
         'bid.schema' = 'auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time VARCHAR, extra VARCHAR, sent_us BIGINT', \
         'bid.session.timeout.ms' = '6000', 'bid.fetch.wait.max.ms' = '10', 'bid.fetch.error.backoff.ms' = '10', \
         'out.type' = 'kafka_sink', 'out.bootstrap.servers' = '{b}', 'out.topic' = '{output}', 'out.linger.ms' = '1', \
         'checkpoint.dir' = '{ck}' {batch}{extra});",
        b = args.bootstrap,
        // a checkpoint directory of its own: a run must not restore an earlier run's checkpoint
        ck = std::env::temp_dir().join(format!("kafka_bench_checkpoints_{}", now_us())).display(),
        extra = std::env::var("KAFKA_BENCH_WITH").map(|w| format!(", {w}")).unwrap_or_default()
    )
}

fn start_job(args: &Args, sql: &str, dir: &Path) -> Child {
    let file = dir.join(format!("kafka_bench_{}.sql", now_us()));
    std::fs::write(&file, sql).expect("write the job");
    Command::new(&args.ferris)
        .args(["run", file.to_str().unwrap_or_default(), "--no-progress", "--report-json"])
        .env("RUST_LOG", std::env::var("KAFKA_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ferris-sql")
}

/// Stops the job with SIGINT and returns its peak RSS in MiB.
fn stop_job(child: Child) -> Option<f64> {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|v| v["peak_rss_mb"].as_f64())
}

fn consumer(args: &Args, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", format!("bench-reader-{}", now_us()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("fetch.error.backoff.ms", "10")
        .create()
        .expect("consumer");
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning).expect("partition");
        }
    }
    c.assign(&tpl).expect("assign");
    c
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// The mock cluster of `--mock`, kept for the whole run.
struct Mock(rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>);
// SAFETY: librdkafka's mock cluster is thread-safe; the wrapper only hands out `&self` calls.
unsafe impl Send for Mock {}
unsafe impl Sync for Mock {}
static MOCK: std::sync::OnceLock<Mock> = std::sync::OnceLock::new();

fn main() {
    let mut args = Args::parse();
    if args.mock {
        let m = MOCK.get_or_init(|| Mock(rdkafka::mocking::MockCluster::new(1).expect("mock cluster")));
        args.bootstrap = m.0.bootstrap_servers();
        println!("broker: librdkafka mock cluster at {}", args.bootstrap);
    }
    let latency_only = args.records == 0;
    let dir = std::env::temp_dir();
    let lines: Vec<String> = BufReader::new(std::fs::File::open(&args.bids).unwrap_or_else(|e| panic!("{}: {e} (run nexmark-gen first)", args.bids.display())))
        .lines()
        .map_while(Result::ok)
        .take(args.records.max(10_000))
        .collect();
    if !latency_only {
        throughput_run(&args, &lines[..args.records.min(lines.len())], &dir);
    }
    if args.backpressure > 0 {
        backpressure_run(&args, &lines, &dir);
    }
    if args.seconds == 0 {
        return;
    }
    // Latency: a steady rate, low_latency batches; each record carries its send time. First
    // the broker's own floor (producer → topic → consumer, one hop; the job adds a second).
    let floor_topic = topic("floor");
    create(&args, &floor_topic, 1);
    let floor = latency_run(&args, &lines, &floor_topic, &floor_topic);
    let (input, output) = (topic("lat-in"), topic("lat-out"));
    create(&args, &input, 1);
    create(&args, &output, 1);
    let job = start_job(
        &args,
        &job_sql(&args, &input, &output, ", 'batch.strategy' = 'low_latency', 'batch.low_latency_max_size' = '100', 'batch.low_latency_wait' = '5ms'"),
        &dir,
    );
    let lat = latency_run(&args, &lines, &input, &output);
    let rss = stop_job(job);
    let total = args.rate * args.seconds as usize;
    println!();
    println!("| latency run ({} records/s, low_latency max 100 rows / 5 ms) | received | P50 ms | P95 ms | P99 ms | peak RSS MiB |", args.rate);
    println!("|---|---|---|---|---|---|");
    latency_row("broker floor: producer → topic → consumer (one hop, no job)", &floor, total, None);
    latency_row("kafka → filter/project → kafka (two hops)", &lat, total, rss);
}

/// One row of the latency table: received of `total`, percentiles of `lat` (sorted µs), RSS.
fn latency_row(label: &str, lat: &[i64], total: usize, rss: Option<f64>) {
    println!(
        "| {label} | {}/{total} | {:.1} | {:.1} | {:.1} | {} |",
        lat.len(),
        percentile(lat, 0.50),
        percentile(lat, 0.95),
        percentile(lat, 0.99),
        rss.map_or("-".into(), |r| format!("{r:.0}"))
    );
}

/// Sends passing bids to `send_to` at `args.rate` for `args.seconds` and reads `read_from`:
/// the sorted latencies (µs) of the records that came back.
fn latency_run(args: &Args, lines: &[String], send_to: &str, read_from: &str) -> Vec<i64> {
    let c = consumer(args, read_from);
    let p = ClientConfig::new().set("bootstrap.servers", &args.bootstrap).set("linger.ms", "0").create::<BaseProducer>().expect("producer");
    // Warm up until the path answers (the job has joined its group).
    let warm = Instant::now();
    'warm: while warm.elapsed() < Duration::from_secs(60) {
        send(&p, send_to, &stamped(&lines[0]));
        p.flush(Duration::from_secs(5)).ok();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(500) {
            if let Some(Ok(_)) = c.poll(Duration::from_millis(50)) {
                break 'warm;
            }
        }
    }
    while c.poll(Duration::from_millis(500)).is_some() {}
    let gap = Duration::from_secs_f64(1.0 / args.rate as f64);
    let total = args.rate * args.seconds as usize;
    let mut lat = Vec::with_capacity(total);
    let start = Instant::now();
    let mut sent = 0usize;
    let mut idx = 0usize;
    while lat.len() < total && start.elapsed() < Duration::from_secs(args.seconds + 30) {
        while sent < total && start.elapsed() >= gap * sent as u32 {
            // Only bids that pass the filter, so every one comes back.
            while price_of(&lines[idx % lines.len()]) <= 1000 {
                idx += 1;
            }
            send(&p, send_to, &stamped(&lines[idx % lines.len()]));
            idx += 1;
            sent += 1;
        }
        p.poll(Duration::ZERO);
        if let Some(Ok(m)) = c.poll(Duration::from_micros(200)) {
            let now = now_us();
            if let Some(v) = m.payload().and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()) {
                if let Some(s) = v["sent_us"].as_i64() {
                    lat.push(now - s);
                }
            }
        }
    }
    lat.sort_unstable();
    lat
}

/// Throughput: the whole backlog is in the topic before the job starts.
fn throughput_run(args: &Args, lines: &[String], dir: &Path) {
    let (input, output) = (topic("bids"), topic("out"));
    create(args, &input, args.partitions);
    create(args, &output, args.partitions);
    let p = producer(args);
    let t = Instant::now();
    let mut want = 0usize;
    for l in lines {
        want += usize::from(price_of(l) > 1000);
        send(&p, &input, &stamped(l));
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    let produce_s = t.elapsed().as_secs_f64();
    // the broker slows as what it holds grows: KAFKA_BENCH_PIPE_FIRST=1 runs the bare pipe
    // before the job instead of after it, to see the order's share of the ratio
    let pipe_first = std::env::var_os("KAFKA_BENCH_PIPE_FIRST").is_some();
    let early = pipe_first.then(|| pipe_run(args, &input, lines.len()));
    let job = start_job(args, &job_sql(args, &input, &output, ""), dir);
    let started = Instant::now();
    let Watched { got, first, middle } = watch(args, &output, want, started);
    let total_s = started.elapsed().as_secs_f64();
    let steady_s = first.map_or(f64::NAN, |f| f.elapsed().as_secs_f64());
    let rss = stop_job(job);
    println!("| run | records in | records out | seconds | records/s | peak RSS MiB |");
    println!("|---|---|---|---|---|---|");
    println!("| producer (librdkafka, for scale) | {} | - | {produce_s:.2} | {:.0} | - |", lines.len(), lines.len() as f64 / produce_s);
    println!(
        "| kafka → filter/project → kafka, from job start (incl. group join) | {} | {got} | {total_s:.2} | {:.0} | {} |",
        lines.len(),
        lines.len() as f64 / total_s,
        rss.map_or("-".into(), |r| format!("{r:.0}"))
    );
    println!("| same, first to last output record | {} | {got} | {steady_s:.2} | {:.0} | |", lines.len(), lines.len() as f64 / steady_s);
    // the limit here: librdkafka alone, consuming the same topic and producing every message
    // as it came into another, no decoding, no filter (after the job, unless run before it)
    let (pipe_total, pipe_steady, pipe_middle) = early.unwrap_or_else(|| pipe_run(args, &input, lines.len()));
    println!(
        "| bare pipe: librdkafka consume → produce, every message, from start | {} | {} | {pipe_total:.2} | {:.0} | - |",
        lines.len(),
        lines.len(),
        lines.len() as f64 / pipe_total
    );
    println!(
        "| same, first to last record in its output topic | {} | {} | {pipe_steady:.2} | {:.0} | |",
        lines.len(),
        lines.len(),
        lines.len() as f64 / pipe_steady
    );
    println!();
    println!(
        "| job, 5% to 95% of the output (no final partial batch) | {} | {} | {:.2} | {:.0} | |",
        lines.len(),
        got,
        middle.seconds(),
        middle.rate(lines.len())
    );
    println!(
        "| bare pipe, 5% to 95% of its output | {} | {} | {:.2} | {:.0} | |",
        lines.len(),
        lines.len(),
        pipe_middle.seconds(),
        pipe_middle.rate(lines.len())
    );
    println!();
    println!("job / bare pipe, first to last: {:.2}×", pipe_steady / steady_s);
    println!("job / bare pipe, 5% to 95%: {:.2}×", middle.rate(lines.len()) / pipe_middle.rate(lines.len()));
    println!();
}

/// librdkafka's bare consume → produce pipe: every message of `input` (all its partitions, from
/// the beginning) produced again, payload as it came, into a new topic. Its output topic is
/// read as the job's is, by a consumer of the same settings (the same load on the broker and
/// the cores): seconds from the start, and from the first to the last message seen there.
fn pipe_run(args: &Args, input: &str, n: usize) -> (f64, f64, Middle) {
    let out = topic("pipe-out");
    create(args, &out, args.partitions);
    let started = Instant::now();
    let watcher = {
        let (args, out) = (args.clone(), out.clone());
        std::thread::spawn(move || watch(&args, &out, n, started))
    };
    let c = consumer(args, input);
    let p = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .create::<BaseProducer>()
        .expect("producer");
    let mut got = 0usize;
    while got < n && started.elapsed() < Duration::from_secs(600) {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let mut rec = Some(BaseRecord::<(), [u8]>::to(&out).payload(m.payload().unwrap_or_default()));
                while let Some(r) = rec.take() {
                    if let Err((_, back)) = p.send(r) {
                        p.poll(Duration::from_millis(1));
                        rec = Some(back);
                    }
                }
                got += 1;
                if got.is_multiple_of(1024) {
                    p.poll(Duration::ZERO);
                }
            }
            Some(Err(e)) => eprintln!("bare pipe: {e}"),
            None => {}
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    let Watched { first, middle, .. } = watcher.join().expect("the pipe's watcher");
    (started.elapsed().as_secs_f64(), first.map_or(f64::NAN, |f| f.elapsed().as_secs_f64()), middle)
}

/// What a reader of an output topic saw: records, when the first came, and the middle 90%.
struct Watched {
    got: usize,
    first: Option<Instant>,
    middle: Middle,
}

/// Reads `topic` until `want` records came (or ten minutes since `started`).
fn watch(args: &Args, topic: &str, want: usize, started: Instant) -> Watched {
    let c = consumer(args, topic);
    let (mut got, mut first) = (0usize, None::<Instant>);
    let mut middle = Middle::new(want);
    while got < want && started.elapsed() < Duration::from_secs(600) {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            got += 1;
            first.get_or_insert_with(Instant::now);
            middle.saw(got);
        }
    }
    Watched { got, first, middle }
}

/// When a count passed 5% and 95% of its total: the steady rate, without the start-up and
/// without the final partial batch (which waits `batch.timeout` for rows that never come).
struct Middle {
    total: usize,
    at5: Option<Instant>,
    at95: Option<Instant>,
}

impl Middle {
    fn new(total: usize) -> Self {
        Self { total, at5: None, at95: None }
    }

    /// `n` records seen so far.
    fn saw(&mut self, n: usize) {
        if n * 20 >= self.total {
            self.at5.get_or_insert_with(Instant::now);
        }
        if n * 20 >= self.total * 19 {
            self.at95.get_or_insert_with(Instant::now);
        }
    }

    fn seconds(&self) -> f64 {
        match (self.at5, self.at95) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => f64::NAN,
        }
    }

    /// Input records per second over the middle 90% (`input` records in all).
    fn rate(&self, input: usize) -> f64 {
        input as f64 * 0.9 / self.seconds()
    }
}

/// The job's resident memory now, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Back-pressure: a fast source (the whole backlog already in the topic) and a slow sink. The
/// job's memory must level off, not grow with the backlog.
fn backpressure_run(args: &Args, lines: &[String], dir: &Path) {
    let input = topic("bp-in");
    create(args, &input, args.partitions);
    let p = producer(args);
    for l in lines {
        send(&p, &input, &stamped(l));
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    let sql = job_sql(args, &input, "unused", "").replace(
        &format!("'out.type' = 'kafka_sink', 'out.bootstrap.servers' = '{}', 'out.topic' = 'unused', 'out.linger.ms' = '1'", args.bootstrap),
        "'out.type' = 'blackhole', 'out.delay' = '1s'",
    );
    let job = start_job(args, &sql, dir);
    let pid = job.id();
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(args.backpressure) {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(r) = rss_mib(pid) {
            samples.push((start.elapsed().as_secs_f64(), r));
        }
    }
    let peak = stop_job(job);
    println!("| back-pressure: {} records waiting, sink 1 s per batch | RSS MiB at 1 s | 2 s | 5 s | 10 s | 20 s | 30 s | last | peak |", lines.len());
    println!("|---|---|---|---|---|---|---|---|---|");
    let at = |t: f64| samples.iter().find(|(s, _)| *s >= t).map_or("-".to_string(), |(_, r)| format!("{r:.0}"));
    let last = samples.last().map_or("-".to_string(), |(s, r)| format!("{r:.0} ({s:.0} s)"));
    println!(
        "| kafka → blackhole (slow) | {} | {} | {} | {} | {} | {} | {last} | {} |",
        at(1.0),
        at(2.0),
        at(5.0),
        at(10.0),
        at(20.0),
        at(30.0),
        peak.map_or("-".into(), |r| format!("{r:.0}"))
    );
    println!();
}
