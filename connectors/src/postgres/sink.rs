//! `database_sink`: rows into a PostgreSQL table, inserted or upserted, through a staging table
//! filled with binary `COPY`.
//!
//! - Without transactions each batch is one database transaction: `COPY` into a temporary
//!   staging table, then one `INSERT … SELECT` (upsert: `… ON CONFLICT (key) DO UPDATE`, the
//!   last row of a key in the batch winning; `_op = 'DELETE'` rows of an `EMIT CHANGES`
//!   changelog delete their key).
//! - `connection.pool.max_size` = N (without `use_transactions`): a batch of many rows is cut
//!   into up to N parts written at once, each over a connection of its own in its own
//!   transaction — `insert` in slices, `upsert` by a hash of the key, so that each key's rows
//!   go over one connection in order and a batch is done before the next one starts.
//! - Under `use_transactions` the rows of a checkpoint are staged durably at its barrier, in a
//!   staging table of the job's (`_ferris_stage_<job>_<sink>`, tagged with the checkpoint's
//!   id), and applied when the checkpoint completes, in one transaction that also removes them
//!   from staging and records the id in `_ferris_sink_commits`: a restart applies what a
//!   complete checkpoint staged exactly once and drops what a later one staged.
//!
//! ```sql
//! CREATE STREAM totals AS SELECT product, SUM(qty) AS sold FROM orders GROUP BY product EMIT CHANGES
//! INTO sold WITH ('sold.type' = 'database_sink', 'sold.connection.url' = 'postgresql://db:5432/shop',
//!                 'sold.table' = 'product_sales', 'sold.mode' = 'upsert', 'sold.primary_key' = 'product');
//! ```

use std::time::{Duration, Instant};

use arrow::array::ArrayRef;
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use tokio_postgres::Client;
use tracing::{info, warn};

use super::types::{ddl_type, CopyEncoder};
use super::{is_connection_error, quote_column, quote_ident, quote_literal, Connection};
use crate::checkpoint::Prepared;
use crate::error::{ConnectorError, Result};
use crate::properties::Properties;
use crate::runtime::on_own_runtime;
use crate::sink::{Delivery, Sink};

/// The changelog column of `EMIT CHANGES` output.
const OP_COLUMN: &str = "_op";
/// The commit record of transactional sinks.
const COMMITS_TABLE: &str = "_ferris_sink_commits";
/// How long a write keeps retrying on a lost connection before it is an error.
const RECONNECT_FOR: Duration = Duration::from_secs(30);
/// Rows a part of a batch written over pooled connections holds at least.
const MIN_ROWS_PER_PART: usize = 4096;
/// How long a part of a batch waits for a row another part holds before the batch is written
/// over one connection instead.
const PART_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// How rows reach the table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Insert,
    Upsert { keys: Vec<String> },
}

/// What the sink writes, known once the query's schema is.
#[derive(Debug, Clone)]
struct Layout {
    /// Columns written to the table (all but `_op` in upsert mode).
    columns: Vec<String>,
    /// Their indices in the output schema.
    indices: Vec<usize>,
    /// The `_op` column's index, in upsert mode.
    op: Option<usize>,
    /// Staging columns: name and type.
    stage_columns: Vec<(String, String)>,
}

/// A configured PostgreSQL sink.
pub struct PostgresSink {
    name: String,
    job: String,
    conn: Connection,
    table: String,
    mode: Mode,
    create_table: bool,
    delivery: Delivery,
    layout: std::sync::OnceLock<Layout>,
    client: Option<Client>,
    temp_stage_ready: bool,
    /// `insert` into a table whose columns have exactly the types the rows are encoded with:
    /// each batch is one binary `COPY` straight into it (no staging), set by the schema check.
    direct: std::sync::atomic::AtomicBool,
    /// Rows of the checkpoint in progress (transactional).
    pending: Vec<RecordBatch>,
    closed: bool,
    /// Connections a batch may be written over at once (`connection.pool.max_size`).
    pool: usize,
    /// The writers of a batch's other parts, each with a connection of its own (made when a
    /// batch is first cut).
    lanes: Vec<PostgresSink>,
    /// A transaction of a part of a batch is open on `client` ([`Self::begin_part`]).
    part_open: bool,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresSink({} → {} {})", self.name, self.conn.display, self.table)
    }
}

impl PostgresSink {
    /// Reads the keys of `props` and checks that the database answers (a refused connection or
    /// a wrong password is an error at start).
    pub fn try_new(props: &Properties, job: &str) -> Result<Self> {
        let conn = Connection::from_properties(props)?;
        let table = props.require("table")?.trim().to_string();
        let mode = match props.get("mode").map(|m| m.trim().to_ascii_lowercase()).as_deref() {
            None | Some("insert" | "append") => Mode::Insert,
            Some("upsert") => {
                let keys = props.get_list("primary_key").unwrap_or_default();
                if keys.is_empty() {
                    return Err(ConnectorError::MissingProperty { key: props.full_key("primary_key") });
                }
                Mode::Upsert { keys }
            }
            Some(other) => return Err(ConnectorError::invalid(props.full_key("mode"), format!("expected insert or upsert, got '{other}'"))),
        };
        let create_table = props.get_bool("create_table")?.unwrap_or(true);
        let pool = super::pool_size(props)?;
        let c = conn.clone();
        on_own_runtime("postgres", async move {
            let client = c.connect().await?;
            client.simple_query("SELECT 1").await.map_err(|e| c.error("cannot query", &e))?;
            Ok(())
        })?;
        Ok(Self {
            name: props.owner().to_string(),
            job: job.to_string(),
            conn,
            table,
            mode,
            create_table,
            delivery: Delivery::Plain,
            layout: std::sync::OnceLock::new(),
            client: None,
            temp_stage_ready: false,
            direct: std::sync::atomic::AtomicBool::new(false),
            pending: Vec::new(),
            closed: false,
            pool,
            lanes: Vec::new(),
            part_open: false,
        })
    }

    /// A writer of the same table with a connection of its own, for a part of a batch.
    fn lane(&self) -> Self {
        Self {
            name: self.name.clone(),
            job: self.job.clone(),
            conn: self.conn.clone(),
            table: self.table.clone(),
            mode: self.mode.clone(),
            create_table: false,
            delivery: Delivery::Plain,
            layout: self.layout.clone(),
            client: None,
            temp_stage_ready: false,
            direct: std::sync::atomic::AtomicBool::new(self.direct.load(std::sync::atomic::Ordering::Relaxed)),
            pending: Vec::new(),
            closed: false,
            pool: 1,
            lanes: Vec::new(),
            part_open: false,
        }
    }

    /// `batch` cut into `parts` parts: slices (`insert`), or by a hash of the key (`upsert`: all
    /// rows of a key in one part, in their order).
    fn cut(&self, batch: &RecordBatch, parts: usize) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        let Mode::Upsert { keys } = &self.mode else {
            return Ok((0..parts).map(|i| batch.slice(n * i / parts, n * (i + 1) / parts - n * i / parts)).collect());
        };
        use datafusion::common::hash_utils::{create_hashes, RandomState};
        let err = |e: String| ConnectorError::Other(format!("database_sink '{}': cutting a batch: {e}", self.name));
        let columns =
            keys.iter().map(|k| batch.column_by_name(k).cloned().ok_or_else(|| err(format!("no column '{k}'")))).collect::<Result<Vec<ArrayRef>>>()?;
        let mut hashes = vec![0u64; n];
        create_hashes(&columns, &RandomState::with_seed(0x7067_5f6c_616e_6573), &mut hashes).map_err(|e| err(e.to_string()))?;
        let mut rows: Vec<Vec<u32>> = vec![Vec::with_capacity(n / parts + 1); parts];
        for (row, h) in hashes.iter().enumerate() {
            let part = usize::try_from(*h % parts as u64).unwrap_or(0);
            rows[part].push(u32::try_from(row).map_err(|_| err("more than 4 billion rows".into()))?);
        }
        rows.into_iter().map(|r| arrow::compute::take_record_batch(batch, &arrow::array::UInt32Array::from(r)).map_err(|e| err(e.to_string()))).collect()
    }

    /// Writes one batch, cut into parts written over several connections at once when the
    /// pool allows and the batch is large enough. All or nothing, as over one connection: every
    /// part is written in a transaction left open until all are, then all commit (or, when one
    /// failed, all roll back). A lost connection retries the whole batch for [`RECONNECT_FOR`];
    /// parts waiting on each other's rows (keys PostgreSQL finds equal and Arrow does not, a
    /// second unique key) time out on `lock_timeout`, or deadlock and are broken by the server,
    /// and the batch goes over one connection.
    async fn write_pooled(&mut self, batch: &RecordBatch) -> Result<()> {
        let parts = self.pool.min(batch.num_rows() / MIN_ROWS_PER_PART).max(1);
        if parts == 1 {
            return self.write_now(batch).await;
        }
        let pieces = self.cut(batch, parts)?;
        if self.lanes.len() < parts - 1 {
            info!(sink = %self.name, "database_sink '{}': a batch of {} rows written in {parts} parts over {parts} connections", self.name, batch.num_rows());
        }
        while self.lanes.len() < parts - 1 {
            let lane = self.lane();
            self.lanes.push(lane);
        }
        let layout = self.layout()?.clone();
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let mut lanes = std::mem::take(&mut self.lanes);
            let (first, rest) = pieces.split_first().ok_or_else(|| ConnectorError::Other("database_sink: a batch cut into no parts".into()))?;
            let (mine, others) = futures::join!(
                self.begin_part(&layout, first),
                futures::future::join_all(lanes.iter_mut().zip(rest).map(|(lane, piece)| lane.begin_part(&layout, piece)))
            );
            let failure = std::iter::once(mine).chain(others).filter_map(std::result::Result::err).min_by_key(PartFailure::rank);
            let ok = failure.is_none();
            let (mine, others) = futures::join!(self.end_part(ok), futures::future::join_all(lanes.iter_mut().map(|lane| lane.end_part(ok))));
            self.lanes = lanes;
            match failure {
                None => {
                    // a commit failing after others committed: the batch is in part written,
                    // and the failure strategy's retry writes it again (as after any failure)
                    mine?;
                    return others.into_iter().collect::<Result<Vec<()>>>().map(|_| ());
                }
                Some(PartFailure::LockTimeout) => {
                    warn!(sink = %self.name, "database_sink '{}': parts of a batch waited on each other's rows (keys the database finds equal, or another unique key); this batch goes over one connection", self.name);
                    return self.write_now(batch).await;
                }
                Some(PartFailure::Lost(e)) if started.elapsed() < RECONNECT_FOR => {
                    attempt += 1;
                    warn!(sink = %self.name, "{e}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
                }
                Some(PartFailure::Lost(e) | PartFailure::Failed(e)) => return Err(e),
            }
        }
    }

    /// Writes `piece` in a transaction left open (see [`Self::end_part`]): `COPY` into the
    /// staging table and the statement moving it into the table, or `COPY` straight in.
    async fn begin_part(&mut self, layout: &Layout, piece: &RecordBatch) -> std::result::Result<(), PartFailure> {
        if piece.num_rows() == 0 {
            return Ok(());
        }
        let direct = self.direct.load(std::sync::atomic::Ordering::Relaxed);
        let data = Self::encode(layout, std::slice::from_ref(piece), (!direct).then_some(0)).map_err(PartFailure::Failed)?;
        let stage = "\"_ferris_stage\"";
        let (ddl, copy, apply) = if direct {
            (None, self.direct_copy_sql(layout), None)
        } else {
            (Some(self.stage_ddl(layout, stage, true)), Self::copy_sql(layout, stage), Some(self.apply_sql(layout, stage, None)))
        };
        self.client().await.map_err(PartFailure::Lost)?;
        let ready = self.temp_stage_ready;
        let Some(client) = self.client.as_ref() else { return Err(PartFailure::Lost(ConnectorError::Other("postgres: no connection".into()))) };
        let res: std::result::Result<(), tokio_postgres::Error> = async {
            if let Some(ddl) = ddl.as_deref().filter(|_| !ready) {
                client.batch_execute(ddl).await?;
            }
            client.batch_execute(&format!("BEGIN; SET LOCAL lock_timeout = '{}ms'", PART_LOCK_TIMEOUT.as_millis())).await?;
            let sink = client.copy_in::<_, Bytes>(copy.as_str()).await?;
            futures::pin_mut!(sink);
            sink.send(data).await?;
            sink.finish().await?;
            if let Some(apply) = &apply {
                client.batch_execute(apply).await?;
            }
            Ok(())
        }
        .await;
        self.part_open = true;
        match res {
            Ok(()) => {
                self.temp_stage_ready = true;
                Ok(())
            }
            // parts waiting on each other: past lock_timeout, or a deadlock the server broke
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
                    || e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                Err(PartFailure::LockTimeout)
            }
            Err(e) => {
                let lost = is_connection_error(&e, client);
                let err = self.conn.error(&format!("writing a part of a batch ({})", self.table), &e);
                Err(if lost { PartFailure::Lost(err) } else { PartFailure::Failed(err) })
            }
        }
    }

    /// Ends the transaction [`Self::begin_part`] left open: commits it, or rolls it back.
    async fn end_part(&mut self, commit: bool) -> Result<()> {
        if !std::mem::take(&mut self.part_open) {
            return Ok(());
        }
        let Some(client) = self.client.as_ref().filter(|c| !c.is_closed()) else {
            return if commit {
                Err(ConnectorError::Other(format!("postgres {}: the connection was lost before a part of a batch committed", self.conn.display)))
            } else {
                Ok(())
            };
        };
        match client.batch_execute(if commit { "COMMIT" } else { "ROLLBACK" }).await {
            Ok(()) => Ok(()),
            Err(e) if commit => Err(self.conn.error(&format!("committing a part of a batch ({})", self.table), &e)),
            Err(_) => {
                // a connection that cannot roll back is not used again
                self.client = None;
                Ok(())
            }
        }
    }

    fn quoted_table(&self) -> String {
        quote_ident(&self.table)
    }

    /// The durable staging table of a transactional sink: named after the job and the sink.
    fn stage_table(&self) -> String {
        let raw = format!("_ferris_stage_{}_{}", self.job, self.name);
        let clean: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' }).collect();
        if clean.len() <= 63 {
            return quote_ident(&clean);
        }
        // identifiers are cut at 63 bytes: keep them apart with a hash of the whole name
        let hash = raw.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
        quote_ident(&format!("{}_{hash:016x}", &clean[..46]))
    }

    fn layout_of(&self, schema: &Schema) -> Result<Layout> {
        let upsert = matches!(self.mode, Mode::Upsert { .. });
        let mut columns = Vec::new();
        let mut indices = Vec::new();
        let mut stage_columns = Vec::new();
        let mut op = None;
        for (i, f) in schema.fields().iter().enumerate() {
            if upsert && f.name() == OP_COLUMN {
                op = Some(i);
                stage_columns.push((OP_COLUMN.to_string(), "text".to_string()));
                continue;
            }
            let ty = ddl_type(f.data_type()).map_err(|m| ConnectorError::Other(format!("database_sink '{}': column '{}': {m}", self.name, f.name())))?;
            columns.push(f.name().clone());
            indices.push(i);
            stage_columns.push((f.name().clone(), ty));
        }
        if let Mode::Upsert { keys } = &self.mode {
            if let Some(k) = keys.iter().find(|k| !columns.contains(k)) {
                return Err(ConnectorError::invalid(
                    format!("{}.primary_key", self.name),
                    format!("the query has no column '{k}' (it has {})", columns.join(", ")),
                ));
            }
        }
        Ok(Layout { columns, indices, op, stage_columns })
    }

    fn create_table_sql(&self, layout: &Layout) -> String {
        let mut cols: Vec<String> =
            layout.stage_columns.iter().filter(|(n, _)| layout.columns.contains(n)).map(|(n, t)| format!("{} {t}", quote_column(n))).collect();
        if let Mode::Upsert { keys } = &self.mode {
            cols.push(format!("PRIMARY KEY ({})", keys.iter().map(|k| quote_column(k)).collect::<Vec<_>>().join(", ")));
        }
        format!("CREATE TABLE IF NOT EXISTS {} ({})", self.quoted_table(), cols.join(", "))
    }

    /// The statement moving staged rows (of checkpoints up to `upto`, when given) into the table.
    fn apply_sql(&self, layout: &Layout, stage: &str, upto: Option<u64>) -> String {
        let cols = layout.columns.iter().map(|c| quote_column(c)).collect::<Vec<_>>().join(", ");
        let filter = upto.map_or(String::new(), |n| format!(" WHERE \"_ferris_epoch\" <= {n}"));
        match &self.mode {
            Mode::Insert => format!("INSERT INTO {} ({cols}) SELECT {cols} FROM {stage}{filter} ORDER BY \"_ferris_seq\"", self.quoted_table()),
            Mode::Upsert { keys } => {
                let key_list = keys.iter().map(|k| quote_column(k)).collect::<Vec<_>>().join(", ");
                let mut sql = format!("WITH \"_last\" AS (SELECT DISTINCT ON ({key_list}) * FROM {stage}{filter} ORDER BY {key_list}, \"_ferris_seq\" DESC)");
                let mut live = String::new();
                if layout.op.is_some() {
                    let on = keys.iter().map(|k| format!("\"_t\".{0} = \"_last\".{0}", quote_column(k))).collect::<Vec<_>>().join(" AND ");
                    sql.push_str(&format!(
                        ", \"_gone\" AS (DELETE FROM {} AS \"_t\" USING \"_last\" WHERE {on} AND \"_last\".\"{OP_COLUMN}\" = 'DELETE')",
                        self.quoted_table()
                    ));
                    live = format!(" WHERE \"{OP_COLUMN}\" IS DISTINCT FROM 'DELETE'");
                }
                let updates: Vec<String> =
                    layout.columns.iter().filter(|c| !keys.contains(c)).map(|c| format!("{0} = EXCLUDED.{0}", quote_column(c))).collect();
                let action = if updates.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", updates.join(", ")) };
                sql.push_str(&format!(" INSERT INTO {} ({cols}) SELECT {cols} FROM \"_last\"{live} ON CONFLICT ({key_list}) DO {action}", self.quoted_table()));
                sql
            }
        }
    }

    fn stage_ddl(&self, layout: &Layout, name: &str, temporary: bool) -> String {
        let cols: Vec<String> = layout.stage_columns.iter().map(|(n, t)| format!("{} {t}", quote_column(n))).collect();
        format!(
            "CREATE {}TABLE IF NOT EXISTS {name} ({}, \"_ferris_epoch\" bigint, \"_ferris_seq\" bigserial){}",
            if temporary { "TEMPORARY " } else { "" },
            cols.join(", "),
            if temporary { " ON COMMIT DELETE ROWS" } else { "" }
        )
    }

    fn layout(&self) -> Result<&Layout> {
        self.layout.get().ok_or_else(|| ConnectorError::Other(format!("database_sink '{}': written before its schema was checked", self.name)))
    }

    async fn client(&mut self) -> Result<&Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(self.conn.connect().await?);
            self.temp_stage_ready = false;
        }
        self.client.as_ref().ok_or_else(|| ConnectorError::Other("postgres: no connection".into()))
    }

    /// Encodes `batches` as one binary `COPY`: into the staging table tagged `epoch`, or (no
    /// epoch) straight into the table.
    fn encode(layout: &Layout, batches: &[RecordBatch], epoch: Option<i64>) -> Result<Bytes> {
        let mut out = BytesMut::new();
        CopyEncoder::header(&mut out);
        for b in batches {
            let mut cols: Vec<ArrayRef> = Vec::with_capacity(layout.stage_columns.len());
            for (i, c) in b.columns().iter().enumerate() {
                if layout.indices.contains(&i) || layout.op == Some(i) {
                    cols.push(std::sync::Arc::clone(c));
                }
            }
            CopyEncoder::rows(&mut out, &cols, epoch.as_slice()).map_err(ConnectorError::Other)?;
        }
        CopyEncoder::trailer(&mut out);
        Ok(out.freeze())
    }

    fn copy_sql(layout: &Layout, stage: &str) -> String {
        let cols: Vec<String> = layout.stage_columns.iter().map(|(n, _)| quote_column(n)).chain(std::iter::once("\"_ferris_epoch\"".to_string())).collect();
        format!("COPY {stage} ({}) FROM STDIN (FORMAT binary)", cols.join(", "))
    }

    /// Runs `work` on a live connection, reconnecting and retrying while the connection is what
    /// failed (the database restarting), for [`RECONNECT_FOR`] at most.
    async fn with_retry<F>(&mut self, what: &str, mut work: F) -> Result<()>
    where
        F: for<'a> FnMut(&'a mut Self) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<(), Attempt>> + Send + 'a>>,
    {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            if let Err(e) = self.client().await {
                if started.elapsed() > RECONNECT_FOR {
                    return Err(e);
                }
                attempt += 1;
                warn!(sink = %self.name, "{e}; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
                continue;
            }
            match work(self).await {
                Ok(()) => return Ok(()),
                Err(Attempt::NoClient) => self.client = None,
                Err(Attempt::Db(e, lost)) if lost && started.elapsed() < RECONNECT_FOR => {
                    attempt += 1;
                    warn!(sink = %self.name, "postgres {}: {what}: {}; reconnecting", self.conn.display, super::describe(&e));
                    self.client = None;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
                }
                Err(Attempt::Db(e, _)) => return Err(self.conn.error(&format!("{what} ({})", self.table), &e)),
            }
        }
    }

    /// Moves one batch into the table in one transaction (no checkpoints, or at least once).
    async fn write_now(&mut self, batch: &RecordBatch) -> Result<()> {
        let layout = self.layout()?.clone();
        if self.direct.load(std::sync::atomic::Ordering::Relaxed) {
            return self.copy_straight_in(&layout, batch).await;
        }
        let data = Self::encode(&layout, std::slice::from_ref(batch), Some(0))?;
        let stage = "\"_ferris_stage\"".to_string();
        let (ddl, copy, apply) = (self.stage_ddl(&layout, &stage, true), Self::copy_sql(&layout, &stage), self.apply_sql(&layout, &stage, None));
        self.with_retry("writing a batch", move |s| {
            let (ddl, copy, apply, data) = (ddl.clone(), copy.clone(), apply.clone(), data.clone());
            Box::pin(async move {
                let ready = s.temp_stage_ready;
                let Some(client) = s.client.as_mut() else { return Err(Attempt::NoClient) };
                let res: std::result::Result<(), tokio_postgres::Error> = async {
                    if !ready {
                        client.batch_execute(&ddl).await?;
                    }
                    let tx = client.transaction().await?;
                    let sink = tx.copy_in::<_, Bytes>(copy.as_str()).await?;
                    futures::pin_mut!(sink);
                    sink.send(data).await?;
                    sink.finish().await?;
                    tx.batch_execute(&apply).await?;
                    tx.commit().await
                }
                .await;
                match res {
                    Ok(()) => {
                        s.temp_stage_ready = true;
                        Ok(())
                    }
                    Err(e) => Err(failed(s, e)),
                }
            })
        })
        .await
    }

    /// The binary `COPY` straight into the table (no staging).
    fn direct_copy_sql(&self, layout: &Layout) -> String {
        let cols = layout.columns.iter().map(|c| quote_column(c)).collect::<Vec<_>>().join(", ");
        format!("COPY {} ({cols}) FROM STDIN (FORMAT binary)", self.quoted_table())
    }

    /// One batch as one binary `COPY` into the table (a statement: all of it or none).
    async fn copy_straight_in(&mut self, layout: &Layout, batch: &RecordBatch) -> Result<()> {
        let data = Self::encode(layout, std::slice::from_ref(batch), None)?;
        let copy = self.direct_copy_sql(layout);
        self.with_retry("writing a batch", move |s| {
            let (copy, data) = (copy.clone(), data.clone());
            Box::pin(async move {
                let Some(client) = s.client.as_mut() else { return Err(Attempt::NoClient) };
                let res: std::result::Result<u64, tokio_postgres::Error> = async {
                    let sink = client.copy_in::<_, Bytes>(copy.as_str()).await?;
                    futures::pin_mut!(sink);
                    sink.send(data).await?;
                    sink.finish().await
                }
                .await;
                res.map(|_| ()).map_err(|e| failed(s, e))
            })
        })
        .await
    }

    /// Applies what checkpoints up to `n` staged, once: the staged rows leave the staging table
    /// in the same transaction.
    async fn apply_staged(&mut self, n: u64) -> Result<()> {
        let layout = self.layout()?.clone();
        let stage = self.stage_table();
        let apply = self.apply_sql(&layout, &stage, Some(n));
        let done = format!("DELETE FROM {stage} WHERE \"_ferris_epoch\" <= {n}");
        let record = format!(
            "INSERT INTO {COMMITS_TABLE} (job, sink, checkpoint) VALUES ({}, {}, {n}) ON CONFLICT (job, sink) DO UPDATE SET checkpoint = GREATEST({COMMITS_TABLE}.checkpoint, EXCLUDED.checkpoint), committed_at = now()",
            quote_literal(&self.job),
            quote_literal(&self.name)
        );
        self.with_retry("committing a checkpoint", move |s| {
            let (apply, done, record) = (apply.clone(), done.clone(), record.clone());
            Box::pin(async move {
                let Some(client) = s.client.as_mut() else { return Err(Attempt::NoClient) };
                let res: std::result::Result<(), tokio_postgres::Error> = async {
                    let tx = client.transaction().await?;
                    tx.batch_execute(&apply).await?;
                    tx.batch_execute(&done).await?;
                    tx.batch_execute(&record).await?;
                    tx.commit().await
                }
                .await;
                res.map_err(|e| failed(s, e))
            })
        })
        .await
    }

    async fn run_sql(&mut self, what: &str, sql: String) -> Result<()> {
        self.with_retry(what, move |s| {
            let sql = sql.clone();
            Box::pin(async move {
                let Some(client) = s.client.as_mut() else { return Err(Attempt::NoClient) };
                let res = client.batch_execute(&sql).await;
                res.map_err(|e| failed(s, e))
            })
        })
        .await
    }
}

/// True when a column of PostgreSQL type `ty` takes the binary values written for a column
/// created as `ddl` (from [`ddl_type`]): the same type (any `numeric` typmod; `varchar` for
/// `text`).
fn same_type(ty: &tokio_postgres::types::Type, ddl: &str) -> bool {
    use tokio_postgres::types::Type;
    let want = match ddl {
        "boolean" => Type::BOOL,
        "smallint" => Type::INT2,
        "integer" => Type::INT4,
        "bigint" => Type::INT8,
        "real" => Type::FLOAT4,
        "double precision" => Type::FLOAT8,
        "text" => return *ty == Type::TEXT || *ty == Type::VARCHAR,
        "bytea" => Type::BYTEA,
        "date" => Type::DATE,
        "timestamp" => Type::TIMESTAMP,
        "timestamptz" => Type::TIMESTAMPTZ,
        "time" => Type::TIME,
        d if d.starts_with("numeric") => Type::NUMERIC,
        _ => return false,
    };
    *ty == want
}

/// Why a part of a batch written over pooled connections failed.
enum PartFailure {
    /// Its connection is gone: the batch may be tried again on new ones.
    Lost(ConnectorError),
    /// It waited too long for a row another part holds, or deadlocked with another part.
    LockTimeout,
    /// The database refused it.
    Failed(ConnectorError),
}

impl PartFailure {
    /// Which failure of several decides: the database's refusal, then a lock wait (another
    /// part's refusal may have caused it), then a lost connection.
    fn rank(&self) -> u8 {
        match self {
            PartFailure::Failed(_) => 0,
            PartFailure::LockTimeout => 1,
            PartFailure::Lost(_) => 2,
        }
    }
}

/// Why one attempt of a unit of work failed.
enum Attempt {
    /// The database said no, or the connection broke (`true`: retry on a new connection).
    Db(tokio_postgres::Error, bool),
    /// No connection to try on (retried).
    NoClient,
}

fn failed(s: &PostgresSink, e: tokio_postgres::Error) -> Attempt {
    let lost = s.client.as_ref().is_none_or(|c| is_connection_error(&e, c));
    Attempt::Db(e, lost)
}

#[async_trait]
impl Sink for PostgresSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn check_schema(&self, schema: &Schema) -> Result<()> {
        let layout = self.layout_of(schema)?;
        let _ = self.layout.set(layout.clone());
        let (conn, create) = (self.conn.clone(), self.create_table.then(|| self.create_table_sql(&layout)));
        let table = self.table.clone();
        let cols = layout.columns.iter().map(|c| quote_column(c)).collect::<Vec<_>>().join(", ");
        let nulls = layout.stage_columns.iter().filter(|(n, _)| layout.columns.contains(n)).map(|(_, t)| format!("NULL::{t}")).collect::<Vec<_>>().join(", ");
        let mut probe = format!("INSERT INTO {} ({cols}) SELECT {nulls} WHERE false", self.quoted_table());
        if let Mode::Upsert { keys } = &self.mode {
            probe.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", keys.iter().map(|k| quote_column(k)).collect::<Vec<_>>().join(", ")));
        }
        // insert mode: the table's own column types, to copy straight in when they are the rows'
        let columns_sql = (self.mode == Mode::Insert).then(|| format!("SELECT {cols} FROM {} LIMIT 0", self.quoted_table()));
        let wanted: Vec<String> = layout.stage_columns.iter().filter(|(n, _)| layout.columns.contains(n)).map(|(_, t)| t.clone()).collect();
        let direct = on_own_runtime("postgres", async move {
            let client = conn.connect().await?;
            if let Some(ddl) = create {
                client.batch_execute(&ddl).await.map_err(|e| conn.error(&format!("cannot create table '{table}'"), &e))?;
            }
            // checks, without writing, that the table has these columns with types the rows
            // can be assigned to (and, for upsert, a unique key on primary_key)
            client.prepare(&probe).await.map_err(|e| conn.error(&format!("table '{table}' cannot take the query's rows"), &e))?;
            let Some(sql) = columns_sql else { return Ok(false) };
            let stmt = client.prepare(&sql).await.map_err(|e| conn.error(&format!("reading the columns of '{table}'"), &e))?;
            Ok(stmt.columns().len() == wanted.len() && stmt.columns().iter().zip(&wanted).all(|(c, w)| same_type(c.type_(), w)))
        })?;
        self.direct.store(direct, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.closed {
            return Err(ConnectorError::Other(format!("database_sink '{}' is closed", self.name)));
        }
        if self.layout.get().is_none() {
            let layout = self.layout_of(batch.schema().as_ref())?;
            let _ = self.layout.set(layout);
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.delivery == Delivery::ExactlyOnce {
            self.pending.push(batch.clone());
            return Ok(());
        }
        self.write_pooled(batch).await
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        // a transactional sink publishes nothing that was not committed
        self.pending.clear();
        self.closed = true;
        self.client = None;
        self.lanes.clear();
        Ok(())
    }

    fn transactional(&self) -> bool {
        true
    }

    fn set_delivery(&mut self, job: &str, delivery: Delivery) -> Result<()> {
        self.job = job.to_string();
        self.delivery = delivery;
        if delivery == Delivery::ExactlyOnce && self.pool > 1 {
            warn!(sink = %self.name, "database_sink '{}': 'connection.pool.max_size' = {} is not applied under use_transactions: a checkpoint's rows are applied in one transaction, over one connection", self.name, self.pool);
        }
        Ok(())
    }

    async fn prepare(&mut self, checkpoint: u64) -> Result<Option<Prepared>> {
        if self.delivery != Delivery::ExactlyOnce || self.pending.is_empty() {
            return Ok(None);
        }
        let layout = self.layout()?.clone();
        let stage = self.stage_table();
        let epoch = i64::try_from(checkpoint).map_err(|_| ConnectorError::Other("checkpoint id out of range".into()))?;
        let data = Self::encode(&layout, &self.pending, Some(epoch))?;
        let (ddl, copy) = (self.stage_ddl(&layout, &stage, false), Self::copy_sql(&layout, &stage));
        self.with_retry("staging a checkpoint", move |s| {
            let (ddl, copy, data, stage) = (ddl.clone(), copy.clone(), data.clone(), stage.clone());
            Box::pin(async move {
                let Some(client) = s.client.as_mut() else { return Err(Attempt::NoClient) };
                let res: std::result::Result<(), tokio_postgres::Error> = async {
                    client.batch_execute(&ddl).await?;
                    // one transaction: a retry after a lost connection never stages twice
                    let tx = client.transaction().await?;
                    tx.batch_execute(&format!("DELETE FROM {stage} WHERE \"_ferris_epoch\" = {epoch}")).await?;
                    let sink = tx.copy_in::<_, Bytes>(copy.as_str()).await?;
                    futures::pin_mut!(sink);
                    sink.send(data).await?;
                    sink.finish().await?;
                    tx.commit().await
                }
                .await;
                res.map_err(|e| failed(s, e))
            })
        })
        .await?;
        self.pending.clear();
        Ok(None)
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        if self.delivery != Delivery::ExactlyOnce || self.layout.get().is_none() {
            return Ok(());
        }
        self.apply_staged(checkpoint).await
    }

    async fn recover(&mut self, restored: Option<(u64, Option<Prepared>)>) -> Result<()> {
        if self.delivery != Delivery::ExactlyOnce {
            return Ok(());
        }
        let stage = self.stage_table();
        let commits = format!(
            "CREATE TABLE IF NOT EXISTS {COMMITS_TABLE} (job text NOT NULL, sink text NOT NULL, checkpoint bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (job, sink))"
        );
        self.run_sql("creating the commit record", commits).await?;
        // the staging table exists from here on, so that a commit with nothing staged finds it
        let layout = self.layout()?.clone();
        let ddl = self.stage_ddl(&layout, &stage, false);
        match restored {
            Some((n, _)) => {
                self.run_sql("creating the staging table", ddl).await?;
                self.apply_staged(n).await?;
                info!(sink = %self.name, "database_sink '{}': checkpoint {n} applied; rows staged after it dropped", self.name);
                self.run_sql("dropping rows staged after the checkpoint", format!("DELETE FROM {stage} WHERE \"_ferris_epoch\" > {n}")).await
            }
            // a fresh start: what an earlier run staged never committed (and its columns may
            // be another query's)
            None => self.run_sql("dropping rows staged by an earlier run", format!("DROP TABLE IF EXISTS {stage}; {ddl}")).await,
        }
    }
}
