-- From the user's guide (ferrisstreams-guide.md), SQL example 13.
SELECT * FROM orders_source
WITH (
    'orders_source.type' = 'kafka',                    -- ✅ Explicit and clear
    'orders_source.bootstrap.servers' = 'localhost:9092',
    'orders_source.topic' = 'orders'
);
