"""Check an HTTP response against an OpenAPI 3.1 document (test helper).

OpenAPI 3.1 schemas are JSON Schema 2020-12, so the `jsonschema` library
validates them; `$ref`s into ``#/components/schemas`` resolve against the
document's components, embedded into the schema's root.
"""

from __future__ import annotations

from typing import Any

import jsonschema


def validate(doc: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "") -> None:
    """Raise AssertionError naming `where` if `value` does not conform to `schema`."""
    root = {**schema, "components": doc.get("components", {})}
    validator = jsonschema.Draft202012Validator(root)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        at = "/".join(str(p) for p in first.absolute_path)
        raise AssertionError(f"{where} at /{at}: {first.message}")


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
