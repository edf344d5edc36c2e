"""Sessions as Docker containers: one container ``streamspace-<session id>`` per session.

The container runs the session image's entrypoint (Xvnc, a window manager, then the
template's command; see ``streamspace.images``) with ``--init``, so the command's exit ends
the container. Its VNC port is published on 127.0.0.1 at a port Docker picks: the agent
reaches it through loopback, which works with any local daemon (rootless, Docker Desktop)
and needs no route to the bridge network. A persistent home is a named volume per user and
template; any other home is an anonymous volume of the container, kept while it is stopped
(hibernated) and gone when it is removed. Labels (``streamspace.*``) say whose a container
is, so a restarted agent re-adopts its containers from Docker alone.

Sessions are isolated from each other and from the host: each container has a bridge
network of its own, ``streamspace-<session id>`` like the container (Docker drops traffic
between bridge networks, so no session reaches another's VNC server), made with the
container and removed with it; its processes run as the image's unprivileged user with no
capabilities, ``no-new-privileges``, a read-only root file system (writable: the home and a
fresh ``/tmp``), and pid and memory limits. With ``vnc_password`` each VNC server also asks
for a password of its own, which the agent's tunnel answers (``streamspace.agent.vnc_auth``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import signal
from collections.abc import AsyncIterator
from typing import Any

from streamspace.agent.platforms.base import Exited, Platform, PlatformError, PlatformState, Started
from streamspace.agent.platforms.docker_client import DockerApiError, DockerClient
from streamspace.agent.platforms.vnc_probe import wait_for_rfb
from streamspace.agent.vnc_auth import new_password, password_file, password_from_file
from streamspace.images import recipe
from streamspace.protocol import RunningSession, SessionSpec, VncEndpoint
from streamspace.resources import parse_limits

log = logging.getLogger(__name__)

LABEL = "streamspace."
SESSION_LABEL = f"{LABEL}session"
AGENT_LABEL = f"{LABEL}agent"
HOME_LABEL = f"{LABEL}home"
VNC_PORT_LABEL = f"{LABEL}vnc-port"
VNC_HOST = "127.0.0.1"
STOP_GRACE = 5
"""Seconds between SIGTERM and SIGKILL when a session container stops."""
LOG_LINES = 20
"""Lines of the container's output quoted when it fails to start."""
ADOPTABLE = frozenset({"created", "running"})
"""Container states a re-delivered start carries on from rather than replacing."""
CONFLICT = 409
"""The Docker API's answer to creating a container or network under a name already taken."""
DEFAULT_MEMORY = 2 * 2**30
"""Memory limit of a session whose template sets none (``DOCKER_SESSION_MEMORY``)."""
DEFAULT_PIDS = 1024
"""Processes and threads one session container may have (``DOCKER_SESSION_PIDS``)."""
PASSWORD_ENV = "STREAMSPACE_VNC_PASSWORD"
"""The container's VNC password file, in hex: the entrypoint hands it to Xvnc."""


def container_name(session_id: str) -> str:
    return f"streamspace-{session_id}"


def home_volume(user: str, template: str) -> str:
    """The persistent home volume of ``user`` for ``template`` (a valid, unique name)."""
    slug = "-".join(re.sub(r"[^A-Za-z0-9_.-]", "_", part)[:40] for part in (user, template))
    unique = hashlib.sha256(f"{user}\0{template}".encode()).hexdigest()[:8]
    return f"streamspace-home-{slug}-{unique}"


class DockerPlatform(Platform):
    """Runs each session as a container on one Docker daemon, for the agent ``agent_id``."""

    name = "docker"

    def __init__(
        self,
        *,
        client: DockerClient,
        agent_id: str,
        image: str = recipe.DEFAULT_TAG,
        start_timeout: float = 20.0,
        memory_bytes: int = DEFAULT_MEMORY,
        pids_limit: int = DEFAULT_PIDS,
        vnc_password: bool = False,
    ) -> None:
        self._docker = client
        self._agent_id = agent_id
        self._image = image
        self._start_timeout = start_timeout
        self._memory_bytes = memory_bytes
        self._pids_limit = pids_limit
        self._vnc_password = vnc_password
        self._starting: set[str] = set()
        """Sessions whose start runs now: their network may have no container yet."""

    # --- contract ---------------------------------------------------------------------

    async def start(self, spec: SessionSpec) -> Started:
        """Create and run the session's container. A re-delivered start (its first run died
        half-way, e.g. with the previous leader) carries on with the container that run
        made: a running one is waited for, one created but never started is started; only
        one that exited (a failed attempt) is replaced."""
        name = container_name(spec.session_id)
        self._starting.add(spec.session_id)
        try:
            async with _as_platform_error(f"cannot start session {spec.session_id}"):
                return await self._start(spec, name)
        finally:
            self._starting.discard(spec.session_id)

    async def _start(self, spec: SessionSpec, name: str) -> Started:
        found = await self._docker.inspect_container(name)
        if found is not None and found["State"]["Status"] not in ADOPTABLE:
            await self._docker.remove_container(name)
            found = None
        volume, made_volume = None, False
        try:
            if found is None:
                image = spec.image or self._image
                if not await self._docker.image_exists(image):
                    raise PlatformError(
                        f"image {image!r} is not on the Docker host: build it "
                        "(`streamspace images build`) or pull it"
                    )
                config = self._container_config(spec, image)
                volume = config["Labels"][HOME_LABEL] or None
                made_volume = volume is not None and await self._ensure_volume(volume, spec)
            await self._ensure_network(name, spec.session_id)
            if found is None:
                await self._create_unless_taken(name, config)
            return await self._run(name)
        except BaseException:  # nothing of a failed start is left, but a home kept before
            await self._docker.remove_container(name)
            await self._docker.remove_network(name)
            if made_volume and volume is not None:
                await self._docker.remove_volume(volume)
            raise

    async def wake(self, spec: SessionSpec, state: PlatformState) -> Started:
        name = container_name(spec.session_id)
        async with _as_platform_error(f"cannot wake session {spec.session_id}"):
            found = await self._docker.inspect_container(name)
            if found is None:
                if spec.persistent_home:  # the home is in its volume: a new container will do
                    return await self.start(spec)
                raise PlatformError(f"container {name} is gone, and the session's home with it")
            if found["State"]["Running"]:
                return self._started(found)
            try:
                await self._ensure_network(name, spec.session_id)
                return await self._run(name)
            except BaseException:  # keep the hibernated session as it was
                await self._docker.stop_container(name, grace=0)
                raise

    async def stop(self, state: PlatformState, *, keep_home: bool = False) -> None:
        name = container_name(state["session_id"])
        async with _as_platform_error(f"cannot stop session {state['session_id']}"):
            await self._docker.stop_container(name, grace=STOP_GRACE)
            if keep_home and not state.get("home_volume"):
                return  # the home is the container's own volume: keep the stopped container
            await self._docker.remove_container(name)
            await self._docker.remove_network(name)

    async def hibernate(self, state: PlatformState) -> PlatformState:
        name = container_name(state["session_id"])
        async with _as_platform_error(f"cannot hibernate session {state['session_id']}"):
            await self._docker.stop_container(name, grace=STOP_GRACE)
        return {**state, "status": "hibernated"}

    async def poll(self, state: PlatformState) -> Exited | None:
        if state.get("status") != "running":
            return Exited(f"session is {state.get('status', 'not running')}")
        async with _as_platform_error(f"cannot poll session {state['session_id']}"):
            found = await self._docker.inspect_container(container_name(state["session_id"]))
        if found is None:
            return Exited("container no longer exists")
        return None if found["State"]["Running"] else Exited(_exit_reason(found["State"]))

    async def list_running(self) -> list[RunningSession]:
        async with _as_platform_error("cannot list session containers"):
            containers = await self._docker.list_containers(SESSION_LABEL)
            running = []
            for summary in containers:
                labels = summary["Labels"]
                if labels.get(AGENT_LABEL) != self._agent_id:
                    log.warning(
                        "orphan session container %s: session %s of agent %r, not ours (%s)",
                        summary["Names"][0].lstrip("/"),
                        labels.get(SESSION_LABEL),
                        labels.get(AGENT_LABEL),
                        self._agent_id,
                    )
                elif summary["State"] == "running":
                    found = await self._docker.inspect_container(summary["Id"])
                    if found is not None and found["State"]["Running"]:
                        started = self._started(found)
                        running.append(
                            RunningSession(
                                session_id=labels[SESSION_LABEL],
                                vnc=started.vnc,
                                state=started.state,
                            )
                        )
            sessions = {summary["Labels"][SESSION_LABEL] for summary in containers}
            await self._remove_lone_networks(sessions)
        return running

    async def vnc_password(self, session_id: str) -> bytes | None:
        """Read from the container's configuration: the agent keeps no copy (a restarted
        agent or its follower finds it there), and only Docker's admins can read it."""
        async with _as_platform_error(f"cannot inspect session {session_id}"):
            found = await self._docker.inspect_container(container_name(session_id))
        env = (found or {}).get("Config", {}).get("Env") or []
        hexed = next((v.split("=", 1)[1] for v in env if v.startswith(f"{PASSWORD_ENV}=")), None)
        return None if hexed is None else password_from_file(bytes.fromhex(hexed))

    async def close(self) -> None:
        await self._docker.close()

    # --- starting -----------------------------------------------------------------------

    def _container_config(self, spec: SessionSpec, image: str) -> dict[str, Any]:
        try:
            limits = parse_limits(spec.resources)
        except ValueError as exc:
            raise PlatformError(f"template {spec.template!r}: {exc}") from None
        volume = home_volume(spec.user, spec.template) if spec.persistent_home else ""
        port = f"{spec.vnc_port}/tcp"
        env = {
            **spec.env,
            "STREAMSPACE_SESSION_ID": spec.session_id,
            "VNC_PORT": str(spec.vnc_port),
        }
        if self._vnc_password:
            env[PASSWORD_ENV] = password_file(new_password()).hex()
        home: dict[str, Any] = {"Type": "volume", "Target": recipe.HOME}
        if volume:
            home["Source"] = volume  # else an anonymous volume, removed with the container
        host: dict[str, Any] = {
            "Init": True,  # forwards signals to the command, reaps what it leaves behind
            "NetworkMode": container_name(spec.session_id),  # its own network, see start
            "PortBindings": {port: [{"HostIp": VNC_HOST, "HostPort": ""}]},
            "ReadonlyRootfs": True,  # writable: the home and /tmp only
            "Mounts": [home],
            "Tmpfs": {"/tmp": "rw,nosuid,nodev"},  # a fresh /tmp (X sockets, locks) per start
            "CapDrop": ["ALL"],  # Xvnc, the window manager and the apps need none
            "SecurityOpt": ["no-new-privileges"],
            "PidsLimit": self._pids_limit,
            "Memory": limits.memory_bytes or self._memory_bytes,
        }
        if limits.cpus is not None:
            host["NanoCpus"] = int(limits.cpus * 1e9)
        labels = {
            SESSION_LABEL: spec.session_id,
            f"{LABEL}user": spec.user,
            f"{LABEL}template": spec.template,
            AGENT_LABEL: self._agent_id,
            HOME_LABEL: volume,
            VNC_PORT_LABEL: str(spec.vnc_port),
        }
        return {
            "Image": image,
            "User": f"{recipe.UID}:{recipe.UID}",  # never root, whatever the image says
            "Cmd": list(spec.command) or None,  # none: the image's default command
            "Env": [f"{key}={value}" for key, value in env.items()],
            "Labels": labels,
            "ExposedPorts": {port: {}},
            "HostConfig": host,
        }

    async def _ensure_volume(self, volume: str, spec: SessionSpec) -> bool:
        """Create the home volume unless it exists; return whether it was created."""
        if await self._docker.volume_exists(volume):
            return False
        labels = {HOME_LABEL: "true", f"{LABEL}user": spec.user, f"{LABEL}template": spec.template}
        await self._docker.create_volume(volume, labels)
        return True

    async def _ensure_network(self, name: str, session_id: str) -> None:
        """The session's own network, unless it exists (made by a start that died)."""
        if await self._docker.network_exists(name):
            return
        labels = {SESSION_LABEL: session_id, AGENT_LABEL: self._agent_id}
        try:
            await self._docker.create_network(name, labels)
        except DockerApiError as exc:
            if "address pool" in str(exc):
                raise PlatformError(
                    f"cannot create network {name}: the Docker daemon has no address pool "
                    "left for another network (each session has one; widen "
                    f'"default-address-pools" in its daemon.json): {exc}'
                ) from exc
            if exc.status != CONFLICT:  # else an earlier run's create landed after our look
                raise

    async def _remove_lone_networks(self, sessions: set[str]) -> None:
        """Remove this agent's session networks left without a container (an agent that
        died between making one and its container), except those of starts running now."""
        for network in await self._docker.list_networks(f"{AGENT_LABEL}={self._agent_id}"):
            session_id = network["Labels"].get(SESSION_LABEL)
            if session_id not in sessions and session_id not in self._starting:
                log.info("removing network %s: its session has no container", network["Name"])
                await self._docker.remove_network(network["Name"])

    async def _create_unless_taken(self, name: str, config: dict[str, Any]) -> None:
        try:
            await self._docker.create_container(name, config)
        except DockerApiError as exc:
            if exc.status != CONFLICT:
                raise
            # The create of an earlier run that died landed after our inspect: use that one.
            log.info("container %s exists already: starting that one", name)

    async def _run(self, name: str) -> Started:
        """Start the created or stopped container (unless it runs); return once it speaks RFB."""
        await self._docker.start_container(name)  # a running one: a no-op (304)
        found = await self._docker.inspect_container(name)
        if found is None:
            raise PlatformError(f"container {name} vanished while starting", retryable=True)
        started = self._started(found)

        async def gone() -> str | None:
            now = await self._docker.inspect_container(name)
            if now is None:
                return "the container was removed"
            if now["State"]["Running"]:
                return None
            output = await self._docker.container_logs(name, lines=LOG_LINES)
            return f"{_exit_reason(now['State'])}; its last output:\n{output.strip()}"

        deadline = asyncio.get_running_loop().time() + self._start_timeout
        reason = await wait_for_rfb(started.vnc, deadline=deadline, gone=gone)
        if reason is not None:
            raise PlatformError(f"VNC server of {name} did not start: {reason}")
        return started

    def _started(self, container: dict[str, Any]) -> Started:
        labels = container["Config"]["Labels"]
        bindings = container["NetworkSettings"]["Ports"].get(f"{labels[VNC_PORT_LABEL]}/tcp")
        port = next((int(b["HostPort"]) for b in bindings or () if b["HostIp"] == VNC_HOST), None)
        if port is None:
            raise PlatformError(f"container {container['Name']} publishes no VNC port")
        state: PlatformState = {
            "session_id": labels[SESSION_LABEL],
            "status": "running",
            "container": container["Id"],
            "home_volume": labels[HOME_LABEL] or None,
            "host": VNC_HOST,
            "port": port,
        }
        return Started(vnc=VncEndpoint(host=VNC_HOST, port=port), state=state)


def _exit_reason(state: dict[str, Any]) -> str:
    """``container exited with code 137 (SIGKILL)``, from a container's ``State``."""
    code = int(state.get("ExitCode", -1))
    reason = f"container exited with code {code}"
    if state.get("OOMKilled"):
        reason += " (out of memory)"
    elif code > 128:
        with contextlib.suppress(ValueError):
            reason += f" ({signal.Signals(code - 128).name})"
    if state.get("Error"):
        reason += f": {state['Error']}"
    return reason


@contextlib.asynccontextmanager
async def _as_platform_error(what: str) -> AsyncIterator[None]:
    """Docker API failures as :class:`PlatformError`; an unreachable daemon is retryable."""
    try:
        yield
    except DockerApiError as exc:
        raise PlatformError(f"{what}: {exc}", retryable=exc.status == 0) from exc
