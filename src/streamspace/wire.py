"""Where the WebSockets between agents, replicas and browsers live, and the headers they carry:
written once here for both ends (the frames themselves are in :mod:`streamspace.protocol`).

Paths are FastAPI templates; a dialling side fills them with :meth:`str.format`.
"""

from __future__ import annotations

from collections.abc import Mapping

AGENT_CONNECT_PATH = "/api/v1/agents/connect"
"""An agent's control socket."""
AGENT_REGISTER_PATH = "/api/v1/agents/register"
"""Where an agent enrols with a bootstrap token (HTTP)."""
AGENT_TUNNEL_PATH = "/api/v1/agents/tunnels/{tunnel_id}"
"""An agent's data socket for one VNC tunnel (agent credentials, like the control socket)."""
VIEWER_TUNNEL_PATH = "/api/v1/sessions/{session_id}/vnc"
"""A browser's VNC tunnel (``?token=`` from ``POST /api/v1/sessions/{id}/connect``)."""
INTERNAL_TUNNEL_PATH = "/api/v1/internal/tunnels/{session_id}"
"""A replica relaying a viewer to the replica that holds the session's agent."""
INTERNAL_AGENT_TUNNEL_PATH = "/api/v1/internal/agent-tunnels/{tunnel_id}"
"""A replica forwarding an agent's data socket to the replica holding its control socket."""

AGENT_ID_HEADER = "X-Agent-ID"
"""The agent's id, beside its key (and, on a forwarded data socket, the agent that the
forwarding replica authenticated)."""
AUTHORIZATION_HEADER = "Authorization"
"""``Bearer <agent API key>``."""
INTERNAL_SECRET_HEADER = "X-Internal-Secret"
"""The deployment's ``INTERNAL_SECRET``, between replicas."""


def agent_headers(agent_id: str, api_key: str) -> dict[str, str]:
    """The headers an agent authenticates with on its control and data sockets."""
    return {AUTHORIZATION_HEADER: f"Bearer {api_key}", AGENT_ID_HEADER: agent_id}


def agent_credentials(headers: Mapping[str, str]) -> tuple[str, str | None]:
    """The agent id and the bearer key (``None`` unless ``Bearer``) a peer presented;
    ``headers`` looks names up case-insensitively, like Starlette's."""
    agent_id = headers.get(AGENT_ID_HEADER.lower(), "")
    scheme, _, key = headers.get(AUTHORIZATION_HEADER.lower(), "").partition(" ")
    return agent_id, key if scheme.lower() == "bearer" else None
