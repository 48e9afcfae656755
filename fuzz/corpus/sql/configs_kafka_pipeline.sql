-- FerrisStreams demo, Kafka variant: the e-commerce enrichment with orders arriving on a Kafka
-- topic. Run it with the broker the project starts (tansu, in memory, on 127.0.0.1:9092):
--
--   bash configs/kafka_demo.sh
--
-- Job 1 publishes data/orders.jsonl to the topic `demo-orders` (a file source into a Kafka
-- sink; it ends when the file is read). Job 2 consumes that topic as a stream, enriches each
-- order with the customer and product tables, and writes every result both to the topic
-- `demo-enriched-orders` (keyed by customer) and to out/kafka_enriched_orders.jsonl. It runs
-- until stopped (Ctrl-C): offsets are committed once both sinks have the rows, so a rerun
-- carries on where this one stopped.

CREATE STREAM publish_orders AS
SELECT * FROM orders_file
INTO orders_topic
WITH (
    'orders_file.type' = 'file_source',
    'orders_file.path' = 'data/orders.jsonl',
    'orders_topic.type' = 'kafka_sink',
    'orders_topic.bootstrap.servers' = '${KAFKA_BROKERS:-127.0.0.1:9092}',
    'orders_topic.topic' = 'demo-orders',
    'orders_topic.key.field' = 'order_id',
    'orders_topic.acks' = 'all'
);

CREATE STREAM kafka_enriched_orders AS
SELECT
    o.order_id,
    o._partition AS kafka_partition,
    o._offset AS kafka_offset,
    c.customer_name,
    c.customer_tier,
    p.product_name,
    o.quantity * p.unit_price AS line_total
FROM orders o
INNER JOIN customers c ON o.customer_id = c.customer_id
INNER JOIN products p ON o.product_id = p.product_id
WHERE o.quantity > 0 AND p.active = true
INTO enriched_topic, enriched_file
WITH (
    'orders.type' = 'kafka_source',
    'orders.bootstrap.servers' = '${KAFKA_BROKERS:-127.0.0.1:9092}',
    'orders.topic' = 'demo-orders',
    'orders.group.id' = 'ferris-demo',
    'orders.value.format' = 'json',
    'orders.schema' = 'order_id BIGINT, customer_id BIGINT, product_id BIGINT, quantity BIGINT, amount DOUBLE, order_date VARCHAR, order_ts VARCHAR, status VARCHAR',
    'orders.auto.offset.reset' = 'earliest',
    'orders.session.timeout.ms' = '6000',

    'customers.type' = 'file_source',
    'customers.path' = 'data/customers.csv',
    'customers.format' = 'csv',
    'products.type' = 'file_source',
    'products.path' = 'data/products.json',
    'products.format' = 'json',

    'enriched_topic.type' = 'kafka_sink',
    'enriched_topic.bootstrap.servers' = '${KAFKA_BROKERS:-127.0.0.1:9092}',
    'enriched_topic.topic' = 'demo-enriched-orders',
    'enriched_topic.key.field' = 'customer_name',
    'enriched_topic.compression.type' = 'lz4',

    'enriched_file.type' = 'file_sink',
    'enriched_file.path' = 'out/kafka_enriched_orders.jsonl',

    'batch.strategy' = 'low_latency',
    'batch.low_latency_max_size' = '100',
    'batch.low_latency_wait' = '5ms',
    'failure_strategy' = 'LogAndContinue'
);
