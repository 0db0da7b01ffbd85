"""The daemon under a small open-files limit on cgroup v2, in the guest: the cgroup
files it keeps open (six level files per managed memcg, a plan's cgroup.procs) stay
within their budget (kernel/cgrouptree.py keep_budget), so every managed memcg still
gets its valve and the valve's event still kills the policy's victim."""

from __future__ import annotations

import signal
from pathlib import Path

from memcgctl.kernel.cgrouptree import KEEP_SPARE
from tests.realkernel import TestCgroups, journaled
from tests.test_daemon_fds_kernel import cgroup_files
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.v2.test_daemon_v2 import LIMIT, field, grow, high, jobs, no_kernel_kill, valves

__all__ = ["daemons", "jobs"]
MIB = 1 << 20
MANAGED = 40  # beside jobs: 41 managed memcgs
NOFILE = 200  # soft and hard: the daemon cannot raise it


def test_a_daemon_short_of_open_files_keeps_every_valve_and_kills(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    others = [cgroups.make(f"m{n:02d}", limit=16 * MIB) for n in range(MANAGED)]
    top = jobs["top"]
    for cg in [*others, top]:
        set_xattr(cgroups, cg, "oom_delay_ms", "0")
    small = cgroups.hog(jobs["low"], mib=40)  # the policy's victim
    big = cgroups.hog(jobs["high"], mib=120)  # the kernel's: the biggest
    limit = ("prlimit", f"--nofile={NOFILE}:{NOFILE}", "--")  # execs the daemon
    d = Daemon(tmp_path, cgroups.parent, "--no-guardian", prefix=limit)
    daemons.append(d)
    for cg in [*others, top]:
        _, line = d.wait_for("daemon_took_over", cg, timeout=90)
        assert field(line, "mode") == "valve", line
    assert high(cgroups, top) in valves(LIMIT, 0)
    kept = cgroup_files(d.proc.pid, cgroups.mount)
    assert len(kept) <= max(0, (NOFILE - KEEP_SPARE) // 2) + MANAGED + 1, kept
    assert not [f for f in kept if f.endswith(("memory.current", "memory.stat"))], kept
    g = grow(cgroups, jobs["high"], 0.005)
    _, line = d.wait_for("daemon_kill", top, timeout=90)
    assert field(line, "pid") == str(small.pid), line
    assert small.wait(timeout=30) == -signal.SIGKILL
    g.kill()
    g.wait(timeout=30)
    assert big.poll() is None
    no_kernel_kill(cgroups, top)
    journaled(tmp_path, "user_kill", small.pid)
    assert d.stop() == 0
    assert high(cgroups, top) == "max"
