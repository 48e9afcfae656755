-- Event time on the demo data: weekly order totals per status (tumbling windows), and each
-- order joined with its shipment when it shipped within an hour (an interval join, LEFT: orders
-- that did not ship in time come out with an empty carrier). Run:
--   cargo run --bin ferris-sql -- run configs/event_time_pipeline.sql

CREATE STREAM weekly_totals AS
SELECT window_start, window_end, status, COUNT(*) AS orders, SUM(amount) AS revenue
FROM orders
GROUP BY TUMBLE(order_ts, INTERVAL '7' DAYS), status
INTO weekly_totals_out
WITH (
    'orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
    'orders.event_time' = 'order_ts', 'orders.watermark.delay' = '2 days',
    'weekly_totals_out.type' = 'file_sink', 'weekly_totals_out.path' = 'out/weekly_totals.jsonl'
);

CREATE STREAM shipped_within_an_hour AS
SELECT o.order_id, o.order_ts, s.shipped_ts, s.carrier
FROM orders o LEFT JOIN shipments s ON o.order_id = s.order_id WITHIN INTERVAL '1' HOUR
INTO shipped_out
WITH (
    'orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
    'orders.event_time' = 'order_ts', 'orders.watermark.delay' = '2 days',
    'shipments.type' = 'file_source', 'shipments.path' = 'data/shipments.jsonl',
    'shipments.event_time' = 'shipped_ts',
    'shipped_out.type' = 'file_sink', 'shipped_out.path' = 'out/shipped_within_an_hour.jsonl'
);
