"""The audit log and list paging over real HTTP, on one PostgreSQL-backed replica."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import all_rows, eventually, logged_in
from tests.manual_agent import ManualAgent, register
from tests.processes import ApiProcess, create_user
from tests.services import PostgresServer

DATABASE = "test_audit"
AGENT = "audit-agent"
CLIENT = "198.51.100.9"
"""The address a trusted proxy (the test itself, at 127.0.0.1) says the client has."""
FORWARDED = {"X-Forwarded-For": CLIENT}


@pytest.fixture(scope="module")
def replica(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """One replica for the module; agents wait for approval (``agent.approve`` is audited)."""
    url = postgres_server.create_database(DATABASE)
    api = ApiProcess(tmp_path_factory.mktemp("audit") / "api", database_url=url)
    api.start()
    try:
        create_user(url, "carol", "carol-password")
        yield api
    finally:
        api.stop()
        postgres_server.drop_database(DATABASE)


@pytest.fixture
async def admin(replica: ApiProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with logged_in(replica.url) as client:
        yield client


async def audit(client: httpx.AsyncClient, **filters: Any) -> list[dict[str, Any]]:
    return await all_rows(client, "/api/v1/audit", **filters)


@pytest.fixture(scope="module")
def agent_key(replica: ApiProcess) -> str:
    """The module's agent, registered (pending) and approved by the admin: its API key."""

    async def register_and_approve() -> str:
        response = await register(replica.url, AGENT, capacity=20)
        assert response.status_code == 201, response.text
        async with logged_in(replica.url) as admin:
            approved = await admin.post(f"/api/v1/agents/{AGENT}/approve", headers=FORWARDED)
            assert approved.status_code == 200, approved.text
        return str(response.json()["api_key"])

    return asyncio.run(register_and_approve())


async def online_agent(replica: ApiProcess, agent_key: str) -> ManualAgent:
    """The module's agent connected (closed at the end of the test), fresh for launches."""
    agent = ManualAgent(replica.url, AGENT, agent_key, capacity=20)
    await agent.connect()
    await agent.send("heartbeat", {"active_sessions": 0, "capacity": 20})
    return agent


async def test_every_action_is_an_audit_row_with_actor_and_address(
    replica: ApiProcess, admin: httpx.AsyncClient, agent_key: str
) -> None:
    async with httpx.AsyncClient(base_url=replica.url, headers=FORWARDED) as anonymous:
        wrong = {"username": "carol", "password": "not-carols-password"}
        assert (await anonymous.post("/api/v1/auth/login", json=wrong)).status_code == 401
    async with logged_in(replica.url, "carol", "carol-password") as carol:
        await online_agent(replica, agent_key)
        template = {"name": "audited", "display_name": "Audited", "command": ["xterm"]}
        headers = FORWARDED
        assert (await admin.post("/api/v1/templates", json=template)).status_code == 201
        changed = {**template, "display_name": "Audited again", "env": {"API_TOKEN": "t0p"}}
        put = await admin.put("/api/v1/templates/audited", json=changed, headers=headers)
        assert put.status_code == 200
        assert (await admin.delete("/api/v1/templates/audited")).status_code == 204
        launched = await carol.post("/api/v1/sessions", json={"template": "xterm"}, headers=headers)
        assert launched.status_code == 201, launched.text
        session_id = launched.json()["id"]
        stopped = await carol.delete(f"/api/v1/sessions/{session_id}", headers=headers)
        assert stopped.status_code == 202
        assert (await carol.post("/api/v1/auth/logout", headers=headers)).status_code == 204

    rows = await audit(admin)
    by_action: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_action.setdefault(row["action"], []).append(row)

    def one(action: str, **expected: Any) -> dict[str, Any]:
        matching = [r for r in by_action.get(action, []) if expected.items() <= r.items()]
        assert len(matching) == 1, (action, expected, by_action.get(action))
        return matching[0]

    failed = one("auth.login_failed", actor="carol", address=CLIENT)
    assert failed["detail"] == {"username": "carol"} and failed["actor_id"]
    one("user.create", actor="system", detail={"username": "admin", "role": "admin"})
    one("user.create", actor="system", detail={"username": "carol", "role": "user"})
    one("auth.login", actor="carol", address="127.0.0.1")
    one("agent.register", actor=AGENT, target_kind="agent", target_id=AGENT)
    one("agent.approve", actor="admin", address=CLIENT, target_id=AGENT)
    one("template.create", actor="admin", target_kind="template", target_id="audited")
    one("template.update", actor="admin", address=CLIENT, target_id="audited")
    one("template.delete", actor="admin", target_id="audited")
    launch = one("session.launch", actor="carol", address=CLIENT, target_id=session_id)
    assert launch["detail"] == {"template": "xterm", "agent": AGENT}
    one("session.stop", actor="carol", address=CLIENT, target_id=session_id)
    one("auth.logout", actor="carol", address=CLIENT)
    transitions = await audit(admin, target_kind="session", target_id=session_id)
    assert {t["action"] for t in transitions} == {
        "session.launch",
        "session.stop",
        "session.transition",
    }
    oldest = transitions[-1]  # newest first: the session's first transition is last
    assert (oldest["action"], oldest["detail"]["to"]) == ("session.transition", "pending")
    text = json.dumps(rows)
    assert "not-carols-password" not in text and "carol-password" not in text
    assert "t0p" not in text  # a template's environment may hold secrets

    def logged() -> list[dict[str, Any]]:
        return [
            json.loads(line.split("streamspace.audit: ", 1)[1])
            for line in replica.output().splitlines()
            if "streamspace.audit: " in line
        ]

    async def session_lines() -> list[dict[str, Any]]:
        return [line for line in logged() if line["target_id"] == session_id]

    lines = await eventually(session_lines, message="the audit lines of the session")
    assert {(x["action"], x["actor"]) for x in lines} >= {
        ("session.launch", "carol"),
        ("session.stop", "carol"),
        ("session.transition", "system"),
    }
    assert next(x for x in lines if x["action"] == "session.launch")["address"] == CLIENT
    assert "not-carols-password" not in replica.output()


async def test_audit_filters_over_http(admin: httpx.AsyncClient) -> None:
    logins = await audit(admin, action="auth.*")
    assert logins and {row["action"].split(".")[0] for row in logins} == {"auth"}
    mine = await audit(admin, actor="admin", action="auth.login")
    assert mine and all(row["actor"] == "admin" for row in mine)
    times = [row["created_at"] for row in await audit(admin)]
    assert times == sorted(times, reverse=True)
    middle = times[len(times) // 2]
    later = await audit(admin, since=middle)
    assert later and all(row["created_at"] >= middle for row in later)
    earlier = await audit(admin, until=middle)
    assert all(row["created_at"] < middle for row in earlier)
    assert len(later) + len(earlier) == len(times)


async def test_audit_pages_are_stable_while_events_arrive(
    replica: ApiProcess, admin: httpx.AsyncClient
) -> None:
    # Logins only: session transitions may arrive by themselves (the reconciler).
    before = await audit(admin, action="auth.*")
    first = await admin.get("/api/v1/audit", params={"limit": 2, "action": "auth.*"})
    assert first.status_code == 200 and len(first.json()) == 2
    link = first.links["next"]["url"]
    assert link.startswith("/api/v1/audit?") and "limit=2" in link and "action=auth." in link
    async with httpx.AsyncClient(base_url=replica.url) as anonymous:
        for _ in range(3):  # three new events, newer than every row paged
            wrong = {"username": "nobody", "password": "wrong-password"}
            await anonymous.post("/api/v1/auth/login", json=wrong)
    seen = first.json() + await _follow(admin, link)
    key = [(row["source"], row["id"]) for row in seen]
    assert key == [(row["source"], row["id"]) for row in before]  # no repeat, no gap
    assert len(await audit(admin, action="auth.*")) == len(before) + 3


async def _follow(client: httpx.AsyncClient, link: str) -> list[Any]:
    rows: list[Any] = []
    while link:
        response = await client.get(link)
        assert response.status_code == 200, response.text
        rows += response.json()
        link = response.links.get("next", {}).get("url", "")
    return rows


async def test_session_pages_follow_the_link(
    replica: ApiProcess, admin: httpx.AsyncClient, agent_key: str
) -> None:
    await online_agent(replica, agent_key)
    launched = []
    for _ in range(5):
        response = await admin.post("/api/v1/sessions", json={"template": "xterm"})
        assert response.status_code == 201, response.text
        launched.append(response.json()["id"])
    whole = [s["id"] for s in await all_rows(admin, "/api/v1/sessions")]
    assert whole[:5] == launched[::-1]  # newest first
    first = await admin.get("/api/v1/sessions", params={"limit": 2})
    assert [s["id"] for s in first.json()] == whole[:2]
    more = await admin.post("/api/v1/sessions", json={"template": "xterm"})
    assert more.status_code == 201
    rest = await _follow(admin, first.links["next"]["url"])
    assert [s["id"] for s in first.json() + rest] == whole
    last = await admin.get("/api/v1/sessions", params={"limit": 500})
    assert "next" not in last.links and len(last.json()) == len(whole) + 1
    events = await admin.get(f"/api/v1/sessions/{launched[0]}/events", params={"limit": 1})
    assert len(events.json()) == 1 and events.json()[0]["to_state"] == "pending"
    commands = await all_rows(admin, "/api/v1/commands", limit=1, session_id=launched[0])
    assert [c["action"] for c in commands] == ["start_session"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/sessions", {"cursor": "not a cursor"}, "cursor"),
        ("/api/v1/sessions", {"cursor": "bm90IGpzb24"}, "cursor"),
        ("/api/v1/audit", {"limit": 0}, "limit"),
        ("/api/v1/templates", {"limit": 501}, "limit"),
        ("/api/v1/audit", {"since": "2026-12-01T10:00:00"}, "since"),
        ("/api/v1/audit", {"until": "0.5"}, "until"),
        ("/api/v1/audit", {"since": "2026-13-01T10:00:00Z"}, "since"),
        ("/api/v1/audit", {"until": "0001-01-01T00:00:00+01:00"}, "until"),
        ("/api/v1/audit", {"action": "DROP TABLE"}, "action"),
    ],
    ids=[
        "unsafe-cursor",
        "garbage-cursor",
        "limit-0",
        "limit-501",
        "naive-since",
        "number-until",
        "month-13",
        "before-utc",
        "action",
    ],
)
async def test_bad_paging_parameters_are_422(
    admin: httpx.AsyncClient, path: str, params: dict[str, Any], field: str
) -> None:
    response = await admin.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", field]


async def test_a_cursor_of_another_list_is_422(admin: httpx.AsyncClient) -> None:
    templates = await admin.get("/api/v1/templates", params={"limit": 1})
    cursor = templates.links["next"]["url"].split("cursor=")[1].split("&")[0]
    response = await admin.get("/api/v1/agents", params={"cursor": cursor})
    assert response.status_code == 422
    assert "another list" in response.json()["detail"]


async def test_only_administrators_read_the_audit_log(replica: ApiProcess) -> None:
    async with logged_in(replica.url, "carol", "carol-password") as carol:
        assert (await carol.get("/api/v1/audit")).status_code == 403


async def test_group_changes_are_audited_and_groups_paged(admin: httpx.AsyncClient) -> None:
    for name in ("audit-a", "audit-b", "audit-c"):
        created = await admin.post("/api/v1/groups", json={"name": name, "max_running_sessions": 2})
        assert created.status_code == 201, created.text
    assert (await admin.put("/api/v1/groups/audit-a/members/carol")).status_code == 200
    assert (await admin.delete("/api/v1/groups/audit-a/members/carol")).status_code == 200
    assert (await admin.delete("/api/v1/groups/audit-c")).status_code == 204
    rows = await audit(admin, action="group.*")
    assert [(row["action"], row["target_id"]) for row in rows] == [
        ("group.delete", "audit-c"),
        ("group.remove_member", "audit-a"),
        ("group.add_member", "audit-a"),
        ("group.create", "audit-c"),
        ("group.create", "audit-b"),
        ("group.create", "audit-a"),
    ]
    assert rows[1]["detail"] == {"username": "carol"} and rows[1]["actor"] == "admin"
    first = await admin.get("/api/v1/groups", params={"limit": 1})
    assert [g["name"] for g in first.json()] == ["audit-a"]
    rest = await _follow(admin, first.links["next"]["url"])
    assert [g["name"] for g in rest] == ["audit-b"]


async def test_user_administration_is_audited(admin: httpx.AsyncClient) -> None:
    created = await admin.post("/api/v1/users", json={"username": "dave"}, headers=FORWARDED)
    assert created.status_code == 201, created.text
    generated = created.json()["password"]
    assert generated and generated not in json.dumps(await audit(admin))
    base = "/api/v1/users/dave"
    assert (await admin.post(f"{base}/role", json={"role": "admin"})).status_code == 200
    assert (await admin.post(f"{base}/disable")).status_code == 200
    assert (await admin.post(f"{base}/enable")).status_code == 200
    assert (await admin.post(f"{base}/reset-password", json={})).status_code == 200
    assert (await admin.delete(base)).status_code == 204
    rows = [r for r in await audit(admin, target_kind="user") if r["detail"]["username"] == "dave"]
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("user.delete", "admin"),
        ("user.disable", "admin"),  # a delete disables first
        ("user.reset_password", "admin"),
        ("user.enable", "system"),
        ("user.disable", "admin"),
        ("user.role", "admin"),
        ("user.create", "admin"),
    ]
    assert rows[-1]["address"] == CLIENT and rows[-2]["detail"]["role"] == "admin"
