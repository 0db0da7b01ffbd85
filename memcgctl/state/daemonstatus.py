"""The running daemon's status file, ``STATE_DIR/daemon.json``: which daemon runs (its
instance id ``BOOT_ID/PID/STARTTIME``), on which root, and which state directory,
process registry and rules it uses, so that the CLI and a daemon never silently use
two registries (``set-badness --pid`` warns when it writes to another one).

The daemon also writes a copy to the well-known ``/run/memcgctl-daemon.json`` (env
``MEMCGCTL_DAEMON_STATUS``), mode 0644: a CLI with another ``--state-dir`` (a user's
own, which root's 0700 state directory hides) finds it there.  It says nothing
secret, and only root can write in /run.  Written atomically; removed when the daemon
stops; a stale one (its instance no longer running) means no daemon.
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
WELL_KNOWN = Path("/run/memcgctl-daemon.json")
MAX_BYTES = 64 << 10


def well_known() -> Path:
    return Path(os.environ.get("MEMCGCTL_DAEMON_STATUS") or WELL_KNOWN)


def status_files(state_dir: Path) -> list[Path]:
    """Where a daemon's status is written, and where the CLI looks for one."""
    return [well_known(), state_dir / FILE]


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def write_status(state_dir: Path, doc: dict[str, Any]) -> None:
    """Best effort: a status that cannot be written never stops the daemon."""
    import json

    data = json.dumps(doc, indent=1).encode() + b"\n"
    with suppress(Exception):
        check_state_dir(state_dir, create=True)
        write_atomic(state_dir / FILE, data)
    with suppress(Exception):
        path = well_known()
        write_atomic(path, data)
        os.chmod(path, 0o644)


def remove_status(state_dir: Path, instance: str) -> None:
    """Remove the status files this instance wrote (not a newer daemon's)."""
    for path in status_files(state_dir):
        doc = read_status(path)
        if doc is not None and doc.get("instance") == instance:
            with suppress(OSError):
                os.unlink(path)


def read_status(path: Path) -> dict[str, Any] | None:
    """The status in file ``path`` (None: none, unreadable or not a status)."""
    try:
        data = read_bounded(path, MAX_BYTES)
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
    for path in status_files(state_dir):
        doc = read_status(path)
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
