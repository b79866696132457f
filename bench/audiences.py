"""Audiences processor throughput: profile updates/s with 20 audiences, then timers fired/s
(the daily re-evaluation of time-based conditions, all due at once after moving the clock).

Same two modes as bench/journeys.py: `memory` (processor alone) and `kafka` (real Runner,
when KAFKA_BOOTSTRAP_SERVERS is set).

    python -m bench audiences
    python -m bench.audiences --events 50000 --customers 5000
"""

from __future__ import annotations

import json
import random
import sys

from bench.journeys import NOW, Records, parse, run_in_memory, run_on_kafka
from processors.audiences.processor import build
from schemas.program import Audience, Program
from schemas.topics import PROFILES_CHANGES

DAY = 24 * 3600 * 1000

CONDITIONS = [
    "profile.purchase_count > 0",
    "profile.purchase_count >= 5",
    "profile.total_spend >= 500",
    "profile.total_spend >= 2000",
    "profile.days_since_last_event >= 30",
    "profile.days_since_last_event < 7",
    "profile.days_since_last_purchase >= 60",
    "profile.days_since_first_seen >= 365",
    "profile.rfm.score >= 4",
    "profile.rfm.recency <= 2 && profile.rfm.frequency >= 3",
    'profile.tier == "gold"',
    'profile.tier == "silver" || profile.tier == "gold"',
    '"vip" in profile.tags',
    "profile.points >= 1000",
    "profile.lifetime_points >= 5000",
    "has(profile.events_by_type.REVIEW) && profile.events_by_type.REVIEW >= 2",
    "profile.traits.avg_basket > 80",
    "profile.consent.email == true",
    "profile.event_count > 20 && profile.purchase_count == 0",
]


def audiences() -> list[Audience]:
    out = [Audience(id=f"aud_{i}", condition=c) for i, c in enumerate(CONDITIONS)]
    out.append(Audience(id="imported", members=[f"cust-{i}" for i in range(0, 1000, 7)]))
    return out


def workload(events: int, customers: int, seed: int = 11) -> Records:
    """Profile updates of customers whose metrics grow as they buy."""
    rnd = random.Random(seed)
    state: dict[str, dict] = {}
    records = []
    for n in range(events):
        cid = f"cust-{rnd.randrange(customers)}"
        p = state.setdefault(
            cid,
            {"customer_id": cid, "anonymous": rnd.random() < 0.05, "identified": True,
             "first_seen": NOW - rnd.randrange(400) * DAY, "purchase_count": 0,
             "total_spend": 0, "event_count": 0, "points": 0, "lifetime_points": 0,
             "tags": [], "events_by_type": {}, "consent": {"email": rnd.random() < 0.7},
             "tier": None, "traits": {}},
        )  # fmt: skip
        p["event_count"] += 1
        p["last_event_at"] = NOW - rnd.randrange(60) * DAY
        if rnd.random() < 0.4:
            amount = rnd.randrange(10, 300)
            p["purchase_count"] += 1
            p["total_spend"] += amount
            p["points"] += amount
            p["lifetime_points"] += amount
            p["last_purchase_at"] = p["last_event_at"]
            p["traits"] = {"avg_basket": p["total_spend"] / p["purchase_count"]}
        else:
            etype = rnd.choice(["REVIEW", "PAGE_VIEW", "APP_OPEN"])
            p["events_by_type"][etype] = p["events_by_type"].get(etype, 0) + 1
        p["tier"] = "gold" if p["total_spend"] > 1500 else "silver" if p["total_spend"] > 500 else None
        p["tags"] = ["vip"] if p["purchase_count"] > 6 else []
        score = min(5, 1 + p["purchase_count"] // 2)
        p["rfm"] = {"recency": rnd.randrange(1, 6), "frequency": score, "monetary": score,
                    "score": score}  # fmt: skip
        value = {
            "customer_id": cid,
            "anonymous": p["anonymous"],
            "tier": p["tier"],
            "updated_at": NOW + n,
            "profile": json.dumps(p),
        }
        records.append((PROFILES_CHANGES, cid, value))
    return records


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv, events=20_000, customers=2_000)
    program = Program(version=1, audiences=audiences())
    records = workload(args.events, args.customers)
    print("audiences:", len(program.audiences), "profile updates:", len(records), flush=True)
    print(json.dumps(run_in_memory(build(), program, records, DAY)), flush=True)
    if args.kafka:
        print(json.dumps(run_on_kafka(build(), program, records, DAY)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
