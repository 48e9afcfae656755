-- Soak: an interval join of two endless-looking streams (bids with their auctions within
-- 10 s), state evicted as the watermark advances. Peak RSS should not grow with the input.
CREATE STREAM soak_join AS
SELECT b.auction, b.price, a.seller, a.category
FROM bid b JOIN auction a ON b.auction = a.id WITHIN INTERVAL '10' SECONDS
INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.parquet', 'bid.event_time' = 'date_time', 'bid.watermark.delay' = '1s',
      'auction.type' = 'file_source', 'auction.path' = '${NEXMARK_DIR:-target/nexmark}/auction.parquet', 'auction.event_time' = 'date_time', 'auction.watermark.delay' = '1s',
      'nowhere.type' = 'blackhole');
