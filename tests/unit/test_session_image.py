"""The session image recipe: the Dockerfile and the offline builder make the same image;
template resource limits in numbers."""

from __future__ import annotations

import json
import re

import pytest

from streamspace.images import recipe
from streamspace.resources import Limits, parse_limits
from tests.dockerfiles import IMAGES, apt_packages, env, instructions

DOCKERFILE = IMAGES / "session" / "Dockerfile"


def test_the_dockerfile_installs_the_recipe_packages() -> None:
    assert apt_packages(DOCKERFILE) == list(recipe.PACKAGES)


def test_the_dockerfile_configures_the_image_like_the_builder() -> None:
    found = instructions(DOCKERFILE)
    config = recipe.image_config()
    assert json.loads(found["ENTRYPOINT"]) == config["ENTRYPOINT"]
    assert json.loads(found["CMD"]) == config["CMD"]
    assert env(DOCKERFILE) == config["ENV"]
    assert (found["USER"], found["WORKDIR"], found["EXPOSE"]) == (
        config["USER"],
        config["WORKDIR"],
        config["EXPOSE"],
    )
    text = DOCKERFILE.read_text()
    assert f"--uid {recipe.UID}" in text and f" {recipe.ENTRYPOINT}\n" in text


def test_import_changes_carry_the_configuration_and_the_recipe() -> None:
    changes = recipe.docker_changes()
    assert f'ENTRYPOINT ["{recipe.ENTRYPOINT}"]' in changes
    assert f"ENV HOME={recipe.HOME}" in changes
    assert changes[-1] == f"LABEL {recipe.RECIPE_LABEL}={recipe.digest()}"


@pytest.mark.parametrize(
    ("resources", "limits"),
    [
        ({}, Limits()),
        ({"cpu": "2", "memory": "512Mi"}, Limits(cpus=2.0, memory_bytes=512 * 2**20)),
        ({"cpu": "250m", "memory": "1G"}, Limits(cpus=0.25, memory_bytes=10**9)),
        ({"memory": "1048576", "gpu": "1"}, Limits(memory_bytes=2**20)),
    ],
)
def test_resource_limits(resources: dict[str, str], limits: Limits) -> None:
    assert parse_limits(resources) == limits


@pytest.mark.parametrize(
    "resources", [{"cpu": "two"}, {"cpu": "1k"}, {"memory": "512m"}, {"memory": "0"}]
)
def test_bad_resource_limits_name_the_value(resources: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=re.escape(next(iter(resources.values())))):
        parse_limits(resources)
