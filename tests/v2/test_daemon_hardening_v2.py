"""Issue 21 #6 and #7 on cgroup v2, in the guest kernel: a victim stuck in the kernel
is killed and counted once; a stopped daemon never leaves the valve closed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realkernel import TestCgroups, journaled, wait_until
from tests.test_daemon_hardening_kernel import proc_state, run_cli, status_kb, user_kills
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.v2.test_daemon_v2 import VALVE, grow, high, jobs
from tests.v2.test_oom_v2 import events_file

__all__ = ["daemons", "jobs"]
MIB = 1 << 20


@pytest.fixture
def freezer(cgroups: TestCgroups, tmp_path: Path) -> Iterator[TestCgroups]:
    """The v1 freezer (a controller cgroup v2 does not have), mounted in the throw-away
    guest: a task frozen there does not exit on SIGKILL until thawed."""
    mnt = tmp_path / "freezer"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "cgroup", "-o", "freezer", "freezer", str(mnt)], check=True)
    tc = TestCgroups(mnt, name=cgroups.name)
    try:
        yield tc
    finally:
        for d in sorted(tc.path(tc.parent).rglob("*"), key=lambda p: -len(p.parts)):
            if (d / "freezer.state").exists():
                with contextlib.suppress(OSError):
                    TestCgroups.write(d, "freezer.state", "THAWED")
        tc.cleanup()
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_victim_stuck_in_the_kernel_is_killed_and_counted_once_v2(
    cgroups: TestCgroups,
    jobs: dict[str, str],
    freezer: TestCgroups,
    tmp_path: Path,
    daemons: list[Daemon],
) -> None:
    top = jobs["top"]
    fz = freezer.make("stuck", limit=None)
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    victim = cgroups.hog(jobs["low"], mib=40)  # badness 100: the policy's victim
    TestCgroups.write(freezer.path(fz), "cgroup.procs", str(victim.pid))
    TestCgroups.write(freezer.path(fz), "freezer.state", "FROZEN")
    wait_until(
        lambda: (freezer.path(fz) / "freezer.state").read_text().strip() == "FROZEN",
        "the victim frozen",
    )
    d = Daemon(tmp_path, cgroups.parent, "--grace", "300ms")
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    first = grow(cgroups, jobs["high"], 0.0)
    journaled(tmp_path, "user_kill", victim.pid, timeout=60)
    assert victim.poll() is None  # SIGKILL sent; frozen, it cannot exit
    wait_until(lambda: status_kb(victim.pid, "RssAnon") < 8 << 10, "the victim reaped", 60)
    assert first.wait(timeout=60) == -signal.SIGKILL  # the next victim
    d.wait_for("oom_resolved", top, timeout=60)
    second = grow(cgroups, jobs["high"], 0.0)  # a new episode, the victim still stuck
    assert second.wait(timeout=60) == -signal.SIGKILL
    assert victim.poll() is None
    kills = [r for r in user_kills(tmp_path) if r["pid"] == victim.pid]
    assert len(kills) == 1, kills
    TestCgroups.write(freezer.path(fz), "freezer.state", "THAWED")
    assert victim.wait(timeout=60) == -signal.SIGKILL
    r = run_cli(tmp_path, "counters", "--json", jobs["low"])
    assert r.returncode == 0, r.stderr
    low = next(c for c in json.loads(r.stdout)["cgroups"] if c["cgroup"] == jobs["low"])
    assert low["by_cause"]["user"] == 1, low
    ev = events_file(cgroups, top, local=False)
    assert ev["oom_kill"] == 0, ev  # the kernel killed nobody


def test_a_stopped_daemon_never_leaves_the_valve_closed_v2(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = jobs["top"]
    set_xattr(cgroups, top, "oom_delay_ms", "2000")
    big = cgroups.hog(jobs["high"], mib=16)
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    assert high(cgroups, top) == str(VALVE)
    g = grow(cgroups, jobs["low"], 0.005)
    t_oom, _ = d.wait_for("under_oom", top, timeout=60)
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        _, line = d.wait_for("guardian:", None, timeout=60)
        t_released = time.monotonic()
        assert "stopped" in line and "memory.high=max" in line, line
        assert high(cgroups, top) == "max"
        assert (cgroups.path(top) / "cgroup.freeze").read_text().strip() == "0"
        assert g.wait(timeout=60) == -signal.SIGKILL  # the kernel resolves it
        assert proc_state(d.proc.pid) == "T"  # not the daemon's kill
        assert events_file(cgroups, top, local=False)["oom_kill"] == 1
        assert t_released - t_oom <= 2.0 + 3.0, t_released - t_oom  # delay + 3 s
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    wait_until(lambda: d.kinds().count("daemon_took_over") == 2, "the daemon back", 60)
    assert high(cgroups, top) == str(VALVE)  # the valve again
    assert "daemon_kill" not in d.kinds()  # nothing killed twice
    assert big.poll() is None
    assert d.stop() == 0
    assert high(cgroups, top) == "max"
