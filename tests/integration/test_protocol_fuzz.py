"""Hostile agents against a real replica: property-based frames over real WebSockets.

One replica (PostgreSQL) serves the whole module. An authenticated agent sends hypothesis'
hostile frames (tests/protocol_frames.py), each on a fresh connection, before or after its
hello: every one must end that connection with a 44xx close and the reason the protocol
gives, while a well-behaved agent stays connected and gets commands, and users are served.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streamspace.protocol import CloseCode
from tests.helpers import logged_in, wait_for_agent
from tests.manual_agent import ManualAgent
from tests.processes import ApiProcess
from tests.protocol_frames import expected_close, hostile_frames
from tests.services import PostgresServer

FUZZ_AGENT = "fuzz-agent"
STEADY_AGENT = "steady-agent"
CHECK_EVERY = 50
"""Examples between checks that the steady agent and users are still served."""
_examples = itertools.count(1)
DATABASE = "test_protocol_fuzz"


@pytest.fixture(scope="module")
def replica(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """One replica for the whole fuzz (starting one per example would be most of the time)."""
    url = postgres_server.create_database(DATABASE)
    api = ApiProcess(
        tmp_path_factory.mktemp("fuzz") / "api",
        database_url=url,
        # The steady agent's heartbeats run on the test's event loop, which stands still
        # while hypothesis generates and shrinks between examples (seconds on a loaded
        # machine): a 30 s heartbeat timeout instead of the tests' usual 3 s keeps those
        # pauses from reading as a dead agent. The fuzz is about hostile frames, not
        # heartbeat timing.
        env={"AGENT_AUTO_APPROVE": "true", "HEARTBEAT_INTERVAL": "10"},
    )
    api.start()
    try:
        yield api
    finally:
        api.stop()
        postgres_server.drop_database(DATABASE)


@pytest.fixture(scope="module")
def keys(replica: ApiProcess) -> dict[str, str]:
    """API keys of the hostile agent (no capacity: no session is ever placed on it) and of
    the steady one."""

    async def register() -> dict[str, str]:
        hostile = await ManualAgent.registered(replica.url, FUZZ_AGENT, capacity=0)
        steady = await ManualAgent.registered(replica.url, STEADY_AGENT)
        return {FUZZ_AGENT: hostile.api_key, STEADY_AGENT: steady.api_key}

    return asyncio.run(register())


@pytest.fixture
async def steady(replica: ApiProcess, keys: dict[str, str]) -> AsyncIterator[ManualAgent]:
    """A well-behaved agent, heartbeating, connected for the whole test."""
    agent = ManualAgent(replica.url, STEADY_AGENT, keys[STEADY_AGENT])
    await agent.connect()

    async def beat() -> None:
        while True:
            await agent.send("heartbeat", {"active_sessions": 0, "capacity": 10})
            await asyncio.sleep(0.3)

    beating = asyncio.create_task(beat())
    try:
        yield agent
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


async def _still_served(replica: ApiProcess, agent: ManualAgent) -> None:
    """The steady agent gets a command; /healthz and a user's request answer."""
    async with logged_in(replica.url) as admin:
        await wait_for_agent(admin, STEADY_AGENT)
        created = await admin.post("/api/v1/sessions", json={"template": "xterm"})
        assert created.status_code == 201, created.text
        command = await agent.receive()
        assert command.type == "command"
        # Fail it, so that its session ends and leaves the agent's capacity free.
        command_id = command.payload.command_id  # type: ignore[union-attr]
        await agent.send(
            "failed", {"command_id": command_id, "error": "fuzzing", "retryable": False}
        )
        assert (await admin.get("/api/v1/sessions")).status_code == 200
    async with httpx.AsyncClient(base_url=replica.url) as client:
        assert (await client.get("/healthz")).status_code == 200


@pytest.mark.timeout(300)
@settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(frame=hostile_frames(FUZZ_AGENT), first=st.booleans())
async def test_every_hostile_frame_gets_a_44xx_close_with_its_reason(
    replica: ApiProcess,
    keys: dict[str, str],
    steady: ManualAgent,
    frame: str | bytes,
    first: bool,
) -> None:
    expected = expected_close(frame)
    assume(expected is not None)
    agent = ManualAgent(replica.url, FUZZ_AGENT, keys[FUZZ_AGENT], capacity=0)
    if first:  # instead of the hello
        await agent.open()
    else:
        await agent.connect()
    await agent.send_raw(frame)
    code, reason, _ = await agent.closed_with()
    assert (code, reason) == expected
    assert code is not None and 4400 <= code <= 4499
    assert steady.ws is not None and steady.ws.close_code is None, "the steady agent was closed"
    if next(_examples) % CHECK_EVERY == 0:
        await _still_served(replica, steady)


async def test_the_replica_served_everyone_throughout(
    replica: ApiProcess, steady: ManualAgent
) -> None:
    """After the fuzz: nothing broke the replica (runs after the fuzz, on the same one)."""
    await _still_served(replica, steady)
    log = replica.output()
    assert "Traceback" not in log, log[-3000:]
    assert "failed to process a message" not in log
    assert "could not record heartbeats" not in log
    assert f"rejecting agent connection: {CloseCode.BAD_MESSAGE}" not in log  # (words only)
