"""Reading a Dockerfile for the tests that keep it in step with its image recipe."""

from __future__ import annotations

import re
from pathlib import Path

IMAGES = Path(__file__).parents[1] / "deploy" / "images"


def joined(dockerfile: Path) -> str:
    """The Dockerfile with continuation lines joined."""
    return re.sub(r"\\\n\s*", " ", dockerfile.read_text())


def instructions(dockerfile: Path) -> dict[str, str]:
    """The Dockerfile's instructions (continuation lines joined), last one of each kind."""
    lines = [line for line in joined(dockerfile).splitlines() if line and line[0] != "#"]
    return {line.split()[0]: line.split(maxsplit=1)[1] for line in lines}


def apt_packages(dockerfile: Path) -> list[str]:
    """The packages of the Dockerfile's one ``apt-get install``."""
    (install,) = re.findall(r"apt-get install ([^&]*)", joined(dockerfile))
    return [word for word in install.split() if not word.startswith("-")]


def env(dockerfile: Path) -> dict[str, str]:
    """The Dockerfile's (last) ``ENV`` as a mapping."""
    return dict(item.split("=", 1) for item in instructions(dockerfile)["ENV"].split())
