-- Analysis errors are reported per statement; the others are still explained.
SELECT * FROM orders_source WITH ('orders_source.topic' = 'orders');
SELECT * FROM a INTO b WITH ('a.type' = 'file_source');
CREATE STREAM my_job AS SELECT 100 AS constant_value;
SELECT * FROM a WITH ('a.type' = 'kafka_sink');
SELECT * FROM a WITH ('a.type' = 'kafak');
SELECT * FROM a INTO a2 WITH ('a.type' = 'file_source', 'a2.type' = 'stdout', 'a.pth' = 'x', 'a2.path' = 'y', 'nobody.path' = 'z', 'batch.sise' = '1');
