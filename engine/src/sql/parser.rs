//! Parses a SQL file of our dialect into [`FerrisStatement`]s, driving sqlparser's `Parser`
//! statement by statement: DataFusion's grammar for the query, ours around it.
//!
//! ```sql
//! CREATE STREAM s AS SELECT * FROM orders EMIT CHANGES INTO out WITH ('out.type' = 'file_sink');
//! SELECT * FROM orders WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl');
//! ```

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Query, SetExpr, TableFactor, Value,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use super::comments::blank_hash_comments;
use super::dialect::{FerrisDialect, WITHIN_MARKER};
use super::interval::interval_to_duration;
use super::statement::{EmitMode, FerrisStatement, StatementKind, WatermarkClause, WindowClause, WindowClauseKind, Within};
use datafusion::sql::sqlparser::tokenizer::Whitespace;

/// A syntax error with its place in the file and the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error at line {line}, column {column}{}: {message}", near.as_ref().map(|t| format!(" near '{t}'")).unwrap_or_default())]
pub struct SyntaxError {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// The token where parsing failed, as written.
    pub near: Option<String>,
    /// What was expected.
    pub message: String,
}

impl SyntaxError {
    fn at(tok: &TokenWithSpan, message: impl Into<String>) -> Self {
        let near = match &tok.token {
            Token::EOF => None,
            t => Some(t.to_string()),
        };
        Self { line: tok.span.start.line, column: tok.span.start.column, near, message: message.into() }
    }
}

/// Parses every statement of `sql`.
pub fn parse_sql(sql: &str) -> Result<Vec<FerrisStatement>, SyntaxError> {
    let dialect = FerrisDialect::default();
    let cleaned = blank_hash_comments(sql);
    let tokens = Tokenizer::new(&dialect, &cleaned).tokenize_with_location().map_err(|e| SyntaxError {
        line: e.location.line,
        column: e.location.column,
        near: None,
        message: e.message,
    })?;
    let tokens = rewrite_rows_window_buffer(tokens)?;
    let (tokens, mut keys) = take_primary_keys(tokens)?;
    let (tokens, mut windows) = take_window_clauses(tokens)?;
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut out: Vec<FerrisStatement> = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token_ref().token == Token::EOF {
            break;
        }
        let start = parser.peek_token_ref().span.start;
        let mut stmt = parse_statement(&mut parser, start).map_err(|e| to_syntax_error(&parser, e))?;
        let end = parser.peek_token_ref().span.start;
        let before_end = |loc: &Location| (loc.line, loc.column) < (end.line, end.column) || end.line == 0;
        let (my_keys, other_keys): (Vec<_>, Vec<_>) = keys.into_iter().partition(|(loc, _)| before_end(loc));
        keys = other_keys;
        stmt.primary_key = my_keys.into_iter().map(|(_, k)| k).collect();
        let (mine, rest): (Vec<_>, Vec<_>) = windows.into_iter().partition(|(loc, _)| before_end(loc));
        windows = rest;
        if let Some((loc, clause)) = mine.into_iter().last() {
            if stmt.window.is_some() {
                return Err(SyntaxError {
                    line: loc.line,
                    column: loc.column,
                    near: Some("WINDOW".into()),
                    message: "only one WINDOW clause per statement".into(),
                });
            }
            stmt.window = Some(clause);
        }
        out.push(stmt);
        let next = parser.peek_token();
        match &next.token {
            Token::SemiColon | Token::EOF => {}
            // The guide sometimes leaves out the ';' between statements: a new CREATE or
            // SELECT starts the next one.
            Token::Word(w) if matches!(w.keyword, Keyword::CREATE | Keyword::SELECT) => {}
            _ => return Err(SyntaxError::at(&next, "expected ';' or the end of the statement")),
        }
    }
    Ok(out)
}

/// The predecessor's `ROWS WINDOW BUFFER n ROWS` inside `OVER (…)` — keep the last `n` rows of
/// each partition — as the standard frame `ROWS BETWEEN n-1 PRECEDING AND CURRENT ROW`.
///
/// ```sql
/// AVG(price) OVER (PARTITION BY symbol ORDER BY ts ROWS WINDOW BUFFER 100 ROWS)
/// ```
fn rewrite_rows_window_buffer(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, SyntaxError> {
    let significant: Vec<usize> = (0..tokens.len()).filter(|&j| !matches!(tokens[j].token, Token::Whitespace(_))).collect();
    let mut replace: Vec<(usize, usize, u64)> = Vec::new();
    for w in significant.windows(5) {
        let t = |i: usize| &tokens[w[i]].token;
        if word_is(t(0), "ROWS") && word_is(t(1), "WINDOW") && word_is(t(2), "BUFFER") && word_is(t(4), "ROWS") {
            let n = match t(3) {
                Token::Number(n, _) => n.parse::<u64>().ok().filter(|n| *n > 0),
                _ => None,
            };
            let Some(n) = n else { return Err(SyntaxError::at(&tokens[w[3]], "ROWS WINDOW BUFFER needs a number of rows above 0")) };
            replace.push((w[0], w[4], n));
        }
    }
    if replace.is_empty() {
        return Ok(tokens);
    }
    let mut out = Vec::with_capacity(tokens.len() + 8 * replace.len());
    let mut next = replace.into_iter().peekable();
    let mut i = 0;
    while i < tokens.len() {
        match next.peek() {
            Some(&(from, to, n)) if from == i => {
                let span = tokens[from].span;
                let words = ["ROWS".to_string(), "BETWEEN".into(), (n - 1).to_string(), "PRECEDING".into(), "AND".into(), "CURRENT".into(), "ROW".into()];
                for (k, word) in words.iter().enumerate() {
                    if k > 0 {
                        out.push(TokenWithSpan { token: Token::Whitespace(Whitespace::Space), span });
                    }
                    let token = if k == 2 { Token::Number(word.clone(), false) } else { Token::make_keyword(word) };
                    out.push(TokenWithSpan { token, span });
                }
                next.next();
                i = to + 1;
            }
            _ => {
                out.push(tokens[i].clone());
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The tokens left, and each `PRIMARY KEY` marker taken out: where it was and the name it marks.
type TakenKeys = (Vec<TokenWithSpan>, Vec<(Location, String)>);

/// Takes the predecessor's `PRIMARY KEY` markers out of select lists (`SELECT category PRIMARY
/// KEY, COUNT(*) AS n …`, `SUM(x) AS total PRIMARY KEY`), leaving blanks, with the output name
/// each marks and where it was.
fn take_primary_keys(mut tokens: Vec<TokenWithSpan>) -> Result<TakenKeys, SyntaxError> {
    let mut found = Vec::new();
    let significant: Vec<usize> = (0..tokens.len()).filter(|&j| !matches!(tokens[j].token, Token::Whitespace(_))).collect();
    for (pos, w) in significant.windows(2).enumerate() {
        if !(word_is(&tokens[w[0]].token, "PRIMARY") && word_is(&tokens[w[1]].token, "KEY")) {
            continue;
        }
        // the name of the select item just before: a column, or an alias
        let name = match pos.checked_sub(1).map(|p| &tokens[significant[p]].token) {
            Some(Token::Word(word)) if !matches!(word.keyword, Keyword::SELECT | Keyword::DISTINCT) => word.value.clone(),
            _ => return Err(SyntaxError::at(&tokens[w[0]], "PRIMARY KEY marks a select item by its name: write `expr AS name PRIMARY KEY`")),
        };
        found.push((tokens[w[0]].span.start, name));
        for &j in w {
            tokens[j].token = Token::Whitespace(Whitespace::Space);
        }
    }
    Ok((tokens, found))
}

/// Takes the predecessor's `WINDOW TUMBLING(…)` / `SLIDING(…)` / `SESSION(…)` clauses out of the
/// token stream (sqlparser reads `WINDOW` as a named-window definition), leaving blanks so that
/// every other token keeps its line and column.
/// The tokens left, and each WINDOW clause taken out with where it was.
type TakenClauses = (Vec<TokenWithSpan>, Vec<(Location, WindowClause)>);

fn take_window_clauses(mut tokens: Vec<TokenWithSpan>) -> Result<TakenClauses, SyntaxError> {
    let significant = |tokens: &[TokenWithSpan], from: usize| (from..tokens.len()).find(|&j| !matches!(tokens[j].token, Token::Whitespace(_)));
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !word_is(&tokens[i].token, "WINDOW") {
            i += 1;
            continue;
        }
        let Some(k) = significant(&tokens, i + 1) else { break };
        let kind = if word_is(&tokens[k].token, "TUMBLING") {
            WindowClauseKind::Tumbling
        } else if word_is(&tokens[k].token, "SLIDING") || word_is(&tokens[k].token, "HOPPING") {
            WindowClauseKind::Sliding
        } else if word_is(&tokens[k].token, "SESSION") {
            WindowClauseKind::Session
        } else {
            i += 1;
            continue;
        };
        let Some(open) = significant(&tokens, k + 1).filter(|&o| tokens[o].token == Token::LParen) else {
            return Err(SyntaxError::at(&tokens[k], "expected '(' after the window kind"));
        };
        let mut depth = 0usize;
        let mut close = None;
        for (j, t) in tokens.iter().enumerate().skip(open) {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { return Err(SyntaxError::at(&tokens[open], "unclosed '(' in the WINDOW clause")) };
        let inner: String = tokens[open + 1..close].iter().map(|t| t.token.to_string()).collect();
        let text: String = tokens[i..=close].iter().map(|t| t.token.to_string()).collect();
        let dialect = FerrisDialect::default();
        let args = Parser::new(&dialect)
            .try_with_sql(&inner)
            .and_then(|mut p| p.parse_comma_separated(Parser::parse_expr))
            .map_err(|e| SyntaxError::at(&tokens[open], format!("in {text}: {e}")))?;
        let loc = tokens[i].span.start;
        found.push((loc, WindowClause { kind, args, text, line: loc.line }));
        for t in &mut tokens[i..=close] {
            t.token = Token::Whitespace(Whitespace::Space);
        }
        i = close + 1;
    }
    Ok((tokens, found))
}

/// sqlparser's messages carry "at Line: L, Column: C"; lift those into fields.
fn to_syntax_error(parser: &Parser, e: ParserError) -> SyntaxError {
    let text = match e {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
        ParserError::RecursionLimitExceeded => "the statement is nested too deeply".into(),
    };
    let tok = parser.get_current_token().clone();
    if let Some((msg, loc)) = text.rsplit_once(" at Line: ") {
        if let Some((l, c)) = loc.split_once(", Column: ") {
            if let (Ok(line), Ok(column)) = (l.trim().parse(), c.trim().parse()) {
                let near = msg.rsplit_once("found: ").map(|(_, f)| f.trim().to_string()).filter(|f| f != "EOF");
                return SyntaxError { line, column, near, message: msg.to_string() };
            }
        }
    }
    SyntaxError::at(&tok, text)
}

fn word_is(tok: &Token, word: &str) -> bool {
    matches!(tok, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

fn parse_statement(parser: &mut Parser, start: Location) -> Result<FerrisStatement, ParserError> {
    let kind = if parser.parse_keyword(Keyword::CREATE) {
        let _ = parser.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        let kind = match parser.parse_one_of_keywords(&[Keyword::STREAM, Keyword::TABLE]) {
            Some(Keyword::STREAM) => 0,
            Some(_) => 1,
            None => return parser.expected("STREAM or TABLE after CREATE", parser.peek_token()),
        };
        let _ = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = parser.parse_object_name(false)?.to_string();
        parser.expect_keyword(Keyword::AS)?;
        if kind == 0 {
            StatementKind::Stream(name)
        } else {
            StatementKind::Table(name)
        }
    } else {
        match &parser.peek_token_ref().token {
            Token::Word(w) if matches!(w.keyword, Keyword::SELECT | Keyword::WITH | Keyword::VALUES) => StatementKind::Select,
            Token::LParen => StatementKind::Select,
            _ => return parser.expected("CREATE STREAM, CREATE TABLE or SELECT", parser.peek_token()),
        }
    };
    let mut query = parser.parse_query()?;
    let mut emit = None;
    let mut into = Vec::new();
    let mut watermarks = Vec::new();
    // `FROM t WITH (…)` reaches sqlparser's table-hint rule before ours: take it back.
    let mut with = take_table_hints(&mut query).map_err(ParserError::ParserError)?;
    loop {
        let tok = parser.peek_token();
        if word_is(&tok.token, "EMIT") {
            parser.next_token();
            let mode = parser.next_token();
            emit = Some(if word_is(&mode.token, "CHANGES") {
                EmitMode::Changes
            } else if word_is(&mode.token, "FINAL") {
                EmitMode::Final
            } else {
                return parser.expected("CHANGES or FINAL after EMIT", mode);
            });
        } else if word_is(&tok.token, "WATERMARK") {
            parser.next_token();
            watermarks.push(parse_watermark(parser)?);
        } else if parser.parse_keyword(Keyword::INTO) {
            if !into.is_empty() {
                return parser.expected("a single INTO clause", parser.get_current_token().clone());
            }
            loop {
                into.push(parser.parse_object_name(false)?.to_string());
                if !parser.consume_token(&Token::Comma) {
                    break;
                }
            }
        } else if parser.parse_keyword(Keyword::WITH) {
            parse_properties(parser, &mut with)?;
        } else {
            break;
        }
    }
    let within = take_within(&mut query).map_err(ParserError::ParserError)?;
    Ok(FerrisStatement { kind, query, emit, into, with, within, watermarks, window: None, primary_key: Vec::new(), line: start.line })
}

/// `FOR [source.]column AS column [- INTERVAL '5' SECOND]`, after `WATERMARK`.
fn parse_watermark(parser: &mut Parser) -> Result<WatermarkClause, ParserError> {
    parser.expect_keyword(Keyword::FOR)?;
    let name = parser.parse_object_name(false)?;
    parser.expect_keyword(Keyword::AS)?;
    let expr = parser.parse_expr()?;
    let parts: Vec<String> = name.0.iter().map(|p| p.to_string().trim_matches('"').to_string()).collect();
    let (relation, column) = match parts.as_slice() {
        [c] => (None, c.clone()),
        [r, c] => (Some(r.to_ascii_lowercase()), c.clone()),
        _ => return parser_err(format!("WATERMARK FOR takes a column or source.column, found {name}")),
    };
    let delay = match &expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => std::time::Duration::ZERO,
        Expr::BinaryOp { op: BinaryOperator::Minus, right, .. } => match right.as_ref() {
            Expr::Interval(iv) => interval_to_duration(iv).map_err(ParserError::ParserError)?,
            other => return parser_err(format!("WATERMARK FOR {name} AS … expects the column minus an INTERVAL, found {other}")),
        },
        other => return parser_err(format!("WATERMARK FOR {name} AS … expects the column minus an INTERVAL, found {other}")),
    };
    Ok(WatermarkClause { relation, column, delay, text: format!("WATERMARK FOR {name} AS {expr}") })
}

fn parser_err<T>(m: String) -> Result<T, ParserError> {
    Err(ParserError::ParserError(m))
}

/// `( 'key' = 'value', … )`; values may also be numbers or booleans; a trailing comma is fine.
fn parse_properties(parser: &mut Parser, out: &mut Vec<(String, String)>) -> Result<(), ParserError> {
    parser.expect_token(&Token::LParen)?;
    loop {
        if parser.consume_token(&Token::RParen) {
            return Ok(());
        }
        let key_tok = parser.next_token();
        let key = match &key_tok.token {
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
            Token::Word(w) => {
                // unquoted dotted keys: orders.path
                let mut k = w.value.clone();
                while parser.consume_token(&Token::Period) {
                    k.push('.');
                    k.push_str(&parser.parse_identifier()?.value);
                }
                k
            }
            _ => return parser.expected("a property key such as 'orders.path'", key_tok),
        };
        parser.expect_token(&Token::Eq)?;
        let v = parser.parse_value()?;
        let value = match v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s,
            Value::Number(n, _) => n,
            Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        };
        out.push((key, value));
        if !parser.consume_token(&Token::Comma) {
            parser.expect_token(&Token::RParen)?;
            return Ok(());
        }
    }
}

/// A `WITH (…)` right after the last table of the FROM clause is parsed by sqlparser as MSSQL
/// table hints; those are our properties.
fn take_table_hints(query: &mut Query) -> Result<Vec<(String, String)>, String> {
    let SetExpr::Select(select) = query.body.as_mut() else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for twj in select.from.iter_mut() {
        let factors = std::iter::once(&mut twj.relation).chain(twj.joins.iter_mut().map(|j| &mut j.relation));
        for factor in factors {
            if let TableFactor::Table { with_hints, .. } = factor {
                for hint in with_hints.drain(..) {
                    out.push(property_from_expr(&hint)?);
                }
            }
        }
    }
    Ok(out)
}

fn property_from_expr(e: &Expr) -> Result<(String, String), String> {
    let Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = e else {
        return Err(format!("expected 'key' = 'value' in WITH (…), found {e}"));
    };
    let key = match left.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(id) => id.value.clone(),
        Expr::CompoundIdentifier(ids) => ids.iter().map(|i| i.value.as_str()).collect::<Vec<_>>().join("."),
        other => return Err(format!("expected a property key such as 'orders.path', found {other}")),
    };
    let value = match right.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        },
        Expr::UnaryOp { .. } => right.to_string(),
        other => return Err(format!("expected a literal value for '{key}', found {other}")),
    };
    Ok((key, value))
}

/// Removes the `WITHIN` markers from the query, returning the clauses.
fn take_within(query: &mut Query) -> Result<Vec<Within>, String> {
    let mut found = Vec::new();
    let mut error = None;
    let _ = visit_expressions_mut(query, |expr: &mut Expr| {
        if let Expr::Function(f) = expr {
            if f.name.to_string() == WITHIN_MARKER {
                if let FunctionArguments::List(list) = &f.args {
                    if let [FunctionArg::Unnamed(FunctionArgExpr::Expr(inner)), FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Interval(iv)))] =
                        list.args.as_slice()
                    {
                        match interval_to_duration(iv) {
                            Ok(d) => found.push(Within { interval: d, text: format!("{iv}") }),
                            Err(e) => error = Some(e),
                        }
                        *expr = inner.clone();
                    }
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    match error {
        Some(e) => Err(format!("WITHIN {e}")),
        None => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_predecessors_primary_key_and_rows_buffer() {
        let s = parse_sql(
            "CREATE TABLE t AS SELECT o.category PRIMARY KEY, SUM(x) AS total PRIMARY KEY, COUNT(*) AS n FROM o GROUP BY o.category;\nSELECT a FROM b",
        )
        .unwrap();
        assert_eq!(s[0].primary_key, ["category", "total"]);
        assert!(s[1].primary_key.is_empty(), "each statement keeps its own keys");
        let e = parse_sql("CREATE TABLE t AS SELECT COUNT(*) PRIMARY KEY FROM o").unwrap_err();
        assert!(e.message.contains("write `expr AS name PRIMARY KEY`"), "{e}");
        let s = parse_sql("SELECT AVG(p) OVER (PARTITION BY k ORDER BY ts ROWS WINDOW BUFFER 100 ROWS) AS a FROM t").unwrap();
        let text = s[0].query.to_string();
        assert!(text.contains("ROWS BETWEEN 99 PRECEDING AND CURRENT ROW"), "{text}");
        let e = parse_sql("SELECT AVG(p) OVER (ORDER BY ts ROWS WINDOW BUFFER x ROWS) FROM t").unwrap_err();
        assert_eq!((e.line, e.column), (1, 52), "the column of the bad count");
    }
}
