"""The controllers the emulator plays, as a test asks: Deployments get Pods (the ReplicaSet
controller, the scheduler and the kubelet in one), Services a cluster IP, claims are Bound.

A Pod goes through what a kubelet reports (Scheduled, Pulling, Pulled, Created, Started, as
v1 Events involving it, and its status) and ends as its :class:`Behaviour` says: Ready, never
Ready, image pull failure, crash loop, OOM kill or unschedulable."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tests.k8s.store import Change, Obj, Store, now

Outcome = Literal["ready", "never", "pull-error", "crash", "oom", "unschedulable"]
NODE = "emulated-node"


@dataclass(frozen=True)
class Behaviour:
    """How the pods of a Deployment fare."""

    outcome: Outcome = "ready"
    delay: float = 0.2
    """Seconds from the pod's creation to its outcome (the progress events come between)."""
    pod_ip: str | None = None
    """The pod's ``status.podIP`` (e.g. ``127.0.0.1`` where a real Xvnc listens); by default
    a fresh ``10.42.x.y``."""


class Controllers:
    """Reacts to the store's changes; pods' lives run as tasks on the emulator's loop."""

    def __init__(self, store: Store, behaviour_of: Callable[[str], Behaviour]) -> None:
        self.store = store
        self.behaviour_of = behaviour_of
        self.lives: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.owner: dict[tuple[str, str], str] = {}  # (namespace, pod) -> deployment
        self._ips = itertools.count(2)
        self._pending: set[tuple[str, str]] = set()
        store.listeners.append(self.changed)

    def changed(self, change: Change) -> None:
        ns, name = change.namespace, change.object["metadata"]["name"]
        if change.plural == "deployments":
            self._later(ns, name)
        elif change.plural == "pods" and (dep := self.owner.get((ns, name))):
            if change.type == "DELETED":
                self._forget(ns, name)
            self._later(ns, dep)
        elif change.type == "ADDED" and change.plural == "services":
            self._services(change)
        elif change.type == "ADDED" and change.plural == "persistentvolumeclaims":
            self._set_status("persistentvolumeclaims", ns, name, {"phase": "Bound"})

    def close(self) -> None:
        for task in self.lives.values():
            task.cancel()

    # --- deployments ------------------------------------------------------------------

    def _later(self, ns: str, name: str) -> None:
        """Reconcile once after the current write (writes come in bursts)."""
        if (ns, name) not in self._pending:
            self._pending.add((ns, name))
            asyncio.get_running_loop().call_soon(self._reconcile, ns, name)

    def _reconcile(self, ns: str, name: str) -> None:
        self._pending.discard((ns, name))
        dep = self.store.objects.get(("deployments", ns, name))
        pods = [p for (pns, p), d in self.owner.items() if pns == ns and d == name]
        if dep is None:
            for pod in pods:
                self._delete_pod(ns, pod)
            return
        template = dep["spec"]["template"]
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        current = []
        for pod in pods:
            obj = self.store.objects[("pods", ns, pod)]
            if obj["metadata"]["labels"].get("pod-template-hash") == digest:
                current.append(pod)
            else:
                self._delete_pod(ns, pod)  # the template changed: replaced
        wanted = dep["spec"].get("replicas", 1)
        for pod in current[wanted:]:
            self._delete_pod(ns, pod)
        for _ in range(wanted - len(current)):
            self._create_pod(dep, digest)
        self._deployment_status(ns, name)

    def _deployment_status(self, ns: str, name: str) -> None:
        dep = self.store.objects[("deployments", ns, name)]
        pods = [
            self.store.objects[("pods", ns, p)]
            for (pns, p), d in self.owner.items()
            if pns == ns and d == name
        ]
        ready = sum(_ready(pod) for pod in pods)
        counts = {
            "replicas": len(pods),
            "updatedReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": len(pods) - ready,
        }
        wanted = dep["spec"].get("replicas", 1)
        status = {k: v for k, v in counts.items() if v}  # zeros are omitted, as for real
        status["observedGeneration"] = dep["metadata"]["generation"]
        status["conditions"] = [
            {
                "type": "Available",
                "status": "True" if ready >= wanted else "False",
                "reason": "MinimumReplicasAvailable"
                if ready >= wanted
                else "MinimumReplicasUnavailable",
            }
        ]
        if dep.get("status") != status:
            self._set_status("deployments", ns, name, status)

    # --- pods -------------------------------------------------------------------------

    def _create_pod(self, dep: Obj, digest: str) -> None:
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        template = copy.deepcopy(dep["spec"]["template"])
        meta = template.get("metadata") or {}
        pod_name = f"{name}-{digest[:9]}-{uuid.uuid4().hex[:5]}"
        pod: Obj = {
            "metadata": {
                "name": pod_name,
                "labels": {**(meta.get("labels") or {}), "pod-template-hash": digest},
                "annotations": meta.get("annotations") or {},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": f"{name}-{digest[:9]}",
                        "uid": dep["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": template.get("spec") or {},
        }
        self.owner[(ns, pod_name)] = name
        self.store.create("pods", ns, pod)
        self._set_status("pods", ns, pod_name, {"phase": "Pending", "qosClass": "Burstable"})
        behaviour = self.behaviour_of(name)
        self.lives[(ns, pod_name)] = asyncio.create_task(self._live(ns, pod_name, behaviour))

    def _delete_pod(self, ns: str, pod: str) -> None:
        self._forget(ns, pod)
        with contextlib.suppress(Exception):
            self.store.delete("pods", ns, pod)

    def _forget(self, ns: str, pod: str) -> None:
        self.owner.pop((ns, pod), None)
        task = self.lives.pop((ns, pod), None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _live(self, ns: str, pod: str, behaviour: Behaviour) -> None:
        step = behaviour.delay / 4
        obj = self.store.objects[("pods", ns, pod)]
        image = obj["spec"]["containers"][0].get("image", "")
        await asyncio.sleep(0)
        if behaviour.outcome == "unschedulable":
            self._pod(ns, pod, conditions=[_cond("PodScheduled", False, "Unschedulable")])
            self.event(ns, pod, "FailedScheduling", UNSCHEDULABLE, warning=True)
            return
        self.store.objects[("pods", ns, pod)]["spec"]["nodeName"] = NODE  # set with the next write
        self._pod(ns, pod, conditions=[_cond("PodScheduled", True)], hostIP="10.0.0.1")
        self.event(ns, pod, "Scheduled", f"Successfully assigned {ns}/{pod} to {NODE}")
        self.event(ns, pod, "Pulling", f'Pulling image "{image}"')
        self._containers(ns, pod, {"waiting": {"reason": "ContainerCreating"}})
        await asyncio.sleep(step)
        if behaviour.outcome == "pull-error":
            message = f'Failed to pull image "{image}": {image}: not found'
            self._containers(ns, pod, {"waiting": {"reason": "ErrImagePull", "message": message}})
            self.event(ns, pod, "Failed", message, warning=True)
            await asyncio.sleep(step)
            back_off = f'Back-off pulling image "{image}"'
            self._containers(
                ns, pod, {"waiting": {"reason": "ImagePullBackOff", "message": back_off}}
            )
            self.event(ns, pod, "BackOff", back_off, warning=True)
            return
        self.event(ns, pod, "Pulled", f'Successfully pulled image "{image}"')
        await asyncio.sleep(step)
        n = next(self._ips)
        ip = behaviour.pod_ip or f"10.42.{n // 250}.{n % 250 + 2}"
        self.event(ns, pod, "Created", "Created container")
        self.event(ns, pod, "Started", "Started container")
        self._pod(ns, pod, phase="Running", podIP=ip, podIPs=[{"ip": ip}], startTime=now())
        self._containers(ns, pod, {"running": {"startedAt": now()}})
        await asyncio.sleep(step)
        if behaviour.outcome in ("crash", "oom"):
            self.crash(ns, pod, "OOMKilled" if behaviour.outcome == "oom" else "Error")
            return
        if behaviour.outcome == "ready":
            await asyncio.sleep(step)
            self._containers(ns, pod, {"running": {"startedAt": now()}}, ready=True)

    def crash(self, ns: str, pod: str, reason: str = "Error") -> None:
        """The container ended (``Error`` or ``OOMKilled``) and is restarted in a loop."""
        code = 137 if reason == "OOMKilled" else 1
        last = {"terminated": {"reason": reason, "exitCode": code, "finishedAt": now()}}
        waiting = {
            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed"}
        }
        self._containers(ns, pod, waiting, restarts=1, last=last)
        self.event(ns, pod, "BackOff", "Back-off restarting failed container", warning=True)

    def _pod(self, ns: str, pod: str, **status: object) -> None:
        obj = self.store.objects[("pods", ns, pod)]
        merged = {**copy.deepcopy(obj.get("status") or {}), **status}
        self._set_status("pods", ns, pod, merged)

    def _containers(
        self,
        ns: str,
        pod: str,
        state: Obj,
        *,
        ready: bool = False,
        restarts: int = 0,
        last: Obj | None = None,
    ) -> None:
        obj = self.store.objects[("pods", ns, pod)]
        statuses = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": ready,
                "started": "running" in state,
                "restartCount": restarts,
                "state": state,
                "lastState": last or {},
            }
            for c in obj["spec"]["containers"]
        ]
        conditions = [
            _cond("PodScheduled", True),
            _cond("Initialized", True),
            _cond("ContainersReady", ready, None if ready else "ContainersNotReady"),
            _cond("Ready", ready, None if ready else "ContainersNotReady"),
        ]
        self._pod(ns, pod, containerStatuses=statuses, conditions=conditions)

    def _set_status(self, plural: str, ns: str, name: str, status: Obj) -> None:
        obj = copy.deepcopy(self.store.objects[(plural, ns, name)])
        obj["status"] = status
        obj["metadata"].pop("resourceVersion", None)
        self.store.update(plural, ns, obj, part="status")

    def _services(self, change: Change) -> None:
        obj = copy.deepcopy(change.object)
        if obj.get("spec", {}).get("clusterIP") != "None":
            n = next(self._ips)
            obj.setdefault("spec", {})["clusterIP"] = f"10.43.{n // 250}.{n % 250 + 2}"
            obj["metadata"].pop("resourceVersion", None)
            self.store.update("services", change.namespace, obj)

    def event(self, ns: str, pod: str, reason: str, message: str, *, warning: bool = False) -> None:
        """A v1 Event involving the pod, as the kubelet or the scheduler reports it."""
        obj = self.store.objects[("pods", ns, pod)]
        stamp = now()
        self.store.create(
            "events",
            ns,
            {
                "metadata": {"name": f"{pod}.{uuid.uuid4().hex[:16]}"},
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod,
                    "namespace": ns,
                    "uid": obj["metadata"]["uid"],
                },
                "reason": reason,
                "message": message,
                "type": "Warning" if warning else "Normal",
                "source": {"component": "default-scheduler" if "Sched" in reason else "kubelet"},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            },
        )


UNSCHEDULABLE = "0/1 nodes are available: 1 Insufficient memory."


def _cond(kind: str, ok: bool, reason: str | None = None) -> Obj:
    cond: Obj = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now()}
    if reason:
        cond["reason"] = reason
        if reason == "Unschedulable":
            cond["message"] = UNSCHEDULABLE
    return cond


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
