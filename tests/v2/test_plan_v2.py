"""The daemon's standing plan on cgroup v2, in the guest (issue 22): a delay-0 memcg
whose committed memory comes within one headroom of its valve has its victim chosen
ahead; at the valve's event the plan is used (``plan_age_ms``), the policy's victim
dies first and ``memory.events oom_kill`` of the OOM domain stays 0."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.realkernel import TestCgroups
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.v2.test_daemon_v2 import field, grow, jobs, no_kernel_kill

__all__ = ["daemons", "jobs"]


def test_near_the_valve_the_victim_is_chosen_ahead_and_dies_at_the_event(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = jobs["top"]
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    small = cgroups.hog(jobs["low"], mib=40)  # the policy's victim
    big = cgroups.hog(jobs["high"], mib=120)  # the kernel's: the biggest
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    # 1 MiB every 40 ms: about a second between 80 % of memory.max (one headroom
    # below the valve: near, seen at a rescan every 200 ms) and the valve at 90 %
    g = grow(cgroups, jobs["high"], 0.04)
    _, kill = d.wait_for("daemon_kill", top, timeout=120)
    _, under = d.wait_for("under_oom", top, timeout=5)
    assert field(kill, "pid") == str(small.pid), kill
    assert " plan_age_ms=" in kill, "\n".join(t for _, t in d.lines)  # the plan held
    assert " time=" in under  # written after the signal, stamped with the episode's start
    assert small.wait(timeout=30) == -signal.SIGKILL
    g.kill()
    g.wait(timeout=30)
    assert big.poll() is None
    no_kernel_kill(cgroups, top)
    assert d.stop() == 0
