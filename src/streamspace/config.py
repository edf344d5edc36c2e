"""Settings from the environment (pydantic-settings); names are the ones operators type."""

from __future__ import annotations

import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamspace.images.recipe import DEFAULT_TAG as DEFAULT_SESSION_IMAGE

DEFAULT_DATA_DIR = Path.home() / ".streamspace"
MAX_POLICY_MINUTES = 10 * 365 * 24 * 60.0
"""Longest policy duration accepted: ten years."""
TOLERATION_KEYS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})


def to_async_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``sqlite:///`` URLs and pick the async driver."""
    for prefix, driver in (
        ("postgresql+asyncpg://", None),
        ("sqlite+aiosqlite://", None),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return url if driver is None else driver + url[len(prefix) :]
    raise ValueError(f"unsupported DATABASE_URL scheme: {url.split(':', 1)[0]!r}")


def _memory_bytes(quantity: str) -> int:
    """A memory quantity (``512Mi``) in bytes; ``ValueError`` says what is wrong with it."""
    # Imported here: the platforms package imports this module.
    from streamspace.resources import parse_limits

    memory = parse_limits({"memory": quantity}).memory_bytes
    assert memory is not None
    return memory


class RedisSettings(BaseSettings):
    """Where Redis is: shared by the control plane's hub and the agent's leader election."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    redis_host: str = "localhost"
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_password: str | None = None
    redis_db: int = Field(default=1, ge=0)
    redis_url: str | None = None
    """Overrides host, port, password and db when set."""
    redis_sentinels: str | None = None
    """Comma-separated ``host:port`` list of Redis Sentinels (overrides the above)."""
    redis_sentinel_master: str = "mymaster"


class ApiSettings(RedisSettings):
    """Control-plane settings."""

    database_url: str = Field(default=f"sqlite:///{DEFAULT_DATA_DIR / 'streamspace.db'}")
    agent_bootstrap_key: str | None = None
    agent_auto_approve: bool = False
    streamspace_admin_password: str | None = None
    pod_name: str = Field(default_factory=socket.gethostname)

    agenthub_redis_enabled: bool = False
    """Share the AgentHub between replicas through Redis (multi-pod mode)."""
    replica_alive_ttl: float = Field(default=10.0, gt=0)
    """Seconds a replica's liveness key outlives its last renewal (renewed every third)."""

    heartbeat_interval: float = Field(default=10.0, gt=0)
    """Seconds between agent heartbeats; an agent missing three is dropped."""
    dispatcher_workers: int = Field(default=10, ge=1, le=1000)
    command_poll_interval: float = Field(default=2.0, gt=0)
    """How often the dispatcher re-checks pending rows of its agents (the doorbell's safety net)."""
    command_ack_timeout: float = Field(default=10.0, gt=0)
    """A ``sent`` command not acknowledged in this many seconds is sent again."""
    command_window: int = Field(default=100, ge=1, le=100_000)
    """Commands sent to one agent connection and not yet answered (ack or outcome); more
    wait as ``pending`` rows, so an overloaded replica never lets acks go stale."""
    command_max_attempts: int = Field(default=5, ge=1)
    command_deadline: float = Field(default=120.0, gt=0)
    """An acknowledged command not finished in this many seconds fails."""
    command_pending_timeout: float = Field(default=900.0, gt=0)
    """A command still undelivered after this many seconds expires."""
    reconcile_interval: float = Field(default=2.0, gt=0)
    session_request_concurrency: int = Field(default=4, ge=1, le=1000)
    """Session changes processed at once per replica; more wait their turn, so a burst of
    requests cannot starve the processing of agents' reports (which would look like dead
    agents)."""
    session_token_ttl: float = Field(default=12 * 3600.0, gt=0)
    """Lifetime in seconds of a login token."""
    cookie_secure: bool = False
    """Always mark the login cookie ``Secure`` (it is anyway when the request came over HTTPS)."""
    forwarded_allow_ips: str = "127.0.0.1"
    """Comma-separated addresses of proxies whose ``X-Forwarded-For``/``-Proto`` are believed
    (uvicorn's ``--forwarded-allow-ips``; ``*`` trusts everyone): they decide the client address
    that login throttling counts and whether the request came over HTTPS."""
    login_failures_per_user: int = Field(default=5, ge=1, le=1000)
    """Failed logins of one username before it is locked out (429 with ``Retry-After``)."""
    login_failures_per_address: int = Field(default=20, ge=1, le=100_000)
    """Failed logins from one client address (any usernames) before it is locked out."""
    login_lockout_base: float = Field(default=1.0, gt=0, le=86_400)
    """Seconds of the first lockout; each further failure doubles it."""
    login_lockout_max: float = Field(default=900.0, gt=0, le=86_400)
    """Longest lockout in seconds; failures are forgotten after this long without one."""
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Serve ``/metrics`` without authentication on this port too (for Prometheus); the API's
    own ``/metrics`` always needs an administrator's token."""
    metrics_host: str = "127.0.0.1"
    """Address the ``METRICS_PORT`` listener binds (``0.0.0.0`` for a scraper on another host)."""
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024**3)
    """Largest request body accepted (bytes); larger ones are refused with 413 unread."""

    quota_max_running_sessions: int | None = Field(default=None, ge=0, le=100_000)
    """Site default: sessions a user may have starting, running or waking at once (unset:
    no limit). A group's own limit replaces it for its members (docs/groups-and-quotas.md)."""
    quota_max_hibernated_sessions: int | None = Field(default=None, ge=0, le=100_000)
    """Site default: hibernated sessions a user may keep (unset: no limit)."""
    quota_max_session_minutes: int | None = Field(default=None, ge=1, le=10_000_000)
    """Site default: the longest a session may last, in minutes (unset: no limit)."""

    vnc_token_ttl: float = Field(default=60.0, gt=0)
    """Seconds a VNC connect token (``POST /sessions/{id}/connect``) stays usable, once."""
    tunnel_open_timeout: float = Field(default=10.0, gt=0)
    """Seconds the agent has to dial a tunnel's data socket back."""
    viewer_activity_interval: float = Field(default=30.0, gt=0)
    """While VNC bytes flow, the session's ``last_activity`` is refreshed at most this often."""
    session_idle_timeout_minutes: float | None = Field(default=None, gt=0, le=MAX_POLICY_MINUTES)
    """Site default: minutes without viewer input before a session's idle action runs
    (``None``: never); a template's ``idle_timeout_minutes`` overrides it. Fractions are
    allowed (``0.1`` = 6 s), with a floor of one second."""
    session_idle_action: Literal["hibernate", "stop"] = "hibernate"
    """Site default: what an idle session gets."""
    session_max_age_minutes: float | None = Field(default=None, gt=0, le=MAX_POLICY_MINUTES)
    """Site default: minutes after its launch a session (running or hibernated) is stopped,
    however active (``None``: never)."""
    session_hibernated_retention_days: float | None = Field(
        default=None, gt=0, le=MAX_POLICY_MINUTES / 1440
    )
    """Site default: days a hibernated session is kept before it is stopped (``None``: for
    ever)."""
    session_retention_home: Literal["keep", "remove"] = "keep"
    """Site default: whether a session stopped after its retention keeps its home."""
    session_idle_warning_minutes: float = Field(default=5.0, ge=0, le=MAX_POLICY_MINUTES)
    """How long before the idle action a connected viewer is warned (with a *Keep session*
    button)."""
    session_policy_interval: float = Field(default=10.0, gt=0, le=3600)
    """Seconds between two runs of the lifecycle-policy enforcer on each replica."""
    api_port: int = Field(default=8080, ge=1, le=65535)
    """The port this replica listens on (``streamspace api --port`` sets it)."""
    internal_url: str | None = None
    """Base URL other replicas reach this one at (default ``http://127.0.0.1:<API_PORT>``)."""
    internal_secret: str | None = None
    """Shared secret of replica-to-replica tunnel relays; without it they are refused."""

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        to_async_url(value)
        return value

    @cached_property
    def async_database_url(self) -> str:
        return to_async_url(self.database_url)

    @property
    def advertised_url(self) -> str:
        """This replica's internal base URL, as advertised to the others."""
        return (self.internal_url or f"http://127.0.0.1:{self.api_port}").rstrip("/")

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.startswith("sqlite")


class AgentSettings(RedisSettings):
    """Agent settings (the Redis ones are used by ``LEADER_ELECTION=redis`` only)."""

    control_plane_url: str = "http://127.0.0.1:8080"
    agent_id: str = Field(default_factory=lambda: f"local-{socket.gethostname()}")
    agent_api_key: str | None = None
    agent_bootstrap_key: str | None = None
    agent_capacity: int = Field(default=10, ge=0)
    agent_data_dir: Path = DEFAULT_DATA_DIR / "agent"
    local_sandbox: Literal["auto", "bubblewrap", "none"] = "auto"
    """How the local platform isolates sessions: ``bubblewrap`` (each session as its own Unix
    account in namespaces; the agent refuses to start if it cannot), ``none`` (no sandbox:
    sessions only for ``LOCAL_TRUSTED_USER``), ``auto`` (bubblewrap when the machine can)."""
    local_trusted_user: str | None = None
    """Without a sandbox, the one control-plane user whose sessions run (as the agent's own
    account); default: the name of the agent's Unix account."""
    local_sandbox_uid_base: int = Field(default=2_000_000_000, ge=1000, le=4_000_000_000)
    """First Unix uid (and gid) given to sandboxed sessions, one per control-plane user."""
    local_sandbox_uid_count: int = Field(default=1_000_000, ge=1, le=100_000_000)
    """How many uids from ``LOCAL_SANDBOX_UID_BASE`` on the local platform may hand out."""
    local_sandbox_hide: list[Path] = Field(default_factory=list)
    """More host paths sessions must not see, if they lie under a directory the sandbox shows
    (``/usr``, ``/etc``, ...). The agent's and the control plane's data dirs always are."""
    docker_host: str = "unix:///var/run/docker.sock"
    """The Docker daemon of the docker platform (the variable the docker CLI reads too)."""
    docker_session_image: str = DEFAULT_SESSION_IMAGE
    """Image of sessions whose template names none (``streamspace images build`` makes it)."""
    docker_session_memory: str = "2Gi"
    """Memory limit of a session container whose template sets none (``512Mi``, ``4G``)."""
    docker_session_pids: int = Field(default=1024, ge=16, le=4_194_304)
    """Most processes and threads one session container may have (a fork bomb stops there)."""
    docker_vnc_password: bool = True
    """Give each session container's VNC server a password only the agent knows (its tunnel
    answers for the viewer), so nobody else on the host reaches the published port."""
    kubeconfig: Path | None = None
    """The kubernetes platform's cluster (one kubeconfig file); unset: the agent's own cluster
    (in-cluster service account), else ``~/.kube/config``."""
    namespace: str | None = Field(default=None, min_length=1, max_length=63)
    """Namespace of the kubernetes platform's session objects (default: the kubeconfig
    context's, else the agent pod's own, else ``default``)."""
    kubernetes_session_image: str = DEFAULT_SESSION_IMAGE
    """Image of session pods whose template names none."""
    kubernetes_session_memory: str = "2Gi"
    """Memory request and limit of a session pod whose template sets none."""
    kubernetes_start_timeout: float = Field(default=60.0, gt=0, le=3600)
    """Seconds a session pod has to become Ready (scheduling and image pull included)."""
    kubernetes_home_size: str = "1Gi"
    """Storage requested by each home volume claim."""
    kubernetes_node_selector: dict[str, str] = Field(default_factory=dict)
    """JSON object: the session pods' ``nodeSelector`` (``{"streamspace.io/sessions": "yes"}``)."""
    kubernetes_tolerations: list[dict[str, str | int]] = Field(default_factory=list)
    """JSON list: the session pods' ``tolerations`` (``[{"key": "sessions", "operator":
    "Exists", "effect": "NoSchedule"}]``)."""
    kubernetes_image_pull_secrets: list[str] = Field(default_factory=list)
    """JSON list of Secret names the session pods pull their image with (``["regcred"]``)."""
    kubernetes_storage_class: str | None = None
    """StorageClass of the home volume claims (default: the cluster's default class)."""
    kubernetes_service_account: str | None = None
    """ServiceAccount of the session pods (default: the namespace's ``default``); its token is
    never mounted into them."""
    leader_election: Literal["none", "redis", "file", "kubernetes"] = "none"
    """Run several replicas of ONE agent identity; only the lease holder acts."""
    pod_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=253)
    """This replica's name as the holder of the ``kubernetes`` Lease (the downward API's
    ``metadata.name``); replicas of one agent must not share it."""
    leader_lease_seconds: float = Field(default=10.0, gt=0)
    """How long a leader's lease lasts unless renewed (renewed every third of it)."""
    leader_lock_file: Path | None = None
    """The ``file`` backend's lock (default ``<AGENT_DATA_DIR>/leader.lock``)."""

    @model_validator(mode="after")
    def _uids_fit(self) -> AgentSettings:
        if self.local_sandbox_uid_base + self.local_sandbox_uid_count > 2**32 - 1:
            raise ValueError("LOCAL_SANDBOX_UID_BASE + LOCAL_SANDBOX_UID_COUNT exceeds 2^32 - 1")
        return self

    @property
    def leader_lock_path(self) -> Path:
        return self.leader_lock_file or self.agent_data_dir / "leader.lock"

    @field_validator("kubernetes_tolerations")
    @classmethod
    def _tolerations(cls, value: list[dict[str, str | int]]) -> list[dict[str, str | int]]:
        for toleration in value:
            unknown = set(toleration) - TOLERATION_KEYS
            if unknown:
                raise ValueError(
                    f"toleration {toleration} has unknown keys {sorted(unknown)}; known: "
                    f"{sorted(TOLERATION_KEYS)}"
                )
        return value

    @field_validator("docker_session_memory", "kubernetes_session_memory", "kubernetes_home_size")
    @classmethod
    def _memory_quantity(cls, value: str) -> str:
        _memory_bytes(value)
        return value

    @property
    def docker_session_memory_bytes(self) -> int:
        return _memory_bytes(self.docker_session_memory)
