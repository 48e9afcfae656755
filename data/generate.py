#!/usr/bin/env python3
"""Regenerates the demo's small e-commerce data set (deterministic: fixed seed).

    python3 data/generate.py
"""
import csv, json, random
from pathlib import Path

random.seed(42)
here = Path(__file__).parent
tiers = ["GOLD", "SILVER", "BRONZE", "STANDARD"]
names = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth",
         "Frances Allen", "Ken Thompson", "Margaret Hamilton", "Dennis Ritchie", "Radia Perlman", "John Backus",
         "Leslie Lamport", "Shafi Goldwasser", "Tony Hoare", "Jim Gray", "Niklaus Wirth", "Sophie Wilson",
         "Butler Lampson", "Fran Bilas"]
with open(here / "customers.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["customer_id", "customer_name", "customer_tier", "email", "country", "risk_score"])
    for i, n in enumerate(names, start=1):
        email = n.lower().replace(" ", ".") + "@example.com" if i % 7 else ""
        w.writerow([i, n, tiers[i % 4], email, ["GB", "US", "DE", "FR", "NL"][i % 5], round(random.random(), 2)])

categories = ["books", "electronics", "garden", "toys", "kitchen"]
products = []
for i in range(1, 16):
    products.append({"product_id": 100 + i, "product_name": f"Product {i:02d}", "category": categories[i % 5],
                     "unit_price": round(random.uniform(2, 250), 2), "active": i % 6 != 0})
(here / "products.json").write_text(json.dumps(products, indent=2) + "\n")

with open(here / "orders.jsonl", "w") as f:
    for i in range(1, 241):
        cust = random.randint(1, 22)          # 21 and 22 are not in customers.csv
        prod = 100 + random.randint(1, 16)    # 116 is not in products.json
        qty = random.choice([0, 1, 1, 2, 3, 5, 8])
        day = 1 + (i * 7) % 28
        hour, minute = (i * 5) % 24, (i * 13) % 60
        order = {"order_id": i, "customer_id": cust, "product_id": prod, "quantity": qty,
                 "amount": round(random.uniform(5, 2000), 2),
                 "order_date": f"2024-{1 + i % 3:02d}-{day:02d}",
                 "order_ts": f"2024-{1 + i % 3:02d}-{day:02d}T{hour:02d}:{minute:02d}:00",
                 "status": random.choice(["PENDING", "PENDING", "SHIPPED", "CANCELLED"])}
        if i % 17 == 0:
            order["coupon"] = "SPRING10"
        f.write(json.dumps(order) + "\n")
