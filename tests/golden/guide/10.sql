-- From the user's guide (ferrisstreams-guide.md), SQL example 10.
CREATE STREAM multi_output AS
SELECT * FROM processed_data
INTO primary_kafka, backup_file, audit_s3;
