-- Nexmark q1: currency conversion (dollars to euros).
CREATE STREAM q1 AS
SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid
INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}', 'nowhere.type' = 'blackhole');
