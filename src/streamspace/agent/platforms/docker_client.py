"""The Docker Engine API calls the Docker platform makes (I/O only, through aiodocker).

The only module that imports aiodocker. Every call raises :class:`DockerApiError` on
failure (status 0: the daemon could not be reached); "not found" is an answer, not an error,
where the caller expects it (inspect returns ``None``, removing something absent succeeds).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import aiodocker
import aiohttp
from aiodocker.networks import DockerNetwork
from aiodocker.volumes import DockerVolume

NOT_FOUND = 404
NOT_MODIFIED = 304  # stopping a stopped container
_SUMMARY_KEYS = ("Id", "Names", "Labels", "State")


class DockerApiError(Exception):
    """A Docker Engine API call failed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@contextlib.contextmanager
def _errors(url: str, *, missing_ok: bool = False) -> Iterator[None]:
    try:
        yield
    except aiodocker.DockerError as exc:
        if not (missing_ok and exc.status in (NOT_FOUND, NOT_MODIFIED)):
            raise DockerApiError(exc.status, str(exc.message)) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise DockerApiError(0, f"cannot reach the Docker daemon at {url}: {exc}") from exc


class DockerClient:
    """One connection pool to one Docker daemon (``unix://…`` or ``tcp://…``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._api: aiodocker.Docker | None = None

    def _docker(self) -> aiodocker.Docker:
        # Created on first use: aiohttp wants the event loop that will run the calls.
        if self._api is None:
            self._api = aiodocker.Docker(url=self.url)
        return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    # --- containers ---------------------------------------------------------------------

    async def inspect_container(self, name: str) -> dict[str, Any] | None:
        with _errors(self.url, missing_ok=True):
            return await self._docker().containers.container(name).show()
        return None

    async def create_container(self, name: str, config: dict[str, Any]) -> None:
        with _errors(self.url):
            await self._docker().containers.create(config, name=name)

    async def start_container(self, name: str) -> None:
        with _errors(self.url):
            await self._docker().containers.container(name).start()

    async def stop_container(self, name: str, *, grace: int) -> None:
        """SIGTERM, SIGKILL after ``grace`` seconds; stopped or absent containers are fine."""
        with _errors(self.url, missing_ok=True):
            await self._docker().containers.container(name).stop(t=grace)

    async def remove_container(self, name: str) -> None:
        """Remove (killing it if it runs) with its anonymous volumes; absent is fine."""
        with _errors(self.url, missing_ok=True):
            await self._docker().containers.container(name).delete(force=True, v=True)

    async def list_containers(self, label: str) -> list[dict[str, Any]]:
        """Summaries of all containers (any state) carrying ``label``."""
        params = {"all": "true", "filters": json.dumps({"label": [label]})}
        with _errors(self.url):
            found = await self._docker().containers.list(**params)
        return [{key: c[key] for key in _SUMMARY_KEYS} for c in found]

    async def container_logs(self, name: str, *, lines: int) -> str:
        with _errors(self.url, missing_ok=True):
            chunks = (
                await self._docker()
                .containers.container(name)
                .log(stdout=True, stderr=True, tail=lines)
            )
            return "".join(chunks)
        return ""

    # --- networks -----------------------------------------------------------------------

    async def network_exists(self, name: str) -> bool:
        with _errors(self.url, missing_ok=True):
            await self._docker().networks.get(name)
            return True
        return False

    async def create_network(self, name: str, labels: dict[str, str]) -> None:
        """A bridge network of its own (a name taken already: :class:`DockerApiError` 409)."""
        config = {"Name": name, "Driver": "bridge", "CheckDuplicate": True, "Labels": labels}
        with _errors(self.url):
            await self._docker().networks.create(config)

    async def remove_network(self, name: str) -> None:
        """Remove a network no container is attached to; an absent network is fine."""
        with _errors(self.url, missing_ok=True):
            await DockerNetwork(self._docker(), name).delete()  # type: ignore[no-untyped-call]

    async def list_networks(self, label: str) -> list[dict[str, Any]]:
        """``Name`` and ``Labels`` of the networks carrying ``label``."""
        with _errors(self.url):
            found = await self._docker().networks.list(filters={"label": label})
        return [{"Name": n["Name"], "Labels": n["Labels"]} for n in found]

    # --- images and volumes -------------------------------------------------------------

    async def image_exists(self, image: str) -> bool:
        with _errors(self.url, missing_ok=True):
            await self._docker().images.inspect(image)
            return True
        return False

    async def volume_exists(self, name: str) -> bool:
        with _errors(self.url, missing_ok=True):
            await self._docker().volumes.get(name)  # type: ignore[no-untyped-call]
            return True
        return False

    async def create_volume(self, name: str, labels: dict[str, str]) -> None:
        with _errors(self.url):
            await self._docker().volumes.create(  # type: ignore[no-untyped-call]
                {"Name": name, "Labels": labels}
            )

    async def remove_volume(self, name: str) -> None:
        with _errors(self.url, missing_ok=True):
            await DockerVolume(self._docker(), name).delete()  # type: ignore[no-untyped-call]
