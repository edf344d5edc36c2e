"""Bounds of what agents report and templates carry, so one agent cannot break others and
no command can outgrow the agent protocol's frame limit (``MAX_FRAME_BYTES``).

Used by the agent protocol's models (:mod:`streamspace.protocol`) and the REST API's
template bodies, so the two cannot drift apart.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, TypeAdapter

MAX_COUNT = 100_000
"""Largest session count or capacity an agent may claim."""
MAX_TEXT = 4000
"""Longest free text (an error or exit reason), in characters."""
MAX_PROGRESS_TEXT = 500
"""Longest progress message of a starting session (``sessions.status_message``)."""
MAX_JSON_BYTES = 24 * 1024
"""Largest agent-reported JSON object (a command's result, a session's state), encoded: room
for a local session's state, which holds its whole spec (up to ~21 KiB)."""
MAX_JSON_DEPTH = 16
"""Deepest nesting of such an object."""
MAX_TS = 1e11
"""Latest plausible envelope timestamp (seconds since the epoch; year 5138)."""

MAX_COMMAND_ARGS = 64
MAX_ARG_CHARS = 8 * 1024
"""An argument may be a whole ``sh -c`` script; ``MAX_LAUNCH_BYTES`` bounds them together."""
MAX_ENV_VARS = 64
MAX_ENV_VALUE_CHARS = 1024
MAX_RESOURCES = 16
MAX_RESOURCE_CHARS = 64
MAX_LAUNCH_BYTES = 16 * 1024
"""Largest ``command`` + ``env`` + ``resources`` of a template, encoded as in a command frame
(with the other bounded fields, a start or wake command then fits in ``MAX_FRAME_BYTES``)."""

UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
"""NUL and lone surrogates: valid in a Python str, refused by PostgreSQL and UTF-8."""


def storable(text: str) -> str:
    """``text``, if it holds no NUL and no lone surrogate (else ValueError)."""
    if UNSTORABLE.search(text):
        raise ValueError("text contains a NUL character or a lone surrogate")
    return text


Reason = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(storable)]
"""Free text from an agent that is stored (no NUL, no lone surrogate)."""
ProgressText = Annotated[str, Field(max_length=MAX_PROGRESS_TEXT), AfterValidator(storable)]
"""How far a session's start got, in words, as shown with the session."""


def _check_json(value: object, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        storable(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        raise ValueError("integer out of the 64-bit range")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("number is not finite")


def _bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    _check_json(value)
    size = len(_json_bytes(value))
    if size > MAX_JSON_BYTES:
        raise ValueError(f"takes {size} bytes encoded; at most {MAX_JSON_BYTES} allowed")
    return value


BoundedJson = Annotated[dict[str, Any], AfterValidator(_bounded_json)]
"""A JSON object an agent reports, that the control plane stores and sends back later."""

_any_json: TypeAdapter[Any] = TypeAdapter(Any)


def _json_bytes(value: Any) -> bytes:
    return _any_json.dump_json(value)


def launch_bytes(command: list[str], env: dict[str, str], resources: dict[str, str]) -> int:
    """What a template's command, env and resources take in a command frame (at most)."""
    return len(_json_bytes([command, env, resources]))


def check_launch_size(command: list[str], env: dict[str, str], resources: dict[str, str]) -> None:
    """Refuse (ValueError, in words) a template whose command, env and resources together
    would not leave a start command within the frame limit."""
    size = launch_bytes(command, env, resources)
    if size > MAX_LAUNCH_BYTES:
        raise ValueError(
            f"command, env and resources take {size} bytes encoded; at most"
            f" {MAX_LAUNCH_BYTES} allowed"
        )


Arg = Annotated[str, Field(max_length=MAX_ARG_CHARS), AfterValidator(storable)]
EnvName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
EnvValue = Annotated[str, Field(max_length=MAX_ENV_VALUE_CHARS), AfterValidator(storable)]
ResourceName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_.-]*$")]
ResourceValue = Annotated[str, Field(max_length=MAX_RESOURCE_CHARS), AfterValidator(storable)]
