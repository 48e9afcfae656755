//! `FerrisDialect`: DataFusion's generic SQL dialect plus the streaming clauses.
//!
//! - `JOIN … ON a.k = b.k WITHIN INTERVAL '5' MINUTES` — parsed by an infix hook into the
//!   marker call `__ferris_within(<on condition>, INTERVAL …)`, which the front end takes apart.
//! - `INTO`, `EMIT` and `WITHIN` are never read as table aliases, so
//!   `FROM orders INTO sink` and `FROM orders EMIT CHANGES` mean what they say.

use std::any::TypeId;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident, ObjectName, ObjectNamePart,
};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

/// The marker function a `WITHIN INTERVAL` clause becomes in the parsed AST.
pub const WITHIN_MARKER: &str = "__ferris_within";

/// Words that end a FROM clause in our dialect and so are never aliases.
const NOT_ALIASES: [&str; 3] = ["INTO", "EMIT", "WITHIN"];

/// The FerrisStreams SQL dialect.
#[derive(Debug, Default, Clone, Copy)]
pub struct FerrisDialect {
    generic: GenericDialect,
}

fn is_clause_word(parser: &Parser) -> bool {
    match &parser.get_current_token().token {
        Token::Word(w) if w.quote_style.is_none() => NOT_ALIASES.iter().any(|k| w.value.eq_ignore_ascii_case(k)),
        _ => false,
    }
}

fn next_is_within_interval(parser: &Parser) -> bool {
    matches!(&parser.peek_nth_token_ref(0).token, Token::Word(w) if w.keyword == Keyword::WITHIN)
        && matches!(&parser.peek_nth_token_ref(1).token, Token::Word(w) if w.keyword == Keyword::INTERVAL)
}

impl Dialect for FerrisDialect {
    fn dialect(&self) -> TypeId {
        // Behave as the generic dialect wherever the parser asks "is this dialect X?".
        TypeId::of::<GenericDialect>()
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        self.generic.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.generic.is_identifier_part(ch)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.generic.is_delimited_identifier_start(ch)
    }
    fn supports_group_by_expr(&self) -> bool {
        true
    }
    fn supports_filter_during_aggregation(&self) -> bool {
        true
    }
    fn supports_window_function_null_treatment_arg(&self) -> bool {
        true
    }
    fn supports_left_associative_joins_without_parens(&self) -> bool {
        self.generic.supports_left_associative_joins_without_parens()
    }
    fn supports_named_fn_args_with_assignment_operator(&self) -> bool {
        true
    }
    fn supports_struct_literal(&self) -> bool {
        true
    }
    fn support_map_literal_syntax(&self) -> bool {
        true
    }
    fn supports_dictionary_syntax(&self) -> bool {
        true
    }
    fn supports_window_clause_named_window_reference(&self) -> bool {
        true
    }
    fn supports_nested_comments(&self) -> bool {
        true
    }
    fn supports_projection_trailing_commas(&self) -> bool {
        true
    }
    fn supports_array_typedef_with_brackets(&self) -> bool {
        true
    }
    fn allow_extract_custom(&self) -> bool {
        true
    }
    fn allow_extract_single_quotes(&self) -> bool {
        true
    }
    fn supports_unicode_string_literal(&self) -> bool {
        true
    }
    fn supports_string_escape_constant(&self) -> bool {
        true
    }
    fn supports_select_wildcard_except(&self) -> bool {
        true
    }
    fn supports_parens_around_table_factor(&self) -> bool {
        true
    }

    fn is_table_alias(&self, kw: &Keyword, parser: &mut Parser) -> bool {
        !is_clause_word(parser) && self.generic.is_table_alias(kw, parser)
    }

    fn is_table_factor_alias(&self, explicit: bool, kw: &Keyword, parser: &mut Parser) -> bool {
        explicit || self.is_table_alias(kw, parser)
    }

    fn is_column_alias(&self, kw: &Keyword, parser: &mut Parser) -> bool {
        !is_clause_word(parser) && self.generic.is_column_alias(kw, parser)
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        // Lower than OR, so that `ON a = b AND c = d WITHIN INTERVAL …` wraps the whole condition.
        next_is_within_interval(parser).then_some(Ok(1))
    }

    fn parse_infix(&self, parser: &mut Parser, expr: &Expr, _precedence: u8) -> Option<Result<Expr, ParserError>> {
        if !next_is_within_interval(parser) {
            return None;
        }
        Some((|| {
            parser.expect_keyword(Keyword::WITHIN)?;
            parser.expect_keyword(Keyword::INTERVAL)?;
            let interval = parser.parse_interval()?;
            let arg = |e: Expr| FunctionArg::Unnamed(FunctionArgExpr::Expr(e));
            Ok(Expr::Function(Function {
                name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(WITHIN_MARKER))]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![arg(expr.clone()), arg(interval)],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            }))
        })())
    }
}
