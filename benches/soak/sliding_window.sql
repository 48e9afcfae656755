-- Soak: a sliding window (10 s every 2 s) per auction; panes and windows are dropped as the
-- watermark passes them. Peak RSS should not grow with the input.
CREATE STREAM soak_window AS
SELECT window_start, auction, COUNT(*) AS bids, MAX(price) AS top
FROM bid GROUP BY HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction
INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.parquet', 'bid.event_time' = 'date_time', 'bid.watermark.delay' = '1s',
      'nowhere.type' = 'blackhole');
