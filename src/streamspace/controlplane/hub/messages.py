"""What travels between replicas through the hub besides registrations: doorbells and cuts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from streamspace.protocol import Parcel


@dataclass(frozen=True)
class Ring:
    """A doorbell heard for an agent connected here: it has commands waiting, and ``parcel``
    is the one the ringer handed over with the doorbell, if any."""

    agent_id: str
    parcel: Parcel | None = None


@dataclass(frozen=True)
class Cut:
    """End, on every replica, what an agent or a session has open: an agent's control
    connection and VNC tunnels (``agent_id``), or a session's VNC tunnels (``session_id``);
    each is closed with ``code`` and ``reason``."""

    code: int
    reason: str
    agent_id: str | None = None
    session_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Cut:
        """Raises ValueError for anything but a cut as ``to_json`` writes it."""
        if not isinstance(data, dict) or set(data) != {"code", "reason", "agent_id", "session_id"}:
            raise ValueError("not a cut")
        names = (data["agent_id"], data["session_id"])
        if (
            not isinstance(data["code"], int)
            or not isinstance(data["reason"], str)
            or not all(name is None or isinstance(name, str) for name in names)
        ):
            raise ValueError("not a cut")
        return cls(**data)
