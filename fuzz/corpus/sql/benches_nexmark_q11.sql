-- Nexmark q11: user sessions. Bids per bidder in session windows closed by 10 seconds
-- without a bid.
CREATE STREAM q11 AS
SELECT bidder, COUNT(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM bid
GROUP BY SESSION(date_time, INTERVAL '10' SECOND), bidder
INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}', 'bid.event_time' = 'date_time', 'nowhere.type' = 'blackhole');
