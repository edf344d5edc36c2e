"""Where the agent's per-agent API key comes from: settings, the key file, or registration.

Registration trades the shared bootstrap key for a per-agent key, once; the key is kept in
``<agent_data_dir>/agent-key`` (mode 0600) so later runs never need the bootstrap key again.
Keys are never logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx

from streamspace.agent.connection import base_urls, http_url
from streamspace.config import AgentSettings
from streamspace.wire import AGENT_REGISTER_PATH

log = logging.getLogger(__name__)

KEY_FILE = "agent-key"


class AgentConfigError(RuntimeError):
    """The agent cannot get credentials; the message says what the operator should do."""


def key_path(settings: AgentSettings) -> Path:
    return settings.agent_data_dir / KEY_FILE


def save_key(path: Path, key: str) -> None:
    """Write ``key`` readable by the owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed


async def obtain_api_key(
    settings: AgentSettings, platform: str, *, transport: httpx.AsyncBaseTransport | None = None
) -> str:
    """The per-agent API key: explicit setting, else the saved key file, else register.

    ``transport`` replaces the network in tests (``httpx.MockTransport``).
    """
    if settings.agent_api_key:
        return settings.agent_api_key
    path = key_path(settings)
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key
        log.warning("key file %s is empty; ignoring it", path)
    if not settings.agent_bootstrap_key:
        raise AgentConfigError(
            "no agent credentials: set AGENT_API_KEY, or AGENT_BOOTSTRAP_KEY to register"
        )
    key = await register(settings, platform, transport=transport)
    save_key(path, key)
    log.info("saved the agent's API key to %s", path)
    return key


async def register(
    settings: AgentSettings,
    platform: str,
    *,
    http_timeout: float = 15.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """Register this agent with the bootstrap key; return the per-agent key (shown once)."""
    body = {
        "agent_id": settings.agent_id,
        "platform": platform,
        "capacity": settings.agent_capacity,
    }
    headers = {"Authorization": f"Bearer {settings.agent_bootstrap_key}"}
    last_error: Exception | None = None
    async with httpx.AsyncClient(timeout=http_timeout, transport=transport) as client:
        for base in base_urls(settings.control_plane_url):
            url = http_url(base, AGENT_REGISTER_PATH)
            try:
                response = await client.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("cannot register at %s: %s", url, exc)
                last_error = exc
                continue
            return _registered(settings.agent_id, response)
    raise AgentConfigError(f"could not reach the control plane to register: {last_error}")


def _registered(agent_id: str, response: httpx.Response) -> str:
    if response.status_code == 409:
        raise AgentConfigError(
            f"agent {agent_id!r} is already registered and approved: use its API key"
            " (AGENT_API_KEY)"
        )
    if response.status_code == 401:
        raise AgentConfigError("the control plane rejected AGENT_BOOTSTRAP_KEY")
    if response.status_code != 201:
        raise AgentConfigError(
            f"agent registration failed: HTTP {response.status_code} {response.text[:200]}"
        )
    try:
        data = response.json()
        key = str(data["api_key"])
        status = str(data.get("status", "unknown"))
    except (ValueError, KeyError, TypeError) as exc:
        raise AgentConfigError(f"unexpected registration response: {exc}") from None
    if status == "pending":
        log.warning("agent %s registered; pending approval by an administrator", agent_id)
    else:
        log.info("agent %s registered (%s)", agent_id, status)
    return key
