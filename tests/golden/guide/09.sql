-- From the user's guide (ferrisstreams-guide.md), SQL example 9.
-- Time-based correlation
SELECT 
    click.user_id,
    click.page_url,
    purchase.order_id,
    purchase.amount
FROM user_clicks click
INNER JOIN user_purchases purchase ON click.user_id = purchase.user_id
WITHIN INTERVAL '30' MINUTES
WHERE click.utm_campaign = 'summer_sale';
