"""Durable command routing under faults: several replicas, one PostgreSQL, one Redis, real
processes. Every test proves zero commands lost and none run twice: each session created
reaches ``running``, its one ``start_session`` row is ``completed``, and the agents'
execution logs show exactly one *finished* start for it (``tests/cluster.py``)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.cluster import Cluster
from tests.helpers import eventually
from tests.manual_agent import ManualAgent
from tests.services import PostgresServer, RedisServer

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]
REDIS_DEGRADED = "unavailable (degraded: database polling)"


@pytest.fixture
async def make_cluster(
    processes: None, tmp_path: Path, pg_url: str, redis_url: str, redis_server: RedisServer
) -> AsyncIterator[MakeCluster]:
    """``make_cluster(replicas=3, env={...})``; processes are killed, clients closed after."""
    made: list[Cluster] = []

    def make(replicas: int = 3, env: dict[str, str] | None = None) -> Cluster:
        cluster = Cluster(
            tmp_path, pg_url=pg_url, redis_server=redis_server, replicas=replicas, env=env or {}
        )
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.kill()  # before pg_url drops the database under the replicas
        await cluster.close()


def redis_up(scrape: str, pod: str) -> float | None:
    match = re.search(rf'^streamspace_redis_up\{{replica="{pod}"\}} (\S+)$', scrape, re.M)
    return float(match.group(1)) if match else None


@pytest.mark.timeout(240)  # ~25-45 commands/s on a 2-core machine: 30-60 s of load
async def test_thousand_commands_three_replicas_ten_agents(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(replicas=3)
    rows = await cluster.start_with_agents(10)
    # Agent i dialled replica i % 3 first: the agents are spread over all three.
    placed = {agent_id: row.replica for agent_id, row in rows.items()}
    assert placed == {f"agent-{i}": f"pod-{i % 3 + 1}" for i in range(10)}

    async with await cluster.load(concurrency=10) as load:
        began = time.monotonic()
        await load.create(1000)
        created_in = time.monotonic() - began
        settled_in = await cluster.wait_settled(1000, timeout=90)
    total = time.monotonic() - began
    print(
        f"\n1000 commands over 3 replicas / 10 agents: created in {created_in:.1f} s, "
        f"all completed {total:.1f} s after the first request "
        f"({1000 / total:.0f} commands/s; settled {settled_in:.1f} s after the last)"
    )
    assert sorted(load.by_replica.values()) == [333, 333, 334], load.by_replica
    assert not load.refused, load.refused
    assert await cluster.assert_exactly_once(load.created) == 1000


async def test_replica_killed_mid_stream_agents_move_to_survivors(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(replicas=3)
    rows = await cluster.start_with_agents(6)
    victim = cluster.replica("pod-2")
    moved = sorted(agent_id for agent_id, row in rows.items() if row.replica == "pod-2")
    assert len(moved) == 2, {agent_id: row.replica for agent_id, row in rows.items()}

    async with await cluster.load(concurrency=10) as load:
        creating = asyncio.create_task(load.create(200))

        async def halfway() -> bool:
            return len(load.created) >= 100 or creating.done()

        await eventually(halfway, timeout=60, message="100 sessions created")
        in_flight = await cluster.command_counts()
        victim.kill()  # SIGKILL: no goodbye to its agents, no cleanup in Redis
        await creating
        # Requests that hit the dead replica failed and went to a survivor instead.
        assert any(key.startswith(f"{victim.url} ") for key in load.refused), load.refused
        assert victim.url in load.down
    print(f"\nat the kill: {dict(in_flight)}; refused: {dict(load.refused)}")
    assert in_flight["completed"] < sum(in_flight.values()), "nothing was in flight at the kill"

    await cluster.wait_settled(200, timeout=60)
    # Exactly 200: a retried request carries its Idempotency-Key, so a launch the dead
    # replica wrote before it died is answered from there, not launched again.
    assert await cluster.assert_exactly_once(load.created) == 200
    # The dead replica's agents reconnected to survivors (registry and database agree).
    rows = await cluster.wait_online()
    pods = await cluster.agent_pods()
    for agent_id in moved:
        assert rows[agent_id].replica in ("pod-1", "pod-3"), rows[agent_id].replica
        assert pods[agent_id] == rows[agent_id].replica, pods


async def test_redis_restarted_mid_stream(
    make_cluster: MakeCluster, redis_server: RedisServer
) -> None:
    cluster = make_cluster(replicas=3)
    await cluster.start_with_agents(3)  # one per replica: most doorbells cross replicas

    async with await cluster.load(concurrency=10) as load:
        creating = asyncio.create_task(load.create(200))

        async def some_created() -> bool:
            return len(load.created) >= 70 or creating.done()

        await eventually(some_created, timeout=60, message="70 sessions created")
        created_before = len(load.created)
        await asyncio.to_thread(redis_server.restart)  # loses every key (no persistence)
        created_during = len(load.created) - created_before
        await creating
    assert created_before < 200, "the restart came after the load"
    print(f"\n{created_during} session(s) created while Redis restarted")

    await cluster.wait_settled(200, timeout=60)
    assert await cluster.assert_exactly_once(load.created) == 200

    # The replicas re-created the registry and their liveness keys, and resubscribed.
    async def registry_back() -> bool:
        rows = await cluster.agent_rows()
        pods = await cluster.agent_pods()
        connected = await cluster.redis.mget([f"agent:{a}:connected" for a in cluster.agent_ids])
        alive = await cluster.redis.mget([f"pod:pod-{n}:alive" for n in (1, 2, 3)])
        channels = set(await cluster.redis.pubsub_channels("pod:*"))
        return (
            all(pods[a] == rows[a].replica for a in cluster.agent_ids)
            and all(connected)
            and all(alive)
            and channels == {f"pod:pod-{n}:commands" for n in (1, 2, 3)}
        )

    await eventually(registry_back, timeout=15, interval=0.2, message="registry re-created")
    for url in cluster.urls:
        status, body = await cluster.readyz(url)
        assert (status, body.get("redis")) == (200, "ok"), body


async def test_redis_down_ten_seconds_commands_flow_by_database_polling(
    make_cluster: MakeCluster, redis_server: RedisServer
) -> None:
    cluster = make_cluster(replicas=3)
    await cluster.start_with_agents(3)  # one per replica: most doorbells cross replicas

    async with await cluster.load(concurrency=10) as load:
        await load.create(30)
        await cluster.wait_settled(30)
        killed_at = time.monotonic()
        await asyncio.to_thread(redis_server.kill)
        try:

            async def all_degraded() -> bool:
                answers = [await cluster.readyz(url) for url in cluster.urls]
                return all(a == (200, {**a[1], "redis": REDIS_DEGRADED}) for a in answers)

            await eventually(all_degraded, timeout=8, message="every replica degraded")
            # Keep creating through every replica for the 10 s Redis stays down; the
            # commands reach their agents (2 of 3 on another replica) by the database poll.
            degraded_in = time.monotonic() - killed_at
            during: list[str] = []
            while time.monotonic() - killed_at < 10:
                during += await load.create(10)
            created_until = time.monotonic() - killed_at
            await cluster.wait_settled(30 + len(during), timeout=20)
            assert not redis_server.running  # they all got there by the database poll
            for pod, url in zip(("pod-1", "pod-2", "pod-3"), cluster.urls, strict=True):
                assert redis_up(await cluster.metrics(url), pod) == 0.0
                status, body = await cluster.readyz(url)
                assert (status, body["redis"]) == (200, REDIS_DEGRADED), body
        finally:
            await asyncio.to_thread(redis_server.restart)
        print(
            f"\nRedis down: every replica degraded after {degraded_in:.1f} s; "
            f"{len(during)} session(s) created until {created_until:.1f} s, all running "
            "before Redis came back"
        )
        assert len(during) >= 10

        async def all_up() -> bool:
            for pod, url in zip(("pod-1", "pod-2", "pod-3"), cluster.urls, strict=True):
                _, body = await cluster.readyz(url)
                if body.get("redis") != "ok" or redis_up(await cluster.metrics(url), pod) != 1:
                    return False
            return True

        await eventually(all_up, timeout=15, interval=0.2, message="every replica back on Redis")
        await load.create(30)
    await cluster.wait_settled(60 + len(during))
    assert await cluster.assert_exactly_once(load.created) == 60 + len(during)


async def test_postgres_restart_503_then_recovery(
    make_cluster: MakeCluster, postgres_server: PostgresServer
) -> None:
    cluster = make_cluster(replicas=2)
    await cluster.start_with_agents(4)

    async with await cluster.load(concurrency=10) as load, await cluster.load() as fresh:
        await load.create(50)
        # Some of the 50 are still on their way when the database goes away.
        await asyncio.to_thread(postgres_server.stop)
        try:
            answers = await _answers_without_database(cluster, load.token, fresh.token)
        finally:
            await asyncio.to_thread(postgres_server.start)
            await cluster.forget_database_connections()

        async def ready() -> bool:
            return all([(await cluster.readyz(url))[0] == 200 for url in cluster.urls])

        await eventually(ready, timeout=20, interval=0.2, message="replicas ready again")
        await cluster.wait_online(timeout=40)
        await load.create(50)
    await cluster.wait_settled(100, timeout=60)
    # Both checks are reported together: one failing must not hide the other.
    problems = []
    try:
        assert await cluster.assert_exactly_once(load.created) == 100
    except AssertionError as exc:
        problems.append(f"after the restart: {exc}")
    # While the database was down: 503 (retry later), promptly; not a hang, not a 500.
    wrong = {
        what: answer
        for what, answer in answers.items()
        if answer[0] != 503 or answer[2] > 5 or "unavailable" not in answer[1]
    }
    if wrong:
        problems.append(f"answers while the database was down: {wrong}")
    assert not problems, "\n".join(problems)


async def _answers_without_database(
    cluster: Cluster, cached_token: str, fresh_token: str
) -> dict[str, tuple[int, str, float]]:
    """``{request: (status, body, seconds)}`` from every replica while PostgreSQL is down.

    The cached token was used on every replica just before, the fresh one never: both
    paths (the replica's token cache, the database lookup) are tried."""
    answers: dict[str, tuple[int, str, float]] = {}
    timeout = aiohttp.ClientTimeout(total=15)
    connector = aiohttp.TCPConnector(force_close=True)  # one request per connection
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        for pod, url in zip(("pod-1", "pod-2"), cluster.urls, strict=True):
            requests: list[tuple[str, str, str, str | None]] = [
                (f"{pod} POST /api/v1/sessions ({name} token)", "POST", "/api/v1/sessions", token)
                for name, token in (("cached", cached_token), ("fresh", fresh_token))
            ]
            requests.append((f"{pod} GET /readyz", "GET", "/readyz", None))
            for what, method, path, token in requests:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                body = {"template": "xterm"} if method == "POST" else None
                began = time.monotonic()
                try:
                    async with http.request(
                        method, url + path, json=body, headers=headers
                    ) as response:
                        answer = (response.status, await response.text())
                except TimeoutError:
                    answer = (0, "no answer (timeout)")
                except aiohttp.ClientError as exc:
                    answer = (0, f"no answer ({exc!r})")
                answers[what] = (*answer, round(time.monotonic() - began, 2))
    return answers


async def test_agent_killed_mid_command_runs_it_to_completion_once(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(replicas=2)
    await cluster.start()
    slow = ["--delay", "3"]
    agent = cluster.add_agent("agent-slow", first=0, behaviour="slow", extra_args=slow)
    await cluster.wait_online()

    async with await cluster.load() as load:
        (session_id,) = await load.create(1, urls=[cluster.urls[1]])  # doorbell pod-2 → pod-1

    def lines() -> list[dict[str, object]]:
        text = agent.execution_log.read_text() if agent.execution_log.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    async def started() -> bool:
        return any(line["session_id"] == session_id for line in lines())

    await eventually(started, timeout=15, message="the slow start under way")
    agent.kill()  # SIGKILL in the middle of the 3 s start
    first = lines()
    assert [line.get("phase") for line in first] == ["started"], first
    (command,) = await cluster.start_commands()
    assert command.status in ("sent", "acknowledged"), command.status

    restarted = cluster.add_agent("agent-slow", first=0, behaviour="slow", extra_args=slow)
    assert restarted.execution_log == agent.execution_log
    await cluster.wait_settled(1, timeout=30)
    assert await cluster.assert_exactly_once([session_id]) == 1
    log = lines()
    assert [(line.get("phase"), line["pid"]) for line in log] == [
        ("started", agent.pid),
        ("started", restarted.pid),
        ("done", restarted.pid),
    ], log
    (command,) = await cluster.start_commands()
    assert command.attempts >= 2


async def test_duplicate_connection_on_another_replica_newer_wins(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster(replicas=2)
    await cluster.start()
    pod1, pod2 = cluster.replicas
    older = await ManualAgent.registered(pod1.url, "agent-x")
    await older.connect()

    async def heartbeats(agent: ManualAgent) -> None:
        while True:
            await agent.send("heartbeat", {"active_sessions": 0, "capacity": 10})
            await asyncio.sleep(1.0)  # the agent's own heartbeat interval, not a wait

    beating = [asyncio.create_task(heartbeats(older))]
    try:

        async def mapped_to(pod: str) -> bool:
            return await cluster.redis.get("agent:agent-x:pod") == pod

        await eventually(lambda: mapped_to("pod-1"), message="agent-x on pod-1")

        newer = ManualAgent(pod2.url, "agent-x", older.api_key)
        await newer.connect()
        beating.append(asyncio.create_task(heartbeats(newer)))
        assert await cluster.redis.get("agent:agent-x:pod") == "pod-2"
        connection = await cluster.redis.get("agent:agent-x:connected")
        assert connection

        code, reason, _ = await older.closed_with(timeout=5)  # a few heartbeat intervals
        assert code == 4409, (code, reason)

        async def cleaned_up() -> bool:
            return "[AgentHub] Unregistered agent: agent-x" in pod1.output()

        await eventually(cleaned_up, message="pod-1 cleaned up the older connection")
        # The older connection's cleanup removed nothing of the newer one's: stays so.
        for _ in range(10):
            assert await cluster.redis.get("agent:agent-x:pod") == "pod-2"
            assert await cluster.redis.get("agent:agent-x:connected") == connection
            await asyncio.sleep(0.2)
        row = await cluster.database.agent("agent-x")
        assert row is not None
        assert (row.status, row.replica) == ("online", "pod-2")

        # A command created on pod-1 reaches the connection on pod-2.
        async with await cluster.load(concurrency=1) as load:
            (session_id,) = await load.create(1, urls=[pod1.url])
        message = await newer.receive()
        while message.type != "command":
            message = await newer.receive()
        payload = message.payload
        assert (payload.action, payload.session_id) == ("start_session", session_id)
        await newer.send("ack", {"command_id": payload.command_id})
        result = {"vnc": {"host": "127.0.0.1", "port": 5901}, "state": {"fake": True}}
        await newer.send("complete", {"command_id": payload.command_id, "result": result})
        await cluster.wait_settled(1)
        (command,) = await cluster.start_commands()
        assert command.status == "completed"
    finally:
        for task in beating:
            task.cancel()
