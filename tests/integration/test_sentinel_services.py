"""The throwaway Redis Sentinel group works: discovery, crash of the master, failover."""

from __future__ import annotations

from redis.sentinel import Sentinel

from tests.services import RedisSentinelGroup


def test_sentinel_group_addresses(sentinel_group: RedisSentinelGroup) -> None:
    addresses = sentinel_group.sentinel_addresses
    assert len(addresses) == 3
    assert len(set(addresses)) == 3
    assert sentinel_group.sentinels_env == ",".join(f"{h}:{p}" for h, p in addresses)
    assert sentinel_group.master_address() == ("127.0.0.1", sentinel_group.master.port)


def test_sentinel_failover_keeps_replicated_data(sentinel_group: RedisSentinelGroup) -> None:
    sentinel = Sentinel(sentinel_group.sentinel_addresses, socket_timeout=1)
    try:
        master = sentinel.master_for("streamspace", db=1, socket_timeout=1)
        try:
            master.set("greeting", "hello")
            assert master.get("greeting") == b"hello"
            # Make sure the replica has the write before the master dies.
            assert master.execute_command("WAIT", 1, 1000) == 1
        finally:
            master.close()

        old = sentinel_group.master_address()
        replica = sentinel_group.replica
        assert replica is not None
        assert sentinel_group.kill_master() == old
        assert not sentinel_group.master.running

        new = sentinel_group.wait_for_failover(old)
        assert new == ("127.0.0.1", replica.port)
        assert sentinel_group.master_address() == new

        master = sentinel.master_for("streamspace", db=1, socket_timeout=1)
        try:
            assert master.get("greeting") == b"hello"
            master.set("after", "failover")
            assert master.get("after") == b"failover"
        finally:
            master.close()
    finally:
        for client in sentinel.sentinels:
            client.close()
