//! `http_source`: a JSON API read into Arrow batches.
//!
//! - Read once (bounded): a reference list as the side of a join, or a batch job's input.
//! - `refresh_interval`: a lookup table joined with a stream, called again that often; the join
//!   uses the newest complete answer ([`Source::refresh_interval`]).
//! - `poll_interval`: a stream; the endpoint is called that often for ever and each answer's
//!   records become rows. With `incremental.column` only rows past the last value read are kept
//!   (an API that answers with its latest N events), and that value is kept in checkpoints.
//!
//! The records are the answer itself (an array of objects, one object, or JSON lines) or the
//! array at `json.path` (`data.items`). They decode with the same vectorised JSON decoder as
//! files; a malformed record is handled by the failure strategy, named by its index.
//!
//! This is the guide's "API source" as a poller: an endpoint the job calls. Pushing rows into a
//! running job is what Kafka (or a file the job tails) is for.
//!
//! ```sql
//! SELECT t.symbol, t.price * r.rate AS price_eur FROM trades t JOIN rates r ON t.currency = r.currency
//! WITH ('rates.type' = 'http_source', 'rates.url' = 'https://api.example.com/fx',
//!       'rates.json.path' = 'data.rates', 'rates.refresh_interval' = '1m', …)
//! ```

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Scalar, StringArray};
use arrow::compute::SortOptions;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use datafusion::physical_plan::streaming::PartitionStream;
use tracing::{info, warn};

use super::Endpoint;
use crate::checkpoint::{BatchSender, ReadFn, ReaderPartition, SourceCheckpoint, UnitPositions};
use crate::error::{ConnectorError, Result};
use crate::failure::FailureStrategy;
use crate::format::decode::{json_array_to_lines, BadRecordLog, TextDecoder};
use crate::format::file_format::FileFormat;
use crate::format::schema::parse_schema;
use crate::metrics::{ConnectionStatus, ConnectorMetrics};
use crate::properties::Properties;
use crate::runtime::on_own_runtime;
use crate::source::Source;

/// The position key of an incremental source.
const POSITION_KEY: &str = "incremental";
/// The position key of an answer read once: `{"offset": i64::MAX}` when read.
const ONCE_KEY: &str = "answer";
/// Records inferred from when no `schema` is given.
const INFER_RECORDS: usize = 1000;

struct Config {
    name: String,
    endpoint: Endpoint,
    body: Option<Bytes>,
    lines: bool,
    json_path: Vec<String>,
    schema: SchemaRef,
    poll: Option<Duration>,
    refresh: Option<Duration>,
    /// The incremental column's index in `schema`.
    incremental: Option<usize>,
    batch_rows: usize,
    failure: FailureStrategy,
    metrics: Arc<ConnectorMetrics>,
}

/// Never the body (it may hold credentials) nor the headers.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config").field("name", &self.name).field("endpoint", &self.endpoint).field("poll", &self.poll).field("refresh", &self.refresh).finish()
    }
}

/// A configured HTTP source.
#[derive(Debug)]
pub struct HttpSource {
    cfg: Arc<Config>,
    positions: UnitPositions,
}

impl HttpSource {
    /// Reads the keys of `props`; without a `schema`, calls the endpoint once to infer it.
    pub fn try_new(props: &Properties, job: &Properties) -> Result<Self> {
        let endpoint = Endpoint::from_properties(props, "http_source", &["GET", "POST"])?;
        let lines = match props.get("format").or_else(|| props.get("value.format")).map(|f| f.trim().to_ascii_lowercase()) {
            None => false,
            Some(f) if f == "json" => false,
            Some(f) if matches!(f.as_str(), "jsonlines" | "jsonl" | "ndjson" | "json_lines") => true,
            Some(f) => return Err(ConnectorError::invalid(props.full_key("format"), format!("unknown format '{f}'; use json or jsonlines"))),
        };
        let body = match props.get("body") {
            Some(_) if endpoint.method == reqwest::Method::GET => {
                return Err(ConnectorError::invalid(props.full_key("body"), "a GET request has no body; set method = 'POST'"));
            }
            Some(b) => Some(Bytes::from(b.to_string())),
            None => None,
        };
        let json_path: Vec<String> = props
            .get("json.path")
            .map(|p| p.trim().trim_start_matches("$.").split('.').filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let poll = props.get_positive_duration("poll_interval")?;
        let refresh = props.get_positive_duration("refresh_interval")?;
        if poll.is_some() && refresh.is_some() {
            return Err(ConnectorError::invalid(
                props.full_key("refresh_interval"),
                "poll_interval reads the endpoint as a stream; refresh_interval re-reads it as a table: set one",
            ));
        }
        let schema = match props.get("schema") {
            Some(text) => parse_schema(text, &props.full_key("schema"))?,
            None => {
                let (e, b) = (endpoint.clone(), body.clone());
                let answer = on_own_runtime("http", async move {
                    let client = e.client()?;
                    Ok(e.call(&client, b.map(|b| (b, "application/json")), None).await?)
                })?;
                let (text, _) = records_as_lines(&answer, lines, &json_path)
                    .map_err(|m| ConnectorError::Malformed { location: format!("{} {}", endpoint.what, endpoint.display), message: m })?;
                if text.iter().all(u8::is_ascii_whitespace) {
                    return Err(ConnectorError::invalid(
                        props.full_key("schema"),
                        format!("{} answered with no records to infer the columns from; set the schema ('id BIGINT, name VARCHAR, …')", endpoint.display),
                    ));
                }
                let (s, _) = arrow_json::reader::infer_json_schema(&text[..], Some(INFER_RECORDS))
                    .map_err(|e| ConnectorError::arrow(format!("{} answer of {}", endpoint.what, endpoint.display), e))?;
                Arc::new(s)
            }
        };
        let incremental = match props.get("incremental.column") {
            Some(c) => {
                if poll.is_none() {
                    return Err(ConnectorError::invalid(
                        props.full_key("incremental.column"),
                        "keeps rows past the last one read between polls: set poll_interval too",
                    ));
                }
                Some(schema.index_of(c.trim()).map_err(|_| {
                    ConnectorError::invalid(
                        props.full_key("incremental.column"),
                        format!(
                            "the records have no column '{c}' (they have {})",
                            schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    )
                })?)
            }
            None => None,
        };
        Ok(Self {
            cfg: Arc::new(Config {
                name: props.owner().to_string(),
                endpoint,
                body,
                lines,
                json_path,
                schema,
                poll,
                refresh,
                incremental,
                batch_rows: props.get_usize("batch.size")?.unwrap_or(8192).max(1),
                failure: FailureStrategy::from_properties(props, FailureStrategy::from_properties(job, FailureStrategy::default())?)?,
                metrics: Arc::new(ConnectorMetrics::default()),
            }),
            positions: UnitPositions::default(),
        })
    }
}

/// The records of an answer as JSON lines, and the number of records: the array or object at
/// `path`, the answer's array, or the answer as it is (objects one after another).
pub fn records_as_lines(answer: &[u8], lines: bool, path: &[String]) -> std::result::Result<(Vec<u8>, usize), String> {
    if lines {
        let n = answer.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).count();
        return Ok((answer.to_vec(), n));
    }
    if path.is_empty() {
        return match answer.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => json_array_to_lines(answer).map(|(text, starts)| (text, starts.len())),
            Some(b'{') => {
                // one object (perhaps pretty-printed), or objects one after another
                let mut out = Vec::with_capacity(answer.len() + 1);
                let mut n = 0;
                for v in serde_json::Deserializer::from_slice(answer).into_iter::<serde_json::Value>() {
                    let v = v.map_err(|e| format!("record {}: {e}", n + 1))?;
                    serde_json::to_writer(&mut out, &v).map_err(|e| e.to_string())?;
                    out.push(b'\n');
                    n += 1;
                }
                Ok((out, n))
            }
            None => Ok((Vec::new(), 0)),
            Some(_) => Err("the answer is not a JSON array or object".into()),
        };
    }
    let root: serde_json::Value = serde_json::from_slice(answer).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let mut at = &root;
    for (i, seg) in path.iter().enumerate() {
        let next = match at {
            serde_json::Value::Object(m) => m.get(seg),
            serde_json::Value::Array(a) => seg.parse::<usize>().ok().and_then(|n| a.get(n)),
            _ => None,
        };
        at = next.ok_or_else(|| {
            format!("json.path '{}': the answer has no '{seg}' at '{}'", path.join("."), if i == 0 { "$".to_string() } else { path[..i].join(".") })
        })?;
    }
    let mut out = Vec::new();
    let mut n = 0;
    let mut put = |v: &serde_json::Value, out: &mut Vec<u8>| -> std::result::Result<(), String> {
        serde_json::to_writer(&mut *out, v).map_err(|e| e.to_string())?;
        out.push(b'\n');
        n += 1;
        Ok(())
    };
    match at {
        serde_json::Value::Array(items) => {
            for item in items {
                put(item, &mut out)?;
            }
        }
        serde_json::Value::Object(_) => put(at, &mut out)?,
        serde_json::Value::Null => {}
        other => return Err(format!("json.path '{}' is {other}, not an array of records", path.join("."))),
    }
    Ok((out, n))
}

impl Source for HttpSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.cfg.schema)
    }

    fn is_bounded(&self) -> bool {
        self.cfg.poll.is_none()
    }

    fn partitions(&self, projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
        let (columns, schema) = crate::source::projected_columns(&self.cfg.schema, projection);
        let reader = Arc::new(Reader { cfg: Arc::clone(&self.cfg), columns });
        let read: ReadFn = Arc::new(move |restored, tx| {
            let reader = Arc::clone(&reader);
            Box::pin(async move { reader.run(restored, &tx).await })
        });
        vec![ReaderPartition::partition(format!("http source '{}'", self.cfg.name), schema, &self.positions, Arc::clone(&self.cfg.metrics), read)]
    }

    fn metrics(&self) -> Arc<ConnectorMetrics> {
        Arc::clone(&self.cfg.metrics)
    }

    /// Executed again after a failure, a reader starts after the last value (or call) handed out.
    fn resumes_after_failure(&self) -> bool {
        true
    }

    /// Incremental: the column's last value. Read once: read or not.
    fn checkpoint(&self) -> Option<Arc<dyn SourceCheckpoint>> {
        if self.cfg.poll.is_some() && self.cfg.incremental.is_none() {
            // an answer cannot be asked for again: no position to restart from
            return None;
        }
        Some(Arc::new(self.positions.clone()))
    }

    fn refresh_interval(&self) -> Option<Duration> {
        self.cfg.refresh
    }

    fn describe(&self) -> String {
        let mode = match (self.cfg.poll, self.cfg.refresh) {
            (Some(p), _) => match self.cfg.incremental {
                Some(i) => format!("polled every {p:?}, rows past the last {}", self.cfg.schema.field(i).name()),
                None => format!("polled every {p:?}"),
            },
            (None, Some(r)) => format!("re-read every {r:?}"),
            (None, None) => "read once".into(),
        };
        let path = if self.cfg.json_path.is_empty() { String::new() } else { format!(" at {}", self.cfg.json_path.join(".")) };
        format!("http {} {}{path} ({mode})", self.cfg.endpoint.method, self.cfg.endpoint.display)
    }
}

struct Reader {
    cfg: Arc<Config>,
    columns: Vec<usize>,
}

impl Reader {
    /// Calls once, or polls for ever; Ok when done or nobody listens any more.
    async fn run(&self, restored: crate::checkpoint::Positions, tx: &BatchSender) -> Result<()> {
        let cfg = &self.cfg;
        let once = cfg.poll.is_none() && cfg.refresh.is_none();
        if once && restored.get(ONCE_KEY).and_then(|v| v.get("offset")).and_then(serde_json::Value::as_i64) == Some(i64::MAX) {
            info!(source = %cfg.name, "http source '{}': read before the checkpoint restored; not read again", cfg.name);
            return Ok(());
        }
        let mut last: Option<ArrayRef> = match (cfg.incremental, restored.get(POSITION_KEY).and_then(|v| v.get("last")).and_then(|v| v.as_str())) {
            (Some(i), Some(text)) => {
                let column = cfg.schema.field(i);
                let strict = arrow::compute::CastOptions { safe: false, ..Default::default() };
                let value = arrow::compute::cast_with_options(&StringArray::from(vec![text]), column.data_type(), &strict)
                    .map_err(|e| ConnectorError::arrow(format!("http source '{}': restoring {} = {text} from the checkpoint", cfg.name, column.name()), e))?;
                if value.is_null(0) {
                    return Err(ConnectorError::Other(format!(
                        "http source '{}': the checkpoint's {} = {text} is not a {}",
                        cfg.name,
                        column.name(),
                        column.data_type()
                    )));
                }
                info!(source = %cfg.name, "http source '{}': resuming after {} = {text}", cfg.name, column.name());
                Some(value)
            }
            _ => None,
        };
        let client = cfg.endpoint.client()?;
        let mut bad = BadRecordLog::default();
        loop {
            let answer = match cfg.endpoint.call(&client, cfg.body.clone().map(|b| (b, "application/json")), None).await {
                Ok(a) => {
                    cfg.metrics.set_status(ConnectionStatus::Connected);
                    Some(a)
                }
                // a stream outlives an outage of the service: the next poll tries again
                Err(e) if cfg.poll.is_some() && !e.rejected => {
                    cfg.metrics.set_status(ConnectionStatus::Reconnecting);
                    warn!(source = %cfg.name, "{}; polling again in {:?}", e.message, cfg.poll.unwrap_or_default());
                    None
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(answer) = answer {
                cfg.metrics.bytes.fetch_add(answer.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let batch = match self.decode(&answer, &mut bad) {
                    Ok(b) => b,
                    // an answer that is not records (a maintenance page): a stream waits for the next
                    Err(e @ ConnectorError::Malformed { .. }) if cfg.poll.is_some() && cfg.failure != FailureStrategy::FailBatch => {
                        cfg.metrics.add_errors(1);
                        warn!(source = %cfg.name, "{e}; polling again in {:?}", cfg.poll.unwrap_or_default());
                        RecordBatch::new_empty(Arc::new(cfg.schema.project(&self.wanted()).map_err(|e| ConnectorError::arrow(cfg.name.clone(), e))?))
                    }
                    Err(e) => return Err(e),
                };
                let (batch, position) = self.past_last(batch, &mut last)?;
                let done = once.then(|| (ONCE_KEY.to_string(), serde_json::json!({ "offset": i64::MAX })));
                cfg.metrics.add_batch(batch.num_rows());
                if (batch.num_rows() > 0 || position.is_some() || done.is_some()) && tx.send(Ok((batch, position.or(done)))).await.is_err() {
                    return Ok(());
                }
            }
            let Some(poll) = cfg.poll else { return Ok(()) };
            // waits in short steps: a stopping job does not wait a whole poll interval
            let until = tokio::time::Instant::now() + poll;
            while tokio::time::Instant::now() < until {
                if tx.is_closed() {
                    return Ok(());
                }
                tokio::time::sleep(poll.min(Duration::from_millis(100))).await;
            }
        }
    }

    /// The columns read: the projected ones, and the incremental column last when not projected.
    fn wanted(&self) -> Vec<usize> {
        let mut wanted = self.columns.clone();
        if let Some(i) = self.cfg.incremental {
            if !wanted.contains(&i) {
                wanted.push(i);
            }
        }
        wanted
    }

    /// One answer's records as one batch of the wanted columns.
    fn decode(&self, answer: &[u8], bad: &mut BadRecordLog) -> Result<RecordBatch> {
        let cfg = &self.cfg;
        let location = format!("{} {}", cfg.endpoint.what, cfg.endpoint.display);
        let (text, _) =
            records_as_lines(answer, cfg.lines, &cfg.json_path).map_err(|m| ConnectorError::Malformed { location: location.clone(), message: m })?;
        let wanted = self.wanted();
        let out_schema = Arc::new(cfg.schema.project(&wanted).map_err(|e| ConnectorError::arrow(location.clone(), e))?);
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(RecordBatch::new_empty(out_schema));
        }
        let mut decoder = TextDecoder::try_new(Arc::clone(&cfg.schema), Some(&wanted), FileFormat::JsonLines, cfg.batch_rows)?;
        let mut text = text;
        if text.last() != Some(&b'\n') {
            text.push(b'\n');
        }
        // records are named by their number in the answer
        let (batches, bad_records) = decoder.decode_chunk(&text, &|i| i as u64 + 1)?;
        if !bad_records.is_empty() {
            bad.handle(&cfg.name, cfg.failure, &cfg.metrics, &format!("{location} record"), &bad_records)?;
        }
        arrow::compute::concat_batches(&out_schema, &batches).map_err(|e| ConnectorError::arrow(location, e))
    }

    /// Keeps the rows past `last` (all without an incremental column), moves `last` to the
    /// greatest value kept, and drops the incremental column when it was not projected.
    fn past_last(&self, batch: RecordBatch, last: &mut Option<ArrayRef>) -> Result<(RecordBatch, Option<(String, serde_json::Value)>)> {
        let cfg = &self.cfg;
        let Some(inc) = cfg.incremental else { return Ok((batch, None)) };
        let ctx = || format!("http source '{}': incremental column", cfg.name);
        let col_at = self.wanted().iter().position(|c| *c == inc).unwrap_or(0);
        let mut batch = batch;
        if let Some(l) = last.as_ref() {
            let keep = arrow::compute::kernels::cmp::gt(batch.column(col_at), &Scalar::new(Arc::clone(l))).map_err(|e| ConnectorError::arrow(ctx(), e))?;
            batch = arrow::compute::filter_record_batch(&batch, &keep).map_err(|e| ConnectorError::arrow(ctx(), e))?;
        }
        let mut position = None;
        if batch.num_rows() > 0 {
            let top = arrow::compute::sort_limit(batch.column(col_at), Some(SortOptions { descending: true, nulls_first: false }), Some(1))
                .map_err(|e| ConnectorError::arrow(ctx(), e))?;
            if top.is_valid(0) {
                let text = arrow::util::display::array_value_to_string(&top, 0).map_err(|e| ConnectorError::arrow(ctx(), e))?;
                position = Some((POSITION_KEY.to_string(), serde_json::json!({ "last": text })));
                *last = Some(top);
            }
        }
        if !self.columns.contains(&inc) {
            let keep: Vec<usize> = (0..self.columns.len()).collect();
            batch = batch.project(&keep).map_err(|e| ConnectorError::arrow(ctx(), e))?;
        }
        Ok((batch, position))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_at_a_path_or_the_answer_itself() {
        let path = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
        let (text, n) = records_as_lines(br#"{"data":{"items":[{"a":1},{"a":2}]}}"#, false, &path("data.items")).unwrap();
        assert_eq!((String::from_utf8(text).unwrap(), n), ("{\"a\":1}\n{\"a\":2}\n".to_string(), 2));
        let (text, n) = records_as_lines(b"[{\"a\":1},\n {\"a\":2}]", false, &[]).unwrap();
        assert_eq!(n, 2);
        assert_eq!(String::from_utf8(text).unwrap().lines().count(), 2);
        assert_eq!(records_as_lines(br#"{"a":1}"#, false, &[]).unwrap().1, 1);
        assert_eq!(records_as_lines(b"{\n  \"a\": 1,\n  \"b\": [1, 2]\n}\n", false, &[]).unwrap(), (b"{\"a\":1,\"b\":[1,2]}\n".to_vec(), 1));
        assert_eq!(records_as_lines(b"{\"a\":1} {\"a\":2}", false, &[]).unwrap().1, 2);
        assert_eq!(records_as_lines(b"{\"a\":1}\n{\"a\":2}\n", true, &[]).unwrap().1, 2);
        assert_eq!(records_as_lines(br#"{"data":{"items":null}}"#, false, &path("data.items")).unwrap().1, 0);
        assert_eq!(records_as_lines(br#"{"rows":[[1],[{"a":3}]]}"#, false, &path("rows.1")).unwrap().1, 1);
        let e = records_as_lines(br#"{"data":{}}"#, false, &path("data.items")).unwrap_err();
        assert_eq!(e, "json.path 'data.items': the answer has no 'items' at 'data'");
        assert!(records_as_lines(br#"{"data":5}"#, false, &path("data")).unwrap_err().contains("not an array"));
        assert!(records_as_lines(b"<html>", false, &[]).unwrap_err().contains("not a JSON"));
    }
}
