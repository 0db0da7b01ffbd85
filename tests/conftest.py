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
# sets MEMCGCTL_IN_VM=1); on the host it is not even collected.
collect_ignore = [] if os.environ.get("MEMCGCTL_IN_VM") else ["v2"]


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
def cgroups(memory_mount: Path) -> Iterator[TestCgroups]:
    """A fresh test-run parent on the memory hierarchy, removed afterwards."""
    tc = TestCgroups(memory_mount)
    try:
        yield tc
    finally:
        tc.cleanup()


@pytest.fixture
def unified_cgroups() -> Iterator[TestCgroups]:
    """A test-run parent on the plain cgroup2 hierarchy (no memory controller needed)."""
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
