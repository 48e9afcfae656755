//! The standard Nexmark event stream (the `nexmark` crate's generator, deterministic but for
//! its base time, the wall clock at generation) written as `person`, `auction` and `bid` tables
//! in JSON Lines and Parquet, and Flink's q13 side input (`side_input.csv`: `key`, `value` for
//! keys 0–9999). Used by `nexmark-gen` and by the tests that check every Nexmark query.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use nexmark::config::NexmarkConfig;
use nexmark::event::Event;
use nexmark::EventGenerator;
use parquet::arrow::ArrowWriter;

/// Rows written per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// People.
    pub person: usize,
    /// Auctions.
    pub auction: usize,
    /// Bids.
    pub bid: usize,
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

/// Writes `events` Nexmark events into `dir` (created): `{person,auction,bid}.{jsonl,parquet}`
/// and `side_input.csv`.
pub fn write_nexmark(events: usize, dir: &Path) -> Counts {
    std::fs::create_dir_all(dir).expect("create the output directory");
    let mut side = BufWriter::new(File::create(dir.join("side_input.csv")).expect("create side_input.csv"));
    writeln!(side, "key,value").expect("write side_input.csv");
    for k in 0..10_000 {
        writeln!(side, "{k},value-{k}").expect("write side_input.csv");
    }
    side.flush().expect("write side_input.csv");
    let [ps, as_, bs] = schemas();
    let (mut person, mut auction, mut bid) = (Table::new(dir, "person", ps), Table::new(dir, "auction", as_), Table::new(dir, "bid", bs));
    let gen = EventGenerator::new(NexmarkConfig::default());
    for event in gen.take(events) {
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
    Counts { person: person.close(), auction: auction.close(), bid: bid.close() }
}
