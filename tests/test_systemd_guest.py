"""The systemd suite (tests/systemd), run in the cgroup v2 guest with systemd as PID 1.

``tests/vm/run-in-kernel --init systemd`` boots the guest kernel with the host's systemd
as init (a minimal target: journald and the command's unit), **once per test session**,
and runs ``pytest tests/systemd`` there with ``MEMCGCTL_IN_VM=1``: the daemon installed
by ``memcgctl install-unit`` and run by systemd, beside units whose memory systemd
manages.  The tests here judge that run from its JUnit XML, like tests/test_v2_guest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_v2_guest import SUMMARY, VM_FAILED, GuestRun, _read_junit, _why_no_qemu

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "tests" / "vm" / "run-in-kernel"
OUT = REPO / ".cache" / "systemd"
MIN_TESTS = 6


@pytest.fixture(scope="session")
def systemd_run() -> GuestRun:
    why = _why_no_qemu()
    if why is None and not os.path.exists("/lib/systemd/systemd"):
        why = "no /lib/systemd/systemd on this host to boot the guest with"
    if why is not None:
        pytest.skip(why)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in ("junit.xml", "kernel", "uptime"):
        (OUT / name).unlink(missing_ok=True)
    rel = OUT.relative_to(REPO)
    script = (
        f"uname -r > {rel}/kernel; cut -d' ' -f1 /proc/uptime > {rel}/uptime; "
        f'exec "$0" -m pytest tests/systemd -q -p no:cacheprovider -rs --durations=10 '
        f"--junitxml={rel}/junit.xml"
    )
    env = {**os.environ, "MEMCGCTL_IN_VM": "1", "MEMCGCTL_VM_INIT": "systemd"}
    env.pop("PYTEST_ADDOPTS", None)
    start = time.monotonic()
    p = subprocess.run(
        [str(RUNNER), "--init", "systemd", "/bin/sh", "-c", script, sys.executable],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    run = GuestRun(p.returncode, p.stdout, p.stderr, time.monotonic() - start)
    if (OUT / "kernel").exists():
        run.kernel = (OUT / "kernel").read_text().strip()
    if (OUT / "uptime").exists():
        run.boot_s = float((OUT / "uptime").read_text())
    if (OUT / "junit.xml").exists():
        _read_junit(run, OUT / "junit.xml")
    (OUT / "guest.log").write_text(run.describe())
    boot = f"{run.boot_s:.1f}" if run.boot_s is not None else "?"
    summary = (
        f"systemd guest: kernel {run.kernel}, exit {run.rc}, {run.tests} tests "
        f"({len(run.failed)} failed, {len(run.skipped)} skipped); boot {boot} s "
        f"(guest uptime at start, systemd up), suite {run.suite_s or 0:.0f} s, "
        f"total {run.wall_s:.0f} s; log {OUT / 'guest.log'}"
    )
    SUMMARY.append(summary)
    print(summary, file=sys.stderr)
    return run


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
