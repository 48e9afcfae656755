-- Nexmark q20: expand bid with auction. Bids joined with their auction, category 10 only.
CREATE STREAM q20 AS
SELECT auction, bidder, price, channel, url, b.date_time AS bid_date_time, b.extra AS bid_extra,
       item_name, description, initial_bid, reserve, a.date_time AS auction_date_time, expires, seller, category, a.extra AS auction_extra
FROM bid b JOIN auction a ON b.auction = a.id
WHERE a.category = 10
INTO nowhere
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}', 'auction.type' = 'file_source', 'auction.path' = '${NEXMARK_DIR:-target/nexmark}/auction.${NEXMARK_FORMAT:-parquet}', 'nowhere.type' = 'blackhole');
