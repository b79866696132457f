"""Journeys processor: events + audience membership -> journeys.activity.

Per customer (store `journeys`): the active instance of each journey (current node, when it got
there, the event that moved it), how often each journey was finished (for the re-entry policy)
and the last event ids seen (a replayed event moves nothing twice). Store `profiles` keeps the
latest profile from profiles.changes for edge conditions. Waits are durable timers, one per
instance, so a restart (even kill -9) neither loses nor repeats a wait.

Semantics: arriving at a node runs it (action -> ACTION, end or no outgoing edge -> COMPLETE),
then takes the first timed edge with no wait whose condition holds; timed edges with a wait are
checked once when their wait is over (first match in config order); event edges are taken by the
first matching event (after their wait, if any). Exit events remove the customer at any node, and
so does leaving the audience an instance was entered from (`exit_on_audience_leave`, default on).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from prometheus_client import Counter

from processors.audiences.expressions import floats
from processors.audiences.processor import parse_profile
from processors.audiences.rules import with_derived
from processors.journeys.graph import CompiledJourney, CompiledJourneys, Edge, compile_program
from processors.runtime.api import Context, Processor, Record, Timer
from schemas.program import Program
from schemas.topics import (
    AUDIENCES_MEMBERSHIP,
    EVENTS_LOYALTY,
    EVENTS_TRACKING,
    JOURNEYS_ACTIVITY,
    PROFILES_CHANGES,
)

log = logging.getLogger(__name__)

JOURNEYS = "journeys"
PROFILES = "profiles"
META = "meta"  # "definitions" -> fingerprint of the journeys the partition was last swept with
EVENT_KINDS = {"EVENT", "REGISTER"}  # commands (fulfil, cancel, ...) are not behaviour
SEEN_IDS = 32
MAX_STEPS = 100  # guards against a cycle of immediate edges

ACTIVITY = Counter("journey_activity_total", "Journey activity emitted", ["kind"])


def timer_id(customer_id: str, journey_id: str) -> str:
    return f"journey:{customer_id}:{journey_id}"


def event_view(value: dict[str, Any]) -> dict[str, Any]:
    """The event as CEL and action payloads see it (JSON fields parsed)."""
    return {
        "id": value["id"],
        "type": value["type"],
        "customer_id": value["customer_id"],
        "reference": value.get("reference"),
        "brand_id": value.get("brand_id"),
        "issued_at": value.get("issued_at"),
        "properties": orjson.loads(value.get("properties") or "{}"),
        "metadata": orjson.loads(value.get("metadata") or "{}"),
        "tags": list(value.get("tags") or []),
    }


class Journeys:
    """The handler state of one call: the customer's document and the emitting context."""

    def __init__(self, ctx: Context, compiled: CompiledJourneys, customer_id: str) -> None:
        self.ctx = ctx
        self.compiled = compiled
        self.customer_id = customer_id
        self.now = ctx.now()
        self._profile: dict[str, Any] | None = None
        self._profile_act: dict[str, Any] | None = None
        self._acts: dict[str, dict[str, Any]] = {}  # event id -> activation, built once
        self.doc: dict[str, Any] = ctx.store(JOURNEYS).get(customer_id) or {
            "active": {},
            "done": {},
            "seen": [],
        }

    def save(self) -> None:
        store = self.ctx.store(JOURNEYS)
        if self.doc["active"] or self.doc["done"] or self.doc["seen"]:
            store.put(self.customer_id, self.doc)
        else:
            store.delete(self.customer_id)

    @property
    def profile(self) -> dict[str, Any]:
        if self._profile is None:
            self._profile = self.ctx.store(PROFILES).get(self.customer_id) or {}
        return self._profile

    def activation(self, event: dict[str, Any] | None) -> dict[str, Any]:
        """CEL variables: `event`, `properties` (the event's) and `profile` (with days_since_*)."""
        event = event or {}
        key = event.get("id", "")
        if key not in self._acts:
            if self._profile_act is None:
                self._profile_act = floats(with_derived(self.profile, self.now))
            as_floats = floats(event)
            self._acts[key] = {
                "event": as_floats,
                "properties": as_floats.get("properties") or {},
                "profile": self._profile_act,
            }
        return self._acts[key]

    # -- activity -----------------------------------------------------------------------------
    def emit(self, inst: dict[str, Any], kind: str, **fields: Any) -> None:
        inst["seq"] += 1
        self.ctx.count(ACTIVITY, kind)  # when the transaction commits
        value = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{inst['id']}:{inst['seq']}")),
            "journey_id": inst["journey_id"],
            "instance_id": inst["id"],
            "customer_id": self.customer_id,
            "kind": kind,
            "trigger_event_id": (inst.get("event") or {}).get("id"),
            "at": self.now,
            "config_version": self.ctx.config.version,
            **fields,
        }
        self.ctx.emit(JOURNEYS_ACTIVITY, self.customer_id, value)

    # -- lifecycle ----------------------------------------------------------------------------
    def can_enter(self, journey: CompiledJourney) -> bool:
        jid, policy = journey.id, journey.journey.reentry
        if jid in self.doc["active"]:
            if policy != "always":
                return False
            self.finish(journey.id, "EXIT", "reentry")
        return not (policy == "never" and jid in self.doc["done"])

    def enter(self, journey: CompiledJourney, event: dict[str, Any]) -> None:
        if not self.can_enter(journey):
            return
        count = self.doc["done"].get(journey.id, {}).get("count", 0)
        key = f"{self.customer_id}:{journey.id}:{event.get('id')}:{count}"
        inst = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
            "journey_id": journey.id,
            "node": journey.start,
            "since": self.now,
            "step": 0,
            "seq": 0,
            "event": event,
            "pending": None,
        }
        # the audience it was entered from (None: by an event); kept apart from inst["event"],
        # which later events replace
        inst["audience"] = event.get("audience_id") if event.get("type") == "AUDIENCE_ENTER" else None
        self.doc["active"][journey.id] = inst
        self.emit(inst, "ENTER", to_node=journey.start, data=orjson.dumps({"event": event}).decode())
        self.run(journey, inst, journey.start, entry_event=event)

    def finish(self, journey_id: str, kind: str, reason: str) -> None:
        """Remove the active instance (EXIT or COMPLETE) and remember it for re-entry."""
        inst = self.doc["active"].pop(journey_id)
        self.ctx.cancel(timer_id(self.customer_id, journey_id))
        self.emit(inst, kind, from_node=inst["node"], data=orjson.dumps({"reason": reason}).decode())
        done = self.doc["done"].setdefault(journey_id, {"count": 0})
        done["count"] += 1
        done["at"] = self.now

    def on_audience_leave(self, audience_id: str) -> None:
        for jid, inst in list(self.doc["active"].items()):
            journey = self.compiled.journeys.get(jid)
            if journey is None or not journey.journey.exit_on_audience_leave:
                continue
            # instances started before `audience` was recorded: their journey's entry audience
            entered_from = inst.get("audience", journey.journey.entry_audience)
            if entered_from == audience_id:
                self.finish(jid, "EXIT", f"audience_leave:{audience_id}")

    # -- movement -----------------------------------------------------------------------------
    def run(
        self,
        journey: CompiledJourney,
        inst: dict[str, Any],
        node_id: str,
        entry_event: dict[str, Any] | None = None,
    ) -> None:
        """Arrive at `node_id` and keep following edges that can be taken right now."""
        for _ in range(MAX_STEPS):
            node = journey.nodes.get(node_id)
            if node is None:
                return self.finish(journey.id, "EXIT", "node_missing")
            self.arrive(journey, inst, node)
            if node.kind == "end" or not journey.outgoing(node_id):
                return self.finish(journey.id, "COMPLETE", "end")
            edge = self.immediate_edge(journey, inst, entry_event)
            if edge is None:
                return self.wait(journey, inst, after=inst["since"])
            if edge.wait_ms:  # the entry event's edge has a delay: take it when it is over
                return self.hold(inst, edge, entry_event or {})
            entry_event = None
            node_id = edge.to
        self.finish(journey.id, "EXIT", "too_many_steps")

    def arrive(self, journey: CompiledJourney, inst: dict[str, Any], node: Any) -> None:
        if inst["step"]:
            self.emit(inst, "TRANSITION", from_node=inst["node"], to_node=node.id)
        inst.update(node=node.id, since=self.now, step=inst["step"] + 1, pending=None)
        if node.kind == "action":
            self.act(journey, inst, node)

    def immediate_edge(
        self, journey: CompiledJourney, inst: dict[str, Any], entry_event: dict[str, Any] | None
    ) -> Edge | None:
        """A timed edge without wait, or (at the start node) an edge of the entry event's type."""
        act = self.activation(entry_event or inst.get("event"))
        for edge in journey.outgoing(inst["node"]):
            if edge.event_type is None and edge.wait_ms == 0 and edge.condition(act):
                return edge
            if entry_event and edge.event_type == entry_event.get("type") and edge.condition(act):
                return edge
        return None

    def act(self, journey: CompiledJourney, inst: dict[str, Any], node: Any) -> None:
        data = {
            "journey_id": journey.id,
            "journey_name": journey.journey.name,
            "node": node.id,
            "template": node.template,
            "target": node.target,
            "customer_id": self.customer_id,
            "event": inst.get("event"),
            "profile": self.profile,
        }
        self.emit(inst, "ACTION", to_node=node.id, action=node.action, data=orjson.dumps(data).decode())

    def wait(self, journey: CompiledJourney, inst: dict[str, Any], after: int) -> None:
        """Schedule the next timed edge due after `after`; exit if nothing can ever move us."""
        dues = [
            inst["since"] + e.wait_ms
            for e in journey.timed(inst["node"])
            if e.wait_ms and inst["since"] + e.wait_ms > after
        ]
        tid = timer_id(self.customer_id, journey.id)
        if dues:
            payload = {"journey": inst["journey_id"], "instance": inst["id"], "step": inst["step"]}
            self.ctx.schedule(min(dues), self.customer_id, payload, tid)
        elif any(e.event_type for e in journey.outgoing(inst["node"])):
            self.ctx.cancel(tid)  # wait for an event
        else:
            self.finish(journey.id, "EXIT", "no_matching_edge")

    def hold(self, inst: dict[str, Any], edge: Edge, event: dict[str, Any]) -> None:
        at = self.now + edge.wait_ms
        inst["pending"] = {"edge": edge.index, "at": at}
        inst["event"] = event
        payload = {"journey": inst["journey_id"], "instance": inst["id"], "step": inst["step"]}
        self.ctx.schedule(at, self.customer_id, payload, timer_id(self.customer_id, inst["journey_id"]))

    # -- inputs -------------------------------------------------------------------------------
    def on_event(self, event: dict[str, Any]) -> None:
        if event["id"] in self.doc["seen"]:
            return
        self.doc["seen"] = [*self.doc["seen"], event["id"]][-SEEN_IDS:]
        etype = event["type"]
        for jid in list(self.doc["active"]):
            journey = self.compiled.journeys.get(jid)
            if journey and etype in journey.exit_events:
                self.finish(jid, "EXIT", f"exit_event:{etype}")
        for jid, inst in list(self.doc["active"].items()):
            journey = self.compiled.journeys.get(jid)
            if journey and not inst.get("pending"):
                self.move_on_event(journey, inst, event)
        for journey in self.compiled.by_entry_event.get(etype, ()):
            self.enter(journey, event)

    def move_on_event(self, journey: CompiledJourney, inst: dict[str, Any], event: dict[str, Any]) -> None:
        edges = [e for e in journey.outgoing(inst["node"]) if e.event_type == event["type"]]
        if not edges:
            return
        act = self.activation(event)
        edge = next((e for e in edges if e.condition(act)), None)
        if edge is None:
            return
        if edge.wait_ms:
            return self.hold(inst, edge, event)
        inst["event"] = event
        self.run(journey, inst, edge.to)

    def on_timer(self, journey: CompiledJourney, inst: dict[str, Any]) -> None:
        pending = inst.get("pending")
        edges = journey.outgoing(inst["node"])
        if pending and pending["edge"] < len(edges):
            return self.run(journey, inst, edges[pending["edge"]].to)
        inst["pending"] = None  # the delayed edge went away with a config change
        act = self.activation(inst.get("event"))
        for edge in journey.timed(inst["node"]):
            if edge.wait_ms and inst["since"] + edge.wait_ms <= self.now and edge.condition(act):
                return self.run(journey, inst, edge.to)
        self.wait(journey, inst, after=self.now)


class JourneysProcessor(Processor):
    name = "journeys"
    inputs = [EVENTS_LOYALTY, EVENTS_TRACKING, AUDIENCES_MEMBERSHIP, PROFILES_CHANGES]
    outputs = [JOURNEYS_ACTIVITY]
    stores = [JOURNEYS, PROFILES, META]

    def __init__(self) -> None:
        self._program: Program | None = None
        self._compiled: CompiledJourneys | None = None

    def compiled(self, program: Program) -> CompiledJourneys:
        """Compile the journeys once per program version (object identity)."""
        if program is not self._program:
            self._compiled = compile_program(program)
            self._program = program
        assert self._compiled is not None
        return self._compiled

    def process(self, ctx: Context, record: Record) -> None:
        value = record.value
        customer_id = record.key or value["customer_id"]
        if record.topic == PROFILES_CHANGES:
            profile = parse_profile(value)
            ctx.store(PROFILES).put(customer_id, profile)
            if profile.get("merged_into"):
                self.on_merged(ctx, customer_id, profile["merged_into"])
            return
        compiled = self.sync_definitions(ctx, ctx.config)
        if record.topic == AUDIENCES_MEMBERSHIP:
            return self.on_membership(ctx, compiled, customer_id, value)
        if value.get("kind", "EVENT") not in EVENT_KINDS or value["type"] not in compiled.event_types:
            return
        state = Journeys(ctx, compiled, customer_id)
        if state.profile.get("merged_into"):  # its events are the known id's now (forwarded)
            return
        state.on_event(event_view(value))
        state.save()

    def on_membership(
        self, ctx: Context, compiled: CompiledJourneys, customer_id: str, value: dict[str, Any]
    ) -> None:
        """ENTER starts the journeys entered from that audience; LEAVE exits the instances that
        were entered from it, unless their journey says `exit_on_audience_leave: false`."""
        audience_id = value["audience_id"]
        if not compiled.by_entry_audience:
            return
        state = Journeys(ctx, compiled, customer_id)
        if value["action"] == "ENTER":
            event = {
                "id": f"audience:{audience_id}:{value['at']}",
                "type": "AUDIENCE_ENTER",
                "audience_id": audience_id,
                "customer_id": customer_id,
            }
            for journey in compiled.by_entry_audience.get(audience_id, ()):
                state.enter(journey, event)
        elif value["action"] == "LEAVE":
            state.on_audience_leave(audience_id)
        state.save()

    def on_merged(self, ctx: Context, customer_id: str, into: str) -> None:
        """An anonymous customer merged into a known id: its journeys exit (the known id's go
        on; events to the anonymous id reach them re-keyed, processors/loyalty/identity.py)."""
        state = Journeys(ctx, self.sync_definitions(ctx, ctx.config), customer_id)
        for journey_id in list(state.doc["active"]):
            state.finish(journey_id, "EXIT", f"merged_into:{into}")
        state.save()

    def on_timer(self, ctx: Context, timer: Timer) -> None:
        compiled = self.sync_definitions(ctx, ctx.config)
        state = Journeys(ctx, compiled, timer.key)
        jid = timer.payload.get("journey", "")
        inst = state.doc["active"].get(jid)
        if inst is None or inst["id"] != timer.payload.get("instance"):
            return  # stale: the instance ended or restarted
        journey = compiled.journeys.get(jid)
        if journey is None:
            state.finish(jid, "EXIT", "journey_removed")
        elif inst["step"] == timer.payload.get("step"):
            state.on_timer(journey, inst)
        state.save()

    def on_config(self, ctx: Context, program: Program) -> None:
        self.sync_definitions(ctx, program)

    def sync_definitions(self, ctx: Context, program: Program) -> CompiledJourneys:
        """Once per change of the journey definitions (stored, so a change made while the
        processor was down counts too): end instances whose journey or node disappeared and
        re-plan waits whose length changed."""
        compiled = self.compiled(program)
        meta = ctx.store(META)
        if meta.get("definitions") == compiled.fingerprint:
            return compiled
        meta.put("definitions", compiled.fingerprint)
        for customer_id, doc in list(ctx.store(JOURNEYS).range()):
            if not doc["active"]:
                continue
            state = Journeys(ctx, compiled, customer_id)
            for jid, inst in list(state.doc["active"].items()):
                journey = compiled.journeys.get(jid)
                if journey is None:
                    state.finish(jid, "EXIT", "journey_removed")
                elif inst["node"] not in journey.nodes:
                    state.finish(jid, "EXIT", "node_removed")
                elif not inst.get("pending"):
                    state.wait(journey, inst, after=inst["since"])
            state.save()
        return compiled


def build() -> Processor:
    return JourneysProcessor()
