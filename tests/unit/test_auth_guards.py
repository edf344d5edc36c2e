"""Pure logic of the login throttle, the token cache and the same-origin rule (clocks injected)."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request

from streamspace import names
from streamspace.controlplane.auth.login_tokens import TokenCache
from streamspace.controlplane.auth.origin import cross_site_refusal
from streamspace.controlplane.auth.throttle import MemoryLoginThrottle, Policy
from streamspace.db.models import User, utcnow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = Policy(per_user=3, per_address=10, base=1.0, cap=8.0)


async def test_locks_double_up_to_the_cap_and_are_forgotten() -> None:
    clock = Clock()
    throttle = MemoryLoginThrottle(POLICY, clock=clock)
    alice = [POLICY.user("alice"), POLICY.address("192.0.2.1")]
    for _ in range(2):
        await throttle.failed(alice)
    assert await throttle.retry_after(alice) == 0
    waits = []
    for _ in range(6):
        await throttle.failed(alice)
        waits.append(await throttle.retry_after(alice))
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    clock.now += 8.5  # a quiet period as long as the cap forgets everything
    await throttle.failed(alice)
    assert await throttle.retry_after(alice) == 0


async def test_a_success_clears_the_user_not_the_address() -> None:
    throttle = MemoryLoginThrottle(POLICY, clock=Clock())
    user, address = POLICY.user("bob"), POLICY.address("192.0.2.2")
    for _ in range(3):
        await throttle.failed([user, address])
    await throttle.succeeded(user)
    assert await throttle.retry_after([user]) == 0
    other = POLICY.user("carol")
    for _ in range(7):
        await throttle.failed([other, address])
    assert await throttle.retry_after([POLICY.user("dave"), address]) == 1.0


async def test_made_up_names_cannot_grow_the_memory() -> None:
    throttle = MemoryLoginThrottle(POLICY, clock=Clock(), max_subjects=50)
    for n in range(500):
        await throttle.failed([POLICY.user(f"ghost-{n}")])
    assert len(throttle._entries) == 50


def _user() -> User:
    return User(id="u1", username="alice", password_hash="x", role="user", created_at=utcnow())


def test_cached_tokens_die_with_their_expiry_and_their_logout() -> None:
    clock = Clock()
    cache = TokenCache(ttl=5.0, clock=clock)
    ticket = cache.ticket()
    cache.put("d1", _user(), expires_at=utcnow() + timedelta(seconds=1), ticket=ticket)
    assert cache.get("d1") is not None
    clock.now += 1.01
    assert cache.get("d1") is None  # expired, although the 5 s are not over

    cache.put("d2", _user(), expires_at=utcnow() + timedelta(hours=1), ticket=cache.ticket())
    cache.forget("d2")
    assert cache.get("d2") is None


def test_a_lookup_that_overlapped_a_logout_is_not_cached() -> None:
    cache = TokenCache(clock=Clock())
    ticket = cache.ticket()  # the database read starts...
    cache.forget("d1")  # ...a logout's revocation arrives meanwhile...
    cache.put("d1", _user(), expires_at=utcnow() + timedelta(hours=1), ticket=ticket)
    assert cache.get("d1") is None  # ...so what it read is not trusted


def test_a_user_change_drops_every_cached_token_of_that_user_only() -> None:
    cache = TokenCache(clock=Clock())
    later = utcnow() + timedelta(hours=1)
    bob = User(id="u2", username="bob", password_hash="x", role="user", created_at=utcnow())
    for token_digest, user in (("login", _user()), ("api", _user()), ("bobs", bob)):
        cache.put(token_digest, user, expires_at=later, ticket=cache.ticket())
    ticket = cache.ticket()
    cache.forget_user("u1")
    assert cache.get("login") is None and cache.get("api") is None
    assert cache.get("bobs") is not None
    cache.put("login", _user(), expires_at=later, ticket=ticket)  # read before the change
    assert cache.get("login") is None


def test_the_broadcast_names_a_token_or_a_user() -> None:
    assert names.revoked_user(names.revoked_user_message("u1")) == "u1"
    assert names.revoked_user("a" * 64) is None


def _request(method: str, headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": "ss.example", **headers}.items()]
    scope = {"type": "http", "method": method, "scheme": "https", "path": "/", "headers": raw}
    return Request(scope)


def test_same_origin_rule() -> None:
    cookie = {"cookie": "streamspace_token=sst_x"}
    own = "https://ss.example"
    assert cross_site_refusal(_request("POST", {**cookie, "origin": own})) is None
    assert cross_site_refusal(_request("POST", {**cookie, "origin": own.upper()})) is None
    assert cross_site_refusal(_request("DELETE", {**cookie, "referer": f"{own}/x?y"})) is None
    assert cross_site_refusal(_request("GET", cookie)) is None
    assert cross_site_refusal(_request("POST", {"origin": "https://evil.example"})) is None
    bearer = {**cookie, "authorization": "Bearer sst_y", "origin": "https://evil.example"}
    assert cross_site_refusal(_request("PATCH", bearer)) is None
    for refused in (
        {},
        {"origin": "https://evil.example"},
        {"origin": "http://ss.example"},  # the plain-HTTP twin of this site is another origin
        {"origin": "null"},
        {"referer": "https://ss.example.evil.example/"},
    ):
        reason = cross_site_refusal(_request("PUT", {**cookie, **refused}))
        assert reason is not None and reason.startswith("cross-site request refused"), refused
