-- golden-args: --config configs/guide/configs/app.yaml
-- The file's active_profile (development, FERRIS_PROFILE being unset) supplies ${kafka_brokers}.
SELECT * FROM events
INTO archive
WITH ('events.type' = 'kafka_source', 'events.bootstrap.servers' = '${kafka_brokers}', 'events.topic' = 'events-${ENVIRONMENT}',
      'archive.type' = 'file_sink', 'archive.path' = 'out/${USER}/events-${DATE}.jsonl', 'batch.size' = '${batch_size}');
