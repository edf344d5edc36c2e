"""The hub a process builds: with the Redis registry when ``AGENTHUB_REDIS_ENABLED``."""

from __future__ import annotations

import logging

from streamspace.config import ApiSettings
from streamspace.controlplane.hub.agent_hub import AgentHub
from streamspace.controlplane.hub.redis_registry import RedisRegistry
from streamspace.redis_client import create_redis
from streamspace.redis_client import describe as describe_redis

log = logging.getLogger(__name__)


def create_hub(settings: ApiSettings) -> AgentHub:
    """The hub with the Redis registry when ``AGENTHUB_REDIS_ENABLED``, else in memory."""
    if not settings.agenthub_redis_enabled:
        log.info("AgentHub initialized in memory (single-replica mode)")
        return AgentHub(replica=settings.pod_name)
    log.info("AgentHub initialized with Redis (multi-pod mode)")
    registry = RedisRegistry(
        replica=settings.pod_name,
        redis=create_redis(settings),
        key_ttl=3 * settings.heartbeat_interval,
        alive_ttl=settings.replica_alive_ttl,
        where=describe_redis(settings),
        address=settings.advertised_url,
    )
    return AgentHub(replica=settings.pod_name, registry=registry)
