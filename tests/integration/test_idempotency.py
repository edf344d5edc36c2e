"""``Idempotency-Key`` on launches across two replicas (one PostgreSQL, one Redis): a retry
on another replica answers with the first session, never makes a second."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.database import Database
from tests.helpers import logged_in, wait_for_agent
from tests.processes import AgentProcess, create_user, replica_processes
from tests.services import RedisServer


async def test_a_key_makes_one_session_on_any_replica(
    processes: None, tmp_path: Path, pg_url: str, redis_server: RedisServer, database: Database
) -> None:
    pods = replica_processes(tmp_path, database_url=pg_url, redis_server=redis_server)
    for pod in pods:
        pod.start()
    AgentProcess(tmp_path / "agent", control_plane_url=pods[0].url, agent_id="a1").start()
    async with logged_in(pods[0].url) as one, logged_in(pods[1].url) as two:
        await wait_for_agent(one, "a1")
        key = {"Idempotency-Key": "launch-0001"}
        first = await one.post("/api/v1/sessions", json={"template": "xterm"}, headers=key)
        assert first.status_code == 201, first.text
        again = await two.post("/api/v1/sessions", json={"template": "xterm"}, headers=key)
        assert again.status_code == 201, again.text
        assert again.json()["id"] == first.json()["id"]

        other = await two.post("/api/v1/sessions", json={"template": "xedit"}, headers=key)
        assert other.status_code == 422, other.text
        assert "different request" in other.json()["detail"]

        # Twenty at once with one new key, spread over both replicas: one session.
        together = {"Idempotency-Key": "launch-0002"}
        answers = await asyncio.gather(
            *(
                client.post("/api/v1/sessions", json={"template": "xterm"}, headers=together)
                for client in [one, two] * 10
            )
        )
        made = {answer.json()["id"] for answer in answers if answer.status_code == 201}
        refused = [answer for answer in answers if answer.status_code != 201]
        assert len(made) == 1, made
        # A twin in the same batch whose first failed would be told to retry (409); here
        # the first succeeded, so every answer is the session.
        assert not refused, [(answer.status_code, answer.text) for answer in refused]

        for bad in ["", "has space", "x" * 256]:
            refused_key = await one.post(
                "/api/v1/sessions", json={"template": "xterm"}, headers={"Idempotency-Key": bad}
            )
            assert refused_key.status_code == 422, (bad, refused_key.text)
    sessions = await database.sessions()
    assert sorted(s.id for s in sessions) == sorted({first.json()["id"], *made})


async def test_keys_are_per_user(
    processes: None, tmp_path: Path, pg_url: str, redis_server: RedisServer
) -> None:
    """Another user's launch with the same key is a launch of its own."""
    pods = replica_processes(tmp_path, database_url=pg_url, redis_server=redis_server, count=1)
    pods[0].start()
    AgentProcess(tmp_path / "agent", control_plane_url=pods[0].url, agent_id="a1").start()
    async with logged_in(pods[0].url) as admin:
        await wait_for_agent(admin, "a1")
        await asyncio.to_thread(create_user, pg_url, "ann", "ann-password-1")
        key = {"Idempotency-Key": "same"}
        mine = await admin.post("/api/v1/sessions", json={"template": "xterm"}, headers=key)
        async with logged_in(pods[0].url, "ann", "ann-password-1") as ann:
            hers = await ann.post("/api/v1/sessions", json={"template": "xterm"}, headers=key)
        assert mine.status_code == hers.status_code == 201
        assert mine.json()["id"] != hers.json()["id"]


async def test_a_key_makes_one_template_group_user_and_token_on_any_replica(
    processes: None, tmp_path: Path, pg_url: str, redis_server: RedisServer
) -> None:
    """The other creating POSTs: a retry (on the other replica, or ten at once) answers as
    the first did and makes nothing; the same key with another body is refused with 422."""
    pods = replica_processes(tmp_path, database_url=pg_url, redis_server=redis_server)
    for pod in pods:
        pod.start()
    template = {"name": "idem-xterm", "display_name": "Idem", "command": ["xterm"]}
    group = {"name": "idem-team", "max_running_sessions": 2}
    user = {"username": "idem-carol", "password": "a-long-password", "role": "user"}
    async with logged_in(pods[0].url) as one, logged_in(pods[1].url) as two:
        for path, body, other, name_field in [
            ("/api/v1/templates", template, {**template, "display_name": "Other"}, "name"),
            ("/api/v1/groups", group, {**group, "max_running_sessions": 3}, "name"),
            ("/api/v1/users", user, {**user, "role": "admin"}, "username"),
        ]:
            key = {"Idempotency-Key": f"create-{path.rsplit('/', 1)[-1]}"}
            answers = await asyncio.gather(
                *(client.post(path, json=body, headers=key) for client in [one, two] * 5)
            )
            assert {answer.status_code for answer in answers} == {201}, [
                (answer.status_code, answer.text) for answer in answers
            ]
            assert {answer.json()[name_field] for answer in answers} == {body[name_field]}
            refused = await two.post(path, json=other, headers=key)
            assert refused.status_code == 422, refused.text
            assert "different request" in refused.json()["detail"]
            listed = await one.get(path, params={"limit": 500})
            names = [row[name_field] for row in listed.json()]
            assert names.count(body[name_field]) == 1, names
            without_key = await one.post(path, json=body)
            assert without_key.status_code == 409, without_key.text  # no key: plain conflict
        # The generated password of a user is in the first answer only.
        generated = {"username": "idem-dave", "role": "user"}
        key = {"Idempotency-Key": "create-dave"}
        first = await one.post("/api/v1/users", json=generated, headers=key)
        again = await two.post("/api/v1/users", json=generated, headers=key)
        assert (first.status_code, again.status_code) == (201, 201), (first.text, again.text)
        assert first.json()["password"] and again.json()["password"] is None
        assert again.json() == {**first.json(), "password": None}
        # A personal API token likewise: its secret is in the first answer only.
        key = {"Idempotency-Key": "token-ci"}
        first = await one.post("/api/v1/auth/tokens", json={"name": "ci"}, headers=key)
        again = await two.post("/api/v1/auth/tokens", json={"name": "ci"}, headers=key)
        assert (first.status_code, again.status_code) == (201, 201), (first.text, again.text)
        assert first.json()["token"].startswith("ssp_") and again.json()["token"] is None
        assert again.json()["id"] == first.json()["id"]
        other = await two.post("/api/v1/auth/tokens", json={"name": "cd"}, headers=key)
        assert other.status_code == 422, other.text
        names = [token["name"] for token in (await one.get("/api/v1/auth/tokens")).json()]
        assert names == ["ci"], names
