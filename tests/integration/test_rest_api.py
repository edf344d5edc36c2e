"""REST validation, authentication and ownership against a real API replica."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from tests.database import Database
from tests.helpers import logged_in
from tests.manual_agent import ManualAgent
from tests.processes import ApiProcess, create_user


async def test_every_api_route_needs_authentication(api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        routes = (await anonymous.get("/openapi.json")).json()["paths"]
        open_routes = {
            "/healthz",
            "/readyz",
            "/api/v1/auth/login",
            "/api/v1/agents/register",
            "/",
        }
        checked = 0
        for path, methods in routes.items():
            if path in open_routes:
                continue
            for method in methods:
                url = path.replace("{session_id}", "x").replace("{name}", "x")
                url = url.replace("{agent_id}", "x").replace("{command_id}", "x")
                response = await anonymous.request(method.upper(), url)
                assert response.status_code == 401, (method, path, response.text)
                checked += 1
        assert checked >= 15
        assert (await anonymous.get("/healthz")).status_code == 200


async def test_login_errors(api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:
        wrong = await client.post(
            "/api/v1/auth/login", json={"username": "admin", "password": "nope"}
        )
        assert (wrong.status_code, wrong.json()["detail"]) == (401, "wrong username or password")
        unknown = await client.post(
            "/api/v1/auth/login", json={"username": "ghost", "password": "nope"}
        )
        assert unknown.json() == wrong.json()
        missing = await client.post("/api/v1/auth/login", json={"username": "admin"})
        assert missing.status_code == 422
        assert missing.json()["detail"][0]["loc"] == ["body", "password"]


@pytest.mark.parametrize(
    "body",
    [{}, {"template": ""}, {"template": 5}, {"template": "xterm", "extra": 1}, []],
    ids=["empty", "blank", "number", "extra-field", "list"],
)
async def test_invalid_session_bodies_are_422_and_create_nothing(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database, body: object
) -> None:
    response = await admin.post("/api/v1/sessions", json=body)
    assert response.status_code == 422, response.text
    assert await database.sessions() == [] and await database.commands() == []


async def test_no_agent_available_is_503_and_creates_nothing(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    response = await admin.post("/api/v1/sessions", json={"template": "xterm"})
    assert response.status_code == 503
    assert response.json()["detail"].startswith("no agent available")
    missing = await admin.post("/api/v1/sessions", json={"template": "nope"})
    assert (missing.status_code, missing.json()["detail"]) == (404, "template 'nope' not found")
    assert await database.sessions() == [] and await database.commands() == []


async def test_concurrent_launches_fill_agents_exactly_to_capacity(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database
) -> None:
    """Launches arriving together are placed on the least loaded agent that fits, counting
    each other: capacity is never exceeded, and whatever cannot be placed creates nothing."""
    small = await ManualAgent.registered(api.url, "small", capacity=2)
    large = await ManualAgent.registered(api.url, "large", capacity=3)
    await small.connect()
    await large.connect()
    bodies = [{"template": "xterm"}] * 8 + [{"template": "nope"}] * 2
    responses = await asyncio.gather(*(admin.post("/api/v1/sessions", json=b) for b in bodies))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] * 5 + [404] * 2 + [503] * 3, [r.text for r in responses]
    created = [response.json() for response in responses if response.status_code == 201]
    sessions = await database.sessions()
    assert sorted(s.id for s in sessions) == sorted(c["id"] for c in created)
    assert Counter(s.agent_id for s in sessions) == {"small": 2, "large": 3}
    commands = await database.commands()
    assert sorted(c.session_id or "" for c in commands) == sorted(s.id for s in sessions)
    assert {c.action for c in commands} == {"start_session"}


async def test_users_see_only_their_own_sessions(
    api: ApiProcess, admin: httpx.AsyncClient, pg_url: str
) -> None:
    create_user(pg_url, "alice", "alice-password")
    create_user(pg_url, "bob", "bob-password1")
    agent = await ManualAgent.registered(api.url, "agent-1")
    await agent.connect()  # sends no heartbeats: selectable for 3 s (HEARTBEAT_INTERVAL=1)
    async with (
        logged_in(api.url, "alice", "alice-password") as alice,
        logged_in(api.url, "bob", "bob-password1") as bob,
    ):
        response = await alice.post("/api/v1/sessions", json={"template": "xterm"})
        assert response.status_code == 201, response.text
        mine = response.json()
        assert mine["owner"] == "alice"
        for method, path in [
            ("GET", ""),
            ("DELETE", ""),
            ("POST", "/hibernate"),
            ("POST", "/wake"),
            ("GET", "/events"),
        ]:
            response = await bob.request(method, f"/api/v1/sessions/{mine['id']}{path}")
            assert (response.status_code, response.json()) == (
                404,
                {"detail": "session not found"},
            ), (method, path)
        assert (await bob.get("/api/v1/sessions")).json() == []
        assert [s["id"] for s in (await alice.get("/api/v1/sessions")).json()] == [mine["id"]]
        assert [s["id"] for s in (await admin.get("/api/v1/sessions")).json()] == [mine["id"]]
        # Still pending, untouched by bob's attempts.
        assert (await alice.get(f"/api/v1/sessions/{mine['id']}")).json()["state"] == "pending"

        # Administration is for administrators.
        assert (await bob.get("/api/v1/agents")).status_code == 403
        assert (await bob.get("/api/v1/commands")).status_code == 403
        forbidden = await bob.post("/api/v1/templates", json={"name": "t", "display_name": "T"})
        assert forbidden.status_code == 403


async def test_session_state_conflicts_are_409(api: ApiProcess, admin: httpx.AsyncClient) -> None:
    agent = await ManualAgent.registered(api.url, "agent-2")
    await agent.connect()
    created = (await admin.post("/api/v1/sessions", json={"template": "xterm"})).json()
    wake = await admin.post(f"/api/v1/sessions/{created['id']}/wake")
    assert wake.status_code == 409
    assert wake.json()["detail"] == "session is pending; only a hibernated session can be woken"


async def test_template_administration(api: ApiProcess, admin: httpx.AsyncClient) -> None:
    body = {"name": "gimp", "display_name": "GIMP", "command": ["gimp"]}
    assert (await admin.post("/api/v1/templates", json=body)).status_code == 201
    assert (await admin.post("/api/v1/templates", json=body)).status_code == 409
    bad = await admin.post("/api/v1/templates", json={**body, "name": "Bad Name!"})
    assert bad.status_code == 422
    bad_port = await admin.post("/api/v1/templates", json={**body, "name": "g2", "vnc_port": 0})
    assert bad_port.status_code == 422
    names = [t["name"] for t in (await admin.get("/api/v1/templates")).json()]
    assert names == ["gimp", "xcalc", "xedit", "xterm"]
    assert (await admin.delete("/api/v1/templates/gimp")).status_code == 204
    assert (await admin.get("/api/v1/templates/gimp")).status_code == 404
