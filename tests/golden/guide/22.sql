-- From the user's guide (ferrisstreams-guide.md), SQL fragment 22.
-- The guide shows only the WITH clause; it is completed here with a query.
SELECT * FROM example_source
WITH (
    'use_transactions' = 'true',
    'failure_strategy' = 'FailBatch',
    'max_batch_size' = '100',
    'batch_timeout' = '2000'
);
