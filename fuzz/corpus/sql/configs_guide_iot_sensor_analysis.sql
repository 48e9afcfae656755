-- The user's guide, "Real-World Examples": its SQL as written (do not edit; stand-ins go in ferris.yaml).
CREATE STREAM sensor_analysis AS
SELECT 
    t.device_id,
    t.location,
    t.timestamp,
    t.temperature,
    h.humidity,
    p.pressure,
    v.vibration_level,
    -- Calculate composite metrics
    (t.temperature - 20) / 10.0 as temp_deviation,
    (h.humidity - 50) / 20.0 as humidity_deviation,
    (p.pressure - 1013.25) / 50.0 as pressure_deviation,
    -- Anomaly detection
    CASE
        WHEN ABS(t.temperature - LAG(t.temperature, 1) OVER (
            PARTITION BY t.device_id ORDER BY t.timestamp
        )) > 10 THEN 'TEMP_SPIKE'
        WHEN h.humidity > 90 AND t.temperature > 35 THEN 'HIGH_HEAT_HUMIDITY'
        WHEN v.vibration_level > 8.0 THEN 'EXCESSIVE_VIBRATION'  
        WHEN p.pressure < 950 THEN 'LOW_PRESSURE_ALARM'
        ELSE 'NORMAL'
    END as anomaly_type
FROM temperature_sensors t
INNER JOIN humidity_sensors h 
    ON t.device_id = h.device_id
INNER JOIN pressure_sensors p
    ON t.device_id = p.device_id  
LEFT JOIN vibration_sensors v
    ON t.device_id = v.device_id
WITHIN INTERVAL '2' MINUTES
WHERE t.temperature IS NOT NULL 
  AND h.humidity IS NOT NULL
  AND p.pressure IS NOT NULL
INTO monitoring_alerts, data_lake, device_dashboard
WITH (
    -- High-frequency sensor data processing
    'batch.strategy' = 'low_latency',
    'batch.low_latency_max_size' = '10',
    'batch.low_latency_wait' = '5ms',
    'batch.eager_processing' = 'true',
    'batch.enable' = 'true',
    'use_transactions' = 'false',
    'failure_strategy' = 'LogAndContinue',
    
    -- Sensor source configuration
    'temperature_sensors.bootstrap.servers' = 'iot-kafka:9092',
    'temperature_sensors.topic' = 'temperature-readings',
    'temperature_sensors.source.format' = 'json',
    
    'humidity_sensors.bootstrap.servers' = 'iot-kafka:9092', 
    'humidity_sensors.topic' = 'humidity-readings',
    'humidity_sensors.source.format' = 'json',
    
    'pressure_sensors.bootstrap.servers' = 'iot-kafka:9092',
    'pressure_sensors.topic' = 'pressure-readings', 
    'pressure_sensors.source.format' = 'json',
    
    'vibration_sensors.bootstrap.servers' = 'iot-kafka:9092',
    'vibration_sensors.topic' = 'vibration-readings',
    'vibration_sensors.source.format' = 'json',
    
    -- Output sink configuration
    'monitoring_alerts.bootstrap.servers' = 'alert-kafka:9092',
    'monitoring_alerts.topic' = 'sensor-alerts',
    'monitoring_alerts.value.format' = 'json',
    
    'data_lake.bucket' = 'sensor-data-lake',
    'data_lake.prefix' = 'sensors/year={year}/month={month}/day={day}/',
    'data_lake.format' = 'parquet',
    'data_lake.compression' = 'snappy',
    
    'device_dashboard.endpoint' = 'https://dashboard-api/sensors',
    'device_dashboard.auth_header' = 'Bearer ${DASHBOARD_TOKEN}',
    'device_dashboard.batch_size' = '50'
);
