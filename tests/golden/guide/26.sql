-- From the user's guide (ferrisstreams-guide.md), SQL fragment 26.
-- The guide shows only the WITH clause; it is completed here with a query.
SELECT * FROM example_source
WITH ('failure_strategy' = 'FailBatch');
