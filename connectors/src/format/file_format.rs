//! File formats and their options.

use std::path::Path;

use crate::error::{ConnectorError, Result};
use crate::properties::Properties;

/// The formats the file connector reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma- (or otherwise) separated values.
    Csv {
        /// The first line names the columns.
        has_headers: bool,
        /// Field separator.
        delimiter: u8,
        /// Quote character.
        quote: u8,
    },
    /// JSON: a top-level array of objects, or objects one after another (newline-delimited).
    Json,
    /// JSON Lines: one object per line.
    JsonLines,
    /// Apache Parquet.
    Parquet,
}

impl FileFormat {
    /// Reads `format` (or infers it from the path's extension) and the CSV options.
    pub fn from_properties(props: &Properties, path: &str) -> Result<Self> {
        let name = match props.get("format") {
            Some(f) => f.to_ascii_lowercase(),
            None => extension_format(path).ok_or_else(|| {
                ConnectorError::invalid(
                    props.full_key("format"),
                    format!("cannot tell the format of '{path}' from its extension; set it to csv, json, jsonlines or parquet"),
                )
            })?,
        };
        Ok(match name.as_str() {
            "csv" | "tsv" => FileFormat::Csv {
                has_headers: props.get_bool("has_headers")?.or(props.get_bool("header")?).unwrap_or(true),
                delimiter: props.get_char("delimiter")?.unwrap_or(if name == "tsv" { b'\t' } else { b',' }),
                quote: props.get_char("quote")?.unwrap_or(b'"'),
            },
            "json" => FileFormat::Json,
            "jsonl" | "jsonlines" | "json_lines" | "ndjson" => FileFormat::JsonLines,
            "parquet" => FileFormat::Parquet,
            other => return Err(ConnectorError::invalid(props.full_key("format"), format!("unknown format '{other}'; use csv, json, jsonlines or parquet"))),
        })
    }

    /// Checks that rows of `schema` can be written in this format (CSV holds no nested
    /// columns); `what` is "file" or "object".
    pub fn check_writable(&self, schema: &arrow::datatypes::Schema, what: &str) -> Result<()> {
        if let FileFormat::Csv { .. } = self {
            if let Some(f) = schema.fields().iter().find(|f| f.data_type().is_nested()) {
                return Err(ConnectorError::Other(format!(
                    "a csv {what} cannot hold column '{}' of type {}; write jsonlines or parquet, or select scalar columns",
                    f.name(),
                    f.data_type()
                )));
            }
        }
        Ok(())
    }

    /// The short name shown in explain output.
    pub fn name(&self) -> &'static str {
        match self {
            FileFormat::Csv { .. } => "csv",
            FileFormat::Json => "json",
            FileFormat::JsonLines => "jsonlines",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// The format a file extension suggests (`.jsonl.gz` → jsonlines).
fn extension_format(path: &str) -> Option<String> {
    let p = path.strip_suffix(".gz").unwrap_or(path);
    let ext = Path::new(p).extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "csv" | "tsv" | "json" | "parquet" => ext,
        "jsonl" | "ndjson" | "log" => "jsonlines".to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_extension_and_options() {
        let p = Properties::from_pairs("x", []);
        assert_eq!(FileFormat::from_properties(&p, "a/b.jsonl.gz").unwrap(), FileFormat::JsonLines);
        assert_eq!(FileFormat::from_properties(&p, "a/b.parquet").unwrap(), FileFormat::Parquet);
        assert!(FileFormat::from_properties(&p, "a/b.dat").unwrap_err().to_string().contains("'x.format'"));
        let p = Properties::from_pairs("x", [("format", "csv"), ("delimiter", ";"), ("has_headers", "false")]);
        assert_eq!(FileFormat::from_properties(&p, "m.txt").unwrap(), FileFormat::Csv { has_headers: false, delimiter: b';', quote: b'"' });
    }
}
