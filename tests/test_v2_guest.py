"""The cgroup v2 suite (tests/v2), run inside a real cgroup v2 kernel.

The host's memory controller is on cgroup v1, so ``tests/vm/run-in-kernel`` boots
Debian's stock kernel under QEMU, **once per test session**, and runs
``pytest tests/v2`` there with ``MEMCGCTL_IN_VM=1``.  The tests here judge that run
from its JUnit XML: it passed, enough tests executed, none was skipped.

Skipped only when the host cannot run QEMU at all (not root, or no QEMU and no apt-get
to install it), or on request (``MEMCGCTL_V2=0``).  A VM failure (exit 125) fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "tests" / "vm" / "run-in-kernel"
OUT = REPO / ".cache" / "v2"
VM_FAILED = 125
MIN_TESTS = 20
SUMMARY: list[
    str
] = []  # the guest run, for the terminal summary  # tests/v2 has 22 with the default 5 oracle seeds


@dataclass
class GuestRun:
    rc: int
    stdout: str
    stderr: str
    wall_s: float
    kernel: str = "?"
    boot_s: float | None = None  # guest uptime when the command started
    suite_s: float | None = None
    tests: int = 0
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"guest kernel {self.kernel}: run-in-kernel exit {self.rc}\n"
            f"--- guest stdout ---\n{self.stdout}\n--- guest stderr ---\n{self.stderr}"
        )


def _why_no_qemu() -> str | None:
    if os.environ.get("MEMCGCTL_IN_VM"):
        return "already inside the test VM"
    if os.environ.get("MEMCGCTL_V2") == "0":
        return "MEMCGCTL_V2=0: the cgroup v2 guest suite was switched off"
    if os.geteuid() != 0:
        return "booting the cgroup v2 guest (tests/vm/run-in-kernel) needs root"
    if shutil.which("qemu-system-x86_64") is None and shutil.which("apt-get") is None:
        return "no qemu-system-x86_64 and no apt-get to install it: cannot boot the guest"
    return None


def _read_junit(run: GuestRun, path: Path) -> None:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    run.suite_s = sum(float(s.get("time", 0)) for s in suites)
    for case in root.iter("testcase"):
        run.tests += 1
        name = f"{case.get('classname')}::{case.get('name')}"
        for child in case:
            if child.tag == "skipped":
                run.skipped.append(f"{name}: {child.get('message')}")
            elif child.tag in ("failure", "error"):
                run.failed.append(f"{name}: {child.get('message')}")


def run_suite_in_guest(
    out: Path, suite: str, label: str, init: list[str], timeout: int, note: str = ""
) -> GuestRun:
    """Boot the guest once (``run-in-kernel`` with ``init`` options), run ``pytest
    SUITE`` there and read what it left in ``out``: the kernel, the guest's uptime when
    the suite started, the JUnit XML.  One summary line is printed at the end of the
    session (tests/conftest.py)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("junit.xml", "kernel", "uptime"):
        (out / name).unlink(missing_ok=True)
    # The same interpreter *and packages* as this run: sys.executable as it is, not
    # resolved (a venv's bin/python3 is a symlink to a base interpreter without our
    # dependencies).  It is never a pyenv shim: the shim execs the real interpreter, so
    # sys.executable already names that (the shim costs ~7.5 s under TCG).
    python = sys.executable
    rel = out.relative_to(REPO)
    script = (
        f"uname -r > {rel}/kernel; cut -d' ' -f1 /proc/uptime > {rel}/uptime; "
        f'exec "$0" -m pytest {suite} -q -p no:cacheprovider -rs --durations=10 '
        f"--junitxml={rel}/junit.xml"
    )
    env = {**os.environ, "MEMCGCTL_IN_VM": "1"}
    if init:
        env["MEMCGCTL_VM_INIT"] = init[-1]
    env.pop("PYTEST_ADDOPTS", None)
    start = time.monotonic()
    p = subprocess.run(
        [str(RUNNER), *init, "/bin/sh", "-c", script, python],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    run = GuestRun(p.returncode, p.stdout, p.stderr, time.monotonic() - start)
    if (out / "kernel").exists():
        run.kernel = (out / "kernel").read_text().strip()
    if (out / "uptime").exists():
        run.boot_s = float((out / "uptime").read_text())
    if (out / "junit.xml").exists():
        _read_junit(run, out / "junit.xml")
    (out / "guest.log").write_text(run.describe())
    boot = f"{run.boot_s:.1f}" if run.boot_s is not None else "?"
    summary = (
        f"{label}: kernel {run.kernel}, exit {run.rc}, {run.tests} tests "
        f"({len(run.failed)} failed, {len(run.skipped)} skipped); boot {boot} s "
        f"(guest uptime at start{note}), suite {run.suite_s or 0:.0f} s, "
        f"total {run.wall_s:.0f} s; log {out / 'guest.log'}"
    )
    SUMMARY.append(summary)  # printed at the end of the session (tests/conftest.py)
    print(summary, file=sys.stderr)
    return run


@pytest.fixture(scope="session")
def guest_run() -> GuestRun:
    why = _why_no_qemu()
    if why is not None:
        pytest.skip(why)
    return run_suite_in_guest(OUT, "tests/v2", "cgroup v2 guest", [], timeout=3600)


def test_the_guest_booted(guest_run: GuestRun) -> None:
    assert guest_run.rc != VM_FAILED, "the VM itself failed (exit 125)\n" + guest_run.describe()
    assert guest_run.kernel != "?", guest_run.describe()


def test_the_v2_suite_passed_in_the_guest(guest_run: GuestRun) -> None:
    assert guest_run.rc != VM_FAILED, "the VM itself failed (exit 125)\n" + guest_run.describe()
    assert guest_run.failed == [], "\n".join(guest_run.failed) + "\n" + guest_run.describe()
    assert guest_run.rc == 0, guest_run.describe()


def test_the_v2_tests_executed_none_skipped(guest_run: GuestRun) -> None:
    assert guest_run.rc != VM_FAILED, "the VM itself failed (exit 125)\n" + guest_run.describe()
    assert guest_run.tests >= MIN_TESTS, (
        f"only {guest_run.tests} tests ran in the guest\n" + guest_run.describe()
    )
    assert guest_run.skipped == [], "\n".join(guest_run.skipped) + "\n" + guest_run.describe()
