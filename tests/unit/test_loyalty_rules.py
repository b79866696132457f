"""CEL rules with JSON number semantics."""

import pytest

from processors.loyalty.rules import (
    RuleError,
    compile_rule,
    doubles,
    fields_of,
    jsonish,
    reduce,
    validate,
)


def act(**properties):
    return {"properties": jsonish(properties)}


def test_documented_formula_works_verbatim():
    rule = compile_rule("properties.amount * 1 + (properties.amount > 100 ? 50 : 0)")
    assert rule.amount(act(amount=150)) == 200.0
    assert rule.amount(act(amount=80)) == 80.0


def test_int_literals_become_doubles_but_not_strings_or_indexes():
    assert doubles('tags[0] == "a 1" && x * 2 > 1.5') == 'tags[0] == "a 1" && x * 2.0 > 1.5'


def test_modulo_keeps_its_int_divisor_so_every_other_purchase_rules_work():
    rule = compile_rule("int(properties.n) % 2 == 1")
    assert rule.test(act(n=3)) and not rule.test(act(n=4))


def test_missing_property_makes_a_condition_false():
    assert compile_rule('properties.category == "electronics"').test(act()) is False
    assert compile_rule('properties.category == "electronics"').test(act(category="electronics"))


def test_formula_error_says_why():
    with pytest.raises(RuleError, match="missing field 'amount'"):
        compile_rule("properties.amount * 2").amount(act())
    with pytest.raises(RuleError, match="not a number"):
        compile_rule('"x"').amount(act())


def test_syntax_error_is_reported():
    assert "cannot compile" in validate("1 +")
    assert validate("profile.purchase_count > 0") is None


def test_only_referenced_variables_are_read():
    assert compile_rule("properties.amount > 0").variables == ("properties",)


def test_a_rule_without_variables_is_evaluated_once_at_compile_time():
    class NoContext(dict):
        def get(self, name, default=None):
            raise AssertionError("a constant rule must not read its activation")

    assert compile_rule("100").amount(NoContext()) == 100.0
    assert compile_rule("true").test(NoContext()) is True
    with pytest.raises(RuleError, match="not a number"):  # still checked at every use
        compile_rule("[1, 2]").amount(NoContext())


def test_only_the_profile_fields_rules_read_are_converted():
    rules = [
        "profile.rfm.score >= 12",
        "has(profile.events_by_type.APP_OPEN)",
        '"x" in profile.tags',
        'profile.name == "profile.secret"',
    ]
    fields = fields_of("profile", rules)
    assert fields == {
        "rfm": frozenset({"score"}),
        "events_by_type": frozenset({"APP_OPEN"}),
        "tags": None,
        "name": None,
    }
    profile = {"rfm": {"score": 12, "recency": 5}, "events_by_type": {}, "tags": ["x"], "a": 1}
    reduced = reduce(profile, fields)
    assert reduced == {"rfm": {"score": 12}, "events_by_type": {}, "tags": ["x"]}
    assert [compile_rule(r).test({"profile": jsonish(reduced)}) for r in rules[:3]] == [
        True,
        False,
        True,
    ]
    assert fields_of("profile", ["size(profile) > 0"]) is None


def test_program_rule_errors_name_the_rule():
    from processors.loyalty.validate import rule_errors
    from schemas.program import Program

    program = Program.model_validate(
        {"campaigns": [{"id": "ok", "formula": "1"}, {"id": "bad", "condition": "properties.amount >"}]}
    )
    (error,) = rule_errors(program)
    assert error.startswith("campaign bad condition: cannot compile")
