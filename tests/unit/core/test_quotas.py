"""Quotas: the effective-limit rule, and launches held to it in the launch batch (SQLite)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from streamspace.config import ApiSettings
from streamspace.controlplane.audit import AuditLog
from streamspace.controlplane.auth.groups import GroupService
from streamspace.controlplane.errors import Forbidden, OverQuota
from streamspace.controlplane.idempotency import Idempotency
from streamspace.controlplane.sessions.launches import Launched, LaunchWriter
from streamspace.controlplane.sessions.quotas import Limits, Quotas, effective, site_limits
from streamspace.db.engine import SessionFactory
from streamspace.db.models import (
    Agent,
    AgentCommand,
    Group,
    IdempotencyKey,
    Session,
    Template,
    User,
    utcnow,
)

SITE = Limits(max_running_sessions=3, max_hibernated_sessions=1, max_session_minutes=60)


def group(
    running: int | None = None,
    hibernated: int | None = None,
    minutes: int | None = None,
    templates: list[str] | None = None,
) -> Group:
    return Group(
        name="g",
        max_running_sessions=running,
        max_hibernated_sessions=hibernated,
        max_session_minutes=minutes,
        allowed_templates=templates,
    )


def test_a_user_of_no_group_gets_the_site_default() -> None:
    assert effective([], SITE) == SITE
    assert effective([], Limits()) == Limits()


def test_a_limit_a_group_leaves_unset_is_the_site_default() -> None:
    assert effective([group(running=5)], SITE) == Limits(
        max_running_sessions=5, max_hibernated_sessions=1, max_session_minutes=60
    )
    assert effective([group()], Limits()) == Limits()


def test_several_groups_give_the_most_generous_of_each_limit() -> None:
    limits = effective(
        [group(running=1, hibernated=4), group(running=2, minutes=30, templates=["xterm"])],
        Limits(max_session_minutes=None),
    )
    # The first group leaves minutes unset and the site has no limit: no limit wins.
    assert limits == Limits(
        max_running_sessions=2,
        max_hibernated_sessions=None,  # the second group leaves it to the site: none
        max_session_minutes=None,
        allowed_templates=None,  # the first group allows all
    )
    tighter = effective([group(running=0), group(running=2)], SITE)
    assert tighter.max_running_sessions == 2
    assert tighter.max_hibernated_sessions == 1  # both leave it to the site's 1


def test_allowed_templates_are_the_union_of_the_lists() -> None:
    limits = effective([group(templates=["xterm"]), group(templates=["xcalc", "xterm"])], SITE)
    assert limits.allowed_templates == {"xterm", "xcalc"}
    assert limits.allows("xcalc") and not limits.allows("xedit")
    assert effective([group(templates=[])], SITE).allows("xterm") is False
    assert effective([group(templates=[]), group()], SITE).allows("xterm")


def test_site_limits_come_from_the_settings() -> None:
    settings = ApiSettings(quota_max_running_sessions=2, quota_max_session_minutes=90)
    assert site_limits(settings) == Limits(max_running_sessions=2, max_session_minutes=90)
    assert site_limits(settings).max_age_seconds == 5400
    assert site_limits(ApiSettings()) == Limits()


# --- launches held to the quota -------------------------------------------------------

ANN = User(id="u1", username="ann", password_hash="x", role="user")
BOB = User(id="u2", username="bob", password_hash="x", role="user")


@pytest.fixture
async def db(migrated_db: SessionFactory) -> SessionFactory:
    async with migrated_db() as session, session.begin():
        for user in (ANN, BOB):
            session.add(User(id=user.id, username=user.username, password_hash="x", role="user"))
        for name in ("xterm", "xedit"):
            session.add(Template(name=name, display_name=name, command=[name]))
        session.add(
            Agent(
                agent_id="a1",
                platform="local",
                status="online",
                approval="approved",
                api_key_hash="x",
                capacity=100,
                last_heartbeat=utcnow(),
            )
        )
    groups = GroupService(db=migrated_db, audit=AuditLog(db=migrated_db))
    await groups.create(
        "team", {"max_running_sessions": 2, "max_session_minutes": 90, "allowed_templates": None}
    )
    await groups.add_member("team", "ann")
    return migrated_db


async def count(db: SessionFactory, model: type[Session] | type[AgentCommand]) -> int:
    async with db() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_launches_in_one_batch_stop_at_the_quota(db: SessionFactory) -> None:
    writer = LaunchWriter(db=db, settings=ApiSettings(heartbeat_interval=10), audit=AuditLog(db=db))
    results = await asyncio.gather(
        *(writer.launch(ANN, "xterm") for _ in range(5)),
        writer.launch(BOB, "xterm"),  # no group, no site default: no limit
        return_exceptions=True,
    )
    assert [type(result) for result in results] == [Launched] * 2 + [OverQuota] * 3 + [Launched]
    refused = results[2]
    assert isinstance(refused, OverQuota) and refused.limit == "running"
    assert refused.message == "quota reached: you may run 2 sessions at once (2 running)"
    first = results[0]
    assert isinstance(first, Launched) and first.session.max_age_seconds == 90 * 60
    bobs = results[5]
    assert isinstance(bobs, Launched) and bobs.session.max_age_seconds is None
    assert await count(db, Session) == await count(db, AgentCommand) == 3

    later = await asyncio.gather(writer.launch(ANN, "xterm"), return_exceptions=True)
    assert isinstance(later[0], OverQuota)  # counted from the database, not only the batch
    quota = await Quotas(db=db, settings=ApiSettings()).of(ANN)
    assert (quota.running, quota.limits.max_running_sessions, quota.groups) == (2, 2, ["team"])


async def test_a_refused_launch_claims_no_key_and_a_template_can_be_refused(
    db: SessionFactory,
) -> None:
    writer = LaunchWriter(db=db, settings=ApiSettings(heartbeat_interval=10), audit=AuditLog(db=db))
    await GroupService(db=db, audit=AuditLog(db=db)).update(
        "team", {"allowed_templates": ["xterm"]}
    )
    with pytest.raises(Forbidden, match="template 'xedit' is not allowed for your groups"):
        await writer.launch(ANN, "xedit")
    for _ in range(2):
        assert isinstance(await writer.launch(ANN, "xterm"), Launched)
    key = Idempotency("k1", "asked")
    with pytest.raises(OverQuota):
        await writer.launch(ANN, "xterm", key)
    async with db() as session:
        assert (await session.scalars(select(IdempotencyKey))).all() == []
        one = await session.scalar(select(Session).where(Session.owner_id == ANN.id))
        assert one is not None
    async with db() as session, session.begin():
        stopped = await session.get(Session, one.id)
        assert stopped is not None
        stopped.state = "terminated"
    again = await writer.launch(ANN, "xterm", key)  # the key was not spent on the refusal
    assert isinstance(again, Launched)
    assert await count(db, Session) == 3


async def test_hibernated_and_stopping_sessions_do_not_count_as_running(
    db: SessionFactory,
) -> None:
    writer = LaunchWriter(db=db, settings=ApiSettings(heartbeat_interval=10), audit=AuditLog(db=db))
    launched = [await writer.launch(ANN, "xterm") for _ in range(2)]
    async with db() as session, session.begin():
        for result, state in zip(launched, ["hibernated", "stopping"], strict=True):
            assert isinstance(result, Launched)
            row = await session.get(Session, result.session.id)
            assert row is not None
            row.state = state
    quota = await Quotas(db=db, settings=ApiSettings()).of(ANN)
    assert (quota.running, quota.hibernated) == (0, 1)
    assert isinstance(await writer.launch(ANN, "xterm"), Launched)
