//! Functions the guide's SQL uses beyond DataFusion's own names, and the ones whose batch
//! meaning is wrong for a stream.
//!
//! ```sql
//! SELECT BYTE_LENGTH(data_blob) AS payload_size, CURRENT_TIMESTAMP AS processed_at FROM large_data_stream
//! ```

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::{internal_err, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// Registers `BYTE_LENGTH` (an alias of `OCTET_LENGTH`) and a streaming `NOW()` /
/// `CURRENT_TIMESTAMP`.
pub fn register(ctx: &SessionContext) {
    let octet = datafusion::functions::string::octet_length();
    ctx.register_udf(octet.as_ref().clone().with_aliases(["byte_length"]));
    ctx.register_udf(ScalarUDF::from(StreamNow::default()));
}

/// `NOW()` / `CURRENT_TIMESTAMP` / `PROCTIME()` evaluated when each batch is processed
/// (`GROUP BY TUMBLE(PROCTIME(), INTERVAL '10' SECOND)` is a processing-time window). DataFusion's own
/// `now()` is fixed when the query is planned, which for a job that runs for days would stamp
/// every row with the start time.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StreamNow {
    signature: Signature,
    aliases: Vec<String>,
}

impl Default for StreamNow {
    fn default() -> Self {
        Self { signature: Signature::nullary(Volatility::Volatile), aliases: vec!["current_timestamp".to_string(), "proctime".to_string()] }
    }
}

impl ScalarUDFImpl for StreamNow {
    fn name(&self) -> &str {
        "now"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(self.name(), DataType::Timestamp(TimeUnit::Nanosecond, None), false)))
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        internal_err!("return_field_from_args should be called instead")
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let now = chrono::Utc::now().timestamp_nanos_opt();
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(now, None)))
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }
}
