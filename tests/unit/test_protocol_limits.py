"""The bounds of templates and agent reports keep every command within the agent's frame limit."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from streamspace.bounds import (
    MAX_ARG_CHARS,
    MAX_COMMAND_ARGS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENV_VARS,
    MAX_JSON_BYTES,
    MAX_LAUNCH_BYTES,
    MAX_RESOURCE_CHARS,
    MAX_TS,
    launch_bytes,
)
from streamspace.controlplane.routes.schemas import TemplateIn
from streamspace.controlplane.sessions.specs import session_spec
from streamspace.db.models import Session, Template, User
from streamspace.protocol import (
    MAX_FRAME_BYTES,
    Action,
    Command,
    CommandPayload,
    CompletePayload,
    encode,
    parse_server_message,
)

NETWORK_BUDGET = 200
"""Bytes kept for template fields added later (e.g. the session's network mode)."""
WORST = "\x01"
"""The character that costs most once encoded: JSON escapes it as six bytes (``\\u0001``)."""


def _fits(fields: dict[str, Any]) -> bool:
    try:
        TemplateIn(name="x", display_name="x", **fields)
    except ValidationError:
        return False
    return True


def _largest_launch() -> dict[str, Any]:
    """``command``, ``env`` and ``resources`` of the costliest characters, up to the limit."""
    fields: dict[str, Any] = {
        "env": {"V" * 128: WORST * MAX_ENV_VALUE_CHARS},
        "resources": {"cpu": WORST * MAX_RESOURCE_CHARS},
        "command": [],
    }
    while _fits({**fields, "command": [*fields["command"], WORST * MAX_ARG_CHARS]}):
        fields["command"].append(WORST * MAX_ARG_CHARS)
    rest = max(
        n
        for n in range(MAX_ARG_CHARS)
        if _fits({**fields, "command": [*fields["command"], WORST * n]})
    )
    fields["command"].append(WORST * rest)
    return fields


def _largest_template() -> TemplateIn:
    return TemplateIn(
        name="t" * 128,
        display_name=WORST * 255,
        description=WORST * 4000,
        image=WORST * 512,
        vnc_port=65535,
        persistent_home=True,
        **_largest_launch(),
    )


def _command_frame(action: Action, payload: dict[str, Any]) -> str:
    """As the dispatcher sends it, with every identifier at its longest."""
    return encode(
        Command(
            id="i" * 64,
            ts=MAX_TS,
            payload=CommandPayload(
                command_id="c" * 128, action=action, session_id="s" * 128, payload=payload
            ),
        )
    )


def test_the_largest_template_makes_commands_within_the_frame_limit() -> None:
    template = _largest_template()
    largest = launch_bytes(template.command, template.env, template.resources)
    assert largest > MAX_LAUNCH_BYTES - 6, "one more character would still fit"
    spec = session_spec(
        Session(id="s" * 128, persistent_home=True),
        Template(**template.model_dump()),
        User(username=WORST * 128),
    )
    # A local session's state holds its spec: the largest one is still a valid report.
    local_state = {"spec": spec.model_dump(mode="json"), "pids": {"xvnc": 2**22, "app": 2**22}}
    CompletePayload(command_id="c", result={"vnc": {"host": "h", "port": 1}, "state": local_state})
    # The largest state an agent can report (and the control plane sends back on wake).
    state = CompletePayload(command_id="c", result={"state": {"k": "x" * (MAX_JSON_BYTES - 30)}})
    frames = [
        _command_frame(Action.START_SESSION, {"spec": spec.model_dump()}),
        _command_frame(
            Action.WAKE_SESSION, {"spec": spec.model_dump(), "state": state.result["state"]}
        ),
        _command_frame(Action.STOP_SESSION, {"state": state.result["state"], "keep_home": False}),
    ]
    for frame in frames:
        size = len(frame.encode())
        assert size <= MAX_FRAME_BYTES - NETWORK_BUDGET, size
        assert parse_server_message(frame).type == "command"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"env": {"V": "v" * (MAX_LAUNCH_BYTES // 2), "W": "w" * 1}}, "at most 1024 characters"),
        (
            {"command": ["a" * MAX_ARG_CHARS] * 16, "env": {"V": "v" * 1000}},
            f"at most {MAX_LAUNCH_BYTES} allowed",
        ),
        ({"command": ["x"] * (MAX_COMMAND_ARGS + 1)}, "at most 64 items"),
        ({"env": {f"V{i}": "" for i in range(MAX_ENV_VARS + 1)}}, "at most 64 items"),
        ({"env": {"BAD=NAME": "x"}}, "should match pattern"),
        ({"env": {"V": "nul\x00"}}, "NUL"),
        ({"resources": {"cpu": "1" * 65}}, "at most 64 characters"),
    ],
)
def test_templates_beyond_the_bounds_are_refused_in_words(
    fields: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValidationError, match=words):
        TemplateIn(name="x", display_name="x", **fields)
