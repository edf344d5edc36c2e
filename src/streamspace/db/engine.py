"""Engine and session factory for PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event, make_url, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from streamspace.config import to_async_url
from streamspace.db.errors import ConstraintViolation

DbSession = AsyncSession
"""The handle the ``db.repo`` functions take: one unit of work on the database."""
SessionFactory = async_sessionmaker[AsyncSession]
"""Opens a :data:`DbSession`; services hold one and use :func:`transaction` or :func:`reading`."""


def create_engine(database_url: str, *, pool_size: int = 20) -> AsyncEngine:
    """Create an engine for a plain or driver-qualified URL.

    SQLite gets one connection: it has one writer anyway, and a single connection turns
    "database is locked" errors into an orderly queue. WAL lets readers of other
    processes (the CLI) proceed meanwhile.
    """
    url = to_async_url(database_url)
    # Errors never quote statement parameters into logs: they include token and key digests.
    if url.startswith("sqlite"):
        _private_sqlite_files(url)
        engine = create_async_engine(
            url, pool_size=1, max_overflow=0, connect_args={"timeout": 30}, hide_parameters=True
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        hide_parameters=True,
    )


def _private_sqlite_files(url: str) -> None:
    """Make the database file (and its WAL and shared-memory files) 0600 whatever the
    umask or the directory: it holds password and key hashes. SQLite gives the files it
    creates later the database file's mode."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(name, 0o600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


@contextlib.asynccontextmanager
async def one_statement_each(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A session whose statements each commit on their own (autocommit).

    For work that is a single statement: it saves the BEGIN and COMMIT round trips, a
    good part of the cost of the dispatcher's claims on a busy replica.
    """
    async with factory() as db:
        await db.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield db


@contextlib.asynccontextmanager
async def transaction(factory: SessionFactory) -> AsyncIterator[DbSession]:
    """A session in a transaction, committed when the block ends (rolled back if it raises).

    A broken constraint, at a flush inside the block or at the commit, is raised as
    :class:`ConstraintViolation`.
    """
    try:
        async with factory() as db, db.begin():
            yield db
    except IntegrityError as exc:
        raise ConstraintViolation(str(exc)) from exc


@contextlib.asynccontextmanager
async def reading(factory: SessionFactory) -> AsyncIterator[DbSession]:
    """A session for reads (nothing it changes is committed)."""
    async with factory() as db:
        yield db


async def ping(factory: SessionFactory) -> None:
    """One round trip to the database; raises whatever keeps it from answering."""
    async with factory() as db:
        await db.execute(text("SELECT 1"))
