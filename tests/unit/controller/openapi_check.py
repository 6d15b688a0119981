"""Check an HTTP response against an OpenAPI 3.1 document (test helper).

# why not jsonschema: it is not a dependency of the project; the schemas
# pydantic/FastAPI emit use a small keyword set, validated here. An unknown
# constraint keyword fails loudly so that a schema change cannot make these
# checks pass vacuously.
"""

from __future__ import annotations

import re
from typing import Any

# Keywords that only annotate; they never constrain a value.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated"})
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), f"external $ref {ref!r}"
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _check_type(want: str, value: Any, where: str) -> None:
    ok = isinstance(value, _TYPES[want])
    if want in ("integer", "number") and isinstance(value, bool):
        ok = False
    assert ok, f"{where}: expected {want}, got {type(value).__name__} {value!r}"


def _check_object(doc: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> None:
    props = schema.get("properties", {})
    for name in schema.get("required", ()):
        assert name in value, f"{where}: missing required property {name!r}"
    for name, item in value.items():
        if name in props:
            validate(doc, props[name], item, f"{where}.{name}")
        elif schema.get("additionalProperties") is False:
            raise AssertionError(f"{where}: unexpected property {name!r}")


def _check_scalar(schema: dict[str, Any], value: Any, where: str) -> None:
    if "type" in schema:
        _check_type(schema["type"], value, where)
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} != {schema['const']!r}"
    if "pattern" in schema:
        assert re.search(schema["pattern"], value), f"{where}: {value!r} !~ {schema['pattern']}"
    if "minimum" in schema:
        assert value >= schema["minimum"], f"{where}: {value} < {schema['minimum']}"
    if "maximum" in schema:
        assert value <= schema["maximum"], f"{where}: {value} > {schema['maximum']}"
    if "exclusiveMaximum" in schema:
        assert value < schema["exclusiveMaximum"], f"{where}: {value} >= exclusiveMaximum"


def validate(doc: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> None:
    """Raise AssertionError naming the JSON path where ``value`` breaks ``schema``."""
    schema = _resolve(doc, schema)
    handled = {"type", "properties", "required", "additionalProperties", "items", "anyOf"}
    handled |= {"enum", "const", "pattern", "minimum", "maximum", "exclusiveMaximum"}
    unknown = set(schema) - handled - _ANNOTATIONS
    assert not unknown, f"{where}: schema keywords this checker does not know: {unknown}"
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                validate(doc, option, value, where)
                break
            except AssertionError as exc:
                errors.append(str(exc))
        else:
            raise AssertionError(f"{where}: matches no anyOf option: {errors}")
    _check_scalar(schema, value, where)
    if isinstance(value, dict) and ("properties" in schema or "required" in schema):
        _check_object(doc, schema, value, where)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(doc, schema["items"], item, f"{where}[{i}]")


def response_schema(
    doc: dict[str, Any], path: str, status: int, content_type: str
) -> dict[str, Any]:
    """The schema the document declares for ``GET path`` answering ``status``.

    Raises AssertionError if the path, the status or the media type is undeclared.
    """
    assert path in doc["paths"], f"{path} not in the OpenAPI document"
    responses = doc["paths"][path]["get"]["responses"]
    assert str(status) in responses, f"GET {path}: status {status} not declared"
    content = responses[str(status)].get("content", {})
    media = content_type.split(";")[0].strip()
    for declared, entry in content.items():
        if declared.split(";")[0].strip() == media:
            return dict(entry.get("schema", {}))
    raise AssertionError(f"GET {path} {status}: media type {media!r} not declared")
