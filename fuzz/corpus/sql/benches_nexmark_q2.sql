-- Nexmark q2: selection of bids on some auctions.
CREATE STREAM q2 AS
SELECT auction, price FROM bid WHERE auction % 123 = 0
INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}', 'nowhere.type' = 'blackhole');
