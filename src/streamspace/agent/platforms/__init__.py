"""Where sessions run: the Platform contract (``base``) and its implementations."""

from __future__ import annotations

from streamspace.agent.platforms.base import Platform
from streamspace.config import AgentSettings
from streamspace.protocol import PlatformName


def create_platform(name: PlatformName, settings: AgentSettings) -> Platform:
    """The platform ``name`` configured from ``settings`` (imports only what it needs)."""
    if name is PlatformName.LOCAL:
        from streamspace.agent.platforms.local import LocalPlatform

        return LocalPlatform.from_settings(settings)
    if name is PlatformName.DOCKER:
        from streamspace.agent.platforms.docker import DockerPlatform
        from streamspace.agent.platforms.docker_client import DockerClient

        return DockerPlatform(
            client=DockerClient(settings.docker_host),
            agent_id=settings.agent_id,
            image=settings.docker_session_image,
            memory_bytes=settings.docker_session_memory_bytes,
            pids_limit=settings.docker_session_pids,
            vnc_password=settings.docker_vnc_password,
        )
    if name is PlatformName.KUBERNETES:
        from streamspace.agent.platforms.kubernetes.client import KubeClient
        from streamspace.agent.platforms.kubernetes.platform import (
            KubernetesPlatform,
            PodSettings,
        )

        return KubernetesPlatform(
            client=KubeClient.from_settings(settings),
            agent_id=settings.agent_id,
            pods=PodSettings(
                image=settings.kubernetes_session_image,
                memory=settings.kubernetes_session_memory,
                home_size=settings.kubernetes_home_size,
                node_selector=settings.kubernetes_node_selector,
                tolerations=settings.kubernetes_tolerations,
                image_pull_secrets=settings.kubernetes_image_pull_secrets,
                storage_class=settings.kubernetes_storage_class,
                service_account=settings.kubernetes_service_account,
            ),
            start_timeout=settings.kubernetes_start_timeout,
        )
    raise ValueError(f"the {name.value} platform is not available yet")
