"""``streamspace users …`` and ``streamspace tokens …``: user administration and personal
API tokens from the command line, on ``DATABASE_URL``, through the same services as the
REST API (:mod:`streamspace.controlplane.standalone`)."""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from streamspace.config import ApiSettings

users_app = typer.Typer(help="Manage local users.", no_args_is_help=True)
tokens_app = typer.Typer(help="Personal API tokens (ssp_…) of a user.", no_args_is_help=True)

T = TypeVar("T")
Username = Annotated[str, typer.Argument(help="The user's name.")]
UserOption = Annotated[str, typer.Option("--user", help="Whose tokens.")]
if TYPE_CHECKING:
    from streamspace.controlplane.standalone import Standalone


def run_with_services(work: Callable[[Standalone], Awaitable[T]]) -> T:
    """Migrate ``DATABASE_URL``, run ``work`` with the services; a refusal (or a value the
    services refuse) is one line on stderr and exit code 1."""
    from pydantic import ValidationError

    from streamspace.controlplane.errors import ServiceError
    from streamspace.controlplane.standalone import standalone
    from streamspace.db.migrations.runner import upgrade

    settings = ApiSettings()
    upgrade(settings.database_url)

    async def run() -> T:
        async with standalone(settings) as services:
            return await work(services)

    try:
        return asyncio.run(run())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.echo(f"error: {problems}", err=True)
    except (ServiceError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


def _state(disabled: bool, must_change: bool) -> str:
    if disabled:
        return "disabled"
    return "must change password" if must_change else "enabled"


@users_app.command("list")
def users_list(
    search: Annotated[str | None, typer.Option(help="Only names containing this.")] = None,
) -> None:
    """Every user (or those matching --search): name, role, state, created."""

    async def work(services: Standalone) -> None:
        cursor = None
        while True:
            page = await services.users.list(search=search, cursor=cursor, limit=500)
            for user in page.items:
                state = _state(user.disabled_at is not None, user.must_change_password)
                created = user.created_at.strftime("%Y-%m-%d %H:%M")
                typer.echo(f"{user.username}\t{user.role}\t{state}\t{created}")
            if page.next is None:
                return
            cursor = page.next

    run_with_services(work)


@users_app.command("create")
def users_create(
    username: Username,
    role: Annotated[str, typer.Option(help="admin or user")] = "user",
    password: Annotated[
        str | None,
        typer.Option(
            help="Prompted for when omitted (never echoed), or STREAMSPACE_USER_PASSWORD."
        ),
    ] = None,
    generate: Annotated[
        bool, typer.Option(help="Generate a temporary password (shown once, changed at login).")
    ] = False,
    must_change: Annotated[
        bool | None,
        typer.Option(
            help="Whether the first login must change the password (default: only a generated one)."
        ),
    ] = None,
) -> None:
    """Create a local user in DATABASE_URL."""
    secret = None
    if not generate:
        secret = password or os.environ.get("STREAMSPACE_USER_PASSWORD") or getpass.getpass()

    async def work(services: Standalone) -> str | None:
        made = await services.users.create(
            username=username, password=secret, role=role, must_change_password=must_change
        )
        return made.password

    generated = run_with_services(work)
    typer.echo(f"created {role} {username!r}")
    if generated:
        typer.echo(f"temporary password (shown once, to be changed at login): {generated}")


@users_app.command("set-role")
def users_set_role(
    username: Username, role: Annotated[str, typer.Argument(help="admin or user")]
) -> None:
    """Make a user an administrator or an ordinary user (never the last administrator)."""
    run_with_services(lambda services: services.users.set_role(None, username, role))
    typer.echo(f"{username!r} is now {role}")


@users_app.command("disable")
def users_disable(username: Username) -> None:
    """Disable a user: no more logins, tokens refused, active sessions stopped."""
    run_with_services(lambda services: services.users.disable(None, username))
    typer.echo(f"disabled {username!r}")


@users_app.command("enable")
def users_enable(username: Username) -> None:
    """Enable a disabled user again."""
    run_with_services(lambda services: services.users.enable(username))
    typer.echo(f"enabled {username!r}")


@users_app.command("delete")
def users_delete(
    username: Username,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a user: their sessions are stopped (hibernated ones too, homes removed)."""
    if not yes:
        typer.confirm(f"Delete user {username!r} and stop all their sessions?", abort=True)
    run_with_services(lambda services: services.users.delete(None, username))
    typer.echo(f"deleted {username!r}")


@users_app.command("reset-password")
def users_reset_password(
    username: Username,
    password: Annotated[
        str | None, typer.Option(help="The temporary password (default: a generated one).")
    ] = None,
) -> None:
    """Set a temporary password the user must change at their next login (logs them out)."""
    done = run_with_services(
        lambda services: services.users.reset_password(None, username, password)
    )
    typer.echo(f"reset the password of {username!r}; it must be changed at the next login")
    if done.password:
        typer.echo(f"temporary password (shown once): {done.password}")


@tokens_app.command("create")
def tokens_create(
    user: UserOption,
    name: Annotated[str, typer.Option(help="What the token is for.")],
    days: Annotated[int, typer.Option(help="Days until it expires (1..365).")] = 90,
) -> None:
    """Make a personal API token for a user; it is printed this once."""

    async def work(services: Standalone) -> str:
        owner = await services.users.get(user)
        made = await services.api_tokens.create(owner, name=name, days=days)
        return f"{made.token.id}\t{made.secret}"

    typer.echo(run_with_services(work))


@tokens_app.command("list")
def tokens_list(user: UserOption) -> None:
    """A user's tokens: id, name, expiry, last use, revoked (never the tokens themselves)."""

    async def work(services: Standalone) -> None:
        owner = await services.users.get(user)
        for token in await services.api_tokens.list(owner):
            revoked = f"revoked {token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else ""
            used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never used"
            expires = f"expires {token.expires_at:%Y-%m-%d %H:%M}"
            typer.echo(f"{token.id}\t{token.name}\t{expires}\t{used}\t{revoked}".rstrip())

    run_with_services(work)


@tokens_app.command("revoke")
def tokens_revoke(
    user: UserOption, token_id: Annotated[str, typer.Argument(help="The token's id.")]
) -> None:
    """Revoke one of a user's tokens."""

    async def work(services: Standalone) -> None:
        owner = await services.users.get(user)
        await services.api_tokens.revoke(owner, token_id)

    run_with_services(work)
    typer.echo(f"revoked token {token_id}")
