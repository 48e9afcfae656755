#!/usr/bin/env python3
"""Regenerates the input of the guide's complete examples (configs/guide/), deterministic
(fixed seed). Customers come from ../customers.csv (ids 1-20).

    python3 data/guide/generate.py
"""
import json, random
from pathlib import Path

random.seed(7)
here = Path(__file__).parent
BASE = 1_717_200_000_000  # 2024-06-01T00:00:00Z, epoch milliseconds

def lines(name, rows):
    (here / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

# merchants: risk level and fraud indicators (the financial and high-throughput examples)
categories = ["grocery", "travel", "electronics", "gaming", "jewelry", "fuel"]
merchants = []
for i in range(1, 13):
    merchants.append({"merchant_id": f"M{i:02d}", "merchant_name": f"Merchant {i:02d}",
                      "risk_level": ["LOW", "LOW", "MEDIUM", "HIGH"][i % 4],
                      "fraud_indicators": None if i % 5 == 0 else f"chargebacks={i % 4};velocity={'high' if i % 3 == 0 else 'normal'}"})
lines("merchants.json", merchants)

# transactions: a stream of card payments, 2 to 40 seconds apart
txs, t = [], BASE
for i in range(1, 601):
    t += random.randint(2_000, 40_000)
    m = random.choice(merchants)
    r = random.random()
    amount = round(random.uniform(12_000, 30_000), 2) if r < 0.05 else (-round(random.uniform(1, 50), 2) if r < 0.09 else round(random.uniform(1, 2_500), 2))
    txs.append({"transaction_id": i, "customer_id": random.randint(1, 22), "merchant_id": m["merchant_id"],
                "merchant_category": categories[int(m["merchant_id"][1:]) % len(categories)], "amount": amount,
                "status": random.choice(["PENDING", "PENDING", "PENDING", "SETTLED", "FAILED"]), "timestamp": t})
lines("transactions.jsonl", txs)

# where each customer's phone was last seen (the financial example's location service)
countries = ["GB", "US", "DE", "FR", "NL"]
# (the API's answer: one JSON array)
(here / "locations.json").write_text(json.dumps([{"user_id": u, "current_location": countries[(u * 3) % 5] if u % 4 else countries[u % 5]}
                                                 for u in range(1, 21) if u % 6 != 0], indent=1) + "\n")

# large payloads (the memory-based stream) and system alerts (the low-latency stream)
lines("large_payloads.jsonl", [{"record_id": i, "data_blob": "x" * random.randint(10, 1200) + "é" * random.randint(0, 100),
                                "metadata": json.dumps({"source": f"s{i % 4}"})} for i in range(1, 201)])
sev = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"]
lines("alerts.jsonl", [{"alert_id": i, "severity": random.choice(sev), "message": f"alert {i} on node-{i % 7}",
                        "timestamp": BASE + i * 1_000} for i in range(1, 301)])

# IoT: four sensor streams, a reading per device every 3 minutes (±30 s); a third of the
# vibration readings missing
for name, field, lo, hi in [("temperature", "temperature", 15.0, 45.0), ("humidity", "humidity", 40.0, 99.0),
                            ("pressure", "pressure", 940.0, 1040.0), ("vibration", "vibration_level", 0.0, 10.0)]:
    rows = []
    for k in range(150):
        for d in range(4):
            if name == "vibration" and random.randint(0, 2) == 0:
                continue
            ts = BASE + k * 180_000 + random.randint(-30_000, 30_000)
            rows.append({"device_id": f"dev-{d}", "location": f"hall-{d % 2}", "timestamp": ts, field: round(random.uniform(lo, hi), 1)})
    rows.sort(key=lambda r: r["timestamp"])
    # streams never end: a reading an hour later closes the time band of every reading before it
    rows.append({"device_id": "dev-close", "location": "none", "timestamp": BASE + 3_600_000 + 150 * 180_000, field: 0.0})
    lines(f"{name}.jsonl", rows)
