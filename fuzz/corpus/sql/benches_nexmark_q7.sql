-- Nexmark q7: highest bid. Each 10-second tumbling window's highest price, joined back to
-- the bids of that window that carried it.
CREATE STREAM q7 AS
SELECT b.auction, b.price, b.bidder, b.date_time
FROM bid b
JOIN (
    SELECT MAX(price) AS maxprice, window_end AS wend
    FROM bid
    GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)
) m ON b.price = m.maxprice
WHERE b.date_time >= m.wend - INTERVAL '10' SECOND AND b.date_time < m.wend
INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}', 'bid.event_time' = 'date_time', 'nowhere.type' = 'blackhole');
