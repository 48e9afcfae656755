-- Nexmark q12: bids per bidder in processing-time windows of 10 seconds (PROCTIME(): the
-- moment each batch is processed, not the event's own time).
CREATE STREAM q12 AS
SELECT bidder, COUNT(*) AS bid_count, window_start, window_end
FROM bid
GROUP BY TUMBLE(PROCTIME(), INTERVAL '10' SECOND), bidder
INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}', 'nowhere.type' = 'blackhole');
