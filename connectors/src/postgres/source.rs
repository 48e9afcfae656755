//! `database_source`: a PostgreSQL table or query read with binary `COPY` into Arrow batches.
//!
//! - Read once (bounded): the table as a side of a join, or a batch job's input.
//! - `refresh_interval`: as a lookup table joined with a stream, re-read that often; the join
//!   uses the newest complete read from then on ([`Source::refresh_interval`]).
//! - `incremental.column`: a stream; every `poll_interval` reads the rows whose column is past
//!   the last value read (ordered by it), which is kept in checkpoints.
//! - `connection.pool.max_size`: a table, or a query that filters and projects one table, is
//!   read in parts over up to that many connections in one snapshot ([`super::parallel`]).
//!
//! ```sql
//! SELECT m.symbol, r.risk_category FROM market_data m JOIN instruments r ON m.symbol = r.symbol
//! WITH ('instruments.type' = 'database_source', 'instruments.connection.url' = 'jdbc:postgresql://db:5432/trading',
//!       'instruments.query' = 'SELECT * FROM reference_data.instruments WHERE active = true',
//!       'instruments.refresh_interval' = '300000');
//! ```

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::{Buf, BytesMut};
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;
use tokio_postgres::types::Type;
use tracing::{info, warn};

use super::parallel::{self, Split};
use super::types::{arrow_type, ColumnDecoder};
use super::{quote_column, quote_ident, quote_literal, Connection};
use crate::checkpoint::{BatchSender, ReadFn, ReaderPartition, SourceCheckpoint, UnitPositions};
use crate::error::{ConnectorError, Result};
use crate::metrics::{ConnectionStatus, ConnectorMetrics};
use crate::properties::Properties;
use crate::runtime::on_own_runtime;
use crate::source::Source;

/// The position key of an incremental source.
const POSITION_KEY: &str = "incremental";
/// The position key of a table read once: `{"offset": i64::MAX}` when read whole.
const TABLE_KEY: &str = "table";

/// How an incremental source polls.
#[derive(Debug, Clone)]
struct Incremental {
    column: String,
    index: usize,
    poll: Duration,
}

#[derive(Debug)]
struct Config {
    name: String,
    conn: Connection,
    /// The query as the user gave it (or `SELECT * FROM table`).
    query: String,
    schema: SchemaRef,
    types: Vec<Type>,
    refresh: Option<Duration>,
    incremental: Option<Incremental>,
    batch_rows: usize,
    /// At most this many connections read a table at once (`connection.pool.max_size`).
    pool: usize,
    /// How the query is cut into parts, when it can be and `pool` > 1.
    split: Option<Split>,
    metrics: Arc<ConnectorMetrics>,
}

/// A configured PostgreSQL source.
#[derive(Debug)]
pub struct PostgresSource {
    cfg: Arc<Config>,
    positions: UnitPositions,
}

impl PostgresSource {
    /// Reads the keys of `props` and the query's columns from the database (its schema).
    pub fn try_new(props: &Properties, _job: &Properties) -> Result<Self> {
        let conn = Connection::from_properties(props)?;
        let query = match (props.get("query"), props.get("table")) {
            (Some(q), _) => q.trim().trim_end_matches(';').to_string(),
            (None, Some(t)) => format!("SELECT * FROM {}", quote_ident(t.trim())),
            (None, None) => return Err(ConnectorError::MissingProperty { key: props.full_key("table") }),
        };
        let refresh = props.get_positive_duration("refresh_interval")?;
        let poll = props.get_positive_duration("poll_interval")?.unwrap_or(Duration::from_secs(1));
        let batch_rows = props.get_usize("batch.rows")?.unwrap_or(8192).max(1);
        let pool = super::pool_size(props)?;
        // a table is cut into parts only when more than one connection may read it, and only
        // when it is read whole (an incremental source reads in the column's order)
        let splittable = if pool > 1 && props.get("incremental.column").is_none() { parallel::plan(&query) } else { None };
        let (described, split) = {
            let conn = conn.clone();
            let q = query.clone();
            let name = props.owner().to_string();
            on_own_runtime("postgres", async move {
                let client = conn.connect().await?;
                let stmt = client.prepare(&q).await.map_err(|e| conn.error(&format!("cannot prepare '{q}'"), &e))?;
                let split = match splittable {
                    Some(s) => checked_split(&client, &stmt, s, &name).await,
                    None => None,
                };
                let columns = stmt.columns().iter().map(|c| (c.name().to_string(), c.type_().clone(), c.type_modifier())).collect::<Vec<_>>();
                Ok((columns, split))
            })?
        };
        if pool > 1 && split.is_none() {
            info!(source = %props.owner(), "postgres source '{}': read over one connection (connection.pool.max_size = {pool} cuts a table, or a query filtering one table, into parts; not this query: '{query}')", props.owner());
        }
        let mut fields = Vec::with_capacity(described.len());
        let mut types = Vec::with_capacity(described.len());
        for (name, ty, typmod) in described {
            let dt = arrow_type(&ty, typmod).map_err(|m| ConnectorError::Other(format!("postgres source '{}': column '{name}': {m}", props.owner())))?;
            fields.push(Field::new(name, dt, true));
            types.push(ty);
        }
        let schema = Arc::new(Schema::new(fields));
        let incremental = match props.get("incremental.column") {
            Some(c) => {
                let index = schema.index_of(c.trim()).map_err(|_| {
                    ConnectorError::invalid(
                        props.full_key("incremental.column"),
                        format!("the query has no column '{c}' (it has {})", schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")),
                    )
                })?;
                if refresh.is_some() {
                    return Err(ConnectorError::invalid(
                        props.full_key("refresh_interval"),
                        "an incremental source polls with poll_interval; refresh_interval re-reads a table",
                    ));
                }
                Some(Incremental { column: c.trim().to_string(), index, poll })
            }
            None => None,
        };
        Ok(Self {
            cfg: Arc::new(Config {
                name: props.owner().to_string(),
                conn,
                query,
                schema,
                types,
                refresh,
                incremental,
                batch_rows,
                pool,
                split,
                metrics: Arc::new(ConnectorMetrics::default()),
            }),
            positions: UnitPositions::default(),
        })
    }
}

impl Source for PostgresSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.cfg.schema)
    }

    fn is_bounded(&self) -> bool {
        self.cfg.incremental.is_none()
    }

    fn partitions(&self, projection: Option<&[usize]>) -> Vec<Arc<dyn PartitionStream>> {
        let (columns, schema) = crate::source::projected_columns(&self.cfg.schema, projection);
        let reader = Arc::new(Reader { cfg: Arc::clone(&self.cfg), schema: Arc::clone(&schema), columns });
        let read: ReadFn = Arc::new(move |restored, tx| {
            let reader = Arc::clone(&reader);
            Box::pin(async move { reader.run(restored, &tx).await })
        });
        vec![ReaderPartition::partition(format!("postgres source '{}'", self.cfg.name), schema, &self.positions, Arc::clone(&self.cfg.metrics), read)]
    }

    fn metrics(&self) -> Arc<ConnectorMetrics> {
        Arc::clone(&self.cfg.metrics)
    }

    /// Executed again after a failure, a reader starts after the last value (or read) handed out.
    fn resumes_after_failure(&self) -> bool {
        true
    }

    /// Incremental: the column's last value. Read once: done or not. Refreshed: nothing (a
    /// restart reads the table again).
    fn checkpoint(&self) -> Option<Arc<dyn SourceCheckpoint>> {
        Some(Arc::new(self.positions.clone()))
    }

    fn refresh_interval(&self) -> Option<Duration> {
        self.cfg.refresh
    }

    fn describe(&self) -> String {
        let mode = match (&self.cfg.incremental, self.cfg.refresh) {
            (Some(i), _) => format!("incremental on {} every {:?}", i.column, i.poll),
            (None, Some(r)) => format!("re-read every {r:?}"),
            (None, None) => "read once".into(),
        };
        let mode = match &self.cfg.split {
            Some(_) => format!("{mode}, in parts over up to {} connections, one snapshot", self.cfg.pool),
            None => mode,
        };
        format!("postgres {} '{}' ({mode})", self.cfg.conn.display, self.cfg.query)
    }
}

/// Checks that `split` reads what `stmt` does, row by row (PostgreSQL's plan is a scan of the
/// table, and the query of a part prepares with the same columns); `None` when not, with the
/// reason logged.
async fn checked_split(client: &tokio_postgres::Client, stmt: &tokio_postgres::Statement, split: Split, name: &str) -> Option<Split> {
    let not = |why: String| {
        info!(source = %name, "postgres source '{name}': read over one connection: {why}");
        None
    };
    // a TID range scan reads only its pages from PostgreSQL 14 on; before, each part would
    // read the whole table
    match client.query_one("SELECT current_setting('server_version_num')::int", &[]).await {
        Ok(row) if row.get::<_, i32>(0) >= 140_000 => {}
        Ok(row) => return not(format!("PostgreSQL {} cannot read a range of a table's pages (14 and later can)", row.get::<_, i32>(0))),
        Err(e) => return not(format!("cannot read the server's version ({})", super::describe(&e))),
    }
    // the plan of one reader: a large table's plan would otherwise be a Gather of workers
    if let Err(e) = client.batch_execute("SET max_parallel_workers_per_gather = 0").await {
        return not(format!("cannot plan the query ({})", super::describe(&e)));
    }
    // the query as a part reads it (a relation without pages, a view, fails here)
    let whole = split.part(Some(0), None)?;
    let explain = match client.simple_query(&format!("EXPLAIN (FORMAT JSON) {whole}")).await {
        Ok(msgs) => msgs.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        }),
        Err(e) => return not(format!("cannot explain the query ({})", super::describe(&e))),
    };
    if !explain.as_deref().is_some_and(parallel::plan_is_a_scan) {
        return not("PostgreSQL's plan for the query is more than a scan of one table".into());
    }
    match client.prepare(&whole).await {
        Ok(part) if part.columns().iter().map(|c| c.type_()).eq(stmt.columns().iter().map(|c| c.type_())) => Some(split),
        Ok(_) => not("a part of the query has other column types".into()),
        Err(e) => not(format!("the query cannot be cut by the table's pages ({})", super::describe(&e))),
    }
}

struct Reader {
    cfg: Arc<Config>,
    schema: SchemaRef,
    columns: Vec<usize>,
}

/// Where decoded batches go.
enum Out<'a> {
    /// Handed to the job.
    Send(&'a BatchSender),
    /// Kept, for a part of a table read in parts.
    Keep(Vec<RecordBatch>),
}

impl Out<'_> {
    /// The batches kept (none when they were sent).
    fn into_kept(self) -> Vec<RecordBatch> {
        match self {
            Out::Keep(b) => b,
            Out::Send(_) => Vec::new(),
        }
    }
}

impl Reader {
    /// The `COPY` statement for the projected columns (and the incremental column, last, when
    /// not projected) of rows past `after`.
    fn copy_statement(&self, query: &str, after: Option<&str>) -> String {
        let names = &self.cfg.schema;
        let mut cols: Vec<String> = self.columns.iter().map(|i| quote_column(names.field(*i).name())).collect();
        let mut sql = String::from("COPY (SELECT ");
        if let Some(inc) = &self.cfg.incremental {
            if !self.columns.contains(&inc.index) {
                cols.push(quote_column(&inc.column));
            }
        }
        // zero projected columns (COUNT(*)): still one row per row
        if cols.is_empty() {
            sql.push_str("1 AS \"_one\"");
        } else {
            sql.push_str(&cols.join(", "));
        }
        sql.push_str(&format!(" FROM ({query}) AS \"_q\""));
        if let Some(inc) = &self.cfg.incremental {
            let col = quote_column(&inc.column);
            if let Some(a) = after {
                sql.push_str(&format!(" WHERE {col} > {}", quote_literal(a)));
            }
            sql.push_str(&format!(" ORDER BY {col}"));
        }
        sql.push_str(") TO STDOUT (FORMAT binary)");
        sql
    }

    /// Reads once, or polls for ever (incremental); Ok when done or nobody listens any more.
    async fn run(&self, restored: crate::checkpoint::Positions, tx: &BatchSender) -> Result<()> {
        let read_once = self.cfg.incremental.is_none() && self.cfg.refresh.is_none();
        if read_once && restored.get(TABLE_KEY).and_then(|v| v.get("offset")).and_then(serde_json::Value::as_i64) == Some(i64::MAX) {
            info!(source = %self.cfg.name, "postgres source '{}': read whole before the checkpoint restored; not read again", self.cfg.name);
            return Ok(());
        }
        let mut last: Option<String> = restored.get(POSITION_KEY).and_then(|v| v.get("last")).and_then(|v| v.as_str()).map(str::to_string);
        if let Some(l) = &last {
            info!(source = %self.cfg.name, "postgres source '{}': resuming after {} = {l}", self.cfg.name, self.cfg.incremental.as_ref().map_or("", |i| i.column.as_str()));
        }
        let mut client: Option<tokio_postgres::Client> = None;
        let mut failures = 0u32;
        loop {
            let c = match &client {
                Some(c) if !c.is_closed() => c,
                _ => match self.cfg.conn.connect().await {
                    Ok(c) => {
                        self.cfg.metrics.set_status(ConnectionStatus::Connected);
                        client.insert(c)
                    }
                    Err(e) if self.cfg.incremental.is_some() && failures < 30 => {
                        // a stream outlives a database restart: retry, then give up
                        failures += 1;
                        self.cfg.metrics.set_status(ConnectionStatus::Reconnecting);
                        warn!(source = %self.cfg.name, "{e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10)))).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            // `last` moves with every batch handed out: a retry after a lost connection goes on
            // after the last row sent, not from where this read began
            let read = match &self.cfg.split {
                Some(split) => self.read_in_parts(c, split, tx).await,
                None => self.copy(c, &self.cfg.query, &mut last, &mut Out::Send(tx)).await,
            };
            match read {
                Ok(true) => failures = 0,
                Ok(false) => return Ok(()),
                Err(e) if self.cfg.incremental.is_some() && c.is_closed() && failures < 30 => {
                    failures += 1;
                    self.cfg.metrics.set_status(ConnectionStatus::Reconnecting);
                    warn!(source = %self.cfg.name, "{e}; reconnecting");
                    client = None;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let Some(inc) = &self.cfg.incremental else {
                if read_once {
                    // read whole: a restart from a later checkpoint does not read it again
                    let done = (TABLE_KEY.to_string(), serde_json::json!({ "offset": i64::MAX }));
                    let _ = tx.send(Ok((RecordBatch::new_empty(Arc::clone(&self.schema)), Some(done)))).await;
                }
                return Ok(());
            };
            // waits in short steps: a stopping job does not wait a whole poll interval
            let until = tokio::time::Instant::now() + inc.poll;
            while tokio::time::Instant::now() < until {
                if tx.is_closed() {
                    return Ok(());
                }
                tokio::time::sleep(inc.poll.min(Duration::from_millis(100))).await;
            }
        }
    }

    /// One `COPY` of the rows past `last`, moving `last` with every batch handed out. A table
    /// (not incremental) is handed over whole, as one batch, so that no checkpoint barrier
    /// falls in the middle of it (a restart reads it again, or not at all). Incremental reads
    /// come in batches of `batch.rows`, each ending before a run of rows with the same value of
    /// the column, so that a position never falls between rows of equal value. False when the
    /// receiver is gone.
    async fn copy(&self, client: &tokio_postgres::Client, query: &str, last: &mut Option<String>, out: &mut Out<'_>) -> Result<bool> {
        let sql = self.copy_statement(query, last.as_deref());
        let conn = &self.cfg.conn;
        let stream = client.copy_out(sql.as_str()).await.map_err(|e| conn.error(&format!("cannot read '{}'", self.cfg.query), &e))?;
        futures::pin_mut!(stream);
        let extra_inc = self.cfg.incremental.as_ref().filter(|i| !self.columns.contains(&i.index)).map(|i| i.index);
        let mut wanted: Vec<usize> = self.columns.clone();
        wanted.extend(extra_inc);
        let wanted_schema = Arc::new(self.cfg.schema.project(&wanted).map_err(|e| ConnectorError::arrow(format!("postgres source '{}'", self.cfg.name), e))?);
        let mut decoders = wanted
            .iter()
            .map(|i| ColumnDecoder::new(&self.cfg.types[*i], self.cfg.schema.field(*i).data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|m| ConnectorError::Other(format!("postgres source '{}': {m}", self.cfg.name)))?;
        // the COPY has one field per wanted column, or one when none is wanted (COUNT(*))
        let fields = wanted.len().max(1);
        let batch_rows = if self.cfg.incremental.is_some() { self.cfg.batch_rows } else { usize::MAX };
        let mut buf = BytesMut::new();
        let mut header_done = false;
        let mut rows = 0usize;
        let mut carry: Option<RecordBatch> = None;
        let mut ended = false;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| conn.error(&format!("reading '{}'", self.cfg.query), &e))?;
            self.cfg.metrics.bytes.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            buf.extend_from_slice(&chunk);
            if !header_done {
                if buf.len() < 19 {
                    continue;
                }
                let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
                if buf.len() < 19 + ext {
                    continue;
                }
                if &buf[..11] != b"PGCOPY\n\xff\r\n\0" {
                    return Err(ConnectorError::Other(format!("postgres source '{}': not a binary COPY stream", self.cfg.name)));
                }
                buf.advance(19 + ext);
                header_done = true;
            }
            while let Some(len) = tuple_len(&buf) {
                if len == 2 {
                    // the trailer: -1 fields
                    ended = true;
                    buf.advance(2);
                    break;
                }
                let tuple = buf.split_to(len);
                self.decode_tuple(&tuple, fields, &mut decoders, rows)?;
                rows += 1;
                if rows == batch_rows {
                    let batch = self.finish(&wanted_schema, &mut decoders, rows, carry.take())?;
                    let inc_col = if extra_inc.is_some() { Some(wanted.len() - 1) } else { self.inc_position() };
                    let (send, keep) = split_trailing_run(batch, inc_col);
                    carry = keep;
                    if !self.emit(send, extra_inc.is_some(), last, out).await? {
                        return Ok(false);
                    }
                    rows = 0;
                }
            }
            if ended {
                break;
            }
        }
        if !ended || !buf.is_empty() {
            return Err(ConnectorError::Other(format!(
                "postgres source '{}': the COPY of '{}' ended early (the connection was lost or the data is cut short)",
                self.cfg.name, self.cfg.query
            )));
        }
        let batch = self.finish(&wanted_schema, &mut decoders, rows, carry.take())?;
        if batch.num_rows() > 0 && !self.emit(Some(batch), extra_inc.is_some(), last, out).await? {
            return Ok(false);
        }
        Ok(true)
    }

    /// The index of the incremental column among the projected columns, when projected.
    fn inc_position(&self) -> Option<usize> {
        let inc = self.cfg.incremental.as_ref()?;
        self.columns.iter().position(|c| *c == inc.index)
    }

    fn decode_tuple(&self, tuple: &[u8], fields: usize, decoders: &mut [ColumnDecoder], row: usize) -> Result<()> {
        let location = |col: String| format!("postgres source '{}', row {row} of a batch, column '{col}'", self.cfg.name);
        let count = tuple.get(0..2).map_or(0, |b| i16::from_be_bytes([b[0], b[1]]));
        if usize::try_from(count).ok() != Some(fields) {
            return Err(ConnectorError::Malformed { location: location("*".into()), message: format!("{count} fields where {fields} were asked for") });
        }
        let mut at = 2;
        for (i, d) in decoders.iter_mut().enumerate() {
            let name = || if i < self.columns.len() { self.cfg.schema.field(self.columns[i]).name().clone() } else { "incremental column".into() };
            let n = tuple
                .get(at..at + 4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| ConnectorError::Malformed { location: location(name()), message: "truncated row".into() })?;
            at += 4;
            if n < 0 {
                d.append_null();
            } else {
                let end = at + n as usize;
                let value = tuple.get(at..end).ok_or_else(|| ConnectorError::Malformed { location: location(name()), message: "truncated value".into() })?;
                d.append(value).map_err(|m| ConnectorError::Malformed { location: location(name()), message: m })?;
                at = end;
            }
        }
        Ok(())
    }

    /// The decoded rows (after `carry`, rows held back from the batch before) as one batch of
    /// the wanted columns.
    fn finish(&self, schema: &SchemaRef, decoders: &mut [ColumnDecoder], rows: usize, carry: Option<RecordBatch>) -> Result<RecordBatch> {
        let err = |e| ConnectorError::arrow(format!("postgres source '{}'", self.cfg.name), e);
        let arrays: Vec<ArrayRef> = decoders.iter_mut().map(ColumnDecoder::finish).collect();
        let opts = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(Arc::clone(schema), arrays, &opts).map_err(err)?;
        match carry {
            Some(c) if c.num_rows() > 0 => arrow::compute::concat_batches(schema, [&c, &batch]).map_err(err),
            _ => Ok(batch),
        }
    }

    /// Hands `batch` out (without the incremental column when it was only read for its
    /// position), moving `last` to its last value of the incremental column. False when the
    /// receiver is gone.
    async fn emit(&self, batch: Option<RecordBatch>, extra_inc: bool, last: &mut Option<String>, out: &mut Out<'_>) -> Result<bool> {
        let Some(batch) = batch.filter(|b| b.num_rows() > 0) else { return Ok(true) };
        let mut position = None;
        if self.cfg.incremental.is_some() {
            let col = if extra_inc { Some(batch.num_columns() - 1) } else { self.inc_position() };
            if let Some(v) = col.and_then(|c| last_value(batch.column(c).as_ref())) {
                position = Some((POSITION_KEY.to_string(), serde_json::json!({ "last": v })));
                *last = Some(v);
            }
        }
        let batch = if extra_inc {
            batch.project(&(0..batch.num_columns() - 1).collect::<Vec<_>>()).map_err(|e| ConnectorError::arrow("postgres source", e))?
        } else {
            batch
        };
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            batch.columns().to_vec(),
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
        .map_err(|e| ConnectorError::arrow(format!("postgres source '{}'", self.cfg.name), e))?;
        self.cfg.metrics.add_batch(batch.num_rows());
        match out {
            Out::Send(tx) => Ok(tx.send(Ok((batch, position))).await.is_ok()),
            Out::Keep(kept) => {
                kept.push(batch);
                Ok(true)
            }
        }
    }

    /// Reads the table in parts, each over a connection of its own (`first` and up to
    /// `connection.pool.max_size - 1` more), all in the snapshot `first` exports, and hands it
    /// over whole, as one batch, as [`Self::copy`] does. False when the receiver is gone.
    async fn read_in_parts(&self, first: &tokio_postgres::Client, split: &Split, tx: &BatchSender) -> Result<bool> {
        let conn = &self.cfg.conn;
        let name = &self.cfg.name;
        // not READ ONLY: the query may call functions that write (nextval), as it may over one
        // connection; a part needs no parallel workers of its own
        first
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SET LOCAL max_parallel_workers_per_gather = 0")
            .await
            .map_err(|e| conn.error("cannot begin a read", &e))?;
        let sized = first
            .query_one("SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint, pg_export_snapshot()", &[&split.relation])
            .await;
        let (pages, snapshot): (i64, String) = match sized {
            Ok(row) => (row.get(0), row.get(1)),
            Err(e) => {
                // a standby without exported snapshots, a relation without pages of its own
                warn!(source = %name, "postgres source '{name}': cannot share a snapshot or size '{}' ({}); read over one connection", split.relation, super::describe(&e));
                first.batch_execute("ROLLBACK").await.map_err(|e| conn.error("cannot end a read", &e))?;
                return self.copy(first, &self.cfg.query, &mut None, &mut Out::Send(tx)).await;
            }
        };
        let ranges = parallel::page_ranges(u64::try_from(pages).unwrap_or(0), parallel::parts_for(u64::try_from(pages).unwrap_or(0), self.cfg.pool));
        // the other connections, opened together, each in the first one's snapshot
        let others = futures::future::try_join_all((1..ranges.len()).map(|_| async {
            let c = conn.connect().await?;
            c.batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT {}; SET LOCAL max_parallel_workers_per_gather = 0",
                quote_literal(&snapshot)
            ))
            .await
            .map_err(|e| conn.error("cannot share the read's snapshot", &e))?;
            Ok::<_, ConnectorError>(c)
        }))
        .await?;
        info!(source = %name, "postgres source '{name}': reading '{}' ({pages} pages) in {} parts over {} connections, one snapshot", split.relation, ranges.len(), ranges.len());
        let part_sql = |from, to| {
            split.part(from, to).ok_or_else(|| ConnectorError::Other(format!("postgres source '{name}': cannot cut '{}' into parts", self.cfg.query)))
        };
        // every part but the first decoded on a task of its own (another core), the first here;
        // leaving early (an error, the job stopping) drops the set, which aborts the others
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (client, (from, to))) in others.into_iter().zip(ranges.iter().skip(1)).enumerate() {
            let sql = part_sql(*from, *to)?;
            let reader = Reader { cfg: Arc::clone(&self.cfg), schema: Arc::clone(&self.schema), columns: self.columns.clone() };
            tasks.spawn(async move {
                let mut out = Out::Keep(Vec::new());
                reader.copy(&client, &sql, &mut None, &mut out).await?;
                client.batch_execute("COMMIT").await.map_err(|e| reader.cfg.conn.error("cannot end a read", &e))?;
                Ok::<_, ConnectorError>((i + 1, out.into_kept()))
            });
        }
        let (from, to) = ranges.first().copied().unwrap_or((None, None));
        let mut out = Out::Keep(Vec::new());
        self.copy(first, &part_sql(from, to)?, &mut None, &mut out).await?;
        let mut parts = vec![out.into_kept()];
        parts.resize_with(ranges.len(), Vec::new);
        while let Some(done) = tasks.join_next().await {
            let (i, part) = done.map_err(|e| ConnectorError::Other(format!("postgres source '{name}': a part of the read failed: {e}")))??;
            if let Some(slot) = parts.get_mut(i) {
                *slot = part;
            }
        }
        // in the table's page order, as one read gives them
        let batches: Vec<RecordBatch> = parts.into_iter().flatten().collect();
        first.batch_execute("COMMIT").await.map_err(|e| conn.error("cannot end a read", &e))?;
        let batch = arrow::compute::concat_batches(&self.schema, &batches).map_err(|e| ConnectorError::arrow(format!("postgres source '{name}'"), e))?;
        Ok(tx.send(Ok((batch, None))).await.is_ok())
    }
}

/// Splits `batch` before its trailing run of rows whose column `col` equals the last row's:
/// the rows to hand out now (`None` when the whole batch is one run) and the run, held back.
/// Without a column, or with a NULL last value, nothing is held back.
fn split_trailing_run(batch: RecordBatch, col: Option<usize>) -> (Option<RecordBatch>, Option<RecordBatch>) {
    let n = batch.num_rows();
    let Some(c) = col else { return (Some(batch), None) };
    if n == 0 || batch.column(c).is_null(n - 1) {
        return (Some(batch), None);
    }
    let a = batch.column(c);
    let last = a.slice(n - 1, 1);
    let Ok(same) = arrow::compute::kernels::cmp::eq(a, &arrow::array::Scalar::new(last)) else { return (Some(batch), None) };
    let mut start = n;
    while start > 0 && same.is_valid(start - 1) && same.value(start - 1) {
        start -= 1;
    }
    if start == 0 {
        return (None, Some(batch));
    }
    (Some(batch.slice(0, start)), Some(batch.slice(start, n - start)))
}

/// The length of the first complete tuple in `buf` (2 for the trailer), or `None` when more
/// bytes are needed.
fn tuple_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 2 {
        return None;
    }
    let fields = i16::from_be_bytes([buf[0], buf[1]]);
    if fields < 0 {
        return Some(2);
    }
    let mut at = 2usize;
    for _ in 0..fields {
        let n = i32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if n > 0 {
            at += n as usize;
        }
    }
    (at <= buf.len()).then_some(at)
}

/// The last value of `a` as text PostgreSQL can compare with (`2024-01-01T00:00:00Z`, `42`).
fn last_value(a: &dyn Array) -> Option<String> {
    let n = a.len();
    if n == 0 || a.is_null(n - 1) {
        return None;
    }
    let one = a.slice(n - 1, 1);
    let s = arrow::compute::cast(&one, &arrow::datatypes::DataType::Utf8).ok()?;
    let s = s.as_any().downcast_ref::<arrow::array::StringArray>()?;
    Some(s.value(0).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_are_found_whole() {
        // 2 fields: int4 7, NULL
        let mut t = vec![0u8, 2, 0, 0, 0, 4, 0, 0, 0, 7];
        t.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(tuple_len(&t), Some(t.len()));
        assert_eq!(tuple_len(&t[..7]), None);
        assert_eq!(tuple_len(&[0xff, 0xff]), Some(2));
    }

    #[test]
    fn a_batch_never_ends_inside_a_run_of_equal_positions() {
        use arrow::array::Int64Array;
        let schema = Arc::new(Schema::new(vec![Field::new("id", arrow::datatypes::DataType::Int64, true)]));
        let batch = |v: Vec<Option<i64>>| RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(v))]).unwrap();
        let (send, keep) = split_trailing_run(batch(vec![Some(1), Some(2), Some(3), Some(3)]), Some(0));
        assert_eq!((send.unwrap().num_rows(), keep.unwrap().num_rows()), (2, 2));
        let (send, keep) = split_trailing_run(batch(vec![Some(3), Some(3)]), Some(0));
        assert!(send.is_none() && keep.unwrap().num_rows() == 2);
        let (send, keep) = split_trailing_run(batch(vec![Some(3), None]), Some(0));
        assert!(send.unwrap().num_rows() == 2 && keep.is_none());
    }
}
