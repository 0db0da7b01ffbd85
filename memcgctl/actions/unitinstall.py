"""Installing the daemon's systemd unit (``install-unit``): write the file atomically,
then have systemd reload its units."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from memcgctl.vocab.errors import NoSuchFile, OperationFailed, PermissionDenied, from_oserror


def write_unit(unit_dir: Path, name: str, text: str) -> Path:
    """``unit_dir/name`` holds ``text`` (mode 0644, root's), replaced atomically: a
    temporary file in the same directory renamed over it, so systemd never reads half
    a unit."""
    if not unit_dir.is_dir():
        raise NoSuchFile(str(unit_dir), "no such directory (is systemd installed?)")
    dest = unit_dir / name
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=unit_dir)
    except PermissionError as exc:
        raise PermissionDenied(
            f"{unit_dir}: cannot write (run as root)", path=str(unit_dir)
        ) from exc
    except OSError as exc:
        raise from_oserror(exc) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise from_oserror(exc) from exc
    return dest


def daemon_reload(timeout: float = 120.0) -> None:
    """``systemctl daemon-reload``; raise :class:`OperationFailed` with its message."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        raise OperationFailed("systemctl not found: run `systemctl daemon-reload` yourself")
    try:
        p = subprocess.run(
            [systemctl, "daemon-reload"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationFailed(f"systemctl daemon-reload: {exc}") from exc
    if p.returncode != 0:
        why = " ".join(p.stderr.split()) or f"exit status {p.returncode}"
        raise OperationFailed(f"systemctl daemon-reload failed: {why}")
