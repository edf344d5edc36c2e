"""Files that are for StreamSpace's own account only."""

from __future__ import annotations

from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if missing and make it 0700, whatever the umask or
    an existing directory's mode: keys, homes and databases live there."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path
