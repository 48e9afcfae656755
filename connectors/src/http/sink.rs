//! `http_sink`: the job's rows posted to an endpoint as JSON, at most `batch_size` rows per
//! request, one request at a time and in order. A 5xx or 429 answer, a timeout or a lost
//! connection is retried with doubling waits (`retries`, `retry.backoff`), every attempt with
//! the same `Idempotency-Key`. A 4xx answer fails its request at once (the other requests of the
//! batch still go) and the job's failure strategy decides about the rows that failed: lost and
//! counted under `LogAndContinue`, the job stopped under `FailBatch`, sent again under
//! `RetryWithBackoff` (only the requests not yet answered 2xx).
//!
//! ```sql
//! SELECT device_id, AVG(temperature) AS avg_temp FROM sensors GROUP BY device_id, TUMBLE(ts, INTERVAL '1' MINUTE)
//! INTO device_dashboard
//! WITH ('device_dashboard.type' = 'http_sink', 'device_dashboard.endpoint' = 'https://dashboard-api/sensors',
//!       'device_dashboard.auth_header' = 'Bearer ${DASHBOARD_TOKEN}', 'device_dashboard.batch_size' = '50')
//! ```

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;

use super::Endpoint;
use crate::error::{ConnectorError, Result};
use crate::properties::Properties;
use crate::sink::Sink;

/// How rows are put in a request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `[{…},{…}]`, `application/json`.
    JsonArray,
    /// `{…}\n{…}\n`, `application/x-ndjson`.
    JsonLines,
}

impl BodyFormat {
    fn content_type(self) -> &'static str {
        match self {
            Self::JsonArray => "application/json",
            Self::JsonLines => "application/x-ndjson",
        }
    }
}

/// Rows per request when nothing is configured.
pub const DEFAULT_ROWS_PER_REQUEST: usize = 500;

/// A batch some of whose requests failed: a retry of the same batch (the failure strategy's)
/// sends only those. Holding the batch keeps its buffers alive, so a later batch cannot be
/// taken for it.
struct Resume {
    batch: RecordBatch,
    /// Per request: answered 2xx.
    done: Vec<bool>,
    /// Per request: the Idempotency-Key it was sent with, sent again with it.
    keys: Vec<Option<String>>,
}

/// Posts batches to an HTTP endpoint.
pub struct HttpSink {
    name: String,
    endpoint: Endpoint,
    format: BodyFormat,
    rows_per_request: usize,
    client: Option<reqwest::Client>,
    resume: Option<Resume>,
    /// `job/sink/start-millis`: with the request's number, the `Idempotency-Key`.
    key_prefix: String,
    requests: u64,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink").field("name", &self.name).field("endpoint", &self.endpoint).finish()
    }
}

impl HttpSink {
    /// Reads the sink's keys.
    pub fn try_new(props: &Properties, job: &str) -> Result<Self> {
        let endpoint = Endpoint::from_properties(props, "http_sink", &["POST", "PUT", "PATCH"])?;
        let format = match props.get("format").or_else(|| props.get("value.format")).map(|f| f.trim().to_ascii_lowercase()) {
            None => BodyFormat::JsonArray,
            Some(f) if f == "json" => BodyFormat::JsonArray,
            Some(f) if matches!(f.as_str(), "jsonlines" | "jsonl" | "ndjson" | "json_lines") => BodyFormat::JsonLines,
            Some(f) => return Err(ConnectorError::invalid(props.full_key("format"), format!("unknown format '{f}'; use json or jsonlines"))),
        };
        let mut rows = None;
        for key in ["batch_size", "batch.size", "max_batch_size"] {
            if let Some(n) = props.get_usize(key)? {
                if n == 0 {
                    return Err(ConnectorError::invalid(props.full_key(key), "must be at least 1"));
                }
                rows = Some(n);
                break;
            }
        }
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Ok(Self {
            name: props.owner().to_string(),
            key_prefix: format!("{job}/{}/{started}", props.owner()),
            endpoint,
            format,
            rows_per_request: rows.unwrap_or(DEFAULT_ROWS_PER_REQUEST),
            client: None,
            resume: None,
            requests: 0,
        })
    }

    fn encode(&self, rows: &RecordBatch) -> Result<Bytes> {
        let context = || format!("http_sink '{}'", self.name);
        let mut buf = Vec::with_capacity(rows.get_array_memory_size() / 2 + 16);
        match self.format {
            BodyFormat::JsonArray => {
                let mut w = arrow_json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow_json::writer::JsonArray>(&mut buf);
                w.write(rows).and_then(|()| w.finish()).map_err(|e| ConnectorError::arrow(context(), e))?;
                if buf.is_empty() {
                    buf.extend_from_slice(b"[]");
                }
            }
            BodyFormat::JsonLines => {
                let mut w = arrow_json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow_json::writer::LineDelimited>(&mut buf);
                w.write(rows).and_then(|()| w.finish()).map_err(|e| ConnectorError::arrow(context(), e))?;
            }
        }
        Ok(Bytes::from(buf))
    }
}

/// True when `a` and `b` are the same batch (the same column buffers), not merely equal.
fn same_batch(a: &RecordBatch, b: &RecordBatch) -> bool {
    a.num_rows() == b.num_rows()
        && a.num_columns() == b.num_columns()
        && a.num_columns() > 0
        && a.columns().iter().zip(b.columns()).all(|(x, y)| Arc::ptr_eq(x, y))
}

#[async_trait]
impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let per = self.rows_per_request;
        let requests = rows.div_ceil(per);
        let (mut done, mut keys) = match self.resume.take() {
            Some(r) if same_batch(&r.batch, batch) && r.done.len() == requests => (r.done, r.keys),
            _ => (vec![false; requests], vec![None; requests]),
        };
        let client = match &self.client {
            Some(c) => c.clone(),
            None => self.client.insert(self.endpoint.client()?).clone(),
        };
        let (mut failed_rows, mut rejected, mut first_error, mut down) = (0usize, 0usize, None, false);
        for (i, (sent, key)) in done.iter_mut().zip(keys.iter_mut()).enumerate() {
            if *sent {
                continue;
            }
            let start = i * per;
            let len = per.min(rows - start);
            if down {
                // the endpoint is down (retries exhausted): the rest waits for the next attempt
                failed_rows += len;
                continue;
            }
            let body = self.encode(&batch.slice(start, len))?;
            // a retry of the request (the failure strategy's) carries the key it first had
            let key = match key {
                Some(k) => k.clone(),
                None => {
                    self.requests += 1;
                    key.insert(format!("{}/{}", self.key_prefix, self.requests)).clone()
                }
            };
            match self.endpoint.call(&client, Some((body, self.format.content_type())), Some(&key)).await {
                Ok(_) => *sent = true,
                Err(e) => {
                    // a refused request is that request's fault: the others still go
                    failed_rows += len;
                    if e.rejected {
                        rejected += 1;
                    } else {
                        down = true;
                    }
                    first_error.get_or_insert(format!("{} (request {} of {requests})", e.message, i + 1));
                }
            }
        }
        let Some(first) = first_error else { return Ok(()) };
        self.resume = Some(Resume { batch: batch.clone(), done, keys });
        let why = match (rejected, down) {
            (0, _) => "the endpoint is not answering".to_string(),
            (n, false) => format!("{n} requests refused"),
            (n, true) => format!("{n} requests refused, then the endpoint stopped answering"),
        };
        Err(ConnectorError::PartialWrite { failed_rows, message: format!("{first}: {failed_rows} of {rows} rows not delivered ({why})") })
    }

    /// Every request is answered before `write` returns: nothing is buffered.
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.resume = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("msg", DataType::Utf8, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(StringArray::from(vec![Some("a\"b"), None]))]).unwrap()
    }

    #[test]
    fn bodies_are_json_arrays_or_lines() {
        let p = Properties::from_pairs("hook", [("url", "http://127.0.0.1:9/x"), ("batch_size", "50")]);
        let s = HttpSink::try_new(&p, "job").unwrap();
        assert_eq!(s.rows_per_request, 50);
        assert_eq!(&s.encode(&batch()).unwrap()[..], br#"[{"id":1,"msg":"a\"b"},{"id":2,"msg":null}]"#);
        assert_eq!(&s.encode(&batch().slice(0, 0)).unwrap()[..], b"[]");
        let p = Properties::from_pairs("hook", [("url", "http://127.0.0.1:9/x"), ("format", "jsonlines")]);
        let s = HttpSink::try_new(&p, "job").unwrap();
        assert_eq!(&s.encode(&batch()).unwrap()[..], b"{\"id\":1,\"msg\":\"a\\\"b\"}\n{\"id\":2,\"msg\":null}\n");
        let p = Properties::from_pairs("hook", [("url", "http://127.0.0.1:9/x"), ("format", "xml")]);
        assert!(HttpSink::try_new(&p, "job").unwrap_err().to_string().contains("'hook.format'"));
        let p = Properties::from_pairs("hook", [("url", "http://127.0.0.1:9/x"), ("batch.size", "0")]);
        assert!(HttpSink::try_new(&p, "job").unwrap_err().to_string().contains("'hook.batch.size'"));
        let b = batch();
        assert!(same_batch(&b, &b.clone()) && !same_batch(&b, &batch()));
    }
}
