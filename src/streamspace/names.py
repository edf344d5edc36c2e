"""Redis key names and pub/sub channels, defined once (operators type these; keep the seed's)."""

from __future__ import annotations


def agent_pod_key(agent_id: str) -> str:
    """``agent:<id>:pod``: the POD_NAME of the replica the agent is connected to."""
    return f"agent:{agent_id}:pod"


def agent_connected_key(agent_id: str) -> str:
    """``agent:<id>:connected``: the id of the agent's current connection."""
    return f"agent:{agent_id}:connected"


def pod_commands_channel(pod: str) -> str:
    """``pod:<POD_NAME>:commands``: the doorbell channel of one replica."""
    return f"pod:{pod}:commands"


TUNNEL_CUTS_CHANNEL = "tunnels:cuts"
"""Every replica listens here: close an agent's or a session's open tunnels now (a JSON cut)."""


def pod_alive_key(pod: str) -> str:
    """``pod:<POD_NAME>:alive``: present while the replica is running."""
    return f"pod:{pod}:alive"


def pod_address_key(pod: str) -> str:
    """``pod:<POD_NAME>:address``: the replica's internal base URL (VNC tunnel relays)."""
    return f"pod:{pod}:address"


def agent_leader_key(agent_id: str) -> str:
    """``agent:<id>:leader``: the lease of the agent's leader replica (its random token)."""
    return f"agent:{agent_id}:leader"


def agent_leader_epoch_key(agent_id: str) -> str:
    """``agent:<id>:leader:epoch``: the fencing counter, incremented by every acquisition."""
    return f"agent:{agent_id}:leader:epoch"


def login_failures_key(subject: str) -> str:
    """``login:<subject>:failures``: failed logins of ``user:<name>`` or ``address:<ip>``."""
    return f"login:{subject}:failures"


def login_lock_key(subject: str) -> str:
    """``login:<subject>:locked``: present (with its TTL) while the subject is locked out."""
    return f"login:{subject}:locked"


TOKENS_REVOKED_CHANNEL = "tokens:revoked"
"""Pub/sub channel of revocations: a token's digest (logout, API token revoked), or
``user:<id>`` (every token of that user: disabled, deleted, role or password changed).
Replicas drop their cached copies."""

_REVOKED_USER = "user:"


def revoked_user_message(user_id: str) -> str:
    """The ``tokens:revoked`` message that drops every cached token of one user."""
    return f"{_REVOKED_USER}{user_id}"


def revoked_user(message: str) -> str | None:
    """The user id of a ``user:<id>`` revocation; ``None`` for a token digest."""
    return message.removeprefix(_REVOKED_USER) if message.startswith(_REVOKED_USER) else None
