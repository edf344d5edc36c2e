"""``streamspace up``: the API on SQLite, the in-memory hub and a local agent, in one process.

The agent still dials in over a real WebSocket, exactly as a remote one would. Ctrl-C
stops the agent, ends its sessions (their processes are killed, the database says why),
then the API; nothing is left running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

import uvicorn
from rich.console import Console
from rich.panel import Panel

from streamspace.agent.main import run_agent
from streamspace.agent.platforms.local import LocalPlatform
from streamspace.agent.platforms.local_sandbox import SandboxUnavailable
from streamspace.config import AgentSettings, ApiSettings
from streamspace.controlplane.app import create_app
from streamspace.controlplane.auth.hashing import new_secret
from streamspace.controlplane.deps import provided
from streamspace.controlplane.metrics_server import QuietServer
from streamspace.controlplane.sessions.service import SessionService

log = logging.getLogger(__name__)
STARTUP_TIMEOUT = 60.0
PASSWORD_FILE = "initial-admin-password"


async def run_embedded(*, host: str, port: int, data_dir: Path) -> None:
    """Run until SIGINT/SIGTERM; ``data_dir`` must exist."""
    bootstrap_key = new_secret("ssb")
    settings = ApiSettings(
        database_url=os.environ.get("DATABASE_URL", f"sqlite:///{data_dir / 'streamspace.db'}"),
        agent_bootstrap_key=bootstrap_key,
        agent_auto_approve=True,
        api_port=port,
    )
    app = create_app(settings, announce_password=False)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        lifespan="on",
        forwarded_allow_ips=settings.forwarded_allow_ips,
        ws_per_message_deflate=False,  # VNC bytes: see ``streamspace api``
    )
    server = QuietServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    serving = asyncio.create_task(server.serve(), name="api")
    await _wait_started(server, serving)
    local_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    agent_settings = AgentSettings(
        control_plane_url=f"http://{local_host}:{port}",
        agent_bootstrap_key=bootstrap_key,
        agent_data_dir=data_dir / "agent",
    )
    try:
        platform = LocalPlatform.from_settings(agent_settings, hide=[data_dir])
    except SandboxUnavailable as exc:  # LOCAL_SANDBOX=bubblewrap on a machine without it
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        raise SystemExit(str(exc)) from None
    agent_stop = asyncio.Event()
    agent = asyncio.create_task(run_agent(agent_settings, platform, agent_stop), name="agent")
    _print_banner(
        settings,
        app.state.generated_admin_password,
        url=f"http://{local_host}:{port}",
        data_dir=data_dir,
    )

    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({stopping, serving, agent}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    log.info("shutting down: stopping the local agent and its sessions")
    agent_stop.set()
    await asyncio.gather(agent, return_exceptions=True)
    await _end_local_sessions(platform, provided(app, SessionService), agent_settings.agent_id)
    server.should_exit = True
    await asyncio.gather(serving, return_exceptions=True)


async def _wait_started(server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    async with asyncio.timeout(STARTUP_TIMEOUT):
        while not server.started:
            if serving.done():
                serving.result()
                raise SystemExit("the API stopped during start-up (is the port in use?)")
            await asyncio.sleep(0.05)


async def _end_local_sessions(
    platform: LocalPlatform, sessions: SessionService, agent_id: str
) -> None:
    for running in await platform.list_running():
        await platform.stop(running.state)
    ended = await sessions.end_agent_sessions(agent_id, reason="StreamSpace was shut down")
    if ended:
        log.info("ended %d session(s)", ended)


def _print_banner(
    settings: ApiSettings, generated: str | None, *, url: str, data_dir: Path
) -> None:
    """``generated``: the first admin's password if this start created it."""
    password_file = data_dir / PASSWORD_FILE
    if generated:
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generated + "\n")
        password = generated
    elif settings.streamspace_admin_password:
        password = "(from STREAMSPACE_ADMIN_PASSWORD)"
    elif password_file.exists():
        password = f"(printed on first start; kept in {password_file})"
    else:
        password = "(set on first start)"
    Console().print(
        Panel.fit(
            f"[bold]StreamSpace is running[/bold] at [link={url}]{url}[/link]\n"
            f"log in as [bold]admin[/bold], password: {password}\n"
            f"data: {data_dir}   host: {socket.gethostname()}\n"
            "Press Ctrl-C to stop everything.",
            title="streamspace up",
        )
    )
