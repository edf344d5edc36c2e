"""Sessions as Kubernetes pods: per session a Deployment of one replica, a ClusterIP
Service for its VNC port and a PersistentVolumeClaim for its home.

The Deployment ``streamspace-<session id>`` runs the session image's entrypoint (Xvnc, a
window manager, then the template's command as its ``args``) as the image's unprivileged
user under the restricted Pod Security profile: non-root uid 1000, no privilege escalation,
every capability dropped, seccomp ``RuntimeDefault``, a read-only root file system
(writable: the home and an ``emptyDir`` ``/tmp``), no service-account token, the template's
CPU and memory as requests and limits. A persistent home is one claim per user and template,
kept when the session stops; any other home is a claim of the session's own, kept while it
is hibernated (scaled to 0) and removed with it. The agent runs in the cluster and reaches
the VNC server at the pod's IP; NetworkPolicies (``deploy/kubernetes``) let only the agent
in, which is also why session VNC servers ask for no password here.

Labels (``app=streamspace-session``, ``streamspace.io/session|user|template|agent``, their
values made label-safe, the raw names as annotations) say whose objects are, so a restarted
agent adopts its sessions with one list of Deployments and its pod cache (one list and one
watch of Pods, see :mod:`pod_cache`), never one call per session.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from streamspace.agent.platforms.base import Exited, Platform, PlatformError, PlatformState, Started
from streamspace.agent.platforms.kubernetes.client import (
    CONFLICT,
    KubeApiError,
    KubeClient,
)
from streamspace.agent.platforms.kubernetes.pod_cache import PodCache
from streamspace.agent.platforms.kubernetes.pod_status import PodView, failure, view
from streamspace.images import recipe
from streamspace.protocol import RunningSession, SessionSpec, VncEndpoint
from streamspace.resources import parse_limits

log = logging.getLogger(__name__)

APP = "streamspace-session"
PREFIX = "streamspace.io/"
SESSION_LABEL = f"{PREFIX}session"
USER_LABEL = f"{PREFIX}user"
TEMPLATE_LABEL = f"{PREFIX}template"
AGENT_LABEL = f"{PREFIX}agent"
HOME_ANNOTATION = f"{PREFIX}home-claim"
VNC_PORT_ANNOTATION = f"{PREFIX}vnc-port"
CONTAINER = "session"
_LABEL_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_NAME_SAFE = re.compile(r"[^a-z0-9-]")
RETRY_MIN = 0.2
RETRY_MAX = 2.0
"""Seconds between tries of an operation while the API server does not answer (doubling)."""
SYNC_TIMEOUT = 10.0
"""Seconds ``list_running`` waits for the pod cache's first list."""
T = TypeVar("T")


def label_value(raw: str) -> str:
    """``raw`` as a valid label value (63 characters of ``[A-Za-z0-9_.-]``, alphanumeric at
    both ends); names that need changing get a hash suffix, so two never collide."""
    safe = _LABEL_SAFE.sub("_", raw)[:54].strip("_.-")
    if safe == raw:
        return raw
    return f"{safe}-{_digest(raw)}".lstrip("-")


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()[:8]


def _dns_name(prefix: str, raw: str) -> str:
    """``prefix-raw`` as a DNS label (Service names: 63 lowercase characters)."""
    safe = _NAME_SAFE.sub("-", raw.lower()).strip("-")
    name = f"{prefix}-{safe}"
    if safe == raw and len(name) <= 63:
        return name
    return f"{prefix}-{safe[: 62 - len(prefix) - 9]}-{_digest(raw)}".replace("--", "-")


def object_name(session_id: str) -> str:
    """The session's Deployment and Service: ``streamspace-<session id>``."""
    return _dns_name("streamspace", session_id)


def session_claim(session_id: str) -> str:
    """The claim of a home that lives as long as its session."""
    return _dns_name("streamspace-home", session_id)


def home_claim(user: str, template: str) -> str:
    """The persistent home claim of ``user`` for ``template``."""
    slug = _NAME_SAFE.sub("-", f"{user}-{template}".lower()).strip("-")[:30].strip("-")
    unique = _digest(user + "\0" + template)
    return f"streamspace-home-{slug}-{unique}"


@dataclass(frozen=True)
class PodSettings:
    """Agent-level settings of every session pod (``KUBERNETES_*``)."""

    image: str = recipe.DEFAULT_TAG
    memory: str = "2Gi"
    home_size: str = "1Gi"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    image_pull_secrets: list[str] = field(default_factory=list)
    storage_class: str | None = None
    service_account: str | None = None


class KubernetesPlatform(Platform):
    """Runs each session as a pod in one namespace, for the agent ``agent_id``."""

    name = "kubernetes"

    def __init__(
        self,
        *,
        client: KubeClient,
        agent_id: str,
        pods: PodSettings | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self._kube = client
        self._agent_id = agent_id
        self._pod_settings = pods or PodSettings()
        self._start_timeout = start_timeout
        self._owner = {"app": APP, AGENT_LABEL: label_value(agent_id)}
        self._cache = PodCache(client, self._owner)

    # --- contract ---------------------------------------------------------------------

    async def start(self, spec: SessionSpec) -> Started:
        """Create the session's claim, Service and Deployment, and wait for its pod to be
        Ready. A re-delivered start carries on with the objects an earlier run made."""
        claim = home_claim(spec.user, spec.template) if spec.persistent_home else None
        claim = claim or session_claim(spec.session_id)
        deployment = self._deployment(spec, claim)  # refuses bad limits before any write
        return await _persist(
            f"cannot start session {spec.session_id}",
            lambda: self._start(spec, deployment, claim),
        )

    async def _start(self, spec: SessionSpec, deployment: dict[str, Any], claim: str) -> Started:
        name = object_name(spec.session_id)
        made_claim = False
        try:
            shared = spec.persistent_home
            made_claim = await self._ensure(self._claim(spec, claim, shared=shared))
            await self._ensure(self._service(spec))
            if not await self._ensure(deployment):
                await self._kube.scale(name, 1)  # made by an earlier run, maybe hibernated
            return await self._wait_ready(spec.session_id, spec.vnc_port)
        except PlatformError as exc:
            if exc.retryable:  # the API server does not answer now: the next try carries on
                raise
            await self._remove(name, claim if made_claim or not spec.persistent_home else None)
            raise

    async def wake(self, spec: SessionSpec, state: PlatformState) -> Started:
        async def wake() -> Started:
            name = object_name(spec.session_id)
            if not await self._kube.scale(name, 1):
                if spec.persistent_home:  # the home is in its claim: a new Deployment will do
                    return await self.start(spec)
                raise PlatformError(f"Deployment {name} is gone, and the session's home with it")
            try:
                return await self._wait_ready(spec.session_id, spec.vnc_port)
            except PlatformError as exc:
                if not exc.retryable:  # keep the hibernated session as it was
                    await self._kube.scale(name, 0)
                raise

        return await _persist(f"cannot wake session {spec.session_id}", wake)

    async def stop(self, state: PlatformState, *, keep_home: bool = False) -> None:
        session_id = state["session_id"]
        own_claim = not state.get("persistent_home") and not keep_home
        claim = session_claim(session_id) if own_claim else None
        await _persist(
            f"cannot stop session {session_id}",
            lambda: self._remove(object_name(session_id), claim),
        )

    async def hibernate(self, state: PlatformState) -> PlatformState:
        session_id = state["session_id"]
        await _persist(
            f"cannot hibernate session {session_id}",
            lambda: self._kube.scale(object_name(session_id), 0),
        )
        return {**state, "status": "hibernated"}

    async def poll(self, state: PlatformState) -> Exited | None:
        """Read from the pod cache (no API call); while it cannot follow the API server,
        the session is taken to run (stale knowledge never fails a session)."""
        if state.get("status") != "running":
            return Exited(f"session is {state.get('status', 'not running')}")
        self._cache.start()
        if not self._cache.synced.is_set():
            return None
        pods = self._cache.pods(SESSION_LABEL, label_value(state["session_id"]))
        pod = next((p for p in pods if p["metadata"]["name"] == state.get("pod")), None)
        if pod is None:
            others = ", ".join(p["metadata"]["name"] for p in pods)
            return Exited(
                f"pod {state.get('pod')} is gone" + (f" (replaced by {others})" if others else "")
            )
        why = failure(pod)
        return None if why is None else Exited(f"pod {state['pod']}: {why}")

    async def list_running(self) -> list[RunningSession]:
        """ONE list of the agent's Deployments plus the pod cache."""
        deployments = (await self._kube.list("Deployment", self._owner)).items
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):
                await self._cache.wait_synced()
        except TimeoutError:
            raise PlatformError("the API server stopped answering", retryable=True) from None
        running = []
        for deployment in deployments:
            annotations = deployment["metadata"].get("annotations") or {}
            session_id = annotations.get(SESSION_LABEL)
            if not session_id or not (deployment.get("spec") or {}).get("replicas"):
                continue
            pods = self._cache.pods(SESSION_LABEL, label_value(session_id))
            views = [(pod, view(pod)) for pod in pods]
            ready = next(((p, v) for p, v in views if v.ready), None)
            if ready is None:
                continue
            port = int(annotations.get(VNC_PORT_ANNOTATION, recipe.VNC_PORT))
            started = self._started(session_id, ready[0], ready[1], port, annotations)
            running.append(
                RunningSession(session_id=session_id, vnc=started.vnc, state=started.state)
            )
        return running

    async def close(self) -> None:
        await self._cache.close()
        await self._kube.close()

    # --- objects ------------------------------------------------------------------------

    def _meta(self, spec: SessionSpec, name: str) -> dict[str, Any]:
        labels = {
            **self._owner,
            SESSION_LABEL: label_value(spec.session_id),
            USER_LABEL: label_value(spec.user),
            TEMPLATE_LABEL: label_value(spec.template),
        }
        annotations = {
            SESSION_LABEL: spec.session_id,
            USER_LABEL: spec.user,
            TEMPLATE_LABEL: spec.template,
            AGENT_LABEL: self._agent_id,
        }
        return {"name": name, "labels": labels, "annotations": annotations}

    def _claim(self, spec: SessionSpec, claim: str, *, shared: bool) -> dict[str, Any]:
        meta = self._meta(spec, claim)
        if shared:  # a user's home outlives sessions: it names no session
            del meta["labels"][SESSION_LABEL], meta["annotations"][SESSION_LABEL]
        body: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": self._pod_settings.home_size}},
        }
        if self._pod_settings.storage_class:
            body["storageClassName"] = self._pod_settings.storage_class
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": body}

    def _service(self, spec: SessionSpec) -> dict[str, Any]:
        meta = self._meta(spec, object_name(spec.session_id))
        selector = {"app": APP, SESSION_LABEL: meta["labels"][SESSION_LABEL]}
        port = {
            "name": "vnc",
            "port": spec.vnc_port,
            "targetPort": spec.vnc_port,
            "protocol": "TCP",
        }
        body = {"type": "ClusterIP", "selector": selector, "ports": [port]}
        return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": body}

    def _deployment(self, spec: SessionSpec, claim: str) -> dict[str, Any]:
        settings = self._pod_settings
        meta = self._meta(spec, object_name(spec.session_id))
        meta["annotations"][HOME_ANNOTATION] = claim
        meta["annotations"][VNC_PORT_ANNOTATION] = str(spec.vnc_port)
        selector = {"app": APP, SESSION_LABEL: meta["labels"][SESSION_LABEL]}
        env = {
            **spec.env,
            "STREAMSPACE_SESSION_ID": spec.session_id,
            "VNC_PORT": str(spec.vnc_port),
        }
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": spec.image or settings.image,
            "args": list(spec.command),  # after the image's entrypoint (Xvnc, the desktop)
            "env": [{"name": key, "value": value} for key, value in env.items()],
            "ports": [{"name": "vnc", "containerPort": spec.vnc_port, "protocol": "TCP"}],
            "resources": self._resources(spec),
            "readinessProbe": {
                "tcpSocket": {"port": spec.vnc_port},
                "periodSeconds": 2,
                "failureThreshold": 1,
            },
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": recipe.UID,
                "runAsGroup": recipe.UID,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": [
                {"name": "home", "mountPath": recipe.HOME},
                {"name": "tmp", "mountPath": "/tmp"},  # X sockets and locks, fresh per pod
            ],
        }
        if not spec.command:
            del container["args"]  # the image's default command
        pod: dict[str, Any] = {
            "containers": [container],
            "automountServiceAccountToken": False,  # sessions never talk to the API server
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": recipe.UID,
                "fsGroup": recipe.UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumes": [
                {"name": "home", "persistentVolumeClaim": {"claimName": claim}},
                {"name": "tmp", "emptyDir": {}},
            ],
        }
        if settings.service_account:
            pod["serviceAccountName"] = settings.service_account
        if settings.node_selector:
            pod["nodeSelector"] = dict(settings.node_selector)
        if settings.tolerations:
            pod["tolerations"] = [dict(t) for t in settings.tolerations]
        if settings.image_pull_secrets:
            pod["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
        template = {
            "metadata": {"labels": meta["labels"], "annotations": meta["annotations"]},
            "spec": pod,
        }
        body = {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "Recreate"},  # the home claim is ReadWriteOnce
            "template": template,
        }
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": body}

    def _resources(self, spec: SessionSpec) -> dict[str, Any]:
        try:
            limits = parse_limits(spec.resources)
        except ValueError as exc:
            raise PlatformError(f"template {spec.template!r}: {exc}") from None
        quantities = {"memory": spec.resources.get("memory", self._pod_settings.memory)}
        if limits.cpus is not None:
            quantities["cpu"] = spec.resources["cpu"]
        return {"requests": dict(quantities), "limits": dict(quantities)}

    async def _ensure(self, body: dict[str, Any]) -> bool:
        """Create the object unless it exists; whether it was created here."""
        try:
            await self._kube.create(body["kind"], body)
            return True
        except KubeApiError as exc:
            if exc.status == CONFLICT and exc.reason == "AlreadyExists":
                return False
            raise

    async def _remove(self, name: str, claim: str | None) -> None:
        await self._kube.delete("Deployment", name)
        await self._kube.delete("Service", name)
        if claim is not None:
            await self._kube.delete("PersistentVolumeClaim", claim)

    # --- waiting ------------------------------------------------------------------------

    async def _wait_ready(self, session_id: str, port: int) -> Started:
        """Follow the session's pod through the cache until it is Ready or fails, reporting
        each stage; a deadline bounds it all (scheduling and image pull included)."""
        reported: set[str] = set()
        value = label_value(session_id)

        def settled() -> tuple[dict[str, Any], PodView] | None:
            for pod in reversed(self._cache.pods(SESSION_LABEL, value)):  # the newest
                seen = view(pod)
                if seen.stage not in reported:
                    reported.add(seen.stage)
                    self.report_progress(session_id, seen.stage, seen.message)
                return (pod, seen) if seen.ready or seen.failure else None
            return None

        try:
            async with asyncio.timeout(self._start_timeout):
                pod, seen = await self._cache.wait_for(settled)
        except TimeoutError:
            if not self._cache.synced.is_set():  # not the pod's fault: try again
                raise PlatformError("the API server does not answer", retryable=True) from None
            raise PlatformError(
                f"the session's pod was not Ready within {self._start_timeout:g} s"
            ) from None
        if seen.failure is not None:
            raise PlatformError(f"pod {pod['metadata']['name']}: {seen.failure}")
        return self._started(session_id, pod, seen, port, {})

    def _started(
        self,
        session_id: str,
        pod: dict[str, Any],
        seen: PodView,
        port: int,
        annotations: dict[str, str],
    ) -> Started:
        annotations = annotations or pod["metadata"].get("annotations") or {}
        claim = annotations.get(HOME_ANNOTATION)
        state: PlatformState = {
            "session_id": session_id,
            "status": "running",
            "pod": pod["metadata"]["name"],
            "home_claim": claim,
            "persistent_home": claim is not None and claim != session_claim(session_id),
            "host": seen.ip,
            "port": port,
        }
        return Started(vnc=VncEndpoint(host=seen.ip, port=port), state=state)


async def _persist(what: str, operation: Callable[[], Awaitable[T]]) -> T:
    """Run ``operation`` (idempotent) until it succeeds or fails for good: while the API
    server cannot be reached it is tried again (backing off), so an outage delays a command
    instead of losing it; the runtime's deadline for the command bounds the wait."""
    delay = RETRY_MIN
    while True:
        try:
            return await operation()
        except PlatformError as exc:
            if not exc.retryable:
                raise PlatformError(f"{what}: {exc}") from exc
            log.warning("%s: %s; trying again in %.1f s", what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(RETRY_MAX, delay * 2)
