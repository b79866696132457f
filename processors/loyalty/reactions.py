"""Webhook reactions: a campaign that fires calls a named webhook with its own payload.

The payload is a template: any string that is exactly `{{ expr }}` becomes the value of the CEL
expression (a number stays a number), and `{{ expr }}` inside a longer string is replaced by the
value's text. Expressions see the campaign's variables (`properties`, `event`, `profile`,
`customer`, `order`, `product`) and `campaign` ({id, amount, reward_id}). An expression that
fails renders as null (inside a string: empty) and is listed in the rule's `webhook.errors`.

The loyalty processor writes the rendered call as a Notification pinned to the webhook
(`endpoint_id`), so delivery signs, retries and dead-letters it like every webhook.
"""

from __future__ import annotations

import re
from typing import Any

from processors.loyalty.rules import Bindings, RuleError, compile_rule

EXPR = re.compile(r"\{\{(.*?)\}\}", re.S)


def expressions(template: Any) -> list[str]:
    """Every CEL expression of a payload template."""
    if isinstance(template, str):
        return [m.strip() for m in EXPR.findall(template)]
    if isinstance(template, dict):
        return [e for v in template.values() for e in expressions(v)]
    if isinstance(template, list):
        return [e for v in template for e in expressions(v)]
    return []


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def render(template: Any, act: Bindings, errors: list[str]) -> Any:
    """The payload with every `{{ expr }}` evaluated against `act`."""
    if isinstance(template, dict):
        return {k: render(v, act, errors) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, act, errors) for v in template]
    if not isinstance(template, str):
        return template
    whole = EXPR.fullmatch(template.strip())
    if whole and template.strip().count("{{") == 1:
        return _value(whole.group(1), act, errors)
    return EXPR.sub(lambda m: _text(_value(m.group(1), act, errors)), template)


def _value(source: str, act: Bindings, errors: list[str]) -> Any:
    try:
        return compile_rule(source.strip()).evaluate(act)
    except RuleError as exc:
        errors.append(str(exc))
        return None
