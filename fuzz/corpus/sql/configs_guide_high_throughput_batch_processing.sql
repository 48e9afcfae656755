-- The user's guide, "Real-World Examples": its SQL as written (do not edit; stand-ins go in ferris.yaml).
-- SQL Application: HighThroughputBatchProcessing
CREATE STREAM batch_optimized_transactions AS
SELECT 
    t.transaction_id,
    t.customer_id,
    t.amount,
    t.merchant_category,
    c.risk_score,
    m.fraud_indicators,
    t.amount * CASE 
        WHEN c.risk_score > 0.8 THEN 1.05  -- High risk fee
        WHEN t.amount > 10000 THEN 1.02    -- Large transaction fee
        ELSE 1.0
    END as adjusted_amount,
    CURRENT_TIMESTAMP as processed_at
FROM transaction_stream t
LEFT JOIN customer_profiles c ON t.customer_id = c.customer_id  
LEFT JOIN merchant_data m ON t.merchant_id = m.merchant_id
WHERE t.amount > 0 AND t.status = 'PENDING'
INTO high_throughput_sink, audit_log_sink, analytics_sink
WITH (
    -- Global Batch Configuration: Adaptive Size for Variable Load
    'batch.strategy' = 'adaptive_size',
    'batch.enable' = 'true',
    'batch.min_size' = '100',
    'batch.adaptive_max_size' = '5000',
    'batch.target_latency' = '200ms',
    'batch.timeout' = '10000ms',
    
    -- Source Configuration: High-throughput Kafka stream
    'transaction_stream.type' = 'kafka_source',
    'transaction_stream.bootstrap.servers' = 'kafka-cluster:9092',
    'transaction_stream.topic' = 'raw-transactions',
    'transaction_stream.value.format' = 'avro',
    'transaction_stream.group.id' = 'batch-processor',
    'transaction_stream.max.poll.records' = '2000',
    'transaction_stream.fetch.min.bytes' = '32768',
    
    -- File-based Reference Data
    'customer_profiles.type' = 'file_source',
    'customer_profiles.path' = '/data/customers/profiles.parquet',
    'customer_profiles.format' = 'parquet',
    
    'merchant_data.type' = 'file_source', 
    'merchant_data.path' = '/data/merchants/fraud_indicators.json',
    'merchant_data.format' = 'json',
    
    -- High-Throughput Kafka Sink with Compression
    'high_throughput_sink.type' = 'kafka_sink',
    'high_throughput_sink.bootstrap.servers' = 'kafka-cluster:9092',
    'high_throughput_sink.topic' = 'processed-transactions',
    'high_throughput_sink.value.format' = 'json',
    'high_throughput_sink.batch.size' = '65536',      -- Kafka producer batch size
    'high_throughput_sink.linger.ms' = '50',          -- Kafka batching delay
    'high_throughput_sink.compression.type' = 'snappy',
    
    -- File-based Audit Log
    'audit_log_sink.type' = 'file_sink',
    'audit_log_sink.path' = '/var/audit/transactions_{date}.log',
    'audit_log_sink.format' = 'json',
    'audit_log_sink.append' = 'true',
    
    -- Analytics Data Lake  
    'analytics_sink.type' = 's3_sink',
    'analytics_sink.bucket' = 'financial-analytics',
    'analytics_sink.prefix' = 'transactions/year={year}/month={month}/day={day}/',
    'analytics_sink.format' = 'parquet',
    'analytics_sink.compression' = 'gzip',
    
    -- Job-Level Failure Handling
    'failure_strategy' = 'RetryWithBackoff',
    'max_retries' = '3',
    'retry_backoff' = '2000ms',
    
    -- Performance Tuning
    'use_transactions' = 'false'  -- Simple mode for maximum throughput
);

-- Alternative: Memory-Based Batching for Large Records
CREATE STREAM memory_optimized_large_records AS
SELECT 
    large_payload.record_id,
    large_payload.data_blob,
    large_payload.metadata,
    BYTE_LENGTH(large_payload.data_blob) as payload_size
FROM large_data_stream large_payload  
WHERE BYTE_LENGTH(large_payload.data_blob) < 1048576  -- Filter records < 1MB
INTO memory_aware_sink
WITH (
    -- Memory-Based Batching for Large Payloads
    'batch.strategy' = 'memory_based',
    'batch.enable' = 'true', 
    'batch.memory_size' = '16777216',  -- 16MB batches
    'batch.timeout' = '30000ms',       -- 30 second timeout
    
    -- Source: High-volume data stream
    'large_data_stream.type' = 'kafka_source',
    'large_data_stream.bootstrap.servers' = 'kafka-cluster:9092',
    'large_data_stream.topic' = 'large-payloads',
    'large_data_stream.value.format' = 'avro',
    'large_data_stream.max.poll.records' = '100',  -- Smaller poll for large records
    
    -- Memory-aware sink
    'memory_aware_sink.type' = 'file_sink',
    'memory_aware_sink.path' = '/data/large_records/{hour}/batch_{batch_id}.json',
    'memory_aware_sink.format' = 'json'
);

-- Low-Latency Processing for Real-Time Alerts  
CREATE STREAM low_latency_alerts AS
SELECT 
    alert.alert_id,
    alert.severity, 
    alert.message,
    alert.timestamp,
    'URGENT' as priority
FROM critical_alerts alert
WHERE alert.severity IN ('CRITICAL', 'HIGH')
INTO immediate_notification_sink, alert_dashboard_sink
WITH (
    -- Low-Latency Batching: Process immediately
    'batch.strategy' = 'low_latency',
    'batch.enable' = 'true',
    'batch.low_latency_max_size' = '5',    -- Very small batches
    'batch.low_latency_wait' = '10ms',     -- Minimal wait time
    'batch.eager_processing' = 'true',     -- Process immediately when available
    
    -- Real-time alert source
    'critical_alerts.type' = 'kafka_source', 
    'critical_alerts.bootstrap.servers' = 'kafka-cluster:9092',
    'critical_alerts.topic' = 'system-alerts',
    'critical_alerts.value.format' = 'json',
    'critical_alerts.fetch.max.wait.ms' = '1',  -- Minimal fetch delay
    
    -- Immediate notification (HTTP/webhook)
    'immediate_notification_sink.type' = 'http_sink',
    'immediate_notification_sink.url' = 'https://alerts.company.com/webhook',
    'immediate_notification_sink.method' = 'POST',
    'immediate_notification_sink.timeout' = '5000ms',
    
    -- Dashboard updates  
    'alert_dashboard_sink.type' = 'kafka_sink',
    'alert_dashboard_sink.bootstrap.servers' = 'kafka-cluster:9092', 
    'alert_dashboard_sink.topic' = 'dashboard-alerts',
    'alert_dashboard_sink.value.format' = 'json',
    'alert_dashboard_sink.batch.size' = '1024',     -- Small Kafka batches
    'alert_dashboard_sink.linger.ms' = '1'          -- Immediate send
);
