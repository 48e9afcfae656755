-- From the user's guide (ferrisstreams-guide.md), SQL example 1.
SELECT 
    k.event_id,
    k.user_id,
    f.user_profile
FROM kafka_events k
JOIN user_profiles f ON k.user_id = f.user_id
