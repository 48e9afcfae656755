-- From the user's guide (ferrisstreams-guide.md), SQL example 7.
SELECT 
    o.order_id,
    c.customer_name,
    p.product_name,
    o.quantity * p.price as total_value
FROM orders o
INNER JOIN customers c ON o.customer_id = c.customer_id
INNER JOIN products p ON o.product_id = p.product_id
WHERE o.order_date >= '2024-01-01';
