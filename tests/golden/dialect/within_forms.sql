-- WITHIN INTERVAL after the last ON condition, with every unit spelling.
SELECT * FROM a JOIN b ON a.k = b.k AND a.x = b.x WITHIN INTERVAL '5' MINUTES WHERE a.v > 1
WITH ('a.type' = 'file_source', 'b.type' = 'file_source');
SELECT * FROM a LEFT JOIN b ON a.k = b.k WITHIN INTERVAL '30 seconds'
WITH ('a.type' = 'file_source', 'b.type' = 'file_source');
SELECT * FROM a FULL OUTER JOIN b ON a.k = b.k WITHIN INTERVAL '2' HOUR INTO c
WITH ('a.type' = 'file_source', 'b.type' = 'file_source', 'c.type' = 'blackhole');
-- The explicit form needs no WITHIN.
SELECT * FROM a JOIN b ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '10' SECOND AND b.ts + INTERVAL '5' SECOND
WITH ('a.type' = 'file_source', 'b.type' = 'file_source');
