"""The agent protocol: JSON text frames, one message per frame.

Every frame is an envelope ``{"type", "id", "ts", "payload"}``. The models below are the
only place the wire format is defined; both the control plane and the agent parse and
build frames through them, so a malformed frame is rejected in one place.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from streamspace.bounds import (
    MAX_COMMAND_ARGS,
    MAX_COUNT,
    MAX_ENV_VARS,
    MAX_RESOURCES,
    MAX_TEXT,
    MAX_TS,
    Arg,
    BoundedJson,
    EnvName,
    EnvValue,
    ProgressText,
    Reason,
    ResourceName,
    ResourceValue,
    check_launch_size,
    storable,
)

PROTOCOL_VERSION = 1
"""Sent by the agent in ``hello``; the control plane refuses versions it does not speak."""

MAX_FRAME_BYTES = 64 * 1024
"""Largest agent-protocol frame either side accepts."""
INVENTORY_PAGE_SESSIONS = 1000
"""Most sessions one frame of an agent's inventory (``hello`` or ``inventory``) lists."""
MAX_INVENTORY_FRAMES = 1000
"""Most frames one inventory takes, ``hello`` included (at most ``MAX_INVENTORY_FRAMES *
MAX_FRAME_BYTES`` buffered per connecting agent); its sessions are at most ``MAX_COUNT``."""

Identifier = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]


class CloseCode(IntEnum):
    """WebSocket close codes of the agent connection and the VNC tunnels (4xxx = ours).

    On a VNC tunnel: 4400 text frame (binary only), 4401 invalid/expired/reused token (or a
    bad agent/internal credential on the data sockets), 4404 session (or tunnel) not found,
    4409 session not running (:data:`SESSION_NOT_RUNNING`), 4502 agent unreachable or tunnel
    failed.
    """

    NORMAL = 1000
    GOING_AWAY = 1001
    INTERNAL_ERROR = 1011
    BAD_MESSAGE = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    HEARTBEAT_TIMEOUT = 4408
    REPLACED = 4409
    """The agent connected again; this older connection is closed."""
    STALE_LEADER = 4412
    TOO_LARGE = 4413
    UNSUPPORTED_VERSION = 4426
    TUNNEL_FAILED = 4502


SESSION_NOT_RUNNING = 4409
"""A VNC tunnel's close when its session is not (or no longer) running: the same number as
:attr:`CloseCode.REPLACED` on the agent connection (409 Conflict), another meaning."""


def close_reason(reason: str) -> str:
    """A close reason that fits a WebSocket close frame (123 bytes of UTF-8)."""
    return reason.encode()[:120].decode(errors="ignore")


class Action(StrEnum):
    """What a command asks an agent to do to a session."""

    START_SESSION = "start_session"
    STOP_SESSION = "stop_session"
    HIBERNATE_SESSION = "hibernate_session"
    WAKE_SESSION = "wake_session"


class PlatformName(StrEnum):
    """Where an agent runs sessions."""

    LOCAL = "local"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


UNIX_PREFIX = "unix:"
"""How a Unix-socket endpoint is written where a host name goes (``sessions.vnc_host``)."""


def _is_none(value: object) -> bool:
    return value is None


def _is_false(value: object) -> bool:
    return value is False


class VncEndpoint(_Strict):
    """Where a session's VNC server listens, as seen from the agent's host: TCP ``host`` and
    ``port`` (Docker), or the path of a Unix socket only the agent can open (``unix``, the
    local platform). Exactly one of the two forms; ``{"host", "port"}`` of older agents and
    control planes stays valid."""

    # The form not in use is left out when sent (``{"host", "port"}`` or ``{"unix"}``).
    host: str | None = Field(default=None, min_length=1, max_length=255, exclude_if=_is_none)
    port: int | None = Field(default=None, ge=1, le=65535, exclude_if=_is_none)
    unix: str | None = Field(
        default=None, min_length=2, max_length=255, pattern=r"^/", exclude_if=_is_none
    )

    @model_validator(mode="after")
    def _one_form(self) -> VncEndpoint:
        tcp = (self.host, self.port)
        if self.unix is None and None in tcp:
            raise ValueError("a VNC endpoint needs host and port, or unix")
        if self.unix is not None and tcp != (None, None):
            raise ValueError("a VNC endpoint is host and port, or unix, not both")
        return self

    def columns(self) -> tuple[str, int | None]:
        """The endpoint as the ``(vnc_host, vnc_port)`` columns of a session row."""
        if self.unix is not None:
            return UNIX_PREFIX + self.unix, None
        return str(self.host), self.port

    @classmethod
    def from_columns(cls, host: str | None, port: int | None) -> VncEndpoint | None:
        """The endpoint :meth:`columns` stored, or ``None`` when there is none (or it is
        invalid: a row is data, not a reason to fail a request)."""
        if not host:
            return None
        if host.startswith(UNIX_PREFIX):
            fields: dict[str, object] = {"unix": host.removeprefix(UNIX_PREFIX)}
        else:
            fields = {"host": host, "port": port}
        try:
            return cls.model_validate(fields)
        except ValidationError:
            return None

    def __str__(self) -> str:
        return f"unix:{self.unix}" if self.unix is not None else f"{self.host}:{self.port}"


class SessionSpec(_Strict):
    """Everything an agent needs to start (or wake) one session."""

    session_id: Identifier
    user: str = Field(min_length=1, max_length=128)
    template: str = Field(min_length=1, max_length=128)
    image: str = Field(default="", max_length=512)
    command: list[Arg] = Field(default_factory=list, max_length=MAX_COMMAND_ARGS)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=MAX_ENV_VARS)
    vnc_port: int = Field(default=5900, ge=1, le=65535)
    resources: dict[ResourceName, ResourceValue] = Field(
        default_factory=dict, max_length=MAX_RESOURCES
    )
    persistent_home: bool = False
    network: Literal["host", "none"] = "none"
    """``host``: the session shares the host's network; ``none``: it has no network at all
    (the default; specs of older control planes carry no such field)."""

    @model_validator(mode="after")
    def _fits_a_frame(self) -> SessionSpec:
        check_launch_size(self.command, self.env, self.resources)
        return self


class RunningSession(_Strict):
    """A session an agent is running, as reported in ``hello``."""

    session_id: Identifier
    vnc: VncEndpoint | None = None
    state: BoundedJson = Field(default_factory=dict)


# --- payloads, agent -> control plane -------------------------------------------------


class HelloPayload(_Strict):
    v: int = Field(ge=0, le=1_000_000)
    agent_id: Identifier
    platform: PlatformName
    version: Annotated[str, Field(max_length=64), AfterValidator(storable)]
    capacity: int = Field(ge=0, le=MAX_COUNT)
    sessions: list[RunningSession] = Field(default_factory=list, max_length=INVENTORY_PAGE_SESSIONS)
    """The first page of the sessions the agent runs."""
    leader_epoch: int | None = Field(default=None, ge=1, le=2**63 - 1)
    """Fencing token of a replica elected by leader election (``None``: no election)."""
    more: bool = Field(default=False, exclude_if=_is_false)
    """``inventory`` frames with the rest of the sessions follow (left out when ``False``,
    so a hello whose sessions fit one frame is the same as before inventories existed)."""


class InventoryPayload(_Strict):
    """One further page of the sessions an agent runs, right after its ``hello``."""

    seq: int = Field(ge=1, le=MAX_INVENTORY_FRAMES - 1)
    """1 for the first page after the hello, then consecutive."""
    sessions: list[RunningSession] = Field(max_length=INVENTORY_PAGE_SESSIONS)
    last: bool
    """The inventory is complete with this page."""


class HeartbeatPayload(_Strict):
    active_sessions: int = Field(ge=0, le=MAX_COUNT)
    capacity: int = Field(ge=0, le=MAX_COUNT)


class AckPayload(_Strict):
    command_id: Identifier


class CompletePayload(_Strict):
    command_id: Identifier
    result: BoundedJson = Field(default_factory=dict)


class FailedPayload(_Strict):
    command_id: Identifier
    error: Reason
    retryable: bool = False


class StatusPayload(_Strict):
    session_id: Identifier
    state: Literal["exited"]
    reason: Reason


class ProgressPayload(_Strict):
    """How far a slow start or wake got (``scheduled``, ``pulling image``, ``started``,
    ``ready``), for the session to show while it is not running yet."""

    session_id: Identifier
    stage: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z ]*$")
    message: ProgressText


# --- payloads, control plane -> agent -------------------------------------------------


class WelcomePayload(_Strict):
    replica: str = Field(max_length=255)
    heartbeat_interval: float = Field(gt=0, le=86_400, allow_inf_nan=False)


class CommandPayload(_Strict):
    command_id: Identifier
    action: Action
    session_id: Identifier
    payload: dict[str, Any] = Field(default_factory=dict)


class TunnelPayload(_Strict):
    """Open a VNC tunnel: dial ``WS /api/v1/agents/tunnels/<tunnel_id>`` back to the replica
    that sent this, connect to the session's VNC server and carry bytes both ways until
    either side ends.

    ``vnc`` is what the control plane has on record, for older agents and for logs: an agent
    connects to the endpoint *it* recorded for the session, never to an address it is sent
    (a compromised control plane must not make it open arbitrary sockets)."""

    tunnel_id: Identifier
    session_id: Identifier
    vnc: VncEndpoint | None = None


class ErrorPayload(_Strict):
    code: str = Field(max_length=64)
    message: str = Field(max_length=MAX_TEXT)
    ref: str | None = Field(default=None, max_length=64)
    """The ``id`` of the message this error answers, when there is one."""


class Parcel(BaseModel):
    """A command handed over with a doorbell (``pod:<POD_NAME>:commands``, as JSON): its
    creator already marked it ``sent``, so the agent's replica sends it without claiming it."""

    model_config = ConfigDict(frozen=True)

    agent_id: str
    id: uuid.UUID
    command_id: str
    session_id: str | None
    action: Action
    payload: dict[str, Any]
    created_at: Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str)]


# --- envelopes --------------------------------------------------------------------------


def _new_id() -> str:
    return uuid.uuid4().hex


class _Envelope(_Strict):
    id: str = Field(
        default_factory=_new_id, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$"
    )
    ts: float = Field(default_factory=time.time, ge=0, le=MAX_TS, allow_inf_nan=False)


class Hello(_Envelope):
    type: Literal["hello"] = "hello"
    payload: HelloPayload


class Inventory(_Envelope):
    type: Literal["inventory"] = "inventory"
    payload: InventoryPayload


class Heartbeat(_Envelope):
    type: Literal["heartbeat"] = "heartbeat"
    payload: HeartbeatPayload


class Ack(_Envelope):
    type: Literal["ack"] = "ack"
    payload: AckPayload


class Complete(_Envelope):
    type: Literal["complete"] = "complete"
    payload: CompletePayload


class Failed(_Envelope):
    type: Literal["failed"] = "failed"
    payload: FailedPayload


class Status(_Envelope):
    type: Literal["status"] = "status"
    payload: StatusPayload


class Progress(_Envelope):
    type: Literal["progress"] = "progress"
    payload: ProgressPayload


class Welcome(_Envelope):
    type: Literal["welcome"] = "welcome"
    payload: WelcomePayload


class Command(_Envelope):
    type: Literal["command"] = "command"
    payload: CommandPayload


class Tunnel(_Envelope):
    type: Literal["tunnel"] = "tunnel"
    payload: TunnelPayload


class Error(_Envelope):
    type: Literal["error"] = "error"
    payload: ErrorPayload


AgentMessage = Annotated[
    Hello | Inventory | Heartbeat | Ack | Complete | Failed | Status | Progress,
    Field(discriminator="type"),
]
"""Any message an agent may send."""

ServerMessage = Annotated[Welcome | Command | Tunnel | Error, Field(discriminator="type")]
"""Any message the control plane may send."""

_agent_messages: TypeAdapter[AgentMessage] = TypeAdapter(AgentMessage)
_server_messages: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


class ProtocolError(ValueError):
    """A frame that is not a valid message; ``close_code`` says how to end the connection."""

    def __init__(self, message: str, *, close_code: CloseCode = CloseCode.BAD_MESSAGE) -> None:
        super().__init__(message)
        self.close_code = close_code


def _check_size(frame: str | bytes) -> None:
    try:
        size = len(frame.encode() if isinstance(frame, str) else frame)
    except UnicodeEncodeError:
        raise ProtocolError("frame is not valid UTF-8 text") from None
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(
            f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
            close_code=CloseCode.TOO_LARGE,
        )


def _describe(error: ValidationError) -> str:
    """The first problem, in words; clipped, since names and values in it are the sender's."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "message"
    if first["type"] == "json_invalid":
        return "frame is not valid JSON"
    if first["type"] == "union_tag_invalid":
        return (
            f"unknown message type: {_clip(repr(first['input'].get('type')))}"
            if isinstance(first["input"], dict)
            else "unknown message type"
        )
    if first["type"] == "union_tag_not_found":
        return "message has no 'type'"
    return f"invalid message at {_clip(where)}: {_clip(first['msg'])}"


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_agent_message(frame: str | bytes) -> AgentMessage:
    """Parse one frame sent by an agent, or raise :class:`ProtocolError`."""
    _check_size(frame)
    try:
        return _agent_messages.validate_json(frame)
    except ValidationError as exc:
        raise ProtocolError(_describe(exc)) from None


def parse_server_message(frame: str | bytes) -> ServerMessage:
    """Parse one frame sent by the control plane, or raise :class:`ProtocolError`."""
    _check_size(frame)
    try:
        return _server_messages.validate_json(frame)
    except ValidationError as exc:
        raise ProtocolError(_describe(exc)) from None


def encode(message: BaseModel) -> str:
    """Serialize a message as one JSON text frame."""
    return message.model_dump_json()
