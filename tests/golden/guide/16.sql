-- From the user's guide (ferrisstreams-guide.md), SQL example 16.
-- Using YAML config files for sources and sinks
SELECT 
    orders.order_id,
    customer_data.risk_score,
    orders.amount
FROM orders
JOIN customer_data ON orders.customer_id = customer_data.id
INTO processed_orders, audit_log
WITH (
    -- Named sources with type and config file
    'orders.type' = 'kafka_source',
    'orders.config_file' = './configs/kafka-orders-source.yaml',
    'customer_data.type' = 'database_source',
    'customer_data.config_file' = './configs/database-customers-source.yaml',
    
    -- Named sinks with type and config file  
    'processed_orders.type' = 'kafka_sink',
    'processed_orders.config_file' = './configs/kafka-processed-sink.yaml',
    'audit_log.type' = 'file_sink',
    'audit_log.config_file' = './configs/file-audit-sink.yaml'
);
