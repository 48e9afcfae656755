-- From the user's guide (ferrisstreams-guide.md), SQL example 5.
CREATE STREAM audit_log AS
SELECT order_id, customer_id, amount, processing_time
FROM processed_orders
INTO audit_file
WITH (
    'audit_file.path' = '/var/log/audit/orders.json',
    'audit_file.format' = 'json',
    'audit_file.append' = 'true'
);
