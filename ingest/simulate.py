"""POST /admin/simulate: try a program (a proposed one, a version from the history, or the
current one) on a list of events and customers' starting states, without publishing anything.

The events go through the real loyalty processor in memory (processors/loyalty/replay.py: the
LoyaltyProcessor on the runtime's TestDriver), so the answer is what the engine would do, not
what a copy of its rules guesses. Nothing reaches Kafka or PostgreSQL: state, budgets and codes
start empty (budgets unspent, referral codes known only from registrations in the same run).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import Field, ValidationError, WithJsonSchema

from ingest.errors import ApiError, validation_fields
from ingest.inputs import schema_ref
from ingest.models import Purposes
from ingest.program_writes import validate
from processors.loyalty import wallet
from processors.loyalty.processor import TYPES
from processors.loyalty.replay import Replay, Step, detail, starting_state
from processors.loyalty.tiers import find, info
from schemas.intake import (
    Body,
    EventLimits,
    Id,
    Integer,
    Invalid,
    IsoDatetime,
    JsonObject,
    build_event,
    to_ms,
)
from schemas.program import Program

Amount = Annotated[float, Field(ge=0, le=1e12)]
Count = Annotated[Integer, Field(ge=0, le=10**12)]
MAX_EVENTS = 100
# An event as a dict (events_of checks each with ingest's own rules and names its index), shown
# in /openapi.json as the EventIn that POST /behavior/events takes: schemathesis could not
# reliably generate arrays of the recursive JsonObject (an order-dependent InvalidSchema).
EventBody = Annotated[dict[str, Any], WithJsonSchema(schema_ref("EventIn"))]
# Simulated events may be dated anywhere (a scenario over months): each is checked against its
# own time, so only ingest's rules on the body itself apply.
LIMITS = EventLimits()
TIER_EVENTS = ("TIER_UPGRADE", "TIER_DOWNGRADE")


class StartMetrics(Body):
    """Behaviour counted before the simulation (the profile's metrics rules read)."""

    purchase_count: Count = 0
    total_spend: Amount = 0.0
    event_count: Count = 0
    period_purchases: Count = 0
    period_spend: Amount = 0.0
    period_points: Amount = 0.0


class StartingState(Body):
    """A customer as they are when the simulation starts; absent customers start new."""

    customer_id: Id
    tier: Id | None = Field(default=None, description="a tier id of the simulated program")
    balances: dict[Id, Amount] = Field(default_factory=dict, description="reward id -> balance")
    lifetime_points: Amount | None = Field(default=None, description="at least the POINTS balance")
    metrics: StartMetrics = Field(default_factory=StartMetrics)
    customer: JsonObject = Field(default_factory=dict, description="registration data (birthday, ...)")
    consent: Purposes | None = None
    registered_at: IsoDatetime | None = None


class SimulateIn(Body):
    """Which program, who, and what happens (in order)."""

    program: JsonObject | None = Field(
        default=None, description="A full program (as PUT /admin/program) to try; default: the current one."
    )
    version: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = Field(
        default=None, description="A version from the program history to try instead."
    )
    customers: list[StartingState] = Field(default_factory=list, max_length=MAX_EVENTS)
    events: list[EventBody] = Field(
        min_length=1,
        max_length=MAX_EVENTS,
        description="Events as POST /behavior/events takes them, processed in order, each at its "
        "issued_at (absent: now, never before the previous event).",
    )


def parse(body: Any) -> SimulateIn:
    try:
        request = SimulateIn.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, "invalid simulation", fields=validation_fields(exc.errors())) from None
    if request.program is not None and request.version is not None:
        raise ApiError(422, "give a program or a version, not both",
                       fields=[("version", "not with program: which one to simulate?")])  # fmt: skip
    return request


def proposed(body: dict[str, Any]) -> Program:
    """A program from the request, validated as a write is. Secrets play no part in a
    simulation (nothing is delivered), so they are dropped rather than checked."""
    plain = dict(body)
    for section in ("webhooks", "destinations"):
        if isinstance(plain.get(section), list):
            plain[section] = [
                {k: v for k, v in item.items() if k not in ("secret", "previous_secrets")}
                if isinstance(item, dict)
                else item
                for item in plain[section]
            ]
    try:
        return validate(plain)
    except ApiError as exc:
        exc.fields = [(f"program.{path}" if path != "program" else path, why) for path, why in exc.fields]
        raise


def from_history(entry: dict[str, Any], version: int) -> Program:
    program = proposed(dict(entry["program"]))
    return program.model_copy(update={"version": version})


def check_customers(program: Program, customers: list[StartingState]) -> None:
    tiers = {t.id for t in program.tiers.levels}
    rewards = {r.id for r in program.rewards}
    seen: set[str] = set()
    fields = []
    for i, c in enumerate(customers):
        if c.customer_id in seen:
            fields.append((f"customers.{i}.customer_id", "given twice"))
        seen.add(c.customer_id)
        if c.tier is not None and c.tier not in tiers:
            fields.append((f"customers.{i}.tier", f"no tier {c.tier!r} in the simulated program"))
        fields += [
            (f"customers.{i}.balances.{r}", f"no reward {r!r} in the simulated program")
            for r in c.balances
            if r not in rewards
        ]
    if fields:
        raise ApiError(422, "invalid starting state", fields=fields)


def events_of(program: Program, bodies: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    """Event records as ingest builds them, each received at its own issued_at."""
    types = TYPES.of(program)
    records, at = [], None
    for i, body in enumerate(bodies):
        own = _issued_ms(body.get("issued_at"))
        at = own if own is not None else max(now_ms, at or now_ms)
        try:
            records.append(build_event(body, types, at, LIMITS))
        except Invalid as exc:
            fields = [(f"events.{i}.{path}", why) for path, why in exc.fields]
            fields = fields or [(f"events.{i}", exc.message)]
            raise ApiError(422, f"events.{i}: {exc.message}", code=exc.code, fields=fields) from None
    return records


def _issued_ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return to_ms(parsed)
    except (ValueError, OverflowError, OSError):
        return None  # build_event names the field


def simulate(program: Program, request: SimulateIn, now_ms: int, source: str = "current") -> dict[str, Any]:
    """Run the events; the answer for each step and every customer's final state. `source`:
    current, version or proposed (a proposal has no version yet: null)."""
    check_customers(program, request.customers)
    records = events_of(program, request.events, now_ms)
    start = min(r["received_at"] for r in records)
    replay = Replay(program, start)
    for c in request.customers:
        replay.seed(c.customer_id, _state(c, start))
    steps: list[dict[str, Any]] = []
    touched = {c.customer_id for c in request.customers}
    for index, record in enumerate(records):
        touched.add(record["customer_id"])
        if record["path"] == "tracking":
            steps.append({"trigger": "event", "index": index, "at": iso(record["received_at"]),
                          "event_id": record["id"], "tracking_only": True, "results": [],
                          "notifications": []})  # fmt: skip
            continue
        timers, step = replay.run(record)
        if timers.results or timers.notifications:
            steps.append(_step(timers))
        steps.append({**_step(step), "index": index, "event_id": record["id"]})
    final = {cid: _final(program, replay.state(cid)) for cid in sorted(touched)}
    return {
        "program": {"source": source, "version": None if source == "proposed" else program.version},
        "steps": steps,
        "customers": final,
        "totals": _totals(steps),
    }


def _state(c: StartingState, start: int) -> dict[str, Any]:
    return starting_state(
        c.customer_id, start, tier=c.tier, balances=c.balances, lifetime_points=c.lifetime_points,
        metrics=c.metrics.model_dump(), customer=c.customer,
        consent=c.consent.model_dump(exclude_none=True) if c.consent else None,
        registered_at=to_ms(c.registered_at) if c.registered_at else None,
    )  # fmt: skip


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _step(step: Step) -> dict[str, Any]:
    return {
        "trigger": step.trigger,
        "at": iso(step.at),
        "results": [result_view(r) for r in step.results],
        "notifications": [notification_view(n) for n in step.notifications],
    }


def result_view(res: dict[str, Any]) -> dict[str, Any]:
    body = detail(res)
    after = res.get("wallet") or body.get("wallet") or {}  # its own field since Result v2
    wallet_after = {k: v for k, v in after.items() if k not in ("lines", "sequence")}
    return {
        "event_id": res["event_id"],
        "customer_id": res["customer_id"],
        "type": res["type"],
        "kind": res["kind"],
        "status": res["status"],
        "reason": res["reason"],
        "points": res["points"],
        **{k: body.get(k, []) for k in ("rules_applied", "rules_skipped", "accumulations", "redemptions")},
        **{k: body[k] for k in ("expirations", "reversals") if k in body},
        "tier": body.get("tier"),
        "wallet": wallet_after,
    }


def notification_view(note: dict[str, Any]) -> dict[str, Any]:
    return {"event": note["event"], "customer_id": note["customer_id"], "data": orjson.loads(note["data"])}


def _final(program: Program, state: dict[str, Any] | None) -> dict[str, Any]:
    if state is None:
        return {"tier": None, "points": 0.0, "balance": {}, "lifetime_points": 0.0}
    return {
        "tier": info(find(program, state.get("tier"))),
        "points": wallet.balance(state).get(wallet.POINTS, 0.0),
        "balance": wallet.balance(state),
        "lifetime_points": state.get("lifetime", 0.0),
    }


def _totals(steps: list[dict[str, Any]]) -> dict[str, Any]:
    results = [r for s in steps for r in s["results"]]
    by_campaign: dict[str, float] = {}
    for r in results:
        for line in r["accumulations"]:
            if line.get("campaign_id"):
                by_campaign[line["campaign_id"]] = by_campaign.get(line["campaign_id"], 0.0) + line["amount"]
    notes = [n for s in steps for n in s["notifications"]]
    return {
        "points": sum(r["points"] for r in results),
        "by_campaign": by_campaign,
        "tier_changes": [{"event": n["event"], **n["data"]} for n in notes if n["event"] in TIER_EVENTS],
        "notifications": len(notes),
    }
