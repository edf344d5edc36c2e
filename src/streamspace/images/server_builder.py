"""The StreamSpace image offline: the session builder's steps, then the project installed
into a virtualenv inside the rootfs.

The wheel is built and the dependencies are downloaded on the build host, with its own pip
and index settings (PyPI, a mirror, a proxy's CA); pip inside the rootfs then installs from
those files only, so the rootfs needs no network.
"""

from __future__ import annotations

import platform
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from streamspace.images import server_recipe
from streamspace.images.builder import (
    DEFAULT_CACHE_DIR,
    BuildError,
    Recipe,
    build_image,
    chroot,
    stream,
)

CHECKOUT = Path(__file__).parents[3]
"""The repository this module runs from, when it is a checkout (an editable install)."""
_PIP_FOR_VERSION = """\
import platform, sys
from pip._internal.cli.main import main
version = sys.argv.pop(1)
platform.python_version = lambda: version
platform.python_version_tuple = lambda: tuple(version.split("."))
sys.exit(main(sys.argv[1:]))
"""
"""pip with the rootfs's Python version in its environment markers: ``--python-version``
only picks wheels, markers (redis wants ``async-timeout`` below 3.11.3) see the running
interpreter."""
_WHEELS = "tmp/streamspace-wheels"
"""Where, inside the rootfs, the wheels wait to be installed (removed afterwards)."""
_SOURCES = "tmp/streamspace-src"
"""Where, inside the rootfs, the wheel is built from (removed afterwards)."""


def default_source() -> Path | None:
    """The checkout this package runs from, ``None`` when it is installed from a wheel."""
    return CHECKOUT if (CHECKOUT / "pyproject.toml").is_file() else None


def server_recipe_for(source: Path) -> Recipe:
    """The StreamSpace image built from the repository ``source``."""
    try:
        digest = server_recipe.digest(source)
    except FileNotFoundError as exc:
        raise BuildError(str(exc)) from None
    return Recipe(
        name="streamspace",
        packages=server_recipe.PACKAGES,
        user=server_recipe.USER,
        uid=server_recipe.UID,
        digest=digest,
        changes=server_recipe.docker_changes(source),
        install=lambda rootfs, say: _install_project(source, rootfs, say),
    )


def build_server_image(
    *,
    source: Path,
    tag: str = server_recipe.DEFAULT_TAG,
    force: bool = False,
    console: Console | None = None,
    work_dir: Path | None = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
) -> bool:
    """Build the StreamSpace image from ``source`` as ``tag`` unless it is cached; return
    whether it was built."""
    return build_image(
        server_recipe_for(source),
        tag=tag,
        force=force,
        console=console,
        work_dir=work_dir,
        cache_dir=cache_dir,
    )


def _install_project(source: Path, rootfs: Path, say: Callable[[str], None]) -> None:
    wheels = rootfs / _WHEELS
    wheels.mkdir(parents=True)
    say(f"creating the virtualenv {server_recipe.VENV}")
    chroot(rootfs, ["python3", "-m", "venv", server_recipe.VENV])
    say("building the streamspace wheel")
    tree = _copy_sources(source, rootfs / _SOURCES)
    pip = [sys.executable, "-m", "pip"]
    stream([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(tree)], _quiet)
    shutil.rmtree(tree)
    (wheel,) = wheels.glob("streamspace-*.whl")
    say("downloading the dependencies")
    python, glibc = _rootfs_python(rootfs)
    target = [
        *("--only-binary=:all:", "--implementation", "cp", "--python-version", python),
        *("--abi", "cp" + "".join(python.split(".")[:2])),
        *(option for name in _wheel_platforms(glibc) for option in ("--platform", name)),
    ]
    constraints = str(source / "constraints.txt")
    download = ["download", "--dest", str(wheels), "-c", constraints, *target, str(wheel)]
    stream(
        [sys.executable, "-c", _PIP_FOR_VERSION, python, *download],
        lambda line: _show_pip(say, "downloading", line),
    )
    say("installing into the virtualenv")
    install = ["install", "--no-index", "--no-cache-dir", "--find-links", f"/{_WHEELS}"]
    chroot(
        rootfs,
        [f"{server_recipe.VENV}/bin/pip", *install, f"/{_WHEELS}/{wheel.name}"],
        lambda line: _show_pip(say, "installing", line),
    )
    shutil.rmtree(wheels)


def _copy_sources(source: Path, tree: Path) -> Path:
    """The files the digest covers (and the README the metadata names), copied to ``tree``:
    the wheel is made of exactly those, never of a stale ``build/`` in the checkout."""
    readme = [source / "README.md"] if (source / "README.md").is_file() else []
    for path in [*server_recipe.source_files(source), *readme]:
        copy = tree / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
    return tree


def _rootfs_python(rootfs: Path) -> tuple[str, tuple[int, int]]:
    """The rootfs's Python version (``3.11.2``) and glibc version (``(2, 36)``)."""
    lines: list[str] = []
    probe = "import platform; print(platform.python_version(), platform.libc_ver()[1])"
    chroot(rootfs, ["python3", "-c", probe], lines.append)
    python, libc = lines[-1].split()
    major, minor = libc.split(".")[:2]
    return python, (int(major), int(minor))


def _wheel_platforms(glibc: tuple[int, int]) -> list[str]:
    """Wheel platform tags that glibc runs, newest first: pip takes ``--platform``
    literally, so each older ``manylinux_2_N`` and the legacy aliases are named."""
    arch = platform.machine()
    major, newest = glibc
    tags = [f"manylinux_{major}_{minor}_{arch}" for minor in range(newest, 4, -1)]
    return [*tags, *(f"manylinux{alias}_{arch}" for alias in ("2014", "2010", "1"))]


def _quiet(_line: str) -> None:
    """Output nobody needs unless the step fails (``stream`` keeps the tail for the error)."""


def _show_pip(say: Callable[[str], None], doing: str, line: str) -> None:
    for verb in ("Collecting", "Saved", "Processing", "Installing"):
        if line.startswith(verb):
            say(f"{doing}: {line[:70]}")
