-- From the user's guide (ferrisstreams-guide.md), SQL fragments 32 (troubleshooting), each
-- completed here with a query.
-- Reduce batch size
SELECT * FROM example_source
WITH ('max_batch_size' = '100');

-- Use memory-based batching
SELECT * FROM example_source
WITH ('batch.strategy' = 'MemoryBased', 'batch.memory_limit_mb' = '200');

-- Reduce window size for temporal joins
SELECT * FROM clicks c JOIN purchases p ON c.user_id = p.user_id
WITHIN INTERVAL '1' MINUTE;  -- instead of '1' HOUR
