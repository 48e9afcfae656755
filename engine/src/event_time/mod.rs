//! Event time: reading a column as milliseconds since the epoch, and the watermarks that say how
//! far event time has progressed.
//!
//! ```sql
//! SELECT window_start, user_id, COUNT(*) FROM clicks GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE), user_id
//! WITH ('clicks.event_time' = 'ts', 'clicks.watermark.delay' = '5s', …)
//! ```

pub mod floor;
pub mod late;
pub mod time_column;
pub mod watermark;
pub mod watermark_sort;

pub use time_column::to_epoch_millis;
pub use watermark::{PartitionWatermarks, WatermarkConfig};
