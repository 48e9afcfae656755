-- The e-commerce example's input, put where the example reads it: the orders of data/orders.jsonl
-- on the Kafka topic as Avro, the customers of data/customers.csv in S3 as Parquet. Run by
-- configs/guide/run.sh with this directory's ferris.yaml (profile `load`).
CREATE STREAM load_orders AS SELECT order_id, customer_id, product_id, quantity, amount, order_date, order_ts, status
FROM orders INTO raw_orders
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl', 'orders.format' = 'jsonlines',
      'orders.schema' = 'order_id BIGINT, customer_id BIGINT, product_id BIGINT, quantity BIGINT, amount DOUBLE, order_date VARCHAR, order_ts VARCHAR, status VARCHAR',
      'raw_orders.type' = 'kafka_sink', 'raw_orders.value.format' = 'avro',
      'raw_orders.avro.schema.file' = 'configs/guide/schemas/order.avsc');

CREATE STREAM load_customers AS SELECT * FROM customers INTO customer_profiles
WITH ('customers.type' = 'file_source', 'customers.path' = 'data/customers.csv', 'customers.format' = 'csv',
      'customer_profiles.type' = 's3_sink', 'customer_profiles.format' = 'parquet');
