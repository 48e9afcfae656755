-- From the user's guide (ferrisstreams-guide.md), SQL example 31.
-- ✅ Correct: Specify table in FROM clause
SELECT * FROM orders WHERE amount > 100

-- ❌ Wrong: No table specified
SELECT 100 as constant_value
