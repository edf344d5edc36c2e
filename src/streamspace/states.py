"""Session states, command statuses, agent and user states, and which command moves a session
where. The values are those of the database and of the API."""

from __future__ import annotations

from enum import StrEnum

from streamspace.protocol import Action


class SessionState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    HIBERNATING = "hibernating"
    HIBERNATED = "hibernated"
    WAKING = "waking"
    TERMINATED = "terminated"
    FAILED = "failed"


class CommandStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class AgentApproval(StrEnum):
    """Whether an agent may connect: an administrator approves (or revokes) a registration."""

    PENDING = "pending"
    APPROVED = "approved"
    REVOKED = "revoked"


class AgentStatus(StrEnum):
    """``online`` while connected to some replica."""

    ONLINE = "online"
    OFFLINE = "offline"


class IdleAction(StrEnum):
    """What the idle policy does to a session nobody uses."""

    HIBERNATE = "hibernate"
    STOP = "stop"


class RetentionHome(StrEnum):
    """Whether a session stopped after its hibernated retention keeps its home."""

    KEEP = "keep"
    REMOVE = "remove"


class PolicyReason(StrEnum):
    """Which lifecycle policy acted (the ``reason`` label of its metric)."""

    IDLE = "idle"
    MAX_AGE = "max_age"
    RETENTION = "retention"


class UserRole(StrEnum):
    ADMIN = "admin"
    USER = "user"


ACTIVE_SESSION_STATES = frozenset(
    {
        SessionState.PENDING,
        SessionState.RUNNING,
        SessionState.STOPPING,
        SessionState.HIBERNATING,
        SessionState.WAKING,
    }
)
"""States in which a session occupies a slot of its agent's capacity."""

TRANSITIONAL_SESSION_STATES = frozenset(
    {
        SessionState.PENDING,
        SessionState.STOPPING,
        SessionState.HIBERNATING,
        SessionState.WAKING,
    }
)
"""States that only an open command moves on; without one a session is stuck."""

FINAL_SESSION_STATES = frozenset({SessionState.TERMINATED, SessionState.FAILED})

OPEN_COMMAND_STATUSES = frozenset(
    {CommandStatus.PENDING, CommandStatus.SENT, CommandStatus.ACKNOWLEDGED}
)
"""Statuses of a command that has not reached an outcome yet."""

STATE_DURING = {
    Action.START_SESSION: SessionState.PENDING,
    Action.STOP_SESSION: SessionState.STOPPING,
    Action.HIBERNATE_SESSION: SessionState.HIBERNATING,
    Action.WAKE_SESSION: SessionState.WAKING,
}
"""The session's state while a command of this action is open."""

STATE_AFTER = {
    Action.START_SESSION: SessionState.RUNNING,
    Action.STOP_SESSION: SessionState.TERMINATED,
    Action.HIBERNATE_SESSION: SessionState.HIBERNATED,
    Action.WAKE_SESSION: SessionState.RUNNING,
}
"""The session's state once a command of this action completed."""
