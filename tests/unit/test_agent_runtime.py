"""The agent runtime against a real WebSocket server playing the control plane."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

import streamspace
from streamspace.agent import runtime as runtime_module
from streamspace.agent.connection import Backoff, base_urls, http_url, ws_url
from streamspace.agent.credentials import AgentConfigError, obtain_api_key, save_key
from streamspace.agent.executed import ExecutedCommands, Outcome
from streamspace.agent.platforms.base import Platform
from streamspace.agent.runtime import AgentRuntime
from streamspace.config import AgentSettings
from streamspace.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Action,
    AgentMessage,
    Command,
    CommandPayload,
    Error,
    ErrorPayload,
    HelloPayload,
    RunningSession,
    Welcome,
    WelcomePayload,
    encode,
    parse_agent_message,
)
from streamspace.testing import (
    BadPlatform,
    GatedPlatform,
    NeverPlatform,
    NoopPlatform,
    SlowPlatform,
)

API_KEY = "secret-agent-key"
WAIT = 5.0


def spec(session_id: str = "s1") -> dict[str, Any]:
    return {"session_id": session_id, "user": "alice", "template": "xterm"}


class FakeControlPlane:
    """The control plane's side of the agent protocol, over a real WebSocket server."""

    def __init__(self) -> None:
        self.port = 0
        self.heartbeat_interval = 30.0
        self.reject_with: int | None = None
        self.withhold_welcome = False
        self.attempts = 0
        self.hellos: list[HelloPayload] = []
        self.headers: list[Headers] = []
        self.sockets: list[ServerConnection] = []
        self.close_codes: list[int | None] = []
        self.inbox: asyncio.Queue[AgentMessage] = asyncio.Queue()
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> ServerConnection:
        return self.sockets[-1]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def handler(self, ws: ServerConnection) -> None:
        self.attempts += 1
        assert ws.request is not None
        self.headers.append(ws.request.headers)
        if self.reject_with is not None:
            await ws.close(self.reject_with, "refused")
            await self._notify()
            return
        hello = parse_agent_message(await ws.recv())
        assert hello.type == "hello"
        self.hellos.append(hello.payload)
        await self._notify()
        if self.withhold_welcome:
            await ws.wait_closed()
            return
        welcome = WelcomePayload(replica="replica-a", heartbeat_interval=self.heartbeat_interval)
        await ws.send(encode(Welcome(payload=welcome)))
        self.sockets.append(ws)
        await self._notify()
        try:
            async for frame in ws:
                await self.inbox.put(parse_agent_message(frame))
        except ConnectionClosed:
            pass
        finally:
            self.close_codes.append(ws.close_code)
            await self._notify()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(predicate)

    async def command(
        self, command_id: str, action: Action, session_id: str = "s1", **payload: Any
    ) -> None:
        body = CommandPayload(
            command_id=command_id, action=action, session_id=session_id, payload=payload
        )
        await self.ws.send(encode(Command(payload=body)))

    async def expect(self, kind: str) -> Any:
        """The next message other than a heartbeat, which must be of type ``kind``."""
        async with asyncio.timeout(WAIT):
            while True:
                message = await self.inbox.get()
                if message.type == kind:
                    return message.payload
                if message.type != "heartbeat":
                    raise AssertionError(f"expected {kind}, got {message!r}")


@dataclass
class Agent:
    runtime: AgentRuntime
    platform: NoopPlatform
    executed: ExecutedCommands
    stop: asyncio.Event
    task: asyncio.Task[None]


StartAgent = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def cp() -> AsyncIterator[FakeControlPlane]:
    plane = FakeControlPlane()
    async with serve(plane.handler, "127.0.0.1", 0, logger=logging.getLogger("tests.cp")) as server:
        plane.port = server.sockets[0].getsockname()[1]
        yield plane


@pytest.fixture
async def start_agent(cp: FakeControlPlane, tmp_path: Path) -> AsyncIterator[StartAgent]:
    agents: list[Agent] = []

    async def start(
        platform: NoopPlatform | None = None,
        *,
        url: str | None = None,
        timeouts: Mapping[Action, float] | None = None,
        poll_interval: float = 30.0,
        wait_connected: bool = True,
    ) -> Agent:
        settings = AgentSettings(
            control_plane_url=url or cp.url,
            agent_id="agent-1",
            agent_api_key=API_KEY,
            agent_capacity=4,
            agent_data_dir=tmp_path / "agent",
        )
        platform = platform or NoopPlatform(tmp_path / "calls.jsonl")
        executed = ExecutedCommands.in_data_dir(settings.agent_data_dir)
        runtime = AgentRuntime(
            settings,
            platform,
            executed,
            API_KEY,
            backoff=Backoff(initial=0.01, cap=0.05, reset_after=60),
            command_timeouts=timeouts,
            poll_interval=poll_interval,
        )
        stop = asyncio.Event()
        agent = Agent(runtime, platform, executed, stop, asyncio.create_task(runtime.run(stop)))
        agents.append(agent)
        if wait_connected:
            await asyncio.wait_for(runtime.connected.wait(), WAIT)
        return agent

    yield start
    for agent in agents:
        agent.stop.set()
        await asyncio.wait_for(agent.task, WAIT)
        agent.executed.close()


async def test_hello_welcome_and_headers(cp: FakeControlPlane, start_agent: StartAgent) -> None:
    agent = await start_agent()
    hello = cp.hellos[0]
    assert (hello.v, hello.agent_id, hello.platform, hello.capacity, hello.sessions) == (
        PROTOCOL_VERSION,
        "agent-1",
        "local",
        4,
        [],
    )
    assert hello.version == streamspace.__version__
    assert cp.headers[0]["Authorization"] == f"Bearer {API_KEY}"
    assert cp.headers[0]["X-Agent-ID"] == "agent-1"
    assert agent.runtime.welcome is not None
    assert agent.runtime.welcome.replica == "replica-a"


async def test_api_key_never_logged(
    cp: FakeControlPlane, start_agent: StartAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await start_agent()
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("streamspace")]
    assert any("Authorization: <redacted>" in message for message in ours)
    assert not any(API_KEY in message for message in ours)


async def test_hello_lists_running_sessions(
    cp: FakeControlPlane, start_agent: StartAgent, tmp_path: Path
) -> None:
    platform = NoopPlatform()
    platform.sessions["old-1"] = {"session_id": "old-1", "pid": 42}
    agent = await start_agent(platform)
    [session] = cp.hellos[0].sessions
    assert session.session_id == "old-1"
    assert session.state == {"session_id": "old-1", "pid": 42}
    assert agent.runtime.active_sessions == 1


async def test_command_ack_then_complete(cp: FakeControlPlane, start_agent: StartAgent) -> None:
    agent = await start_agent()
    await cp.command("c1", Action.START_SESSION, spec=spec())
    assert (await cp.expect("ack")).command_id == "c1"
    done = await cp.expect("complete")
    assert done.command_id == "c1"
    assert done.result["vnc"] == {"host": "127.0.0.1", "port": 5900}
    assert done.result["state"]["session_id"] == "s1"
    assert agent.runtime.active_sessions == 1

    # An empty state in the payload falls back to what the agent remembers.
    await cp.command("c2", Action.STOP_SESSION, state={}, keep_home=False)
    await cp.expect("ack")
    assert (await cp.expect("complete")).result == {}
    assert agent.platform.calls == [("start_session", "s1"), ("stop_session", "s1")]
    assert agent.runtime.active_sessions == 0


async def test_hibernate_then_wake(cp: FakeControlPlane, start_agent: StartAgent) -> None:
    agent = await start_agent()
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    await cp.expect("complete")
    await cp.command("c2", Action.HIBERNATE_SESSION, state={})
    await cp.expect("ack")
    hibernated = (await cp.expect("complete")).result["state"]
    assert hibernated["hibernated"] is True
    assert agent.runtime.active_sessions == 0
    await cp.command("c3", Action.WAKE_SESSION, spec=spec(), state=hibernated)
    await cp.expect("ack")
    woken = await cp.expect("complete")
    assert woken.result["state"]["woken"] is True
    assert agent.runtime.active_sessions == 1


async def test_duplicate_command_runs_once(cp: FakeControlPlane, start_agent: StartAgent) -> None:
    agent = await start_agent()
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    first = await cp.expect("complete")
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    second = await cp.expect("complete")
    assert second.result == first.result
    assert agent.platform.calls == [("start_session", "s1")]


async def test_duplicate_after_reconnect_runs_once(
    cp: FakeControlPlane, start_agent: StartAgent, tmp_path: Path
) -> None:
    agent = await start_agent()
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    first = await cp.expect("complete")

    await cp.ws.close(1012, "replica restarting")
    await cp.wait_for(lambda: len(cp.sockets) == 2)
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    assert (await cp.expect("complete")).result == first.result
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["start_session"]
    assert agent.runtime.connections == 2


async def test_duplicate_while_running_runs_once(
    cp: FakeControlPlane, start_agent: StartAgent
) -> None:
    platform = GatedPlatform()
    agent = await start_agent(platform)
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    await asyncio.wait_for(platform.entered.wait(), WAIT)
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    assert agent.runtime.running_commands == {"c1"}
    platform.release()
    assert (await cp.expect("complete")).command_id == "c1"
    assert agent.platform.calls == [("start_session", "s1")]
    assert len(agent.executed) == 1


async def test_commands_on_one_session_run_in_order(
    cp: FakeControlPlane, start_agent: StartAgent
) -> None:
    platform = GatedPlatform()
    agent = await start_agent(platform)
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    await asyncio.wait_for(platform.entered.wait(), WAIT)
    # A stop sent while the start runs (the control plane has no state yet) waits for it.
    await cp.command("c2", Action.STOP_SESSION, state={})
    await cp.expect("ack")
    platform.release()
    assert (await cp.expect("complete")).command_id == "c1"
    assert (await cp.expect("complete")).command_id == "c2"
    assert platform.calls == [("start_session", "s1"), ("stop_session", "s1")]
    assert platform.sessions == {}
    assert agent.runtime.active_sessions == 0


async def test_slow_platform_duplicate_runs_once(
    cp: FakeControlPlane, start_agent: StartAgent
) -> None:
    agent = await start_agent(SlowPlatform(0.2))
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.command("c1", Action.START_SESSION, spec=spec())
    kinds = [(await cp.expect(kind)).command_id for kind in ("ack", "ack", "complete")]
    assert kinds == ["c1", "c1", "c1"]
    assert agent.platform.calls == [("start_session", "s1")]


async def test_redelivered_after_drop_while_running(
    cp: FakeControlPlane, start_agent: StartAgent
) -> None:
    platform = GatedPlatform()
    agent = await start_agent(platform)
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    await asyncio.wait_for(platform.entered.wait(), WAIT)
    await cp.ws.close(1012, "replica restarting")
    await cp.wait_for(lambda: len(cp.sockets) == 2)
    # The control plane re-delivers what it never saw finish.
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    platform.release()
    assert (await cp.expect("complete")).command_id == "c1"
    assert agent.platform.calls == [("start_session", "s1")]


async def test_outcome_finished_while_disconnected_is_resent(
    cp: FakeControlPlane, start_agent: StartAgent
) -> None:
    platform = GatedPlatform()
    agent = await start_agent(platform)
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    await asyncio.wait_for(platform.entered.wait(), WAIT)
    cp.reject_with = 1013  # keep the agent away while the command finishes
    await cp.ws.close(1012, "replica restarting")
    await cp.wait_for(lambda: len(cp.close_codes) == 1)
    platform.release()
    await cp.wait_for(lambda: cp.attempts >= 3 and not agent.runtime.running_commands)
    cp.reject_with = None
    await cp.wait_for(lambda: len(cp.sockets) == 2)
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    assert (await cp.expect("complete")).result["state"]["session_id"] == "s1"
    assert agent.platform.calls == [("start_session", "s1")]


async def test_bad_platform_fails(cp: FakeControlPlane, start_agent: StartAgent) -> None:
    agent = await start_agent(BadPlatform())
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    failed = await cp.expect("failed")
    assert failed.error == "bad platform refuses start_session"
    assert failed.retryable is False
    # A final failure is recorded: a re-delivery is answered without running again.
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    assert (await cp.expect("failed")).error == "bad platform refuses start_session"
    assert agent.platform.calls == [("start_session", "s1")]


async def test_never_platform_times_out(cp: FakeControlPlane, start_agent: StartAgent) -> None:
    agent = await start_agent(NeverPlatform(), timeouts={Action.START_SESSION: 0.2})
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    failed = await cp.expect("failed")
    assert failed.error == "timed out after 0.2 s"
    assert agent.runtime.running_commands == frozenset()
    assert failed.retryable is True
    # A retryable failure is not final: a re-delivery really runs the command again.
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    assert (await cp.expect("failed")).error == "timed out after 0.2 s"
    assert agent.platform.calls == [("start_session", "s1"), ("start_session", "s1")]


async def test_invalid_payloads_fail_without_retry(
    cp: FakeControlPlane, start_agent: StartAgent
) -> None:
    agent = await start_agent()
    await cp.command("c1", Action.START_SESSION)
    await cp.expect("ack")
    failed = await cp.expect("failed")
    assert "invalid start_session payload at spec" in failed.error
    assert failed.retryable is False
    await cp.command("c2", Action.START_SESSION, session_id="s2", spec=spec("s1"))
    await cp.expect("ack")
    assert "does not match" in (await cp.expect("failed")).error
    assert agent.platform.calls == []


async def test_monitor_reports_exited_sessions_once(
    cp: FakeControlPlane, start_agent: StartAgent
) -> None:
    agent = await start_agent(poll_interval=0.02)
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    await cp.expect("complete")
    agent.platform.mark_exited("s1", "Xvnc died")
    status = await cp.expect("status")
    assert (status.session_id, status.state, status.reason) == ("s1", "exited", "Xvnc died")
    assert agent.runtime.running_sessions == frozenset()
    # Reported once: the next message is the answer to a new command, not another status.
    await cp.command("c2", Action.START_SESSION, session_id="s2", spec=spec("s2"))
    await cp.expect("ack")
    await cp.expect("complete")


async def test_malformed_and_error_frames_are_survived(
    cp: FakeControlPlane, start_agent: StartAgent, caplog: pytest.LogCaptureFixture
) -> None:
    await start_agent()
    await cp.ws.send("not json")
    await cp.ws.send(b"\xff\x00binary")
    await cp.ws.send(json.dumps({"type": "bogus", "payload": {}}))
    await cp.ws.send(json.dumps({"type": "command", "payload": {"command_id": "x"}}))
    await cp.ws.send(encode(Error(payload=ErrorPayload(code="bad_message", message="nope"))))
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    await cp.expect("complete")
    assert "control plane error bad_message: nope" in caplog.text
    assert "ignoring malformed frame" in caplog.text
    assert len(cp.sockets) == 1


async def test_heartbeats_follow_the_welcome_interval(
    cp: FakeControlPlane, start_agent: StartAgent
) -> None:
    cp.heartbeat_interval = 0.05
    await start_agent()
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(3):
        beat = await cp.expect("heartbeat")
        times.append(loop.time())
        assert (beat.active_sessions, beat.capacity) == (0, 4)
    assert times[2] - times[0] >= 0.08


async def test_stop_closes_normally_and_keeps_sessions(
    cp: FakeControlPlane, start_agent: StartAgent
) -> None:
    agent = await start_agent()
    await cp.command("c1", Action.START_SESSION, spec=spec())
    await cp.expect("ack")
    await cp.expect("complete")
    agent.stop.set()
    await asyncio.wait_for(agent.task, WAIT)
    await cp.wait_for(lambda: len(cp.close_codes) == 1)
    assert cp.close_codes == [1000]
    assert agent.platform.calls == [("start_session", "s1")]
    assert "s1" in agent.platform.sessions


async def test_stop_while_waiting_for_welcome(
    cp: FakeControlPlane, start_agent: StartAgent
) -> None:
    cp.withhold_welcome = True
    agent = await start_agent(wait_connected=False)
    await cp.wait_for(lambda: len(cp.hellos) == 1)
    agent.stop.set()
    await asyncio.wait_for(agent.task, WAIT)  # well before the 10 s hello timeout
    assert agent.runtime.connections == 0


async def test_refused_connection_keeps_retrying(
    cp: FakeControlPlane, start_agent: StartAgent, caplog: pytest.LogCaptureFixture
) -> None:
    cp.reject_with = 4403
    await start_agent(wait_connected=False)
    await cp.wait_for(lambda: cp.attempts >= 3)
    assert "agent pending approval" in caplog.text
    cp.reject_with = 4401
    await cp.wait_for(lambda: cp.attempts >= 5)
    assert "API key rejected" in caplog.text
    assert API_KEY not in caplog.text


async def test_tries_each_url_in_turn(cp: FakeControlPlane, start_agent: StartAgent) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    agent = await start_agent(url=f"http://127.0.0.1:{dead}, {cp.url}")
    assert agent.runtime.connections == 1


async def test_crashed_task_drops_the_connection(
    cp: FakeControlPlane,
    start_agent: StartAgent,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crashes = 0

    async def crashing_heartbeat(*args: Any, **kwargs: Any) -> None:
        nonlocal crashes
        crashes += 1
        if crashes == 1:
            raise RuntimeError("boom")
        await asyncio.Future()

    monkeypatch.setattr(runtime_module, "heartbeat_loop", crashing_heartbeat)
    agent = await start_agent(wait_connected=False)
    await cp.wait_for(lambda: len(cp.sockets) == 2)
    assert "agent task 'heartbeat' crashed" in caplog.text
    await asyncio.wait_for(agent.runtime.connected.wait(), WAIT)


# --- the executed-commands store ---------------------------------------------------------


def test_executed_store_survives_reopen_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "executed.sqlite3"
    store = ExecutedCommands(path, limit=5)
    for n in range(8):
        store.record(f"c{n}", Outcome.complete({"n": n}))
    store.record("c7", Outcome.fail("second outcome is ignored"))
    store.close()

    reopened = ExecutedCommands(path, limit=5)
    try:
        assert len(reopened) == 5
        assert reopened.get("c2") is None
        assert reopened.get("c3") == Outcome.complete({"n": 3})
        assert reopened.get("c7") == Outcome.complete({"n": 7})
        reopened.record("f1", Outcome.fail("nope", retryable=True))
        assert reopened.get("f1") == Outcome(completed=False, error="nope", retryable=True)
    finally:
        reopened.close()


def test_executed_store_records_many_in_one_write(tmp_path: Path) -> None:
    store = ExecutedCommands(tmp_path / "executed.sqlite3", limit=3)
    try:
        store.record("c0", Outcome.complete({"n": 0}))
        store.record_many([(f"c{n}", Outcome.complete({"n": n})) for n in range(4)])
        assert len(store) == 3  # bounded after the whole batch
        assert store.get("c0") is None
        assert store.get("c3") == Outcome.complete({"n": 3})
        store.record_many([("c3", Outcome.fail("later")), ("c9", Outcome.fail("x"))])
        assert store.get("c3") == Outcome.complete({"n": 3})  # the first outcome wins
        assert store.get("c9") == Outcome.fail("x")
    finally:
        store.close()


# --- backoff and URLs --------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    exact = Backoff(initial=0.2, cap=10.0, jitter=0.0)
    assert [exact.delay(n) for n in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    assert exact.delay(10_000) == 10.0
    jittered = Backoff()
    assert all(0.1 <= jittered.delay(0) <= 0.3 for _ in range(200))


def test_urls() -> None:
    assert base_urls(" http://a:1/, https://b ") == ["http://a:1", "https://b"]
    assert ws_url("http://a:1") == "ws://a:1/api/v1/agents/connect"
    assert ws_url("https://b") == "wss://b/api/v1/agents/connect"
    assert http_url("wss://b", "/x") == "https://b/x"
    with pytest.raises(ValueError):
        base_urls(" , ")


# --- credentials -------------------------------------------------------------------------


def _settings(tmp_path: Path, **values: Any) -> AgentSettings:
    return AgentSettings(agent_id="agent-1", agent_data_dir=tmp_path / "agent", **values)


async def test_explicit_api_key_wins(tmp_path: Path) -> None:
    save_key(tmp_path / "agent" / "agent-key", "from-file")
    settings = _settings(tmp_path, agent_api_key="explicit")
    assert await obtain_api_key(settings, "local") == "explicit"


async def test_api_key_from_key_file(tmp_path: Path) -> None:
    path = tmp_path / "agent" / "agent-key"
    save_key(path, "from-file\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = _settings(tmp_path, agent_api_key=None, agent_bootstrap_key=None)
    assert await obtain_api_key(settings, "local") == "from-file"


async def test_no_credentials_is_a_config_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path, agent_api_key=None, agent_bootstrap_key=None)
    with pytest.raises(AgentConfigError, match="AGENT_API_KEY"):
        await obtain_api_key(settings, "local")


def _registrar(status: int, body: dict[str, Any], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


async def test_registration_saves_the_key(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    transport = _registrar(
        201, {"agent_id": "agent-1", "api_key": "new-key", "status": "pending"}, seen
    )
    settings = _settings(
        tmp_path,
        control_plane_url="ws://cp.example:8080",
        agent_api_key=None,
        agent_bootstrap_key="boot",
        agent_capacity=3,
    )
    assert await obtain_api_key(settings, "docker", transport=transport) == "new-key"
    [request] = seen
    assert str(request.url) == "http://cp.example:8080/api/v1/agents/register"
    assert request.headers["Authorization"] == "Bearer boot"
    assert json.loads(request.content) == {
        "agent_id": "agent-1",
        "platform": "docker",
        "capacity": 3,
    }
    path = tmp_path / "agent" / "agent-key"
    assert path.read_text() == "new-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The next start uses the saved key without registering again.
    assert await obtain_api_key(settings, "docker", transport=transport) == "new-key"
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("status", "message"), [(409, "use its API key"), (401, "AGENT_BOOTSTRAP_KEY")]
)
async def test_registration_errors(tmp_path: Path, status: int, message: str) -> None:
    transport = _registrar(status, {"detail": "no"}, [])
    settings = _settings(tmp_path, agent_api_key=None, agent_bootstrap_key="boot")
    with pytest.raises(AgentConfigError, match=message):
        await obtain_api_key(settings, "local", transport=transport)
    assert not (tmp_path / "agent" / "agent-key").exists()


def test_fake_platforms_are_platforms() -> None:
    for platform in (NoopPlatform(), SlowPlatform(0.1), NeverPlatform(), BadPlatform()):
        assert isinstance(platform, Platform)
    logging.getLogger(__name__).debug("fake platforms ok")


async def test_an_inventory_beyond_one_frame_follows_the_hello_in_pages(
    cp: FakeControlPlane, start_agent: StartAgent
) -> None:
    platform = NoopPlatform()
    for n in range(1500):
        platform.sessions[f"s-{n}"] = {"session_id": f"s-{n}", "pad": "x" * 40}
    await start_agent(platform)
    hello = cp.hellos[0]
    assert hello.more
    reported = [session.session_id for session in hello.sessions]
    while True:
        page = await cp.expect("inventory")
        reported += [session.session_id for session in page.sessions]
        if page.last:
            break
    assert reported == list(platform.sessions)


class _OutgrownPlatform(NoopPlatform):
    """Reports one session whose state outgrew every bound (as a buggy platform might)."""

    async def list_running(self) -> list[RunningSession]:
        huge = RunningSession.model_construct(
            session_id="huge", vnc=None, state={"pad": "x" * MAX_FRAME_BYTES}
        )
        return [RunningSession(session_id="small"), huge]


async def test_a_session_too_large_for_a_frame_is_left_out_with_an_error(
    cp: FakeControlPlane, start_agent: StartAgent, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await start_agent(_OutgrownPlatform())
    assert [session.session_id for session in cp.hellos[0].sessions] == ["small"]
    assert not cp.hellos[0].more
    assert agent.runtime.connections == 1  # connected at once, not refused in a loop
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage().startswith("session huge left out of the inventory: its entry takes")
