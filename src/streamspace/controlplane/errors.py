"""Errors services raise; routes turn them into HTTP answers with the same words."""

from __future__ import annotations


class ServiceError(Exception):
    """Base: ``status_code`` is the HTTP status the API answers with."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Unavailable(ServiceError):
    status_code = 503
