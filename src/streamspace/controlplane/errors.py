"""The errors services (and the API's dependencies) raise, in words a client can be shown.

Which HTTP status each one answers with is decided in one place:
:mod:`streamspace.controlplane.http.error_responses`.
"""

from __future__ import annotations

from collections.abc import Mapping


class ServiceError(Exception):
    """Base: a request refused, with the reason in ``message`` and any ``headers`` the
    answer carries (e.g. ``Retry-After``)."""

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class Invalid(ServiceError):
    """The request is well-formed but inconsistent (e.g. two names that must agree)."""


class Unauthorized(ServiceError):
    """No credentials, or wrong ones."""


class Forbidden(ServiceError):
    """Authenticated, but not allowed."""


class NotFound(ServiceError):
    pass


class Conflict(ServiceError):
    pass


class TooManyRequests(ServiceError):
    """Throttled: ``headers`` say when to try again."""


class OverQuota(TooManyRequests):
    """A limit of the user's quota is reached (429); ``limit`` names which one."""

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class Unavailable(ServiceError):
    pass
