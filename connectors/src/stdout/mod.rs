//! The stdout sink: a bare `SELECT` without `INTO` writes here, and it is the fallback when
//! every configured sink has failed. On a terminal it prints tables; when piped, JSON lines.
//!
//! ```sql
//! SELECT order_id, amount FROM orders WHERE amount > 100
//! WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl');
//! ```

use std::io::{IsTerminal, Write};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::connector::{ConnectorSpec, KeyDoc, RoleSpec, SinkContext};
use crate::connector_type::ConnectorKind;
use crate::error::{ConnectorError, Result};
use crate::sink::Sink;

/// Keys a stdout sink reads.
pub const SINK_KEYS: &[KeyDoc] = &[KeyDoc::new("format", "").unused("stdout prints tables on a terminal and JSON lines otherwise", &[])];

fn create_sink(c: &SinkContext<'_>) -> Result<Box<dyn Sink>> {
    // a pipe to a slow reader blocks the writer: off the runtime's workers
    Ok(Box::new(crate::blocking_sink::OffRuntime::new(StdoutSink::new(c.props.owner()))))
}

/// The stdout connector's declaration.
pub const CONNECTOR: ConnectorSpec = ConnectorSpec {
    kind: ConnectorKind::Stdout,
    summary: "Standard output: tables on a terminal, JSON lines in a pipe; where a bare SELECT writes.",
    source: None,
    sink: Some(RoleSpec { keys: &[SINK_KEYS], passthrough: None, checkpoints: "at least once by nature: rows are shown as they come", create: create_sink }),
};

/// How the stdout sink renders batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdoutFormat {
    /// Pretty tables, for a person at a terminal.
    Table,
    /// One JSON object per line, for pipes.
    JsonLines,
}

/// Writes batches to standard output.
#[derive(Debug)]
pub struct StdoutSink {
    name: String,
    format: StdoutFormat,
}

impl StdoutSink {
    /// A stdout sink that picks tables on a terminal and JSON lines otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        let format = if std::io::stdout().is_terminal() { StdoutFormat::Table } else { StdoutFormat::JsonLines };
        Self { name: name.into(), format }
    }

    /// A stdout sink with an explicit format.
    pub fn with_format(name: impl Into<String>, format: StdoutFormat) -> Self {
        Self { name: name.into(), format }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        let err = |e| ConnectorError::arrow(format!("stdout sink '{}'", self.name), e);
        match self.format {
            StdoutFormat::Table => {
                let table = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch)).map_err(err)?;
                writeln!(out, "{table}").map_err(|e| ConnectorError::io("<stdout>", e))?;
            }
            StdoutFormat::JsonLines => {
                let mut w = arrow_json::WriterBuilder::new().with_explicit_nulls(true).build::<_, arrow_json::writer::LineDelimited>(&mut out);
                w.write(batch).map_err(err)?;
                w.finish().map_err(err)?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        std::io::stdout().flush().map_err(|e| ConnectorError::io("<stdout>", e))
    }

    async fn close(&mut self) -> Result<()> {
        self.flush().await
    }
}
