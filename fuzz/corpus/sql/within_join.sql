# a comment of the predecessor's kind
CREATE STREAM j AS SELECT c.user_id, p.amount FROM clicks c JOIN purchases p ON c.user_id = p.user_id WITHIN INTERVAL '5' MINUTES
INTO out WITH ('clicks.type' = 'kafka_source', 'clicks.topic' = 'clicks', 'purchases.type' = 'kafka_source', 'purchases.topic' = 'p',
 'out.type' = 'kafka_sink', 'out.topic' = 'o', 'use_transactions' = 'true', 'late.sink' = 'late', 'late.type' = 'file_sink', 'late.path' = 'l.jsonl');
