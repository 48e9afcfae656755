-- From the user's guide (ferrisstreams-guide.md), SQL fragment 24.
-- The guide shows only the WITH clause; it is completed here with a query.
SELECT * FROM example_source
WITH (
    'batch.memory_limit_mb' = '512',
    'batch.strategy' = 'MemoryBased',
    'source.buffer_size' = '1000'
);
