"""Pure helpers of the admin API: JSON merge patch, secret masking and restoring, and the diff
between two programs (versions, audit entries).

Secrets are write-only: every program that leaves the admin API (GET, versions, diffs, audit) goes
through `mask`; a write that omits a secret or sends the masked value back keeps the stored one
(`restore_secrets`), so GET-edit-PUT never wipes or leaks a webhook secret.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "********"
# `${NAME}`: a reference the delivery service resolves from its environment at send time. Not a
# secret itself (it names one), so it is shown and kept in history as is.
SECRET_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
SECRET_SECTIONS = ("webhooks", "destinations")
# the list sections of a program and the field that identifies an item in each
ITEM_KEYS = {
    "event_types": "name",
    "rewards": "id",
    "campaigns": "id",
    "traits": "name",
    "audiences": "id",
    "journeys": "id",
    "webhooks": "id",
    "destinations": "id",
    "levels": "id",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, `null` removes a member, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def mask_value(secret: Any) -> Any:
    """A set literal secret -> MASK; unset ("") and `${NAME}` references are shown as they are."""
    if not isinstance(secret, str) or not secret or SECRET_REF.match(secret):
        return secret
    return MASK


def mask_endpoint(item: dict[str, Any]) -> dict[str, Any]:
    out = dict(item)
    if "secret" in out:
        out["secret"] = mask_value(out["secret"])
    if isinstance(out.get("previous_secrets"), list):
        out["previous_secrets"] = [mask_value(s) for s in out["previous_secrets"]]
    return out


def mask(program: dict[str, Any]) -> dict[str, Any]:
    """A program (JSON form) with every webhook and destination secret masked."""
    out = dict(program)
    for section in SECRET_SECTIONS:
        if isinstance(out.get(section), list):
            out[section] = [mask_endpoint(i) if isinstance(i, dict) else i for i in out[section]]
    return out


def restore_secrets(new: dict[str, Any], old: dict[str, Any]) -> list[tuple[str, str]]:
    """In place: a secret left out or sent as MASK takes the stored value of the endpoint with
    the same id. Returns (path, reason) for a MASK with nothing stored behind it."""
    problems: list[tuple[str, str]] = []
    for section in SECRET_SECTIONS:
        stored = {i.get("id"): i for i in old.get(section) or [] if isinstance(i, dict)}
        items = new.get(section)
        if not isinstance(items, list):
            continue
        for n, item in enumerate(items):
            if isinstance(item, dict):
                where = f"{section}.{n}"
                problems += _restore_endpoint(item, stored.get(item.get("id")) or {}, where)
    return problems


def _restore_endpoint(item: dict[str, Any], stored: dict[str, Any], where: str) -> list[tuple[str, str]]:
    problems = []
    if "secret" not in item or item["secret"] == MASK:
        if item.get("secret") == MASK and not stored.get("secret"):
            problems.append((f"{where}.secret", "masked value, but no secret is stored: send the secret"))
        item["secret"] = stored.get("secret", "")
    if "previous_secrets" not in item and "previous_secrets" in stored:
        item["previous_secrets"] = stored["previous_secrets"]
    elif isinstance(item.get("previous_secrets"), list):
        kept = stored.get("previous_secrets") or []
        for i, value in enumerate(item["previous_secrets"]):
            if value == MASK:
                if i >= len(kept):
                    problems.append((f"{where}.previous_secrets.{i}", "masked value, but none stored"))
                else:
                    item["previous_secrets"][i] = kept[i]
    return problems


def diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """Changed paths with before/after (absent = null). Lists of identified items (campaigns,
    webhooks, ...) are compared by id, so a reorder is no change and paths read `campaigns[spend]`."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[dict[str, Any]] = []
        for key in list(before) + [k for k in after if k not in before]:
            sub = f"{path}.{key}" if path else str(key)
            out += diff(before.get(key), after.get(key), sub)
        return out
    key = ITEM_KEYS.get(path.rsplit(".", 1)[-1])
    if key and _identified(before, key) and _identified(after, key):
        return _diff_items(before, after, path, key)
    return [{"path": path, "before": before, "after": after}]


def _identified(items: Any, key: str) -> bool:
    if not isinstance(items, list) or not all(isinstance(i, dict) and key in i for i in items):
        return False
    return len({str(i[key]) for i in items}) == len(items)


def _diff_items(before: list, after: list, path: str, key: str) -> list[dict[str, Any]]:
    old = {str(i[key]): i for i in before}
    new = {str(i[key]): i for i in after}
    out: list[dict[str, Any]] = []
    for ident in list(old) + [k for k in new if k not in old]:
        out += diff(old.get(ident), new.get(ident), f"{path}[{ident}]")
    return out


def masked_diff(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """The diff of two programs with secrets masked on both sides; a changed secret shows as a
    change from MASK to MASK (the fact, never the value)."""
    changes = diff(before, after)
    for change in changes:
        if _is_secret_path(change["path"]):
            change["before"] = _mask_any(change["before"])
            change["after"] = _mask_any(change["after"])
        else:
            change["before"] = _mask_items(change["path"], change["before"])
            change["after"] = _mask_items(change["path"], change["after"])
    return changes


def _is_secret_path(path: str) -> bool:
    return path.startswith(SECRET_SECTIONS) and path.rsplit(".", 1)[-1] in ("secret", "previous_secrets")


def _mask_any(value: Any) -> Any:
    return [mask_value(v) for v in value] if isinstance(value, list) else mask_value(value)


def _mask_items(path: str, value: Any) -> Any:
    """Whole endpoints (added or removed) or whole sections that hold secrets."""
    if not path.startswith(SECRET_SECTIONS):
        return mask(value) if isinstance(value, dict) and path == "" else value
    if isinstance(value, dict):
        return mask_endpoint(value)
    if isinstance(value, list):
        return [mask_endpoint(i) if isinstance(i, dict) else i for i in value]
    return value


def summary(changes: list[dict[str, Any]]) -> str:
    """One line for a version list: which items were added, removed or changed."""
    if not changes:
        return "no change"
    parts: dict[str, str] = {}
    for change in changes:
        item = _item_of(change["path"])
        if change["before"] is None and item == change["path"]:
            parts.setdefault(item, "added")
        elif change["after"] is None and item == change["path"]:
            parts.setdefault(item, "removed")
        else:
            parts.setdefault(item, "changed")
    text = ", ".join(f"{item} {what}" for item, what in list(parts.items())[:10])
    return text + (f" and {len(parts) - 10} more" if len(parts) > 10 else "")


def _item_of(path: str) -> str:
    """`campaigns[spend].formula` -> `campaigns[spend]`; `rounding` -> `rounding`."""
    end = path.find("]")
    return path[: end + 1] if end >= 0 else path.split(".", 1)[0]
