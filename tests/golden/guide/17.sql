-- From the user's guide (ferrisstreams-guide.md), SQL example 17.
SELECT * FROM events_stream
INTO analytics_warehouse
WITH (
    -- Inline source configuration
    'events_stream.type' = 'kafka_source',
    'events_stream.bootstrap.servers' = 'localhost:9092',
    'events_stream.topic' = 'raw-events',
    
    -- YAML config file for complex sink
    'analytics_warehouse.type' = 's3_sink',
    'analytics_warehouse.config_file' = './configs/s3-warehouse-sink.yaml'
);
