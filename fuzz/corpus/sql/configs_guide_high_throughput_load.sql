-- The high-throughput examples' input, put where they read it: transactions and large payloads
-- on Kafka topics as Avro, system alerts as JSON, the customer profiles as a Parquet file. Run
-- by configs/guide/run.sh with this directory's ferris.yaml (profile `load`).
CREATE STREAM load_transactions AS SELECT * FROM transactions INTO raw_transactions
WITH ('transactions.type' = 'file_source', 'transactions.path' = 'data/guide/transactions.jsonl',
      'transactions.schema' = 'transaction_id BIGINT, customer_id BIGINT, merchant_id VARCHAR, merchant_category VARCHAR, amount DOUBLE, status VARCHAR, timestamp BIGINT',
      'raw_transactions.type' = 'kafka_sink', 'raw_transactions.value.format' = 'avro',
      'raw_transactions.avro.schema.file' = 'configs/guide/schemas/transaction.avsc');

CREATE STREAM load_payloads AS SELECT * FROM payloads INTO large_payloads
WITH ('payloads.type' = 'file_source', 'payloads.path' = 'data/guide/large_payloads.jsonl',
      'payloads.schema' = 'record_id BIGINT, data_blob VARCHAR, metadata VARCHAR',
      'large_payloads.type' = 'kafka_sink', 'large_payloads.value.format' = 'avro',
      'large_payloads.avro.schema.file' = 'configs/guide/schemas/large_payload.avsc');

CREATE STREAM load_alerts AS SELECT * FROM alerts INTO system_alerts
WITH ('alerts.type' = 'file_source', 'alerts.path' = 'data/guide/alerts.jsonl',
      'system_alerts.type' = 'kafka_sink', 'system_alerts.value.format' = 'json');

CREATE STREAM load_profiles AS SELECT * FROM customers INTO profiles
WITH ('customers.type' = 'file_source', 'customers.path' = 'data/customers.csv',
      'profiles.type' = 'file_sink', 'profiles.format' = 'parquet');
