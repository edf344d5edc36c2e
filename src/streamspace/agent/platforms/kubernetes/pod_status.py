"""What a session pod's status says: how far it got, whether it is Ready, why it failed.

Pure functions over the Pod object (a dict as the API serves it), so the rules are in one
place and need no cluster to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PULL_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
CONFIG_FAILURES = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)


@dataclass(frozen=True)
class PodView:
    """``stage`` in words (``pending``, ``scheduled``, ``pulling image``, ``started``,
    ``ready``), a ``message`` for humans, and ``failure`` when the pod cannot come up."""

    stage: str
    message: str
    failure: str | None = None
    ip: str | None = None

    @property
    def ready(self) -> bool:
        return self.stage == "ready"


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list((pod.get("status") or {}).get("containerStatuses") or [])


def _terminated(container: dict[str, Any]) -> dict[str, Any]:
    """The current or last termination of the container (empty when it never ended)."""
    state = container.get("state") or {}
    last = container.get("lastState") or {}
    return dict(state.get("terminated") or last.get("terminated") or {})


def _exit(terminated: dict[str, Any]) -> str:
    reason = terminated.get("reason") or "Error"
    text = f"{reason}, exit code {terminated.get('exitCode', '?')}"
    if terminated.get("message"):
        text += f": {terminated['message']}"
    return text


def failure(pod: dict[str, Any]) -> str | None:
    """Why the pod will not (or no longer does) serve its session, if so."""
    scheduled = _condition(pod, "PodScheduled")
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return f"unschedulable: {scheduled.get('message') or 'no node fits the pod'}"
    for container in _containers(pod):
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason") or ""
        detail = f": {waiting['message']}" if waiting.get("message") else ""
        if reason in PULL_FAILURES:
            return f"cannot pull image {container.get('image', '')!r} ({reason}){detail}"
        if reason in CONFIG_FAILURES:
            return f"cannot create the session's container ({reason}){detail}"
        terminated = _terminated(container)
        if terminated.get("reason") == "OOMKilled":
            code = terminated.get("exitCode", "?")
            return f"the session ran out of memory (OOMKilled, exit code {code})"
        if reason == "CrashLoopBackOff":
            last = f"; last exit: {_exit(terminated)}" if terminated else ""
            return f"the session's container keeps crashing (CrashLoopBackOff){last}"
        if terminated or int(container.get("restartCount") or 0) > 0:
            ended = _exit(terminated) if terminated else "restarted"
            return f"the session's container ended ({ended})"
    if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
        status = pod["status"]
        return (
            f"pod {status['phase'].lower()}: {status.get('reason') or status.get('message') or ''}"
        )
    return None


def view(pod: dict[str, Any]) -> PodView:
    """How far the pod got, or why it failed."""
    status = pod.get("status") or {}
    ip = status.get("podIP") or None
    why = failure(pod)
    if why is not None:
        return PodView(stage="failed", message=why, failure=why, ip=ip)
    if _condition(pod, "Ready").get("status") == "True" and ip:
        return PodView(stage="ready", message=f"ready at {ip}", ip=ip)
    containers = _containers(pod)
    if any((c.get("state") or {}).get("running") for c in containers):
        return PodView(stage="started", message="container started; waiting for VNC", ip=ip)
    if _condition(pod, "PodScheduled").get("status") == "True":
        node = (pod.get("spec") or {}).get("nodeName") or "a node"
        waiting = next(((c.get("state") or {}).get("waiting") or {} for c in containers), None)
        if waiting is not None and waiting.get("reason") in (
            "ContainerCreating",
            "PodInitializing",
        ):
            return PodView(stage="pulling image", message=f"pulling image {_image(pod)} on {node}")
        return PodView(stage="scheduled", message=f"scheduled on {node}")
    return PodView(stage="pending", message="waiting for a node")


def _image(pod: dict[str, Any]) -> str:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return str(containers[0].get("image", ""))
