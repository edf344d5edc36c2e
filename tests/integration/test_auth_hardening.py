"""The control plane's authentication hardening, against real replicas (issue 11, part 3):
login throttling (one replica, two replicas sharing Redis, Redis down), the same-origin rule
for cookie requests, the ``Secure`` cookie behind trusted proxies, logouts and expiries
refused at once everywhere, ``/metrics`` for administrators (or its own port), a private
database file, VNC addresses hidden from ordinary users, and no secret in any log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import httpx

from tests.helpers import (
    eventually,
    logged_in,
    login,
    running_session,
    wait_for_agent,
    wait_for_state,
)
from tests.processes import AgentProcess, ApiProcess, create_user, replica_processes
from tests.services import RedisServer, free_port

LOGIN = "/api/v1/auth/login"
ADMIN_PASSWORD = "admin-password"
THROTTLE_ENV = {"LOGIN_LOCKOUT_BASE": "2", "LOGIN_LOCKOUT_MAX": "60"}
"""Locks of 2 s, then 4 s: ``Retry-After`` tells them apart even on a slow machine."""


def started(directory: Path, *, database_url: str, env: Mapping[str, str] = {}) -> ApiProcess:
    api = ApiProcess(directory, database_url=database_url, env=env)
    api.start()
    return api


async def attempt(
    url: str, password: str, *, username: str = "admin", client_address: str = "198.51.100.1"
) -> httpx.Response:
    """One login; ``client_address`` is what a trusted proxy (127.0.0.1) says the client is."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return await client.post(
            LOGIN,
            json={"username": username, "password": password},
            headers={"X-Forwarded-For": client_address},
        )


async def fail_until_locked(urls: list[str], failures: int, **who: str) -> None:
    """``failures`` wrong passwords, spread over ``urls`` in turn, each refused with 401."""
    for n in range(failures):
        response = await attempt(urls[n % len(urls)], "wrong-password", **who)
        assert response.status_code == 401, (n, response.text)


async def until_unlocked(url: str, password: str, **who: str) -> httpx.Response:
    """Retry (as a client honouring ``Retry-After`` would) until the answer is not 429."""

    async def answered() -> httpx.Response | None:
        response = await attempt(url, password, **who)
        return None if response.status_code == 429 else response

    return await eventually(answered, timeout=30, interval=0.2, message="lock over")


def assert_locked(response: httpx.Response, *, at_most: int, longer_than: int = 0) -> None:
    """A 429 whose ``Retry-After`` (and message) is in ``(longer_than, at_most]`` seconds."""
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    assert longer_than < retry_after <= at_most, response.headers
    assert response.json()["detail"] == f"too many failed logins: try again in {retry_after} s"


# --- a. login throttling ----------------------------------------------------------------


async def test_login_throttling_on_one_replica(
    processes: None, tmp_path: Path, pg_url: str
) -> None:
    env = {**THROTTLE_ENV, "LOGIN_FAILURES_PER_ADDRESS": "8"}
    api = started(tmp_path / "api", database_url=pg_url, env=env)
    await fail_until_locked([api.url], 5)
    # Locked: even the right password is refused (a lock must not tell which one was right).
    assert_locked(await attempt(api.url, ADMIN_PASSWORD), at_most=2)
    # After the lock, one more failure locks it again, twice as long.
    assert (await until_unlocked(api.url, "wrong-password")).status_code == 401
    assert_locked(await attempt(api.url, "wrong-password"), longer_than=2, at_most=4)
    assert (await until_unlocked(api.url, ADMIN_PASSWORD)).status_code == 200
    # The success forgot the username's failures: a wrong password is a plain 401 again.
    assert (await attempt(api.url, "wrong-password")).status_code == 401

    # Per address: one client guessing at many usernames is locked out for all of them,
    # while the same account from another address still logs in.
    guesser = {"client_address": "203.0.113.9"}
    for n in range(8):
        response = await attempt(api.url, "guessed-password", username=f"ghost-{n}", **guesser)
        assert response.status_code == 401, (n, response.text)
    assert_locked(await attempt(api.url, ADMIN_PASSWORD, **guesser), at_most=2)
    assert (await attempt(api.url, ADMIN_PASSWORD, client_address="192.0.2.1")).status_code == 200

    log = api.output()
    assert "failed login for user 'admin' from 198.51.100.1" in log
    assert "failed login for user 'ghost-3' from 203.0.113.9" in log
    assert "wrong-password" not in log and "guessed-password" not in log


async def test_login_throttling_is_shared_by_replicas_and_survives_redis_loss(
    processes: None, tmp_path: Path, pg_url: str, redis_url: str, redis_server: RedisServer
) -> None:
    pods = replica_processes(
        tmp_path, database_url=pg_url, redis_server=redis_server, env=THROTTLE_ENV
    )
    pods[0].start()
    pods[1].start()
    urls = [pod.url for pod in pods]
    # Five failures, alternating replicas: both count them together.
    await fail_until_locked(urls, 5)
    assert_locked(await attempt(urls[0], ADMIN_PASSWORD), at_most=2)
    assert_locked(await attempt(urls[1], ADMIN_PASSWORD), at_most=2)
    # A success on pod-2 resets the username on pod-1 too.
    assert (await until_unlocked(urls[1], ADMIN_PASSWORD)).status_code == 200
    await fail_until_locked([urls[0]], 4)

    # Redis lost: logins still work, throttled by each replica's own counters.
    redis_server.kill()
    try:

        async def degraded() -> bool:
            async with httpx.AsyncClient(timeout=5) as client:
                bodies = [(await client.get(f"{url}/readyz")).json() for url in urls]
            return all(body.get("redis", "ok") != "ok" for body in bodies)

        await eventually(degraded, timeout=20, message="both replicas see Redis down")
        who = {"client_address": "198.51.100.2"}
        assert (await attempt(urls[0], ADMIN_PASSWORD, **who)).status_code == 200
        await fail_until_locked([urls[0]], 5, **who)
        assert_locked(await attempt(urls[0], ADMIN_PASSWORD, **who), at_most=2)
        assert "login throttling falls back to this replica's counters" in pods[0].output()
    finally:
        redis_server.start()


# --- b. same origin for cookie requests; the Secure cookie ------------------------------


async def test_cookie_requests_that_change_state_need_this_origin(
    processes: None, tmp_path: Path, pg_url: str
) -> None:
    api = started(tmp_path / "api", database_url=pg_url)
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as browser:
        logged = await browser.post(LOGIN, json={"username": "admin", "password": ADMIN_PASSWORD})
        assert logged.status_code == 200
        token = logged.json()["access_token"]
        stop = "/api/v1/sessions/no-such-session"

        refused = await browser.delete(stop)
        assert refused.status_code == 403, refused.text
        assert "cross-site request refused" in refused.json()["detail"]
        foreign = await browser.delete(stop, headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403, foreign.text
        assert "origin http://evil.example is not this server" in foreign.json()["detail"]
        assert (await browser.delete(stop, headers={"Origin": "null"})).status_code == 403

        assert (await browser.delete(stop, headers={"Origin": api.url})).status_code == 404
        referred = await browser.delete(stop, headers={"Referer": f"{api.url}/#sessions"})
        assert referred.status_code == 404, referred.text
        assert (await browser.get("/api/v1/sessions")).status_code == 200  # reads pass

        # A bearer client is not a browser riding on a cookie.
        bearer = {"Authorization": f"Bearer {token}", "Origin": "http://evil.example"}
        assert (await browser.delete(stop, headers=bearer)).status_code == 404
        out = await browser.post("/api/v1/auth/logout", headers={"Origin": api.url})
        assert out.status_code == 204, out.text


async def test_cookie_is_secure_over_https_from_trusted_proxies_only(
    processes: None, tmp_path: Path, pg_url: str
) -> None:
    trusting = ApiProcess(tmp_path / "trusting", database_url=pg_url, name="trusting")
    wary = ApiProcess(
        tmp_path / "wary",
        database_url=pg_url,
        env={"FORWARDED_ALLOW_IPS": "192.0.2.7"},
        name="wary",
    )
    forced = ApiProcess(
        tmp_path / "forced", database_url=pg_url, env={"COOKIE_SECURE": "true"}, name="forced"
    )
    trusting.start()
    await asyncio.gather(asyncio.to_thread(wary.start), asyncio.to_thread(forced.start))
    https = {"X-Forwarded-Proto": "https"}

    async def cookie(url: str, headers: Mapping[str, str] = {}) -> str:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            body = {"username": "admin", "password": ADMIN_PASSWORD}
            response = await client.post(LOGIN, json=body, headers=headers)
            assert response.status_code == 200, response.text
            return response.headers["set-cookie"].lower()

    assert "; secure" in await cookie(trusting.url, https)
    assert "; secure" not in await cookie(trusting.url)
    assert "; secure" not in await cookie(wary.url, https)  # 127.0.0.1 is not its proxy
    assert "; secure" in await cookie(forced.url)

    # Behind the trusted TLS proxy the browser's origin is https://…: that is this server.
    async with httpx.AsyncClient(base_url=trusting.url, timeout=10) as browser:
        body = {"username": "admin", "password": ADMIN_PASSWORD}
        token = (await browser.post(LOGIN, json=body, headers=https)).json()["access_token"]
        # (httpx keeps a Secure cookie for https only: the proxy's side of it, sent by hand)
        cookie_headers = {**https, "Cookie": f"streamspace_token={token}"}
        origin = trusting.url.replace("http://", "https://")
        answer = await browser.delete(
            "/api/v1/sessions/x", headers={**cookie_headers, "Origin": origin}
        )
        assert answer.status_code == 404, answer.text
        plain = await browser.delete(
            "/api/v1/sessions/x", headers={**cookie_headers, "Origin": trusting.url}
        )
        assert plain.status_code == 403, plain.text


# --- c. logged-out and expired tokens ---------------------------------------------------


async def me(url: str, token: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        headers = {"Authorization": f"Bearer {token}"}
        return (await client.get("/api/v1/auth/me", headers=headers)).status_code


async def assert_logout_refused_everywhere(urls: list[str], rounds: int) -> None:
    for _ in range(rounds):
        client = await login(urls[0])
        token = client.headers["Authorization"].removeprefix("Bearer ")
        try:
            assert [await me(url, token) for url in urls] == [200, 200]  # cached on both
            assert (await client.post("/api/v1/auth/logout")).status_code == 204
        finally:
            await client.aclose()
        assert [await me(url, token) for url in reversed(urls)] == [401, 401]


async def test_a_logout_is_refused_at_once_on_every_replica(
    processes: None, tmp_path: Path, pg_url: str, redis_url: str, redis_server: RedisServer
) -> None:
    pods = replica_processes(tmp_path, database_url=pg_url, redis_server=redis_server)
    pods[0].start()
    pods[1].start()
    urls = [pod.url for pod in pods]
    await assert_logout_refused_everywhere(urls, rounds=5)

    redis_server.kill()  # no pub/sub: the replicas must not trust their caches
    try:

        async def degraded() -> bool:
            async with httpx.AsyncClient(timeout=5) as client:
                bodies = [(await client.get(f"{url}/readyz")).json() for url in urls]
            return all(body.get("redis", "ok") != "ok" for body in bodies)

        await eventually(degraded, timeout=20, message="both replicas see Redis down")
        await assert_logout_refused_everywhere(urls, rounds=2)
    finally:
        redis_server.start()
    await eventually(lambda: _redis_ok(urls), timeout=20, message="Redis back on both")
    await assert_logout_refused_everywhere(urls, rounds=2)


async def _redis_ok(urls: list[str]) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        bodies = [(await client.get(f"{url}/readyz")).json() for url in urls]
    return all(body.get("redis") == "ok" for body in bodies)


async def test_an_expired_token_is_refused_at_once(
    processes: None, tmp_path: Path, pg_url: str
) -> None:
    ttl = 2.0
    api = started(tmp_path / "api", database_url=pg_url, env={"SESSION_TOKEN_TTL": str(ttl)})
    client = await login(api.url)
    logged_in_at = time.monotonic()
    try:

        async def expired() -> bool:
            sent = time.monotonic()
            status = (await client.get("/api/v1/auth/me")).status_code
            # The token expires at most ``ttl`` after the login's answer arrived.
            assert status == 401 or sent < logged_in_at + ttl, "an expired token was accepted"
            return status == 401

        await eventually(expired, timeout=ttl + 10, message="the token refused")
        assert time.monotonic() - logged_in_at < ttl + 2
    finally:
        await client.aclose()


# --- d. /metrics ----------------------------------------------------------------------


async def test_metrics_need_an_administrator_or_their_own_port(
    processes: None, tmp_path: Path, pg_url: str
) -> None:
    metrics_port = free_port()
    api = started(tmp_path / "api", database_url=pg_url, env={"METRICS_PORT": str(metrics_port)})
    await asyncio.to_thread(create_user, pg_url, "alice", "alice-password")
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
    async with logged_in(api.url, "alice", "alice-password") as alice:
        assert (await alice.get("/metrics")).status_code == 403
    async with logged_in(api.url) as admin:
        scrape = await admin.get("/metrics")
        assert scrape.status_code == 200
        assert "streamspace_agents_connected" in scrape.text
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}", timeout=10) as prom:
        scraped = await prom.get("/metrics")
        assert scraped.status_code == 200
        assert "streamspace_agents_connected" in scraped.text
        assert (await prom.get("/api/v1/sessions")).status_code == 404
    assert f"metrics served without authentication on 127.0.0.1:{metrics_port}" in api.output()


# --- e. the database file -------------------------------------------------------------


async def test_the_sqlite_database_is_private_whatever_the_directory(
    processes: None, tmp_path: Path
) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    database = directory / "streamspace.db"
    database.touch(mode=0o644)  # left by an earlier, careless run
    database.chmod(0o644)
    api = started(tmp_path / "api", database_url=f"sqlite:///{database}")
    async with logged_in(api.url):
        pass  # writes a token: the WAL and shared-memory files exist now

    files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    modes = {path.name: stat.S_IMODE(os.stat(path).st_mode) for path in files}
    assert modes == {path.name: 0o600 for path in files}


# --- f. VNC addresses -----------------------------------------------------------------


async def test_only_administrators_see_vnc_addresses(
    processes: None, tmp_path: Path, pg_url: str
) -> None:
    api = started(tmp_path / "api", database_url=pg_url, env={"AGENT_AUTO_APPROVE": "true"})
    agent = AgentProcess(tmp_path / "agent", control_plane_url=api.url, agent_id="agent-vnc")
    agent.start()
    await asyncio.to_thread(create_user, pg_url, "bob", "bob-password")
    async with logged_in(api.url) as admin, logged_in(api.url, "bob", "bob-password") as bob:
        await wait_for_agent(admin, "agent-vnc")
        created = await bob.post("/api/v1/sessions", json={"template": "xterm"})
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
        running = await wait_for_state(bob, session_id, "running")
        assert running["vnc"] is None
        assert [s["vnc"] for s in (await bob.get("/api/v1/sessions")).json()] == [None]
        diagnostics = await wait_for_state(admin, session_id, "running")
        assert diagnostics["vnc"] == {"host": "127.0.0.1", "port": 5900}
        assert [s["vnc"] for s in (await admin.get("/api/v1/sessions")).json()] == [
            diagnostics["vnc"]
        ]


# --- g. secrets in logs ---------------------------------------------------------------


async def test_no_secret_reaches_a_log(processes: None, tmp_path: Path, pg_url: str) -> None:
    debug = {"LOG_LEVEL": "DEBUG", "AGENT_AUTO_APPROVE": "true"}
    api = started(tmp_path / "api", database_url=pg_url, env=debug)
    agent = AgentProcess(
        tmp_path / "agent", control_plane_url=api.url, agent_id="agent-quiet", env=debug
    )
    agent.start()
    assert (await attempt(api.url, "not-the-password-123")).status_code == 401
    client = await login(api.url)
    token = client.headers["Authorization"].removeprefix("Bearer ")
    try:
        await wait_for_agent(client, "agent-quiet")
        session_id = await running_session(client)
        grant = await client.post(f"/api/v1/sessions/{session_id}/connect")
        assert grant.status_code == 200, grant.text
        vnc_token = grant.json()["token"]
        viewer_url = api.url.replace("http://", "ws://") + grant.json()["url"]
        async with aiohttp.ClientSession() as http:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.ws_connect(viewer_url, timeout=aiohttp.ClientWSTimeout(5)):
                    pass  # uvicorn has logged the handshake, query and all
        assert (await client.post("/api/v1/auth/logout")).status_code == 204
    finally:
        await client.aclose()
    agent_key = (agent.directory / "data" / "agent-key").read_text().strip()
    secrets = {
        "admin password": ADMIN_PASSWORD,
        "wrong password": "not-the-password-123",
        "login token": token,
        "VNC token": vnc_token,
        "bootstrap key": "bootstrap-secret",
        "agent key": agent_key,
    }
    # The handshakes were logged (at DEBUG), their credentials redacted.
    assert "< authorization: <redacted>" in api.output()
    assert "vnc?token=<redacted>" in api.output()
    for name, process in (("api", api), ("agent", agent)):
        log = process.output()
        leaked = [what for what, secret in secrets.items() if secret in log]
        assert not leaked, f"the {name} log shows the {leaked}"
