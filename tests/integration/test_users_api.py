"""User administration and personal API tokens over real HTTP, on PostgreSQL: what an
administrator and a user see of ``/api/v1/users`` and ``/api/v1/auth/{password,tokens}``."""

from __future__ import annotations

import re

import httpx

from tests.helpers import login
from tests.processes import ApiProcess

USERS = "/api/v1/users"
LOGIN = "/api/v1/auth/login"


async def _login(url: str, username: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return await client.post(LOGIN, json={"username": username, "password": password})


def _bearer(url: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=10, headers={"Authorization": f"Bearer {token}"})


def _next(response: httpx.Response) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    found = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert found, link
    return found.group(1)


async def test_an_administrator_runs_the_user_lifecycle(
    api: ApiProcess, admin: httpx.AsyncClient
) -> None:
    made = await admin.post(USERS, json={"username": "alice", "role": "user"})
    assert made.status_code == 201, made.text
    body = made.json()
    temporary = body["password"]
    assert body["must_change_password"] and not body["disabled"] and len(temporary) >= 16
    assert (await admin.post(USERS, json={"username": "alice"})).status_code == 409
    short = await admin.post(USERS, json={"username": "bob", "password": "short"})
    assert short.status_code == 422 and "password" in short.json()["detail"]

    # The first login: the token is good for the password change only.
    first = await _login(api.url, "alice", temporary)
    assert first.status_code == 200 and first.json()["must_change_password"] is True
    async with _bearer(api.url, first.json()["access_token"]) as alice:
        blocked = await alice.get("/api/v1/sessions")
        assert blocked.status_code == 403 and "change your password" in blocked.json()["detail"]
        assert (await alice.get("/api/v1/auth/me")).json()["must_change_password"] is True
        wrong = await alice.post(
            "/api/v1/auth/password",
            json={"current_password": "not-it-at-all", "new_password": "alice-chosen-1"},
        )
        assert wrong.status_code == 403, wrong.text
        changed = await alice.post(
            "/api/v1/auth/password",
            json={"current_password": temporary, "new_password": "alice-chosen-1"},
        )
        assert changed.status_code == 204, changed.text
        assert (await alice.get("/api/v1/sessions")).status_code == 200

        # Role, reset, disable, enable: each holds on the user's very next request.
        promoted = await admin.post(f"{USERS}/alice/role", json={"role": "admin"})
        assert promoted.json()["role"] == "admin"
        assert (await alice.get("/api/v1/agents")).status_code == 200
        await admin.post(f"{USERS}/alice/role", json={"role": "user"})
        assert (await alice.get("/api/v1/agents")).status_code == 403

        disabled = await admin.post(f"{USERS}/alice/disable")
        assert disabled.status_code == 200 and disabled.json()["disabled"] is True
        assert (await alice.get("/api/v1/auth/me")).status_code == 401
    refused = await _login(api.url, "alice", "alice-chosen-1")
    assert refused.status_code == 403 and "disabled" in refused.json()["detail"]
    assert (await admin.post(f"{USERS}/alice/enable")).json()["disabled"] is False
    assert (await _login(api.url, "alice", "alice-chosen-1")).status_code == 200

    reset = await admin.post(f"{USERS}/alice/reset-password", json={"password": "given-temp-1"})
    assert reset.status_code == 200 and reset.json()["password"] is None
    assert reset.json()["user"]["must_change_password"] is True
    assert (await _login(api.url, "alice", "alice-chosen-1")).status_code == 401
    assert (await _login(api.url, "alice", "given-temp-1")).json()["must_change_password"]

    assert (await admin.delete(f"{USERS}/alice")).status_code == 204
    assert (await admin.get(f"{USERS}/alice")).status_code == 404
    assert (await _login(api.url, "alice", "given-temp-1")).status_code == 401


async def test_the_last_administrator_and_ones_own_account_are_kept(
    admin: httpx.AsyncClient,
) -> None:
    for method, path, body in (
        ("POST", f"{USERS}/admin/disable", None),
        ("DELETE", f"{USERS}/admin", None),
        ("POST", f"{USERS}/admin/role", {"role": "user"}),
        ("POST", f"{USERS}/admin/reset-password", {}),
    ):
        response = await admin.request(method, path, json=body)
        assert response.status_code == 409, (path, response.text)
        assert "your own" in response.json()["detail"]
    assert (await admin.post(f"{USERS}/ghost/disable")).status_code == 404


async def test_users_are_listed_in_keyset_pages_with_search(admin: httpx.AsyncClient) -> None:
    names = [f"user-{n:02d}" for n in range(7)] + ["Zed"]
    for name in names:
        made = await admin.post(USERS, json={"username": name, "password": "password-123"})
        assert made.status_code == 201, made.text
    seen: list[str] = []
    url: str | None = f"{USERS}?limit=3"
    pages = 0
    while url is not None:
        response = await admin.get(url)
        assert response.status_code == 200, response.text
        seen += [user["username"] for user in response.json()]
        url = _next(response)
        pages += 1
    assert seen == sorted(["admin", *names]) and pages == 3
    found = await admin.get(USERS, params={"q": "ZE"})
    assert [user["username"] for user in found.json()] == ["Zed"] and _next(found) is None
    searched = await admin.get(USERS, params={"q": "user-0", "limit": 5})
    more = _next(searched)
    assert more is not None and "q=user-0" in more
    assert [u["username"] for u in (await admin.get(more)).json()] == ["user-05", "user-06"]
    for bad in ({"limit": 0}, {"limit": 501}, {"cursor": "!!"}, {"cursor": "bm9wZQ"}):
        assert (await admin.get(USERS, params=bad)).status_code == 422, bad


async def test_users_and_their_tokens_are_for_whom_they_belong(
    api: ApiProcess, admin: httpx.AsyncClient
) -> None:
    await admin.post(USERS, json={"username": "carol", "password": "carol-password"})
    carol = await login(api.url, "carol", "carol-password")
    try:
        assert (await carol.get(USERS)).status_code == 403
        made = await carol.post("/api/v1/auth/tokens", json={"name": "nightly job"})
        assert made.status_code == 201, made.text
        secret = made.json()["token"]
        assert secret.startswith("ssp_")
        listed = (await carol.get("/api/v1/auth/tokens")).json()
        assert [t["name"] for t in listed] == ["nightly job"] and "token" not in listed[0]
        async with _bearer(api.url, secret) as job:
            assert (await job.get("/api/v1/sessions")).status_code == 200
            assert (await job.get("/api/v1/auth/me")).json()["username"] == "carol"
            theirs = await admin.delete(f"/api/v1/auth/tokens/{listed[0]['id']}")
            assert theirs.status_code == 404  # the admin's own tokens only
            revoked = await carol.delete(f"/api/v1/auth/tokens/{listed[0]['id']}")
            assert revoked.status_code == 204
            assert (await job.get("/api/v1/sessions")).status_code == 401
        relisted = (await carol.get("/api/v1/auth/tokens")).json()
        assert relisted[0]["revoked_at"] is not None
        too_long = await carol.post(
            "/api/v1/auth/tokens", json={"name": "x", "expires_in_days": 366}
        )
        assert too_long.status_code == 422
    finally:
        await carol.aclose()


async def test_logins_are_counted_by_result(api: ApiProcess, admin: httpx.AsyncClient) -> None:
    await admin.post(USERS, json={"username": "dave", "password": "dave-password"})
    assert (await _login(api.url, "dave", "wrong-password")).status_code == 401
    await admin.post(f"{USERS}/dave/disable")
    assert (await _login(api.url, "dave", "dave-password")).status_code == 403
    text = (await admin.get("/metrics")).text
    counts = dict(re.findall(r'streamspace_logins_total\{result="(\w+)"\} (\S+)', text))
    assert float(counts["success"]) >= 1  # the admin's own login
    assert float(counts["failed"]) == 1
    assert float(counts["disabled"]) == 1
