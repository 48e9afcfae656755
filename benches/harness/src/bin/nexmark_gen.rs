//! Writes the standard Nexmark event stream (the `nexmark` crate's generator, deterministic)
//! as `person`, `auction` and `bid` tables in JSON Lines and Parquet, and with `--kafka` also
//! produces the JSON Lines to the topics `<prefix>-person`, `<prefix>-auction`, `<prefix>-bid`
//! (created with `--partitions` when missing): the same bytes the file benchmarks read.
//!
//! ```text
//! cargo run --release -p ferris-bench --bin nexmark-gen -- --events 10000000 --out target/nexmark
//! cargo run --release -p ferris-bench --bin nexmark-gen -- --events 1000000 --kafka 127.0.0.1:9092
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use clap::Parser;
use nexmark::config::NexmarkConfig;
use nexmark::event::Event;
use nexmark::EventGenerator;
use parquet::arrow::ArrowWriter;

/// Nexmark generator options.
#[derive(Parser, Debug)]
struct Args {
    /// Total events (persons + auctions + bids, in Nexmark's 1:3:46 proportion).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Output directory.
    #[arg(long, default_value = "target/nexmark")]
    out: PathBuf,
    /// Also produce the events to Kafka at this address.
    #[arg(long)]
    kafka: Option<String>,
    /// Topic name prefix for `--kafka`.
    #[arg(long, default_value = "nexmark")]
    topic_prefix: String,
    /// Partitions of topics `--kafka` creates.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
}

/// Produces each line of `file` as one message to `topic` (created when missing); the count.
fn produce_file(bootstrap: &str, file: &Path, topic: &str, partitions: i32) -> usize {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::io::BufRead;
    use std::time::Duration;
    let cfg = |extra: &[(&str, &str)]| {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", bootstrap);
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c
    };
    let admin: AdminClient<DefaultClientContext> = cfg(&[]).create().expect("Kafka admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    // an existing topic is fine: its error is ignored
    let _ = ferris_bench::block_on(admin.create_topics([&new], &AdminOptions::new()));
    let p: BaseProducer = cfg(&[("linger.ms", "5"), ("queue.buffering.max.messages", "1000000")]).create().expect("Kafka producer");
    let mut n = 0;
    for line in std::io::BufReader::new(File::open(file).expect("the generated file")).lines().map_while(Result::ok) {
        let mut rec = Some(BaseRecord::<(), str>::to(topic).payload(line.as_str()));
        while let Some(r) = rec.take() {
            if let Err((_, back)) = p.send(r) {
                p.poll(Duration::from_millis(5));
                rec = Some(back);
            }
        }
        n += 1;
    }
    p.flush(Duration::from_secs(120)).expect("every message delivered");
    n
}

const CHUNK: usize = 65_536;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn schemas() -> [SchemaRef; 3] {
    let f = |n: &str, t: DataType| Field::new(n, t, false);
    [
        Arc::new(Schema::new(vec![
            f("id", DataType::Int64),
            f("name", DataType::Utf8),
            f("email_address", DataType::Utf8),
            f("credit_card", DataType::Utf8),
            f("city", DataType::Utf8),
            f("state", DataType::Utf8),
            f("date_time", ts()),
            f("extra", DataType::Utf8),
        ])),
        Arc::new(Schema::new(vec![
            f("id", DataType::Int64),
            f("item_name", DataType::Utf8),
            f("description", DataType::Utf8),
            f("initial_bid", DataType::Int64),
            f("reserve", DataType::Int64),
            f("date_time", ts()),
            f("expires", ts()),
            f("seller", DataType::Int64),
            f("category", DataType::Int64),
            f("extra", DataType::Utf8),
        ])),
        Arc::new(Schema::new(vec![
            f("auction", DataType::Int64),
            f("bidder", DataType::Int64),
            f("price", DataType::Int64),
            f("channel", DataType::Utf8),
            f("url", DataType::Utf8),
            f("date_time", ts()),
            f("extra", DataType::Utf8),
        ])),
    ]
}

/// Column builders for one table.
enum Col {
    I(Int64Builder),
    S(StringBuilder),
    T(TimestampMillisecondBuilder),
}

impl Col {
    fn new(t: &DataType) -> Self {
        match t {
            DataType::Int64 => Col::I(Int64Builder::new()),
            DataType::Utf8 => Col::S(StringBuilder::new()),
            _ => Col::T(TimestampMillisecondBuilder::new()),
        }
    }
    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::I(b) => Arc::new(b.finish()),
            Col::S(b) => Arc::new(b.finish()),
            Col::T(b) => Arc::new(b.finish()),
        }
    }
}

struct Table {
    schema: SchemaRef,
    cols: Vec<Col>,
    rows: usize,
    total: usize,
    jsonl: BufWriter<File>,
    parquet: ArrowWriter<File>,
}

impl Table {
    fn new(dir: &Path, name: &str, schema: SchemaRef) -> Self {
        let cols = schema.fields().iter().map(|f| Col::new(f.data_type())).collect();
        let jsonl = BufWriter::with_capacity(1 << 20, File::create(dir.join(format!("{name}.jsonl"))).expect("create jsonl"));
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_max_row_group_row_count(Some(256 * 1024))
            .build();
        let parquet = ArrowWriter::try_new(File::create(dir.join(format!("{name}.parquet"))).expect("create parquet"), Arc::clone(&schema), Some(props))
            .expect("parquet writer");
        Self { schema, cols, rows: 0, total: 0, jsonl, parquet }
    }

    fn int(&mut self, i: usize, v: i64) {
        if let Col::I(b) = &mut self.cols[i] {
            b.append_value(v)
        }
    }
    fn str(&mut self, i: usize, v: &str) {
        if let Col::S(b) = &mut self.cols[i] {
            b.append_value(v)
        }
    }
    fn time(&mut self, i: usize, v: u64) {
        if let Col::T(b) = &mut self.cols[i] {
            b.append_value(v as i64)
        }
    }

    fn end_row(&mut self) {
        self.rows += 1;
        self.total += 1;
        if self.rows == CHUNK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.rows == 0 {
            return;
        }
        let cols: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), cols).expect("batch");
        self.parquet.write(&batch).expect("write parquet");
        let mut w = arrow::json::LineDelimitedWriter::new(&mut self.jsonl);
        w.write(&batch).expect("write jsonl");
        w.finish().expect("finish jsonl");
        self.rows = 0;
    }

    fn close(mut self) -> usize {
        self.flush();
        self.parquet.close().expect("close parquet");
        self.jsonl.flush().expect("flush jsonl");
        self.total
    }
}

fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out).expect("create the output directory");
    let [ps, as_, bs] = schemas();
    let (mut person, mut auction, mut bid) = (Table::new(&args.out, "person", ps), Table::new(&args.out, "auction", as_), Table::new(&args.out, "bid", bs));
    let gen = EventGenerator::new(NexmarkConfig::default());
    for event in gen.take(args.events) {
        match event {
            Event::Person(p) => {
                let t = &mut person;
                t.int(0, p.id as i64);
                t.str(1, &p.name);
                t.str(2, &p.email_address);
                t.str(3, &p.credit_card);
                t.str(4, &p.city);
                t.str(5, &p.state);
                t.time(6, p.date_time);
                t.str(7, &p.extra);
                t.end_row();
            }
            Event::Auction(a) => {
                let t = &mut auction;
                t.int(0, a.id as i64);
                t.str(1, &a.item_name);
                t.str(2, &a.description);
                t.int(3, a.initial_bid as i64);
                t.int(4, a.reserve as i64);
                t.time(5, a.date_time);
                t.time(6, a.expires);
                t.int(7, a.seller as i64);
                t.int(8, a.category as i64);
                t.str(9, &a.extra);
                t.end_row();
            }
            Event::Bid(b) => {
                let t = &mut bid;
                t.int(0, b.auction as i64);
                t.int(1, b.bidder as i64);
                t.int(2, b.price as i64);
                t.str(3, &b.channel);
                t.str(4, &b.url);
                t.time(5, b.date_time);
                t.str(6, &b.extra);
                t.end_row();
            }
        }
    }
    let counts = (person.close(), auction.close(), bid.close());
    println!("{{\"events\":{},\"person\":{},\"auction\":{},\"bid\":{},\"out\":\"{}\"}}", args.events, counts.0, counts.1, counts.2, args.out.display());
    if let Some(bootstrap) = &args.kafka {
        for t in ["person", "auction", "bid"] {
            let topic = format!("{}-{t}", args.topic_prefix);
            let n = produce_file(bootstrap, &args.out.join(format!("{t}.jsonl")), &topic, args.partitions);
            println!("{{\"topic\":\"{topic}\",\"messages\":{n}}}");
        }
    }
}
