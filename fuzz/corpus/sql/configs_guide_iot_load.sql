-- The IoT example's input, put where it reads it: the four sensor files of data/guide/ on four
-- Kafka topics as JSON, each message's timestamp the reading's (`timestamp.field`), as a sensor
-- gateway would send them. Run by configs/guide/run.sh with ferris.yaml (profile `load`).
CREATE STREAM load_temperature AS SELECT * FROM temperature INTO temperature_readings
WITH ('temperature.type' = 'file_source', 'temperature.path' = 'data/guide/temperature.jsonl',
      'temperature_readings.type' = 'kafka_sink', 'temperature_readings.timestamp.field' = 'timestamp');

CREATE STREAM load_humidity AS SELECT * FROM humidity INTO humidity_readings
WITH ('humidity.type' = 'file_source', 'humidity.path' = 'data/guide/humidity.jsonl',
      'humidity_readings.type' = 'kafka_sink', 'humidity_readings.timestamp.field' = 'timestamp');

CREATE STREAM load_pressure AS SELECT * FROM pressure INTO pressure_readings
WITH ('pressure.type' = 'file_source', 'pressure.path' = 'data/guide/pressure.jsonl',
      'pressure_readings.type' = 'kafka_sink', 'pressure_readings.timestamp.field' = 'timestamp');

CREATE STREAM load_vibration AS SELECT * FROM vibration INTO vibration_readings
WITH ('vibration.type' = 'file_source', 'vibration.path' = 'data/guide/vibration.jsonl',
      'vibration_readings.type' = 'kafka_sink', 'vibration_readings.timestamp.field' = 'timestamp');
