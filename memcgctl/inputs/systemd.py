"""Ask systemd where a unit's cgroup is (``systemctl show -p ControlGroup``).  Read only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SYSTEMD_RUN = Path("/run/systemd/system")  # exists iff PID 1 is systemd (sd_booted)


def systemd_running(run_dir: Path = SYSTEMD_RUN) -> bool:
    return os.path.isdir(run_dir)


def control_group(unit: str, systemctl: str = "systemctl") -> str | None:
    """The unit's ControlGroup (None: not loaded, not running, or systemctl failed)."""
    try:
        r = subprocess.run(
            [systemctl, "show", "-p", "ControlGroup", "--value", "--", unit],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = r.stdout.strip()
    return path if r.returncode == 0 and path.startswith("/") else None
