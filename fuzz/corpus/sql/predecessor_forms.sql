CREATE TABLE by_category AS SELECT category PRIMARY KEY, COUNT(*) AS n, AVG(price) OVER (PARTITION BY category ORDER BY ts ROWS WINDOW BUFFER 10 ROWS) AS moving
FROM products WINDOW TUMBLING(ts, INTERVAL '1' MINUTE) EMIT CHANGES
INTO out WITH ('products.type' = 'file_source_mmap', 'products.path' = 'p.csv', 'out.type' = 'file_sink', 'out.path' = 'o.jsonl', 'state.ttl' = '1h');
