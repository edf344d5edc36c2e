"""A multi-replica StreamSpace for fault tests: N ``streamspace api`` replicas (pod-1..N) sharing
one PostgreSQL database and one Redis, fake agents spread over them, a REST load generator,
and the exactly-once check (the database rows and the agents' execution logs agree that every
session's ``start_session`` finished exactly once).

Use it with the ``processes`` fixture (it kills every replica and agent a test started) and
``await cluster.close()`` at the end (the database and Redis clients)::

    cluster = Cluster(tmp_path, pg_url=pg_url, redis_server=redis_server, replicas=3)
    await cluster.start()
    cluster.add_agents(10)
    await cluster.wait_online()
    load = await cluster.load()
    await load.create(100)
    await cluster.wait_settled()
    await cluster.assert_exactly_once(load.created)
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from sqlalchemy import func, select

from streamspace.db.models import Agent, AgentCommand, Session, utcnow
from streamspace.states import OPEN_COMMAND_STATUSES
from streamspace.testing import finished_executions
from tests.database import Database
from tests.helpers import eventually
from tests.processes import AgentProcess, ApiProcess, replica_processes
from tests.services import RedisServer

START = "start_session"
OPEN = frozenset(status.value for status in OPEN_COMMAND_STATUSES)


class Cluster:
    """Replicas pod-1..N on one database and one Redis, and the agents added to them."""

    def __init__(
        self,
        directory: Path,
        *,
        pg_url: str,
        redis_server: RedisServer,
        replicas: int = 3,
        env: Mapping[str, str] = {},
    ) -> None:
        self.directory = directory
        self.redis_server = redis_server
        self.replicas = replica_processes(
            directory, database_url=pg_url, redis_server=redis_server, env=env, count=replicas
        )
        self.agents: list[AgentProcess] = []
        """Every agent process started, restarted ones included (in start order)."""
        self.database = Database(pg_url)
        self.redis = aioredis.Redis(port=redis_server.port, db=1, decode_responses=True)
        self._admin_token = ""

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    def replica(self, pod: str) -> ApiProcess:
        return next(replica for replica in self.replicas if replica.env["POD_NAME"] == pod)

    async def start(self) -> None:
        """Start every replica (the first alone: it creates the schema and the admin)."""
        first, *others = self.replicas
        await asyncio.to_thread(first.start)
        await asyncio.gather(*(asyncio.to_thread(replica.start) for replica in others))

    def kill(self) -> None:
        """SIGKILL every agent and replica of the cluster (before its database is dropped)."""
        for process in [*self.agents, *self.replicas]:
            process.kill()

    async def forget_database_connections(self) -> None:
        """Drop the test's pooled connections (after PostgreSQL restarted under them)."""
        await self.database.engine.dispose()

    async def close(self) -> None:
        await self.redis.aclose()
        await self.database.close()

    # --- agents ------------------------------------------------------------------------

    def add_agent(
        self,
        agent_id: str,
        *,
        first: int = 0,
        behaviour: str = "noop",
        capacity: int = 2000,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] = {},
        name: str | None = None,
    ) -> AgentProcess:
        """Start a fake agent that dials replica ``first`` first, then the others in turn.

        An agent started again with the same ``agent_id`` (a restart, or another replica
        under leader election) shares its directory: its key, its record of executed
        commands and its execution log; ``name`` gives it a process log of its own."""
        urls = self.urls[first:] + self.urls[:first]
        agent = AgentProcess(
            self.directory / "agents" / agent_id,
            control_plane_url=",".join(urls),
            agent_id=agent_id,
            behaviour=behaviour,
            extra_args=["--capacity", str(capacity), *extra_args],
            env=env,
            name=name,
        )
        agent.start()
        self.agents.append(agent)
        return agent

    def add_agents(self, count: int, **kwargs: Any) -> list[AgentProcess]:
        """Agents ``agent-0..count-1``; agent i dials replica ``i % replicas`` first."""
        return [
            self.add_agent(f"agent-{i}", first=i % len(self.replicas), **kwargs)
            for i in range(count)
        ]

    @property
    def agent_ids(self) -> list[str]:
        return list(dict.fromkeys(agent.agent_id for agent in self.agents))

    async def agent_rows(self) -> dict[str, Agent]:
        async with self.database.session() as db:
            rows = (await db.scalars(select(Agent))).all()
        return {row.agent_id: row for row in rows}

    async def start_with_agents(self, count: int) -> dict[str, Agent]:
        """Start the replicas and ``count`` fake agents (see :meth:`add_agents`); returns
        the agents' rows once all are online."""
        await self.start()
        self.add_agents(count)
        return await self.wait_online()

    async def wait_online(
        self, agent_ids: Iterable[str] | None = None, *, timeout: float = 30.0
    ) -> dict[str, Agent]:
        """Until every agent is online with a heartbeat from the last 2 s."""
        wanted = set(self.agent_ids if agent_ids is None else agent_ids)

        async def online() -> dict[str, Agent]:
            rows = await self.agent_rows()
            fresh = utcnow().timestamp() - 2.0
            ready = {
                agent_id
                for agent_id, row in rows.items()
                if row.status == "online"
                and row.last_heartbeat is not None
                and row.last_heartbeat.timestamp() >= fresh
            }
            return rows if wanted <= ready else {}

        return await eventually(
            online, timeout=timeout, interval=0.2, message=f"agents {sorted(wanted)} online"
        )

    async def agent_pods(self) -> dict[str, str | None]:
        """``agent:<id>:pod`` of every agent, from Redis."""
        ids = self.agent_ids
        values = await self.redis.mget([f"agent:{agent_id}:pod" for agent_id in ids])
        pairs = zip(ids, values, strict=True)
        return {agent_id: None if v is None else str(v) for agent_id, v in pairs}

    # --- the REST side -----------------------------------------------------------------

    async def load(self, *, concurrency: int = 10) -> Load:
        """A load generator logged in as the administrator (close it, or use ``async with``)."""
        load = Load(self.urls, concurrency=concurrency)
        await load.login()
        return load

    async def readyz(self, url: str) -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"{url}/readyz") as response,
        ):
            return response.status, await response.json()

    async def metrics(self, url: str) -> str:
        """A replica's ``/metrics``, scraped with an administrator's token (logged in once)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            if not self._admin_token:
                admin = {"username": "admin", "password": "admin-password"}
                async with http.post(f"{url}/api/v1/auth/login", json=admin) as response:
                    assert response.status == 200, await response.text()
                    self._admin_token = (await response.json())["access_token"]
            headers = {"Authorization": f"Bearer {self._admin_token}"}
            async with http.get(f"{url}/metrics", headers=headers) as response:
                assert response.status == 200, await response.text()
                return await response.text()

    # --- the exactly-once check --------------------------------------------------------

    async def start_commands(self) -> list[AgentCommand]:
        async with self.database.session() as db:
            query = select(AgentCommand).where(AgentCommand.action == START)
            return list((await db.scalars(query)).all())

    async def command_counts(self) -> Counter[str]:
        """``start_session`` rows by status."""
        async with self.database.session() as db:
            rows = await db.execute(
                select(AgentCommand.status, func.count())
                .where(AgentCommand.action == START)
                .group_by(AgentCommand.status)
            )
            return Counter({status: count for status, count in rows.all()})

    async def wait_settled(self, expected: int | None = None, *, timeout: float = 60.0) -> float:
        """Until no ``start_session`` row is open (and at least ``expected`` exist); returns
        the seconds it took."""
        began = time.monotonic()

        async def settled() -> Counter[str] | None:
            counts = await self.command_counts()
            total = sum(counts.values())
            if any(counts[status] for status in OPEN) or total < (expected or 1):
                return None
            return counts

        await eventually(
            settled, timeout=timeout, interval=0.25, message="every start_session finished"
        )
        return time.monotonic() - began

    def executions(self) -> dict[str, Counter[str]]:
        """Finished ``start_session`` executions per agent: ``{agent_id: {session_id: n}}``."""
        runs: dict[str, Counter[str]] = {}
        for agent in self.agents:
            if agent.agent_id in runs:
                continue  # a restarted agent appends to the same log
            runs[agent.agent_id] = Counter(
                str(line["session_id"])
                for line in finished_executions(agent.execution_log)
                if line["action"] == START
            )
        return runs

    async def assert_exactly_once(self, created: Iterable[str]) -> int:
        """Zero lost, none run twice: every session in the database (``created`` among them)
        is running, has one ``start_session`` row, ``completed``, and its agent's log shows
        exactly one finished start for it (and no agent ran it besides). Returns the count."""
        async with self.database.session() as db:
            sessions = {row.id: row for row in (await db.scalars(select(Session))).all()}
        commands = await self.start_commands()
        created = list(created)
        assert len(set(created)) == len(created), "the API returned one session id twice"
        missing = set(created) - sessions.keys()
        assert not missing, f"{len(missing)} created session(s) not in the database: {missing}"

        per_session = Counter(command.session_id for command in commands)
        assert set(per_session) == set(sessions), "sessions without a start_session row"
        twice = {sid: n for sid, n in per_session.items() if n != 1}
        assert not twice, f"sessions with several start_session rows: {_some(twice)}"
        unfinished = {c.command_id: (c.status, c.attempts, c.error_message) for c in commands}
        unfinished = {cid: v for cid, v in unfinished.items() if v[0] != "completed"}
        assert not unfinished, f"{len(unfinished)} start_session not completed: {_some(unfinished)}"
        not_running = {sid: s.state for sid, s in sessions.items() if s.state != "running"}
        assert not not_running, f"{len(not_running)} session(s) not running: {_some(not_running)}"

        runs = self.executions()
        owner = {str(command.session_id): command.agent_id for command in commands}
        wrong: dict[str, Any] = {}
        for sid, agent_id in owner.items():
            counts = {agent: n[sid] for agent, n in runs.items() if n[sid]}
            if counts != {agent_id: 1}:
                wrong[sid] = {"assigned": agent_id, "finished runs": counts}
        assert not wrong, f"{len(wrong)} session(s) not started exactly once: {_some(wrong)}"
        strays = {agent: sid for agent, n in runs.items() for sid in n if sid not in sessions}
        assert not strays, f"agents started sessions the database does not know: {strays}"
        return len(sessions)

    def logs(self, lines: int = 40) -> str:
        """The tail of every replica's log (for failure messages)."""
        parts = []
        for replica in self.replicas:
            tail = "\n".join(replica.output().splitlines()[-lines:])
            parts.append(f"--- {replica.env['POD_NAME']} ---\n{tail}")
        return "\n".join(parts)


def _some(items: Mapping[Any, Any], limit: int = 5) -> dict[Any, Any]:
    return dict(itertools.islice(items.items(), limit))


@dataclass
class Load:
    """Creates sessions (``start_session`` commands) through the replicas' REST APIs.

    ``concurrency`` clients take request numbers in turn; request n goes to replica
    ``n % len(urls)``. A replica that cannot be reached is left out from then on and the
    request goes to the next one; a 5xx answer is retried (on the next replica) after a
    short pause. Only 201 answers count as created.
    """

    urls: list[str]
    concurrency: int = 10
    created: list[str] = field(default_factory=list)
    by_replica: Counter[str] = field(default_factory=Counter)
    """201 answers per replica URL."""
    refused: Counter[str] = field(default_factory=Counter)
    """Answers or errors that made a request go elsewhere, as ``"<url> <status|error>"``."""
    down: set[str] = field(default_factory=set)
    token: str = ""
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Prefix of the requests' ``Idempotency-Key`` (then the request's number in this load)."""
    _requests: Iterator[int] = field(default_factory=itertools.count)
    _http: aiohttp.ClientSession | None = None

    async def login(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        async with self._http.post(
            f"{self.urls[0]}/api/v1/auth/login",
            json={"username": "admin", "password": "admin-password"},
        ) as response:
            assert response.status == 200, await response.text()
            self.token = (await response.json())["access_token"]

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> Load:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def up(self) -> list[str]:
        return [url for url in self.urls if url not in self.down]

    async def create(self, count: int, *, urls: Sequence[str] | None = None) -> list[str]:
        """Create ``count`` sessions (through ``urls``, default all); returns their ids."""
        numbers = itertools.count()
        mine: list[str] = []
        targets = list(urls or self.urls)

        async def client() -> None:
            while (n := next(numbers)) < count:
                mine.append(await self._create_one(n, targets))

        await asyncio.gather(*(client() for _ in range(self.concurrency)))
        return mine

    async def _create_one(self, n: int, targets: Sequence[str], *, timeout: float = 60) -> str:
        assert self._http is not None
        # A key per request, the same on every attempt: a retry of a launch that was written
        # before its replica died answers with that session instead of making a second one.
        key = f"{self.run}-{next(self._requests)}"
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": key}
        deadline = time.monotonic() + timeout
        attempt = 0
        while time.monotonic() < deadline:
            live = [url for url in targets if url not in self.down] or list(targets)
            url = live[(n + attempt) % len(live)]
            attempt += 1
            try:
                async with self._http.post(
                    f"{url}/api/v1/sessions", json={"template": "xterm"}, headers=headers
                ) as response:
                    if response.status == 201:
                        session_id = str((await response.json())["id"])
                        self.created.append(session_id)
                        self.by_replica[url] += 1
                        return session_id
                    self.refused[f"{url} {response.status}"] += 1
                    assert response.status >= 500, (response.status, await response.text())
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                self.refused[f"{url} {type(exc).__name__}"] += 1
                self.down.add(url)
                continue
            await asyncio.sleep(0.1)  # a 5xx: the replica is up but cannot serve yet
        raise AssertionError(f"request {n} not served within {timeout} s: {self.refused}")
