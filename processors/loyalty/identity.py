"""An anonymous customer identifies as a known id (`PATCH /customers/{id}/identify/anonymous`).

Two partitions, no cross-partition read: the IDENTIFY command (key = the anonymous id) seals
the anonymous state on its partition and emits one MERGE command (key = the known id) carrying
the open wallet lines, open reservations with their event records, lifetime, metrics, campaign
counts, badges, achievement progress and profile data; the known id's partition applies it once
(by source id, kept for ever in `merged_from`, and by the command's id) and sends
CUSTOMER_ANONYMOUS_TO_REGISTERED. Seal and MERGE commit in one transaction, so a crash between
them cannot lose or double the move.

A sealed state keeps `merged_into`: every later input to the anonymous id is re-keyed to the
known id (`forward`), and its timers do nothing, so an event racing with the merge is credited
to the known id exactly once (the known partition de-duplicates by event id). An input the
anonymous partition already recorded is still answered there as a duplicate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from processors.loyalty import notifications as n
from processors.loyalty import profile, tiers, wallet
from processors.loyalty.envelope import as_json, command, uid
from processors.loyalty.holds import HELD
from processors.loyalty.records import applied
from schemas.topics import EVENTS_LOYALTY

if TYPE_CHECKING:
    from processors.loyalty.engine import Lookup, Output

MERGED_INTO = "merged_into"  # state of a sealed anonymous customer: the id it moved to
MERGED_FROM = "merged_from"  # state of a known customer: anonymous id -> merge command id
CARRIED = "merged_record"  # payload key of a forwarded command: its target's record
# what a sealed state keeps (the rest moved): identity, sequence, registration data
KEPT = ("customer_id", "sequence", "lines_v", "customer", "registered_at", "tags")
# what the MERGE carries of the anonymous state besides its lines and reservations
MOVED = (
    "lifetime",
    "metrics",
    "campaigns",
    "badges",
    "achievements",
    "consent",
    "consent_record",
    "customer",
    "tags",
    "tier",
    "registered_at",
)
SUMMED = ("purchase_count", "total_spend", "event_count", "period_purchases", "period_spend", "period_points")


def merged_into(state: dict[str, Any] | None) -> str | None:
    return (state or {}).get(MERGED_INTO)


def stays(event: dict[str, Any]) -> bool:
    """A sealed anonymous id answers IDENTIFY itself (a repeat is idempotent); all else moves."""
    return event.get("kind") == "IDENTIFY"


def forward(event: dict[str, Any], into: str, lookup: Lookup) -> dict[str, Any]:
    """The input re-keyed to the known id, same id (so it is applied there once). A command on
    an event applied here before the merge carries that event's record along (a reversal)."""
    out = {**event, "customer_id": into}
    target = event.get("target_event_id")
    record = lookup(target) if target else None
    if record is not None:
        out["payload"] = command_payload(event, {CARRIED: rehomed(record, into)})
    return out


def rehomed(record: dict[str, Any], into: str) -> dict[str, Any]:
    """An event record as the known id's: its event names that customer (fulfil, cancel and
    reverse check whose event it is)."""
    event = applied(record)["event"]
    return {**record, "event": {**event, "customer_id": into}}


def command_payload(event: dict[str, Any], extra: dict[str, Any]) -> str:
    return orjson.dumps({**as_json(event.get("payload")), **extra}).decode()


def lookup_with(lookup: Lookup, event: dict[str, Any]) -> Lookup:
    """`lookup`, falling back to the target record a forwarded command carries."""
    carried = as_json(event.get("payload")).get(CARRIED) if event.get("target_event_id") else None
    if carried is None:
        return lookup
    target = event["target_event_id"]

    def read(event_id: str) -> dict[str, Any] | None:
        found = lookup(event_id)
        return carried if found is None and event_id == target else found

    return read


class Identity:
    """Mixin of `engine.Step`: both halves of the merge."""

    def identify_anonymous(self, cmd: dict) -> Output:
        """Seal this anonymous customer and send everything it holds to `new_id` (MERGE)."""
        new_id = str(as_json(cmd.get("payload")).get("new_id") or "")
        into = self.state.get(MERGED_INTO)
        if into is not None and into == new_id:  # a repeat with another id: nothing moves twice
            res = self.result(cmd, "RESOLVED", merged_into=into, already_merged=True)
            self.remember(cmd["id"], res, "RESOLVED")
            return self._sealed_finish(into)
        why = self._cannot_merge(new_id, into)
        if why:
            res = self.result(cmd, "REJECTED", why)
            self.remember(cmd["id"], res, "REJECTED")
            return self._sealed_finish(into) if into else self.finish()
        self._expire()  # expired lines are not moved
        merge_id = uid("merge", self.cid, new_id)
        moved = [{k: v for k, v in b.items()} for b in self.state["buckets"]]
        out_lines = [_transfer("MERGE_OUT", b, cmd["id"], i, self.now, -1) for i, b in enumerate(moved)]
        for b in self.state["buckets"]:  # closed here: the sink's wallet_lines show amount 0
            b["remaining"] = 0.0
            self.touched[b["id"]] = b
        reservations = self.state["reservations"]
        records = {eid: self.lookup(eid) for eid in reservations}
        records = {eid: rehomed(r, new_id) for eid, r in records.items() if r is not None}
        self.out.cancels += [f"reservation:{eid}" for eid in reservations]
        payload = {
            "from": self.cid,
            "merge_id": merge_id,
            "buckets": moved,
            "reservations": reservations,
            "records": records,
            "event_ids": sorted({b["event_id"] for b in moved}),
            "profile": as_json(cmd.get("payload")).get("customer") or {},
            **{k: self.state[k] for k in MOVED if k in self.state},
        }
        merge = command(
            "MERGE", new_id, "IDENTIFY", self.now, id=merge_id, target_event_id=cmd["id"], payload=payload
        )
        self.out.commands.append((EVENTS_LOYALTY, new_id, merge))
        self._seal(new_id)
        res = self.result(cmd, "RESOLVED", merged_into=new_id, merge_id=merge_id, transfers=out_lines)
        self.remember(cmd["id"], res, "RESOLVED")
        return self._sealed_finish(new_id)

    def _cannot_merge(self, new_id: str, into: str | None) -> str | None:
        if into is not None:
            return f"customer {self.cid} was already merged into {into}"
        if not new_id or new_id == self.cid:
            return "new_id must name another customer"
        if not self.state.get("anonymous"):
            return f"customer {self.cid} is not an anonymous customer (register it with anonymous: true)"
        if self.state.get(HELD):
            return f"customer {self.cid} is waiting for campaign budget decisions: retry the identify"
        return None

    def _seal(self, new_id: str) -> None:
        """Empty the state in place (the engine's Output holds this dict): only the identity
        and the pointer stay; the wallet and metrics start over empty."""
        for key in [k for k in self.state if k not in KEPT]:
            del self.state[key]
        wallet.new_wallet(self.state)
        profile.metrics(self.state)
        self.state["anonymous"] = True  # never evaluated by audiences (their memberships end)
        self.state[MERGED_INTO] = new_id
        self.changed()

    def _sealed_finish(self, into: str) -> Output:
        out = self.finish()
        if out.profile is not None:
            out.profile[MERGED_INTO] = into  # the sink's customers.merged_into, journeys' exit
        return out

    def merge(self, cmd: dict) -> Output:
        """Apply an anonymous customer's MERGE here, once per anonymous id."""
        p = as_json(cmd.get("payload"))
        source = p["from"]
        done = self.state.setdefault(MERGED_FROM, {})
        if source in done:
            res = self.result(_shown(cmd, p), "RESOLVED", merged_from=source, already_merged=True)
            self.remember(cmd["id"], res, "RESOLVED")
            return self.finish()
        self._expire()
        done[source] = cmd["id"]
        in_lines = []
        for i, b in enumerate(p.get("buckets") or []):
            line = _transfer("MERGE_IN", b, cmd["id"], i, self.now, +1)
            bucket = {**b, "id": line["id"], "source_line_id": b["id"], "merged_from": source}
            self.state["buckets"].append(bucket)
            self.touched[bucket["id"]] = bucket
            in_lines.append(line)
        self.state["lifetime"] = self.state.get("lifetime", 0.0) + p.get("lifetime", 0.0)
        self._merge_reservations(p)
        _merge_metrics(profile.metrics(self.state), p.get("metrics") or {})
        _merge_counts(self.state, p)
        self._merge_profile(p)
        self.changed()
        self._track_tiers()
        self._upgrade(cmd)
        data = {"customer_id": self.cid, "anonymous_id": source, "customer": self.state.get("customer", {})}
        self.notify(cmd["id"], n.CUSTOMER_ANONYMOUS_TO_REGISTERED, data)
        res = self.result(
            _shown(cmd, p),
            "RESOLVED",
            merged_from=source,
            transfers=in_lines,
            event_ids=p.get("event_ids") or [],
        )
        self.remember(cmd["id"], res, "RESOLVED")
        return self.finish()

    def _merge_reservations(self, p: dict[str, Any]) -> None:
        """Open reservations move with their event records, so fulfil / cancel / expiry work
        here (a FULFILL sent to either id arrives here)."""
        for event_id, reservation in (p.get("reservations") or {}).items():
            self.state["reservations"][event_id] = reservation
            at = reservation["expires_at"]
            self.out.timers.append(
                (at, f"reservation:{event_id}", {"type": "reservation", "event_id": event_id})
            )
        for event_id, record in (p.get("records") or {}).items():
            self.out.records[event_id] = {**record, "since": self.now}  # indexed for the sweep

    def _merge_profile(self, p: dict[str, Any]) -> None:
        """The known id's data wins; the anonymous one fills what it lacks; the PATCH's
        profile fields win over both. A consent the known id never gave keeps the
        anonymous id's answer (a 'no' is not lost)."""
        s = self.state
        s["customer"] = {**(p.get("customer") or {}), **s.get("customer", {}), **(p.get("profile") or {})}
        s["consent"] = {**(p.get("consent") or {}), **s.get("consent", {})}
        if p.get("consent_record") and not s.get("consent_record"):
            s["consent_record"] = p["consent_record"]
        tags = list(s.get("tags", [])) + [t for t in p.get("tags") or [] if t not in s.get("tags", [])]
        if tags:
            s["tags"] = tags
        if p.get("registered_at") is not None:
            s["registered_at"] = min(s.get("registered_at") or p["registered_at"], p["registered_at"])
        s["anonymous"] = False
        mine, theirs = tiers.find(self.program, s.get("tier")), tiers.find(self.program, p.get("tier"))
        if theirs is not None and (mine is None or theirs.level > mine.level):
            s["tier"] = theirs.id  # the higher tier of the two (no webhook: nothing was earned)
            self.final = None


def _shown(cmd: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """The MERGE as its result shows it: without the moved state (the lines are `transfers`)."""
    return {**cmd, "payload": orjson.dumps({"from": p["from"], "merge_id": p.get("merge_id")}).decode()}


def _transfer(kind: str, bucket: dict[str, Any], source_id: str, index: int, now: int, sign: int) -> dict:
    """A ledger line of the move (MERGE_OUT on the anonymous id, MERGE_IN on the known one),
    naming the line it moves so both ledgers still explain their balance."""
    line = wallet.line(
        kind,
        sign * bucket["remaining"],
        bucket["reward_id"],
        source_id,
        now,
        index,
        bucket.get("campaign_id"),
        bucket.get("rule"),
        bucket.get("expiration_date"),
    )
    line["source_line_id"] = bucket["id"]
    line["source_event_id"] = bucket.get("event_id")
    return line


def _merge_metrics(m: dict[str, Any], other: dict[str, Any]) -> None:
    for key in SUMMED:
        m[key] = m.get(key, 0) + other.get(key, 0)
    by_type = m["events_by_type"]
    for name, count in (other.get("events_by_type") or {}).items():
        by_type[name] = by_type.get(name, 0) + count
    for key in ("last_purchase_at", "last_event_at"):
        m[key] = max((v for v in (m.get(key), other.get(key)) if v is not None), default=None)
    m["first_seen"] = min(
        (v for v in (m.get("first_seen"), other.get("first_seen")) if v is not None), default=None
    )


def _merge_counts(state: dict[str, Any], p: dict[str, Any]) -> None:
    """Campaign counts (per-customer limits and period caps) and badges add up; achievement
    progress adds up too (the next matching event completes a goal the sum reached)."""
    mine = state.setdefault("campaigns", {})
    for cid, theirs in (p.get("campaigns") or {}).items():
        c = mine.setdefault(cid, {"count": 0})
        c["count"] = c.get("count", 0) + theirs.get("count", 0)
        for kind, counts in (theirs.get("periods") or {}).items():
            dest = c.setdefault("periods", {}).setdefault(kind, {})
            for period, count in counts.items():
                dest[period] = dest.get(period, 0) + count
    badges = state.setdefault("badges", {})
    for bid, theirs in (p.get("badges") or {}).items():
        b = badges.get(bid)
        if b is None:
            badges[bid] = dict(theirs)
            continue
        b["count"] = b.get("count", 0) + theirs.get("count", 0)
        firsts = [v for v in (b.get("first_awarded_at"), theirs.get("first_awarded_at")) if v is not None]
        b["first_awarded_at"] = min(firsts, default=None)
    progress = state.setdefault("achievements", {})
    for aid, theirs in (p.get("achievements") or {}).items():
        a = progress.get(aid)
        if a is None:
            progress[aid] = dict(theirs)
            continue
        a["value"] = a.get("value", 0.0) + theirs.get("value", 0.0)
        a["completed"] = a.get("completed", 0) + theirs.get("completed", 0)
        a["done"] = bool(a.get("done")) or bool(theirs.get("done"))
        if "entries" in a or "entries" in theirs:
            a["entries"] = sorted([*a.get("entries", []), *theirs.get("entries", [])])
