"""DockerPlatform against a real dockerd: session containers from the real session image.

Direct platform calls for the container mechanics, then a real ``streamspace api`` with a
real ``streamspace agent --platform docker`` for what goes through the control plane (the
VNC tunnel, re-adoption by a restarted agent, a killed container reported by ``status``).
Every test runs under ``docker_scope``, which fails it for containers, volumes or networks
it leaves behind.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError
from rich.console import Console

from streamspace.agent.platforms import create_platform
from streamspace.agent.platforms.base import Exited, PlatformError
from streamspace.agent.platforms.docker import (
    DEFAULT_MEMORY,
    DEFAULT_PIDS,
    DockerPlatform,
    container_name,
    home_volume,
)
from streamspace.agent.platforms.docker_client import DockerApiError, DockerClient
from streamspace.agent.platforms.vnc_probe import read_rfb_banner
from streamspace.config import AgentSettings
from streamspace.images import recipe
from streamspace.images.builder import build_session_image
from streamspace.protocol import PlatformName, SessionSpec
from tests.docker_env import DockerScope, container_labels, docker
from tests.helpers import eventually
from tests.local_sessions import RFB, TIMEOUT, Cluster, view
from tests.processes import AgentProcess

# The first test also waits for the session image build (about 90 s here, once per machine).
pytestmark = pytest.mark.timeout(400)

DOCKER_HOST = "unix:///var/run/docker.sock"
MAX_FILLERS = 200
"""Networks made to use up the daemon's address pools (its defaults hold about 30)."""


def make_spec(scope: DockerScope, template: str = "xterm", **fields: object) -> SessionSpec:
    command = {"xterm": ["xterm"], "xedit": ["xedit"]}.get(template, [template])
    values: dict[str, object] = {
        "session_id": f"d-{uuid.uuid4().hex[:12]}",
        "user": scope.user,
        "template": template,
        "command": command,
        "persistent_home": template == "xedit",
        **fields,
    }
    return SessionSpec.model_validate(values)


@pytest.fixture
async def platform(docker_scope: DockerScope, docker_image: str) -> AsyncIterator[DockerPlatform]:
    platform = DockerPlatform(
        client=DockerClient(DOCKER_HOST), agent_id=docker_scope.agent_id, image=docker_image
    )
    try:
        yield platform
    finally:
        await platform.close()


async def container_exists(name: str) -> bool:
    return bool((await docker("ps", "-aq", "--filter", f"name=^{name}$")).strip())


async def volume_exists(name: str) -> bool:
    return bool((await docker("volume", "ls", "-q", "--filter", f"name=^{name}$")).strip())


def test_the_builder_keeps_an_image_built_from_the_same_recipe(docker_image: str) -> None:
    output = io.StringIO()
    assert build_session_image(tag=docker_image, console=Console(file=output)) is False
    assert f"up to date (recipe {recipe.digest()})" in output.getvalue()


# --- the platform on its own -------------------------------------------------------------


async def test_start_serves_rfb_with_labels_and_limits_and_stop_removes_it(
    platform: DockerPlatform, docker_scope: DockerScope
) -> None:
    spec = make_spec(docker_scope, resources={"cpu": "500m", "memory": "256Mi"})
    started = await platform.start(spec)
    assert started.vnc.host == "127.0.0.1"
    assert await read_rfb_banner(started.vnc.host, started.vnc.port, 5.0) == RFB
    name = container_name(spec.session_id)
    labels = await container_labels(name)
    assert labels["streamspace.session"] == spec.session_id
    assert labels["streamspace.agent"] == docker_scope.agent_id
    assert (labels["streamspace.user"], labels["streamspace.template"]) == (spec.user, "xterm")
    limits = await docker(
        "inspect", "--format", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}", name
    )
    assert limits.split() == ["500000000", str(256 * 2**20)]
    assert await platform.poll(started.state) is None

    await platform.stop(started.state)
    assert not await container_exists(name)
    assert await platform.poll(started.state) == Exited("container no longer exists")
    await platform.stop(started.state)  # idempotent


async def network_exists(name: str) -> bool:
    return bool((await docker("network", "ls", "-q", "--filter", f"name=^{name}$")).strip())


async def test_a_session_runs_locked_down_on_a_network_of_its_own(
    platform: DockerPlatform, docker_scope: DockerScope
) -> None:
    """Non-root, no capabilities, no-new-privileges, read-only root, pid and (default)
    memory limits, VNC published on loopback only, and a labelled network that is the
    container's alone; stop removes the network and the anonymous home with the container."""
    spec = make_spec(docker_scope)
    started = await platform.start(spec)
    name = container_name(spec.session_id)
    (found,) = json.loads(await docker("inspect", name))
    host = found["HostConfig"]
    assert found["Config"]["User"] == f"{recipe.UID}:{recipe.UID}"
    assert (host["CapDrop"], host["CapAdd"]) == (["ALL"], None)
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True
    assert (host["PidsLimit"], host["Memory"]) == (DEFAULT_PIDS, DEFAULT_MEMORY)
    published = [b for bindings in found["NetworkSettings"]["Ports"].values() for b in bindings]
    assert {b["HostIp"] for b in published} == {"127.0.0.1"}, published
    assert [int(b["HostPort"]) for b in published] == [started.vnc.port]

    assert host["NetworkMode"] == name
    assert list(found["NetworkSettings"]["Networks"]) == [name]
    (network,) = json.loads(await docker("network", "inspect", name))
    assert network["Labels"] == {
        "streamspace.session": spec.session_id,
        "streamspace.agent": docker_scope.agent_id,
    }
    assert [c["Name"] for c in network["Containers"].values()] == [name]
    (home,) = [m["Name"] for m in found["Mounts"] if m["Destination"] == recipe.HOME]
    assert await platform.vnc_password(spec.session_id) is None  # unless configured

    await platform.stop(started.state)
    assert not await container_exists(name)
    assert not await network_exists(name)
    assert not await volume_exists(home)


async def test_the_agent_settings_set_the_default_limits(docker_scope: DockerScope) -> None:
    with pytest.raises(ValidationError, match="memory 'lots' is not a quantity"):
        AgentSettings(docker_session_memory="lots")
    settings = AgentSettings(
        agent_id=docker_scope.agent_id, docker_session_memory="512Mi", docker_session_pids=64
    )
    platform = create_platform(PlatformName.DOCKER, settings)
    try:
        spec = make_spec(docker_scope)
        started = await platform.start(spec)
        limits = await docker(
            "inspect",
            "--format",
            "{{.HostConfig.PidsLimit}} {{.HostConfig.Memory}}",
            container_name(spec.session_id),
        )
        assert limits.split() == ["64", str(512 * 2**20)]
        await platform.stop(started.state)
    finally:
        await platform.close()


async def test_hibernate_and_wake_keep_a_file_in_the_home_volume(
    platform: DockerPlatform, docker_scope: DockerScope
) -> None:
    spec = make_spec(docker_scope, "xedit")
    started = await platform.start(spec)
    name = container_name(spec.session_id)
    await docker("exec", name, "sh", "-c", 'echo kept > "$HOME/notes.txt"')

    hibernated = await platform.hibernate(started.state)
    assert hibernated["status"] == "hibernated"
    assert "exited" in await docker("inspect", "--format", "{{.State.Status}}", name)
    assert await platform.poll(hibernated) == Exited("session is hibernated")

    woken = await platform.wake(spec, hibernated)
    assert await read_rfb_banner(woken.vnc.host, woken.vnc.port, 5.0) == RFB
    assert (await docker("exec", name, "cat", "/home/session/notes.txt")).strip() == "kept"

    # Stop keeps a persistent home; a new session of the same user and template finds it.
    await platform.stop(woken.state)
    assert await volume_exists(home_volume(spec.user, "xedit"))
    again = make_spec(docker_scope, "xedit")
    await platform.start(again)
    second = container_name(again.session_id)
    assert (await docker("exec", second, "cat", "/home/session/notes.txt")).strip() == "kept"
    await platform.stop({"session_id": again.session_id})


async def test_a_new_platform_adopts_running_containers_and_reports_orphans(
    platform: DockerPlatform, docker_scope: DockerScope, caplog: pytest.LogCaptureFixture
) -> None:
    spec = make_spec(docker_scope)
    started = await platform.start(spec)
    restarted = DockerPlatform(client=DockerClient(DOCKER_HOST), agent_id=docker_scope.agent_id)
    other = DockerPlatform(client=DockerClient(DOCKER_HOST), agent_id="some-other-agent")
    try:
        adopted = {s.session_id: s for s in await restarted.list_running()}
        assert adopted[spec.session_id].vnc == started.vnc
        assert await restarted.poll(adopted[spec.session_id].state) is None

        with caplog.at_level(logging.WARNING):
            assert spec.session_id not in {s.session_id for s in await other.list_running()}
        assert f"orphan session container {container_name(spec.session_id)}" in caplog.text

        await restarted.stop(adopted[spec.session_id].state)
    finally:
        await restarted.close()
        await other.close()


async def test_a_new_platform_removes_networks_left_without_their_container(
    platform: DockerPlatform, docker_scope: DockerScope
) -> None:
    """An agent that died between making a session's network and its container left the
    network alone: the next run removes it, and keeps a hibernated session's network (its
    stopped container needs it to wake) and the networks of other agents."""
    client = DockerClient(DOCKER_HOST)
    restarted = DockerPlatform(client=DockerClient(DOCKER_HOST), agent_id=docker_scope.agent_id)
    lone, strangers = container_name("d-lone"), container_name("d-other-agents")
    try:
        labels = {"streamspace.session": "d-lone", "streamspace.agent": docker_scope.agent_id}
        await client.create_network(lone, labels)
        await client.create_network(strangers, {**labels, "streamspace.agent": "another"})
        spec = make_spec(docker_scope)
        hibernated = await platform.hibernate((await platform.start(spec)).state)

        assert await restarted.list_running() == []
        assert not await network_exists(lone)
        assert await network_exists(strangers)
        woken = await restarted.wake(spec, hibernated)
        assert await read_rfb_banner(woken.vnc.host, woken.vnc.port, 5.0) == RFB
        await restarted.stop(woken.state)
    finally:
        await client.remove_network(strangers)
        await client.close()
        await restarted.close()


class LateCreateClient(DockerClient):
    """Misses the container on its first inspect, as a re-delivered start does when the
    create sent by the run before it (whose agent died) lands just after it looked."""

    missed = False

    async def inspect_container(self, name: str) -> dict[str, Any] | None:
        if not self.missed:
            self.missed = True
            return None
        return await super().inspect_container(name)


async def test_a_redelivered_start_carries_on_with_the_container_made_before(
    platform: DockerPlatform, docker_scope: DockerScope, docker_image: str
) -> None:
    """The run before died between create and start, or its create landed late: either
    way the start runs that one container (same id), and a third start just returns it."""
    client = DockerClient(DOCKER_HOST)
    late = DockerPlatform(client=LateCreateClient(DOCKER_HOST), agent_id=docker_scope.agent_id)
    try:
        for again in (platform, late):
            spec = make_spec(docker_scope)
            name = container_name(spec.session_id)
            await client.create_container(name, platform._container_config(spec, docker_image))
            made = (await client.inspect_container(name) or {})["Id"]
            started = await again.start(spec)
            assert started.state["container"] == made
            assert await read_rfb_banner(started.vnc.host, started.vnc.port, 5.0) == RFB
            assert await platform.start(spec) == started
            await platform.stop(started.state)
    finally:
        await client.close()
        await late.close()


async def test_a_missing_image_fails_clearly_and_leaves_nothing(
    platform: DockerPlatform, docker_scope: DockerScope
) -> None:
    spec = make_spec(docker_scope, "xedit", image="streamspace/no-such-image:1")
    with pytest.raises(PlatformError, match="no-such-image:1' is not on the Docker host"):
        await platform.start(spec)
    assert not await container_exists(container_name(spec.session_id))
    assert not await volume_exists(home_volume(spec.user, "xedit"))


async def test_an_application_that_cannot_start_fails_with_its_output(
    platform: DockerPlatform, docker_scope: DockerScope
) -> None:
    spec = make_spec(docker_scope, "xedit", command=["no-such-program"])
    with pytest.raises(PlatformError, match="exited with code 127") as failure:
        await platform.start(spec)
    assert "no-such-program" in str(failure.value)  # the container's own error output
    assert not await container_exists(container_name(spec.session_id))
    assert not await volume_exists(home_volume(spec.user, "xedit"))  # made for this start


async def test_a_daemon_out_of_network_addresses_fails_the_start_saying_so(
    platform: DockerPlatform, docker_scope: DockerScope
) -> None:
    """Each session takes an address range for its network: with Docker's default pools
    (about 30 ranges) taken, a start fails saying what to change, and leaves nothing."""
    client = DockerClient(DOCKER_HOST)
    fillers: list[str] = []
    try:
        while len(fillers) < MAX_FILLERS:
            name = f"streamspace-filler-{docker_scope.agent_id}-{len(fillers)}"
            try:
                await client.create_network(name, {})
            except DockerApiError as exc:
                assert "address pool" in str(exc), exc
                break
            fillers.append(name)
        spec = make_spec(docker_scope, "xedit")
        with pytest.raises(PlatformError, match=r"no address pool left .*default-address-pools"):
            await platform.start(spec)
        assert not await container_exists(container_name(spec.session_id))
        assert not await volume_exists(home_volume(spec.user, "xedit"))
    finally:
        for name in fillers:
            await client.remove_network(name)
        await client.close()


# --- through the control plane -------------------------------------------------------------


async def test_tunnel_reaches_the_container_and_a_restarted_agent_adopts_it(
    docker_cluster: Cluster, docker_scope: DockerScope
) -> None:
    running = await docker_cluster.launch("xterm")
    sid = running["id"]
    assert await container_exists(container_name(sid))
    await view(docker_cluster, sid, desktop_name=sid)

    docker_cluster.agent.kill()
    connections = docker_cluster.agent.output().count("connected to")  # the log is shared
    agent = AgentProcess(
        docker_cluster.agent_dir,
        control_plane_url=docker_cluster.api.url,
        agent_id=docker_scope.agent_id,
        behaviour=None,
        platform="docker",
    )
    agent.start()
    docker_cluster.agent = agent

    async def reconnected() -> bool:
        return agent.output().count("connected to") > connections

    await eventually(reconnected, timeout=TIMEOUT, message="restarted agent connected")
    assert (await docker_cluster.state(sid, "running"))["vnc"] == running["vnc"]
    # The new agent tunnels to the adopted container.
    await view(docker_cluster, sid, desktop_name=sid)

    await docker_cluster.action(sid, "stop")
    await docker_cluster.state(sid, "terminated")
    await eventually(lambda: _gone(sid), timeout=TIMEOUT, message="container removed")


async def test_a_killed_container_fails_the_session_with_its_exit(
    docker_cluster: Cluster,
) -> None:
    running = await docker_cluster.launch("xterm")
    sid = running["id"]
    await docker("kill", container_name(sid))
    failed = await docker_cluster.state(sid, "failed")
    events = await docker_cluster.events(sid)
    reasons = " ".join(str(event.get("detail")) for event in events)
    assert "container exited with code 137 (SIGKILL)" in reasons, (failed, events)
    # The control plane has the agent clean up after the failure: the container goes.
    await eventually(lambda: _gone(sid), timeout=TIMEOUT, message="container removed")


async def _gone(session_id: str) -> bool:
    return not await container_exists(container_name(session_id))
