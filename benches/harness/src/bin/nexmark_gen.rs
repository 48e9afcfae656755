//! Writes the standard Nexmark event stream (the `nexmark` crate's generator, deterministic)
//! as `person`, `auction` and `bid` tables in JSON Lines and Parquet (and q13's `side_input.csv`), and with `--kafka` also
//! produces the JSON Lines to the topics `<prefix>-person`, `<prefix>-auction`, `<prefix>-bid`
//! (created with `--partitions` when missing): the same bytes the file benchmarks read.
//!
//! ```text
//! cargo run --release -p ferris-bench --bin nexmark-gen -- --events 10000000 --out target/nexmark
//! cargo run --release -p ferris-bench --bin nexmark-gen -- --events 1000000 --kafka 127.0.0.1:9092
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use clap::Parser;

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

fn main() {
    let args = Args::parse();
    let c = ferris_bench::nexmark_files::write_nexmark(args.events, &args.out);
    println!("{{\"events\":{},\"person\":{},\"auction\":{},\"bid\":{},\"out\":\"{}\"}}", args.events, c.person, c.auction, c.bid, args.out.display());
    if let Some(bootstrap) = &args.kafka {
        for t in ["person", "auction", "bid"] {
            let topic = format!("{}-{t}", args.topic_prefix);
            let n = produce_file(bootstrap, &args.out.join(format!("{t}.jsonl")), &topic, args.partitions);
            println!("{{\"topic\":\"{topic}\",\"messages\":{n}}}");
        }
    }
}
