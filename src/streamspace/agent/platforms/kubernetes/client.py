"""The Kubernetes API calls the kubernetes platform makes (I/O only, through lightkube).

The only module that imports lightkube. Objects go in and come out as plain dicts (the
manifests' own camelCase shape), so the platform builds and reads them without the SDK.
Every failure is a :class:`KubeApiError` (a :class:`PlatformError`); one that trying again
may cure (the API server unreachable, overloaded or failing) is ``retryable``. "Not found"
is an answer where the caller expects it (``get`` returns ``None``, deleting something
absent succeeds). The one update the platform makes, the scale of a Deployment, is a merge
patch that sets the replicas outright: refused with 409 ``Conflict`` (someone wrote the
object at the same moment) it is tried again, a bounded number of times; there is nothing to
re-read first, since the patch does not depend on what it replaces.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx2
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig
from lightkube.config.kubeconfig import SERVICE_ACCOUNT
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event, PersistentVolumeClaim, Pod, Service
from lightkube.types import CascadeType, PatchType

from streamspace.agent.platforms.base import PlatformError
from streamspace.config import AgentSettings

log = logging.getLogger(__name__)

Kind = Literal["Deployment", "Service", "PersistentVolumeClaim", "Pod", "Event"]
_RESOURCES: dict[str, Any] = {
    "Deployment": Deployment,
    "Service": Service,
    "PersistentVolumeClaim": PersistentVolumeClaim,
    "Pod": Pod,
    "Event": Event,
}
NOT_FOUND = 404
CONFLICT = 409
GONE = 410
CONFLICT_RETRIES = 5
"""Writes refused with 409 Conflict that are re-read and tried again before giving up."""
WATCH_SECONDS = 60
"""The API server ends each watch request after this long; the client then resumes it."""
FIELD_MANAGER = "streamspace-agent"
T = TypeVar("T")


class KubeApiError(PlatformError):
    """A Kubernetes API call failed: ``status`` is the HTTP status (0: no answer at all),
    ``reason`` the ``Status`` reason (``AlreadyExists``, ``Conflict``, ...)."""

    def __init__(self, message: str, *, status: int, reason: str = "") -> None:
        super().__init__(message, retryable=status == 0 or status == 429 or status >= 500)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Listing:
    """The objects of one list call and the resourceVersion to watch from."""

    items: list[dict[str, Any]]
    resource_version: str


def agent_namespace(settings: AgentSettings, config: KubeConfig | None = None) -> str:
    """``NAMESPACE``, else the kubeconfig context's, else the agent pod's own (from its
    service account), else ``default``."""
    if settings.namespace:
        return settings.namespace
    context = config.get() if config is not None else None
    if context is not None and context.namespace:
        return context.namespace
    with contextlib.suppress(OSError):
        own = (Path(SERVICE_ACCOUNT) / "namespace").read_text().strip()
        if own:
            return own
    return "default"


def _config(settings: AgentSettings) -> KubeConfig:
    try:
        if settings.kubeconfig is not None:
            return KubeConfig.from_file(settings.kubeconfig)
        return KubeConfig.from_env()  # in-cluster, else ~/.kube/config
    except (ConfigError, KeyError, OSError, ValueError) as exc:
        raise PlatformError(
            f"no Kubernetes configuration: run in a cluster or set KUBECONFIG ({exc})"
        ) from exc


def build_client(settings: AgentSettings) -> AsyncClient:
    """A lightkube client for the agent's cluster, its default namespace the agent's."""
    config = _config(settings)
    return AsyncClient(
        config, namespace=agent_namespace(settings, config), field_manager=FIELD_MANAGER
    )


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except ApiError as exc:
        status = exc.status
        raise KubeApiError(
            f"{what}: {status.message or status.reason} (HTTP {status.code})",
            status=status.code or 0,
            reason=status.reason or "",
        ) from exc
    except (httpx2.HTTPError, OSError) as exc:
        raise KubeApiError(
            f"{what}: cannot reach the Kubernetes API server: {exc or type(exc).__name__}",
            status=0,
        ) from exc


def _dict(obj: Any) -> dict[str, Any]:
    found: dict[str, Any] = obj.to_dict()
    return found


class KubeClient:
    """The calls of the kubernetes platform, in one namespace."""

    def __init__(self, api: AsyncClient, *, namespace: str | None = None) -> None:
        self._api = api
        self.namespace = namespace or api.namespace

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> KubeClient:
        return cls(build_client(settings))

    async def close(self) -> None:
        await self._api.close()

    def _object(self, kind: Kind, body: dict[str, Any]) -> Any:
        """The SDK's object for ``body``, in this client's namespace."""
        metadata = {**body["metadata"], "namespace": self.namespace}
        return _RESOURCES[kind].from_dict({**body, "metadata": metadata})

    async def create(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        """Create the object (409 ``AlreadyExists`` if the name is taken)."""
        name = body["metadata"]["name"]
        with _errors(f"cannot create {kind} {name}"):
            made = await self._api.create(self._object(kind, body))
        return _dict(made)

    async def get(self, kind: Kind, name: str) -> dict[str, Any] | None:
        try:
            with _errors(f"cannot read {kind} {name}"):
                return _dict(await self._api.get(_RESOURCES[kind], name, namespace=self.namespace))
        except KubeApiError as exc:
            if exc.status == NOT_FOUND:
                return None
            raise

    async def delete(self, kind: Kind, name: str) -> bool:
        """Delete the object (its dependents in the background); ``False``: it was absent."""
        try:
            with _errors(f"cannot delete {kind} {name}"):
                await self._api.delete(
                    _RESOURCES[kind],
                    name,
                    namespace=self.namespace,
                    cascade=CascadeType.BACKGROUND,
                )
            return True
        except KubeApiError as exc:
            if exc.status == NOT_FOUND:
                return False
            raise

    async def list(self, kind: Kind, labels: dict[str, str]) -> Listing:
        """Every object of ``kind`` carrying ``labels``, in ONE call."""
        with _errors(f"cannot list {kind}s"):
            selector: dict[str, Any] = dict(labels)
            found = self._api.list(_RESOURCES[kind], namespace=self.namespace, labels=selector)
            items = [_dict(obj) async for obj in found]
            version = found.resourceVersion
        return Listing(items=items, resource_version=version)

    async def watch(
        self, kind: Kind, labels: dict[str, str], *, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """``(ADDED|MODIFIED|DELETED, object)`` after ``resource_version``, resumed by the
        client whenever the server ends a request; ends with :class:`KubeApiError` (410:
        the version is too old, list again)."""
        selector: dict[str, Any] = dict(labels)
        with _errors(f"cannot watch {kind}s"):
            events = self._api.watch(
                _RESOURCES[kind],
                namespace=self.namespace,
                labels=selector,
                resource_version=resource_version,
                server_timeout=WATCH_SECONDS,
            )
            async for event, obj in events:
                yield event, _dict(obj)

    async def scale(self, name: str, replicas: int) -> bool:
        """Set the Deployment's replicas through its scale subresource (a merge patch:
        one call); ``False`` when there is no such Deployment."""
        body = {"spec": {"replicas": replicas}}

        async def attempt() -> bool:
            with _errors(f"cannot scale Deployment {name}"):
                await self._api.patch(
                    Deployment.Scale,
                    name,
                    body,
                    namespace=self.namespace,
                    patch_type=PatchType.MERGE,
                )
            return True

        try:
            return await _retry_conflicts(attempt)
        except KubeApiError as exc:
            if exc.status == NOT_FOUND:
                return False
            raise


async def _retry_conflicts(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` (which reads afresh whatever its write depends on) again after a 409
    Conflict, up to ``CONFLICT_RETRIES`` times in all."""
    tries = 1
    while True:
        try:
            return await attempt()
        except KubeApiError as exc:
            if exc.status != CONFLICT or exc.reason == "AlreadyExists" or tries >= CONFLICT_RETRIES:
                raise
            log.info("write conflict (%s); re-reading and trying again", exc)
        tries += 1


# --- leases (leader election) ---


class LeaseClient:
    """Reads and writes the ``coordination.k8s.io/v1`` Leases of leader election, in the
    agent's namespace. Leases go in and come out as plain dicts; no call retries a
    conflict: for a lease a 409 means someone else wrote it, and the caller decides."""

    def __init__(self, api: AsyncClient) -> None:
        self._api = api

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> LeaseClient:
        return cls(build_client(settings))

    async def close(self) -> None:
        await self._api.close()

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            with _errors(f"cannot read Lease {name}"):
                return _dict(await self._api.get(Lease, name))
        except KubeApiError as exc:
            if exc.status == NOT_FOUND:
                return None
            raise

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Lease (409 ``AlreadyExists`` if another replica was first)."""
        with _errors(f"cannot create Lease {body['metadata']['name']}"):
            return _dict(await self._api.create(Lease.from_dict(body)))

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        """PUT the Lease with the resourceVersion it was read at (409 if it changed since)."""
        with _errors(f"cannot replace Lease {body['metadata']['name']}"):
            return _dict(await self._api.replace(Lease.from_dict(body)))
