"""Shared fixtures: fixture trees for unit tests, real test cgroups for kernel tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.fakehost import FakeHost
from tests.realkernel import TestCgroups, remove_stale, unified_mount, v1_memory_mount

# tests/v2 runs only inside the cgroup v2 guest kernel (tests/test_v2_guest.py boots it and
# sets MEMCGCTL_IN_VM=1); on the host it is not even collected.  Nor are tests/image (the
# built image run in the guest: tests/test_image.py) and tests/systemd (the guest with
# systemd as PID 1: tests/test_systemd_guest.py).
collect_ignore = [] if os.environ.get("MEMCGCTL_IN_VM") else ["v2", "image", "systemd"]


# Fixtures that reach the machine's real cgroup hierarchy (directly or through fixtures
# that depend on them).  A test that uses one is a real-kernel test: it gets the
# ``kernel`` marker automatically, so ``-m "not kernel and not vm"`` deselects it even
# when its author forgot the marker.  tests/v2 (only collected inside the guest) gets
# ``vm``.  The fixtures also refuse to run for a test without either marker (a test that
# reaches them through request.getfixturevalue, which collection cannot see).
KERNEL_FIXTURES = frozenset({"memory_mount", "cgroups", "unified_cgroups"})
V2_DIR = Path(__file__).parent / "v2"
SYSTEMD_DIR = Path(__file__).parent / "systemd"  # the guest with systemd as PID 1


def pytest_itemcollected(item: pytest.Item) -> None:
    parents = Path(str(item.path)).parents
    if V2_DIR in parents or SYSTEMD_DIR in parents:
        item.add_marker(pytest.mark.vm)
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & KERNEL_FIXTURES and item.get_closest_marker("vm") is None:
        item.add_marker(pytest.mark.kernel)


def _require_marker(request: pytest.FixtureRequest) -> None:
    node = request.node
    if node.get_closest_marker("kernel") is None and node.get_closest_marker("vm") is None:
        pytest.fail(
            f"{node.nodeid} uses the real kernel ({request.fixturename}) without the "
            "`kernel` marker: add @pytest.mark.kernel"
        )


@pytest.fixture
def fake_v1(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path, version=1)


@pytest.fixture
def fake_v2(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path, version=2)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("real-kernel tests need root")


@pytest.fixture(scope="session")
def memory_mount() -> Path:
    _require_root()
    mount = v1_memory_mount()
    if mount is None:
        pytest.skip("this kernel has no memory cgroup controller mounted")
    remove_stale(mount)
    return mount


@pytest.fixture
def cgroups(memory_mount: Path, request: pytest.FixtureRequest) -> Iterator[TestCgroups]:
    """A fresh test-run parent on the memory hierarchy, removed afterwards."""
    _require_marker(request)
    tc = TestCgroups(memory_mount)
    try:
        yield tc
    finally:
        tc.cleanup()


@pytest.fixture
def unified_cgroups(request: pytest.FixtureRequest) -> Iterator[TestCgroups]:
    """A test-run parent on the plain cgroup2 hierarchy (no memory controller needed)."""
    _require_marker(request)
    _require_root()
    mount = unified_mount()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy is mounted")
    remove_stale(mount)
    tc = TestCgroups(mount)
    try:
        yield tc
    finally:
        tc.cleanup()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The cgroup v2 guest run's kernel, boot and suite time, so CI logs show them."""
    from tests.test_v2_guest import SUMMARY

    for line in SUMMARY:
        terminalreporter.write_sep("-", "cgroup v2 guest")
        terminalreporter.write_line(line)
