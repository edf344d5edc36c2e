"""The ``streamspace`` command: up, api, agent, migrate, users, tokens, images."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from streamspace import logs
from streamspace.cli_users import tokens_app, users_app
from streamspace.config import DEFAULT_DATA_DIR, AgentSettings, ApiSettings
from streamspace.files import private_dir
from streamspace.images.recipe import DEFAULT_TAG as DEFAULT_SESSION_IMAGE
from streamspace.images.server_recipe import DEFAULT_TAG as DEFAULT_SERVER_IMAGE
from streamspace.memory import tune_garbage_collection
from streamspace.protocol import PlatformName

app = typer.Typer(
    help="StreamSpace: desktop applications streamed into the browser.", no_args_is_help=True
)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
images_app = typer.Typer(
    help="Images: the docker platform's sessions, and StreamSpace itself.", no_args_is_help=True
)
app.add_typer(images_app, name="images")

HostOption = Annotated[str, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int, typer.Option(help="Port to listen on.")]


@app.command()
def up(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8080,
    data_dir: Annotated[Path, typer.Option(help="Where the database, keys and homes live.")] = (
        DEFAULT_DATA_DIR
    ),
) -> None:
    """Everything on one machine: API on SQLite, in-memory hub, a local agent."""
    from streamspace.embedded import run_embedded

    logs.configure()
    data_dir = private_dir(data_dir.expanduser())
    asyncio.run(run_embedded(host=host, port=port, data_dir=data_dir))


@app.command()
def api(host: HostOption = "0.0.0.0", port: PortOption = 8080) -> None:
    """One control-plane replica (configuration from the environment)."""
    import uvicorn

    from streamspace.controlplane.app import create_app

    logs.configure()
    settings = ApiSettings(api_port=port)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # VNC bytes are already compressed by their encodings; deflating them again in
        # Python costs ~4x the tunnel's throughput (browsers always offer it).
        ws_per_message_deflate=False,
    )


@app.command()
def agent(
    platform: Annotated[PlatformName, typer.Option(help="Where sessions run.")] = (
        PlatformName.LOCAL
    ),
) -> None:
    """One agent: dials out to CONTROL_PLANE_URL and runs the sessions it is sent."""
    from streamspace.agent.main import run_agent, until_signal
    from streamspace.agent.platforms import create_platform
    from streamspace.agent.platforms.base import PlatformError

    logs.configure()
    settings = AgentSettings()
    try:
        chosen = create_platform(platform, settings)
    except (ValueError, PlatformError) as exc:
        raise typer.BadParameter(str(exc)) from None
    tune_garbage_collection()
    asyncio.run(until_signal(lambda stop: run_agent(settings, chosen, stop)))


@app.command()
def migrate(
    action: Annotated[str, typer.Argument(help="upgrade or downgrade")] = "upgrade",
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply schema migrations to DATABASE_URL (``downgrade base`` removes everything)."""
    from streamspace.db.migrations import runner

    logs.configure()
    url = ApiSettings().database_url
    if action == "upgrade":
        runner.upgrade(url, revision)
    elif action == "downgrade":
        if revision == "head":
            raise typer.BadParameter("name the revision to downgrade to, e.g. 'base'")
        runner.downgrade(url, revision)
    else:
        raise typer.BadParameter("action must be 'upgrade' or 'downgrade'")
    typer.echo(f"{action} to {revision}: done")


class ImageName(StrEnum):
    """The images ``streamspace images build`` makes."""

    SESSION = "session"
    STREAMSPACE = "streamspace"


@images_app.command("build")
def images_build(
    image: Annotated[
        ImageName,
        typer.Option(help="session: the docker platform's sessions; streamspace: api and agent."),
    ] = ImageName.SESSION,
    tag: Annotated[
        str | None,
        typer.Option(
            help=f"Tag of the image (default: {DEFAULT_SESSION_IMAGE}, "
            f"or {DEFAULT_SERVER_IMAGE} for --image streamspace)."
        ),
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option(help="Repository to build --image streamspace from (default: this checkout)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the tag is up to date.")] = False,
) -> None:
    """Build an image from Debian packages (debootstrap + docker import), no registry needed."""
    from streamspace.images.builder import BuildError, build_session_image
    from streamspace.images.server_builder import build_server_image, default_source

    try:
        if image is ImageName.SESSION:
            if source is not None:
                raise BuildError("--source is for --image streamspace only")
            build_session_image(tag=tag or DEFAULT_SESSION_IMAGE, force=force)
            return
        source = source or default_source()
        if source is None:
            raise BuildError("this streamspace is not a checkout: name one with --source")
        build_server_image(source=source, tag=tag or DEFAULT_SERVER_IMAGE, force=force)
    except BuildError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
