"""The daemon under a small open-files limit (v1, real OOM): the cgroup files it keeps
open to save an open() stay within their budget (kernel/cgrouptree.py keep_budget), so
every managed memcg is still taken over and an OOM still kills the policy's victim.
Without the budget the looks' files (four per managed memcg) took the fds the watches
and the kill need."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from memcgctl.kernel.cgrouptree import KEEP_SPARE
from tests.realkernel import TestCgroups
from tests.test_daemon_kernel import (
    Daemon,
    daemons,
    grower,
    jobs,
    oom_control,
    set_xattr,
    wait_dead,
)

__all__ = ["daemons", "jobs"]
pytestmark = pytest.mark.kernel

MANAGED = 40  # beside jobs: 41 managed memcgs
NOFILE = 160  # soft and hard: the daemon cannot raise it


def cgroup_files(pid: int, mount: Path) -> list[str]:
    """The daemon's fds held open on files below the hierarchy (not directories): those
    open at each of five looks 50 ms apart (a read in progress is not kept)."""
    looks = []
    for _ in range(5):
        looks.append(set(_open_files(pid, mount)))
        time.sleep(0.05)
    return sorted(set.intersection(*looks))


def _open_files(pid: int, mount: Path) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(mount)) and not os.path.isdir(target):
            out.append(target)
    return out


def test_a_daemon_short_of_open_files_takes_every_memcg_over_and_kills(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    others = [cgroups.make(f"m{n:02d}", limit=16 << 20) for n in range(MANAGED)]
    for cg in [*others, jobs["top"]]:
        set_xattr(cgroups, cg, "oom_delay_ms", "0")
    big = cgroups.hog(jobs["high"], mib=56)  # the kernel would kill this one
    limit = ("prlimit", f"--nofile={NOFILE}:{NOFILE}", "--")  # execs the daemon
    d = Daemon(tmp_path, cgroups.parent, "--no-guardian", prefix=limit)
    daemons.append(d)
    for cg in [*others, jobs["top"]]:
        d.wait_for("daemon_took_over", cg, timeout=30)
    limits = Path(f"/proc/{d.proc.pid}/limits").read_text()
    assert any(
        line.startswith("Max open files") and line.split()[3:5] == [str(NOFILE)] * 2
        for line in limits.splitlines()
    ), limits
    kept = [f for f in cgroup_files(d.proc.pid, cgroups.mount) if "oom_control" not in f]
    assert len(kept) <= max(0, (NOFILE - KEEP_SPARE) // 2), kept
    g = grower(cgroups, jobs["low"])
    assert wait_dead(g) == -signal.SIGKILL
    _, line = d.wait_for("daemon_kill", jobs["top"])
    assert f"pid={g.pid}" in line
    assert big.poll() is None  # the biggest process survives
    for cg in jobs.values():
        assert oom_control(cgroups, cg)["oom_kill"] == 0  # the kernel killed nobody
    assert d.stop() == 0
