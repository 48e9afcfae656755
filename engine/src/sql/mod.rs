//! The SQL front end: our dialect on top of DataFusion's sqlparser, accepting
//! `CREATE STREAM … AS SELECT … [EMIT …] [INTO …] WITH (…)`, `WITHIN INTERVAL` joins and the
//! guide's `#` comments.
//!
//! ```sql
//! CREATE STREAM enriched AS
//! SELECT o.order_id, c.name FROM orders o JOIN customers c ON o.customer_id = c.id
//! WITHIN INTERVAL '5' MINUTES
//! EMIT CHANGES
//! INTO archive, audit
//! WITH ('orders.type' = 'file_source'  # comments like this one are allowed here
//! );
//! ```

pub mod comments;
pub mod dialect;
pub mod interval;
pub mod parser;
pub mod statement;

pub use parser::parse_sql;
pub use statement::{EmitMode, FerrisStatement, StatementKind};
