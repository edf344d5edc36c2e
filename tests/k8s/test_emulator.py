"""The Kubernetes API emulator, through lightkube's async client over real HTTP: what the agent
relies on must behave as on a real API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import pytest
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Event, Pod, Service
from lightkube.types import PatchType

from tests.helpers import eventually
from tests.k8s.controllers import Behaviour
from tests.k8s.emulator import KubeEmulator


@pytest.fixture
async def client(kube: KubeEmulator) -> AsyncIterator[AsyncClient]:
    assert kube.kubeconfig_path is not None
    made = AsyncClient(KubeConfig.from_file(kube.kubeconfig_path))
    yield made
    await made.close()


def deployment(session: str, *, replicas: int = 1, user: str = "alice") -> Deployment:
    labels = {"app": "streamspace-session", "streamspace.io/session": session}
    return Deployment.from_dict(
        {
            "metadata": {"name": f"streamspace-{session}", "labels": {**labels, "u": user}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "session", "image": "xterm:1"}]},
                },
            },
        }
    )


async def pods_of(client: AsyncClient, session: str) -> list[Pod]:
    return [p async for p in client.list(Pod, labels={"streamspace.io/session": session})]


def ready(pod: Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


async def error_of(call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await call
    return caught.value


async def test_create_get_list_with_selectors(client: AsyncClient) -> None:
    for session, user in (("a", "alice"), ("b", "bob"), ("c", "carol")):
        made = await client.create(deployment(session, replicas=0, user=user))
        assert made.metadata and made.metadata.uid and made.metadata.generation == 1
    again = await error_of(client.create(deployment("a")))
    assert (again.status.code, again.status.reason) == (409, "AlreadyExists")

    async def names(**kwargs: Any) -> list[str]:
        return [d.metadata.name async for d in client.list(Deployment, **kwargs)]  # type: ignore[union-attr]

    assert await names(labels={"u": "bob"}) == ["streamspace-b"]
    assert await names(labels={"u": ("alice", "carol")}) == ["streamspace-a", "streamspace-c"]
    assert await names(labels={"u": ("alice", "carol"), "app": "streamspace-session"}) == [
        "streamspace-a",
        "streamspace-c",
    ]
    assert await names(fields={"metadata.name": "streamspace-c"}) == ["streamspace-c"]
    assert await names(labels={"nothing": None}) == []
    got = await client.get(Deployment, "streamspace-b")
    assert got.metadata and got.metadata.labels == {
        "app": "streamspace-session",
        "streamspace.io/session": "b",
        "u": "bob",
    }
    missing = await error_of(client.get(Deployment, "streamspace-z"))
    assert (missing.status.code, missing.status.reason) == (404, "NotFound")


async def test_stale_writes_conflict_and_patches_apply(client: AsyncClient) -> None:
    lease = Lease.from_dict({"metadata": {"name": "agent"}, "spec": {"holderIdentity": "a"}})
    first = await client.create(lease)
    assert first.metadata and first.spec
    first.spec.holderIdentity = "b"
    second = await client.replace(first)
    assert second.metadata and first.metadata.resourceVersion != second.metadata.resourceVersion
    first.spec.holderIdentity = "c"  # still the old resourceVersion
    stale = await error_of(client.replace(first))
    assert (stale.status.code, stale.status.reason) == (409, "Conflict")

    patched = await client.patch(Lease, "agent", {"spec": {"leaseTransitions": 3}})
    assert patched.spec and (patched.spec.holderIdentity, patched.spec.leaseTransitions) == (
        "b",
        3,
    )
    ops = [{"op": "replace", "path": "/spec/holderIdentity", "value": "d"}]
    patched = await client.patch(Lease, "agent", ops, patch_type=PatchType.JSON)
    assert patched.spec and patched.spec.holderIdentity == "d"
    old = {"metadata": {"resourceVersion": second.metadata.resourceVersion}}
    stale = await error_of(client.patch(Lease, "agent", old))
    assert stale.status.code == 409


async def test_deployment_gets_a_ready_pod_scale_and_status(
    kube: KubeEmulator, client: AsyncClient
) -> None:
    kube.behaviour = Behaviour(pod_ip="127.0.0.1")
    await client.create(deployment("s1"))

    async def ready_pod() -> Pod | None:
        pods = await pods_of(client, "s1")
        return pods[0] if pods and ready(pods[0]) else None

    pod = await eventually(ready_pod, message="a ready pod")
    assert pod.status and pod.status.podIP == "127.0.0.1" and pod.status.phase == "Running"
    dep = await client.get(Deployment, "streamspace-s1")
    assert dep.status and (dep.status.readyReplicas, dep.status.availableReplicas) == (1, 1)
    reasons = [
        e.reason
        async for e in client.list(Event, fields={"involvedObject.name": pod.metadata.name})
    ]  # type: ignore[union-attr]
    assert {"Scheduled", "Pulling", "Pulled", "Started"} <= set(reasons)

    # status is written only through /status: a replace keeps it
    assert dep.status
    dep.status.readyReplicas = 7
    kept = await client.replace(dep)
    assert kept.status and kept.status.readyReplicas == 1

    scale = await client.get(Deployment.Scale, "streamspace-s1")
    assert scale.spec and scale.status and (scale.spec.replicas, scale.status.replicas) == (1, 1)
    await client.patch(Deployment.Scale, "streamspace-s1", {"spec": {"replicas": 0}})

    async def no_pods() -> bool:
        return not await pods_of(client, "s1")

    await eventually(no_pods, message="the pod deleted")
    dep = await client.get(Deployment, "streamspace-s1")
    assert dep.spec and dep.spec.replicas == 0 and dep.metadata and dep.metadata.generation == 2
    assert dep.status and dep.status.readyReplicas is None  # zeros omitted, as for real

    await client.patch(Deployment.Scale, "streamspace-s1", {"spec": {"replicas": 1}})
    await eventually(ready_pod, message="a ready pod again")
    await client.delete(Deployment, "streamspace-s1")
    await eventually(no_pods, message="the pod deleted with its deployment")


async def test_watch_resumes_and_a_compacted_history_is_gone(
    kube: KubeEmulator, client: AsyncClient
) -> None:
    svc = {"metadata": {"name": "vnc-a"}, "spec": {"ports": [{"port": 5900}]}}
    made = await client.create(Service.from_dict(svc))
    assert made.metadata
    since = made.metadata.resourceVersion
    await client.create(Service.from_dict({**svc, "metadata": {"name": "vnc-b"}}))
    await client.delete(Service, "vnc-a")
    seen: list[tuple[str, str]] = []
    async for kind, obj in client.watch(Service, resource_version=since):
        seen.append((kind, obj.metadata.name))  # type: ignore[union-attr]
        if kind == "DELETED":
            break
    # vnc-a: its cluster IP (MODIFIED), vnc-b created and given one, vnc-a deleted
    assert seen == [
        ("MODIFIED", "vnc-a"),
        ("ADDED", "vnc-b"),
        ("MODIFIED", "vnc-b"),
        ("DELETED", "vnc-a"),
    ]

    kube.compact()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {kube.token}"}) as http:
        url = f"{kube.url}/api/v1/namespaces/{kube.namespace}/services"
        answer = await http.get(url, params={"watch": "true", "resourceVersion": since})
    assert answer.json()["type"] == "ERROR" and answer.json()["object"]["code"] == 410


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        ("pull-error", "ImagePullBackOff"),
        ("crash", "CrashLoopBackOff"),
        ("oom", "OOMKilled"),
        ("unschedulable", "Unschedulable"),
    ],
)
async def test_pods_fail_as_the_test_asks(
    kube: KubeEmulator, client: AsyncClient, outcome: str, reason: str
) -> None:
    kube.behaviours["streamspace-f"] = Behaviour(outcome=outcome)  # type: ignore[arg-type]
    await client.create(deployment("f"))

    async def failed() -> bool:
        pods = await pods_of(client, "f")
        return bool(pods) and reason in str(pods[0].status)

    await eventually(failed, message=f"the pod failing with {reason}")
    (pod,) = await pods_of(client, "f")
    assert not ready(pod)


async def test_faults_down_503_and_an_injected_conflict(
    kube: KubeEmulator, client: AsyncClient
) -> None:
    await client.create(deployment("x", replicas=0))
    kube.down()
    with pytest.raises(httpx2.TransportError):  # lightkube's HTTP client
        await client.get(Deployment, "streamspace-x")
    kube.up()
    kube.down(503)
    failure = await error_of(client.get(Deployment, "streamspace-x"))
    assert failure.status.code == 503
    kube.up()
    before = await client.get(Deployment, "streamspace-x")

    kube.conflict_next("deployments")
    failure = await error_of(client.patch(Deployment, "streamspace-x", {"spec": {"paused": True}}))
    assert failure.status.code == 409
    after = await client.get(Deployment, "streamspace-x")
    assert after.metadata and before.metadata
    assert after.metadata.resourceVersion != before.metadata.resourceVersion
    await client.patch(Deployment, "streamspace-x", {"spec": {"paused": True}})


async def test_discovery_auth_and_error_shape(kube: KubeEmulator) -> None:
    async with httpx.AsyncClient(base_url=kube.url) as http:
        unauthorised = await http.get("/api/v1/namespaces/streamspace/pods")
        assert unauthorised.status_code == 401
        assert unauthorised.headers["content-type"] == "application/json"
        assert unauthorised.json()["kind"] == "Status"
        http.headers["Authorization"] = f"Bearer {kube.token}"
        assert (await http.get("/version/")).json()["major"] == "1"
        groups = (await http.get("/apis")).json()["groups"]
        assert {g["name"] for g in groups} == {"apps", "coordination.k8s.io"}
        apps = (await http.get("/apis/apps/v1")).json()["resources"]
        assert "deployments/scale" in {r["name"] for r in apps}
        bad = await http.post(
            "/apis/apps/v1/namespaces/streamspace/deployments",
            json={"metadata": {"name": "Bad_Name"}, "spec": {}},
        )
        assert (bad.status_code, bad.json()["reason"]) == (422, "Invalid")


async def test_a_running_pod_crashes_when_told(kube: KubeEmulator, client: AsyncClient) -> None:
    await client.create(deployment("c"))

    async def running() -> bool:
        pods = await pods_of(client, "c")
        return bool(pods) and ready(pods[0])

    await eventually(running, message="a ready pod")
    kube.crash("streamspace-c", "OOMKilled")
    (pod,) = await pods_of(client, "c")
    assert pod.status and pod.status.containerStatuses and not ready(pod)
    (status,) = pod.status.containerStatuses
    assert (
        status.state and status.state.waiting and status.state.waiting.reason == "CrashLoopBackOff"
    )
    assert status.lastState and status.lastState.terminated
    assert (status.lastState.terminated.reason, status.lastState.terminated.exitCode) == (
        "OOMKilled",
        137,
    )
    dep = await client.get(Deployment, "streamspace-c")
    assert dep.status and dep.status.readyReplicas is None


async def test_lists_page_and_watch_across_namespaces(
    kube: KubeEmulator, client: AsyncClient
) -> None:
    for n in range(5):
        await client.create(deployment(f"p{n}", replicas=0))
    calls = len(kube.calls)
    names = [d.metadata.name async for d in client.list(Deployment, chunk_size=2)]  # type: ignore[union-attr]
    assert names == [f"streamspace-p{n}" for n in range(5)]
    assert kube.count(since=calls)["GET deployments"] == 3  # pages of 2, 2 and 1
    async for kind, dep in client.watch(Deployment, namespace="*"):
        assert kind == "ADDED" and dep.metadata and dep.metadata.name == "streamspace-p0"
        break
