-- From the user's guide (ferrisstreams-guide.md), SQL example 18.
CREATE STREAM enriched_orders AS
SELECT 
    o.order_id,
    o.amount,
    c.customer_name,
    c.customer_segment,
    p.product_name,
    o.amount * p.price as total_value,
    CURRENT_TIMESTAMP as processed_at
FROM orders_source o
JOIN customers_source c ON o.customer_id = c.id  
JOIN products_source p ON o.product_id = p.id
WHERE o.amount > 100
INTO processed_orders_sink, analytics_warehouse_sink, audit_log_sink
WITH (
    -- Source configurations
    'orders_source.type' = 'kafka_source',
    'orders_source.config_file' = './configs/orders_source.yaml',
    'customers_source.type' = 'database_source', 
    'customers_source.config_file' = './configs/customers_source.yaml',
    'products_source.type' = 'file_source',
    'products_source.config_file' = './configs/products_source.yaml',
    
    -- Sink configurations  
    'processed_orders_sink.type' = 'kafka_sink',
    'processed_orders_sink.config_file' = './configs/processed_orders_sink.yaml',
    'analytics_warehouse_sink.type' = 's3_sink',
    'analytics_warehouse_sink.config_file' = './configs/analytics_warehouse_sink.yaml',
    'audit_log_sink.type' = 'file_sink',
    'audit_log_sink.config_file' = './configs/audit_log_sink.yaml'
);
