-- golden-args: --config configs/guide/configs/app.yaml --profile qa
SELECT * FROM events WITH ('events.type' = 'kafka_source');
