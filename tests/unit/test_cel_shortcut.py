"""The CEL shortcuts (processors/cel.py) decide a rule only when CEL would give the same
answer: checked against CEL itself over values of every JSON type, missing fields included."""

from __future__ import annotations

import itertools
import math

import cel
import pytest

from processors.cel import doubles, jsonish, shortcut
from processors.loyalty.rules import Bindings, compile_rule

SIMPLE = [
    "properties.amount > 0",
    "properties.amount >= 300",
    "properties.amount < 10.5",
    "properties.amount <= 0",
    "properties.amount == 100",
    "properties.amount != 100",
    'properties.category == "coffee"',
    "properties.category != 'tea'",
    "profile.rfm.score >= 12",
    "has(properties.stars)",
    "has(profile.events_by_type.APP_OPEN)",
    "has(properties.stars) && properties.stars >= 4",
    "profile.lifetime_points >= 5000 || profile.period_purchases >= 50",
    "properties.amount > 0 && properties.amount < 5 || properties.category == 'coffee'",
    "(properties.amount > 0)",
    "properties.amount * 2.0 > 10.0",
    "properties.amount * 1 + (properties.amount > 100 ? 50 : 0)",
    "properties.amount - properties.stars * 0.5",
    "has(properties.stars) ? properties.stars : properties.amount + 1",
    "properties.stars >= 4 ? 'good' : properties.category",
    "properties.amount < properties.stars == (properties.category == 'tea')",
    'properties.channel == "launch" && properties.category != "tea" && has(properties.stars)',
]
NOT_SIMPLE = [
    "-1 < properties.amount",
    "properties.amount / 2.0",
    "properties.category + 'x'",
    "properties.amount in [1, 2]",
    "order.products.exists(p, 'bonus' in p.tags)",
    "properties.a.b.c.d > 1",
    "properties.tags[0] == 'a'",
    'properties.name == "a\\"b"',
    "properties > 1",
    "!has(properties.stars)",
    "properties.amount > 1e3",
    'properties.category < "m"',
    "size(properties.tags) > 0",
]
VALUES = [0, 1, 4, 50, 100, 300, 5000, 10.5, -1.5, math.inf, -math.inf, math.nan, True, False, None,
          "coffee", "tea", "launch", "", [1], {"score": 12}, {"APP_OPEN": 1}, {}]  # fmt: skip


def _cel(source: str, variables: dict) -> object:
    ctx = cel.Context()
    for name, value in variables.items():
        ctx.add_variable(name, value)
    try:
        return cel.compile(doubles(source)).execute(ctx)
    except Exception as exc:  # noqa: BLE001 - every CEL error counts as "no answer"
        return exc


ABSENT = object()
FEW = [ABSENT, 4, 3.5, "coffee", True, None, {"APP_OPEN": 1}]


def _activations():
    """properties / profile with fields absent or holding values of every type."""
    for amount, category, stars in itertools.product([ABSENT, *VALUES], FEW, FEW):
        fields = {"amount": amount, "category": category, "stars": stars, "channel": category}
        props = {k: v for k, v in fields.items() if v is not ABSENT}
        prof = {"lifetime_points": amount, "period_purchases": stars, "rfm": amount, "events_by_type": stars}
        prof = {k: v for k, v in prof.items() if v is not ABSENT}
        yield {"properties": jsonish(props), "profile": jsonish(prof)}
    yield {"properties": None, "profile": None}
    yield {"properties": [], "profile": "x"}


@pytest.mark.parametrize("source", SIMPLE)
def test_a_shortcut_answers_only_as_cel_does(source):
    fast = shortcut(doubles(source))
    assert fast is not None
    answered = 0
    for variables in _activations():
        got = fast(variables.get)
        if got is None:
            continue
        answered += 1
        expected = _cel(source, variables)
        assert type(got) is type(expected) and got == expected, (source, variables, got, expected)
    assert answered  # the common case (the field has the literal's type) is decided


@pytest.mark.parametrize("source", NOT_SIMPLE)
def test_other_rules_are_left_to_cel(source):
    fast = shortcut(doubles(source))
    assert fast is None or all(fast(v.get) is None for v in _activations())


def test_a_rule_decided_by_its_shortcut_converts_nothing_into_cel():
    binds = Bindings({"properties": lambda: {"amount": 120, "category": "coffee"}})
    assert compile_rule("properties.amount > 100 && properties.category == 'coffee'").test(binds)
    assert binds.added == set()
    assert compile_rule("properties.amount * 1 + (properties.amount > 100 ? 50 : 0)").amount(binds) == 170.0
    assert binds.added == set()
    # a rule CEL must run converts the same (jsonish) values and agrees
    assert compile_rule("double(size(properties.category)) + properties.amount").amount(binds) == 126.0
    assert binds.added == {"properties"}


def test_an_uncertain_shortcut_falls_back_to_cel_and_its_error():
    binds = Bindings({"properties": lambda: {"amount": "12"}})
    rule = compile_rule("properties.amount > 10")
    assert rule.test(binds) is False
    assert rule.test(Bindings({"properties": lambda: {}})) is False
    with pytest.raises(ValueError, match="missing field 'amount'"):
        rule.evaluate(Bindings({"properties": lambda: {}}))
