"""The systemd suite (tests/systemd), run in the cgroup v2 guest with systemd as PID 1.

``tests/vm/run-in-kernel --init systemd`` boots the guest kernel with the host's systemd
as init (a minimal target: journald and the command's unit), **once per test session**,
and runs ``pytest tests/systemd`` there with ``MEMCGCTL_IN_VM=1``: the daemon installed
by ``memcgctl install-unit`` and run by systemd, beside units whose memory systemd
manages.  The tests here judge that run from its JUnit XML, like tests/test_v2_guest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_v2_guest import VM_FAILED, GuestRun, _why_no_qemu, run_suite_in_guest

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "tests" / "vm" / "run-in-kernel"
OUT = REPO / ".cache" / "systemd"
MIN_TESTS = 15  # test_daemon_unit 8, test_oomd 4, test_units_rules 3


@pytest.fixture(scope="session")
def systemd_run() -> GuestRun:
    why = _why_no_qemu()
    if why is None and not os.path.exists("/lib/systemd/systemd"):
        why = "no /lib/systemd/systemd on this host to boot the guest with"
    if why is not None:
        pytest.skip(why)
    return run_suite_in_guest(
        OUT, "tests/systemd", "systemd guest", ["--init", "systemd"], 1800, ", systemd up"
    )


def test_the_systemd_guest_booted(systemd_run: GuestRun) -> None:
    assert systemd_run.rc != VM_FAILED, "the VM itself failed (exit 125)\n" + systemd_run.describe()
    assert systemd_run.kernel != "?", systemd_run.describe()


def test_the_systemd_suite_passed_in_the_guest(systemd_run: GuestRun) -> None:
    assert systemd_run.rc != VM_FAILED, "the VM itself failed (exit 125)\n" + systemd_run.describe()
    assert systemd_run.failed == [], "\n".join(systemd_run.failed) + "\n" + systemd_run.describe()
    assert systemd_run.rc == 0, systemd_run.describe()


def test_the_systemd_tests_executed_none_skipped(systemd_run: GuestRun) -> None:
    assert systemd_run.rc != VM_FAILED, "the VM itself failed (exit 125)\n" + systemd_run.describe()
    assert systemd_run.tests >= MIN_TESTS, (
        f"only {systemd_run.tests} tests ran in the guest\n" + systemd_run.describe()
    )
    assert systemd_run.skipped == [], "\n".join(systemd_run.skipped) + "\n" + systemd_run.describe()
