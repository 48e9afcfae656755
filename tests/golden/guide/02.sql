-- From the user's guide (ferrisstreams-guide.md), SQL example 2.
SELECT 
    orders.order_id,
    payments.payment_id,
    orders.amount,
    payments.status
FROM orders
INNER JOIN payments ON orders.order_id = payments.order_id
WITHIN INTERVAL '5' MINUTES
