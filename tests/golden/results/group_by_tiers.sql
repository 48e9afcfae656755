-- golden-mode: run
-- Orders per customer tier, GROUP BY over a join of bounded sources (final result).
SELECT c.customer_tier, COUNT(*) AS orders, SUM(o.quantity) AS items, ROUND(SUM(o.amount), 2) AS total
FROM orders o JOIN customers c ON o.customer_id = c.customer_id
GROUP BY c.customer_tier
WITH ('orders.type' = 'file_source', 'orders.path' = 'data/orders.jsonl',
      'customers.type' = 'file_source', 'customers.path' = 'data/customers.csv');
