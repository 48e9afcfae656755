-- From the user's guide (ferrisstreams-guide.md), SQL fragment 21.
-- The guide shows only the WITH clause; it is completed here with a query.
SELECT * FROM example_source
WITH (
    'use_transactions' = 'false',
    'failure_strategy' = 'LogAndContinue',
    'max_batch_size' = '1000',
    'batch_timeout' = '100'
);
