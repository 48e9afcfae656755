-- Nexmark q6: average selling price by seller, over each seller's last 10 closed auctions
-- (the closing bid's time orders them; the auction id breaks ties). Flink's text groups by
-- auction and seller and reads B.dateTime without aggregating it; here it is MAX(b.date_time),
-- the time of the last bid in the auction's lifetime. Flink's own suite cannot run q6.
CREATE STREAM q6 AS
SELECT q.seller, AVG(q.final) OVER (PARTITION BY q.seller ORDER BY q.date_time, q.id ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_price
FROM (
    SELECT a.id, a.seller, MAX(b.price) AS final, MAX(b.date_time) AS date_time
    FROM auction a JOIN bid b ON a.id = b.auction
    WHERE b.date_time BETWEEN a.date_time AND a.expires
    GROUP BY a.id, a.seller
) q
INTO nowhere
WITH ('auction.type' = 'file_source', 'auction.path' = '${NEXMARK_DIR:-target/nexmark}/auction.${NEXMARK_FORMAT:-parquet}', 'bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}', 'nowhere.type' = 'blackhole');
