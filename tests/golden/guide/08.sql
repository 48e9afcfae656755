-- From the user's guide (ferrisstreams-guide.md), SQL example 8.
-- LEFT JOIN: All orders, optional customer data
SELECT 
    o.order_id,
    o.amount,
    COALESCE(c.customer_name, 'Unknown') as customer_name,
    COALESCE(c.customer_tier, 'Standard') as tier
FROM orders o
LEFT JOIN customers c ON o.customer_id = c.customer_id;

-- FULL OUTER JOIN: Complete data view
SELECT 
    COALESCE(o.customer_id, c.customer_id) as customer_id,
    o.order_id,
    o.amount,
    c.customer_name
FROM orders o
FULL OUTER JOIN customers c ON o.customer_id = c.customer_id;
