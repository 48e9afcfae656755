-- The user's guide, "Real-World Examples": its SQL as written (do not edit; stand-ins go in ferris.yaml).
CREATE STREAM fraud_analysis AS
SELECT 
    t.transaction_id,
    t.amount,
    t.merchant_id,
    t.timestamp as transaction_time,
    c.risk_score,
    c.country as customer_country,
    m.risk_level as merchant_risk,
    l.current_location,
    CASE 
        WHEN t.amount > 10000 THEN 'HIGH_VALUE'
        WHEN l.current_location != c.country THEN 'LOCATION_RISK'  
        WHEN m.risk_level = 'HIGH' THEN 'MERCHANT_RISK'
        WHEN c.risk_score > 0.8 THEN 'CUSTOMER_RISK'
        ELSE 'LOW_RISK'
    END as risk_assessment,
    CASE
        WHEN (t.amount > 10000 AND l.current_location != c.country) 
        THEN 'BLOCK_TRANSACTION'
        WHEN (c.risk_score > 0.9 OR m.risk_level = 'HIGH')
        THEN 'MANUAL_REVIEW' 
        ELSE 'APPROVE'
    END as recommendation
FROM transaction_stream t
INNER JOIN customer_profiles c ON t.customer_id = c.customer_id
INNER JOIN merchant_data m ON t.merchant_id = m.merchant_id  
LEFT JOIN location_service l ON t.customer_id = l.user_id
WITHIN INTERVAL '5' MINUTES
WHERE t.amount > 0
INTO fraud_alerts, audit_compliance, risk_warehouse
WITH (
    -- Transactional processing for financial data
    'use_transactions' = 'true',
    'failure_strategy' = 'FailBatch',
    'max_batch_size' = '100',
    'batch_timeout' = '1000',
    
    -- Source configuration
    'transaction_stream.bootstrap.servers' = 'kafka-secure:9093',
    'transaction_stream.topic' = 'transactions',
    'transaction_stream.security.protocol' = 'SSL',
    'transaction_stream.source.format' = 'avro',
    
    'customer_profiles.connection' = 'postgresql://secure-db:5432/customers',
    'customer_profiles.table' = 'customer_risk_profiles',
    
    'merchant_data.path' = 's3://risk-data/merchants/',
    'merchant_data.source.format' = 'parquet',
    
    'location_service.endpoint' = 'https://location-api/lookup',
    'location_service.auth_token' = '${LOCATION_API_TOKEN}',
    
    -- Sink configuration
    'fraud_alerts.topic' = 'fraud-alerts',
    'fraud_alerts.bootstrap.servers' = 'kafka-secure:9093',
    'fraud_alerts.security.protocol' = 'SSL',
    
    'audit_compliance.path' = '/secure/audit/fraud_analysis_{timestamp}.log',
    'audit_compliance.format' = 'json',
    'audit_compliance.encryption' = 'AES256',
    
    'risk_warehouse.connection' = 'postgresql://warehouse:5432/risk',
    'risk_warehouse.table' = 'fraud_analysis_results'
);
