-- From the user's guide (ferrisstreams-guide.md), SQL example 15.
-- Sink configuration (INTO clause) 
SELECT * FROM stream_data
INTO processed_sink
WITH (
    'stream_data.type' = 'file_source',                -- ✅ REQUIRED: Source compound type
    'stream_data.path' = '/data/input.csv',
    
    'processed_sink.type' = 'kafka_sink',              -- ✅ REQUIRED: Sink compound type
    'processed_sink.bootstrap.servers' = 'localhost:9092'
);
