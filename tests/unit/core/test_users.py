"""User administration and personal API tokens, in process on a migrated SQLite database:
the services the REST API, the UI and the CLI share, with the real session service, token
cache and tunnel registry behind them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from streamspace.config import ApiSettings
from streamspace.controlplane.audit import AuditLog
from streamspace.controlplane.auth.api_tokens import ApiTokenService
from streamspace.controlplane.auth.login_tokens import TokenCache
from streamspace.controlplane.auth.logins import LoginService
from streamspace.controlplane.auth.throttle import MemoryLoginThrottle, Policy
from streamspace.controlplane.auth.users import UserService
from streamspace.controlplane.commands.reconciler import Reconciler
from streamspace.controlplane.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from streamspace.controlplane.hub import AgentHub
from streamspace.controlplane.sessions.service import SessionService
from streamspace.controlplane.tunnels.endpoints import Closed
from streamspace.controlplane.tunnels.registry import TunnelRegistry
from streamspace.db.engine import SessionFactory
from streamspace.db.models import AgentCommand, ApiToken, Session, User, utcnow
from streamspace.protocol import SESSION_NOT_RUNNING
from streamspace.states import SessionState
from tests.unit.core.conftest import AGENT, HubProbe

PASSWORD = "first-pass-word"
ADDRESS = "192.0.2.10"


class _NoLaunches:
    async def hand_off(self, agent_id: str, command: AgentCommand) -> None:
        raise AssertionError("these tests launch nothing")


@dataclass
class Users:
    """The services as the app factory wires them, and the database behind them."""

    db: SessionFactory
    users: UserService
    logins: LoginService
    api_tokens: ApiTokenService
    tunnels: TunnelRegistry[object]

    async def add(self, username: str, role: str = "user") -> User:
        return (await self.users.create(username=username, password=PASSWORD, role=role)).user

    async def login(self, username: str, password: str = PASSWORD) -> str:
        return (await self.logins.login(username, password, address=ADDRESS)).token

    async def session(self, owner: User, state: SessionState) -> str:
        async with self.db() as db, db.begin():
            row = Session(
                owner_id=owner.id,
                template_name="desktop",
                agent_id=AGENT,
                state=state.value,
                platform_state={"pid": 1},
            )
            db.add(row)
        return row.id

    async def state(self, session_id: str) -> str | None:
        async with self.db() as db:
            row = await db.get(Session, session_id)
        return None if row is None else row.state

    async def stops(self, session_id: str) -> list[AgentCommand]:
        async with self.db() as db:
            query = select(AgentCommand).where(
                AgentCommand.session_id == session_id, AgentCommand.action == "stop_session"
            )
            return list((await db.scalars(query)).all())


@pytest.fixture
def env(migrated_db: SessionFactory, settings: ApiSettings, hub: AgentHub) -> Iterator[Users]:
    tokens = TokenCache()
    audit = AuditLog(db=migrated_db)
    sessions = SessionService(
        db=migrated_db,
        settings=settings,
        ring=hub.ring,
        direct=_NoLaunches(),
        cut=hub.cut,
        audit=audit,
    )
    tunnels: TunnelRegistry[object] = TunnelRegistry()
    hub.on_cut(tunnels.cut)
    api_tokens = ApiTokenService(db=migrated_db, tokens=tokens)
    throttle = MemoryLoginThrottle(Policy(per_user=5, per_address=50, base=1.0, cap=8.0))
    yield Users(
        db=migrated_db,
        users=UserService(db=migrated_db, tokens=tokens, sessions=sessions, audit=audit),
        logins=LoginService(
            db=migrated_db,
            settings=settings,
            throttle=throttle,
            tokens=tokens,
            api_tokens=api_tokens,
            audit=audit,
        ),
        api_tokens=api_tokens,
        tunnels=tunnels,
    )


# --- create and list ---------------------------------------------------------------------


async def test_a_generated_password_is_shown_once_and_must_be_changed(env: Users) -> None:
    made = await env.users.create(username="gen", password=None, role="user")
    assert made.password is not None and len(made.password) >= 16
    assert made.user.must_change_password
    chosen = await env.users.create(username="chosen", password=PASSWORD, role="admin")
    assert chosen.password is None and not chosen.user.must_change_password
    done = await env.logins.login("gen", made.password, address=ADDRESS)
    assert done.user.must_change_password


@pytest.mark.parametrize(
    ("username", "password", "words"),
    [
        ("ok-name", "short", "at least 8 characters"),
        ("ok-name", "x" * 257, "at most 256 characters"),
        ("-dash-first", PASSWORD, "invalid username"),
        ("has space", PASSWORD, "invalid username"),
        ("x" * 129, PASSWORD, "invalid username"),
    ],
)
async def test_names_and_passwords_follow_the_rules_in_words(
    env: Users, username: str, password: str, words: str
) -> None:
    with pytest.raises(Invalid, match=words):
        await env.users.create(username=username, password=password, role="user")


async def test_a_taken_name_and_an_unknown_role_are_refused(env: Users) -> None:
    await env.add("taken")
    with pytest.raises(Conflict, match="already exists"):
        await env.add("taken")
    with pytest.raises(Invalid, match="role must be one of"):
        await env.users.create(username="root", password=PASSWORD, role="root")


async def test_pages_follow_the_username_and_inserts_do_not_shift_them(env: Users) -> None:
    for name in ("bob", "dave", "erin", "alice", "carol", "frank", "grace"):
        await env.add(name)
    first = await env.users.list(search=None, cursor=None, limit=3)
    assert [u.username for u in first.items] == ["alice", "bob", "carol"]
    assert first.next is not None
    await env.add("aaron")  # lands on a page already read: the next page does not move
    second = await env.users.list(search=None, cursor=first.next, limit=3)
    assert [u.username for u in second.items] == ["dave", "erin", "frank"]
    last = await env.users.list(search=None, cursor=second.next, limit=3)
    assert [u.username for u in last.items] == ["grace"]
    assert last.next is None
    exact = await env.users.list(search=None, cursor=None, limit=8)
    assert len(exact.items) == 8 and exact.next is None  # no empty page after it


async def test_search_is_a_case_blind_substring_with_no_wildcards(env: Users) -> None:
    for name in ("Alice.Smith", "malice", "bob", "al_x", "alyx"):
        await env.add(name)
    found = await env.users.list(search="ALI", cursor=None, limit=100)
    assert [u.username for u in found.items] == ["Alice.Smith", "malice"]
    underscore = await env.users.list(search="l_", cursor=None, limit=100)
    assert [u.username for u in underscore.items] == ["al_x"]
    with pytest.raises(Invalid, match="cursor"):
        await env.users.list(search=None, cursor="bm90LWEtbGlzdA", limit=10)


# --- the last administrator and one's own account ----------------------------------------


async def test_nobody_removes_the_last_admin_or_their_own_account(env: Users) -> None:
    root = await env.add("root", "admin")
    other = await env.add("other")
    for attempt in (
        env.users.disable(root, "root"),
        env.users.delete(root, "root"),
        env.users.set_role(root, "root", "user"),
    ):
        with pytest.raises(Conflict, match="your own account"):
            await attempt
    for attempt in (
        env.users.disable(None, "root"),  # the command line: no actor, still the last
        env.users.delete(None, "root"),
        env.users.set_role(None, "root", "user"),
    ):
        with pytest.raises(Conflict, match="last enabled administrator"):
            await attempt
    with pytest.raises(Conflict, match="your own password"):
        await env.users.reset_password(root, "root")
    promoted = await env.users.set_role(root, "other", "admin")
    assert promoted.role == "admin"
    assert (await env.users.disable(other, "root")).disabled_at is not None
    with pytest.raises(Conflict, match="last enabled administrator"):
        await env.users.set_role(None, "other", "user")
    with pytest.raises(NotFound, match="'ghost' not found"):
        await env.users.disable(other, "ghost")


# --- disable, enable, delete ---------------------------------------------------------------


async def test_disable_refuses_every_token_stops_sessions_and_closes_viewers(
    env: Users, probe: HubProbe
) -> None:
    admin = await env.add("root", "admin")
    alice = await env.add("alice")
    token = await env.login("alice")
    api = await env.api_tokens.create(alice, name="ci")
    for presented in (token, api.secret):  # cached now
        assert (await env.logins.authenticate(presented)).username == "alice"
    running = await env.session(alice, SessionState.RUNNING)
    hibernated = await env.session(alice, SessionState.HIBERNATED)
    with env.tunnels.live(agent_id=AGENT, session_id=running) as viewer:
        disabled = await env.users.disable(admin, "alice")
        assert viewer.done() and viewer.result() == Closed(SESSION_NOT_RUNNING, "account disabled")

    assert disabled.disabled_at is not None
    for presented in (token, api.secret):
        with pytest.raises(Unauthorized):
            await env.logins.authenticate(presented)
    with pytest.raises(Forbidden, match="disabled"):
        await env.login("alice")
    assert await env.state(running) == SessionState.STOPPING
    [stop] = await env.stops(running)
    assert stop.status == "pending" and stop.payload == {"state": {"pid": 1}, "keep_home": False}
    assert AGENT in probe.rings
    assert await env.state(hibernated) == SessionState.HIBERNATED  # its home waits
    assert await env.stops(hibernated) == []

    await env.users.disable(admin, "alice")  # again: nothing more happens
    assert len(await env.stops(running)) == 1

    await env.users.enable("alice")
    assert (await env.logins.authenticate(api.secret)).username == "alice"  # API tokens stay
    with pytest.raises(Unauthorized):
        await env.logins.authenticate(token)  # login tokens ended for good
    await env.login("alice")


async def test_a_session_still_running_for_a_disabled_account_is_stopped(
    env: Users, reconciler: Reconciler, probe: HubProbe
) -> None:
    alice = await env.add("alice")
    await env.users.disable(None, "alice")
    late = await env.session(alice, SessionState.RUNNING)  # e.g. a launch in the same instant
    with env.tunnels.live(agent_id=AGENT, session_id=late) as viewer:
        await reconciler.check_disabled_owners()
        assert viewer.done()
    assert await env.state(late) == SessionState.STOPPING
    [stop] = await env.stops(late)
    assert stop.reason == "account disabled"  # issued by the control plane itself
    assert probe.rings == [AGENT]
    await reconciler.check_disabled_owners()
    assert len(await env.stops(late)) == 1  # stopping already: left alone


async def test_delete_stops_every_session_then_removes_the_user(env: Users) -> None:
    admin = await env.add("root", "admin")
    bob = await env.add("bob")
    api = await env.api_tokens.create(bob, name="ci")
    running = await env.session(bob, SessionState.RUNNING)
    hibernated = await env.session(bob, SessionState.HIBERNATED)

    await env.users.delete(admin, "bob")
    with pytest.raises(NotFound):
        await env.users.get("bob")
    for session_id in (running, hibernated):
        assert await env.state(session_id) is None  # gone with their owner
        assert len(await env.stops(session_id)) == 1, "its stop command stays and runs"
    with pytest.raises(Unauthorized):
        await env.logins.authenticate(api.secret)
    await env.add("bob")  # the name is free again


# --- passwords -----------------------------------------------------------------------------


async def test_a_reset_logs_out_and_only_the_password_change_is_left(env: Users) -> None:
    admin = await env.add("root", "admin")
    await env.add("carol")
    old = await env.login("carol")
    done = await env.users.reset_password(admin, "carol")
    assert done.password is not None and done.user.must_change_password
    with pytest.raises(Unauthorized):
        await env.logins.authenticate(old)
    with pytest.raises(Unauthorized):
        await env.login("carol")  # the old password is gone
    first = await env.logins.login("carol", done.password, address=ADDRESS)
    assert first.user.must_change_password
    carol = await env.logins.authenticate(first.token)
    other = await env.login("carol", done.password)

    with pytest.raises(Forbidden, match="current password"):
        await env.logins.change_password(
            carol, current="wrong-one!", new="brand-new-pass", token=first.token, address=ADDRESS
        )
    with pytest.raises(Invalid, match="at least 8"):
        await env.logins.change_password(
            carol, current=done.password, new="short", token=first.token, address=ADDRESS
        )
    with pytest.raises(Invalid, match="differ"):
        await env.logins.change_password(
            carol, current=done.password, new=done.password, token=first.token, address=ADDRESS
        )
    await env.logins.change_password(
        carol, current=done.password, new="brand-new-pass", token=first.token, address=ADDRESS
    )
    assert not (await env.logins.authenticate(first.token)).must_change_password  # kept, fresh
    with pytest.raises(Unauthorized):
        await env.logins.authenticate(other)  # every other login ended
    await env.login("carol", "brand-new-pass")


async def test_an_admin_may_set_the_temporary_password(env: Users) -> None:
    admin = await env.add("root", "admin")
    await env.add("dave")
    done = await env.users.reset_password(admin, "dave", "temporary-1")
    assert done.password is None
    assert (
        await env.logins.login("dave", "temporary-1", address=ADDRESS)
    ).user.must_change_password


async def test_a_role_change_holds_on_the_next_request(env: Users) -> None:
    admin = await env.add("root", "admin")
    await env.add("erin")
    token = await env.login("erin")
    assert (await env.logins.authenticate(token)).role == "user"  # cached
    await env.users.set_role(admin, "erin", "admin")
    assert (await env.logins.authenticate(token)).role == "admin"


# --- API tokens ----------------------------------------------------------------------------


async def test_api_tokens_are_shown_once_listed_revoked_and_expire(env: Users) -> None:
    frank = await env.add("frank")
    other = await env.add("grace")
    made = await env.api_tokens.create(frank, name="deploy", days=30)
    assert made.secret.startswith("ssp_")
    assert made.token.token_hash != made.secret and made.secret not in made.token.token_hash
    assert (await env.logins.authenticate(made.secret)).username == "frank"
    [listed] = await env.api_tokens.list(frank)
    assert listed.name == "deploy" and listed.last_used_at is not None
    assert listed.expires_at - utcnow() > timedelta(days=29)
    with pytest.raises(NotFound):
        await env.api_tokens.revoke(other, listed.id)  # not hers
    with pytest.raises(Invalid, match="1 to 365 days"):
        await env.api_tokens.create(frank, name="forever", days=366)

    await env.api_tokens.revoke(frank, listed.id)
    with pytest.raises(Unauthorized):
        await env.logins.authenticate(made.secret)
    assert (await env.api_tokens.revoke(frank, listed.id)).revoked_at is not None  # idempotent

    stale = await env.api_tokens.create(frank, name="stale")
    async with env.db() as db, db.begin():
        past = utcnow() - timedelta(seconds=1)
        await db.execute(
            update(ApiToken).where(ApiToken.id == stale.token.id).values(expires_at=past)
        )
    with pytest.raises(Unauthorized):
        await env.logins.authenticate(stale.secret)


async def test_a_token_use_is_recorded_at_most_once_a_minute(env: Users) -> None:
    henry = await env.add("henry")
    made = await env.api_tokens.create(henry, name="poller")
    assert await env.api_tokens.holder(made.token.token_hash) is not None
    [first] = await env.api_tokens.list(henry)
    assert await env.api_tokens.holder(made.token.token_hash) is not None
    [second] = await env.api_tokens.list(henry)
    assert first.last_used_at == second.last_used_at is not None
