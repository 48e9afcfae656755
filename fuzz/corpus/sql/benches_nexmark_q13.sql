-- Nexmark q13: bounded side input join. Each bid joined with the side table's row for
-- auction % 10000 (nexmark-gen writes side_input.csv: key 0-9999, value 'value-<key>'). With
-- the bids on a stream, the side table is a lookup table (Flink: FOR SYSTEM_TIME AS OF).
CREATE STREAM q13 AS
SELECT b.auction, b.bidder, b.price, b.date_time, s.value
FROM bid b JOIN side_input s ON b.auction % 10000 = s.key
INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}',
      'side_input.type' = 'file_source', 'side_input.path' = '${NEXMARK_DIR:-target/nexmark}/side_input.csv', 'side_input.schema' = 'key BIGINT, value VARCHAR',
      'nowhere.type' = 'blackhole');
