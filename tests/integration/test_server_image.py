"""The StreamSpace image on the real dockerd: built offline by ``streamspace images build``
(cached: not rebuilt when nothing changed), ``streamspace api`` inside it, as the non-root user."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from rich.console import Console

from streamspace.images import server_recipe
from streamspace.images.builder import image_recipe
from streamspace.images.server_builder import build_server_image
from tests.docker_env import CHECKOUT, docker, ensure_server_image
from tests.helpers import eventually

# The first build of a checkout debootstraps and installs the project (minutes on a busy
# machine); later runs find it cached by tag and recipe.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def server_image() -> str:
    """This checkout's StreamSpace image (built once per change of the sources)."""
    return ensure_server_image()


@pytest.fixture
async def api_container(server_image: str) -> AsyncIterator[str]:
    """``streamspace api`` (the image's default command) with SQLite on a tmpfs, its port
    published on loopback only, locked down as deploy/kubernetes runs it (read-only root,
    no capabilities, no privilege escalation)."""
    name = f"streamspace-image-test-{uuid.uuid4().hex[:8]}"
    await docker(
        *("run", "--detach", "--name", name, "--publish", "127.0.0.1::8080"),
        *("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"),
        *("--security-opt", "no-new-privileges"),
        *("--tmpfs", "/data:rw,mode=1777", "--env", "DATABASE_URL=sqlite:////data/ss.db"),
        server_image,
    )
    try:
        yield name
    finally:
        await docker("rm", "--force", name)


def test_an_unchanged_checkout_is_not_rebuilt(server_image: str) -> None:
    assert image_recipe(server_image) == server_recipe.digest(CHECKOUT)
    built = build_server_image(source=CHECKOUT, tag=server_image, console=Console(stderr=True))
    assert built is False


async def test_api_help_runs_in_the_image(server_image: str) -> None:
    shown = await docker("run", "--rm", server_image, "api", "--help")
    assert "Usage: streamspace api" in shown
    assert "One control-plane replica" in shown


async def test_the_api_serves_healthz_as_the_non_root_user(api_container: str) -> None:
    published = await docker("port", api_container, "8080/tcp")
    address = published.split()[0]
    assert address.startswith("127.0.0.1:")

    async def healthy() -> httpx.Response | None:
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=2) as client:
            try:
                answer = await client.get("/readyz")
            except httpx.HTTPError:
                return None
            return answer if answer.status_code == 200 else None

    # Start-up runs the migrations on the fresh SQLite database: slow on a busy machine.
    await eventually(healthy, timeout=60, interval=0.2, message="the API in the image ready")
    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=5) as client:
        assert (await client.get("/healthz")).status_code == 200
    assert (await docker("exec", api_container, "id", "-u")).strip() == str(server_recipe.UID)
    config = json.loads(await docker("inspect", "--format", "{{json .Config}}", api_container))
    assert config["User"] == server_recipe.USER
    assert config["Cmd"] == ["api"]
    assert config["Entrypoint"] == [f"{server_recipe.VENV}/bin/streamspace"]
    # The service cannot change its own code: the virtualenv is root's.
    owner = await docker("exec", api_container, "stat", "-c", "%u", server_recipe.VENV)
    assert owner.strip() == "0"
