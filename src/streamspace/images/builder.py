"""The offline session-image builder: ``debootstrap`` a Debian rootfs, then ``docker import``.

No registry needed, only a Debian mirror. The image is cached by tag: an image under that
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
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from streamspace.images import recipe

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "streamspace" / "debootstrap"
"""Downloaded .deb files, so a forced rebuild does not fetch them again."""
_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man")
"""Directories emptied before import: the image needs none of them."""


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


def build_session_image(
    *,
    tag: str = recipe.DEFAULT_TAG,
    force: bool = False,
    console: Console | None = None,
    work_dir: Path | None = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
) -> bool:
    """Build the session image as ``tag`` unless it is cached; return whether it was built."""
    console = console or Console(stderr=True)
    if shutil.which("docker") is None:
        raise BuildError("the docker command is not installed")
    if not force and image_recipe(tag) == recipe.digest():
        console.print(f"{tag}: up to date (recipe {recipe.digest()}), not rebuilt")
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
            _debootstrap(rootfs, cache_dir, progress)
            step = progress.add_task("adding the session user and entrypoint")
            _customise(rootfs)
            progress.update(step, description="docker import", completed=1, total=1)
            _import(rootfs, tag)
            progress.update(step, description=f"imported as {tag}")
    finally:
        _remove_rootfs(rootfs)
    console.print(f"{tag}: built (recipe {recipe.digest()})")
    return True


def _debootstrap(rootfs: Path, cache_dir: Path, progress: Progress) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(recipe.PACKAGES)}",
        f"--cache-dir={cache_dir.resolve()}",
        recipe.SUITE,
        str(rootfs),
        recipe.MIRROR,
    ]
    task = progress.add_task("debootstrap: starting")
    _stream(argv, lambda line: _show(progress, task, line))
    progress.update(task, description="debootstrap: done", completed=1, total=1)


def _show(progress: Progress, task: TaskID, line: str) -> None:
    if line.startswith("I: "):  # debootstrap's step lines (Retrieving, Unpacking, ...)
        progress.update(task, description=f"debootstrap: {line[3:][:70]}")


def _stream(argv: list[str], on_line: Callable[[str], None]) -> None:
    """Run ``argv``, passing each output line on; fail with the last lines of output."""
    tail: collections.deque[str] = collections.deque(maxlen=30)
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            on_line(tail[-1])
    if proc.returncode != 0:
        raise BuildError(f"{argv[0]} failed ({proc.returncode}):\n" + "\n".join(tail))


def _customise(rootfs: Path) -> None:
    """The session user (its home becomes the volume's initial content), the entrypoint,
    and no caches or docs."""
    useradd = ["useradd", "--create-home", "--uid", str(recipe.UID), "--shell", "/bin/bash"]
    _stream(["chroot", str(rootfs), *useradd, recipe.USER], lambda _line: None)
    entrypoint = rootfs / recipe.ENTRYPOINT.lstrip("/")
    entrypoint.write_bytes(recipe.entrypoint_script())
    entrypoint.chmod(0o755)
    for relative in _TRIM:
        for child in (rootfs / relative).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def _import(rootfs: Path, tag: str) -> None:
    changes = [arg for change in recipe.docker_changes() for arg in ("--change", change)]
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        imported = subprocess.run(
            ["docker", "import", *changes, "--message", "streamspace images build", "-", tag],
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
