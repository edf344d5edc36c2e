"""KubernetesPlatform against the Kubernetes API emulator over real HTTP.

First the platform on its own (the cases shared with a real cluster, then what only the
emulator can stage: crashes, pods never Ready, a 409, the API server down), then a real
``streamspace api`` with a real ``streamspace agent --platform kubernetes``: the emulator
gives the session's pod the address of a real Xvnc, so real RFB bytes cross the control
plane's tunnel.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamspace.agent.platforms import create_platform
from streamspace.agent.platforms.base import Exited, PlatformError
from streamspace.agent.platforms.kubernetes.platform import (
    KubernetesPlatform,
    home_claim,
    label_value,
    object_name,
    session_claim,
)
from streamspace.agent.platforms.local_procs import display_taken
from streamspace.config import AgentSettings
from streamspace.protocol import PlatformName
from tests.helpers import eventually, wait_for_agent
from tests.k8s import platform_cases as cases
from tests.k8s.controllers import Behaviour
from tests.k8s.emulator import KubeEmulator
from tests.local_sessions import TIMEOUT, Cluster, view
from tests.processes import VENV_BIN, AgentProcess, ApiProcess
from tests.services import free_port

pytestmark = pytest.mark.timeout(180)

AGENT_ID = "k8s-test-agent"


class EmulatorObjects:
    """The emulator's store, read from the test's thread."""

    def __init__(self, kube: KubeEmulator) -> None:
        self._kube = kube

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._kube.get, plural, name)


def make_platform(kube: KubeEmulator, **settings: Any) -> KubernetesPlatform:
    """Through ``create_platform``, as ``streamspace agent --platform kubernetes`` does."""
    values: dict[str, Any] = {
        "agent_id": AGENT_ID,
        "kubeconfig": kube.kubeconfig_path,
        "kubernetes_start_timeout": 20,
        **settings,
    }
    platform = create_platform(PlatformName.KUBERNETES, AgentSettings(**values))
    assert isinstance(platform, KubernetesPlatform)
    return platform


@pytest.fixture
async def platform(kube: KubeEmulator) -> AsyncIterator[KubernetesPlatform]:
    made = make_platform(kube)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def cluster(kube: KubeEmulator, platform: KubernetesPlatform) -> cases.ClusterView:
    view = cases.ClusterView(platform=platform, objects=EmulatorObjects(kube))
    platform.progress = lambda *report: view.progress.append(report)
    return view


# --- the cases shared with a real cluster ---------------------------------------------


async def test_start_runs_a_locked_down_pod_and_stop_removes_it(
    cluster: cases.ClusterView,
) -> None:
    await cases.case_start_runs_a_locked_down_pod_and_stop_removes_it(cluster)


async def test_hibernate_and_wake_keep_the_claim(cluster: cases.ClusterView) -> None:
    await cases.case_hibernate_scales_to_zero_and_wake_to_one_keeping_the_claim(cluster)


async def test_a_new_platform_adopts_running_sessions(
    kube: KubeEmulator, cluster: cases.ClusterView
) -> None:
    other = make_platform(kube)
    try:
        await cases.case_a_new_platform_adopts_running_sessions(cluster, other)
    finally:
        await other.close()


async def test_a_bad_image_fails_the_start_and_leaves_nothing(
    kube: KubeEmulator, cluster: cases.ClusterView
) -> None:
    kube.behaviour = Behaviour(outcome="pull-error")
    await cases.case_a_bad_image_fails_the_start_and_leaves_nothing(cluster)


# --- what only the emulator can stage ----------------------------------------------------


async def test_start_reports_each_stage_in_words(
    kube: KubeEmulator, cluster: cases.ClusterView
) -> None:
    kube.behaviour = Behaviour(delay=0.4)
    spec = cluster.spec()
    await cluster.platform.start(spec)
    stages = [stage for session, stage, _ in cluster.progress if session == spec.session_id]
    # Each stage once, in order; those the emulator passes in one write may go unseen.
    order = ["pending", "scheduled", "pulling image", "started", "ready"]
    assert stages == sorted(set(stages), key=order.index), stages
    assert {"pulling image", "started", "ready"} <= set(stages), stages
    messages = {stage: text for _, stage, text in cluster.progress}
    image = "streamspace/session:bookworm"
    assert messages["pulling image"] == f"pulling image {image} on emulated-node"
    assert messages["ready"].startswith("ready at 10.42.")


@pytest.mark.parametrize(
    ("outcome", "words"),
    [
        ("never", "was not Ready within 1.5 s"),
        ("unschedulable", "unschedulable: 0/1 nodes are available: 1 Insufficient memory"),
        ("crash", "CrashLoopBackOff"),
        ("oom", "out of memory (OOMKilled, exit code 137)"),
    ],
)
async def test_a_pod_that_cannot_come_up_fails_the_start_and_leaves_nothing(
    kube: KubeEmulator, outcome: str, words: str
) -> None:
    kube.behaviour = Behaviour(outcome=outcome)  # type: ignore[arg-type]
    platform = make_platform(kube, kubernetes_start_timeout=1.5)
    try:
        spec = cases.ClusterView(platform, EmulatorObjects(kube)).spec()
        with pytest.raises(PlatformError, match=words.replace("(", r"\(").replace(")", r"\)")):
            await platform.start(spec)
    finally:
        await platform.close()
    name = object_name(spec.session_id)
    assert kube.get("deployments", name) is None
    assert kube.get("services", name) is None
    assert kube.get("persistentvolumeclaims", session_claim(spec.session_id)) is None


async def test_a_failed_start_keeps_a_home_that_existed_before(
    kube: KubeEmulator, cluster: cases.ClusterView
) -> None:
    spec = cluster.spec(persistent_home=True)
    first = await cluster.platform.start(spec)
    await cluster.platform.stop(first.state)
    kube.behaviour = Behaviour(outcome="pull-error")
    again = cluster.spec(persistent_home=True)
    with pytest.raises(PlatformError, match="cannot pull image"):
        await cluster.platform.start(again)
    assert kube.get("deployments", object_name(again.session_id)) is None
    assert kube.get("persistentvolumeclaims", home_claim(spec.user, spec.template)) is not None


@pytest.mark.parametrize("reason", ["Error", "OOMKilled"])
async def test_poll_reports_a_pod_that_died_by_itself(
    kube: KubeEmulator, cluster: cases.ClusterView, reason: str
) -> None:
    started = await cluster.platform.start(cluster.spec())
    kube.crash(object_name(started.state["session_id"]), reason)

    async def exited() -> Exited | None:
        return await cluster.platform.poll(started.state)

    found = await eventually(exited, timeout=10, message="the crash is seen")
    assert reason in found.reason and started.state["pod"] in found.reason, found


async def test_a_deleted_pod_is_reported_even_when_replaced(
    kube: KubeEmulator, cluster: cases.ClusterView
) -> None:
    started = await cluster.platform.start(cluster.spec())
    kube.delete("pods", started.state["pod"])

    async def exited() -> Exited | None:
        return await cluster.platform.poll(started.state)

    found = await eventually(exited, timeout=10, message="the deletion is seen")
    assert f"pod {started.state['pod']} is gone" in found.reason


async def test_a_409_on_an_update_is_re_read_and_retried(
    kube: KubeEmulator, cluster: cases.ClusterView
) -> None:
    started = await cluster.platform.start(cluster.spec())
    name = object_name(started.state["session_id"])
    kube.conflict_next("deployments", times=2)
    mark = len(kube.calls)
    await cluster.platform.hibernate(started.state)
    deployment = kube.get("deployments", name)
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    assert kube.count(since=mark)["PATCH deployments/scale"] == 3  # two 409s, then done


async def test_the_api_server_down_delays_a_command_and_loses_nothing(
    kube: KubeEmulator, cluster: cases.ClusterView
) -> None:
    started = await cluster.platform.start(cluster.spec())
    kube.down()
    assert await cluster.platform.poll(started.state) is None  # stale: taken to run
    hibernating = asyncio.create_task(cluster.platform.hibernate(started.state))
    await asyncio.sleep(2)  # part of the outage the command lives through
    assert not hibernating.done()
    kube.up()
    await asyncio.wait_for(hibernating, 15)
    deployment = kube.get("deployments", object_name(started.state["session_id"]))
    assert deployment is not None and deployment["spec"]["replicas"] == 0


async def test_settings_shape_every_pod(kube: KubeEmulator) -> None:
    platform = make_platform(
        kube,
        kubernetes_node_selector={"pool": "sessions"},
        kubernetes_tolerations=[{"key": "sessions", "operator": "Exists"}],
        kubernetes_image_pull_secrets=["regcred"],
        kubernetes_storage_class="fast",
        kubernetes_service_account="session-runner",
        kubernetes_session_memory="1Gi",
    )
    try:
        spec = cases.ClusterView(platform, EmulatorObjects(kube)).spec(user="Ann Lee@corp")
        started = await platform.start(spec)
    finally:
        await platform.close()
    deployment = kube.get("deployments", object_name(spec.session_id))
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "sessions"}
    assert pod["tolerations"] == [{"key": "sessions", "operator": "Exists"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "session-runner"
    assert pod["containers"][0]["resources"]["limits"] == {"memory": "1Gi"}
    meta = deployment["metadata"]
    assert meta["labels"]["streamspace.io/user"] == label_value("Ann Lee@corp") != "Ann Lee@corp"
    assert meta["annotations"]["streamspace.io/user"] == "Ann Lee@corp"
    claim = kube.get("persistentvolumeclaims", session_claim(spec.session_id))
    assert claim is not None and claim["spec"]["storageClassName"] == "fast"
    assert started.state["pod"]


def test_bad_settings_are_refused_in_words() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        AgentSettings(kubernetes_tolerations=[{"key": "x", "operatr": "Exists"}])
    with pytest.raises(ValueError, match="not a quantity"):
        AgentSettings(kubernetes_home_size="lots")


# --- through the control plane -------------------------------------------------------------


@pytest.fixture
def xvnc() -> Iterator[int]:
    """A real Xvnc serving RFB on TCP 127.0.0.1: what the emulated pod's IP and port reach."""
    port = free_port()
    display = next(d for d in range(150, 1000) if not display_taken(d))
    argv = ["Xvnc", f":{display}", "-rfbport", str(port), "-localhost", "-SecurityTypes", "None"]
    argv += ["-geometry", "1280x800", "-depth", "24", "-nolisten", "tcp", "-AlwaysShared"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
async def k8s_cluster(
    api: ApiProcess, admin: httpx.AsyncClient, kube: KubeEmulator, xvnc: int, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """A real ``--platform kubernetes`` agent on ``api``, its cluster the emulator, whose
    session pods are at the test's Xvnc; template ``k8s-desktop`` uses that port."""
    kube.behaviour = Behaviour(pod_ip="127.0.0.1")
    template = {
        "name": "k8s-desktop",
        "display_name": "Desktop on Kubernetes",
        "command": ["xterm"],
        "vnc_port": xvnc,
        "platform": "kubernetes",
    }
    created = await admin.post("/api/v1/templates", json=template)
    assert created.status_code == 201, created.text
    agent = k8s_agent(api, kube, tmp_path / "agent")
    agent.start()
    try:
        await wait_for_agent(admin, AGENT_ID, timeout=TIMEOUT)
        yield Cluster(api, admin, agent, tmp_path / "agent")
    finally:
        agent.kill()


def k8s_agent(api: ApiProcess, kube: KubeEmulator, directory: Path) -> AgentProcess:
    return AgentProcess(
        directory,
        control_plane_url=api.url,
        agent_id=AGENT_ID,
        behaviour=None,
        platform="kubernetes",
        env={"KUBECONFIG": str(kube.kubeconfig_path)},
    )


async def test_a_session_runs_as_a_pod_and_carries_rfb_through_the_tunnel(
    k8s_cluster: Cluster, kube: KubeEmulator
) -> None:
    kube.behaviour = Behaviour(pod_ip="127.0.0.1", delay=4.0)
    created = await k8s_cluster.client.post("/api/v1/sessions", json={"template": "k8s-desktop"})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]

    async def progress() -> str | None:
        found = (await k8s_cluster.client.get(f"/api/v1/sessions/{sid}")).json()
        message = found.get("status_message") or ""
        return message if message.startswith("pulling image") else None

    shown = await eventually(progress, timeout=TIMEOUT, message="progress shown")
    assert "emulated-node" in shown
    running = await k8s_cluster.state(sid, "running")
    assert running["status_message"] is None  # the start is over
    assert kube.get("deployments", object_name(sid)) is not None
    await view(k8s_cluster, sid)

    await k8s_cluster.action(sid, "hibernate")
    await k8s_cluster.state(sid, "hibernated")
    deployment = kube.get("deployments", object_name(sid))
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    await k8s_cluster.action(sid, "wake")
    await k8s_cluster.state(sid, "running")
    await view(k8s_cluster, sid)

    await k8s_cluster.action(sid, "stop")
    await k8s_cluster.state(sid, "terminated")
    assert kube.get("deployments", object_name(sid)) is None
    assert kube.get("services", object_name(sid)) is None


async def test_a_restarted_agent_adopts_its_sessions(
    k8s_cluster: Cluster, kube: KubeEmulator, api: ApiProcess, tmp_path: Path
) -> None:
    running = await k8s_cluster.launch("k8s-desktop")
    sid = running["id"]
    k8s_cluster.agent.kill()
    connections = k8s_cluster.agent.output().count("connected to")  # the log is shared
    mark = len(kube.calls)
    agent = k8s_agent(api, kube, tmp_path / "agent")
    agent.start()
    k8s_cluster.agent = agent

    async def reconnected() -> bool:
        return agent.output().count("connected to") > connections

    await eventually(reconnected, timeout=TIMEOUT, message="restarted agent connected")
    assert (await k8s_cluster.state(sid, "running"))["id"] == sid
    await view(k8s_cluster, sid)  # the new agent tunnels to the adopted pod
    calls = kube.count(since=mark)
    assert calls["GET deployments"] == 1 and calls["GET pods"] == 1, calls
    assert calls["WATCH pods"] == 1, calls


async def test_a_crashed_pod_fails_the_session_with_its_reason(
    k8s_cluster: Cluster, kube: KubeEmulator
) -> None:
    running = await k8s_cluster.launch("k8s-desktop")
    sid = running["id"]
    kube.crash(object_name(sid), "OOMKilled")
    failed = await k8s_cluster.state(sid, "failed")
    assert "OOMKilled" in (failed["termination_reason"] or ""), failed
    # The control plane has the agent clean up after the failure: the objects go.
    await eventually(
        lambda: _absent(kube, "deployments", object_name(sid)),
        timeout=TIMEOUT,
        message="Deployment removed",
    )


async def test_a_start_that_cannot_pull_fails_the_session_saying_so(
    k8s_cluster: Cluster, kube: KubeEmulator
) -> None:
    kube.behaviour = Behaviour(outcome="pull-error")
    failed = await k8s_cluster.launch("k8s-desktop", expect="failed")
    assert "cannot pull image" in (failed["termination_reason"] or ""), failed
    assert kube.get("deployments", object_name(failed["id"])) is None


async def test_the_api_server_down_for_10_s_loses_nothing(
    k8s_cluster: Cluster, kube: KubeEmulator
) -> None:
    kept = await k8s_cluster.launch("k8s-desktop")
    stopped = await k8s_cluster.launch("k8s-desktop")
    kube.down()
    try:
        await k8s_cluster.action(stopped["id"], "stop")  # sent while the server is away
        await asyncio.sleep(10)  # the outage itself
        assert (await k8s_cluster.state(kept["id"], "running"))["id"] == kept["id"]
        assert (await k8s_cluster.state(stopped["id"], "stopping"))["id"] == stopped["id"]
    finally:
        kube.up()
    await k8s_cluster.state(stopped["id"], "terminated")
    assert kube.get("deployments", object_name(stopped["id"])) is None
    assert (await k8s_cluster.state(kept["id"], "running"))["id"] == kept["id"]
    await view(k8s_cluster, kept["id"])


async def _absent(kube: KubeEmulator, plural: str, name: str) -> bool:
    return await asyncio.to_thread(kube.get, plural, name) is None


def test_the_agent_without_a_cluster_says_what_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    done = subprocess.run(
        [str(VENV_BIN / "streamspace"), "agent", "--platform", "kubernetes"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(missing)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    words = " ".join(done.stderr.replace("│", " ").split())
    assert "no Kubernetes configuration: run in a cluster or set KUBECONFIG" in words, words
