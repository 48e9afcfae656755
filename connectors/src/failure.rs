//! The guide's failure strategies: what to do with a record or a batch that fails.
//!
//! ```sql
//! WITH ('failure_strategy' = 'RetryWithBackoff', 'max_retries' = '5', 'retry_backoff' = '2000')
//! ```

use std::fmt;
use std::time::Duration;

use crate::error::{ConnectorError, Result};
use crate::properties::Properties;

/// What the job does when a record cannot be decoded or a sink cannot write a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureStrategy {
    /// Log, count and skip (the default).
    #[default]
    LogAndContinue,
    /// Fail the batch, and with it the job.
    FailBatch,
    /// Retry with exponential backoff, then log and skip.
    RetryWithBackoff {
        /// Attempts after the first.
        max_retries: u32,
        /// The first wait; each retry doubles it.
        backoff: Duration,
    },
    /// Send the failed records, with the error, to the dead-letter sink.
    SendToDlq,
}

impl fmt::Display for FailureStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LogAndContinue => f.write_str("LogAndContinue"),
            Self::FailBatch => f.write_str("FailBatch"),
            Self::RetryWithBackoff { max_retries, backoff } => {
                write!(f, "RetryWithBackoff(max_retries={max_retries}, backoff={}ms)", backoff.as_millis())
            }
            Self::SendToDlq => f.write_str("SendToDLQ"),
        }
    }
}

impl FailureStrategy {
    /// Reads `failure_strategy`, `max_retries` and `retry_backoff` from `props`, falling back
    /// to `default` when `failure_strategy` is absent.
    pub fn from_properties(props: &Properties, default: FailureStrategy) -> Result<Self> {
        let Some(value) = props.get("failure_strategy") else { return Ok(default) };
        let norm: String = value.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
        Ok(match norm.as_str() {
            "logandcontinue" | "log" | "continue" | "skip" => Self::LogAndContinue,
            "failbatch" | "fail" => Self::FailBatch,
            "retrywithbackoff" | "retry" => Self::RetryWithBackoff {
                max_retries: props.get_usize("max_retries")?.unwrap_or(3) as u32,
                backoff: props.get_duration("retry_backoff")?.unwrap_or(Duration::from_millis(1000)),
            },
            "sendtodlq" | "dlq" | "deadletter" => Self::SendToDlq,
            _ => {
                return Err(ConnectorError::invalid(
                    props.full_key("failure_strategy"),
                    format!("unknown strategy '{value}'; use LogAndContinue, FailBatch, RetryWithBackoff or SendToDLQ"),
                ))
            }
        })
    }

    /// Under `RetryWithBackoff`, the wait before the next try once `attempt` retries in a row
    /// have failed: `retry_backoff`, doubled each retry. `None` when the retries are spent or
    /// the strategy does not retry.
    pub fn retry_wait(&self, attempt: u32) -> Option<Duration> {
        match *self {
            Self::RetryWithBackoff { max_retries, backoff } if attempt < max_retries => Some(backoff.saturating_mul(2u32.saturating_pow(attempt))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings() {
        let p = Properties::from_pairs("", [("failure_strategy", "log_and_continue")]);
        assert_eq!(FailureStrategy::from_properties(&p, FailureStrategy::FailBatch).unwrap(), FailureStrategy::LogAndContinue);
        let p = Properties::from_pairs("", [("failure_strategy", "RetryWithBackoff"), ("max_retries", "5"), ("retry_backoff", "2000")]);
        assert_eq!(
            FailureStrategy::from_properties(&p, FailureStrategy::default()).unwrap(),
            FailureStrategy::RetryWithBackoff { max_retries: 5, backoff: Duration::from_secs(2) }
        );
        let p = Properties::from_pairs("", [("failure_strategy", "Explode")]);
        assert!(FailureStrategy::from_properties(&p, FailureStrategy::default()).unwrap_err().to_string().contains("'failure_strategy'"));
    }
}
