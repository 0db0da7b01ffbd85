"""tests/systemd: the daemon on a real systemd host (cgroup v2, systemd 252 as PID 1).

They run inside ``tests/vm/run-in-kernel --init systemd``, one boot per session:
``tests/test_systemd_guest.py`` boots it and runs ``pytest tests/systemd`` there with
``MEMCGCTL_IN_VM=1``.  Anywhere else every test here is skipped (and on the host the
directory is not even collected: see tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def systemd_skip_reason() -> str | None:
    if not os.environ.get("MEMCGCTL_IN_VM"):
        return "MEMCGCTL_IN_VM is not set (run by tests/test_systemd_guest.py in the VM)"
    if os.geteuid() != 0:
        return "needs root"
    try:
        init = Path("/proc/1/comm").read_text().strip()
    except OSError:
        init = "?"
    if init != "systemd":
        return f"PID 1 is {init}, not systemd (run-in-kernel --init systemd)"
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "not on the unified cgroup hierarchy"
    return None


@pytest.fixture(autouse=True)
def _needs_systemd_guest() -> None:
    reason = systemd_skip_reason()
    if reason is not None:
        pytest.skip(reason)
