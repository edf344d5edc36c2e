"""SQLAlchemy models: the schema the migrations create (checked by the drift test)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator, Uuid

from streamspace.bounds import MAX_PROGRESS_TEXT


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on PostgreSQL (timestamptz) and SQLite (text) alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """Set while an administrator has disabled the account: no login, no token works."""
    must_change_password: Mapped[bool] = mapped_column(default=False, server_default=false())
    """After a reset: the user may only change their password (and log out) until they do."""


class AuthToken(Base):
    """A login token; only its SHA-256 is stored."""

    __tablename__ = "auth_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiToken(Base):
    """A personal API token (``ssp_…``) for automation: named, expiring, revocable; only its
    SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """Updated at most once a minute (authentication must stay a read)."""
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Agent(Base):
    __tablename__ = "agents"

    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="offline")
    """``online`` while connected to some replica, else ``offline``."""
    approval: Mapped[str] = mapped_column(String(16), default="pending")
    """``pending``, ``approved`` or ``revoked``."""
    api_key_hash: Mapped[str] = mapped_column(String(64))
    capacity: Mapped[int] = mapped_column(Integer, default=0)
    active_sessions: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[str | None] = mapped_column(String(64))
    replica: Mapped[str | None] = mapped_column(String(255))
    """The control-plane replica (POD_NAME) the agent is connected to."""
    last_heartbeat: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    leader_epoch: Mapped[int | None] = mapped_column(BigInteger)
    """Highest leader-election epoch seen in a hello; a lower one is a stale leader."""


class Template(Base):
    __tablename__ = "templates"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    image: Mapped[str] = mapped_column(String(512), default="")
    command: Mapped[list[str]] = mapped_column(Json, default=list)
    vnc_port: Mapped[int] = mapped_column(Integer, default=5900)
    resources: Mapped[dict[str, str]] = mapped_column(Json, default=dict)
    env: Mapped[dict[str, str]] = mapped_column(Json, default=dict)
    platform: Mapped[str | None] = mapped_column(String(32))
    """Restrict to agents of this platform; ``None`` = any."""
    persistent_home: Mapped[bool] = mapped_column(default=False)
    network: Mapped[str] = mapped_column(String(8), default="none", server_default="none")
    """``none``: sessions have no network (the secure default); ``host``: the host's."""
    # Lifecycle policies (``docs/policies.md``); ``None`` = the site default (``SESSION_*``).
    idle_timeout_minutes: Mapped[float | None] = mapped_column(Float)
    idle_action: Mapped[str | None] = mapped_column(String(16))
    """``hibernate`` or ``stop``: what an idle session gets."""
    max_age_minutes: Mapped[float | None] = mapped_column(Float)
    hibernated_retention_days: Mapped[float | None] = mapped_column(Float)
    retention_home: Mapped[str | None] = mapped_column(String(8))
    """``keep`` or ``remove``: the home of a session stopped after its retention."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_agent_state", "agent_id", "state"),
        Index("ix_sessions_state_activity", "state", "last_activity"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    template_name: Mapped[str] = mapped_column(String(128))
    agent_id: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    vnc_host: Mapped[str | None] = mapped_column(String(255))
    vnc_port: Mapped[int | None] = mapped_column(Integer)
    platform_state: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    persistent_home: Mapped[bool] = mapped_column(default=False)
    idle_timeout: Mapped[int | None] = mapped_column(Integer)
    """Seconds without viewer input before the idle policy acts (``None`` = never); the
    session's effective policy is fixed at launch, later template edits do not change it."""
    idle_action: Mapped[str | None] = mapped_column(String(16))
    """``hibernate`` or ``stop``: what the idle policy does."""
    stop_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """The maximum-age deadline: the session is stopped then, running or hibernated
    (``None`` = never)."""
    hibernated_retention: Mapped[int | None] = mapped_column(Integer)
    """Seconds a hibernated session is kept before it is stopped (``None`` = for ever)."""
    retention_home: Mapped[str | None] = mapped_column(String(8))
    """``keep`` or ``remove``: the home of a session stopped after its retention."""
    retain_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """Set when the session hibernates: the end of its retention."""
    last_activity: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """The last viewer input (key, pointer, clipboard), viewer arrival or departure, start,
    wake or *keep*; the idle timeout counts from it."""
    active_viewers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Open VNC tunnels to this session (counted by the replicas that hold the viewers)."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    terminated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    termination_reason: Mapped[str | None] = mapped_column(Text)
    status_message: Mapped[str | None] = mapped_column(String(MAX_PROGRESS_TEXT))
    """How far the latest start or wake got, in the agent's words (``pulling image ...``)."""
    max_age_seconds: Mapped[int | None] = mapped_column(Integer)
    """The longest the session may last from its creation (``None`` = no limit): the
    smaller of its template's (or the site's) maximum age and its owner's quota at its
    launch; ``stop_at`` is its deadline."""

    owner: Mapped[User] = relationship(lazy="raise", innerjoin=True)
    """Loaded by the queries that show sessions (``sessions.get(with_owner=True)``)."""


class Group(Base):
    """Users who share quotas and permissions; ``None`` limits mean the site default."""

    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    max_running_sessions: Mapped[int | None] = mapped_column(Integer)
    max_hibernated_sessions: Mapped[int | None] = mapped_column(Integer)
    max_session_minutes: Mapped[int | None] = mapped_column(Integer)
    allowed_templates: Mapped[list[str] | None] = mapped_column(Json)
    """Template names members may launch; ``None`` = all of them."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class AgentCommand(Base):
    """A command for an agent; the row is the truth, Redis only a doorbell."""

    __tablename__ = "agent_commands"
    __table_args__ = (
        Index("ix_agent_commands_agent_status", "agent_id", "status"),
        Index("ix_agent_commands_status_updated", "status", "updated_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    command_id: Mapped[str] = mapped_column(String(255), unique=True)
    agent_id: Mapped[str | None] = mapped_column(String(255))
    session_id: Mapped[str | None] = mapped_column(String(255), index=True)
    action: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any] | None] = mapped_column(Json)
    status: Mapped[str] = mapped_column(String(50), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(Json)
    reason: Mapped[str | None] = mapped_column(Text)
    """Why the control plane itself issued the command (a policy: ``idle 30 min``);
    ``None`` for a user's or an administrator's request."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.current_timestamp()
    )
    """Maintained by ``agent_commands_updated_at_trigger``; stale detection reads it."""


class VncToken(Base):
    """A single-use, short-lived ticket to open one VNC tunnel; only its SHA-256 is stored."""

    __tablename__ = "vnc_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SessionViewer(Base):
    """An open VNC tunnel to a session, held by the replica the browser reached.

    ``sessions.active_viewers`` counts these rows; keeping them per replica lets the
    survivors uncount the viewers of a replica that died with tunnels open.
    """

    __tablename__ = "session_viewers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    replica: Mapped[str] = mapped_column(String(255), index=True)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SessionEvent(Base):
    """Audit trail: one row per session state transition (listed with the ``audit_events``
    as ``session.transition``)."""

    __tablename__ = "session_events"
    __table_args__ = (Index("ix_session_events_created_id", "created_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` a user sent with a creating request and what that request
    made: a retry with the same key (on any replica, within a day) answers with it."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 of what was asked: the same key with another request is refused."""
    resource: Mapped[str] = mapped_column(String(16), default="session", server_default="session")
    """The kind of thing the request made: ``session``, ``template``, ``group``, ``user``,
    ``api_token``."""
    resource_id: Mapped[str] = mapped_column(String(255))
    """Its id (a session's or token's id; a template's or group's name; a user's id)."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class AuditEvent(Base):
    """Who did what, when, from where: one row per user, admin or system action.

    Session state transitions stay in ``session_events``; the audit listing reads both.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_created_id", "created_at", "id"),
        Index("ix_audit_events_target", "target_kind", "target_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor_id: Mapped[str | None] = mapped_column(String(36))
    """The user who acted; ``None`` for the system (policies, agents, the CLI)."""
    actor: Mapped[str] = mapped_column(String(128), index=True)
    """The user's name, or ``system``, or an agent's id."""
    action: Mapped[str] = mapped_column(String(64), index=True)
    """A dotted verb: ``auth.login``, ``session.launch``, ``template.update``..."""
    target_kind: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(255))
    address: Mapped[str | None] = mapped_column(String(64))
    """The client's address as the replica saw it (a trusted proxy's ``X-Forwarded-For``)."""
    detail: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    """A few small facts (never a secret)."""
