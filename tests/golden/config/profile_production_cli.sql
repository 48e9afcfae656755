-- golden-args: --config configs/guide/configs/app.yaml --profile production
-- --profile wins over the file; production's kafka_brokers comes from KAFKA_BROKERS.
SELECT * FROM events
WITH ('events.type' = 'kafka_source', 'events.bootstrap.servers' = '${kafka_brokers}', 'events.topic' = 'events');
