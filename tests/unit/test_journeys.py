"""Journeys processor: cart abandonment both ways, exits, audience entry, re-entry, waits."""

from __future__ import annotations

import json
import uuid
from typing import Any

import yaml

from processors.audiences.processor import build as build_audiences
from processors.journeys.processor import build
from processors.runtime.testing import TestDriver
from schemas.program import Journey, Program
from schemas.topics import (
    AUDIENCES_MEMBERSHIP,
    EVENTS_LOYALTY,
    EVENTS_TRACKING,
    JOURNEYS_ACTIVITY,
    PROFILES_CHANGES,
)

NOW = 1_700_000_000_000
MINUTE = 60_000

CART_ABANDONMENT = yaml.safe_load(
    """
id: cart_abandonment
name: Cart abandonment
entry_event: ADD_TO_CART
reentry: after_exit
exit_events: [PURCHASE]
nodes:
  - {id: start, kind: start}
  - {id: wait_30m, kind: wait}
  - {id: email, kind: action, action: email, template: cart_reminder}
  - {id: end, kind: end}
edges:
  - {from: start, to: wait_30m}
  - {from: wait_30m, to: email, wait_minutes: 30}
  - {from: email, to: end}
"""
)


def event(customer_id: str, type_: str, path: str = "tracking", **properties: Any) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "customer_id": customer_id,
        "type": type_,
        "path": path,
        "issued_at": NOW,
        "received_at": NOW,
        "properties": json.dumps(properties),
    }


def send_event(d: TestDriver, customer_id: str, type_: str, **properties: Any) -> list:
    topic = EVENTS_LOYALTY if type_ == "PURCHASE" else EVENTS_TRACKING
    return d.send(topic, customer_id, event(customer_id, type_, **properties))


def activity(emitted: list) -> list[tuple]:
    """(kind, node, action) of each journeys.activity record."""
    return [
        (v["kind"], v["to_node"] or v["from_node"], v["action"])
        for t, _, v in emitted
        if t == JOURNEYS_ACTIVITY
    ]


def driver(*journeys: dict, version: int = 1) -> TestDriver:
    program = Program(version=version, journeys=[Journey.model_validate(j) for j in journeys])
    return TestDriver(build(), program, now=NOW)


def test_cart_abandonment_sends_email_after_30_minutes() -> None:
    d = driver(CART_ABANDONMENT)
    out = send_event(d, "c1", "ADD_TO_CART", sku="A1")
    assert activity(out) == [("ENTER", "start", None), ("TRANSITION", "wait_30m", None)]
    assert activity(d.advance(29 * MINUTE + 59_000)) == []
    out = d.advance(1_000)
    assert activity(out) == [
        ("TRANSITION", "email", None),
        ("ACTION", "email", "email"),
        ("TRANSITION", "end", None),
        ("COMPLETE", "end", None),
    ]
    action = next(v for _, _, v in out if v["kind"] == "ACTION")
    data = json.loads(action["data"])
    assert data["template"] == "cart_reminder" and data["event"]["properties"] == {"sku": "A1"}
    assert action["customer_id"] == "c1" and action["config_version"] == 1
    assert d.store("journeys")["c1"]["active"] == {}
    assert d.advance(60 * MINUTE) == []  # the timer fired once


def test_purchase_exits_and_no_email_is_sent() -> None:
    d = driver(CART_ABANDONMENT)
    send_event(d, "c2", "ADD_TO_CART")
    d.advance(10 * MINUTE)
    out = send_event(d, "c2", "PURCHASE", amount=40)
    assert activity(out) == [("EXIT", "wait_30m", None)]
    assert json.loads(out[0][2]["data"]) == {"reason": "exit_event:PURCHASE"}
    assert activity(d.advance(120 * MINUTE)) == []
    assert not [v for v in d.outputs(JOURNEYS_ACTIVITY) if v["kind"] == "ACTION"]


def test_reentry_after_exit_and_duplicate_events() -> None:
    d = driver(CART_ABANDONMENT)
    first = event("c3", "ADD_TO_CART")
    d.send(EVENTS_TRACKING, "c3", first)
    assert activity(d.send(EVENTS_TRACKING, "c3", event("c3", "ADD_TO_CART"))) == []  # active
    send_event(d, "c3", "PURCHASE")
    assert activity(d.send(EVENTS_TRACKING, "c3", first)) == []  # a replayed event id
    out = send_event(d, "c3", "ADD_TO_CART")  # a new cart after the exit: enters again
    assert activity(out)[0] == ("ENTER", "start", None)
    instances = {v["instance_id"] for v in d.outputs(JOURNEYS_ACTIVITY) if v["kind"] == "ENTER"}
    assert len(instances) == 2
    ids = [v["id"] for v in d.outputs(JOURNEYS_ACTIVITY)]
    assert len(ids) == len(set(ids))


def test_reentry_never() -> None:
    d = driver({**CART_ABANDONMENT, "reentry": "never"})
    send_event(d, "c4", "ADD_TO_CART")
    send_event(d, "c4", "PURCHASE")
    assert activity(send_event(d, "c4", "ADD_TO_CART")) == []


def test_reentry_always_restarts_the_wait() -> None:
    d = driver({**CART_ABANDONMENT, "reentry": "always"})
    send_event(d, "c5", "ADD_TO_CART")
    d.advance(20 * MINUTE)
    out = send_event(d, "c5", "ADD_TO_CART")
    assert [a[0] for a in activity(out)] == ["EXIT", "ENTER", "TRANSITION"]
    assert activity(d.advance(20 * MINUTE)) == []  # 40 min after the first cart, 20 after this
    assert ("ACTION", "email", "email") in activity(d.advance(10 * MINUTE))


def test_audience_entry_event_edges_conditions_and_fractional_waits() -> None:
    winback = {
        "id": "winback",
        "entry_audience": "at_risk",
        "exit_events": ["UNSUBSCRIBE"],
        "nodes": [
            {"id": "start", "kind": "start"},
            {"id": "push", "kind": "action", "action": "push", "template": "we_miss_you"},
            {"id": "vip", "kind": "action", "action": "webhook", "target": "crm"},
            {"id": "thanks", "kind": "action", "action": "email", "template": "thanks"},
            {"id": "end", "kind": "end"},
        ],
        "edges": [
            {"from": "start", "to": "vip", "condition": 'profile.tier == "gold"'},
            {"from": "start", "to": "push", "wait_minutes": 0.5},
            {"from": "push", "to": "thanks", "event_type": "PURCHASE",
             "condition": "event.properties.amount >= 20"},
            {"from": "vip", "to": "end"},
            {"from": "thanks", "to": "end"},
        ],
    }  # fmt: skip
    d = driver(winback)
    d.send(PROFILES_CHANGES, "c6", {"customer_id": "c6", "updated_at": NOW,
                                    "profile": json.dumps({"tier": "silver"})})  # fmt: skip
    enter = {"audience_id": "at_risk", "customer_id": "c6", "action": "ENTER", "at": NOW}
    assert activity(d.send(AUDIENCES_MEMBERSHIP, "c6", enter)) == [("ENTER", "start", None)]
    assert activity(d.advance(29_000)) == []
    assert ("ACTION", "push", "push") in activity(d.advance(1_000))  # 0.5 minutes
    assert activity(send_event(d, "c6", "PURCHASE", amount=5)) == []  # condition false
    out = send_event(d, "c6", "PURCHASE", amount=25)
    assert ("ACTION", "thanks", "email") in activity(out) and activity(out)[-1][0] == "COMPLETE"
    # a gold customer takes the immediate conditional edge to the webhook action
    d.send(PROFILES_CHANGES, "c7", {"customer_id": "c7", "updated_at": NOW,
                                    "profile": json.dumps({"tier": "gold"})})  # fmt: skip
    out = d.send(AUDIENCES_MEMBERSHIP, "c7", {**enter, "customer_id": "c7"})
    assert ("ACTION", "vip", "webhook") in activity(out)
    action = next(v for _, _, v in out if v["kind"] == "ACTION")
    assert json.loads(action["data"])["target"] == "crm"


def test_timed_edge_condition_false_exits() -> None:
    j = {
        "id": "nudge",
        "entry_event": "SIGNUP",
        "nodes": [{"id": "start", "kind": "start"}, {"id": "mail", "kind": "action",
                                                      "action": "email"}],
        "edges": [{"from": "start", "to": "mail", "wait_minutes": 60,
                   "condition": "profile.purchase_count == 0"}],
    }  # fmt: skip
    d = driver(j)
    send_event(d, "c8", "SIGNUP")
    d.send(PROFILES_CHANGES, "c8", {"customer_id": "c8", "updated_at": NOW,
                                    "profile": json.dumps({"purchase_count": 2})})  # fmt: skip
    out = d.advance(60 * MINUTE)
    assert activity(out) == [("EXIT", "start", None)]
    assert json.loads(out[0][2]["data"]) == {"reason": "no_matching_edge"}


def test_commands_are_not_behaviour() -> None:
    d = driver(CART_ABANDONMENT)
    cmd = {**event("c9", "ADD_TO_CART"), "kind": "CANCEL"}
    assert d.send(EVENTS_LOYALTY, "c9", cmd) == []


def test_removed_journey_exits_instances() -> None:
    d = driver(CART_ABANDONMENT)
    send_event(d, "c10", "ADD_TO_CART")
    out = d.apply_config(Program(version=2))
    assert activity(out) == [("EXIT", "wait_30m", None)]
    assert json.loads(out[0][2]["data"]) == {"reason": "journey_removed"}
    assert d.advance(60 * MINUTE) == []


def test_changed_wait_is_replanned() -> None:
    d = driver(CART_ABANDONMENT)
    send_event(d, "c11", "ADD_TO_CART")
    longer = json.loads(json.dumps(CART_ABANDONMENT))
    longer["edges"][1]["wait_minutes"] = 60
    d.apply_config(Program(version=2, journeys=[Journey.model_validate(longer)]))
    assert activity(d.advance(30 * MINUTE)) == []
    assert ("ACTION", "email", "email") in activity(d.advance(30 * MINUTE))


def test_event_edge_with_delay_and_self_loop_reminders() -> None:
    reminders = {
        "id": "reminders",
        "entry_event": "SIGNUP",
        "exit_events": ["PURCHASE"],
        "nodes": [
            {"id": "start", "kind": "start"},
            {"id": "remind", "kind": "action", "action": "push", "template": "come_back"},
            {"id": "thanks", "kind": "action", "action": "email", "template": "thanks"},
        ],
        "edges": [
            {"from": "start", "to": "remind", "wait_minutes": 60},
            {"from": "remind", "to": "remind", "wait_minutes": 60},
            {"from": "start", "to": "thanks", "event_type": "APP_OPEN", "wait_minutes": 5},
            {"from": "remind", "to": "thanks", "event_type": "APP_OPEN", "wait_minutes": 5},
        ],
    }
    d = driver(reminders)
    send_event(d, "c12", "SIGNUP")
    for _ in range(3):  # an hourly reminder loop, one push per hour
        assert ("ACTION", "remind", "push") in activity(d.advance(60 * MINUTE))
    assert activity(send_event(d, "c12", "APP_OPEN")) == []  # taken 5 minutes later
    out = d.advance(5 * MINUTE)
    assert ("ACTION", "thanks", "email") in activity(out) and activity(out)[-1][0] == "COMPLETE"
    assert d.advance(120 * MINUTE) == []


WINBACK_FROM_AUDIENCE = {
    "id": "winback",
    "entry_audience": "at_risk",
    "nodes": [
        {"id": "start", "kind": "start"},
        {"id": "push", "kind": "action", "action": "push", "template": "we_miss_you"},
        {"id": "end", "kind": "end"},
    ],
    "edges": [{"from": "start", "to": "push", "wait_minutes": 60}, {"from": "push", "to": "end"}],
}


def membership(customer_id: str, action: str, at: int, audience: str = "at_risk") -> dict:
    return {"audience_id": audience, "customer_id": customer_id, "action": action, "at": at}


def test_leaving_the_entry_audience_exits_the_journey() -> None:
    d = driver(WINBACK_FROM_AUDIENCE)
    assert activity(d.send(AUDIENCES_MEMBERSHIP, "c20", membership("c20", "ENTER", NOW))) == [
        ("ENTER", "start", None)
    ]
    # leaving another audience changes nothing
    assert d.send(AUDIENCES_MEMBERSHIP, "c20", membership("c20", "LEAVE", NOW, "vip")) == []
    out = d.send(AUDIENCES_MEMBERSHIP, "c20", membership("c20", "LEAVE", NOW + MINUTE))
    assert activity(out) == [("EXIT", "start", None)]
    assert json.loads(out[0][2]["data"]) == {"reason": "audience_leave:at_risk"}
    assert d.advance(60 * MINUTE) == []  # the push wait was cancelled
    # re-entering the audience starts a new instance (reentry after_exit)
    out = d.send(AUDIENCES_MEMBERSHIP, "c20", membership("c20", "ENTER", NOW + 61 * MINUTE))
    assert activity(out) == [("ENTER", "start", None)]
    assert out[0][2]["instance_id"] != d.outputs(JOURNEYS_ACTIVITY)[0]["instance_id"]


def test_exit_on_audience_leave_false_keeps_the_journey() -> None:
    d = driver({**WINBACK_FROM_AUDIENCE, "exit_on_audience_leave": False})
    d.send(AUDIENCES_MEMBERSHIP, "c21", membership("c21", "ENTER", NOW))
    assert d.send(AUDIENCES_MEMBERSHIP, "c21", membership("c21", "LEAVE", NOW + MINUTE)) == []
    assert ("ACTION", "push", "push") in activity(d.advance(60 * MINUTE))


def test_audience_leave_exits_only_instances_entered_from_it() -> None:
    # the same journey entered by its event: leaving the audience does not end it
    both = {**WINBACK_FROM_AUDIENCE, "entry_event": "APP_OPEN"}
    d = driver(both)
    assert activity(send_event(d, "c22", "APP_OPEN")) == [("ENTER", "start", None)]
    assert d.send(AUDIENCES_MEMBERSHIP, "c22", membership("c22", "LEAVE", NOW)) == []
    assert ("ACTION", "push", "push") in activity(d.advance(60 * MINUTE))


def test_audiences_processor_leave_exits_the_journey() -> None:
    """End to end through both processors: the profile change that drops a customer from the
    audience (audiences -> audiences.membership LEAVE) ends the journey it entered."""
    program = Program(
        version=1,
        audiences=[{"id": "at_risk", "condition": "profile.purchase_count == 0"}],
        journeys=[Journey.model_validate(WINBACK_FROM_AUDIENCE)],
    )
    audiences = TestDriver(build_audiences(), program, now=NOW)
    journeys = TestDriver(build(), program, now=NOW)

    def profile_change(purchases: int) -> list:
        value = {"customer_id": "c23", "updated_at": NOW,
                 "profile": json.dumps({"purchase_count": purchases})}  # fmt: skip
        out = []
        for topic, key, v in audiences.send(PROFILES_CHANGES, "c23", value):
            assert topic == AUDIENCES_MEMBERSHIP
            out += journeys.send(topic, key, v)
        return out

    assert activity(profile_change(0)) == [("ENTER", "start", None)]
    assert activity(profile_change(1)) == [("EXIT", "start", None)]
