-- From the user's guide (ferrisstreams-guide.md), SQL example 20.
CREATE STREAM multi_example AS
SELECT 
    k.event_id,
    k.event_type,
    f.metadata
FROM kafka_source k, file_source f  
INTO processed_sink
WITH (
    -- Source configurations - environment-specific files
    'kafka_source.type' = 'kafka_source',
    'kafka_source.config_file' = './configs/${ENVIRONMENT:-dev}_kafka_source.yaml',
    'file_source.type' = 'file_source',
    'file_source.config_file' = './configs/file_source.yaml',
    
    -- Sink configuration
    'processed_sink.type' = 'file_sink',
    'processed_sink.config_file' = './configs/output_sink.yaml',
    
    -- Global job settings
    'use_transactions' = 'true',
    'batch.timeout' = '5000'
);
