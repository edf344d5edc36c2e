"""The offline image builder: ``debootstrap`` a Debian rootfs, add a user and the image's
files, then ``docker import``. Makes the session image (here) and the StreamSpace image
(``server_builder``).

No registry needed, only a Debian mirror. An image is cached by tag: an image under that
tag built from the same recipe (its ``streamspace.recipe`` label) is kept unless forced.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from streamspace.images import recipe

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "streamspace" / "debootstrap"
"""Downloaded .deb files, so a forced rebuild does not fetch them again."""
_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man")
"""Directories emptied before import: the image needs none of them."""
_CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


class BuildError(RuntimeError):
    """The image could not be built; the message says which step failed and why."""


def image_recipe(tag: str) -> str | None:
    """The recipe label of the image ``tag``, ``""`` when it has none, ``None`` when absent."""
    found = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        if "No such image" in found.stderr or "No such object" in found.stderr:
            return None
        raise BuildError(f"docker image inspect {tag} failed: {found.stderr.strip()}")
    labels = json.loads(found.stdout) or {}
    return str(labels.get(recipe.RECIPE_LABEL, ""))


@dataclass(frozen=True)
class Recipe:
    """One image as the builder makes it: a Debian rootfs with ``packages`` and a user,
    then the image's own files (``install``), imported with ``changes``."""

    name: str
    packages: tuple[str, ...]
    user: str
    uid: int
    digest: str
    changes: list[str]
    install: Callable[[Path, Callable[[str], None]], None]
    """Puts the image's files into the rootfs (the user exists); says what it does in words."""


def session_recipe() -> Recipe:
    """The session image: Xvnc, a window manager, the default apps and the entrypoint."""
    return Recipe(
        name="session",
        packages=recipe.PACKAGES,
        user=recipe.USER,
        uid=recipe.UID,
        digest=recipe.digest(),
        changes=recipe.docker_changes(),
        install=_install_entrypoint,
    )


def build_session_image(
    *,
    tag: str = recipe.DEFAULT_TAG,
    force: bool = False,
    console: Console | None = None,
    work_dir: Path | None = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
) -> bool:
    """Build the session image as ``tag`` unless it is cached; return whether it was built."""
    return build_image(
        session_recipe(),
        tag=tag,
        force=force,
        console=console,
        work_dir=work_dir,
        cache_dir=cache_dir,
    )


def build_image(
    image: Recipe,
    *,
    tag: str,
    force: bool = False,
    console: Console | None = None,
    work_dir: Path | None = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
) -> bool:
    """Build ``image`` as ``tag`` unless it is cached; return whether it was built."""
    console = console or Console(stderr=True)
    if shutil.which("docker") is None:
        raise BuildError("the docker command is not installed")
    if not force and image_recipe(tag) == image.digest:
        console.print(f"{tag}: up to date (recipe {image.digest}), not rebuilt")
        return False
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise BuildError("debootstrap needs root: run `streamspace images build` as root")
    cache_dir.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix="streamspace-rootfs-", dir=work_dir))
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            _debootstrap(rootfs, image.packages, cache_dir, progress)
            step = progress.add_task(f"{image.name}: adding the user {image.user}")
            useradd = ["useradd", "--create-home", "--uid", str(image.uid), "--shell", "/bin/bash"]
            chroot(rootfs, [*useradd, image.user])
            image.install(
                rootfs, lambda words: progress.update(step, description=f"{image.name}: {words}")
            )
            _trim(rootfs)
            progress.update(step, description=f"{image.name}: docker import")
            _import(rootfs, tag, image.changes)
            progress.update(step, description=f"imported as {tag}", completed=1, total=1)
    finally:
        _remove_rootfs(rootfs)
    console.print(f"{tag}: built (recipe {image.digest})")
    return True


def _debootstrap(
    rootfs: Path, packages: tuple[str, ...], cache_dir: Path, progress: Progress
) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        f"--cache-dir={cache_dir.resolve()}",
        recipe.SUITE,
        str(rootfs),
        recipe.MIRROR,
    ]
    task = progress.add_task("debootstrap: starting")
    stream(argv, lambda line: _show(progress, task, line))
    progress.update(task, description="debootstrap: done", completed=1, total=1)


def _show(progress: Progress, task: TaskID, line: str) -> None:
    if line.startswith("I: "):  # debootstrap's step lines (Retrieving, Unpacking, ...)
        progress.update(task, description=f"debootstrap: {line[3:][:70]}")


def stream(
    argv: list[str], on_line: Callable[[str], None], *, env: dict[str, str] | None = None
) -> None:
    """Run ``argv``, passing each output line on; fail with the last lines of output."""
    tail: collections.deque[str] = collections.deque(maxlen=30)
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            on_line(tail[-1])
    if proc.returncode != 0:
        raise BuildError(f"{argv[0]} failed ({proc.returncode}):\n" + "\n".join(tail))


def chroot(
    rootfs: Path, argv: list[str], on_line: Callable[[str], None] = lambda _line: None
) -> None:
    """Run ``argv`` inside ``rootfs``, with an environment of its own (not the builder's)."""
    stream(["chroot", str(rootfs), *argv], on_line, env=_CHROOT_ENV)


def _install_entrypoint(rootfs: Path, say: Callable[[str], None]) -> None:
    """The session entrypoint (the session user's home becomes the volume's initial content)."""
    say("adding the entrypoint")
    entrypoint = rootfs / recipe.ENTRYPOINT.lstrip("/")
    entrypoint.write_bytes(recipe.entrypoint_script())
    entrypoint.chmod(0o755)


def _trim(rootfs: Path) -> None:
    """No caches or docs in the image."""
    for relative in _TRIM:
        for child in (rootfs / relative).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def _import(rootfs: Path, tag: str, changes: list[str]) -> None:
    options = [arg for change in changes for arg in ("--change", change)]
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        imported = subprocess.run(
            ["docker", "import", *options, "--message", "streamspace images build", "-", tag],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
        )
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar_error = tar.communicate()[1].decode(errors="replace")
    if tar.returncode != 0:
        raise BuildError(f"tar of the rootfs failed: {tar_error.strip()}")
    if imported.returncode != 0:
        raise BuildError(f"docker import failed: {imported.stderr.strip()}")


def _remove_rootfs(rootfs: Path) -> None:
    """Unmount what debootstrap may have left mounted inside, then delete the tree (never
    crossing into another file system, so a stuck /proc or /dev mount is left alone)."""
    for mount in sorted(_mounts_under(rootfs), key=lambda p: len(p.parts), reverse=True):
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(rootfs)], capture_output=True)


def _mounts_under(root: Path) -> list[Path]:
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].encode().decode("unicode_escape"))
        if point == root or root in point.parents:
            mounts.append(point)
    return mounts
