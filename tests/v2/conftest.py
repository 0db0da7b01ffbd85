"""tests/v2: real-kernel tests that need cgroup v2 with the memory controller.

They run inside the guest kernel of tests/vm/run-in-kernel, one boot per session:
``tests/test_v2_guest.py`` boots it and runs ``pytest tests/v2`` there with
``MEMCGCTL_IN_VM=1``.  Anywhere else every test here is skipped (and on the host the
directory is not even collected: see tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.realkernel import v1_memory_mount

NOT_V2 = "not on cgroup v2 with memory"


def v2_skip_reason() -> str | None:
    if not os.environ.get("MEMCGCTL_IN_VM"):
        return f"{NOT_V2}: MEMCGCTL_IN_VM is not set (run by tests/test_v2_guest.py in the VM)"
    if os.geteuid() != 0:
        return f"{NOT_V2}: needs root"
    mount = v1_memory_mount()
    if mount is None or not (mount / "cgroup.controllers").exists():
        return f"{NOT_V2}: the memory controller is not on a cgroup2 hierarchy here"
    return None


@pytest.fixture(autouse=True)
def _needs_v2_guest() -> None:
    reason = v2_skip_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def v2_mount() -> Path:
    mount = v1_memory_mount()
    assert mount is not None
    return mount
