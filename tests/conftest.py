"""Shared pytest fixtures.

Servers (session-scoped, started once, killed at the end; see tests/services.py):
  postgres_server  -> PostgresServer: throwaway PostgreSQL cluster on a free port
  redis_server     -> RedisServer: throwaway Redis on a free port

Per-test URLs (function-scoped):
  pg_url      fresh PostgreSQL database, ``postgresql://postgres@127.0.0.1:PORT/test_N``
  sqlite_url  ``sqlite:///<tmp_path>/test.db``
  db_url      parametrized: runs the test once with sqlite_url and once with pg_url
  redis_url   ``redis://127.0.0.1:PORT/1`` with DB 1 flushed
  redis_client  an asyncio client on redis_url (``str`` answers)
  migrated_db   a session factory on db_url, migrated to head (both databases)

Docker (tests/docker_env.py): docker_image (session-scoped: dockerd running, session image
built), docker_scope (a test's agent id and user; fails the test for leftovers) and
docker_cluster (a real ``--platform docker`` agent on ``api``).

A test may kill()/stop()/restart() the session servers; it should restart them before it
ends (the per-test fixtures restart a server they find down, as a safety net).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from streamspace.db.engine import SessionFactory, create_engine, create_session_factory
from streamspace.db.migrations import runner
from tests.database import Database
from tests.docker_env import DockerScope, ensure_docker
from tests.helpers import login, wait_for_agent
from tests.local_sessions import AGENT_ID, TIMEOUT, Cluster, kill_session_processes
from tests.manual_agent import ManualAgent
from tests.processes import AgentProcess, ApiProcess
from tests.services import PostgresServer, RedisSentinelGroup, RedisServer, make_postgres_dir

_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # Not under tmp_path_factory: pytest's temp root is mode 0700 (root only) and PostgreSQL
    # runs as the `postgres` OS user; make_postgres_dir() gives a dir that user owns.
    base_dir = make_postgres_dir()
    server = PostgresServer(base_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session PostgreSQL server; dropped afterwards."""
    name = f"test_{next(_db_counter)}"
    postgres_server.start()  # no-op unless an earlier test left it down
    yield postgres_server.create_database(name)
    postgres_server.start()
    postgres_server.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/test.db"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Runs the test against SQLite and against PostgreSQL (ids: [sqlite], [postgres])."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of DB 1 on the session Redis server, flushed before the test."""
    redis_server.start()  # no-op unless an earlier test left it down
    redis_server.flushall()
    return redis_server.url(1)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on ``redis_url`` answering ``str``; closed afterwards."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


# --- StreamSpace processes ------------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[None]:
    """Kills every API/agent process a test started, even when it fails."""
    from tests.processes import kill_all

    yield
    kill_all()


@pytest.fixture
def api(processes: None, tmp_path: Path, pg_url: str) -> Iterator[ApiProcess]:
    """One ``streamspace api`` replica on a fresh PostgreSQL database, auto-approving agents."""
    server = ApiProcess(tmp_path / "api", database_url=pg_url, env={"AGENT_AUTO_APPROVE": "true"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def admin(api: ApiProcess) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``api`` logged in as the administrator."""
    client = await login(api.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def database(pg_url: str) -> AsyncIterator[Database]:
    """Read access to the same PostgreSQL database the ``api`` fixture uses."""
    db = Database(pg_url)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def migrated_db(db_url: str) -> AsyncIterator[SessionFactory]:
    """Sessions on ``db_url`` (SQLite, then PostgreSQL) with the schema at head."""
    await asyncio.to_thread(runner.upgrade, db_url, "head")
    engine = create_engine(db_url)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture(autouse=True)
async def _close_manual_agents() -> AsyncIterator[None]:
    """Close every hand-driven agent socket a test opened."""
    yield
    await ManualAgent.close_all()


@contextlib.asynccontextmanager
async def _agent_cluster(
    api: ApiProcess, admin: httpx.AsyncClient, agent_dir: Path, *, agent_id: str, platform: str
) -> AsyncIterator[Cluster]:
    """A real ``streamspace agent --platform …`` on ``api``, online; killed at the end."""
    agent = AgentProcess(
        agent_dir, control_plane_url=api.url, agent_id=agent_id, behaviour=None, platform=platform
    )
    agent.start()
    try:
        await wait_for_agent(admin, agent_id, timeout=TIMEOUT)
        yield Cluster(api, admin, agent, agent_dir)
    finally:
        agent.kill()


@pytest.fixture
async def cluster(
    api: ApiProcess, admin: httpx.AsyncClient, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """A real local-platform agent (Xvnc sessions) on ``api``; kills leftovers at the end."""
    sessions: list[str] = []
    try:
        async with _agent_cluster(
            api, admin, tmp_path / "agent", agent_id=AGENT_ID, platform="local"
        ) as setup:
            sessions = setup.sessions
            yield setup
    finally:
        for session_id in sessions:
            kill_session_processes(session_id)


# --- Docker ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_image() -> str:
    """A running dockerd and the session image (built once, then cached by tag)."""
    return ensure_docker()


@pytest.fixture
def docker_scope(docker_image: str) -> Iterator[DockerScope]:
    """The test's own agent id and user; fails it for Docker objects it left behind."""
    scope = DockerScope()
    yield scope
    left = scope.leftovers()
    assert not left, f"the test left Docker objects behind (removed now): {left}"


@pytest.fixture
async def docker_cluster(
    api: ApiProcess, admin: httpx.AsyncClient, tmp_path: Path, docker_scope: DockerScope
) -> AsyncIterator[Cluster]:
    """A real docker-platform agent (sessions are containers) on ``api``."""
    async with _agent_cluster(
        api, admin, tmp_path / "agent", agent_id=docker_scope.agent_id, platform="docker"
    ) as setup:
        yield setup


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[RedisSentinelGroup]:
    """A Redis master, a replica and three Sentinels watching them (master ``streamspace``)."""
    group = RedisSentinelGroup(tmp_path / "sentinel-group")
    try:
        group.start()
        yield group
    finally:
        group.stop()
