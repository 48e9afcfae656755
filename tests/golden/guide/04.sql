-- From the user's guide (ferrisstreams-guide.md), SQL example 4.
CREATE STREAM processed_data AS
SELECT * FROM raw_data WHERE amount > 100
INTO kafka_alerts
WITH (
    'kafka_alerts.bootstrap.servers' = 'localhost:9092',
    'kafka_alerts.topic' = 'high-value-alerts',
    'kafka_alerts.value.format' = 'json'
);
