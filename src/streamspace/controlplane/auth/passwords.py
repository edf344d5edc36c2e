"""What a password and a username must be, in words, and temporary passwords.

The same rules hold wherever a password is set (the REST API, the UI, the CLI), so they
live here and not in a schema: a refusal names the rule that was broken.
"""

from __future__ import annotations

import re
import secrets

from streamspace.controlplane.errors import Invalid

MIN_PASSWORD = 8
MAX_PASSWORD = 256
"""Characters; argon2 takes any length, but nobody types more and it bounds the work."""
MAX_USERNAME = 128
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")
USERNAME_RULE = (
    f"a username has 1 to {MAX_USERNAME} characters: letters, digits and _ . @ -, "
    "beginning with a letter or a digit"
)


def check_password(password: str) -> None:
    """:class:`Invalid` (in words) unless ``password`` may be set."""
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"the password is too short: it needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise Invalid(f"the password is too long: it may have at most {MAX_PASSWORD} characters")


def check_username(username: str) -> None:
    if len(username) > MAX_USERNAME or not USERNAME.fullmatch(username):
        raise Invalid(f"invalid username {username!r}: {USERNAME_RULE}")


def temporary_password() -> str:
    """A random password to hand a user once (16 URL-safe characters, 96 bits)."""
    return secrets.token_urlsafe(12)
