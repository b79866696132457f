"""Badges, achievements and webhook reactions through the loyalty processor's TestDriver: what
results, webhooks and profiles a user sees (issue 15 items 1-2)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from processors.audiences.processor import build as audiences
from processors.delivery.routing import request_body, webhook_targets
from processors.loyalty.validate import rule_errors
from processors.runtime.testing import TestDriver
from schemas.program import Audience, Program
from schemas.topics import AUDIENCES_MEMBERSHIP, PROFILES_CHANGES
from tests.unit.test_loyalty_engine import BASE, DAY, Shop, hook_types, hooks, profile, program, result

BADGES = [
    {"id": "critic", "name": "Critic", "description": "5 reviews", "image_url": "https://x/critic.png"},
    {"id": "regular", "name": "Regular"},
    {"id": "big", "name": "Big spender"},
    {"id": "welcome", "name": "Welcome"},
]
TYPES = [{"name": "REVIEW"}, {"name": "APP_OPEN"}]
CRITIC = {"id": "five-reviews", "name": "Five reviews", "triggers": ["REVIEW"], "target": 5}
CRITIC |= {"condition": "properties.stars >= 4", "badge_id": "critic"}
REGULAR = {"id": "ten-in-30", "triggers": ["PURCHASE"], "target": 3, "period_days": 30, "badge_id": "regular"}
HOOK = {"id": "crm", "url": "https://hooks.example.com/x", "events": ["BADGE_AWARDED"]}


def shop(**fields: Any) -> Shop:
    fields.setdefault("event_types", TYPES)
    return Shop(program(badges=BADGES, **fields))


def review(s: Shop, who: str = "ann", stars: int = 5, **fields: Any) -> list:
    return s.send(who, "REVIEW", properties={"stars": stars}, **fields)


def detail(out: list) -> dict:
    return result(out)["detail"]


def test_an_achievement_awards_its_badge_once_at_the_target():
    s = shop(achievements=[CRITIC])
    for _ in range(3):
        review(s)
    review(s, stars=2)  # the condition is not met: no progress
    out = review(s)
    (progress,) = detail(out)["achievements"]
    assert (progress["progress"], progress["target"], progress["completed"]) == (4, 5, False)
    assert hooks(out, "BADGE_AWARDED") == [] and profile(out)["badges"] == []
    out = review(s, id="fifth")
    (progress,) = detail(out)["achievements"]
    assert progress["completed"] and progress["times"] == 1
    (hook,) = hooks(out, "BADGE_AWARDED")
    assert {
        k: hook[k]
        for k in ("customer_id", "badge_id", "badge_name", "trigger_event_id", "trigger_event_type")
    } == {
        "customer_id": "ann",
        "badge_id": "critic",
        "badge_name": "Critic",
        "trigger_event_id": "fifth",
        "trigger_event_type": "REVIEW",
    }
    assert hook["awarded_at"] == result(out)["processed_at"] and hook["achievement_id"] == "five-reviews"
    (change,) = detail(out)["badges"]
    assert change["action"] == "AWARDED" and change["badge_id"] == "critic" and change["count"] == 1
    assert profile(out)["badges"] == ["critic"]
    # a once achievement is done: more reviews award nothing more
    out = review(s)
    assert "achievements" not in detail(out) and hooks(out, "BADGE_AWARDED") == []
    assert profile(out)["badges"] == ["critic"]


def test_a_repeated_event_id_does_not_award_again():
    s = shop(achievements=[{**CRITIC, "target": 1}])
    first = review(s, id="r1")
    again = review(s, id="r1")
    assert len(hooks(first, "BADGE_AWARDED")) == 1
    assert hook_types(again) == [] and detail(again)["duplicate"] is True
    assert s.driver.store("customers")["ann"]["badges"]["critic"]["count"] == 1


def test_a_period_counts_only_events_within_the_rolling_window():
    s = shop(achievements=[REGULAR])
    s.send("ann", properties={"amount": 1})
    s.driver.advance(20 * DAY)
    s.send("ann", properties={"amount": 1})
    s.driver.advance(15 * DAY)  # the first purchase is now 35 days old
    out = s.send("ann", properties={"amount": 1})
    (progress,) = detail(out)["achievements"]
    assert (progress["progress"], progress["completed"]) == (2, False)
    out = s.send("ann", properties={"amount": 1})
    assert detail(out)["achievements"][0]["completed"] and profile(out)["badges"] == ["regular"]


def test_a_sum_goal_adds_a_property():
    big = {"id": "spend-500", "triggers": ["PURCHASE"], "sum": "properties.amount", "target": 500}
    s = shop(achievements=[{**big, "badge_id": "big"}])
    s.send("ann", properties={"amount": 300})
    out = s.send("ann", properties={"amount": 250})
    (progress,) = detail(out)["achievements"]
    assert (progress["progress"], progress["completed"]) == (550, True)
    assert [h["badge_id"] for h in hooks(out, "BADGE_AWARDED")] == ["big"]


def test_a_repeatable_achievement_awards_again_each_round_and_reports_progress():
    s = shop(achievements=[{**CRITIC, "target": 2, "repeatable": True, "notify_progress": True}])
    out = review(s)
    (step,) = hooks(out, "ACHIEVEMENT_PROGRESS")
    assert step["achievement_id"] == "five-reviews" and (step["progress"], step["target"]) == (1, 2)
    assert step["completed"] is False and step["trigger_event_type"] == "REVIEW"
    awarded = [len(hooks(review(s), "BADGE_AWARDED")) for _ in range(5)]
    assert awarded == [1, 0, 1, 0, 1]
    badge = s.driver.store("customers")["ann"]["badges"]["critic"]
    assert badge["count"] == 3


def test_no_progress_webhook_unless_asked():
    s = shop(achievements=[CRITIC])
    assert "ACHIEVEMENT_PROGRESS" not in hook_types(review(s))


def test_reversal_of_the_completing_event_revokes_the_badge():
    s = shop(achievements=[{**CRITIC, "target": 2}])
    review(s, id="r1")
    review(s, id="r2")
    out = s.command("ann", "REVERSE", "r2")
    res = result(out)
    assert res["status"] == "REVERSED"
    (revoked,) = hooks(out, "BADGE_REVOKED")
    assert revoked["badge_id"] == "critic" and revoked["trigger_event_id"] == "r2"
    assert revoked["revoked_at"] == res["processed_at"] and revoked["count"] == 0
    assert res["detail"]["badges"][0]["action"] == "REVOKED" and profile(out)["badges"] == []
    # r1 still counts: one more review completes it again
    out = review(s, id="r3")
    assert detail(out)["achievements"][0]["completed"] and profile(out)["badges"] == ["critic"]


def test_reversal_of_an_earlier_event_takes_back_its_progress_only():
    s = shop(achievements=[{**CRITIC, "target": 3}])
    review(s, id="r1")
    review(s, id="r2")
    out = s.command("ann", "REVERSE", "r1")
    assert hooks(out, "BADGE_REVOKED") == []
    assert detail(review(s, id="r3"))["achievements"][0]["progress"] == 2


def test_a_campaign_awards_a_badge_alone_or_beside_points():
    alone = {"id": "welcome", "triggers": ["APP_OPEN"], "award_badge": "welcome", "per_customer_limit": 1}
    beside = {**BASE, "award_badge": "big", "condition": "properties.amount >= 100"}
    s = shop(campaigns=[alone, beside])
    out = s.send("ann", "APP_OPEN")
    (rule,) = detail(out)["rules_applied"]
    assert rule["campaign_id"] == "welcome" and rule["badge_id"] == "welcome"
    assert [h["badge_id"] for h in hooks(out, "BADGE_AWARDED")] == ["welcome"]
    assert hooks(out, "BADGE_AWARDED")[0]["campaign_id"] == "welcome"
    skipped = detail(s.send("ann", "APP_OPEN"))["rules_skipped"]
    assert skipped[0]["reason"] == "per-customer limit of 1 reached"
    out = s.send("ann", properties={"amount": 100}, id="p1")
    assert result(out)["points"] == 100 and [h["badge_id"] for h in hooks(out, "BADGE_AWARDED")] == ["big"]
    assert profile(out)["badges"] == ["big", "welcome"]
    out = s.command("ann", "REVERSE", "p1")
    assert [h["badge_id"] for h in hooks(out, "BADGE_REVOKED")] == ["big"]
    assert profile(out)["badges"] == ["welcome"]


def test_badges_in_campaign_conditions_traits_and_tiers():
    vip = {**BASE, "id": "vip", "condition": '"critic" in profile.badges', "formula": "10"}
    tiers = {"levels": [{"id": "std", "name": "Std", "level": 0}]}
    tiers["levels"].append({"id": "pro", "name": "Pro", "level": 1, "entry": '"critic" in profile.badges'})
    s = shop(
        campaigns=[vip],
        achievements=[{**CRITIC, "target": 1}],
        traits=[{"name": "badge_count", "expression": "double(size(profile.badges))"}],
        tiers=tiers,
    )
    out = review(s)
    assert profile(out)["tier"] == "pro" and profile(out)["traits"] == {"badge_count": 1}
    assert "TIER_UPGRADE" in hook_types(out)
    assert result(s.send("ann", properties={"amount": 5}))["points"] == 10


def test_profile_badges_in_an_audience_condition():
    s = shop(achievements=[{**CRITIC, "target": 1}])
    flat = profile(review(s))
    d = TestDriver(
        audiences(),
        Program(version=1, audiences=[Audience(id="critics", condition='"critic" in profile.badges')]),
    )
    value = {
        "customer_id": "ann",
        "anonymous": False,
        "updated_at": 1,
        "profile": orjson.dumps(flat).decode(),
    }
    out = d.send(PROFILES_CHANGES, "ann", value)
    assert [(v["audience_id"], v["action"]) for t, _, v in out if t == AUDIENCES_MEMBERSHIP] == [
        ("critics", "ENTER")
    ]


def test_a_webhook_reaction_is_pinned_to_its_endpoint_with_the_rendered_payload():
    payload = {
        "text": "{{ customer.name }} spent {{ properties.amount }}",
        "amount": "{{ properties.amount }}",
        "points": "{{ campaign.amount }}",
        "campaign": "{{ campaign.id }}",
        "nested": [{"tier": "{{ profile.tier }}", "fixed": 1}],
        "broken": "{{ properties.nope.deeper }}",
    }
    react = {**BASE, "webhook": {"endpoint": "crm", "event": "BIG_ORDER", "payload": payload}}
    s = shop(campaigns=[react], webhooks=[HOOK])
    s.command("ann", "REGISTER", customer={"name": "Ann"})
    out = s.send("ann", properties={"amount": 150}, id="o1")
    (note,) = [v for t, _, v in out if t == "notifications" and v["event"] == "BIG_ORDER"]
    assert note["endpoint_id"] == "crm"
    assert orjson.loads(note["data"]) == {
        "text": "Ann spent 150",
        "amount": 150,
        "points": 200,
        "campaign": "base",
        "nested": [{"tier": None, "fixed": 1}],
        "broken": None,
    }
    (rule,) = detail(out)["rules_applied"]
    assert rule["webhook"]["endpoint"] == "crm" and rule["webhook"]["errors"]
    # delivery sends it to that webhook only (it does not subscribe to BIG_ORDER), as {event, data}
    prog = program(webhooks=[HOOK, {**HOOK, "id": "other", "events": ["*"]}])
    assert [e.id for e in webhook_targets(prog, note)] == ["crm"]
    assert orjson.loads(request_body(note))["event"] == "BIG_ORDER"
    again = s.send("ann", properties={"amount": 150}, id="o1")
    assert [v for t, _, v in again if t == "notifications"] == []  # once per event


def test_program_references_and_rules_are_checked():
    with pytest.raises(ValidationError, match="unknown badge_id"):
        program(badges=BADGES, achievements=[{**CRITIC, "badge_id": "nope"}])
    with pytest.raises(ValidationError, match="unknown award_badge"):
        program(badges=BADGES, campaigns=[{**BASE, "award_badge": "nope"}])
    with pytest.raises(ValidationError, match="unknown webhook endpoint"):
        program(campaigns=[{**BASE, "webhook": {"endpoint": "nope"}}])
    with pytest.raises(ValidationError, match="target"):
        program(badges=BADGES, achievements=[{**CRITIC, "target": 0}])
    bad = program(
        badges=BADGES,
        webhooks=[HOOK],
        achievements=[{**CRITIC, "condition": "properties.(", "sum": "1 +"}],
        campaigns=[{**BASE, "webhook": {"endpoint": "crm", "payload": {"x": "{{ ) }}"}}}],
    )
    errors = rule_errors(bad)
    assert any(e.startswith("achievement five-reviews condition") for e in errors)
    assert any(e.startswith("achievement five-reviews sum") for e in errors)
    assert any(e.startswith("campaign base webhook payload") for e in errors)


def test_docs_list_the_badge_webhook_fields():
    """docs/loyalty.md's badge webhook table names exactly the fields sent."""
    text = (Path(__file__).parents[2] / "docs" / "loyalty.md").read_text()
    section = text.split("## Badges and achievements", 1)[1].split("\n## ", 1)[0]
    documented = {
        kind: set(re.findall(r'"([a-z_]+)"', fields))
        for kind, fields in re.findall(r"^\| ([A-Z_]+) \| (.+) \|$", section, re.M)
    }
    s = shop(achievements=[{**CRITIC, "target": 1, "notify_progress": True}])
    out = review(s, id="r1") + s.command("ann", "REVERSE", "r1")
    sent = {
        kind: set(hooks(out, kind)[0]) for kind in ("BADGE_AWARDED", "BADGE_REVOKED", "ACHIEVEMENT_PROGRESS")
    }
    assert documented == sent
