-- From the user's guide (ferrisstreams-guide.md), SQL example 12.
CREATE STREAM my_stream AS
SELECT * FROM kafka_source
WITH (
    'kafka_source.failure_strategy' = 'RetryWithBackoff',
    'kafka_source.retry_backoff' = '1000ms',
    'kafka_source.max_retries' = '3',
    'kafka_source.bootstrap.servers' = 'localhost:9092',
    'kafka_source.topic' = 'raw-events'
);
