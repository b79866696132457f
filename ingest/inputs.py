"""The input rules (schemas/inputs.py, shared with the router and the producer helper) as
ingest applies them to whole request bodies, and as /openapi.json publishes them.
"""

from __future__ import annotations

from typing import Any

from ingest.errors import ApiError
from schemas.inputs import (  # noqa: F401 - re-exported: ingest's name for the shared rules
    CONTROL,
    INT64_MAX,
    INT64_MIN,
    JSON_OBJECT_MARK,
    MAX_AMOUNT,
    NO_CONTROL_PATTERN,
    exact,
    problems,
    suspect,
)


def refuse(raw: bytes, prefix: str = "") -> None:
    """422 naming every offending field of a suspect body; nothing to do for a clean one."""
    if suspect(raw) and (found := problems(exact(raw), prefix)):
        raise ApiError(422, "request body holds a control character or an out-of-range integer",
                       fields=found)  # fmt: skip


# The same rules for free-form objects (properties, metadata, customer), in /openapi.json.
# Models mark such a field with JSON_OBJECT_MARK (pydantic cannot emit an outside $ref);
# with_json_refs swaps the marks for the reference once the spec is built.
JSON_VALUE_REF = {"$ref": "#/components/schemas/JsonValue"}
JSON_OBJECT_REF = {"$ref": "#/components/schemas/JsonObject"}
JSON_SCHEMAS = {
    "JsonObject": {
        "type": "object",
        "description": "Free-form JSON: no control characters in keys or strings, numbers within int64.",
        "propertyNames": {"pattern": NO_CONTROL_PATTERN},
        "additionalProperties": JSON_VALUE_REF,
    },
    "JsonValue": {
        "anyOf": [
            {"type": "string", "pattern": NO_CONTROL_PATTERN},
            {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
            {"type": "number", "minimum": -9.2e18, "maximum": 9.2e18},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "array", "items": JSON_VALUE_REF},
            JSON_OBJECT_REF,
        ]
    },
}


def schema_ref(name: str) -> dict[str, Any]:
    """A mark for a dict field that /openapi.json shows as the component `name` (a model the
    spec holds anyway), for a body validated by hand where pydantic would need the model."""
    return {"type": "object", "x-schema-ref": name}


def with_json_refs(node: Any) -> Any:
    """The spec with every JSON_OBJECT_MARK replaced by a reference to JsonObject, and every
    schema_ref mark by a reference to its component."""
    if isinstance(node, dict):
        if name := node.get("x-schema-ref"):
            return {"$ref": f"#/components/schemas/{name}"}
        if node.get("x-json-object"):
            extra = {k: v for k, v in node.items() if k not in JSON_OBJECT_MARK}
            return {"allOf": [JSON_OBJECT_REF], **extra} if extra else dict(JSON_OBJECT_REF)
        return {k: with_json_refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [with_json_refs(v) for v in node]
    return node
