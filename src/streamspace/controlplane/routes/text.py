"""Text the database can store: request text holding NUL or a lone surrogate is refused (422).

PostgreSQL text cannot hold NUL, and a lone surrogate (JSON's ``"\\ud800"``) is not Unicode,
so it can be neither stored nor sent back. Bodies are checked by their models (``_Input`` in
``schemas``); path and query parameters by the router dependency :func:`storable_url`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from streamspace.bounds import UNSTORABLE

ERROR_TYPE = "unstorable_text"
MESSAGE = "contains {character}: text may hold neither NUL nor lone surrogates"
"""The error's words; ``character`` is the escape of the character found (``\\x00``)."""
NO_NUL_PATTERN = "^[^\\u0000]*$"
"""How a JSON schema says it (JSON schema strings exclude lone surrogates already)."""


def unstorable(value: object) -> str | None:
    """The escape of the first unstorable character in a string, a list, or a dict's keys
    and values; ``None`` when there is none."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            found = UNSTORABLE.search(item)
            if found:
                return found.group().encode("unicode_escape").decode()
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def document_no_nul(schema: dict[str, Any]) -> None:
    """Say in a model's JSON schema, for every string in it, that NUL is refused (lone
    surrogates are not Unicode, so JSON schema strings exclude them already)."""
    pending = list(schema.get("properties", {}).values())
    while pending:
        item = pending.pop()
        _key_pattern_as_property_names(item)
        if item.get("type") == "string" and "pattern" not in item and "enum" not in item:
            item["pattern"] = NO_NUL_PATTERN
        if isinstance(item.get("additionalProperties"), dict):
            item.setdefault("propertyNames", {"pattern": NO_NUL_PATTERN})
        for key in ("items", "additionalProperties"):
            if isinstance(item.get(key), dict):
                pending.append(item[key])
        pending.extend(item.get("anyOf", ()))


def _key_pattern_as_property_names(item: dict[str, Any]) -> None:
    """Pydantic says "keys match this pattern" as ``patternProperties``, which leaves keys that
    do not match unconstrained; the model refuses them, so say so: the pattern goes to
    ``propertyNames`` and its value schema to ``additionalProperties``."""
    patterns = item.get("patternProperties")
    if not isinstance(patterns, dict) or len(patterns) != 1:
        return
    ((pattern, values),) = patterns.items()
    del item["patternProperties"]
    item["propertyNames"] = {**item.get("propertyNames", {}), "pattern": pattern}
    item["additionalProperties"] = values


async def storable_url(request: Request) -> None:
    """Refuse path and query parameters holding NUL (``%00``) with 422."""
    params = [("path", name, value) for name, value in request.path_params.items()]
    params += [("query", name, value) for name, value in request.query_params.multi_items()]
    for where, name, value in params:
        character = unstorable(value)
        if character is not None:
            raise RequestValidationError(
                [
                    {
                        "type": ERROR_TYPE,
                        "loc": (where, name),
                        "msg": MESSAGE.format(character=character),
                        "input": None,
                    }
                ]
            )
