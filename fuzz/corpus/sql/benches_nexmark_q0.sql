-- Nexmark q0: pass-through. Measures the cost of reading, planning and writing.
CREATE STREAM q0 AS
SELECT auction, bidder, price, date_time, extra FROM bid
INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}', 'nowhere.type' = 'blackhole');
