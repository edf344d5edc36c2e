"""Fixtures of the in-process core tests: a migrated SQLite database, the hub, the clocks a
test moves on, and rows to put in a broken state and read back.

Rows are written at the clock's present (``Clock.now``, the real time when the test began);
a test then moves the clock on past a timeout and reconciles.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from streamspace.config import ApiSettings
from streamspace.controlplane.agents import arrivals
from streamspace.controlplane.commands.reconciler import Reconciler
from streamspace.controlplane.hub import AgentHub
from streamspace.db.engine import SessionFactory
from streamspace.db.models import Agent, AgentCommand, Session, SessionViewer, User, utcnow
from streamspace.protocol import Action, Hello, HelloPayload, Parcel, RunningSession
from streamspace.states import STATE_DURING, CommandStatus, SessionState

REPLICA = "replica-a"
"""This replica's POD_NAME."""
AGENT = "agent-1"
MAX_ATTEMPTS = 3
ACK = 10
"""Seconds a command may wait for its ack (and a session look stuck)."""
DEADLINE = 120
"""Seconds an acknowledged command has to finish."""
PENDING = 900
"""Seconds a command may wait for an agent to take it."""
HEARTBEAT = 10
REPLICA_TTL = 10


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """SQLite only: the logic is the same on both databases, which the subprocess tests run."""
    return sqlite_url


@pytest.fixture
def settings() -> ApiSettings:
    return ApiSettings(
        pod_name=REPLICA,
        heartbeat_interval=HEARTBEAT,
        command_ack_timeout=ACK,
        command_max_attempts=MAX_ATTEMPTS,
        command_deadline=DEADLINE,
        command_pending_timeout=PENDING,
        replica_alive_ttl=REPLICA_TTL,
        reconcile_interval=0.01,
    )


class Clock:
    """The reconciler's wall clock and monotonic clock, moved on together by the test."""

    def __init__(self) -> None:
        self._now = utcnow()
        self._monotonic = time.monotonic()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@dataclass
class HubProbe:
    """What the core asked of the hub, and what the hub says of other replicas."""

    rings: list[str] = field(default_factory=list)
    """The agents whose doorbell was rung, in order."""
    gone: set[str] = field(default_factory=set)
    """Replicas the hub reports dead (the others: alive)."""


@pytest.fixture
def probe() -> HubProbe:
    return HubProbe()


@pytest.fixture
def hub(settings: ApiSettings, probe: HubProbe, monkeypatch: pytest.MonkeyPatch) -> AgentHub:
    """The in-memory hub of this replica, its doorbells and replica liveness through ``probe``
    (the only place the tests build a hub)."""
    hub = AgentHub(replica=settings.pod_name)
    ring = hub.ring

    async def ringing(agent_id: str, parcel: Parcel | None = None) -> bool:
        probe.rings.append(agent_id)
        return await ring(agent_id, parcel)

    async def replica_alive(replica: str) -> bool:
        return replica not in probe.gone

    monkeypatch.setattr(hub, "ring", ringing)
    monkeypatch.setattr(hub, "replica_alive", replica_alive)
    return hub


@pytest.fixture
def reconciler(
    migrated_db: SessionFactory, hub: AgentHub, settings: ApiSettings, clock: Clock
) -> Reconciler:
    return Reconciler(
        db=migrated_db, hub=hub, settings=settings, clock=clock.now, monotonic=clock.monotonic
    )


class Arrivals:
    """An agent's arrival and departure on this replica, as the agent socket reports them."""

    def __init__(self, db: SessionFactory, hub: AgentHub) -> None:
        self._arrivals = arrivals.Arrivals(db=db, replica=hub.replica)

    async def connected(
        self, running: Sequence[RunningSession] = (), *, agent_id: str = AGENT
    ) -> None:
        hello = Hello(
            payload=HelloPayload(v=1, agent_id=agent_id, platform="local", version="t", capacity=9)
        )
        await self._arrivals.connected(hello, running)

    async def disconnected(self, agent_id: str = AGENT) -> None:
        await self._arrivals.disconnected(agent_id)


@pytest.fixture
def arrival(migrated_db: SessionFactory, hub: AgentHub) -> Arrivals:
    return Arrivals(migrated_db, hub)


class Rows:
    """Writes rows in the state a test wants, at the clock's present; reads them back."""

    def __init__(self, db: SessionFactory, clock: Clock) -> None:
        self.db = db
        self._clock = clock
        self._owner: str | None = None

    async def agent(
        self,
        agent_id: str = AGENT,
        *,
        status: str = "online",
        replica: str | None = REPLICA,
        heartbeat_ago: float = 0,
    ) -> None:
        now = self._clock.now()
        await self._add(
            Agent(
                agent_id=agent_id,
                platform="local",
                status=status,
                approval="approved",
                api_key_hash="x",
                capacity=9,
                replica=replica,
                last_heartbeat=now - timedelta(seconds=heartbeat_ago),
                created_at=now,
            )
        )

    async def session(
        self,
        state: SessionState = SessionState.RUNNING,
        *,
        agent_id: str | None = AGENT,
        platform_state: dict[str, Any] | None = None,
        viewers: int = 0,
        template: str = "desktop",
    ) -> str:
        if self._owner is None:
            owner = User(username="alice", password_hash="x", role="user")
            await self._add(owner)
            self._owner = owner.id
        running = state is SessionState.RUNNING
        session = Session(
            owner_id=self._owner,
            template_name=template,
            agent_id=agent_id,
            state=state.value,
            platform_state=platform_state or {},
            vnc_host="10.0.0.1" if running else None,
            vnc_port=5901 if running else None,
            active_viewers=viewers,
            created_at=self._clock.now(),
            updated_at=self._clock.now(),
        )
        await self._add(session)
        return session.id

    async def command(
        self,
        session_id: str | None,
        status: CommandStatus,
        action: Action = Action.START_SESSION,
        *,
        agent_id: str = AGENT,
        attempts: int | None = None,
    ) -> str:
        """A command of ``action``; ``sent``/``acknowledged`` ones were so at the present.
        ``attempts`` defaults to 0 for a pending command, else 1."""
        now = self._clock.now()
        delivered = status in (CommandStatus.SENT, CommandStatus.ACKNOWLEDGED)
        command = AgentCommand(
            command_id=f"cmd-{uuid.uuid4().hex}",
            agent_id=agent_id,
            session_id=session_id,
            action=action.value,
            payload={},
            status=status.value,
            attempts=int(status is not CommandStatus.PENDING) if attempts is None else attempts,
            created_at=now,
            sent_at=now if delivered else None,
            acknowledged_at=now if status is CommandStatus.ACKNOWLEDGED else None,
            updated_at=now,
        )
        await self._add(command)
        return command.command_id

    async def during(
        self,
        action: Action,
        status: CommandStatus,
        *,
        agent_id: str = AGENT,
        attempts: int | None = None,
    ) -> tuple[str, str]:
        """A session in the state ``action`` puts it in, and its command of that action."""
        session_id = await self.session(STATE_DURING[action], agent_id=agent_id)
        command_id = await self.command(
            session_id, status, action, agent_id=agent_id, attempts=attempts
        )
        return session_id, command_id

    async def viewer(self, session_id: str, *, replica: str) -> None:
        await self._add(SessionViewer(session_id=session_id, replica=replica))

    async def get_agent(self, agent_id: str = AGENT) -> Agent:
        return await self._get(Agent, agent_id)

    async def get_session(self, session_id: str) -> Session:
        return await self._get(Session, session_id)

    async def get_command(self, command_id: str) -> AgentCommand:
        async with self.db() as db:
            command = await db.scalar(
                select(AgentCommand).where(AgentCommand.command_id == command_id)
            )
        assert command is not None, command_id
        return command

    async def commands_of(self, session_id: str) -> list[tuple[str, str]]:
        """``(action, status)`` of a session's commands, oldest first."""
        async with self.db() as db:
            rows = await db.execute(
                select(AgentCommand.action, AgentCommand.status)
                .where(AgentCommand.session_id == session_id)
                .order_by(AgentCommand.created_at, AgentCommand.command_id)
            )
        return [(action, status) for action, status in rows]

    async def stops_of(self, session_id: str) -> list[AgentCommand]:
        """The pending ``stop_session`` commands of a session (cleanups queued for it)."""
        async with self.db() as db:
            found = await db.scalars(
                select(AgentCommand).where(
                    AgentCommand.session_id == session_id,
                    AgentCommand.action == Action.STOP_SESSION,
                    AgentCommand.status == CommandStatus.PENDING,
                )
            )
            return list(found)

    async def count(self, model: type[Any]) -> int:
        async with self.db() as db:
            return int(await db.scalar(select(func.count()).select_from(model)) or 0)

    async def _add(self, row: Any) -> None:
        async with self.db() as db, db.begin():
            db.add(row)

    async def _get(self, model: type[Any], key: str) -> Any:
        async with self.db() as db:
            row = await db.get(model, key)
        assert row is not None, key
        return row


@pytest.fixture
def rows(migrated_db: SessionFactory, clock: Clock) -> Rows:
    return Rows(migrated_db, clock)
