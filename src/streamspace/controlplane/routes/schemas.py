"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from streamspace.bounds import (
    MAX_COMMAND_ARGS,
    MAX_ENV_VARS,
    MAX_RESOURCES,
    Arg,
    EnvName,
    EnvValue,
    ResourceName,
    ResourceValue,
    check_launch_size,
)
from streamspace.config import MAX_POLICY_MINUTES
from streamspace.controlplane.auth.api_tokens import DEFAULT_DAYS, MAX_DAYS
from streamspace.controlplane.auth.groups import GroupView
from streamspace.controlplane.auth.passwords import (
    MAX_PASSWORD,
    MAX_USERNAME,
    MIN_PASSWORD,
    USERNAME,
)
from streamspace.controlplane.routes import text
from streamspace.controlplane.sessions.quotas import Quota
from streamspace.db.models import AgentCommand, Session, User
from streamspace.protocol import VncEndpoint
from streamspace.states import SessionState, UserRole

Name = Field(min_length=1, max_length=128, pattern=r"^[a-z0-9][a-z0-9_.-]*$")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=text.document_no_nul)

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value: object) -> object:
        character = text.unstorable(value)
        if character is not None:
            raise PydanticCustomError(text.ERROR_TYPE, text.MESSAGE, {"character": character})
        return value


class LoginIn(_Input):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    username: str
    role: str
    disabled: bool
    """Disabled by an administrator: no login, no token works."""
    must_change_password: bool
    """After a reset: only ``POST auth/password`` (and ``me``, ``logout``) work until done."""
    created_at: datetime
    disabled_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            username=user.username,
            role=user.role,
            disabled=user.disabled_at is not None,
            must_change_password=user.must_change_password,
            created_at=user.created_at,
            disabled_at=user.disabled_at,
        )


class LoginOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    user: UserOut
    must_change_password: bool
    """The token is good for ``POST auth/password`` only until the password is changed."""


Role = Literal["admin", "user"]


class UserIn(_Input):
    username: str = Field(min_length=1, max_length=MAX_USERNAME, pattern=f"^{USERNAME.pattern}$")
    role: Role = "user"
    password: str | None = Field(default=None, min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)
    """Omitted: one is generated, answered once, and must be changed at the first login."""
    must_change_password: StrictBool | None = None
    """Whether the first login must change the password (default: only a generated one)."""


class UserCreatedOut(UserOut):
    password: str | None = None
    """The generated password, shown this once (``null`` when one was given)."""


class RoleIn(_Input):
    role: Role


class PasswordResetIn(_Input):
    password: str | None = Field(default=None, min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)
    """The temporary password; omitted: one is generated and answered once."""


class PasswordResetOut(BaseModel):
    user: UserOut
    password: str | None = None
    """The generated temporary password, shown this once (``null`` when one was given)."""


class PasswordChangeIn(_Input):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)


class ApiTokenIn(_Input):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    """What the token is for (shown in the list)."""
    expires_in_days: int = Field(default=DEFAULT_DAYS, ge=1, le=MAX_DAYS)


class ApiTokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    """Within a minute: uses are recorded at most once a minute."""
    revoked_at: datetime | None


class ApiTokenCreatedOut(ApiTokenOut):
    token: str | None
    """The token (``ssp_…``), shown this once: use it as ``Authorization: Bearer …``
    (``null`` in the answer to a retry with the same ``Idempotency-Key``)."""


class TemplateIn(_Input):
    name: str = Name
    display_name: str = Field(min_length=1, max_length=255)
    description: str = Field(default="", max_length=4000)
    image: str = Field(default="", max_length=512)
    command: list[Arg] = Field(default_factory=list, max_length=MAX_COMMAND_ARGS)
    vnc_port: int = Field(default=5900, ge=1, le=65535)
    resources: dict[ResourceName, ResourceValue] = Field(
        default_factory=dict, max_length=MAX_RESOURCES
    )
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=MAX_ENV_VARS)
    platform: str | None = Field(default=None, pattern=r"^(local|docker|kubernetes)$")
    persistent_home: StrictBool = False
    """Strict: ``0`` is not a boolean."""
    network: Literal["host", "none"] = "none"
    """``none``: the session has no network (local sandbox); ``host``: the host's network."""
    # Lifecycle policies (docs/policies.md); ``None`` = the site default (``SESSION_*``).
    idle_timeout_minutes: float | None = Field(default=None, gt=0, le=MAX_POLICY_MINUTES)
    """Minutes without viewer input before ``idle_action`` (fractions allowed, >= 1 s)."""
    idle_action: Literal["hibernate", "stop"] | None = None
    max_age_minutes: float | None = Field(default=None, gt=0, le=MAX_POLICY_MINUTES)
    """Minutes after its launch a session is stopped, however active (hibernated too)."""
    hibernated_retention_days: float | None = Field(
        default=None, gt=0, le=MAX_POLICY_MINUTES / 1440
    )
    """Days a hibernated session is kept before it is stopped."""
    retention_home: Literal["keep", "remove"] | None = None
    """Whether a session stopped after its retention keeps its home."""

    @model_validator(mode="after")
    def _fits_a_command(self) -> TemplateIn:
        """Bounded as the agent protocol's ``SessionSpec`` is, so a saved template always
        makes a start command within the agent's frame limit (422 here, never sent)."""
        check_launch_size(self.command, self.env, self.resources)
        return self


class TemplateOut(TemplateIn):
    model_config = ConfigDict(from_attributes=True, extra="ignore")


class SessionIn(_Input):
    template: str = Field(min_length=1, max_length=128)


class SessionOut(BaseModel):
    id: str
    owner: str
    template: str
    agent_id: str | None
    state: str
    vnc: VncEndpoint | None
    persistent_home: bool
    termination_reason: str | None
    status_message: str | None = None
    """How far a start or wake under way got, in the agent's words (``pulling image ...``)."""
    created_at: datetime
    updated_at: datetime
    last_activity: datetime | None
    active_viewers: int = 0
    """Open VNC tunnels (viewers) to the session."""
    idle_action: str | None = None
    """What the idle policy does (``hibernate`` or ``stop``) once ``idle_deadline`` passes."""
    idle_deadline: datetime | None = None
    """A running session's idle deadline: ``last_activity`` plus its idle timeout."""
    idle_warning_at: datetime | None = None
    """From when a viewer warns of ``idle_deadline`` (``SESSION_IDLE_WARNING_MINUTES``)."""
    stop_at: datetime | None = None
    """The maximum-age deadline: the session is stopped then (running or hibernated)."""
    retain_until: datetime | None = None
    """A hibernated session is stopped then (its retention)."""
    max_age_seconds: int | None = None
    """The longest the session may last from ``created_at``: the smaller of its template's
    maximum age and its owner's quota at launch (``stop_at`` is the deadline)."""

    @classmethod
    def of(cls, session: Session, *, viewer: User, warning: float = 0) -> SessionOut:
        """The session as ``viewer`` may see it: its VNC address is a diagnostic for
        administrators only (everyone else connects through the tunnel). ``warning``:
        seconds before the idle deadline the viewer warns."""
        vnc = None
        running = session.state == SessionState.RUNNING
        if viewer.role == UserRole.ADMIN and running:
            vnc = VncEndpoint.from_columns(session.vnc_host, session.vnc_port)
        idle_deadline, idle_warning_at = _idle_deadlines(session, warning)
        return cls(
            id=session.id,
            owner=session.owner.username,
            template=session.template_name,
            agent_id=session.agent_id,
            state=session.state,
            vnc=vnc,
            persistent_home=session.persistent_home,
            termination_reason=session.termination_reason,
            status_message=session.status_message,
            created_at=session.created_at,
            updated_at=session.updated_at,
            last_activity=session.last_activity,
            active_viewers=session.active_viewers or 0,
            max_age_seconds=session.max_age_seconds,
            idle_action=session.idle_action if session.idle_timeout is not None else None,
            idle_deadline=idle_deadline,
            idle_warning_at=idle_warning_at,
            stop_at=session.stop_at,
            retain_until=session.retain_until if session.state == SessionState.HIBERNATED else None,
        )


def _idle_deadlines(session: Session, warning: float) -> tuple[datetime | None, datetime | None]:
    """A running session's idle deadline, and from when a viewer warns of it (``warning``
    seconds before, but not before its last activity); ``None`` without an idle timeout."""
    last = session.last_activity
    if session.state != SessionState.RUNNING or session.idle_timeout is None or last is None:
        return None, None
    deadline = last + timedelta(seconds=session.idle_timeout)
    return deadline, max(last, deadline - timedelta(seconds=warning))


class SessionEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_state: str | None
    to_state: str
    detail: str | None
    created_at: datetime


class AuditEventOut(BaseModel):
    """One event of the audit log: an action, or a session's state transition."""

    model_config = ConfigDict(from_attributes=True)

    source: Literal["audit", "transition"]
    """``audit``: an action someone took; ``transition``: a session changed state."""
    id: int
    """Unique within its ``source``."""
    created_at: datetime
    actor: str
    """A username, an agent's id, or ``system``."""
    actor_id: str | None
    action: str
    target_kind: str | None
    target_id: str | None
    address: str | None
    """The client's address (for actions taken over HTTP)."""
    detail: dict[str, Any]


class AgentRegisterIn(_Input):
    agent_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    platform: str = Field(pattern=r"^(local|docker|kubernetes)$")
    capacity: int = Field(default=10, ge=0, le=100_000)


class AgentKeyOut(BaseModel):
    agent_id: str
    api_key: str
    status: str
    """Approval status: ``approved`` or ``pending``."""


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    agent_id: str
    platform: str
    status: str
    approval: str
    capacity: int
    active_sessions: int
    version: str | None
    replica: str | None
    last_heartbeat: datetime | None
    created_at: datetime


class CommandOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    command_id: str
    agent_id: str | None
    session_id: str | None
    action: str
    status: str
    attempts: int
    payload: dict[str, Any] | None
    result: dict[str, Any] | None
    error_message: str | None
    reason: str | None = None
    """Why the control plane issued the command itself (a policy: ``idle 30 min``)."""
    created_at: datetime
    sent_at: datetime | None
    acknowledged_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, command: AgentCommand) -> CommandOut:
        return cls.model_validate(command)


MAX_ALLOWED_TEMPLATES = 1000
TemplateName = Annotated[str, Name]
SessionLimit = Annotated[StrictInt, Field(ge=0, le=100_000)]
"""Strict: ``"2"`` and ``true`` are not numbers of sessions."""
Minutes = Annotated[StrictInt, Field(ge=1, le=10_000_000)]


class GroupLimitsIn(_Input):
    """A group's quota; a limit left ``null`` is the site default's (``QUOTA_*``)."""

    max_running_sessions: SessionLimit | None = None
    """Sessions a member may have starting, running or waking at once."""
    max_hibernated_sessions: SessionLimit | None = None
    """Hibernated sessions a member may keep."""
    max_session_minutes: Minutes | None = None
    """The longest a member's session may last."""
    allowed_templates: list[TemplateName] | None = Field(
        default=None, max_length=MAX_ALLOWED_TEMPLATES
    )
    """The templates members may launch; ``null``: all."""


class GroupIn(GroupLimitsIn):
    name: str = Name
    description: str = Field(default="", max_length=4000)


class GroupPatch(GroupLimitsIn):
    """The fields to change; those left out stay as they are, ``null`` clears a limit."""

    description: str | None = Field(default=None, max_length=4000)

    def changes(self) -> dict[str, Any]:
        """The fields the request named (a ``null`` description is the empty one)."""
        changed = self.model_dump(include=self.model_fields_set)
        if "description" in changed and changed["description"] is None:
            changed["description"] = ""
        return changed


class GroupOut(BaseModel):
    name: str
    description: str
    max_running_sessions: int | None
    max_hibernated_sessions: int | None
    max_session_minutes: int | None
    allowed_templates: list[str] | None
    members: list[str]
    """Usernames, sorted."""
    created_at: datetime

    @classmethod
    def of(cls, view: GroupView) -> GroupOut:
        group = view.group
        return cls(
            name=group.name,
            description=group.description,
            max_running_sessions=group.max_running_sessions,
            max_hibernated_sessions=group.max_hibernated_sessions,
            max_session_minutes=group.max_session_minutes,
            allowed_templates=group.allowed_templates,
            members=view.members,
            created_at=group.created_at,
        )


class QuotaOut(BaseModel):
    """A user's effective limits (``null``: none) and what they hold now."""

    groups: list[str]
    running_sessions: int
    """Sessions starting, running or waking."""
    hibernated_sessions: int
    """Sessions hibernating or hibernated."""
    max_running_sessions: int | None
    max_hibernated_sessions: int | None
    max_session_minutes: int | None
    allowed_templates: list[str] | None
    """Templates the user may launch; ``null``: all."""

    @classmethod
    def of(cls, quota: Quota) -> QuotaOut:
        limits = quota.limits
        allowed = limits.allowed_templates
        return cls(
            groups=quota.groups,
            running_sessions=quota.running,
            hibernated_sessions=quota.hibernated,
            max_running_sessions=limits.max_running_sessions,
            max_hibernated_sessions=limits.max_hibernated_sessions,
            max_session_minutes=limits.max_session_minutes,
            allowed_templates=None if allowed is None else sorted(allowed),
        )
