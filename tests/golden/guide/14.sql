-- From the user's guide (ferrisstreams-guide.md), SQL example 14.
-- Source configuration (FROM clause)
SELECT * FROM orders_source
WITH (
    'orders_source.type' = 'kafka_source',             -- ✅ REQUIRED: Compound type (type + role)
    'orders_source.bootstrap.servers' = 'localhost:9092',
    'orders_source.topic' = 'orders'
);
