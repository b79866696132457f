"""A customer's timers as one agenda in its state, woken by one runtime timer.

A customer has several timers at once: inactivity, points expiry and its notice, the tier
period and its warning, birthday, anniversary, one per open reservation. Each kept as its own
runtime timer was a changelog record that a restore reads (5 of a loyalty customer's 12). The
engine still schedules and cancels them by id (`Output.timers`, `Output.cancels`); the
processor keeps them in the customer's state instead (`agenda`: id -> [at, payload]) and one
runtime timer `wake:<customer>` at the earliest of them. When it fires, the due entries fire
one by one in (at, id) order, the order separate runtime timers fired in.

A new customer starts with an empty agenda (core.new_state). A state without one was written
before it: its timers are runtime timers of their own. Its first write moves them into the
agenda (`LEGACY_KINDS`, its open reservations) and cancels those the call cancels; until then
they fire as before (`Timer` payloads other than `WAKE`)."""

from __future__ import annotations

from typing import Any

from processors.runtime.api import Context, Timer

AGENDA = "agenda"  # the state key: timer id -> [at, payload]
WAKE_AT = "wake_at"  # the state key: when the customer's runtime timer is set for
WAKE = "wake"  # the runtime timer's payload type
LEGACY_KINDS = ("inactivity", "expiry", "expiring", "tier_warning", "tier", "birthday", "anniversary")
MAX_PER_WAKE = 100  # entries one wake fires; more due (a timer re-armed in the past) wait a turn


def wake_id(customer_id: str) -> str:
    return f"{WAKE}:{customer_id}"


def update(ctx: Context, state: dict[str, Any], cancels: list[str],
           timers: list[tuple[int, str, dict[str, Any]]]) -> None:  # fmt: skip
    """Apply one engine call's cancels and timers to the state's agenda and set the wake
    timer to its earliest entry; done before the state is written, in its transaction."""
    cid = state["customer_id"]
    if AGENDA not in state:
        state[AGENDA] = _move_legacy(ctx, state, cancels)
    agenda = state[AGENDA]
    for timer_id in cancels:
        agenda.pop(timer_id, None)
    for at, timer_id, payload in timers:
        agenda[timer_id] = [at, payload]
    arm(ctx, state, cid)


def arm(ctx: Context, state: dict[str, Any], customer_id: str) -> None:
    """Move the wake timer to the agenda's earliest entry (nothing written if it is there)."""
    entries = state.get(AGENDA) or {}
    at = min((entry[0] for entry in entries.values()), default=None)
    if at == state.get(WAKE_AT):
        return
    if at is None:
        ctx.cancel(wake_id(customer_id))
        state.pop(WAKE_AT, None)
    else:
        ctx.schedule(at, customer_id, {"type": WAKE}, wake_id(customer_id))
        state[WAKE_AT] = at


def woken(state: dict[str, Any]) -> None:
    """The wake timer fired: it is no longer set."""
    state.pop(WAKE_AT, None)


def pop_due(state: dict[str, Any], now: int) -> Timer | None:
    """Take the first entry due by `now` in (at, id) order out of the agenda, as a Timer."""
    entries = state.get(AGENDA) or {}
    due = min(((at, timer_id) for timer_id, (at, _) in entries.items() if at <= now), default=None)
    if due is None:
        return None
    at, timer_id = due
    _, payload = entries.pop(timer_id)
    return Timer(timer_id, state["customer_id"], at, payload)


def _move_legacy(ctx: Context, state: dict[str, Any], cancels: list[str]) -> dict[str, list[Any]]:
    """The runtime timers a state from before the agenda may have set, as agenda entries,
    each cancelled in the runtime (it fires from the agenda now); those the call cancels
    (a reservation released) are cancelled only."""
    cid = state["customer_id"]
    ids = [f"{kind}:{cid}" for kind in LEGACY_KINDS]
    ids += [f"reservation:{event_id}" for event_id in state.get("reservations") or {}]
    for timer_id in cancels:
        ctx.cancel(timer_id)
    entries: dict[str, list[Any]] = {}
    for timer_id in ids:
        timer = ctx.timer(timer_id)
        if timer is not None:
            entries[timer_id] = [timer.at, timer.payload]
            ctx.cancel(timer_id)
    return entries
