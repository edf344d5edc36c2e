"""What the StreamSpace image (control plane and agents: ``streamspace api``, ``agent``)
contains; shared by the offline builder and the Dockerfile's test.

The Dockerfile in ``deploy/images/streamspace`` installs the same packages onto
``debian:bookworm-slim`` and the project into the same virtualenv; a unit test keeps the two
in step. The recipe's digest covers the project's sources, so a code change rebuilds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from streamspace import __version__
from streamspace.images.recipe import MIRROR, SUITE, import_changes

PACKAGES = ("python3", "python3-venv", "ca-certificates")
"""Debian packages on top of ``minbase``: bookworm's Python (3.11), its ``venv``, CA roots."""

DEFAULT_TAG = f"streamspace/streamspace:{__version__}"
USER = "streamspace"
UID = 10001
HOME = f"/home/{USER}"
VENV = "/opt/streamspace"
"""The virtualenv the project is installed into (root-owned: the user cannot change it)."""
API_PORT = 8080
SOURCES = ("pyproject.toml", "constraints.txt", "src/streamspace")
"""What the installed project is made of, relative to the repository (README.md only feeds
the wheel's description, so editing it does not rebuild)."""


def image_config() -> dict[str, object]:
    """The image's run configuration, as ``docker import --change`` lines will set it."""
    return {
        "ENTRYPOINT": [f"{VENV}/bin/streamspace"],
        "CMD": ["api"],
        "ENV": {
            "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": HOME,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        },
        "USER": USER,
        "WORKDIR": HOME,
        "EXPOSE": f"{API_PORT}/tcp",
    }


def source_files(source: Path) -> list[Path]:
    """The files of :data:`SOURCES` under the repository ``source``, sorted (no caches)."""
    found = []
    for name in SOURCES:
        top = source / name
        if not top.exists():
            raise FileNotFoundError(f"{source} is not a StreamSpace checkout: {name} is missing")
        found += [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
    skipped = ("__pycache__", ".mypy_cache")
    return sorted(p for p in found if not any(part in skipped for part in p.parts))


def digest(source: Path) -> str:
    """A short hash of the recipe and of the project's sources in ``source``."""
    recipe = json.dumps([SUITE, MIRROR, PACKAGES, USER, UID, VENV, image_config()])
    hashed = hashlib.sha256(recipe.encode())
    for path in source_files(source):
        hashed.update(f"\0{path.relative_to(source).as_posix()}\0".encode())
        hashed.update(path.read_bytes())
    return hashed.hexdigest()[:16]


def docker_changes(source: Path) -> list[str]:
    """Dockerfile instructions for ``docker import --change``, with the recipe label."""
    return import_changes(image_config(), digest=digest(source))
