-- From the user's guide (ferrisstreams-guide.md), SQL fragment 23.
-- The guide shows only the WITH clause; it is completed here with a query.
SELECT * FROM example_source
-- High throughput configuration
WITH (
    'max_batch_size' = '2000',
    'batch_timeout' = '50',
    'batch.strategy' = 'FixedSize'
)

-- Low latency configuration  
WITH (
    'max_batch_size' = '10',
    'batch_timeout' = '10', 
    'batch.strategy' = 'LowLatency'
);
