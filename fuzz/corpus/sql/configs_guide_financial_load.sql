-- The financial example's input, put where it reads it: the transactions of
-- data/guide/transactions.jsonl on a Kafka topic over TLS as Avro (each message's timestamp the
-- transaction's), the customers of data/customers.csv in a PostgreSQL table, the merchants of
-- data/guide/merchants.json in S3 as Parquet. Run by configs/guide/run.sh with ferris.yaml
-- (profile `load`); the location API's answer is data/guide/locations.json, served by
-- configs/guide/webhook.py.
CREATE STREAM load_transactions AS SELECT * FROM transactions INTO raw_transactions
WITH ('transactions.type' = 'file_source', 'transactions.path' = 'data/guide/transactions.jsonl',
      'transactions.schema' = 'transaction_id BIGINT, customer_id BIGINT, merchant_id VARCHAR, merchant_category VARCHAR, amount DOUBLE, status VARCHAR, timestamp BIGINT',
      'raw_transactions.type' = 'kafka_sink', 'raw_transactions.value.format' = 'avro',
      'raw_transactions.avro.schema.file' = 'configs/guide/schemas/transaction.avsc',
      'raw_transactions.timestamp.field' = 'timestamp', 'raw_transactions.security.protocol' = 'SSL');

CREATE STREAM load_customers AS SELECT * FROM customers INTO customer_risk_profiles
WITH ('customers.type' = 'file_source', 'customers.path' = 'data/customers.csv',
      'customer_risk_profiles.type' = 'database_sink');

CREATE STREAM load_merchants AS SELECT * FROM merchants INTO merchant_files
WITH ('merchants.type' = 'file_source', 'merchants.path' = 'data/guide/merchants.json',
      'merchant_files.type' = 's3_sink', 'merchant_files.format' = 'parquet');
