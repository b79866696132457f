"""Audiences processor: ENTER/LEAVE on profile changes, by time alone, and on definition changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from processors.audiences.expressions import compile_condition, doubles, floats
from processors.audiences.processor import build
from processors.runtime.testing import TestDriver
from schemas.program import Audience, Program
from schemas.topics import AUDIENCES_MEMBERSHIP, PROFILES_CHANGES

NOW = 1_700_000_000_000
DAY = 24 * 3600 * 1000

PURCHASERS = Audience(id="purchasers", condition="profile.purchase_count > 0")
BIG = Audience(id="big_spenders", condition="profile.total_spend >= 500")
AT_RISK = Audience(id="at_risk", condition="profile.days_since_last_event >= 30")
VIPS = Audience(id="vips", members=["c-static"])


def profile(customer_id: str, **fields: Any) -> dict[str, Any]:
    flat = {"customer_id": customer_id, "anonymous": False, "identified": True, **fields}
    return {
        "customer_id": customer_id,
        "anonymous": flat["anonymous"],
        "updated_at": NOW,
        "profile": json.dumps(flat),
    }


def changes(emitted: list) -> list[tuple[str, str, str]]:
    return [
        (v["customer_id"], v["audience_id"], v["action"]) for t, _, v in emitted if t == AUDIENCES_MEMBERSHIP
    ]


def driver(*audiences: Audience, version: int = 1, partitions: int = 1) -> TestDriver:
    program = Program(version=version, audiences=list(audiences))
    return TestDriver(build(), program, now=NOW, partitions=partitions)


def test_json_number_semantics() -> None:
    assert doubles('profile.tags[0] == "a1" && x / 2 > 1') == 'profile.tags[0] == "a1" && x / 2.0 > 1.0'
    spend = compile_condition("profile.total_spend / 2 >= 250")
    assert spend(floats({"profile": {"total_spend": 500}}))
    assert not spend({"profile": {}})  # missing field: false, not an error
    assert not compile_condition("profile.(")({"profile": {}})  # invalid: never matches
    assert compile_condition("int(profile.n) % 2 == 1")(floats({"profile": {"n": 3}}))


def test_enter_and_leave_on_profile_change() -> None:
    d = driver(PURCHASERS, BIG)
    assert changes(d.send(PROFILES_CHANGES, "c1", profile("c1", purchase_count=0))) == []
    out = d.send(PROFILES_CHANGES, "c1", profile("c1", purchase_count=1, total_spend=600))
    assert changes(out) == [("c1", "big_spenders", "ENTER"), ("c1", "purchasers", "ENTER")]
    assert out[0][2]["config_version"] == 1 and out[0][2]["at"] == NOW
    # unchanged membership emits nothing
    assert changes(d.send(PROFILES_CHANGES, "c1", profile("c1", purchase_count=2, total_spend=700))) == []
    out = d.send(PROFILES_CHANGES, "c1", profile("c1", purchase_count=2, total_spend=100))
    assert changes(out) == [("c1", "big_spenders", "LEAVE")]
    assert d.store("memberships")["c1"] == {"purchasers": NOW}


def test_anonymous_skipped_until_identified() -> None:
    d = driver(PURCHASERS)
    anon = profile("c2", purchase_count=3, anonymous=True, identified=False)
    assert changes(d.send(PROFILES_CHANGES, "c2", anon)) == []
    assert "c2" not in d.store("memberships")
    identified = profile("c2", purchase_count=3, identified=True)
    assert changes(d.send(PROFILES_CHANGES, "c2", identified)) == [("c2", "purchasers", "ENTER")]


def test_leave_and_enter_by_time_alone() -> None:
    d = driver(AT_RISK)
    last = NOW - 29 * DAY - 3600_000  # 29 days and 1 hour ago
    assert changes(d.send(PROFILES_CHANGES, "c3", profile("c3", last_event_at=last))) == []
    assert changes(d.advance(22 * 3600_000)) == []  # 29 days 23 h: not yet
    assert changes(d.advance(3600_000)) == [("c3", "at_risk", "ENTER")]  # 30 days exactly
    assert d.outputs(AUDIENCES_MEMBERSHIP)[-1]["reason"] == "time"
    # a new event resets the clock: the customer leaves on that profile change...
    fresh = profile("c3", last_event_at=NOW + 30 * DAY)
    d.clock.set(NOW + 30 * DAY)
    assert changes(d.send(PROFILES_CHANGES, "c3", fresh)) == [("c3", "at_risk", "LEAVE")]
    # ... and re-enters 30 days later with no new event at all
    assert changes(d.advance(29 * DAY)) == []
    assert changes(d.advance(DAY)) == [("c3", "at_risk", "ENTER")]


def test_leave_by_time_alone() -> None:
    recent = Audience(id="recent_buyers", condition="profile.days_since_last_purchase < 7")
    d = driver(recent)
    out = d.send(PROFILES_CHANGES, "c4", profile("c4", last_purchase_at=NOW - DAY))
    assert changes(out) == [("c4", "recent_buyers", "ENTER")]
    assert changes(d.advance(5 * DAY)) == []
    assert changes(d.advance(DAY)) == [("c4", "recent_buyers", "LEAVE")]


def test_static_list_members() -> None:
    d = driver(VIPS)
    assert changes(d.send(PROFILES_CHANGES, "c-static", profile("c-static"))) == [
        ("c-static", "vips", "ENTER")
    ]
    assert changes(d.send(PROFILES_CHANGES, "other", profile("other"))) == []


@pytest.mark.parametrize("partitions", [1, 3])
def test_definition_change_reevaluates_stored_customers(partitions: int) -> None:
    d = driver(PURCHASERS, partitions=partitions)
    d.send(PROFILES_CHANGES, "a", profile("a", purchase_count=1, total_spend=800))
    d.send(PROFILES_CHANGES, "b", profile("b", purchase_count=0, total_spend=0))
    d.send(PROFILES_CHANGES, "anon", profile("anon", total_spend=900, anonymous=True))
    assert changes(d.emitted) == [("a", "purchasers", "ENTER")]
    stricter = Audience(id="purchasers", condition="profile.purchase_count > 5")
    out = d.apply_config(Program(version=2, audiences=[stricter, BIG]))
    assert sorted(changes(out)) == [("a", "big_spenders", "ENTER"), ("a", "purchasers", "LEAVE")]
    assert {v["reason"] for _, _, v in out} == {"definition_change"}
    assert {v["config_version"] for _, _, v in out} == {2}
    # removing an audience makes its members leave; an unrelated config change emits nothing
    out = d.apply_config(Program(version=3, audiences=[stricter]))
    assert changes(out) == [("a", "big_spenders", "LEAVE")]
    assert out[0][2]["reason"] == "audience_removed"
    assert d.apply_config(Program(version=4, name="renamed", audiences=[stricter])) == []


def test_rfm_tier_tags_and_traits() -> None:
    champions = Audience(
        id="champions",
        condition='profile.rfm.score >= 4 && profile.tier == "gold" && "vip" in profile.tags'
        " && profile.traits.avg_basket > 50",
    )
    d = driver(champions)
    p = profile("c5", rfm={"score": 5}, tier="gold", tags=["vip"], traits={"avg_basket": 80})
    assert changes(d.send(PROFILES_CHANGES, "c5", p)) == [("c5", "champions", "ENTER")]
    p = profile("c6", rfm={"score": 5}, tier="gold", tags=["vip"], traits={})
    assert changes(d.send(PROFILES_CHANGES, "c6", p)) == []


def test_definition_change_while_down_is_caught_up_on_next_record() -> None:
    d = driver(PURCHASERS)
    d.send(PROFILES_CHANGES, "a", profile("a", purchase_count=1))
    # the runtime only calls on_config for versions seen while running: simulate a restart
    # that finds a newer program already applied
    d.program = Program(version=2, audiences=[BIG])
    d.send(PROFILES_CHANGES, "b", profile("b", total_spend=900))
    assert changes(d.emitted)[1:] == [("a", "purchasers", "LEAVE"), ("b", "big_spenders", "ENTER")]
