"""The StreamSpace image recipe: the Dockerfile and the offline builder make the same image,
and its digest follows the project's sources."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamspace.cli import app
from streamspace.images import server_recipe
from streamspace.images.builder import BuildError
from streamspace.images.server_builder import default_source, server_recipe_for
from tests.dockerfiles import IMAGES, apt_packages, env, instructions, joined

DOCKERFILE = IMAGES / "streamspace" / "Dockerfile"
CHECKOUT = Path(__file__).parents[2]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A small copy of what the image is built from: the project files and one module."""
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(CHECKOUT / name, tmp_path / name)
    (tmp_path / "src" / "streamspace").mkdir(parents=True)
    (tmp_path / "src" / "streamspace" / "__init__.py").write_text('"""StreamSpace."""\n')
    return tmp_path


def test_the_dockerfile_installs_the_recipe_packages() -> None:
    assert apt_packages(DOCKERFILE) == list(server_recipe.PACKAGES)


def test_the_dockerfile_configures_the_image_like_the_builder() -> None:
    found = instructions(DOCKERFILE)
    config = server_recipe.image_config()
    assert json.loads(found["ENTRYPOINT"]) == config["ENTRYPOINT"]
    assert json.loads(found["CMD"]) == config["CMD"] == ["api"]
    assert env(DOCKERFILE) == config["ENV"]
    assert (found["USER"], found["WORKDIR"], found["EXPOSE"]) == (
        config["USER"],
        config["WORKDIR"],
        config["EXPOSE"],
    )
    assert f"useradd --create-home --uid {server_recipe.UID} " in joined(DOCKERFILE)
    assert f"python3 -m venv {server_recipe.VENV} " in joined(DOCKERFILE)
    assert "pip install --no-cache-dir -c /src/constraints.txt /src" in joined(DOCKERFILE)


def test_the_dockerfile_installs_what_the_digest_covers() -> None:
    lines = joined(DOCKERFILE).splitlines()
    from_context = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    copied = [name for names in from_context if "--from" not in names[0] for name in names]
    assert sorted(copied) == sorted([*server_recipe.SOURCES, "README.md"])


def test_the_build_context_holds_what_the_digest_covers() -> None:
    kept = [
        line[1:]
        for line in (IMAGES / "streamspace" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    assert set(server_recipe.SOURCES) <= set(kept)
    assert set(kept) - set(server_recipe.SOURCES) == {"README.md"}  # the wheel's description


def test_the_image_runs_as_a_non_root_user() -> None:
    assert server_recipe.UID >= 10000 and instructions(DOCKERFILE)["USER"] != "root"


def test_the_digest_follows_the_sources_and_not_the_caches(checkout: Path) -> None:
    first = server_recipe.digest(checkout)
    cache = checkout / "src" / "streamspace" / "__pycache__"
    cache.mkdir()
    (cache / "__init__.cpython-311.pyc").write_bytes(b"\0")
    assert server_recipe.digest(checkout) == first
    (checkout / "src" / "streamspace" / "__init__.py").write_text('"""Changed."""\n')
    assert server_recipe.digest(checkout) != first
    changes = server_recipe.docker_changes(checkout)
    assert changes[-1] == f"LABEL streamspace.recipe={server_recipe.digest(checkout)}"
    assert f'ENTRYPOINT ["{server_recipe.VENV}/bin/streamspace"]' in changes
    assert f"USER {server_recipe.USER}" in changes


def test_a_directory_that_is_not_a_checkout_is_refused_in_words(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"is not a StreamSpace checkout: constraints\.txt"):
        (tmp_path / "pyproject.toml").write_text("")
        server_recipe_for(tmp_path)


def test_the_cli_names_what_is_wrong(tmp_path: Path) -> None:
    runner = CliRunner()
    refused = runner.invoke(
        app, ["images", "build", "--image", "streamspace", "--source", str(tmp_path)]
    )
    assert refused.exit_code == 1
    assert f"error: {tmp_path} is not a StreamSpace checkout: pyproject.toml is missing" in (
        refused.output
    )
    misplaced = runner.invoke(app, ["images", "build", "--source", str(tmp_path)])
    assert misplaced.exit_code == 1
    assert "--source is for --image streamspace only" in misplaced.output
    unknown = runner.invoke(app, ["images", "build", "--image", "postgres"])
    assert unknown.exit_code == 2


def test_this_checkout_is_the_default_source() -> None:
    assert default_source() == CHECKOUT
