//! From a parsed statement to a [`JobSpec`]: finds the sources (every relation in FROM and
//! JOIN, CTE names aside), the sinks (the INTO list, or the stream's own name), splits the
//! `WITH` keys by prefix and checks that every source and sink declares its type.
//!
//! ```sql
//! SELECT * FROM orders_source WITH ('orders_source.topic' = 'orders');
//! -- Error: Source type must be explicitly specified for 'orders_source'. Use: 'orders_source.type'
//! --        with values like 'kafka_source', 'file_source', 's3_source', 'database_source'
//! ```

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{visit_relations, ObjectName, ObjectNamePart, Query};
use ferris_connectors::connector::KeyCheck;
use ferris_connectors::connector_type::TypeError;
use ferris_connectors::{ConnectorKind, ConnectorType, Properties, Role};

use super::spec::{JobSpec, RelationSpec, JOB_KEYS};
use crate::config::yaml::load_properties;
use crate::config::{ConfigContext, ConfigError};
use crate::sql::{parse_sql, FerrisStatement, StatementKind};

/// Why a statement cannot become a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    /// A source or sink has no `type`.
    #[error("{role} type must be explicitly specified for '{name}'. Use: '{name}.type' with values like {examples}")]
    MissingType {
        /// "Source" or "Sink".
        role: &'static str,
        /// The relation.
        name: String,
        /// Quoted example types.
        examples: String,
    },
    /// The `type` value is wrong.
    #[error(transparent)]
    BadType(#[from] TypeError),
    /// The query reads nothing.
    #[error("No supported datasource found in query analysis for job '{0}'")]
    NoSource(String),
    /// Anything else, explained.
    #[error("{0}")]
    Invalid(String),
    /// The SQL does not parse.
    #[error(transparent)]
    Syntax(#[from] crate::sql::parser::SyntaxError),
    /// Configuration (YAML files, variables) could not be resolved.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Parses and analyses every statement of `sql`, with the process environment and relative
/// `config_file` paths resolved against the working directory.
pub fn analyze_sql(sql: &str) -> Result<Vec<Result<JobSpec, AnalysisError>>, AnalysisError> {
    analyze_sql_with(sql, &ConfigContext::default())
}

/// Parses and analyses every statement of `sql` with the configuration context `ctx`.
pub fn analyze_sql_with(sql: &str, ctx: &ConfigContext) -> Result<Vec<Result<JobSpec, AnalysisError>>, AnalysisError> {
    let statements = parse_sql(sql)?;
    let mut jobs: Vec<Result<JobSpec, AnalysisError>> = statements.into_iter().enumerate().map(|(i, s)| analyze_with(s, i + 1, ctx)).collect();
    // a profile's override that no statement takes is a typo or a leftover: say so, once
    let unused: Vec<&str> = ctx
        .overrides
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !jobs.iter().flatten().any(|j| j.sources.iter().chain(&j.sinks).any(|r| owns(&r.name, k)) || is_job_option(k)))
        .collect();
    if let Some(first) = jobs.iter_mut().flatten().next() {
        for k in unused {
            let prefix = k.split('.').next().unwrap_or(k);
            first
                .warnings
                .push(format!("{}: override '{k}' applies to no job: no source or sink named '{prefix}', and not a job option", ctx.overrides_origin));
        }
    }
    Ok(jobs)
}

/// True when `key` (a `WITH` key) belongs to the relation `name` (`name.…`, any case).
fn owns(name: &str, key: &str) -> bool {
    key.len() > name.len() && key.as_bytes()[name.len()] == b'.' && key[..name.len()].eq_ignore_ascii_case(name)
}

/// True when `key` is a job option (`use_transactions`, `checkpoint.interval`, `batch.size`, …).
fn is_job_option(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    JOB_KEYS.accepts(&lower) || lower.starts_with("batch.")
}

/// The name DataFusion will resolve: unquoted parts lower-cased.
pub fn normalized_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) if id.quote_style.is_some() => id.value.clone(),
            ObjectNamePart::Identifier(id) => id.value.to_ascii_lowercase(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Every relation the query reads, in order of first appearance, CTE names excluded.
pub fn relations(query: &Query) -> Vec<String> {
    let mut ctes = HashSet::new();
    collect_ctes(query, &mut ctes);
    let mut seen = Vec::new();
    let _ = visit_relations(query, |name| {
        let n = normalized_name(name);
        if !ctes.contains(&n) && !seen.contains(&n) {
            seen.push(n);
        }
        ControlFlow::<()>::Continue(())
    });
    seen
}

fn collect_ctes(query: &Query, out: &mut HashSet<String>) {
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            out.insert(cte.alias.name.value.to_ascii_lowercase());
            collect_ctes(&cte.query, out);
        }
    }
}

fn examples(role: Role) -> String {
    ConnectorType::examples(role).into_iter().take(4).map(|e| format!("'{e}'")).collect::<Vec<_>>().join(", ")
}

/// The predecessor's `PRIMARY KEY` in the select list, as the keys of the sinks that key their
/// writes (unless set): a database sink upserts on it, a Kafka sink keys its messages by it, a
/// Redis sink names its keys by it.
///
/// ```sql
/// CREATE TABLE totals AS SELECT category PRIMARY KEY, SUM(amount) AS total FROM orders GROUP BY category
/// INTO db WITH ('db.type' = 'database_sink', …)   -- upserts on category
/// ```
fn key_defaults(p: &mut Properties, kind: ConnectorKind, keys: &[String]) {
    let origin = format!("PRIMARY KEY {} in the select list", keys.join(", "));
    match kind {
        ConnectorKind::Database => {
            p.insert_default("primary_key", keys.join(","), origin.clone());
            p.insert_default("mode", "upsert", origin);
        }
        ConnectorKind::Kafka if keys.len() == 1 => p.insert_default("key.field", keys[0].clone(), origin),
        ConnectorKind::Redis if !p.contains("key.template") => match keys {
            [one] => p.insert_default("key.field", one.clone(), origin),
            many => p.insert_default("key.template", many.iter().map(|k| format!("{{{k}}}")).collect::<Vec<_>>().join(":"), origin),
        },
        _ => {}
    }
}

/// Analyses one statement with the default configuration context.
pub fn analyze(statement: FerrisStatement, index: usize) -> Result<JobSpec, AnalysisError> {
    analyze_with(statement, index, &ConfigContext::default())
}

/// Substitutes `${…}` in an inline value; the origin says which variables it used.
fn inline_value(ctx: &ConfigContext, job: &str, key: &str, value: &str) -> Result<(String, Option<String>), ConfigError> {
    let (v, used) = ctx.variables.substitute(value, &format!("'{key}' in the WITH clause of job '{job}'"))?;
    let origin = (!used.is_empty()).then(|| format!("inline, {}", ctx.variables.describe(&used)));
    Ok((v, origin))
}

/// Loads `config_file` (if any) under the inline properties of `props`.
fn merge_config_file(ctx: &ConfigContext, props: &mut Properties) -> Result<(), ConfigError> {
    let Some(file) = props.get("config_file").map(str::to_string) else { return Ok(()) };
    let key = props.full_key("config_file");
    let path = crate::config::yaml::tidy(&ctx.base_dir.join(&file));
    let loaded = load_properties(&path, &ctx.variables, &format!("'{key}'"))?;
    for (k, p) in loaded {
        let origin = if p.variables.is_empty() { p.origin } else { format!("{}, {}", p.origin, ctx.variables.describe(&p.variables)) };
        props.insert_default(&k, p.value, origin);
    }
    Ok(())
}

/// Analyses one statement; `index` (1-based) names bare SELECTs (`select_1`).
pub fn analyze_with(statement: FerrisStatement, index: usize, ctx: &ConfigContext) -> Result<JobSpec, AnalysisError> {
    let name = statement.name().map(str::to_string).unwrap_or_else(|| format!("select_{index}"));
    let source_names = relations(&statement.query);
    if source_names.is_empty() {
        return Err(AnalysisError::NoSource(name));
    }
    let (sink_names, implicit_stdout) = match (&statement.kind, statement.into.is_empty()) {
        (_, false) => (statement.into.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>(), false),
        (StatementKind::Select, true) => (vec!["stdout".to_string()], true),
        (StatementKind::Stream(n) | StatementKind::Table(n), true) => (vec![n.to_ascii_lowercase()], false),
    };
    if let Some(both) = sink_names.iter().find(|s| source_names.contains(s)) {
        return Err(AnalysisError::Invalid(format!("'{both}' is both read (FROM/JOIN) and written (INTO) by job '{name}'")));
    }

    // `late.sink` names a sink of its own, declared in WITH beside the others
    let late_name = statement
        .with
        .iter()
        .chain(ctx.overrides.iter())
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case("late.sink"))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty());
    if let Some(late) = &late_name {
        if source_names.contains(late) || sink_names.contains(late) {
            return Err(AnalysisError::Invalid(format!(
                "'late.sink' = '{late}' names a relation job '{name}' reads or writes its results to: late rows need a sink of their own ('{late}_late.type' = 'file_sink', …)"
            )));
        }
    }
    // Split WITH keys by the longest matching relation prefix.
    let mut names: Vec<&String> = source_names.iter().chain(sink_names.iter()).chain(late_name.iter()).collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut props: Vec<Properties> = source_names.iter().chain(sink_names.iter()).chain(late_name.iter()).map(|n| Properties::new(n.clone())).collect();
    let mut options = Properties::new("");
    let mut warnings = Vec::new();
    let mut seen_keys = HashSet::new();
    for (key, value) in &statement.with {
        if !seen_keys.insert(key.to_ascii_lowercase()) {
            warnings.push(format!("'{key}' is set more than once; the last value wins"));
        }
        let lower = key.to_ascii_lowercase();
        let owner = names.iter().find(|n| lower.starts_with(&format!("{n}.")));
        let (value, origin) = inline_value(ctx, &name, key, value)?;
        let target = match owner {
            Some(n) => props.iter_mut().find(|p| p.owner() == n.as_str()).map(|p| (p, &key[n.len() + 1..])),
            None => Some((&mut options, key.as_str())),
        };
        if let Some((p, k)) = target {
            match origin {
                Some(o) => p.insert_with_origin(k, value, o),
                None => p.insert(k, value),
            }
        }
    }
    // the profile's `with:` map wins over the statement's own keys (stand-ins for hosts,
    // paths and types); keys of relations this job does not have are for other statements
    for (key, value) in &ctx.overrides {
        let lower = key.to_ascii_lowercase();
        let origin = format!("override: {}", ctx.overrides_origin);
        match names.iter().find(|n| lower.starts_with(&format!("{n}."))) {
            Some(n) => {
                if let Some(p) = props.iter_mut().find(|p| p.owner() == n.as_str()) {
                    p.insert_with_origin(&key[n.len() + 1..], value.clone(), origin);
                }
            }
            None if is_job_option(key) => options.insert_with_origin(key.as_str(), value.clone(), origin),
            None => {}
        }
    }
    for p in props.iter_mut() {
        merge_config_file(ctx, p)?;
    }
    // WATERMARK FOR [source.]column AS column - INTERVAL …
    for w in &statement.watermarks {
        let mut applied = false;
        for p in props.iter_mut().filter(|p| source_names.iter().any(|s| s == p.owner())) {
            if w.relation.as_deref().is_some_and(|r| r != p.owner()) {
                continue;
            }
            if !p.contains("event_time") {
                p.insert_with_origin("event_time", w.column.clone(), w.text.clone());
            }
            p.insert_with_origin("watermark.delay", format!("{}ms", w.delay.as_millis()), w.text.clone());
            applied = true;
        }
        if !applied {
            warnings.push(format!("{}: no source named '{}' in job '{name}'", w.text, w.relation.as_deref().unwrap_or("?")));
        }
    }
    for k in options.unknown_keys(&JOB_KEYS) {
        let prefix = k.split('.').next().unwrap_or(&k);
        if k.contains('.') && !k.starts_with("batch.") && !JOB_KEYS.prefixes.iter().any(|p| k.starts_with(p)) {
            warnings.push(format!("unknown key '{k}': no source or sink named '{prefix}' in job '{name}', and not a job option"));
        } else {
            warnings.push(format!("unknown job option '{k}' in job '{name}'"));
        }
    }

    let late_at = late_name.as_ref().and_then(|late| props.iter().position(|p| p.owner() == late.as_str()).map(|at| (late, at)));
    let late_sink = match late_at {
        Some((late, at)) => {
            let p = props.remove(at);
            let Some(t) = p.get("type") else {
                return Err(AnalysisError::MissingType { role: "Sink", name: late.clone(), examples: examples(Role::Sink) });
            };
            let connector = ConnectorType::parse(late, Role::Sink, t)?;
            if let Some(spec) = ferris_connectors::registry::find(connector.kind) {
                for (k, v) in p.iter() {
                    if let KeyCheck::Unknown = spec.check_key(Role::Sink, k, v) {
                        warnings.push(format!("unknown key '{}': {connector} '{late}' does not use it", p.full_key(k)));
                    }
                }
            }
            Some(RelationSpec { name: late.clone(), connector, properties: p })
        }
        None => None,
    };
    let mut sources = Vec::new();
    let mut sinks = Vec::new();
    for p in props.iter().chain(std::iter::once(&options)) {
        // accepted for the guide's sake; rows always flow in batches
        if let Some(v) = p.get("batch.enable").filter(|v| !v.trim().eq_ignore_ascii_case("true")) {
            warnings.push(format!(
                "key '{}' = '{v}' does nothing: rows always flow in batches; 'batch.size' = '1' with 'batch.strategy' = 'low_latency' comes closest",
                p.full_key("batch.enable")
            ));
        }
    }
    for mut p in props {
        let role = if source_names.iter().any(|s| s == p.owner()) { Role::Source } else { Role::Sink };
        let connector = match p.get("type") {
            Some(t) => ConnectorType::parse(p.owner(), role, t)?,
            None if implicit_stdout && role == Role::Sink => ConnectorType { kind: ConnectorKind::Stdout, role },
            None => {
                return Err(AnalysisError::MissingType {
                    role: if role == Role::Source { "Source" } else { "Sink" },
                    name: p.owner().to_string(),
                    examples: examples(role),
                })
            }
        };
        if role == Role::Sink && !statement.primary_key.is_empty() {
            key_defaults(&mut p, connector.kind, &statement.primary_key);
        }
        if let Some(spec) = ferris_connectors::registry::find(connector.kind) {
            for (k, v) in p.iter() {
                match spec.check_key(role, k, v) {
                    KeyCheck::Used => {}
                    KeyCheck::Unknown => warnings.push(format!("unknown key '{}': {connector} '{}' does not use it", p.full_key(k), p.owner())),
                    KeyCheck::Unused(why) => warnings.push(format!("key '{}' does nothing: {why}", p.full_key(k))),
                }
            }
        }
        let rel = RelationSpec { name: p.owner().to_string(), connector, properties: p };
        match role {
            Role::Source => sources.push(rel),
            Role::Sink => sinks.push(rel),
        }
    }
    Ok(JobSpec { name, statement, sources, sinks, late_sink, options, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Result<JobSpec, AnalysisError> {
        analyze_sql(sql).unwrap().remove(0)
    }

    #[test]
    fn splits_keys_by_relation() {
        let job = one("CREATE STREAM s AS SELECT * FROM orders o JOIN customers c ON o.id = c.id INTO out1, out2 WITH (
            'orders.type' = 'file_source', 'orders.path' = 'a.jsonl', 'customers.type' = 'file',
            'customers.path' = 'c.csv', 'out1.type' = 'file_sink', 'out1.path' = 'x', 'out2.type' = 'blackhole',
            'batch.size' = '10', 'failure_strategy' = 'FailBatch')")
        .unwrap();
        assert_eq!(job.name, "s");
        assert_eq!(job.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["orders", "customers"]);
        assert_eq!(job.sinks.iter().map(|s| s.connector.to_string()).collect::<Vec<_>>(), ["file_sink", "blackhole_sink"]);
        assert_eq!(job.sources[1].connector.to_string(), "file_source");
        assert_eq!(job.options.get("batch.size"), Some("10"));
        assert_eq!(job.sources[0].properties.get("path"), Some("a.jsonl"));
        assert!(job.warnings.is_empty(), "{:?}", job.warnings);
    }

    #[test]
    fn missing_types_use_the_guides_words() {
        let e = one("SELECT * FROM orders_source WITH ('orders_source.topic' = 'orders')").unwrap_err();
        assert_eq!(e.to_string(), "Source type must be explicitly specified for 'orders_source'. Use: 'orders_source.type' with values like 'kafka_source', 'file_source', 's3_source', 'database_source'");
        let e = one("SELECT * FROM a INTO b WITH ('a.type' = 'file_source')").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Sink type must be explicitly specified for 'b'. Use: 'b.type' with values like 'kafka_sink', 'file_sink', 's3_sink', 'database_sink'"
        );
        let e = one("CREATE STREAM my_job AS SELECT 100 AS constant_value").unwrap_err();
        assert_eq!(e.to_string(), "No supported datasource found in query analysis for job 'my_job'");
    }

    #[test]
    fn stream_name_is_the_default_sink_and_select_goes_to_stdout() {
        let job = one("CREATE STREAM s AS SELECT * FROM t EMIT CHANGES WITH ('t.type'='file_source', 's.type'='file_sink', 's.path'='o.csv')").unwrap();
        assert_eq!(job.sinks[0].name, "s");
        let job = one("SELECT * FROM t WITH ('t.type'='file_source')").unwrap();
        assert_eq!(job.sinks[0].connector.to_string(), "stdout_sink");
        assert_eq!(job.name, "select_1");
    }

    #[test]
    fn unknown_keys_are_named() {
        let job = one("SELECT * FROM orders WITH ('orders.type'='file_source', 'orders.pth'='x', 'ordrs.path'='y', 'wibble'='1')").unwrap();
        let w = job.warnings.join("\n");
        assert!(w.contains("unknown key 'orders.pth': file_source 'orders' does not use it"), "{w}");
        assert!(w.contains("unknown key 'ordrs.path': no source or sink named 'ordrs'"), "{w}");
        assert!(w.contains("unknown job option 'wibble'"), "{w}");
    }

    #[test]
    fn a_profiles_with_map_overrides_the_statements_keys() {
        let ctx = ConfigContext {
            overrides: vec![
                ("orders.bootstrap.servers".into(), "127.0.0.1:9092".into()),
                ("orders.type".into(), "kafka_source".into()),
                ("Audit.path".into(), "out/audit.log".into()),
                ("use_transactions".into(), "true".into()),
                ("alerts.topic".into(), "a".into()),
                ("odrers.topic".into(), "typo".into()),
            ],
            overrides_origin: "app.yaml, profile 'local'".into(),
            ..ConfigContext::default()
        };
        let sql = "CREATE STREAM s AS SELECT * FROM orders INTO audit WITH ('orders.bootstrap.servers' = 'kafka1:9092', 'orders.topic' = 'o',
            'audit.type' = 'file_sink', 'audit.path' = '/var/log/audit.log', 'use_transactions' = 'false');
            CREATE STREAM t AS SELECT * FROM orders INTO alerts WITH ('orders.topic' = 'o', 'alerts.type' = 'kafka_sink');";
        let jobs: Vec<JobSpec> = analyze_sql_with(sql, &ctx).unwrap().into_iter().map(Result::unwrap).collect();
        let orders = &jobs[0].sources[0];
        assert_eq!(orders.connector.to_string(), "kafka_source", "the type comes from the profile");
        assert_eq!(orders.properties.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(orders.properties.get("topic"), Some("o"));
        assert_eq!(jobs[0].sinks[0].properties.get("path"), Some("out/audit.log"));
        assert_eq!(jobs[0].options.get("use_transactions"), Some("true"));
        assert_eq!(jobs[1].sinks[0].properties.get("topic"), Some("a"), "keys of another statement's relations reach it");
        assert!(jobs[1].options.get("use_transactions") == Some("true"));
        let w = jobs[0].warnings.join("\n");
        assert!(w.contains("app.yaml, profile 'local': override 'odrers.topic' applies to no job"), "{w}");
        assert!(!w.contains("alerts.topic"), "{w}");
        assert!(jobs[1].warnings.iter().all(|w| !w.contains("odrers")), "said once");
    }

    #[test]
    fn ctes_are_not_sources() {
        let job = one("WITH big AS (SELECT * FROM orders WHERE amount > 10) SELECT * FROM big JOIN c ON big.id = c.id WITH ('orders.type'='file_source', 'c.type'='file_source')").unwrap();
        assert_eq!(job.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["orders", "c"]);
    }
}
