-- From the user's guide (ferrisstreams-guide.md), SQL example 11.
CREATE STREAM configured_output AS  
SELECT 
    event_id,
    user_id,
    event_type,
    properties
FROM events
INTO kafka_sink, file_sink
WITH (
    -- Kafka sink configuration
    'kafka_sink.type' = 'kafka_sink',
    'kafka_sink.bootstrap.servers' = 'kafka1:9092,kafka2:9092',
    'kafka_sink.topic' = 'processed-events',
    'kafka_sink.value.format' = 'json',
    'kafka_sink.batch.size' = '1000',
    
    -- File sink configuration  
    'file_sink.type' = 'file_sink',
    'file_sink.path' = '/data/events/processed_{timestamp}.json',
    'file_sink.format' = 'json',
    'file_sink.compression' = 'gzip',
    'file_sink.rotation' = 'hourly'
);
