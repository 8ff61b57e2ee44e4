"""Stands in for the shop's order system: exports its orders as one CSV file per day,
`exports/orders_YYYY-MM-DD.csv`, as a source system would drop them for a loader.

    python3 scripts/generate_orders.py [ROWS]

Deterministic (fixed random seed), so the example's results never change, and a file that
exists already is left as it is: running it again exports nothing new. The orders include
what a staging model has to clean: mixed-case and missing country codes, and test orders dated
before 2020.
"""
import csv
import os
import random
import sys
import uuid
from collections import defaultdict
from datetime import datetime, timedelta

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
rng = random.Random(42)
countries = ["US", "us", "GB", "gb", "DE", "FR", "fr", "JP", "BR", "CA", ""]
statuses = ["completed"] * 7 + ["pending", "cancelled", "refunded"]
start = datetime(2019, 12, 1)
days = defaultdict(list)
for _ in range(rows):
    created = start + timedelta(seconds=rng.randrange(0, 3 * 365 * 86400))
    days[created.date()].append([
        uuid.UUID(int=rng.getrandbits(128), version=4),
        rng.randrange(1, 5000),
        created.strftime("%Y-%m-%d %H:%M:%S"),
        rng.choice(statuses),
        f"{rng.uniform(3, 400):.2f}",
        rng.choice(countries),
    ])
os.makedirs("exports", exist_ok=True)
written = 0
for day, orders in sorted(days.items()):
    path = f"exports/orders_{day.isoformat()}.csv"
    if os.path.exists(path):
        continue
    # Written whole under another name, then renamed: a loader never sees half a file.
    with open(path + ".part", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["order_id", "user_id", "created_at", "status", "total_amount", "country_code"])
        w.writerows(sorted(orders, key=lambda o: o[2]))
    os.replace(path + ".part", path)
    written += 1
print(f"exported {written} new daily order files ({len(days)} days in all) to exports/")
