-- A syntax error names the line, the column and the token.
CREATE STREAM s AS
SELECT a, b
FROM orders
WHERE a = = 1
WITH ('orders.type' = 'file_source');
