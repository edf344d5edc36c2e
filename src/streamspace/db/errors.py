"""What the database's failures mean to the code above ``db/``, without naming the driver."""

from __future__ import annotations

from asyncpg import InterfaceError as PgInterfaceError
from asyncpg import PostgresError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError


class ConstraintViolation(Exception):
    """A write broke a constraint (a unique name taken, a row referenced that is gone);
    the transaction was rolled back. Carries the database's own words."""


UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    DBAPIError,
    OSError,
    PostgresError,
    PgInterfaceError,
    ConstraintViolation,
)
"""What the API answers with "database unavailable" (503): the driver's connection errors are
not always wrapped by SQLAlchemy, and a constraint broken by a race (rather than a request a
service refused) means the same to a client: try again shortly."""


def unreachable(error: Exception) -> bool:
    """Whether an operation failed because the database cannot be reached (not because of
    what was written)."""
    if isinstance(error, OSError | TimeoutError | OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated
