-- Nexmark q4: average closing price per category (bounded input: final result).
CREATE TABLE q4 AS
SELECT q.category, AVG(q.final) AS avg_final
FROM (
    SELECT MAX(b.price) AS final, a.category
    FROM auction a JOIN bid b ON a.id = b.auction
    WHERE b.date_time BETWEEN a.date_time AND a.expires
    GROUP BY a.id, a.category
) q
GROUP BY q.category
EMIT FINAL
INTO nowhere
WITH ('auction.type' = 'file_source', 'auction.path' = '${NEXMARK_DIR:-target/nexmark}/auction.${NEXMARK_FORMAT:-parquet}', 'bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}', 'nowhere.type' = 'blackhole');
