-- golden-mode: run
-- A JSON array source, booleans and a CASE.
SELECT product_id, product_name, active, CASE WHEN unit_price > 100 THEN 'premium' ELSE 'standard' END AS band
FROM products WHERE NOT active OR product_id IN (101, 102)
WITH ('products.type' = 'file_source', 'products.path' = 'data/products.json');
