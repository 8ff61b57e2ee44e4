"""Writes seeds/raw_orders.csv: synthetic raw orders as a source system would export them.

Deterministic (fixed random seed), so the example's results never change. Includes what a
staging model has to clean: mixed-case and missing country codes, and test orders dated
before 2020.
"""
import csv
import random
import sys
import uuid
from datetime import datetime, timedelta

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
rng = random.Random(42)
countries = ["US", "us", "GB", "gb", "DE", "FR", "fr", "JP", "BR", "CA", ""]
statuses = ["completed"] * 7 + ["pending", "cancelled", "refunded"]
start = datetime(2019, 12, 1)
with open("seeds/raw_orders.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["order_id", "user_id", "created_at", "status", "total_amount", "country_code"])
    for _ in range(rows):
        created = start + timedelta(seconds=rng.randrange(0, 3 * 365 * 86400))
        w.writerow([
            uuid.UUID(int=rng.getrandbits(128), version=4),
            rng.randrange(1, 5000),
            created.strftime("%Y-%m-%d %H:%M:%S"),
            rng.choice(statuses),
            f"{rng.uniform(3, 400):.2f}",
            rng.choice(countries),
        ])
