"""The kubernetes platform's cases (``platform_cases``) against a real cluster.

Runs when ``KUBECONFIG`` names one (the namespace: ``NAMESPACE`` or the context's; the
session image: ``KUBERNETES_SESSION_IMAGE``, pullable by the cluster), and is skipped
otherwise, saying so: no kube-apiserver can be had on the machines the suite usually runs on.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamspace.agent.platforms import create_platform
from streamspace.agent.platforms.kubernetes.client import Kind, KubeClient
from streamspace.agent.platforms.kubernetes.platform import (
    AGENT_LABEL,
    APP,
    KubernetesPlatform,
    label_value,
)
from streamspace.config import AgentSettings
from streamspace.protocol import PlatformName
from tests.k8s import platform_cases as cases

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="no real cluster: set KUBECONFIG to run the kubernetes platform against one",
    ),
    pytest.mark.timeout(600),
]

KINDS: dict[str, Kind] = {
    "deployments": "Deployment",
    "services": "Service",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "pods": "Pod",
}


class ClusterObjects:
    """The cluster's objects, read with a client of the test's own."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return await self._client.get(KINDS[plural], name)


def make_platform(agent_id: str) -> KubernetesPlatform:
    settings = AgentSettings(agent_id=agent_id, kubernetes_start_timeout=300)
    platform = create_platform(PlatformName.KUBERNETES, settings)
    assert isinstance(platform, KubernetesPlatform)
    return platform


@pytest.fixture
def agent_id() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def cluster(agent_id: str) -> AsyncIterator[cases.ClusterView]:
    """The platform of a fresh agent id; the claims it left (persistent homes) go after."""
    platform = make_platform(agent_id)
    reader = KubeClient.from_settings(AgentSettings())
    try:
        yield cases.ClusterView(platform=platform, objects=ClusterObjects(reader))
    finally:
        await platform.close()
        owned = {"app": APP, AGENT_LABEL: label_value(agent_id)}
        for claim in (await reader.list("PersistentVolumeClaim", owned)).items:
            await reader.delete("PersistentVolumeClaim", claim["metadata"]["name"])
        await reader.close()


async def test_start_runs_a_locked_down_pod_and_stop_removes_it(
    cluster: cases.ClusterView,
) -> None:
    await cases.case_start_runs_a_locked_down_pod_and_stop_removes_it(cluster)


async def test_hibernate_and_wake_keep_the_claim(cluster: cases.ClusterView) -> None:
    await cases.case_hibernate_scales_to_zero_and_wake_to_one_keeping_the_claim(cluster)


async def test_a_new_platform_adopts_running_sessions(
    cluster: cases.ClusterView, agent_id: str
) -> None:
    other = make_platform(agent_id)
    try:
        await cases.case_a_new_platform_adopts_running_sessions(cluster, other)
    finally:
        await other.close()


async def test_a_bad_image_fails_the_start_and_leaves_nothing(
    cluster: cases.ClusterView,
) -> None:
    await cases.case_a_bad_image_fails_the_start_and_leaves_nothing(cluster)
