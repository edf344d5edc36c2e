"""What the session image contains; shared by the offline builder, the Dockerfile's test
and the Docker platform (tag, user, home, entrypoint).

The Dockerfile in ``deploy/images/session`` installs the same packages onto
``debian:bookworm-slim``; a unit test keeps the two lists equal.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "tigervnc-standalone-server",
    "xfonts-base",  # Xvnc refuses to start without the core font "fixed"
    "evilwm",
    "xterm",
    "x11-apps",  # xcalc, xedit
)
"""Debian packages on top of ``minbase``: the VNC server, a window manager, the default apps."""

DEFAULT_TAG = f"streamspace/session:{SUITE}"
USER = "session"
UID = 1000
HOME = f"/home/{USER}"
ENTRYPOINT = "/usr/local/bin/streamspace-session"
VNC_PORT = 5900
RECIPE_LABEL = "streamspace.recipe"
"""Image label holding :func:`digest`: a cached image built from another recipe is rebuilt."""


def entrypoint_script() -> bytes:
    """The session entrypoint (Xvnc, window manager, then the template's command)."""
    return resources.files(__package__).joinpath("session-entrypoint.sh").read_bytes()


def image_config() -> dict[str, object]:
    """The image's run configuration, as ``docker import --change`` lines will set it."""
    return {
        "ENTRYPOINT": [ENTRYPOINT],
        "CMD": ["xterm"],
        "ENV": {"HOME": HOME, "LANG": "C.UTF-8", "VNC_PORT": str(VNC_PORT)},
        "USER": USER,
        "WORKDIR": HOME,
        "EXPOSE": f"{VNC_PORT}/tcp",
    }


def digest() -> str:
    """A short hash of everything that goes into the image."""
    recipe = json.dumps([SUITE, MIRROR, PACKAGES, USER, UID, image_config()]).encode()
    return hashlib.sha256(recipe + entrypoint_script()).hexdigest()[:16]


def docker_changes() -> list[str]:
    """Dockerfile instructions for ``docker import --change`` (which otherwise drops them)."""
    return import_changes(image_config(), digest=digest())


def import_changes(config: dict[str, object], *, digest: str) -> list[str]:
    """An image's run configuration (as :func:`image_config` gives it) as ``docker import
    --change`` lines, ending with the recipe label."""
    changes = []
    for key, value in config.items():
        if isinstance(value, list):
            changes.append(f"{key} {json.dumps(value)}")
        elif isinstance(value, dict):
            changes += [f"{key} {name}={item}" for name, item in value.items()]
        else:
            changes.append(f"{key} {value}")
    return [*changes, f"LABEL {RECIPE_LABEL}={digest}"]
