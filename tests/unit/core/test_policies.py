"""The lifecycle policies: sessions put past a timeout → the clock moved on → enforce → the
sessions, their commands and events as they should be (and, just short of it, as they were)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import select

from streamspace.config import ApiSettings
from streamspace.controlplane.audit import AuditLog
from streamspace.controlplane.commands.outcomes import apply_outcome
from streamspace.controlplane.hub import Cut
from streamspace.controlplane.routes.schemas import TemplateIn
from streamspace.controlplane.sessions.enforcer import PolicyEnforcer
from streamspace.controlplane.sessions.launches import Launched, LaunchWriter
from streamspace.controlplane.sessions.policies import describe, duration, effective_policy
from streamspace.db.engine import SessionFactory
from streamspace.db.models import (
    Agent,
    AgentCommand,
    Session,
    SessionEvent,
    Template,
    User,
    utcnow,
)
from streamspace.db.repo import commands as command_repo
from streamspace.db.repo import policies as policy_repo
from streamspace.db.repo import viewers
from streamspace.protocol import SESSION_NOT_RUNNING, Action
from streamspace.states import CommandStatus, IdleAction, PolicyReason, RetentionHome, SessionState
from tests.unit.core.conftest import AGENT, Clock, Rows

IDLE = 30 * 60
MAX_AGE = 8 * 3600
RETENTION = 7 * 86_400
POLICY_FIELDS = (
    "idle_timeout_minutes",
    "idle_action",
    "max_age_minutes",
    "hibernated_retention_days",
    "retention_home",
)


class Probe:
    """The enforcer's doorbells and tunnel cuts."""

    def __init__(self) -> None:
        self.rings: list[str] = []
        self.cuts: list[Cut] = []

    async def ring(self, agent_id: str) -> bool:
        self.rings.append(agent_id)
        return True

    async def cut(self, cut: Cut) -> None:
        self.cuts.append(cut)


@pytest.fixture
def probe() -> Probe:
    return Probe()


def _enforcer(
    db: SessionFactory, settings: ApiSettings, clock: Clock, probe: Probe
) -> PolicyEnforcer:
    return PolicyEnforcer(db=db, settings=settings, ring=probe.ring, cut=probe.cut, clock=clock.now)


@pytest.fixture
def enforcer(
    migrated_db: SessionFactory, settings: ApiSettings, clock: Clock, probe: Probe
) -> PolicyEnforcer:
    return _enforcer(migrated_db, settings, clock, probe)


async def _session(
    rows: Rows, clock: Clock, state: SessionState = SessionState.RUNNING, **policy: Any
) -> str:
    """A session of ``state`` with these policy columns, its last activity now."""
    session_id = await rows.session(state, platform_state={"pid": 1})
    async with rows.db() as db, db.begin():
        session = await db.get(Session, session_id)
        assert session is not None
        session.last_activity = clock.now()
        for name, value in policy.items():
            setattr(session, name, value)
    return session_id


async def _commands(rows: Rows, session_id: str) -> list[AgentCommand]:
    async with rows.db() as db:
        found = await db.scalars(select(AgentCommand).where(AgentCommand.session_id == session_id))
        return list(found)


async def _details(rows: Rows, session_id: str) -> list[tuple[str | None, str, str | None]]:
    async with rows.db() as db:
        found = await db.scalars(
            select(SessionEvent)
            .where(SessionEvent.session_id == session_id)
            .order_by(SessionEvent.id)
        )
        return [(e.from_state, e.to_state, e.detail) for e in found]


def _actions(reason: str, action: str) -> float:
    labels = {"reason": reason, "action": action}
    return REGISTRY.get_sample_value("streamspace_policy_actions_total", labels) or 0.0


async def test_an_idle_session_is_hibernated_after_its_timeout_with_the_reason(
    enforcer: PolicyEnforcer, rows: Rows, clock: Clock, probe: Probe
) -> None:
    idle = await _session(rows, clock, idle_timeout=IDLE, idle_action="hibernate")
    forever = await _session(rows, clock, idle_timeout=None, idle_action="hibernate")
    before = _actions("idle", "hibernate")

    clock.advance(IDLE - 1)
    assert await enforcer.run_once() == []
    assert (await rows.get_session(idle)).state == SessionState.RUNNING

    clock.advance(2)
    acted = await enforcer.run_once()

    assert [item.session_id for item in acted] == [idle]
    assert (await rows.get_session(idle)).state == SessionState.HIBERNATING
    [command] = await _commands(rows, idle)
    assert (command.action, command.status, command.reason, command.agent_id) == (
        Action.HIBERNATE_SESSION,
        CommandStatus.PENDING,
        "idle 30 min",
        AGENT,
    )
    assert command.payload == {"state": {"pid": 1}}
    assert (await _details(rows, idle))[-1] == ("running", "hibernating", "idle 30 min")
    assert probe.rings == [AGENT]
    assert probe.cuts == [
        Cut(SESSION_NOT_RUNNING, "session hibernated: idle 30 min", session_id=idle)
    ]
    assert _actions("idle", "hibernate") == before + 1
    assert (await rows.get_session(forever)).state == SessionState.RUNNING

    assert await enforcer.run_once() == []  # once
    assert len(await _commands(rows, idle)) == 1


async def test_the_idle_action_may_be_a_stop(
    enforcer: PolicyEnforcer, rows: Rows, clock: Clock
) -> None:
    session_id = await _session(rows, clock, idle_timeout=90, idle_action="stop")

    clock.advance(91)
    await enforcer.run_once()

    assert (await rows.get_session(session_id)).state == SessionState.STOPPING
    [command] = await _commands(rows, session_id)
    assert (command.action, command.reason) == (Action.STOP_SESSION, "idle 90 s")
    assert command.payload == {"state": {"pid": 1}, "keep_home": False}


async def test_viewer_input_and_keep_put_the_idle_deadline_off(
    enforcer: PolicyEnforcer, rows: Rows, clock: Clock
) -> None:
    typed = await _session(rows, clock, idle_timeout=IDLE, idle_action="hibernate")
    kept = await _session(rows, clock, idle_timeout=IDLE, idle_action="hibernate")

    clock.advance(IDLE - 60)
    async with rows.db() as db, db.begin():
        await viewers.viewer_active(db, typed, now=clock.now())
        assert await policy_repo.keep(db, kept, now=clock.now())
    clock.advance(120)
    assert await enforcer.run_once() == []

    clock.advance(IDLE)
    assert {item.session_id for item in await enforcer.run_once()} == {typed, kept}


async def test_only_running_sessions_go_idle(
    enforcer: PolicyEnforcer, rows: Rows, clock: Clock
) -> None:
    states = (SessionState.PENDING, SessionState.WAKING, SessionState.HIBERNATED)
    ids = [await _session(rows, clock, s, idle_timeout=60, idle_action="stop") for s in states]

    clock.advance(3600)
    assert await enforcer.run_once() == []
    assert [(await rows.get_session(i)).state for i in ids] == list(states)


async def test_max_age_stops_an_active_session(
    enforcer: PolicyEnforcer, rows: Rows, clock: Clock, probe: Probe
) -> None:
    deadline = clock.now() + timedelta(seconds=MAX_AGE)
    session_id = await _session(rows, clock, stop_at=deadline, idle_timeout=IDLE)
    async with rows.db() as db, db.begin():  # launched now
        session = await db.get(Session, session_id)
        assert session is not None
        session.created_at = clock.now()
    before = _actions("max_age", "stop")

    for _ in range(MAX_AGE // (IDLE // 2) - 1):  # in use all along
        clock.advance(IDLE // 2)
        async with rows.db() as db, db.begin():
            await viewers.viewer_active(db, session_id, now=clock.now())
        assert await enforcer.run_once() == []
    clock.advance(IDLE // 2)
    await enforcer.run_once()

    assert (await rows.get_session(session_id)).state == SessionState.STOPPING
    [command] = await _commands(rows, session_id)
    assert (command.action, command.reason) == (Action.STOP_SESSION, "max age 8 h")
    assert (await _details(rows, session_id))[-1] == ("running", "stopping", "max age 8 h")
    assert probe.cuts[-1].reason == "session stopped: max age 8 h"
    assert _actions("max_age", "stop") == before + 1


@pytest.mark.parametrize(("home", "kept"), [("keep", True), ("remove", False)])
async def test_a_hibernated_session_is_stopped_after_its_retention(
    enforcer: PolicyEnforcer, rows: Rows, clock: Clock, probe: Probe, home: str, kept: bool
) -> None:
    session_id = await _session(
        rows,
        clock,
        SessionState.HIBERNATED,
        hibernated_retention=RETENTION,
        retention_home=home,
        retain_until=clock.now() + timedelta(seconds=RETENTION),
    )

    clock.advance(RETENTION - 1)
    assert await enforcer.run_once() == []
    clock.advance(1)
    await enforcer.run_once()

    assert (await rows.get_session(session_id)).state == SessionState.STOPPING
    [command] = await _commands(rows, session_id)
    assert (command.action, command.reason) == (Action.STOP_SESSION, "hibernated 7 d")
    assert command.payload == {"state": {"pid": 1}, "keep_home": kept}
    assert (await _details(rows, session_id))[-1] == ("hibernated", "stopping", "hibernated 7 d")
    assert probe.cuts == []  # a hibernated session has no viewers
    assert probe.rings == [AGENT]


async def test_two_enforcers_at_once_act_on_each_session_once(
    migrated_db: SessionFactory, settings: ApiSettings, rows: Rows, clock: Clock, probe: Probe
) -> None:
    ids = [await _session(rows, clock, idle_timeout=60, idle_action="hibernate") for _ in range(20)]
    clock.advance(61)

    first, second = (_enforcer(migrated_db, settings, clock, probe) for _ in range(2))
    acted = await asyncio.gather(first.run_once(), second.run_once())

    assert sorted(item.session_id for run in acted for item in run) == sorted(ids)
    for session_id in ids:
        assert len(await _commands(rows, session_id)) == 1


async def test_the_policy_reason_ends_the_session_and_starts_its_retention(
    enforcer: PolicyEnforcer, rows: Rows, clock: Clock
) -> None:
    """The command's outcome carries its reason into the events and the termination; a
    hibernation starts the retention clock."""
    idle = await _session(
        rows, clock, idle_timeout=60, idle_action="hibernate", hibernated_retention=RETENTION
    )
    old = await _session(rows, clock, stop_at=clock.now())
    clock.advance(61)
    await enforcer.run_once()

    for session_id in (idle, old):
        [command] = await _commands(rows, session_id)
        async with rows.db() as db, db.begin():
            loaded = await command_repo.get(db, command.command_id)
            assert loaded is not None
            await apply_outcome(db, loaded, status=CommandStatus.COMPLETED, result={})

    hibernated = await rows.get_session(idle)
    assert hibernated.state == SessionState.HIBERNATED
    assert hibernated.retain_until is not None
    assert hibernated.retain_until - utcnow() > timedelta(seconds=RETENTION - 60)
    assert (await _details(rows, idle))[-1] == ("hibernating", "hibernated", "idle 1 min")
    ended = await rows.get_session(old)
    assert (ended.state, ended.termination_reason) == (SessionState.TERMINATED, "max age 0 s")


def test_a_template_policy_wins_over_the_site_default() -> None:
    site = ApiSettings(
        session_idle_timeout_minutes=30,
        session_idle_action="stop",
        session_max_age_minutes=480,
        session_hibernated_retention_days=7,
        session_retention_home="remove",
    )
    plain = Template(name="a", display_name="A")
    own = Template(
        name="b",
        display_name="B",
        idle_timeout_minutes=0.05,
        idle_action="hibernate",
        max_age_minutes=60,
        hibernated_retention_days=0.5,
        retention_home="keep",
    )
    assert tuple(effective_policy(plain, site)) == (
        1800,
        IdleAction.STOP,
        28_800,
        604_800,
        RetentionHome.REMOVE,
    )
    assert tuple(effective_policy(own, site)) == (
        3,
        IdleAction.HIBERNATE,
        3600,
        43_200,
        RetentionHome.KEEP,
    )
    # The owner's quota caps the maximum age, whichever is smaller.
    assert effective_policy(own, site, quota_max_age=1800).max_age == 1800
    assert effective_policy(own, site, quota_max_age=7200).max_age == 3600
    assert effective_policy(plain, ApiSettings(), quota_max_age=5400).max_age == 5400
    assert tuple(effective_policy(plain, ApiSettings())) == (
        None,
        IdleAction.HIBERNATE,
        None,
        None,
        RetentionHome.KEEP,
    )


def test_reasons_read_in_the_largest_whole_unit() -> None:
    assert [duration(s) for s in (45, 60, 1800, 5400, 7200, 28_800, 86_400, 90_000)] == [
        "45 s",
        "1 min",
        "30 min",
        "90 min",
        "2 h",
        "8 h",
        "1 d",
        "25 h",
    ]
    assert describe(PolicyReason.IDLE, 1800) == "idle 30 min"
    assert describe(PolicyReason.MAX_AGE, 28_800) == "max age 8 h"
    assert describe(PolicyReason.RETENTION, 604_800) == "hibernated 7 d"


@pytest.mark.parametrize(
    "policy",
    [
        {"idle_timeout_minutes": 0},
        {"idle_timeout_minutes": -1},
        {"idle_action": "pause"},
        {"max_age_minutes": 10 * 365 * 24 * 60 + 1},
        {"hibernated_retention_days": 0},
        {"retention_home": "delete"},
        {"idle_timeout_minutes": "soon"},
    ],
)
def test_template_policies_are_validated(policy: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TemplateIn(name="t", display_name="T", **policy)


def test_template_policies_default_to_the_site() -> None:
    fields = TemplateIn(name="t", display_name="T").model_dump()
    assert {name: fields[name] for name in POLICY_FIELDS} == dict.fromkeys(POLICY_FIELDS)
    custom = TemplateIn(name="t", display_name="T", idle_timeout_minutes=0.05, idle_action="stop")
    assert (custom.idle_timeout_minutes, custom.idle_action) == (0.05, "stop")


async def test_max_age_stops_a_hibernated_session_too(
    enforcer: PolicyEnforcer, rows: Rows, clock: Clock, probe: Probe
) -> None:
    """Its home as the retention says (here: removed)."""
    session_id = await _session(
        rows,
        clock,
        SessionState.HIBERNATED,
        stop_at=clock.now() + timedelta(seconds=MAX_AGE),
        retention_home="remove",
    )

    clock.advance(MAX_AGE)
    await enforcer.run_once()

    [command] = await _commands(rows, session_id)
    assert (command.action, command.reason) == (Action.STOP_SESSION, "max age 8 h")
    assert command.payload == {"state": {"pid": 1}, "keep_home": False}
    assert (await _details(rows, session_id))[-1] == ("hibernated", "stopping", "max age 8 h")
    assert probe.cuts == []


async def test_a_launch_stores_its_effective_policy(migrated_db: SessionFactory) -> None:
    """Fixed on the session: a later template edit does not change it."""
    ann = User(id="u-ann", username="ann", password_hash="x", role="user")
    async with migrated_db() as db, db.begin():
        db.add(User(id=ann.id, username=ann.username, password_hash="x", role="user"))
        db.add(
            Template(
                name="kiosk",
                display_name="Kiosk",
                command=["x"],
                idle_timeout_minutes=10,
                idle_action="stop",
                max_age_minutes=60,
            )
        )
        db.add(
            Agent(
                agent_id=AGENT,
                platform="local",
                status="online",
                approval="approved",
                api_key_hash="x",
                capacity=10,
                last_heartbeat=utcnow(),
            )
        )
    site = ApiSettings(heartbeat_interval=10, session_hibernated_retention_days=7)
    writer = LaunchWriter(db=migrated_db, settings=site, audit=AuditLog(db=migrated_db))
    launched = await writer.launch(ann, "kiosk")
    assert isinstance(launched, Launched)
    async with migrated_db() as db, db.begin():
        template = await db.get(Template, "kiosk")
        assert template is not None
        template.idle_timeout_minutes = 1  # edited after the launch
    session = await Rows(migrated_db, Clock()).get_session(launched.session.id)
    assert (session.idle_timeout, session.idle_action) == (600, "stop")
    assert (session.max_age_seconds, session.hibernated_retention) == (3600, 604_800)
    assert session.retention_home == "keep"
    assert session.stop_at == session.created_at + timedelta(hours=1)
