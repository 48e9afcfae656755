-- From the user's guide (ferrisstreams-guide.md), SQL example 3.
SELECT 
    transactions.txn_id,
    customer_data.risk_score,
    fraud_patterns.pattern_match
FROM kafka_transactions transactions
JOIN customer_db customer_data ON transactions.customer_id = customer_data.id
JOIN fraud_files fraud_patterns ON transactions.merchant_id = fraud_patterns.merchant_id
WHERE transactions.amount > 1000
