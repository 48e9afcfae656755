-- Nexmark q5: hot items. The auctions with the most bids in each sliding window of
-- 10 seconds, every 2 seconds (HOP: panes of 2 s, each bid aggregated once).
CREATE STREAM q5 AS
WITH auction_bids AS (
    SELECT auction, COUNT(*) AS num, window_start, window_end
    FROM bid
    GROUP BY HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction
)
SELECT a.auction, a.num, a.window_start
FROM auction_bids a
JOIN (SELECT MAX(num) AS maxn, window_start, window_end FROM auction_bids GROUP BY window_start, window_end) m
  ON a.window_start = m.window_start AND a.window_end = m.window_end AND a.num >= m.maxn
INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}', 'bid.event_time' = 'date_time', 'nowhere.type' = 'blackhole');
