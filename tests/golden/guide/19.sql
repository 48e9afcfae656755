-- From the user's guide (ferrisstreams-guide.md), SQL example 19.
CREATE STREAM trading_alerts AS
SELECT 
    m.symbol,
    m.price,
    m.volume,
    r.instrument_name,
    r.risk_category,
    CASE 
        WHEN m.price > r.high_threshold THEN 'HIGH_RISK'
        WHEN m.price < r.low_threshold THEN 'LOW_RISK'
        ELSE 'NORMAL'
    END as risk_level,
    CURRENT_TIMESTAMP as alert_time
FROM market_data_source m
JOIN reference_data_source r ON m.symbol = r.symbol
WHERE m.volume > 10000
INTO alerts_sink, audit_sink
WITH (
    -- Source configurations with environment-specific files
    'market_data_source.type' = 'kafka_source',
    'market_data_source.config_file' = './configs/prod_market_data_source.yaml',
    'reference_data_source.type' = 'database_source',
    'reference_data_source.config_file' = './configs/reference_data_source.yaml',
    
    -- Sink configurations with inheritance
    'alerts_sink.type' = 'kafka_sink',
    'alerts_sink.config_file' = './configs/prod_alerts_sink.yaml',
    'audit_sink.type' = 'file_sink', 
    'audit_sink.config_file' = './configs/audit_file_sink.yaml',
    
    -- Inline overrides for environment-specific values
    'alerts_sink.topic' = 'risk-alerts-prod',  # Override YAML value
    'audit_sink.path' = '/logs/prod/trading-audit.log'  # Override YAML value
);
