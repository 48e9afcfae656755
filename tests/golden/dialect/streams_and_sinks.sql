-- Our dialect: CREATE STREAM / CREATE TABLE / bare SELECT, EMIT, INTO, WITH in any order,
-- '#', '--' and '/* */' comments, unquoted keys, and ';' optional before a new statement.
CREATE STREAM s1 AS
SELECT id, amount FROM orders WHERE amount > 100   /* a block comment */
EMIT CHANGES
INTO audit, archive
WITH (
    # the guide's hash comments
    'orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
    'audit.type' = 'file',          # a plain type: the role comes from INTO
    'archive.type' = 'blackhole',
    'batch.size' = 500,             -- numbers need no quotes
    'use_transactions' = false,
);

-- Without INTO the sink is the stream's own name, as the predecessor's users write.
CREATE STREAM s2 AS SELECT * FROM orders EMIT CHANGES
WITH ('orders.type' = 'file_source', 's2.type' = 'file_sink', 's2.path' = 'out/s2.csv');

CREATE OR REPLACE TABLE totals AS
SELECT customer_id, COUNT(*) AS n FROM orders GROUP BY customer_id EMIT FINAL
WITH (orders.type = 'file_source', totals.type = 'stdout')

SELECT o.id FROM orders AS o INTO out WITH ('orders.type' = 'file_source', 'out.type' = 'file_sink', 'out.path' = 'x.jsonl');
-- A bare SELECT without INTO prints to stdout.
SELECT o.id FROM orders o EMIT FINAL WITH ('orders.type' = 'file_source');
