"""Groups and quotas over real HTTP: two replicas on one PostgreSQL and one Redis, one fake
agent. Refusals answer in words and create nothing; a quota holds under concurrent launches
of one user spread over both replicas.

The replicas and the agent are started once for the module; each test has its own users
and group.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from streamspace.db.models import AgentCommand, IdempotencyKey, Session, User
from tests.database import Database
from tests.helpers import logged_in, wait_for_agent, wait_for_state
from tests.processes import AgentProcess, ApiProcess, create_user, replica_processes
from tests.services import PostgresServer, RedisServer

AGENT = "quota-agent"
PASSWORD = "member-password-1"
_names = itertools.count(1)


@dataclass
class Site:
    replicas: list[ApiProcess]
    database_url: str

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]


@pytest.fixture(scope="module")
def site(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("quotas")
    postgres_server.start()
    redis_server.start()
    redis_server.flushall()
    url = postgres_server.create_database("test_quotas_module")
    replicas = replica_processes(directory, database_url=url, redis_server=redis_server)
    agent = AgentProcess(
        directory / "agent",
        control_plane_url=replicas[0].url,
        agent_id=AGENT,
        extra_args=["--capacity", "200"],
    )
    try:
        replicas[0].start()  # alone first: it creates the schema and the admin
        replicas[1].start()
        agent.start()
        yield Site(replicas, url)
    finally:
        for process in [agent, *replicas]:
            process.kill()
        postgres_server.drop_database("test_quotas_module")


@pytest.fixture
async def database(site: Site) -> AsyncIterator[Database]:
    db = Database(site.database_url)
    try:
        yield db
    finally:
        await db.close()


async def member_of_group(site: Site, admin: httpx.AsyncClient, **quota: Any) -> tuple[str, str]:
    """A new user in a new group with ``quota``; returns (username, group)."""
    n = next(_names)
    username, group = f"member{n}", f"group{n}"
    await asyncio.to_thread(create_user, site.database_url, username, PASSWORD)
    created = await admin.post("/api/v1/groups", json={"name": group, **quota})
    assert created.status_code == 201, created.text
    added = await admin.put(f"/api/v1/groups/{group}/members/{username}")
    assert added.status_code == 200, added.text
    assert added.json()["members"] == [username]
    return username, group


async def rows_of(database: Database, username: str) -> tuple[int, int, int]:
    """The user's sessions, their commands and the user's idempotency keys."""
    async with database.session() as db:
        user_id = await db.scalar(select(User.id).where(User.username == username))
        sessions = select(Session.id).where(Session.owner_id == user_id)
        counts = [
            await db.scalar(select(func.count()).select_from(sessions.subquery())),
            await db.scalar(select(func.count()).where(AgentCommand.session_id.in_(sessions))),
            await db.scalar(select(func.count()).where(IdempotencyKey.user_id == user_id)),
        ]
    return (int(counts[0] or 0), int(counts[1] or 0), int(counts[2] or 0))


async def launch(
    client: httpx.AsyncClient, template: str = "xterm", **headers: str
) -> httpx.Response:
    return await client.post("/api/v1/sessions", json={"template": template}, headers=headers)


async def test_quota_holds_under_20_concurrent_launches_over_two_replicas(
    site: Site, database: Database
) -> None:
    async with logged_in(site.urls[0]) as admin:
        await wait_for_agent(admin, AGENT)
        username, _ = await member_of_group(site, admin, max_running_sessions=5)
    async with (
        logged_in(site.urls[0], username, PASSWORD) as one,
        logged_in(site.urls[1], username, PASSWORD) as two,
    ):
        answers = await asyncio.gather(*(launch(client) for client in [one, two] * 10))
        made = [answer for answer in answers if answer.status_code == 201]
        refused = [answer for answer in answers if answer.status_code != 201]
        assert len(made) == 5, [(a.status_code, a.text) for a in answers]
        assert {answer.status_code for answer in refused} == {429}
        assert {answer.json()["detail"] for answer in refused} == {
            "quota reached: you may run 5 sessions at once (5 running)"
        }
        quota = (await two.get("/api/v1/me/quota")).json()
    assert await rows_of(database, username) == (5, 5, 0)
    assert (quota["running_sessions"], quota["max_running_sessions"]) == (5, 5)


async def test_refusals_answer_in_words_and_create_nothing(site: Site, database: Database) -> None:
    async with logged_in(site.urls[0]) as admin:
        await wait_for_agent(admin, AGENT)
        username, group = await member_of_group(
            site,
            admin,
            max_running_sessions=2,
            max_session_minutes=90,
            allowed_templates=["xterm"],
        )
    async with logged_in(site.urls[1], username, PASSWORD) as client:
        forbidden = await launch(client, "xedit")
        assert forbidden.status_code == 403, forbidden.text
        assert forbidden.json()["detail"] == "template 'xedit' is not allowed for your groups"
        first, second = [await launch(client) for _ in range(2)]
        assert first.status_code == second.status_code == 201
        assert first.json()["max_age_seconds"] == 90 * 60
        over = await launch(client, **{"Idempotency-Key": "third"})
        assert over.status_code == 429, over.text
        assert over.json()["detail"] == "quota reached: you may run 2 sessions at once (2 running)"
        assert await rows_of(database, username) == (2, 2, 0)  # no session, command or key

        quota = (await client.get("/api/v1/me/quota")).json()
        assert quota == {
            "groups": [group],
            "running_sessions": 2,
            "hibernated_sessions": 0,
            "max_running_sessions": 2,
            "max_hibernated_sessions": None,
            "max_session_minutes": 90,
            "allowed_templates": ["xterm"],
        }
        stopped = await client.delete(f"/api/v1/sessions/{first.json()['id']}")
        assert stopped.status_code == 202
        await wait_for_state(client, first.json()["id"], "terminated")
        third = await launch(client, **{"Idempotency-Key": "third"})  # the key is still free
        assert third.status_code == 201, third.text
        repeat = await launch(client, **{"Idempotency-Key": "third"})
        assert repeat.status_code == 201 and repeat.json()["id"] == third.json()["id"]


async def test_hibernated_quota_and_waking_within_the_running_quota(
    site: Site, database: Database
) -> None:
    async with logged_in(site.urls[0]) as admin:
        await wait_for_agent(admin, AGENT)
        username, group = await member_of_group(
            site, admin, max_running_sessions=2, max_hibernated_sessions=1
        )
        async with logged_in(site.urls[1], username, PASSWORD) as client:
            ids = [(await launch(client)).json()["id"] for _ in range(2)]
            for session_id in ids:
                await wait_for_state(client, session_id, "running")
            first = await client.post(f"/api/v1/sessions/{ids[0]}/hibernate")
            assert first.status_code == 202, first.text
            await wait_for_state(client, ids[0], "hibernated")
            second = await client.post(f"/api/v1/sessions/{ids[1]}/hibernate")
            assert second.status_code == 429, second.text
            assert second.json()["detail"] == (
                "quota reached: you may keep 1 session hibernated (1 hibernated); stop one first"
            )
            assert (await client.get(f"/api/v1/sessions/{ids[1]}")).json()["state"] == "running"

            assert (await launch(client)).status_code == 201  # 2 running again
            woken = await client.post(f"/api/v1/sessions/{ids[0]}/wake")
            assert woken.status_code == 429, woken.text
            assert "you may run 2 sessions at once (2 running)" in woken.json()["detail"]

            # An administrator raises the limit: the wake goes through.
            raised = await admin.patch(f"/api/v1/groups/{group}", json={"max_running_sessions": 3})
            assert raised.status_code == 200, raised.text
            assert raised.json()["max_hibernated_sessions"] == 1  # left as it was
            woken = await client.post(f"/api/v1/sessions/{ids[0]}/wake")
            assert woken.status_code == 202, woken.text
    assert (await rows_of(database, username))[0] == 3


async def test_groups_api_is_for_administrators_and_validates(site: Site) -> None:
    async with logged_in(site.urls[0]) as admin:
        username, group = await member_of_group(site, admin, max_running_sessions=0)
        async with logged_in(site.urls[0], username, PASSWORD) as member:
            assert (await member.get("/api/v1/groups")).status_code == 403
            quota = (await member.get("/api/v1/me/quota")).json()
            assert quota["groups"] == [group] and quota["max_running_sessions"] == 0
            refused = await launch(member)
            assert refused.status_code == 429, refused.text
            assert "you may run 0 sessions at once" in refused.json()["detail"]
        metrics = (await admin.get("/metrics")).text
        assert 'streamspace_quota_refusals_total{limit="running"}' in metrics
        cleared = await admin.patch(f"/api/v1/groups/{group}", json={"max_running_sessions": None})
        assert cleared.json()["max_running_sessions"] is None
        taken = await admin.post("/api/v1/groups", json={"name": group})
        assert taken.status_code == 409 and "already exists" in taken.json()["detail"]
        unknown = await admin.post(
            "/api/v1/groups", json={"name": "x", "allowed_templates": ["no"]}
        )
        assert unknown.status_code == 422 and "no such template: 'no'" in unknown.json()["detail"]
        negative = await admin.post(
            "/api/v1/groups", json={"name": "y", "max_running_sessions": -1}
        )
        assert negative.status_code == 422
        nobody = await admin.put(f"/api/v1/groups/{group}/members/nobody")
        assert nobody.status_code == 404 and "user 'nobody' not found" in nobody.json()["detail"]
        listed = (await admin.get("/api/v1/groups")).json()
        assert [g["members"] for g in listed if g["name"] == group] == [[username]]
        removed = await admin.delete(f"/api/v1/groups/{group}/members/{username}")
        assert removed.status_code == 200 and removed.json()["members"] == []
        again = await admin.delete(f"/api/v1/groups/{group}/members/{username}")
        assert again.status_code == 404
        assert (await admin.delete(f"/api/v1/groups/{group}")).status_code == 204
        assert (await admin.get(f"/api/v1/groups/{group}")).status_code == 404
