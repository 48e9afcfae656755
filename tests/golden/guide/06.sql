-- From the user's guide (ferrisstreams-guide.md), SQL example 6.
CREATE STREAM comprehensive_output AS
SELECT 
    order_id,
    customer_tier,
    total_amount,
    risk_score,
    CURRENT_TIMESTAMP as processed_at
FROM enriched_orders
INTO kafka_realtime, file_archive, s3_backup
WITH (
    'kafka_realtime.topic' = 'realtime-orders',
    'file_archive.path' = 'archive/orders_{date}.json',
    's3_backup.bucket' = 'data-lake',
    's3_backup.prefix' = 'orders/year={year}/month={month}/'
);
