"""The Kubernetes lease: a ``coordination.k8s.io/v1`` Lease named after ``AGENT_ID``, held by
``POD_NAME``, for replicas of one agent in a cluster.

Expiry is ``renewTime + leaseDurationSeconds`` by this replica's clock (the cluster's nodes
keep time in sync). Every write carries the resourceVersion read, so of two replicas racing
for an expired lease one gets 409 Conflict and stays a follower, and a holder whose renewal
gets 409 has lost the lease, unless a fresh read shows it is still its own term.
``leaseTransitions`` is the epoch: incremented by every acquisition; a new Lease starts at
the time in seconds, above any epoch a deleted Lease of the same name handed out (one
takeover a second at most: each waits out a lease period, or a release).
"""

from __future__ import annotations

import datetime
import hashlib
import math
import re
import time
from collections.abc import Callable
from typing import Any

from streamspace.agent.leader.base import Lease, LeaseUnavailable
from streamspace.agent.platforms.kubernetes.client import (
    CONFLICT,
    NOT_FOUND,
    KubeApiError,
    LeaseClient,
)

_NOT_DNS = re.compile(r"[^a-z0-9.-]+")


def lease_name(agent_id: str) -> str:
    """``agent_id`` as a Kubernetes object name; one that had to be changed gets a hash of
    the original, so two agent ids never share a Lease."""
    name = _NOT_DNS.sub("-", agent_id.lower()).strip("-.")[:200]
    if name != agent_id:
        name = f"{name}-{hashlib.sha256(agent_id.encode()).hexdigest()[:8]}".lstrip("-")
    return name


def _stamp(seconds: float) -> str:
    """A ``MicroTime``."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class KubernetesLease(Lease):
    """One replica's hold on the agent's Lease (``holder`` is its ``POD_NAME``)."""

    def __init__(
        self,
        client: LeaseClient,
        agent_id: str,
        *,
        holder: str,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.name = lease_name(agent_id)
        self.holder = holder
        # Whole seconds in the API; rounded up, so followers wait at least a full lease.
        self._duration = max(1, math.ceil(lease_seconds))
        self._clock = clock
        self._held: dict[str, Any] | None = None
        """The Lease as we last wrote it (its resourceVersion is our claim), while ours."""

    def expired(self, spec: dict[str, Any]) -> bool:
        """Whether a Lease's holder can no longer count on it (or it has none)."""
        if not spec.get("holderIdentity") or not spec.get("renewTime"):
            return True
        duration = spec.get("leaseDurationSeconds") or self._duration
        return _seconds(spec["renewTime"]) + duration <= self._clock()

    async def acquire(self) -> int | None:
        now = self._clock()
        found = await self._call(self._client.get(self.name))
        if found is None:
            body = {
                "metadata": {"name": self.name},
                "spec": self._spec(now, epoch=int(now), acquired=now),
            }
        elif self.expired(found.get("spec") or {}):
            body = found
            epoch = (found["spec"].get("leaseTransitions") or 0) + 1
            body["spec"] = self._spec(now, epoch=epoch, acquired=now)
        else:
            return None
        write = self._client.create(body) if found is None else self._client.replace(body)
        written = await self._write(write)
        if written is None:
            return None  # another replica was faster
        self._held = written
        epoch_taken: int = written["spec"]["leaseTransitions"]
        return epoch_taken

    async def renew(self) -> bool:
        held = self._held
        if held is None:
            return False
        spec = held["spec"]
        body = {**held, "spec": {**spec, "renewTime": _stamp(self._clock())}}
        written = await self._write(self._client.replace(body))
        if written is None:  # written by someone else since: ours only if still our term
            fresh = await self._call(self._client.get(self.name))
            ours = fresh is not None and self._is_term(fresh["spec"], spec)
            if fresh is None or not ours:
                self._held = None
                return False
            body = {**fresh, "spec": {**fresh["spec"], "renewTime": _stamp(self._clock())}}
            written = await self._write(self._client.replace(body))
        self._held = written
        return written is not None

    async def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            spec = {**held["spec"], "holderIdentity": None, "renewTime": None}
            await self._write(self._client.replace({**held, "spec": spec}))

    async def close(self) -> None:
        await self._client.close()

    def _spec(self, now: float, *, epoch: int, acquired: float) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self._duration,
            "acquireTime": _stamp(acquired),
            "renewTime": _stamp(now),
            "leaseTransitions": epoch,
        }

    def _is_term(self, spec: dict[str, Any], ours: dict[str, Any]) -> bool:
        epoch = ours.get("leaseTransitions")
        return spec.get("holderIdentity") == self.holder and spec.get("leaseTransitions") == epoch

    async def _write(self, call: Any) -> dict[str, Any] | None:
        """The written Lease, or ``None`` when refused with 409 (someone else wrote it) or
        404 (someone deleted it)."""
        try:
            written: dict[str, Any] = await call
        except KubeApiError as exc:
            if exc.status in (CONFLICT, NOT_FOUND):
                return None
            raise LeaseUnavailable(f"Kubernetes: {exc}") from exc
        return written

    async def _call(self, call: Any) -> Any:
        try:
            return await call
        except KubeApiError as exc:
            raise LeaseUnavailable(f"Kubernetes: {exc}") from exc
