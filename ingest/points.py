"""Direct points: the POST /customers/{id}/points body, its ADJUST command and its audit entry.

The loyalty processor applies the command (processors/loyalty/adjustments.py); ingest only
checks the body against the current program, produces the command keyed by the customer and,
once Kafka holds it, records who asked for what on `admin.audit`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import orjson
from pydantic import Field, field_validator

from ingest.errors import ApiError
from ingest.events import command
from schemas.codec import encode
from schemas.ids import name_uuid
from schemas.inputs import MAX_AMOUNT, NO_CONTROL_PATTERN
from schemas.intake import Body, Id
from schemas.program import Program

Reason = Annotated[str, Field(min_length=1, max_length=1000, pattern=NO_CONTROL_PATTERN)]


class PointsIn(Body):
    """A signed amount of a reward put into (credit) or taken out of (debit) the wallet."""

    amount: float = Field(
        ge=-MAX_AMOUNT,
        le=MAX_AMOUNT,
        json_schema_extra={"not": {"const": 0}},
        description="Signed: > 0 credits, < 0 debits (a debit beyond the balance is FAILED).",
    )
    reward_id: Id = Field(default="POINTS", description="A reward defined in the program.")
    reason: Reason = Field(description="Why: shown on the ledger line and in the audit log.")
    reference: Id = Field(description="Idempotency key: the same customer + reference is applied once.")

    @field_validator("amount")
    @classmethod
    def _non_zero(cls, value: float) -> float:
        if value == 0 or not math.isfinite(value):
            raise ValueError("must be a non-zero number")
        return value

    @field_validator("reason")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def adjust_command(
    customer_id: str, body: PointsIn, program: Program, actor: str, now_ms: int
) -> dict[str, Any]:
    """The ADJUST command; its id is uuid5(customer:reference), the rule of every event."""
    if body.reward_id not in {r.id for r in program.rewards}:
        reason = f"reward {body.reward_id!r} is not defined in the program"
        raise ApiError(422, reason, fields=[("reward_id", reason)])
    payload = {"amount": body.amount, "reward_id": body.reward_id, "reason": body.reason, "actor": actor}
    return command("ADJUST", customer_id, "ADJUSTMENT", payload, now_ms, reference=body.reference)


def audit_value(record: dict[str, Any], body: PointsIn, actor: str, version: int) -> bytes:
    """The AdminAudit entry of an accepted adjustment. Its id derives from the command's, so a
    retried request writes the same entry again (one row in admin_audit) rather than a second."""
    direction = "credit" if body.amount > 0 else "debit"
    after = {"amount": body.amount, "reward_id": body.reward_id, "reason": body.reason,
             "reference": body.reference, "event_id": record["id"]}  # fmt: skip
    entry = {
        "id": name_uuid(f"audit:{record['id']}"),
        "at": record["issued_at"],
        "actor": actor,
        "action": f"points.{direction}",
        "resource": f"customers/{record['customer_id']}/points",
        "version_before": version,
        "version_after": version,
        "summary": f"{direction} of {abs(body.amount):g} {body.reward_id}: {body.reason}",
        "changes": orjson.dumps([{"path": "points", "before": None, "after": after}]).decode(),
    }
    return encode("AdminAudit", entry)
