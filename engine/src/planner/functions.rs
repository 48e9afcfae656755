//! Functions the guide's SQL uses beyond DataFusion's own names.
//!
//! ```sql
//! SELECT BYTE_LENGTH(data_blob) AS payload_size FROM large_data_stream
//! ```

use datafusion::execution::context::SessionContext;

/// Registers `BYTE_LENGTH` (an alias of `OCTET_LENGTH`).
pub fn register(ctx: &SessionContext) {
    let octet = datafusion::functions::string::octet_length();
    ctx.register_udf(octet.as_ref().clone().with_aliases(["byte_length"]));
}
