"""The ``streamspace`` command: up, api, agent, migrate, users, tokens, groups, images."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from streamspace import logs
from streamspace.cli_users import run_with_services, tokens_app, users_app
from streamspace.config import DEFAULT_DATA_DIR, AgentSettings, ApiSettings
from streamspace.files import private_dir
from streamspace.images.recipe import DEFAULT_TAG as DEFAULT_SESSION_IMAGE
from streamspace.images.server_recipe import DEFAULT_TAG as DEFAULT_SERVER_IMAGE
from streamspace.memory import tune_garbage_collection
from streamspace.protocol import PlatformName

if TYPE_CHECKING:
    from streamspace.controlplane.auth.groups import GroupService, GroupView

T = TypeVar("T")

app = typer.Typer(
    help="StreamSpace: desktop applications streamed into the browser.", no_args_is_help=True
)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
groups_app = typer.Typer(help="Manage groups of users and their quotas.", no_args_is_help=True)
app.add_typer(groups_app, name="groups")
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


def _with_groups(work: Callable[[GroupService], Awaitable[T]]) -> T:
    """Run ``work`` with the group service on DATABASE_URL; a refusal exits 1 in words."""
    return run_with_services(lambda services: work(services.groups))


def _describe(view: GroupView) -> str:
    group = view.group

    def limit(value: int | None) -> str:
        return "default" if value is None else str(value)

    allowed = group.allowed_templates
    templates = "all" if allowed is None else ",".join(allowed) or "(none)"
    return (
        f"{group.name}: running {limit(group.max_running_sessions)}, hibernated "
        f"{limit(group.max_hibernated_sessions)}, minutes {limit(group.max_session_minutes)}, "
        f"templates {templates}; members: {', '.join(view.members) or '(none)'}"
    )


def _limit(value: str | None) -> int | None:
    """A limit as typed: a number, or ``default`` (the site default applies)."""
    if value is None or value == "default":
        return None
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a number nor 'default'") from None


def _templates(value: str | None) -> list[str] | None:
    """Template names as typed: comma-separated, or ``all``."""
    if value is None or value == "all":
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise typer.BadParameter("name the templates (comma-separated), or 'all'")
    return names


LimitOption = Annotated[str | None, typer.Option(help="A number, or 'default' (the site's).")]
TemplatesOption = Annotated[
    str | None, typer.Option(help="Template names members may launch, comma-separated, or 'all'.")
]


@groups_app.command("create")
def groups_create(
    name: str,
    description: Annotated[str, typer.Option(help="What the group is for.")] = "",
    max_running: LimitOption = None,
    max_hibernated: LimitOption = None,
    max_minutes: LimitOption = None,
    templates: TemplatesOption = None,
) -> None:
    """Create a group (its limits default to the site's QUOTA_* settings)."""
    from streamspace.controlplane.routes.schemas import GroupIn

    fields: dict[str, Any] = {
        "name": name,
        "description": description,
        "max_running_sessions": _limit(max_running),
        "max_hibernated_sessions": _limit(max_hibernated),
        "max_session_minutes": _limit(max_minutes),
        "allowed_templates": _templates(templates),
    }

    async def create(groups: GroupService) -> GroupView:
        checked = GroupIn.model_validate(fields)
        return await groups.create(checked.name, checked.model_dump(exclude={"name"}))

    typer.echo(f"created group {_describe(_with_groups(create))}")


@groups_app.command("list")
def groups_list() -> None:
    """Every group with its limits and members."""

    async def listed(groups: GroupService) -> list[GroupView]:
        from streamspace.db.repo.pages import MAX_LIMIT, PageRequest

        found, cursor = [], None
        while True:
            page = await groups.list(PageRequest(MAX_LIMIT, cursor))
            found += page.items
            if page.next is None:
                return found
            cursor = page.next

    for view in _with_groups(listed):
        typer.echo(_describe(view))


@groups_app.command("set-quota")
def groups_set_quota(
    name: str,
    max_running: LimitOption = None,
    max_hibernated: LimitOption = None,
    max_minutes: LimitOption = None,
    templates: TemplatesOption = None,
) -> None:
    """Change the limits given; the others stay ('default' clears one, 'all' the templates)."""
    from streamspace.controlplane.routes.schemas import GroupPatch

    given = {
        "max_running_sessions": max_running,
        "max_hibernated_sessions": max_hibernated,
        "max_session_minutes": max_minutes,
    }
    fields: dict[str, Any] = {key: _limit(value) for key, value in given.items() if value}
    if templates is not None:
        fields["allowed_templates"] = _templates(templates)
    if not fields:
        raise typer.BadParameter("name at least one limit to change")

    async def update(groups: GroupService) -> GroupView:
        return await groups.update(name, GroupPatch.model_validate(fields).changes())

    typer.echo(f"updated group {_describe(_with_groups(update))}")


@groups_app.command("add-member")
def groups_add_member(name: str, username: str) -> None:
    """Make a user a member of a group."""

    async def add(groups: GroupService) -> GroupView:
        return await groups.add_member(name, username)

    typer.echo(f"group {_describe(_with_groups(add))}")


@groups_app.command("remove-member")
def groups_remove_member(name: str, username: str) -> None:
    """Take a user out of a group."""

    async def remove(groups: GroupService) -> GroupView:
        return await groups.remove_member(name, username)

    typer.echo(f"group {_describe(_with_groups(remove))}")


@groups_app.command("delete")
def groups_delete(name: str) -> None:
    """Delete a group (its members stay, without it)."""

    async def delete(groups: GroupService) -> None:
        await groups.delete(name)

    _with_groups(delete)
    typer.echo(f"deleted group {name!r}")


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
