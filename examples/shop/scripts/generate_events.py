"""Stands in for the shop's order system sending each order as it is placed: two hours of
order events on 2026-12-02 as JSON lines, for `weir log produce order_events`; and, with
`--payments`, for the payment provider reporting the payments of those orders, for
`weir log produce payment_events`.

    python3 scripts/generate_events.py > events.jsonl
    python3 scripts/generate_events.py --payments > payments.jsonl

Deterministic (fixed random seed). Like real traffic, some events arrive a little out of
order, a few arrive far too late (a phone that was offline), and one carries an amount that is
not a number: the stream jobs count the first, keep the late ones in `_weir_late_events` and
the broken one in `_weir_rejected_events`. Most orders are paid within minutes; some are never
paid, and a few payments come after the half hour the shop waits for them.
"""
import json
import random
import sys
from datetime import datetime, timedelta

rng = random.Random(7)
pay_rng = random.Random(11)
payments = "--payments" in sys.argv[1:]
paid = []
countries = ["US", "us", "GB", "DE", "FR", "JP", "BR", "CA"]
statuses = ["completed"] * 8 + ["pending", "cancelled"]
start = datetime(2026, 12, 2, 9, 0, 0)
out = sys.stdout
t = start
for i in range(6000):
    t += timedelta(milliseconds=rng.randrange(200, 2200))
    at = t
    if i % 40 == 0:
        at -= timedelta(seconds=rng.randrange(1, 5))  # out of order, within the watermark
    if i % 1500 == 1499:
        at -= timedelta(minutes=20)  # far too late
    event = {
        "order_id": 900000 + i,
        "customer_id": rng.randrange(1, 300),
        "country_code": rng.choice(countries),
        "status": rng.choice(statuses),
        "total_amount": round(rng.uniform(5, 400), 2),
        "created_at": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }
    if i == 2500:
        event["total_amount"] = "n/a"
    if not payments:
        out.write(json.dumps(event) + "\n")
    elif event["status"] != "cancelled" and pay_rng.random() < 0.9:
        # Seconds to minutes after the order; one in twenty-five after more than half an hour.
        late = pay_rng.random() < 0.04
        after = timedelta(seconds=pay_rng.randrange(1900, 3600) if late else pay_rng.randrange(5, 900))
        paid.append({
            "payment_id": 500000 + i,
            "order_id": event["order_id"],
            "method": pay_rng.choice(["card", "card", "card", "paypal", "voucher"]),
            "amount": event["total_amount"] if isinstance(event["total_amount"], float) else None,
            "paid_at": (at + after).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        })
# The provider reports payments as they happen.
for payment in sorted(paid, key=lambda p: p["paid_at"]):
    out.write(json.dumps(payment) + "\n")
