-- The user's guide, "Real-World Examples": its SQL as written (do not edit; stand-ins go in ferris.yaml).
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
    o.quantity * p.unit_price as line_total,
    CASE 
        WHEN c.customer_tier = 'GOLD' THEN 0.1
        WHEN c.customer_tier = 'SILVER' THEN 0.05
        ELSE 0.0
    END as discount_rate
FROM kafka_orders o
INNER JOIN customer_files c ON o.customer_id = c.customer_id
INNER JOIN product_catalog p ON o.product_id = p.product_id
WHERE o.quantity > 0 AND p.active = true
INTO kafka_fulfillment, file_audit, s3_analytics
WITH (
    -- Source configuration
    'kafka_orders.type' = 'kafka_source',
    'kafka_orders.bootstrap.servers' = 'kafka1:9092',
    'kafka_orders.topic' = 'raw-orders',
    'kafka_orders.value.format' = 'avro',
    
    'customer_files.type' = 's3_source',
    'customer_files.path' = 's3://customer-data/profiles/',
    'customer_files.format' = 'parquet',
    
    'product_catalog.type' = 'file_source',
    'product_catalog.path' = '/data/products/catalog.json',
    'product_catalog.format' = 'json',
    'product_catalog.source.has_headers' = 'true',
    
    -- Sink configuration
    'kafka_fulfillment.type' = 'kafka_sink',
    'kafka_fulfillment.topic' = 'order-fulfillment',
    'kafka_fulfillment.value.format' = 'json',
    
    'file_audit.type' = 'file_sink',
    'file_audit.path' = '/var/log/audit/orders_{date}.log',
    'file_audit.format' = 'json',
    'file_audit.append' = 'true',
    
    's3_analytics.type' = 's3_sink',
    's3_analytics.bucket' = 'analytics-lake',
    's3_analytics.prefix' = 'orders/year={year}/month={month}/',
    
    -- Processing configuration
    'use_transactions' = 'false',
    'failure_strategy' = 'LogAndContinue',
    'batch.strategy' = 'fixed_size',
    'batch.size' = '500',
    'batch.timeout' = '2000ms',
    'batch.enable' = 'true'
);
