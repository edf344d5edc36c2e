"""Password hashing (argon2) and random secrets stored as SHA-256 (API keys, login tokens).

High-entropy secrets need no slow hash: SHA-256 of 256 random bits cannot be brute-forced,
and it keeps per-request authentication cheap. Passwords are low-entropy, hence argon2.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def new_secret(prefix: str) -> str:
    """A fresh random secret, e.g. ``ssa_…`` for agent keys, ``sst_…`` for login tokens."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def digest(secret: str) -> str:
    """The SHA-256 hex digest stored in place of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, stored_digest: str) -> bool:
    """Constant-time comparison of a presented secret with a stored digest."""
    return hmac.compare_digest(digest(secret), stored_digest)


async def hash_password(password: str) -> str:
    """The argon2 hash of a password, computed off the event loop (it is deliberately slow)."""
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password off the event loop (argon2 is deliberately slow); with no hash (no
    such user) against a dummy one, which takes as long and never matches."""
    return await asyncio.to_thread(_verify, password_hash, password)


@functools.cache
def dummy_hash() -> str:
    """Verified against when the user does not exist, so both cases take as long (made on
    first use: a command that checks no password does not pay for it)."""
    return _hasher.hash("timing-equaliser")
