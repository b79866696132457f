"""Code-keyed decisions (referral codes, global coupons) on the partition that owns the code.

Cross-customer facts never read another partition: the customer's partition re-keys a command
onto loyalty.referrals / coupons.claims (key = the code); this partition holds code -> owner or
code -> claimer and answers with a command keyed by the customer it concerns, on events.loyalty.
"""

from __future__ import annotations

from typing import Any

import orjson

from processors.loyalty.envelope import command, uid

Command = tuple[str, str, dict[str, Any]]


class Codes:
    """The `codes` store view: `ref:<code>` -> owner, `coupon:<code>` -> claim."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def referral(self, cmd: dict[str, Any], now: int) -> list[Command]:
        code = cmd["referral_code"]
        key = f"ref:{code}"
        if cmd["kind"] == "REFERRAL_CODE":
            if self.store.get(key) is None:  # first owner keeps the code
                self.store.put(key, {"owner": cmd["customer_id"], "at": now})
            return []
        owner = (self.store.get(key) or {}).get("owner")
        referee = cmd["customer_id"]
        if owner is None or owner == referee:
            return []
        used = f"ref:{code}:{referee}"
        if self.store.get(used) is not None:
            return []
        self.store.put(used, {"at": now})
        return [
            _reward(owner, "referrer", referee, code, now),
            _reward(referee, "referee", referee, code, now),
        ]

    def coupon(self, cmd: dict[str, Any], now: int) -> list[Command]:
        code = cmd["coupon_code"]
        key = f"coupon:{code}"
        claim = self.store.get(key)
        customer = cmd["customer_id"]
        mine = claim is None or claim["event_id"] == cmd["target_event_id"]
        if claim is None:
            self.store.put(key, {"customer_id": customer, "event_id": cmd["target_event_id"], "at": now})
        payload = orjson.loads(cmd.get("payload") or "{}")
        if not mine:
            payload["reason"] = f"coupon {code} already used"
        kind = "COUPON_GRANTED" if mine else "COUPON_REJECTED"
        out = command(
            kind,
            customer,
            "COUPON_REDEMPTION",
            now,
            id=uid(kind, code, cmd["target_event_id"]),
            coupon_code=code,
            target_event_id=cmd["target_event_id"],
            payload=payload,
        )
        return [("events.loyalty", customer, out)]


def _reward(customer: str, role: str, referee: str, code: str, now: int) -> Command:
    cmd = command(
        "REFERRAL_REWARD",
        customer,
        "REFERRAL",
        now,
        id=uid("referral", code, referee, role),
        referral_code=code,
        payload={"role": role, "referee": referee},
    )
    return ("events.loyalty", customer, cmd)
