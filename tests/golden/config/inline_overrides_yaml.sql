-- Inline WITH keys override YAML values; the YAML needs no type; extends chains.
SELECT * FROM orders INTO audit
WITH ('orders.type' = 'kafka_source',
      'orders.config_file' = '../guide/configs/kafka-orders-source.yaml',
      'orders.topic' = 'orders-override',
      'audit.type' = 'file_sink',
      'audit.config_file' = '../guide/configs/audit_file_sink.yaml');
