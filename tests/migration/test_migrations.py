"""Schema migrations: up/down round trip, the updated_at trigger (P1-SCHEMA-002), drift, races."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection

from streamspace.db.engine import create_engine, create_session_factory
from streamspace.db.migrations import runner
from streamspace.db.models import AgentCommand, Base
from tests.services import PostgresServer

T = TypeVar("T")

TABLES = {
    "users",
    "auth_tokens",
    "agents",
    "templates",
    "sessions",
    "agent_commands",
    "session_events",
    "vnc_tokens",
    "session_viewers",
    "idempotency_keys",
    "audit_events",
    "groups",
    "group_members",
    "api_tokens",
}
TRIGGER = "agent_commands_updated_at_trigger"
FUNCTION = "update_agent_commands_updated_at"
STREAMSPACE = Path(sys.executable).parent / "streamspace"
CLI_TIMEOUT = 90.0


def head_revision(url: str) -> str:
    head = ScriptDirectory.from_config(runner.alembic_config(url)).get_current_head()
    assert head is not None
    return head


async def on_connection(url: str, fn: Callable[[Connection], T]) -> T:
    """Run a blocking ``fn(connection)`` on an async engine for ``url``, then dispose it."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def table_names(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def trigger_function_count(conn: Connection) -> int:
    return int(
        conn.scalar(text("SELECT count(*) FROM pg_proc WHERE proname = :n"), {"n": FUNCTION})
    )


def sqlite_trigger_count(conn: Connection) -> int:
    sql = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = :n"
    return int(conn.scalar(text(sql), {"n": TRIGGER}))


def trigger_count(conn: Connection) -> int:
    if conn.dialect.name == "postgresql":
        return trigger_function_count(conn)
    return sqlite_trigger_count(conn)


async def test_upgrade_downgrade_round_trip(db_url: str) -> None:
    await asyncio.to_thread(runner.upgrade, db_url, "head")
    assert await on_connection(db_url, table_names) >= TABLES
    assert await on_connection(db_url, trigger_count) == 1

    await asyncio.to_thread(runner.downgrade, db_url, "base")
    left = await on_connection(db_url, table_names)
    assert not TABLES & left, f"tables left after downgrade base: {TABLES & left}"
    assert await on_connection(db_url, trigger_count) == 0  # PG: the function is gone too

    await asyncio.to_thread(runner.upgrade, db_url, "head")
    assert await on_connection(db_url, table_names) >= TABLES
    assert await on_connection(db_url, trigger_count) == 1
    version = await on_connection(
        db_url, lambda c: c.execute(text("SELECT version_num FROM alembic_version")).all()
    )
    assert version == [(head_revision(db_url),)]


async def test_update_bumps_updated_at(db_url: str) -> None:
    """The seed report's check: an UPDATE moves updated_at to now and leaves created_at."""
    await asyncio.to_thread(runner.upgrade, db_url, "head")
    engine = create_engine(db_url, pool_size=1)
    try:
        sessions = create_session_factory(engine)
        created = datetime.now(UTC) - timedelta(seconds=5)
        command_id = f"cmd-{uuid.uuid4()}"
        async with sessions() as session, session.begin():
            session.add(
                AgentCommand(
                    id=uuid.uuid4(),
                    command_id=command_id,
                    agent_id="agent-1",
                    action="start_session",
                    payload={"session_id": "s-1"},
                    status="pending",
                    attempts=0,
                    created_at=created,
                    updated_at=created,
                )
            )
        async with sessions() as session, session.begin():
            await session.execute(
                text("UPDATE agent_commands SET status = 'sent' WHERE command_id = :c"),
                {"c": command_id},
            )
        now = datetime.now(UTC)
        async with sessions() as session:
            row = (
                await session.execute(
                    select(
                        AgentCommand.status, AgentCommand.created_at, AgentCommand.updated_at
                    ).where(AgentCommand.command_id == command_id)
                )
            ).one()
    finally:
        await engine.dispose()
    assert row.status == "sent"
    assert row.created_at == created
    assert row.updated_at > created + timedelta(seconds=4), row.updated_at
    assert abs(row.updated_at - now) < timedelta(seconds=3), (row.updated_at, now)


async def test_updated_at_has_default(db_url: str) -> None:
    """The seed's plain-SQL INSERT (no updated_at) gets updated_at from the server default."""
    await asyncio.to_thread(runner.upgrade, db_url, "head")

    def insert_and_read(conn: Connection) -> tuple[Any, datetime | None]:
        columns = inspect(conn).get_columns("agent_commands")
        default = next(c["default"] for c in columns if c["name"] == "updated_at")
        conn.execute(
            text(
                "INSERT INTO agent_commands (id, command_id, agent_id, action, payload, status,"
                " attempts, created_at) VALUES (:id, 'c-default', 'agent-1', 'stop_session',"
                " '{}', 'pending', 0, CURRENT_TIMESTAMP)"
            ),
            {"id": uuid.uuid4().hex},
        )
        query = select(AgentCommand.updated_at).where(AgentCommand.command_id == "c-default")
        return default, conn.scalar(query)

    default, value = await on_connection(db_url, insert_and_read)
    assert default is not None and "current_timestamp" in str(default).lower()
    assert value is not None
    assert abs(value - datetime.now(UTC)) < timedelta(seconds=5), value


async def test_postgres_trigger_definition(pg_url: str, postgres_server: PostgresServer) -> None:
    await asyncio.to_thread(runner.upgrade, pg_url, "head")
    dbname = pg_url.rsplit("/", 1)[1]
    rows = postgres_server.psql(
        "SELECT trigger_name, action_timing, event_manipulation, action_orientation, "
        "action_statement FROM information_schema.triggers "
        "WHERE event_object_table = 'agent_commands'",
        dbname,
    )
    assert rows.splitlines() == [f"{TRIGGER}|BEFORE|UPDATE|ROW|EXECUTE FUNCTION {FUNCTION}()"]
    definition = postgres_server.psql(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
        "WHERE tgrelid = 'agent_commands'::regclass AND NOT tgisinternal",
        dbname,
    )
    assert definition == (
        f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON public.agent_commands "
        f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()"
    )
    default = postgres_server.psql(
        "SELECT column_default FROM information_schema.columns "
        "WHERE table_name = 'agent_commands' AND column_name = 'updated_at'",
        dbname,
    )
    assert default == "CURRENT_TIMESTAMP"


async def test_no_drift_between_migrations_and_models(db_url: str) -> None:
    await asyncio.to_thread(runner.upgrade, db_url, "head")

    def compare(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))

    diffs = await on_connection(db_url, compare)
    assert diffs == [], "\n".join(map(repr, diffs))


def run_cli(url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.Popen(
        [str(STREAMSPACE), "migrate", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ok(proc: subprocess.Popen[str]) -> None:
    try:
        output, _ = proc.communicate(timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"streamspace migrate timed out:\n{output}") from None
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{output}"


def test_concurrent_cli_upgrades(pg_url: str, postgres_server: PostgresServer) -> None:
    dbname = pg_url.rsplit("/", 1)[1]
    head = head_revision(pg_url)
    tables_sql = (
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_name <> 'alembic_version'"
    )

    procs = [run_cli(pg_url, "upgrade", "head") for _ in range(2)]  # started together
    try:
        for proc in procs:
            wait_ok(proc)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert postgres_server.psql("SELECT version_num FROM alembic_version", dbname) == head
    assert set(postgres_server.psql(tables_sql, dbname).split(",")) == TABLES

    wait_ok(run_cli(pg_url, "downgrade", "base"))
    assert postgres_server.psql(tables_sql, dbname) == ""
    assert postgres_server.psql("SELECT count(*) FROM alembic_version", dbname) == "0"
    assert (
        postgres_server.psql(f"SELECT count(*) FROM pg_proc WHERE proname = '{FUNCTION}'", dbname)
        == "0"
    )

    wait_ok(run_cli(pg_url, "upgrade", "head"))
    assert postgres_server.psql("SELECT version_num FROM alembic_version", dbname) == head
    assert set(postgres_server.psql(tables_sql, dbname).split(",")) == TABLES
