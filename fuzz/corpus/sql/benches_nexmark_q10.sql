-- Nexmark q10: log to file system. Every bid written to CSV files in Hive directories by day
-- and minute (dt=2024-01-05/hm=10:30/), as Flink's filesystem sink partitioned by dt, hm.
CREATE STREAM q10 AS
SELECT auction, bidder, price, date_time, extra,
       DATE_FORMAT(date_time, 'yyyy-MM-dd') AS dt, DATE_FORMAT(date_time, 'HH:mm') AS hm
FROM bid
INTO fs_sink
WITH ('bid.type' = 'file_source', 'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}',
      'fs_sink.type' = 'file_sink', 'fs_sink.path' = '${NEXMARK_OUT:-target/nexmark-out}/q10/part.csv', 'fs_sink.partition_columns' = 'dt,hm');
