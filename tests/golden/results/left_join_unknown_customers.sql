-- golden-mode: run
-- LEFT JOIN: orders of customers 21 and 22 have no customer row, so COALESCE supplies 'Unknown'.
SELECT o.order_id, o.customer_id, COALESCE(c.customer_name, 'Unknown') AS customer_name, c.email IS NULL AS no_email
FROM orders o LEFT JOIN customers c ON o.customer_id = c.customer_id
WHERE o.customer_id IN (7, 21, 22) AND o.order_id < 120
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
      'customers.type' = 'file_source', 'customers.path' = 'data/customers.csv');
