-- FerrisStreams demo: the guide's e-commerce order pipeline ("Real-World Examples" 1) on the
-- sample files in data/. Orders are enriched with customers and products and written to two
-- file sinks at once; a second job keeps per-customer totals.
--
--   cargo run --bin ferris-sql -- run configs/ecommerce_pipeline.sql
--
-- Output: out/enriched_orders.jsonl, out/enriched_orders.csv and out/customer_totals.csv

CREATE STREAM enriched_orders AS
SELECT
    o.order_id,
    o.order_date,
    o.quantity,
    c.customer_name,
    c.customer_tier,
    c.email,
    p.product_name,
    p.category,
    p.unit_price,
    o.quantity * p.unit_price AS line_total,
    CASE
        WHEN c.customer_tier = 'GOLD' THEN 0.1
        WHEN c.customer_tier = 'SILVER' THEN 0.05
        ELSE 0.0
    END AS discount_rate
FROM orders o
INNER JOIN customers c ON o.customer_id = c.customer_id
INNER JOIN products p ON o.product_id = p.product_id
WHERE o.quantity > 0 AND p.active = true
INTO file_audit, file_archive
WITH (
    # Sources: the guide reads orders from Kafka; here they come from a file
    'orders.type' = 'file_source',
    'orders.path' = 'data/orders.jsonl',
    'orders.format' = 'jsonlines',

    'customers.type' = 'file_source',
    'customers.path' = 'data/customers.csv',
    'customers.format' = 'csv',
    'customers.has_headers' = 'true',

    'products.type' = 'file_source',
    'products.path' = 'data/products.json',
    'products.format' = 'json',

    # Sinks: two file sinks written concurrently
    'file_audit.type' = 'file_sink',
    'file_audit.path' = 'out/enriched_orders.jsonl',
    'file_audit.format' = 'jsonlines',

    'file_archive.type' = 'file_sink',
    'file_archive.path' = 'out/enriched_orders.csv',
    'file_archive.format' = 'csv',

    # Processing configuration
    'use_transactions' = 'false',
    'failure_strategy' = 'LogAndContinue',
    'batch.size' = '500',
    'batch.timeout' = '2000ms'
);

CREATE TABLE customer_totals AS
SELECT
    c.customer_id,
    c.customer_name,
    COUNT(*) AS orders,
    SUM(o.amount) AS total_amount,
    MAX(o.amount) AS largest_order
FROM orders o
LEFT JOIN customers c ON o.customer_id = c.customer_id
WHERE o.status <> 'CANCELLED'
GROUP BY c.customer_id, c.customer_name
EMIT FINAL
WITH (
    'orders.type' = 'file_source',
    'orders.path' = 'data/orders.jsonl',
    'customers.type' = 'file_source',
    'customers.path' = 'data/customers.csv',
    'customer_totals.type' = 'file_sink',
    'customer_totals.path' = 'out/customer_totals.csv',
    'customer_totals.format' = 'csv'
);
