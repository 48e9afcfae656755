-- Nexmark q8: monitor new users. People who opened an auction in the same 10-second
-- tumbling window in which they registered: two windowed aggregates joined on the window.
CREATE STREAM q8 AS
SELECT p.id, p.name, p.window_start
FROM (
    SELECT id, name, window_start, window_end FROM person GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), id, name
) p
JOIN (
    SELECT seller, window_start, window_end FROM auction GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND), seller
) a ON p.id = a.seller AND p.window_start = a.window_start AND p.window_end = a.window_end
INTO nowhere
WITH ('person.type' = 'file_source', 'person.path' = '${NEXMARK_DIR:-target/nexmark}/person.${NEXMARK_FORMAT:-parquet}', 'person.event_time' = 'date_time',
      'auction.type' = 'file_source', 'auction.path' = '${NEXMARK_DIR:-target/nexmark}/auction.${NEXMARK_FORMAT:-parquet}', 'auction.event_time' = 'date_time',
      'nowhere.type' = 'blackhole');
