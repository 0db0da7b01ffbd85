"""The state directory (default /run/memcgctl): what the registry and the journal share."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from memcgctl.errors import from_oserror


@contextmanager
def locked(state_dir: Path, lock_name: str) -> Iterator[None]:
    """Hold an exclusive flock on ``state_dir/lock_name`` (created with the directory
    if missing), so concurrent writers of one file take turns."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(state_dir / lock_name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise from_oserror(exc, str(state_dir)) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
