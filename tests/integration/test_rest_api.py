"""REST validation, authentication and ownership against a real API replica."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

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
        assert missing.json() == {
            "detail": "invalid request: body.password: Field required",
            "errors": [{"loc": ["body", "password"], "msg": "Field required", "type": "missing"}],
        }


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


ONE_MIB = 1024 * 1024
"""The default ``MAX_REQUEST_BYTES``."""
JSON = {"Content-Type": "application/json"}


def login_body(size: int) -> bytes:
    """A wrong-password login of exactly ``size`` bytes (JSON allows trailing spaces)."""
    body = b'{"username": "admin", "password": "wrong"}'
    return body + b" " * (size - len(body))


async def test_request_bodies_over_the_limit_are_413_unread(api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        at_limit = await client.post(
            "/api/v1/auth/login", content=login_body(ONE_MIB), headers=JSON
        )
        assert at_limit.status_code == 401, at_limit.text
        too_large = {
            "detail": f"request body too large: at most {ONE_MIB} bytes are accepted "
            "(MAX_REQUEST_BYTES)"
        }
        declared = await client.post(
            "/api/v1/auth/login", content=login_body(ONE_MIB + 1), headers=JSON
        )
        assert (declared.status_code, declared.json()) == (413, too_large)
        # Refused on Content-Length alone: before authentication, even where nothing exists.
        for path in ("/api/v1/templates", "/no/such/route"):
            response = await client.post(path, content=login_body(ONE_MIB + 1), headers=JSON)
            assert (response.status_code, response.json()) == (413, too_large), path

        async def chunks() -> AsyncIterator[bytes]:
            body = login_body(ONE_MIB + 1)
            for start in range(0, len(body), 64 * 1024):
                yield body[start : start + 64 * 1024]

        # Without Content-Length (chunked), the bytes are counted as they arrive.
        chunked = await client.post("/api/v1/auth/login", content=chunks(), headers=JSON)
        assert chunked.request.headers["Transfer-Encoding"] == "chunked"
        assert (chunked.status_code, chunked.json()) == (413, too_large)
    # WebSockets are not HTTP bodies: an agent still connects.
    agent = await ManualAgent.registered(api.url, "after-limit")
    await agent.connect()
    assert "Traceback" not in api.output()


SURROGATE = "\\ud800"
"""A lone surrogate as JSON text spells it: valid JSON syntax, not Unicode."""
BODY_ROUTES = [
    ("POST", "/api/v1/auth/login", '{"username": "%s", "password": "x"}'),
    ("POST", "/api/v1/agents/register", '{"agent_id": "a", "platform": "local%s"}'),
    ("POST", "/api/v1/sessions", '{"template": "xterm%s"}'),
    ("POST", "/api/v1/templates", '{"name": "t", "display_name": "%s"}'),
    ("PUT", "/api/v1/templates/xterm", '{"name": "xterm", "display_name": "X", "env": {"%s": ""}}'),
]
"""Every route that takes a body, with a body whose ``%s`` the cases fill in."""
INVALID_TEXT = {
    "lone-surrogate": (SURROGATE, "application/json", 422),
    "malformed": ('", "unclosed', "application/json", 422),
    "wrong-content-type": ("", "text/plain", 422),
    "not-utf-8": ("\udcff", "application/json", 400),
}
"""How each case fills the body in, its content type and the expected status."""


@pytest.mark.parametrize("case", sorted(INVALID_TEXT))
async def test_invalid_json_text_is_refused_in_words_never_500(
    api: ApiProcess, admin: httpx.AsyncClient, database: Database, case: str
) -> None:
    fill, content_type, expected = INVALID_TEXT[case]
    for method, path, template in BODY_ROUTES:
        # surrogateescape turns "\udcff" into the single byte 0xff: not UTF-8.
        body = (template % fill).encode("utf-8", "surrogateescape")
        headers = {"Content-Type": content_type, "Authorization": admin.headers["Authorization"]}
        response = await admin.request(method, path, content=body, headers=headers)
        assert response.status_code == expected, (path, response.text)
        assert isinstance(response.json()["detail"], str), (path, response.text)
    nested = await admin.post(
        "/api/v1/sessions", content=b"[" * 100_000 + b"]" * 100_000, headers=JSON
    )
    assert nested.status_code == 400, nested.text
    assert await database.sessions() == [] and await database.commands() == []
    assert (await admin.get("/api/v1/templates/xterm")).json()["display_name"] != "X"
    assert "Traceback" not in api.output(), api.output()[-3000:]


async def test_nul_in_text_is_422_never_a_database_error(
    api: ApiProcess, admin: httpx.AsyncClient
) -> None:
    """PostgreSQL text cannot hold NUL: in a URL or a body it is refused before the database
    sees it (it used to fail there, answering 503 'database unavailable')."""
    requests = [
        ("GET", "/api/v1/sessions/a%00b", None),
        ("DELETE", "/api/v1/templates/a%00b", None),
        ("POST", "/api/v1/agents/a%00b/approve", None),
        ("GET", "/api/v1/commands/a%00b", None),
        ("GET", "/api/v1/commands?session_id=a%00b", None),
        ("POST", "/api/v1/sessions", {"template": "a\x00b"}),
        ("POST", "/api/v1/templates", {"name": "t", "display_name": "a\x00b"}),
    ]
    for method, url, body in requests:
        response = await admin.request(method, url, json=body)
        assert response.status_code == 422, (method, url, response.text)
        assert "\\x00" in response.json()["detail"] or "pattern" in response.json()["detail"]
    assert "Traceback" not in api.output()


async def test_every_error_has_the_one_shape(api: ApiProcess, admin: httpx.AsyncClient) -> None:
    """ServiceError, HTTPException, validation, Starlette's 404/405, the body limit, 503:
    ``{"detail": "a sentence"}``, ``errors`` only on 422."""
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        answers = {
            "service": await admin.get("/api/v1/sessions/nope"),
            "http": await anonymous.get("/api/v1/sessions"),
            "validation": await admin.get("/api/v1/commands", params={"limit": 0}),
            "no-route": await anonymous.get("/api/v1/nothing-here"),
            "method": await anonymous.patch("/api/v1/templates/xterm"),
            "body-limit": await anonymous.post("/api/v1/auth/login", content=b" " * 2**21),
            "no-agent": await admin.post("/api/v1/sessions", json={"template": "xterm"}),
        }
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "service": 404,
        "http": 401,
        "validation": 422,
        "no-route": 404,
        "method": 405,
        "body-limit": 413,
        "no-agent": 503,
    }
    for name, answer in answers.items():
        body = answer.json()
        assert isinstance(body["detail"], str) and body["detail"], (name, body)
        assert set(body) == ({"detail", "errors"} if name == "validation" else {"detail"})
    assert answers["validation"].json()["errors"][0]["loc"] == ["query", "limit"]
    # Every method served at the path, not just the first route's.
    assert answers["method"].headers["Allow"] == "GET, PUT, DELETE"


async def test_openapi_documents_every_error_status(api: ApiProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:
        schema = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    error_ref = {"$ref": "#/components/schemas/ErrorOut"}
    operations = {
        (method.upper(), path): operation
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }
    for (method, path), operation in operations.items():
        for status, response in operation["responses"].items():
            if status.startswith("2") or (path, status) == ("/readyz", "503"):
                continue
            media = response["content"]["application/json"]
            assert media["schema"] == error_ref, (method, path, status)

    def statuses(method: str, path: str) -> set[str]:
        return set(operations[method, path]["responses"])

    assert statuses("POST", "/api/v1/sessions") >= {"201", "401", "404", "413", "422", "503"}
    assert statuses("POST", "/api/v1/auth/login") >= {"200", "401", "413", "422", "429"}
    assert statuses("DELETE", "/api/v1/templates/{name}") >= {"204", "401", "403", "404"}
    assert statuses("POST", "/api/v1/templates") >= {"201", "403", "409", "413", "422"}
    assert statuses("DELETE", "/api/v1/sessions/{session_id}") >= {"202", "404", "409"}
    assert statuses("POST", "/api/v1/sessions/{session_id}/connect") >= {"200", "404", "409"}
    assert "text/plain" in operations["GET", "/metrics"]["responses"]["200"]["content"]
