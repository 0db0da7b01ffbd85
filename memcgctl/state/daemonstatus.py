"""The running daemon's status file, ``STATE_DIR/daemon.json``: which daemon runs (its
instance id ``BOOT_ID/PID/STARTTIME``), on which root, and which state directory,
process registry and rules it uses, so that the CLI and a daemon never silently use
two registries (``set-badness --pid`` warns when it writes to another one).

A daemon whose state directory is not the well-known one (``/run/memcgctl``, env
``MEMCGCTL_DAEMON_STATUS_DIR``) writes a copy there too, where a CLI with its own
``--state-dir`` looks.  Written atomically (0600); removed when the daemon stops;
a stale one (its instance no longer running) means no daemon.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from memcgctl.state.statedir import (
    Corrupt,
    check_state_dir,
    loads_bounded,
    read_bounded,
    write_atomic,
)

FILE = "daemon.json"
WELL_KNOWN = Path("/run/memcgctl")
MAX_BYTES = 64 << 10


def well_known_dir() -> Path:
    return Path(os.environ.get("MEMCGCTL_DAEMON_STATUS_DIR") or WELL_KNOWN)


def status_dirs(state_dir: Path) -> list[Path]:
    """Where a daemon's status is written, and where the CLI looks for one."""
    dirs = [state_dir]
    known = well_known_dir()
    if _same(known, state_dir) is False:
        dirs.append(known)
    return dirs


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def write_status(state_dir: Path, doc: dict[str, Any]) -> None:
    """Best effort: a status that cannot be written never stops the daemon."""
    import json

    data = json.dumps(doc, indent=1).encode() + b"\n"
    for d in status_dirs(state_dir):
        with suppress(OSError, Exception):
            check_state_dir(d, create=True)
            write_atomic(d / FILE, data)


def remove_status(state_dir: Path, instance: str) -> None:
    """Remove the status files this instance wrote (not a newer daemon's)."""
    for d in status_dirs(state_dir):
        doc = read_status(d)
        if doc is not None and doc.get("instance") == instance:
            with suppress(OSError):
                os.unlink(d / FILE)


def read_status(directory: Path) -> dict[str, Any] | None:
    """The status in ``directory`` (None: none, unreadable or not a status)."""
    try:
        data = read_bounded(directory / FILE, MAX_BYTES)
        doc = loads_bounded(data) if data is not None else None
    except (OSError, Corrupt):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("instance"), str):
        return None
    if not isinstance(doc.get("state_dir"), str):
        return None
    return doc


def running_daemons(state_dir: Path, alive: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The statuses of running daemons the CLI with ``state_dir`` can see;
    ``alive(instance) -> bool`` tells a running one from a stale file."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for d in status_dirs(state_dir):
        doc = read_status(d)
        if doc is not None and doc["instance"] not in seen and alive(doc["instance"]):
            seen.add(doc["instance"])
            out.append(doc)
    return out


def other_registry(state_dir: Path, alive: Callable[[str], bool]) -> dict[str, Any] | None:
    """A running daemon that reads process badness from another state directory than
    ``state_dir`` (None: none, or it uses this one)."""
    for doc in running_daemons(state_dir, alive):
        if not _same(Path(doc["state_dir"]), state_dir):
            return doc
    return None
