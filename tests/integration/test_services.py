"""The throwaway PostgreSQL/Redis fixtures work, including kill() and restart()."""

from __future__ import annotations

import os
import shutil

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.services import PostgresServer, RedisServer, make_postgres_dir


async def _pg_query(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _pg_execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _redis_ping(url: str) -> bool:
    client = aioredis.from_url(url)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


async def test_postgres_answers(postgres_server: PostgresServer, pg_url: str) -> None:
    assert pg_url.startswith(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/test_")
    assert await _pg_query(pg_url, "SELECT 1 + 1") == 2
    assert await _pg_query(pg_url, "SELECT current_database()") == pg_url.rsplit("/", 1)[1]
    assert await _pg_query(pg_url, "SHOW max_connections") == "300"


async def test_pg_url_is_a_fresh_database(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables == 0
        await conn.execute("CREATE TABLE t (x int)")
    finally:
        await conn.close()


async def test_postgres_kill_and_restart(postgres_server: PostgresServer, pg_url: str) -> None:
    await _pg_execute(pg_url, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    port, old_pid = postgres_server.port, postgres_server.pid

    postgres_server.kill()
    assert not postgres_server.running
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await _pg_query(pg_url, "SELECT 1")

    postgres_server.restart()
    assert postgres_server.running
    assert postgres_server.port == port
    assert postgres_server.pid != old_pid
    assert await _pg_query(pg_url, "SELECT x FROM kept") == 42  # same data


async def test_postgres_stop_and_restart(postgres_server: PostgresServer, pg_url: str) -> None:
    postgres_server.stop()
    assert not postgres_server.running
    postgres_server.restart()
    assert await _pg_query(pg_url, "SELECT 1") == 1


def test_sqlite_url(sqlite_url: str) -> None:
    assert sqlite_url.startswith("sqlite:///") and sqlite_url.endswith("/test.db")


def test_db_url_is_parametrized(db_url: str, request: pytest.FixtureRequest) -> None:
    scheme = "sqlite" if request.node.callspec.params["db_url"] == "sqlite" else "postgresql"
    assert db_url.startswith(f"{scheme}://")


async def test_redis_ping(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/1"
    assert redis_server.ping()
    assert await _redis_ping(redis_url)


async def test_redis_url_is_flushed(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.dbsize() == 0
        await client.set("leftover", "1")
    finally:
        await client.aclose()


async def test_redis_kill_and_restart(redis_server: RedisServer, redis_url: str) -> None:
    port = redis_server.port
    redis_server.kill()
    assert not redis_server.running
    assert not redis_server.ping()

    redis_server.restart()
    assert redis_server.running
    assert redis_server.port == port
    assert await _redis_ping(redis_url)


def test_standalone_servers_leave_no_processes(tmp_path_factory: pytest.TempPathFactory) -> None:
    pg_dir = make_postgres_dir()
    try:
        with PostgresServer(pg_dir) as pg, RedisServer(tmp_path_factory.mktemp("r")) as rd:
            assert pg.psql("SELECT 7") == "7"
            assert rd.ping()
            pids = [pg.pid, rd.pid]
        assert not pg.running and not rd.running
        for pid in pids:
            assert pid is not None
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)
