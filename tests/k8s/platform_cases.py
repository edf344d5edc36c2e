"""What the kubernetes platform must do, as test functions over a ``cluster`` fixture (a
:class:`ClusterView`): run against the emulator (``test_kubernetes_platform``) and against a
real cluster when ``KUBECONFIG`` is set (``test_real_cluster``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from streamspace.agent.platforms.base import PlatformError
from streamspace.agent.platforms.kubernetes.platform import (
    KubernetesPlatform,
    home_claim,
    object_name,
    session_claim,
)
from streamspace.protocol import SessionSpec
from tests.helpers import eventually


class Objects(Protocol):
    """Reads the cluster's objects the way the test needs (not through the platform)."""

    async def get(self, plural: str, name: str) -> dict[str, Any] | None: ...


@dataclass
class ClusterView:
    platform: KubernetesPlatform
    objects: Objects
    user: str = field(default_factory=lambda: f"user-{uuid.uuid4().hex[:6]}")
    image: str = ""
    progress: list[tuple[str, str, str]] = field(default_factory=list)

    def spec(self, **fields: object) -> SessionSpec:
        values: dict[str, object] = {
            "session_id": f"k-{uuid.uuid4().hex[:12]}",
            "user": self.user,
            "template": "xterm",
            "command": ["xterm"],
            "image": self.image,
            **fields,
        }
        return SessionSpec.model_validate(values)

    async def gone(self, plural: str, name: str) -> None:
        async def absent() -> bool:
            return await self.objects.get(plural, name) is None

        await eventually(absent, timeout=30, message=f"{plural}/{name} removed")


async def case_start_runs_a_locked_down_pod_and_stop_removes_it(cluster: ClusterView) -> None:
    spec = cluster.spec(resources={"cpu": "500m", "memory": "256Mi"}, env={"GREETING": "hi"})
    started = await cluster.platform.start(spec)
    name = object_name(spec.session_id)
    assert name == f"streamspace-{spec.session_id}"
    deployment = await cluster.objects.get("deployments", name)
    assert deployment is not None
    labels = deployment["metadata"]["labels"]
    assert labels["app"] == "streamspace-session"
    assert labels["streamspace.io/session"] == spec.session_id
    assert labels["streamspace.io/user"] == spec.user
    assert labels["streamspace.io/template"] == "xterm"
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["xterm"]
    assert {"name": "GREETING", "value": "hi"} in container["env"]
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "256Mi"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    service = await cluster.objects.get("services", name)
    assert service is not None and service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == spec.vnc_port
    assert await cluster.objects.get("persistentvolumeclaims", session_claim(spec.session_id))
    assert started.vnc.port == spec.vnc_port and started.vnc.host == started.state["host"]
    assert await cluster.platform.poll(started.state) is None

    await cluster.platform.stop(started.state)
    assert await cluster.objects.get("deployments", name) is None
    assert await cluster.objects.get("services", name) is None
    await cluster.gone("persistentvolumeclaims", session_claim(spec.session_id))
    await cluster.platform.stop(started.state)  # idempotent


async def case_hibernate_scales_to_zero_and_wake_to_one_keeping_the_claim(
    cluster: ClusterView,
) -> None:
    spec = cluster.spec(persistent_home=True)
    started = await cluster.platform.start(spec)
    name, claim = object_name(spec.session_id), home_claim(spec.user, spec.template)
    hibernated = await cluster.platform.hibernate(started.state)
    deployment = await cluster.objects.get("deployments", name)
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    assert await cluster.objects.get("persistentvolumeclaims", claim) is not None

    woken = await cluster.platform.wake(spec, hibernated)
    deployment = await cluster.objects.get("deployments", name)
    assert deployment is not None and deployment["spec"]["replicas"] == 1
    assert woken.state["pod"] != started.state["pod"]  # a new pod, on the same claim
    assert await cluster.platform.poll(woken.state) is None

    await cluster.platform.stop(woken.state)
    await cluster.gone("deployments", name)
    assert await cluster.objects.get("persistentvolumeclaims", claim) is not None  # kept


async def case_a_new_platform_adopts_running_sessions(
    cluster: ClusterView, other: KubernetesPlatform
) -> None:
    spec = cluster.spec()
    started = await cluster.platform.start(spec)
    adopted = {s.session_id: s for s in await other.list_running()}
    assert spec.session_id in adopted
    assert adopted[spec.session_id].vnc == started.vnc
    assert adopted[spec.session_id].state["pod"] == started.state["pod"]
    await other.stop(adopted[spec.session_id].state)


async def case_a_bad_image_fails_the_start_and_leaves_nothing(cluster: ClusterView) -> None:
    spec = cluster.spec(image="registry.invalid/streamspace/none:missing")
    with pytest.raises(PlatformError, match="cannot pull image") as failed:
        await cluster.platform.start(spec)
    assert not failed.value.retryable
    name = object_name(spec.session_id)
    assert await cluster.objects.get("deployments", name) is None
    assert await cluster.objects.get("services", name) is None
    await cluster.gone("persistentvolumeclaims", session_claim(spec.session_id))
