"""What a running daemon manages, as a file in its state directory: ``daemon-PID.json``.

The daemon replaces it (mkstemp + rename, ``0600``, no fsync: it describes a running
process and means nothing after a reboot) when something changes and every few
seconds, and removes it when it stops.  ``memcgctl status`` reads it (like ``oomctl``
asks systemd-oomd); commands that read or write process badness look for one in the
default state directory to warn that a running daemon uses another registry.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from memcgctl.state.statedir import Corrupt, loads_bounded, read_bounded, write_atomic

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PREFIX = "daemon-"
SUFFIX = ".json"
MAX_BYTES = 4 << 20
_NAME = re.compile(r"^daemon-(\d+)\.json$")


def status_path(state_dir: Path, pid: int) -> Path:
    return state_dir / f"{PREFIX}{pid}{SUFFIX}"


def write_status(state_dir: Path, pid: int, doc: dict[str, Any]) -> None:
    """Replace the status file of daemon ``pid`` (raises OSError)."""
    import json

    data = json.dumps(doc, indent=1, sort_keys=False).encode() + b"\n"
    write_atomic(status_path(state_dir, pid), data, sync=False)


def remove_status(state_dir: Path, pid: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(status_path(state_dir, pid))


def read_statuses(state_dir: Path) -> list[dict[str, Any]]:
    """Every daemon status document in ``state_dir`` (none when it cannot be read);
    a file that is not one (corrupt, a symlink, wrong types) is skipped."""
    try:
        names = sorted(os.listdir(state_dir))
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for name in names:
        m = _NAME.match(name)
        if m is None:
            continue
        try:
            data = read_bounded(state_dir / name, MAX_BYTES)
            doc = loads_bounded(data) if data is not None else None
        except (Corrupt, OSError):
            continue
        if isinstance(doc, dict) and doc.get("pid") == int(m.group(1)):
            out.append(doc)
    return out
