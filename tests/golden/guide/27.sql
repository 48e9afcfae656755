-- From the user's guide (ferrisstreams-guide.md), SQL fragment 27.
-- The guide shows only the WITH clause; it is completed here with a query.
SELECT * FROM example_source
WITH (
    'failure_strategy' = 'RetryWithBackoff',
    'max_retries' = '5',
    'retry_backoff' = '2000'
);
